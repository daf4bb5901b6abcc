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
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil

from halfsec.clock import now_ns

__all__ = ["ResourceSample", "ResourceSampler", "read_task_gauge", "summarize_samples"]


@dataclass(frozen=True, slots=True)
class ResourceSample:
    t_s: float
    """Seconds since the sampler started."""
    cpu_pct: float
    """Server process and children, % of the whole machine (all cores)."""
    machine_cpu_pct: float
    rss_mb: float
    fds: int
    threads: int
    processes: int
    asyncio_tasks: int | None


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


@dataclass
class ResourceSampler:
    """Samples ``pid`` and its children every ``every_s`` until stopped.

    Keeps one ``psutil.Process`` per pid: CPU percent is the time used since the
    previous call on the same object, so a new object each time would read 0."""

    pid: int | None
    metrics_url: str | None = None
    every_s: float = 1.0
    samples: list[ResourceSample] = field(default_factory=list)
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
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

    async def sample(self, http: aiohttp.ClientSession | None = None) -> ResourceSample:
        """One sample now (CPU since the previous sample, or since ``start``)."""
        cpu, rss, fds, threads, n = await asyncio.to_thread(self._sample_procs)
        tasks = await self._tasks(http)
        s = ResourceSample(
            round((now_ns() - self._t0_ns) / 1e9, 3),
            round(cpu, 1),
            round(psutil.cpu_percent(None), 1),
            round(rss, 1),
            fds,
            threads,
            n,
            tasks,
        )
        self.samples.append(s)
        return s

    async def _loop(self) -> None:
        timeout = aiohttp.ClientTimeout(total=max(0.5, self.every_s))
        async with aiohttp.ClientSession(timeout=timeout) as http:
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
    cpu = [s.cpu_pct for s in xs]
    tasks = [s.asyncio_tasks for s in xs if s.asyncio_tasks is not None]
    return {
        "samples": len(xs),
        "cpu_pct_mean": round(sum(cpu) / len(cpu), 1),
        "cpu_pct_max": round(max(cpu), 1),
        "machine_cpu_pct_mean": round(sum(s.machine_cpu_pct for s in xs) / len(xs), 1),
        "rss_mb_max": round(max(s.rss_mb for s in xs), 1),
        "rss_mb_last": xs[-1].rss_mb,
        "fds_max": max(s.fds for s in xs),
        "threads_max": max(s.threads for s in xs),
        "processes": max(s.processes for s in xs),
        "asyncio_tasks_max": max(tasks) if tasks else None,
    }
