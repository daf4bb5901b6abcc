"""How many callers does one server carry within the SLO?  A ramp to the knee.

    python benchmarks/load_bench.py [--ramp 1:12] [--turns 3] [--limit 20]
        [--transport websocket|webrtc] [--json OUT] [--html OUT]

Starts one ``halfsec serve`` (coffee domain) and runs ``halfsec bench --ramp``'s steps
against it (``lab.load``): N callers at once, each playing real people's coffee orders
from ``../shared/speech`` (the first ``--limit`` Picovoice rows, uncut, silence and all,
in a seeded order per caller), waiting for each reply to finish playing, thinking 1-2 s,
and ordering again.  Every step reports v2v p50/p95/p99 (the client's clock, the one
``measure`` rule), failed and refused turns and the server's CPU and RSS; the ramp stops
at the first step whose p95 is over 500 ms or that lost a turn, and the knee is the
largest N before it.  The same run as ``halfsec bench --corpus ... --ramp 1:12``, with
the machine's CPU named in the JSON.  Timing is real time on the client: run it on a
quiet machine (``flock -x /tmp/halfsec_cpu.lock`` on the shared box).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from _cli import bench_parser, emit
from _speech import SPEECH
from rich.console import Console

from halfsec.lab.bench.corpus import CorpusItem, filter_domain, load_manifest
from halfsec.lab.bench.options import BenchOptions
from halfsec.lab.load.live import LiveLoad
from halfsec.lab.load.options import LoadOptions, Slo, parse_ramp
from halfsec.lab.load.report import build_load_report, print_load, write_load
from halfsec.lab.load.run import run_ramp
from halfsec.lab.report.json import cpu_info
from halfsec.logic.domain import load_domain

console = Console(stderr=True)


def coffee_orders(limit: int) -> list[CorpusItem]:
    """The first ``limit`` human coffee orders of the shared corpus, in manifest order:
    the rows ``halfsec bench --domain coffee`` picks (by the coffee domain's intents, the
    manifest having no domain column), labelled ``coffee``."""
    corpus = load_manifest(SPEECH / "manifest.tsv")
    return filter_domain(corpus.items, "coffee", load_domain("coffee").intents)[:limit]


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--ramp", default="1:12", help="START:STOP[:STEP] or 1,2,4,8")
    ap.add_argument("--turns", type=int, default=3, help="turns per caller per step")
    ap.add_argument("--limit", type=int, default=20, help="coffee orders to draw from")
    ap.add_argument("--transport", default="websocket", choices=("websocket", "webrtc"))
    ap.add_argument("--slo-p95-ms", type=float, default=500.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--html", dest="html_out", type=Path)
    args = ap.parse_args()

    steps = parse_ramp(args.ramp)
    opts = LoadOptions(turns=args.turns, seed=args.seed)
    slo = Slo(p95_ms=args.slo_p95_ms)
    bench = BenchOptions(transport=args.transport, overrides=list(args.overrides))
    with LiveLoad(console) as live:
        result = asyncio.run(run_ramp(coffee_orders(args.limit), steps, opts, bench, slo, live))
    meta = {
        "command": "benchmarks/load_bench.py",
        "cpu": cpu_info()["model"],  # and its flags: meta.machine.cpu (default_meta)
        "cores": os.cpu_count(),
        "corpus": f"{SPEECH / 'manifest.tsv'} (first {args.limit} orderDrink rows)",
        "transport": args.transport,
        "ramp": steps,
        "overrides": list(args.overrides),
        "server_url": result.server.url,
        "health": result.server.health,
    }
    report = build_load_report(
        result.steps, result.turns, result.knee, result.stop_reason, opts, slo, meta
    )
    print_load(report, console)
    emit(report, args.json)  # the table on stderr, the JSON on stdout
    write_load(report, None, args.html_out)
    if args.html_out is not None:
        console.print(f"wrote {args.html_out}")


if __name__ == "__main__":
    main()
