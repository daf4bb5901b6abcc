"""The server's footprint while it is under load: CPU, memory, descriptors, threads, tasks.

Sampled from outside with psutil, for the server process and all its children (``halfsec
serve --workers N`` forks workers; their cost is the server's cost), because a number
the server reports about itself stops being reported exactly when it is in trouble.
CPU is a share of the whole machine (100 % = every core busy), the unit a capacity plan
needs; the machine's own CPU is sampled beside it, since on a shared box the bench and
other people's work compete for the same cores.

The asyncio task count is only visible from inside: it is read from the server's
``/metrics`` when the server exports a gauge for it (any metric whose name ends in
``asyncio_tasks``), and is None otherwise.

A server started elsewhere (``halfsec bench --server URL``) has no pid here.  Then the
footprint comes from its ``/metrics`` (``source: "metrics"``): the process collector's
``process_cpu_seconds_total``, ``process_resident_memory_bytes`` and
``process_open_fds`` (no thread count: None).  Each response names the process that
answered (``X-Halfsec-Worker``); with ``halfsec serve --workers N`` every worker has its
own registry and a scrape reaches one of them, so each sample scrapes a few times on
fresh connections and sums the workers that answered (``processes`` = how many; the
parent, which serves nothing, is never among them).  A worker's CPU is its counter's
rise since its previous reading over the time between them, so a worker seen only now
and then still counts at its true mean.  Under that honesty rule a sample's CPU is None
until some worker was read twice, and a step's figures cover ``processes`` workers:
compare it with the server's N.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil

from halfsec.clock import now_ns

__all__ = [
    "ResourceSample",
    "ResourceSampler",
    "read_process_metrics",
    "read_task_gauge",
    "summarize_samples",
]

WORKER_HEADER = "X-Halfsec-Worker"
"""The response header naming the server process that answered (``server.app``)."""
_PROCESS_KEYS = {
    "process_cpu_seconds_total": "cpu_s",
    "process_resident_memory_bytes": "rss_bytes",
    "process_open_fds": "fds",
}


@dataclass(frozen=True, slots=True)
class ResourceSample:
    t_s: float
    """Seconds since the sampler started."""
    cpu_pct: float | None
    """Server process and children, % of the whole machine (all cores); from /metrics,
    of this machine's cores (None: no worker read twice yet)."""
    machine_cpu_pct: float
    """This machine's CPU (the client's, when the server runs elsewhere)."""
    rss_mb: float | None
    fds: int | None
    threads: int | None
    processes: int
    """Processes summed: the server and its children, or the workers that answered."""
    asyncio_tasks: int | None
    source: str = "psutil"
    """``psutil`` (the server's pid, from outside) or ``metrics`` (its /metrics)."""


def read_task_gauge(text: str) -> int | None:
    """The asyncio task count from a Prometheus exposition (summed over workers when
    there are labelled series), or None when the server exports none."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name.endswith("asyncio_tasks"):
            with contextlib.suppress(ValueError, IndexError):
                total += float(line.rsplit(" ", 1)[1])
                seen = True
    return int(total) if seen else None


def read_process_metrics(text: str) -> dict[str, float]:
    """``cpu_s``, ``rss_bytes``, ``fds`` from the process collector's series in a
    Prometheus exposition (the keys it lacks are left out)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        key = _PROCESS_KEYS.get(name)
        if key is not None:
            with contextlib.suppress(ValueError):
                out[key] = float(value.split(" ", 1)[0])
    return out


@dataclass(frozen=True, slots=True)
class _Reading:
    t_ns: int
    values: dict[str, float]
    tasks: int | None


