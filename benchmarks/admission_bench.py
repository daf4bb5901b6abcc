"""Does an admitted caller keep the SLO, past capacity too?  ``halfsec serve`` with 1 and N
workers under N callers, admission by measured load on.

    python benchmarks/admission_bench.py [--workers 1,2] [--steps 8,12,16] [--turns 3]
        [--capacity TURNS] [--limit 20] [--json OUT]

For each ``--workers`` value it starts ``halfsec serve --workers W`` (coffee domain, its
default admission unless ``--capacity``) and runs ``lab.load``'s steps against it: N
callers at once, each playing real people's coffee orders from ``../shared/speech``,
waiting for the reply to finish playing, thinking 1-2 s, speaking again -- one WebSocket
session per caller, so admission is decided once, when the call starts.  A step reports
the v2v p50/p95/p99 of the admitted callers' turns (the client's clock, ``measure``'s
rule), the callers it refused as ``busy`` and the turns that failed.  The promise is: p95 <= 500 ms and no failed turn
at every step, refusals allowed past capacity.  Every step runs, also after one that
broke the promise (what happens past capacity is the point).  The JSON also holds
every admission decision the server logged, with the signals it was made on.

Timing is real time on the client, which shares the machine: run it on a quiet machine
(``flock -x /tmp/halfsec_cpu.lock`` on the shared box).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from _cli import bench_parser, emit
from rich.console import Console
from rich.table import Table

from halfsec.lab.bench.corpus import CorpusItem
from halfsec.lab.bench.options import BenchOptions
from halfsec.lab.load.options import LoadOptions, Slo
from halfsec.lab.load.run import run_ramp
from halfsec.lab.report.json import cpu_info

try:  # run as a script: the benchmarks folder is on sys.path
    from load_bench import SPEECH, coffee_orders
except ImportError:  # pragma: no cover - imported as benchmarks.admission_bench
    from benchmarks.load_bench import SPEECH, coffee_orders

console = Console(stderr=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"halfsec serve exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"{base}/ready") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.25)
    raise SystemExit("halfsec serve was not ready in time")


def start_server(
    workers: int, capacity: float | None, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    args = [sys.executable, "-m", "halfsec.cli.main", "serve", "--port", str(port), "--no-trace"]
    args += ["--workers", str(workers), "--set", "logic.domain=coffee"]
    if capacity is not None:
        args += ["--capacity", str(capacity)]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=out, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def stop_server(proc: subprocess.Popen[bytes]) -> int | None:
    proc.send_signal(signal.SIGTERM)  # drains: every caller has hung up by now
    try:
        return proc.wait(40)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        return None


async def one_run(
    workers: int, args: argparse.Namespace, items: list[CorpusItem]
) -> dict[str, Any]:
    log = Path(tempfile.mkstemp(prefix=f"admission-w{workers}-", suffix=".log")[1])
    proc, base = start_server(workers, args.capacity, log)
    try:
        await wait_ready(base, proc)
        await asyncio.sleep(args.warm_s)  # the final lane's spares load after start
        opts = LoadOptions(turns=args.turns, seed=args.seed)
        slo = Slo(p95_ms=args.slo_p95_ms, refusals_break=False)
        bench = BenchOptions(server=base.replace("http://", "ws://") + "/ws")
        steps: list[dict[str, Any]] = []
        broken: list[str] = []
        for i, n in enumerate(args.steps):  # every step, also after a broken one
            if i:
                await asyncio.sleep(opts.settle_s)
            result = await run_ramp(items, [n], opts, bench, slo, server_pid=proc.pid)
            steps.extend(result.steps)
            if result.stop_reason != "ramp done":
                broken.append(result.stop_reason)
    finally:
        code = stop_server(proc)
    return {
        "workers": workers,
        "capacity": args.capacity,
        "steps": steps,
        "decisions": admission_decisions(log),
        "broken": broken,
        "serve_exit_code": code,
        "serve_log": str(log),
    }


DECISION = re.compile(
    r"^(?P<clock>\S+ \S+) halfsec\.admission admission (?P<verdict>admit|refuse) (?P<rest>.*)$"
)


def admission_decisions(log: Path) -> list[dict[str, Any]]:
    """Every admission decision the server logged (``server/readiness.py``): when, admit
    or refuse, and the signals it was made on -- the evidence for what admitted one
    caller too many."""
    out: list[dict[str, Any]] = []
    for line in log.read_text(errors="replace").splitlines():
        m = DECISION.match(line)
        if m is None:
            continue
        entry: dict[str, Any] = {"clock": m["clock"], "verdict": m["verdict"]}
        for field in m["rest"].split():
            key, _, value = field.partition("=")
            with contextlib.suppress(ValueError):
                entry[key] = float(value)
        out.append(entry)
    return out


def show(runs: list[dict[str, Any]]) -> None:
    table = Table(title="admission: v2v of admitted turns, busy refusals")
    cols = ("workers", "callers", "admitted", "refused", "turns", "failed", "p50", "p95", "p99")
    for col in (*cols, "SLO"):
        table.add_column(col)
    for run in runs:
        for st in run["steps"]:
            v = st.get("v2v_ms") or {}
            table.add_row(
                str(run["workers"]),
                str(st.get("sessions")),
                str((st.get("sessions") or 0) - (st.get("refused") or 0)),
                str(st.get("refused")),
                str(st.get("turns")),
                str(st.get("failed")),
                *(f"{v[k]:.0f}" if v.get(k) is not None else "-" for k in ("p50", "p95", "p99")),
                "met" if st.get("met_slo") else "broken",  # why: the JSON's steps[].why
            )
    console.print(table)


def main() -> None:
    ap = bench_parser(__doc__)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--steps", default="8,12,16", help="comma-separated caller counts")
    ap.add_argument("--turns", type=int, default=3, help="turns per caller per step")
    ap.add_argument("--capacity", type=float, default=None, help="halfsec serve --capacity")
    ap.add_argument("--limit", type=int, default=20, help="coffee orders to draw from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slo-p95-ms", type=float, default=500.0)
    ap.add_argument("--warm-s", type=float, default=8.0, help="wait after /ready")
    args = ap.parse_args()
    args.steps = [int(x) for x in args.steps.split(",")]
    items = coffee_orders(args.limit)
    runs = []
    for w in (int(x) for x in args.workers.split(",")):
        console.print(f"[bold]halfsec serve --workers {w}[/bold]: steps {args.steps}")
        runs.append(asyncio.run(one_run(w, args, items)))
    show(runs)
    report = {
        "meta": {
            "command": "benchmarks/admission_bench.py " + " ".join(sys.argv[1:]),
            "cpu": cpu_info()["model"],
            "cores": os.cpu_count(),
            "cpu_info": cpu_info(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "corpus": f"{SPEECH / 'manifest.tsv'} (first {args.limit} orderDrink rows)",
            "slo_p95_ms": args.slo_p95_ms,
        },
        "runs": runs,
    }
    emit(report, args.json)  # the tables on stderr, the JSON on stdout


if __name__ == "__main__":
    main()
