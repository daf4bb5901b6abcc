"""Does the server stay the same over time?  K callers for minutes, resources watched.

    python benchmarks/soak.py [--minutes 10] [--sessions K | --capacity C]
        [--sample-s 5] [--limit 20] [--json OUT]

Runs K callers (``lab.load``: human coffee orders from ``../shared/speech``, each reply
played to its end, 1-2 s to think, next order; one session per turn) against one
``halfsec serve`` for ``--minutes``, sampling the server process and its children every
``--sample-s``: RSS, open file descriptors, threads (psutil), and the asyncio task count
when the server exports one on ``/metrics`` (a gauge named ``*asyncio_tasks``; null
otherwise).  K defaults to 75 % of ``--capacity``, or, without it, of the knee that a
quick ramp (``benchmarks/load_bench.py``'s, 2 turns a step) measures first on a server
of its own.

Reported (JSON, schema ``halfsec.soak/1``): for each series whether it stayed flat (a
least-squares line over the last 80 % of the run moves it by at most max(absolute, share
of median): RSS 16 MB or 5 %, descriptors 8 or 10 %, threads 3 or 10 %, tasks 8 or 10 %;
``lab.load.soak.FLAT_BOUNDS``), and whether v2v p95 of the turns started in the last
minute is within 10 % of the first minute's.  ``ok`` is all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console

from halfsec.lab.bench.options import BenchOptions
from halfsec.lab.load.live import LiveLoad
from halfsec.lab.load.options import LoadOptions, Slo, parse_ramp
from halfsec.lab.load.report import slim_turn
from halfsec.lab.load.run import load_server, run_ramp, run_step, step_entry
from halfsec.lab.load.sampler import ResourceSampler
from halfsec.lab.load.soak import FLAT_BOUNDS, soak_verdict
from halfsec.lab.report.json import default_meta

try:  # run as a script: the benchmarks folder is on sys.path
    from load_bench import coffee_orders, cpu_name
except ImportError:  # pragma: no cover - imported as benchmarks.soak
    from benchmarks.load_bench import coffee_orders, cpu_name

console = Console(stderr=True)


async def measure_capacity(bench: BenchOptions, limit: int, seed: int) -> int | None:
    """The knee of a quick ramp (2 turns a step) on a server of its own."""
    console.print("no --sessions or --capacity: measuring capacity with a quick ramp first")
    with LiveLoad(console) as live:
        r = await run_ramp(
            coffee_orders(limit),
            parse_ramp("auto"),
            LoadOptions(turns=2, seed=seed),
            bench,
            Slo(),
            live,
        )
    return r.knee


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    bench = BenchOptions(overrides=list(args.overrides))
    capacity, measured = args.capacity, False
    if args.sessions is None and capacity is None:
        capacity, measured = await measure_capacity(bench, args.limit, args.seed), True
    k = args.sessions or max(1, math.floor(0.75 * (capacity or 1)))
    duration = args.minutes * 60.0
    items = coffee_orders(args.limit)
    opts = LoadOptions(turns=None, duration_s=duration, seed=args.seed, sample_s=args.sample_s)
    console.print(
        f"soak: {k} session(s) for {args.minutes:g} min, sampling every {args.sample_s:g} s"
    )
    async with load_server(bench, items, max(k, 1)) as server:
        sampler = ResourceSampler(server.pid, server.metrics_url, args.sample_s)
        sampler.start()
        try:
            with LiveLoad(console) as live:
                run = await run_step(server, items, k, opts, bench, sampler, live)
        finally:
            await sampler.stop()
    verdict = soak_verdict(run.samples, run.turns, duration)
    if all(s.asyncio_tasks is None for s in run.samples):
        verdict["series"]["asyncio_tasks"]["why"] = (
            "the server exports no asyncio task gauge on /metrics (halfsec_asyncio_tasks)"
        )
    return {
        "schema": "halfsec.soak/1",
        "meta": {
            **default_meta("benchmarks/soak.py"),
            "cpu": cpu_name(),
            "server_url": server.url,
            "health": server.health,
            "overrides": list(args.overrides),
        },
        "sessions": k,
        "capacity": {"value": capacity, "measured": measured, "share": 0.75},
        "minutes": args.minutes,
        "sample_s": args.sample_s,
        "flat_rule": {
            "warmup_share": 0.2,
            "bounds": {key: {"abs": a, "rel": r} for key, (a, r) in FLAT_BOUNDS.items()},
        },
        "ok": verdict["ok"],
        "series": verdict["series"],
        "latency": verdict["latency"],
        "step": step_entry(run, Slo()),
        "samples": [
            {
                "t_s": s.t_s,
                "cpu_pct": s.cpu_pct,
                "machine_cpu_pct": s.machine_cpu_pct,
                "rss_mb": s.rss_mb,
                "fds": s.fds,
                "threads": s.threads,
                "processes": s.processes,
                "asyncio_tasks": s.asyncio_tasks,
            }
            for s in run.samples
        ],
        "turns": [slim_turn(t) for t in run.turns],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--sessions", type=int, help="callers (default: 75 %% of the capacity)")
    ap.add_argument("--capacity", type=int, help="the knee, if known (skips the quick ramp)")
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--limit", type=int, default=20, help="coffee orders to draw from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", dest="json_out", type=Path)
    args = ap.parse_args()
    if args.minutes <= 0 or (args.sessions is not None and args.sessions < 1):
        ap.error("--minutes must be > 0 and --sessions >= 1")

    report = asyncio.run(soak(args))
    for key, s in report["series"].items():
        state = {True: "[green]flat[/green]", False: "[red]NOT flat[/red]", None: "not judged"}[
            s["flat"]
        ]
        detail = f"drift {s['drift']} (limit {s['limit']})" if "drift" in s else s.get("why", "")
        console.print(f"{key:>14}: {state} {detail}")
    lat = report["latency"]
    console.print(
        f"v2v p95 first minute {lat['first_minute_p95_ms']} ms, last minute "
        f"{lat['last_minute_p95_ms']} ms ({lat['change_pct']} %): within 10 %: {lat['within_10pct']}"
    )
    console.print(f"soak ok: {report['ok']}")
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        console.print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