@dataclass
class ResourceSampler:
    """Samples ``pid`` and its children every ``every_s`` until stopped.

    Keeps one ``psutil.Process`` per pid: CPU percent is the time used since the
    previous call on the same object, so a new object each time would read 0."""

    pid: int | None
    metrics_url: str | None = None
    every_s: float = 1.0
    samples: list[ResourceSample] = field(default_factory=list)
    scrapes: int = 4
    """Without a pid: /metrics requests per sample, each on a fresh connection (with
    ``--workers N`` a request reaches one worker)."""
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _base: dict[str, _Reading] = field(default_factory=dict)
    """Without a pid: each worker's reading at the previous sample it answered."""
    _task: asyncio.Task[None] | None = None
    _t0_ns: int = 0

    def _tree(self) -> list[psutil.Process]:
        if self.pid is None:
            return []
        try:
            root = self._procs.get(self.pid) or psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        live = {}
        for p in tree:
            live[p.pid] = self._procs.get(p.pid, p)
        self._procs = live
        return list(live.values())

    def _sample_procs(self) -> tuple[float, float, int, int, int]:
        cpu = rss = 0.0
        fds = threads = n = 0
        for p in self._tree():
            try:
                with p.oneshot():
                    cpu += p.cpu_percent(None)
                    rss += p.memory_info().rss
                    fds += p.num_fds()
                    threads += p.num_threads()
                n += 1
            except psutil.Error:
                continue
        cores = psutil.cpu_count() or 1
        return cpu / cores, rss / 2**20, fds, threads, n

    async def _tasks(self, http: aiohttp.ClientSession | None) -> int | None:
        if http is None or self.metrics_url is None:
            return None
        try:
            async with http.get(self.metrics_url) as r:
                if r.status != 200:
                    return None
                return read_task_gauge(await r.text())
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None

    @property
    def source(self) -> str:
        return "psutil" if self.pid is not None else "metrics"

    async def sample(self, http: aiohttp.ClientSession | None = None) -> ResourceSample:
        """One sample now (CPU since the previous sample, or since ``start``)."""
        t_s = round((now_ns() - self._t0_ns) / 1e9, 3)
        if self.pid is None:
            s = await self._sample_metrics(http, t_s)
        else:
            cpu, rss, fds, threads, n = await asyncio.to_thread(self._sample_procs)
            tasks = await self._tasks(http)
            machine = round(psutil.cpu_percent(None), 1)
            s = ResourceSample(t_s, round(cpu, 1), machine, round(rss, 1), fds, threads, n, tasks)
        self.samples.append(s)
        return s

    async def _scrape(self, http: aiohttp.ClientSession) -> tuple[str, _Reading] | None:
        """One /metrics request on a connection of its own: (worker, reading)."""
        assert self.metrics_url is not None
        try:
            async with http.get(self.metrics_url, headers={"Connection": "close"}) as r:
                if r.status != 200:
                    return None
                text = await r.text()
                worker = r.headers.get(WORKER_HEADER, "")
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None
        values = read_process_metrics(text)
        if "cpu_s" not in values:
            return None
        return worker, _Reading(now_ns(), values, read_task_gauge(text))

    async def _sample_metrics(
        self, http: aiohttp.ClientSession | None, t_s: float
    ) -> ResourceSample:
        """The workers that answered this sample's scrapes, summed (module docstring)."""
        latest: dict[str, _Reading] = {}
        if http is not None and self.metrics_url is not None:
            for _ in range(max(1, self.scrapes)):
                got = await self._scrape(http)
                if got is not None:
                    latest[got[0]] = got[1]
        cpu_s_per_s: float | None = None
        for worker, now in latest.items():
            base = self._base.get(worker)
            if base is not None and now.t_ns > base.t_ns:
                rate = (now.values["cpu_s"] - base.values["cpu_s"]) / ((now.t_ns - base.t_ns) / 1e9)
                cpu_s_per_s = (cpu_s_per_s or 0.0) + max(0.0, rate)
            self._base[worker] = now
        cores = psutil.cpu_count() or 1
        rss = [r.values["rss_bytes"] for r in latest.values() if "rss_bytes" in r.values]
        fds = [r.values["fds"] for r in latest.values() if "fds" in r.values]
        tasks = [r.tasks for r in latest.values() if r.tasks is not None]
        return ResourceSample(
            t_s,
            round(100.0 * cpu_s_per_s / cores, 1) if cpu_s_per_s is not None else None,
            round(psutil.cpu_percent(None), 1),
            round(sum(rss) / 2**20, 1) if rss else None,
            int(sum(fds)) if fds else None,
            None,
            len(latest),
            sum(tasks) if tasks else None,
            "metrics",
        )

    async def _loop(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(0.5, self.every_s))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            if self.pid is None:  # a first reading per worker, so sample 1 has a CPU figure
                await self._sample_metrics(http, 0.0)
            while True:
                await self.sample(http)
                await asyncio.sleep(self.every_s)

    def start(self) -> None:
        self._t0_ns = now_ns()
        psutil.cpu_percent(None)
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                p.cpu_percent(None)
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> list[ResourceSample]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        return self.samples

    def take(self) -> list[ResourceSample]:
        """The samples since the last ``take`` (one ramp step's)."""
        out, self.samples = self.samples, []
        return out


def summarize_samples(samples: list[ResourceSample]) -> dict[str, Any] | None:
    """Mean and max CPU, max and last RSS, max descriptors/threads/tasks of a step."""
    xs = samples  # start() primed psutil, so even the first sample's CPU is a real figure
    if not xs:
        return None
    cpu = [s.cpu_pct for s in xs if s.cpu_pct is not None]
    rss = [s.rss_mb for s in xs if s.rss_mb is not None]

    def most(values: list[int | None]) -> int | None:
        known = [v for v in values if v is not None]
        return max(known) if known else None

    return {
        "source": xs[-1].source,
        "samples": len(xs),
        "cpu_pct_mean": round(sum(cpu) / len(cpu), 1) if cpu else None,
        "cpu_pct_max": round(max(cpu), 1) if cpu else None,
        "machine_cpu_pct_mean": round(sum(s.machine_cpu_pct for s in xs) / len(xs), 1),
        "rss_mb_max": round(max(rss), 1) if rss else None,
        "rss_mb_last": rss[-1] if rss else None,
        "fds_max": most([s.fds for s in xs]),
        "threads_max": most([s.threads for s in xs]),
        "processes": max(s.processes for s in xs),
        "asyncio_tasks_max": most([s.asyncio_tasks for s in xs]),
    }
