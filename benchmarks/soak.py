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
``lab.load.soak.FLAT_BOUNDS``); v2v p95 of the last minute against the first
(``latency``, the issue's rule) and of the last two minutes against the first two after
the warm-up share (``latency_steady``; why two rules: ``lab.load.soak``), and every
minute's p95.  ``ok``: every series flat, the steady rule held, no failed turn; ``why``
lists what did not hold.

``--server URL --server-pid PID`` soaks a server that is already running (e.g. one started
with memory probes); without the pid its RSS, descriptors and threads are not sampled.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from typing import Any

from _cli import bench_parser, emit
from rich.console import Console

from halfsec.lab.bench.options import BenchOptions
from halfsec.lab.load.live import LiveLoad
from halfsec.lab.load.options import LoadOptions, Slo, parse_ramp
from halfsec.lab.load.report import slim_turn
from halfsec.lab.load.run import load_server, run_ramp, run_step, step_entry
from halfsec.lab.load.sampler import ResourceSampler
from halfsec.lab.load.soak import FLAT_BOUNDS, soak_verdict
from halfsec.lab.report.json import cpu_info, default_meta

try:  # run as a script: the benchmarks folder is on sys.path
    from load_bench import coffee_orders
except ImportError:  # pragma: no cover - imported as benchmarks.soak
    from benchmarks.load_bench import coffee_orders

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
    bench = BenchOptions(overrides=list(args.overrides), server=args.server)
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
    async with load_server(bench, items, max(k, 1), args.server_pid) as server:
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
            "cpu": cpu_info()["model"],
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
        "why": verdict["why"],
        "failed_turns": verdict["failed_turns"],
        "series": verdict["series"],
        "latency": verdict["latency"],
        "latency_steady": verdict["latency_steady"],
        "latency_per_minute": verdict["latency_per_minute"],
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
    ap = bench_parser(__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--sessions", type=int, help="callers (default: 75 %% of the capacity)")
    ap.add_argument("--capacity", type=int, help="the knee, if known (skips the quick ramp)")
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--limit", type=int, default=20, help="coffee orders to draw from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument(
        "--server", help="ws://host:port/ws of a running server (default: start one here)"
    )
    ap.add_argument(
        "--server-pid", type=int, help="with --server: its pid, so RSS/fds/threads are sampled"
    )
    args = ap.parse_args()
    if args.minutes <= 0 or (args.sessions is not None and args.sessions < 1):
        ap.error("--minutes must be > 0 and --sessions >= 1")

    report = asyncio.run(soak(args))
    step = report["step"]
    console.print(
        f"{step['turns']} turns, {step['failed']} failed, {step['refused']} refused; v2v "
        f"p50/p95/p99 {step['v2v_ms']['p50']}/{step['v2v_ms']['p95']}/{step['v2v_ms']['p99']} ms"
    )
    for key, s in report["series"].items():
        state = {True: "[green]flat[/green]", False: "[red]NOT flat[/red]", None: "not judged"}[
            s["flat"]
        ]
        if "drift" in s:
            detail = (
                f"{s['first']} -> {s['last']} (max {s['max']}), drift {s['drift']} "
                f"(limit {s['limit']}) over the last {s['window_s']} s"
            )
        else:
            detail = s.get("why", "")
        console.print(f"{key:>14}: {state} {detail}")
    verdict = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "not judged"}
    lat, steady = report["latency"], report["latency_steady"]
    console.print(
        f"v2v p95 first vs last minute (the issue's rule): {lat['first_minute_p95_ms']} -> "
        f"{lat['last_minute_p95_ms']} ms ({lat['first_minute_turns']}/"
        f"{lat['last_minute_turns']} turns, {lat['change_pct']} %): "
        f"{verdict[lat['within_10pct']]}"
    )
    console.print(
        f"v2v p95 steady, {steady['first_window_s']} s vs {steady['last_window_s']} s (ok uses "
        f"this): {steady['first_p95_ms']} -> {steady['last_p95_ms']} ms ({steady['first_turns']}/"
        f"{steady['last_turns']} turns, {steady['change_pct']} %): "
        f"{verdict[steady['within_10pct']]}"
    )
    minutes = ", ".join(f"{m['p95_ms']} ({m['turns']})" for m in report["latency_per_minute"])
    console.print(f"p95 per minute (turns): {minutes}")
    console.print(
        f"soak ok: {report['ok']}" + (f" ({'; '.join(report['why'])})" if report["why"] else "")
    )
    emit(report, args.json)  # the lines above on stderr, the JSON on stdout


if __name__ == "__main__":
    main()
