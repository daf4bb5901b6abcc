"""Voice-to-voice, accuracy and per-stage times of ``halfsec run`` over a corpus.

    python benchmarks/run_corpus.py [--manifest ../shared/speech/manifest.tsv]
        [--limit N] [--only coffee|transcribed|all] [--set turn.silence_ms=250] [--json OUT]

Every file goes through exactly the code path of ``halfsec run`` (real-time pace, 20 ms
frames, silence after the file), one at a time.  Reported: v2v p50/p95/p99 (client
timeline: last voiced input sample -> first audible reply sample), median of each stage,
WER where the manifest has transcripts (normalised), command acceptance (intent and
every slot right) where it has intents, and how often a reply started before the user
had finished (premature end of turn), against issue 11's line (``issue11_line``), and
how often an STT lane handed its work to another worker because a decode nobody waited
for was still running (``stt_lane_takeovers``: abandoned speculative finals; each is a
CPU burst beside the next decode)."""

from __future__ import annotations

import asyncio
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _cli import bench_parser, emit, pct
from _speech import MANIFEST, manifest_rows
from rich.console import Console
from rich.progress import track
from rich.table import Table

from halfsec.cli.run import run_one
from halfsec.config import load_config
from halfsec.lab.report.json import accepted, cpu_info
from halfsec.measure.wer import word_errors
from halfsec.runtime.build import build_engines

console = Console(stderr=True)


TAKEOVER = "a decode nobody waits for is still running"
"""The STT lanes' log line when another worker takes over (``stt/decode_lanes.py``)."""


class TakeoverCount(logging.Handler):
    """Counts the STT lanes' takeover lines, per lane."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lanes: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if TAKEOVER in str(record.msg):
            lane = str(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
            self.lanes[lane] = self.lanes.get(lane, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.lanes.values())


def select_rows(manifest: Path, only: str, limit: int) -> list[dict[str, str]]:
    """The manifest's rows this benchmark plays: ``only`` coffee (labelled intent),
    transcribed, or all; the first ``limit`` (0: every one).  ``slow_cpu.py`` picks the
    same rows."""
    rows = manifest_rows(manifest)
    if only == "coffee":
        rows = [r for r in rows if r.get("intent")]
    elif only == "transcribed":
        rows = [r for r in rows if r.get("transcript")]
    return rows[:limit] if limit else rows


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--manifest", default=str(MANIFEST))
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--only", choices=["coffee", "transcribed", "all"], default="all")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    man = Path(args.manifest)
    rows = select_rows(man, args.only, args.limit)

    cfg = load_config(None, args.overrides)
    engines = build_engines(cfg)
    out_dir = Path(tempfile.mkdtemp(prefix="halfsec-bench-"))
    results: list[dict[str, Any]] = []
    takeovers = TakeoverCount()
    logging.getLogger("halfsec.stt").addHandler(takeovers)

    async def go() -> None:
        for r in track(rows, description="files", console=console):
            before = takeovers.total
            res = await run_one(man.parent / r["file"], engines, cfg, out_dir)
            res["stt_lane_takeovers"] = takeovers.total - before
            res["ref_transcript"] = r.get("transcript", "")
            res["ref_intent"] = r.get("intent", "")
            res["ref_slots"] = r.get("slots", "")
            results.append(res)

    t0 = time.time()
    asyncio.run(go())
    wall = time.time() - t0

    v2v = [r["v2v_ms"] for r in results if r.get("v2v_ms") is not None]
    v2v_p50, v2v_p95 = pct(v2v, 50), pct(v2v, 95)
    stages: dict[str, list[float]] = {}
    for r in results:
        for k, v in (r.get("stages") or {}).items():
            stages.setdefault(k, []).append(v)
    errs = words = 0
    for r in results:
        if r["ref_transcript"]:
            e, n = word_errors(r["ref_transcript"], r.get("transcript", ""))
            errs += e
            words += n
    acc_total = acc_ok = 0
    for r in results:
        if r["ref_intent"]:
            acc_total += 1
            # the report's rule: same intent, exactly the same slots (case-folded)
            acc_ok += accepted(r.get("intent"), r.get("slots"), r["ref_intent"], r["ref_slots"])
    summary = {
        "files": len(results),
        "answered": len(v2v),
        "v2v_ms": {
            "p50": pct(v2v, 50),
            "p90": pct(v2v, 90),
            "p95": pct(v2v, 95),
            "p99": pct(v2v, 99),
            "max": pct(v2v, 100),
        },
        "stages_p50_ms": {k: pct(v, 50) for k, v in stages.items()},
        "stages_p95_ms": {k: pct(v, 95) for k, v in stages.items()},
        "wer": round(errs / words, 4) if words else None,
        "command_acceptance": round(acc_ok / acc_total, 4) if acc_total else None,
        "command_total": acc_total,
        "premature_replies": sum(1 for r in results if r.get("premature_replies")),
        "stt_lane_takeovers": dict(takeovers.lanes),
        "failed": [
            {"input": r["input"], "errors": r.get("errors") or r.get("error")}
            for r in results
            if r.get("v2v_ms") is None
        ],
        "wall_s": round(wall, 1),
        "config_overrides": args.overrides,
        "machine": f"{platform.machine()} {platform.processor() or ''} cores={__import__('os').cpu_count()} python={platform.python_version()}",
        "cpu": cpu_info(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python"] + sys.argv),
    }
    premature = summary["premature_replies"]
    acceptance = summary["command_acceptance"]
    summary["issue11_line"] = {
        "v2v_p50_le_220": v2v_p50 is not None and v2v_p50 <= 220.0,
        "v2v_p95_le_380": v2v_p95 is not None and v2v_p95 <= 380.0,
        "premature_le_3pct": bool(results) and premature <= 0.03 * len(results),
        "acceptance_ge_96pct": acceptance is not None and acceptance >= 0.96,
    }
    t = Table(title=f"halfsec run over {len(results)} files")
    t.add_column("metric")
    t.add_column("value")
    for k in ("p50", "p95", "p99"):
        t.add_row(f"v2v {k} ms", str(summary["v2v_ms"][k]))
    for k, v in summary["stages_p50_ms"].items():
        t.add_row(f"{k} p50", str(v))
    t.add_row("WER", str(summary["wer"]))
    t.add_row("command acceptance", f"{summary['command_acceptance']} of {acc_total}")
    t.add_row("premature replies", str(summary["premature_replies"]))
    t.add_row("STT lane takeovers", str(takeovers.total))
    t.add_row("issue 11 line", str(summary["issue11_line"]))
    t.add_row("failed", str(len(summary["failed"])))
    console.print(t)
    emit({"summary": summary, "files": results}, args.json)


if __name__ == "__main__":
    main()
