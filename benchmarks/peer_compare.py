"""halfsec vs Pipecat 1.14 on the same recordings, measured by the same client rule.

    pip install -e '.[peer]'          # Pipecat 1.14 with its silero/whisper/piper extras
    python benchmarks/peer_compare.py --limit N [--domain coffee] [--json OUT]

Both pipelines run in this process with the same models (Silero VAD, Whisper tiny.en
int8, Piper joe, halfsec's coffee logic in the LLM's place), one conversation per
recording, alternating halfsec / Pipecat per file so a machine that gets busier mid-run
hurts both alike.  Voice-to-voice is halfsec's client rule for both (see
``halfsec.lab.peer.pipecat_harness``), never Pipecat's own metrics.  Prints p50/p95 of
each and the ratio of medians halfsec / Pipecat (below 1: halfsec answers sooner).

Recordings: ``../shared/speech`` beside the repository, the shortest first (coffee orders
with ``--domain coffee``, the default).  On a shared 2-core machine the numbers are
indicative; run it alone for numbers to quote.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from _cli import bench_parser, emit
from _speech import SPEECH, manifest_rows

from halfsec.lab.report.json import cpu_info

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def corpus(limit: int, domain: str | None) -> list[Path]:
    rows = manifest_rows()
    if domain == "coffee":
        rows = [r for r in rows if r["intent"] == "orderDrink"]
    rows.sort(key=lambda r: float(r["duration_s"]))
    return [SPEECH / r["file"] for r in rows[:limit]]


def show(result: Any, s: dict[str, Any]) -> None:
    """Per file and per pipeline, as a table."""
    print(f"{'file':<58} {'halfsec ms':>10} {'pipecat ms':>10}")
    for h, p in zip(result.halfsec, result.pipecat, strict=True):
        hv = f"{h.v2v_ms:.0f}" if h.v2v_ms is not None else "-"
        pv = f"{p.v2v_ms:.0f}" if p.v2v_ms is not None else "-"
        print(f"{Path(h.file).name:<58} {hv:>10} {pv:>10}")
    for name in ("halfsec", "pipecat"):
        v = s[name]
        p50 = f"{v['p50_ms']:.0f}" if v["p50_ms"] is not None else "-"
        p95 = f"{v['p95_ms']:.0f}" if v["p95_ms"] is not None else "-"
        pts = s["points_p50_ms"][name]
        print(
            f"{name:<8} ok {v['ok']}/{s['n']}  p50 {p50} ms  p95 {p95} ms   (median ms after "
            f"end of speech: end of turn {pts['end_of_turn']}, transcript {pts['transcript']}, "
            f"first audio {pts['first_audio']})"
        )
    print(f"ratio of medians halfsec/pipecat: {s['ratio_p50_halfsec_over_pipecat']}")


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--limit", type=int, default=5, help="Recordings to play (shortest first).")
    ap.add_argument(
        "--domain",
        default="coffee",
        help="'coffee': coffee orders only; 'any': every recording.",
    )
    args = ap.parse_args(argv)
    try:
        import pipecat  # noqa: F401

        from halfsec.lab.peer.pipecat_harness import compare
    except ImportError as e:
        print(f"Pipecat is not installed ({e}); pip install -e '.[peer]'", file=sys.stderr)
        return 2
    paths = corpus(args.limit, None if args.domain == "any" else args.domain)
    result = asyncio.run(compare(paths))
    s = result.summary()
    with redirect_stdout(sys.stderr):  # the table on stderr, the JSON on stdout
        show(result, s)
    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "cpu": cpu_info()},
        "summary": s,
        "halfsec": [vars(r) for r in result.halfsec],
        "pipecat": [vars(r) for r in result.pipecat],
    }
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
