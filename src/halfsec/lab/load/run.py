"""Many callers against one server: one step of N at a time, up a ramp to the knee.

One ``halfsec serve`` (``lab.bench.server_process``, started by command line, never
imported) carries the whole ramp, as a deployed server would: models loaded once, its
memory and caches warm from one step to the next.  Each step runs N callers
(``lab.load.caller``) to the end of their turns, then the runner waits ``settle_s`` so
the next step starts on an idle server.  The ramp stops at the first step that breaks
the SLO (``lab.load.slo``): above the knee every step only breaks harder, and
measuring it would take the longest of all.

The server's CPU, memory, descriptors and threads are sampled through every step
(``lab.load.sampler``): from outside by pid, or, with ``--server`` (a server started
elsewhere, no pid given), from its ``/metrics`` process series (``source`` in the
step's ``server`` entry says which).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from halfsec.clock import now_ns
from halfsec.lab.bench.corpus import CorpusItem
from halfsec.lab.bench.options import BenchOptions
from halfsec.lab.bench.run import client_cpu_s, fault_args
from halfsec.lab.bench.server_process import ServerProcess, fetch_health, server_urls
from halfsec.lab.load.caller import CallerBoard, plan_callers, run_caller
from halfsec.lab.load.options import LoadError, LoadOptions, Slo
from halfsec.lab.load.sampler import ResourceSample, ResourceSampler, summarize_samples
from halfsec.lab.load.slo import knee, step_stats, verdict

__all__ = ["LoadObserver", "LoadServer", "StepRun", "load_server", "run_ramp", "run_step"]


class LoadObserver:
    """What the runner tells a live display; every method may be left as is."""

    def step_started(self, sessions: int, expected_turns: int | None) -> None:
        """A step of ``sessions`` callers began (``expected_turns`` None: by time)."""

    def turn_done(
        self, rec: dict[str, Any], board: CallerBoard, step: list[dict[str, Any]]
    ) -> None:
        """A turn ended; ``step``: every turn of this step so far, ``rec`` included."""

    def step_done(self, step: dict[str, Any]) -> None:
        """A step ended; ``step`` is its entry in the report."""


@dataclass
class LoadServer:
    """Where the callers go, and what may be sampled there."""

    url: str
    pid: int | None
    metrics_url: str | None
    health: dict[str, Any] = field(default_factory=dict)
    started_by_bench: bool = False


def _metrics_url(ws_url: str) -> str:
    u = urlsplit(ws_url)
    return urlunsplit(("https" if u.scheme == "wss" else "http", u.netloc, "/metrics", "", ""))


def server_domain(items: Sequence[CorpusItem]) -> str | None:
    """The one domain of the recordings (None: the server's default); one server
    carries a load run, so recordings of two domains are refused."""
    domains = {it.domain for it in items if it.domain is not None}
    if len(domains) > 1:
        raise LoadError(
            f"the recordings are of {len(domains)} domains ({', '.join(sorted(domains))}); a "
            "load run uses one server: pass --domain coffee (or retail)"
        )
    return next(iter(domains), None)


@contextlib.asynccontextmanager
async def load_server(
    bench: BenchOptions,
    items: Sequence[CorpusItem],
    max_sessions: int,
    server_pid: int | None = None,
) -> AsyncIterator[LoadServer]:
    """``bench.server`` as it is, or a ``halfsec serve`` started here for the run with
    ``--max-sessions max_sessions`` (its session cap is part of what is measured)."""
    if bench.server is not None:
        url, health_url = server_urls(bench.server)
        health = await fetch_health(health_url) or {}
        yield LoadServer(url, server_pid, _metrics_url(url), health)
        return
    overrides = list(bench.overrides)
    dom = server_domain(items)
    if dom is not None:
        overrides.append(f"logic.domain={dom}")
    extra = ["--no-trace", "--max-sessions", str(max_sessions), *fault_args(bench)]
    if bench.token:
        extra += ["--token", bench.token]
    proc = ServerProcess(
        bench.config, overrides, bench.inject_delay_ms, extra, bench.server_start_timeout_s
    )
    async with proc:
        pid = proc.proc.pid if proc.proc is not None else None
        yield LoadServer(proc.url, pid, _metrics_url(proc.url), proc.health, True)


@dataclass
class StepRun:
    """One step: its turn records and the server's samples while it ran."""

    sessions: int
    turns: list[dict[str, Any]]
    samples: list[ResourceSample]
    wall_s: float
    client_cpu_s: float


async def run_step(
    server: LoadServer,
    items: Sequence[CorpusItem],
    sessions: int,
    opts: LoadOptions,
    bench: BenchOptions,
    sampler: ResourceSampler,
    observer: LoadObserver | None = None,
    step_seed: int = 0,
) -> StepRun:
    """N callers at once against ``server``, until each played its turns (or the
    step's ``duration_s`` passed and its turn in flight ended)."""
    obs = observer or LoadObserver()
    plans = plan_callers(sessions, items, opts, step_seed)
    expected = sessions * opts.turns if opts.turns is not None and opts.duration_s is None else None
    obs.step_started(sessions, expected)
    board = CallerBoard()
    turns: list[dict[str, Any]] = []
    t0, cpu0 = now_ns(), client_cpu_s()
    deadline = t0 + int(opts.duration_s * 1e9) if opts.duration_s is not None else None

    def on_turn(rec: dict[str, Any]) -> None:
        rec["step_sessions"] = sessions
        turns.append(rec)
        obs.turn_done(rec, board, turns)

    sampler.take()
    with ThreadPoolExecutor(max_workers=sessions, thread_name_prefix="caller") as pool:
        await asyncio.gather(
            *(run_caller(server.url, p, bench, t0, deadline, board, on_turn, pool) for p in plans)
        )
    turns.sort(key=lambda r: (r["t_start_s"], r["caller"]))
    return StepRun(sessions, turns, sampler.take(), (now_ns() - t0) / 1e9, client_cpu_s() - cpu0)


def step_entry(run: StepRun, slo: Slo) -> dict[str, Any]:
    """A step's entry in the report: counts, v2v percentiles, verdict, server footprint."""
    stats = step_stats(run.sessions, run.turns)
    met, why = verdict(stats, slo)
    return {
        **stats,
        "met_slo": met,
        "why": why,
        "wall_s": round(run.wall_s, 1),
        "turns_per_min": round(len(run.turns) * 60 / run.wall_s, 1) if run.wall_s > 0 else None,
        "server": summarize_samples(run.samples),
        "client_cpu_s": round(run.client_cpu_s, 2),
    }


@dataclass
class RampResult:
    steps: list[dict[str, Any]]
    turns: list[dict[str, Any]]
    knee: int | None
    stop_reason: str
    server: LoadServer


async def run_ramp(
    items: Sequence[CorpusItem],
    ramp: Sequence[int],
    opts: LoadOptions,
    bench: BenchOptions,
    slo: Slo,
    observer: LoadObserver | None = None,
    max_sessions: int | None = None,
    server_pid: int | None = None,
) -> RampResult:
    """Each step of ``ramp`` in turn against one server; stops after the first step
    that breaks ``slo``.  ``max_sessions``: the started server's cap (default: the
    ramp's largest step, so the cap is not what breaks it)."""
    if not items:
        raise LoadError("no recordings to play")
    obs = observer or LoadObserver()
    cap = max_sessions if max_sessions is not None else max(ramp)
    steps: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    stop = "ramp done"
    async with load_server(bench, items, cap, server_pid) as server:
        sampler = ResourceSampler(server.pid, server.metrics_url, opts.sample_s)
        sampler.start()
        try:
            for i, n in enumerate(ramp):
                if i:
                    await asyncio.sleep(opts.settle_s)
                run = await run_step(server, items, n, opts, bench, sampler, obs, i)
                entry = step_entry(run, slo)
                steps.append(entry)
                turns.extend(run.turns)
                obs.step_done(entry)
                if not entry["met_slo"]:
                    stop = f"{n} sessions: {entry['why']}"
                    break
        finally:
            await sampler.stop()
    return RampResult(steps, turns, knee(steps), stop, server)
