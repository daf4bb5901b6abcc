"""End-of-turn evaluation: premature cut-offs against endpointing delay, per policy.

    python benchmarks/eot_bench.py [--manifest ../shared/speech/manifest.tsv] [--limit N]
        [--evidence EV.json] [--save-evidence EV.json] [--smart-turn-threads 1] [--json OUT]

Every shared recording (one complete turn each) and 24 Piper recordings with deliberate
hesitations go through the real Silero pause detector; at each pause the speculative
Whisper final, the domain's verdict and Smart Turn v3.2's probability are computed once
(``halfsec.lab.eot.replay``), then every policy is swept over that evidence
(``halfsec.lab.eot.curves``).  The combined policy is tuned on the tune half of the
shared recordings (split by speaker) and reported on the held-out half and on the
hesitations too.  Delay = decision time minus ``measure.end_of_speech``'s real end."""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _cli import bench_parser, emit
from _speech import MANIFEST
from rich.console import Console
from rich.table import Table

from halfsec.config import load_config
from halfsec.lab.eot.curves import evidence_costs, point, summary, tune
from halfsec.lab.eot.hazard import FEATURES, fit
from halfsec.lab.eot.recordings import hesitation_recordings, shared_recordings
from halfsec.lab.eot.replay import Replayed, fill_tails
from halfsec.lab.eot.run import collect, load, save
from halfsec.lab.eot.simulate import combined, evaluate
from halfsec.lab.report.json import cpu_info
from halfsec.logic.factory import create_logic
from halfsec.runtime.build import build_engines
from halfsec.turn.policy import TEXT_WINDOWS, Windows
from halfsec.turn.smart_turn import LICENSE, SmartTurn

console = Console(stderr=True, width=200)


def gather(args: argparse.Namespace) -> list[Replayed]:
    if args.evidence:
        recs = load(Path(args.evidence))
        fill_tails(recs, create_logic(load_config(None, args.overrides).logic))
        return recs
    cfg = load_config(None, args.overrides)
    engines = build_engines(cfg)
    smart = SmartTurn(threads=args.smart_turn_threads)

    async def go() -> list[Replayed]:
        recs = shared_recordings(Path(args.manifest), args.limit)
        recs += await hesitation_recordings(engines.tts)
        return await collect(recs, engines, smart, console)

    out = asyncio.run(go())
    smart.close()
    if args.save_evidence:
        save(Path(args.save_evidence), out)
    return out


def _ms(p: dict[str, Any] | None) -> str:
    if p is None or p["delay_p50_ms"] is None:
        return "-"
    return f"{p['delay_p50_ms']:.0f} / {p['delay_p95_ms']:.0f} ({p['premature']}/{p['turns']})"


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--manifest", default=str(MANIFEST))
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--evidence", help="reuse evidence saved by --save-evidence")
    ap.add_argument("--save-evidence")
    ap.add_argument("--smart-turn-threads", type=int, default=1)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    t0 = time.time()
    recs = gather(args)
    shared = [r for r in recs if r.set != "hesitation"]
    splits = {
        "tune": [r for r in shared if r.split == "tune"],
        "heldout": [r for r in shared if r.split == "heldout"],
        "hesitation": [r for r in recs if r.set == "hesitation"],
        "shared": shared,
        "shared_coffee": [r for r in shared if r.set == "coffee"],
        "shared_other": [r for r in shared if r.set == "corpus"],
    }
    # The curves go around the committed defaults; a fresh tuning on the tune half is
    # reported beside them (it should land on the defaults when the evidence is the same).
    w_tuned = tune(splits["tune"])
    w_text_tuned = tune(splits["tune"], audio=False)
    fitted = fit(splits["tune"])
    res = summary(splits, Windows(), TEXT_WINDOWS, fitted)
    for split, recs_ in splits.items():
        res[split]["retuned_combined"] = point(evaluate(recs_, combined(1.0, w_tuned)))
        res[split]["retuned_without_smart_turn"] = point(
            evaluate(recs_, combined(1.0, w_text_tuned, audio=False))
        )
    doc = {
        "schema": "halfsec.eot/1",
        "windows_default": asdict(Windows()),
        "windows_default_without_smart_turn": asdict(TEXT_WINDOWS),
        "windows_retuned": asdict(w_tuned),
        "windows_retuned_without_smart_turn": asdict(w_text_tuned),
        "hazard_fit_on_tune": {
            "beta": dict(zip(FEATURES, (round(float(b), 3) for b in fitted[0]), strict=True)),
            "tau_ms": round(fitted[1], 1),
        },
        "smart_turn_license": LICENSE,
        "evidence_costs": evidence_costs(recs),
        "splits": res,
        "machine": f"{platform.machine()} {platform.processor() or ''} python={platform.python_version()}",
        "cpu": cpu_info(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_s": round(time.time() - t0, 1),
        "command": " ".join(["python"] + sys.argv),
    }
    t = Table(title="delay p50 / p95 ms after the real end (premature/turns), at <= 3 % premature")
    t.add_column("policy")
    for split in splits:
        t.add_column(split)
    for pol in res["tune"]["at_premature"]:
        t.add_row(pol, *(_ms(res[s]["at_premature"][pol]["3%"]) for s in splits))
    for key in (
        "previous_default_transcript",
        "previous_default_combined_v1",
        "previous_default_combined_asked_at_pause",
        "previous_default_combined_no_tail",
        "default_combined",
        "default_combined_without_smart_turn",
        "retuned_combined",
        "retuned_without_smart_turn",
    ):
        t.add_row(key, *(_ms(res[s][key]) for s in splits))
    console.print(t)
    emit(doc, args.json)


if __name__ == "__main__":
    main()
