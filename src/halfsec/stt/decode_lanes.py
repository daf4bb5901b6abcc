"""The worker threads STT decodes run on ("lanes"), one decode at a time, off the event loop.

A lane is shared by every session of a process, so one decode that never ends would stall
every session behind it, and CTranslate2 cannot abort a decode.  ``ReplaceableLane``
therefore lets a caller *abandon* a decode it no longer waits for: a queued one is
dropped, and a running one that is still running once it has hung (or with other work
queued behind it) loses its worker.  Another worker with its own model takes over the
queue, and the old thread is left to finish its decode.

With spares (the final lane keeps warm standby workers) a swap loads nothing on the
critical path: a spare is loaded and warm, a decode never waits behind one that has
already run ``busy_after_s`` (it moves to a spare), and a worker whose long or hung decode
ends becomes a spare again.  A swap that takes the last spare loads one more in the
background, so the pool grows to what the hangs need and then stops loading.  (Loading a
fresh standby at every swap was measured to cost the other sessions more: on 2 cores a
load and warm-up, ~0.5 CPU s, at every hung decode made their TTS miss its deadline.)
A loaded worker stays in the pool (up to ``max_workers``) rather than being freed when
it comes back to a full set of spares (or to a lane without standby, whose next
replacement then reuses it instead of loading on the critical path): freeing a model and loading another later, on a
new thread, leaves the freed one's memory in glibc's per-thread arenas (tiny.en: RSS
+40-50 MB per free-and-load, measured 2026-12-01; the 10-minute soak's RSS steps were
exactly these loads).  Kept, the pool's memory is its high-water mark and stays flat.

A lane made with ``shed=True`` (partials) runs work that may be refused under load, and
every lane reports its queue waits to the process's ``lane_load.LANE_LOAD``: the
priority rule (finals first, partials shed) and why it is so are there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from halfsec.stt.lane_load import LANE_LOAD, DecodeShed, LaneLoad
from halfsec.stt.lane_threads import inference_executor
from halfsec.stt.native_caches import bound_onednn_cache

log = logging.getLogger(__name__)

M = TypeVar("M")
T = TypeVar("T")


class DecodeAbandoned(Exception):
    """A job found (``ReplaceableLane.wanted``) that nobody waits for it any more and did
    not decode."""


class _Worker(Generic[M]):
    """One thread and the model loaded on it (loaded there, so it inherits the thread's
    priority; see ``inference_executor``)."""

    def __init__(
        self, name: str, load: Callable[[], M], nice: int, warm: Callable[[M], None] | None
    ) -> None:
        self.executor = inference_executor(name, nice)
        self.loaded = self.executor.submit(self._load, load, warm)
        self.jobs: list[_Job] = []

    @staticmethod
    def _load(load: Callable[[], M], warm: Callable[[M], None] | None) -> M:
        model = load()
        if warm is not None:
            warm(model)
        return model

    @property
    def model(self) -> M:
        """The model (waits for the load on a fresh worker; only its own jobs and the
        caller's blocking tools ask before it is ready)."""
        return self.loaded.result()


@dataclass(eq=False)
class _Job:
    fn: Callable[[Any], Any]
    result: asyncio.Future[Any]
    submitted: float = field(default_factory=time.monotonic)
    handle: concurrent.futures.Future[Any] | None = None
    worker: _Worker[Any] | None = None
    started: float | None = None
    """``time.monotonic()`` when the worker began it (set on the worker thread)."""
    abandoned: bool = False
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


def _running(job: _Job) -> bool:
    return job.handle is not None and job.handle.running()


def _orphaned(job: _Job) -> bool:
    """Its decode ended, but the loop that would settle it has closed."""
    return job.handle is not None and job.handle.done() and job.result.get_loop().is_closed()


class ReplaceableLane(Generic[M]):
    """Jobs ``fn(model)`` run one at a time on a worker that is replaced when one hangs.

    ``abandon(future)`` says nobody waits for that job any more.  Queued: it is dropped.
    Running: once it has run ``hung_after_s``, or at once when other jobs wait behind it
    (``replace_when_waiting``), the worker is replaced.  ``standby`` keeps spare workers
    loaded and warm (a swap that takes the last one loads another while the lane holds
    fewer than ``max_workers``, default ``1 + max_spares + max_hung``; a worker that comes
    back stays a spare, see the module docstring); ``busy_after_s``: a
    job submitted while the active worker's decode has run this long goes to a spare
    instead of queueing.
    At most ``max_hung`` replaced workers may still be running their job; past that the
    lane keeps its worker (and the callers' deadlines answer).

    ``shed``: the lane's work is optional (partials): ``submit`` raises ``DecodeShed``
    instead of queueing when more than ``max_waiting`` jobs are already started or
    waiting on it, or when ``lane_load`` says the process is busy (``lane_load``)."""

    def __init__(
        self,
        name: str,
        load: Callable[[], M],
        *,
        nice: int = 0,
        warm: Callable[[M], None] | None = None,
        standby: bool = False,
        max_spares: int = 2,
        hung_after_s: float = 1.0,
        busy_after_s: float | None = None,
        replace_when_waiting: bool = True,
        max_hung: int = 4,
        shed: bool = False,
        max_waiting: int = 0,
        lane_load: LaneLoad | None = None,
        max_workers: int | None = None,
    ) -> None:
        self.name = name
        self._load = load
        self._nice = nice
        self._warm = warm
        self._keep_standby = standby
        self.max_spares = max_spares
        self.hung_after_s = hung_after_s
        self.busy_after_s = busy_after_s
        self.replace_when_waiting = replace_when_waiting
        self.max_hung = max_hung
        self.max_workers = max_workers if max_workers is not None else 1 + max_spares + max_hung
        bound_onednn_cache()  # before any model decodes: its cache would grow for hours
        self._active: _Worker[M] = _Worker(name, load, nice, None)
        self._active.model  # noqa: B018 - a model that cannot load fails here, at start-up
        # Every spare loaded and warm before the lane is used: a spare still loading when
        # the first callers talk takes the cores from their turns (the soak's slowest
        # first-minute turns were the pool's first loads, at 2 s and 35 s).
        spares = max_spares if standby else 0
        self._spares: list[_Worker[M]] = [self._new_worker() for _ in range(spares)]
        for spare in self._spares:
            spare.model  # noqa: B018 - waits for the load and warm-up
        self._hung: list[_Worker[M]] = []
        self._jobs: dict[asyncio.Future[Any], _Job] = {}
        self.replacements = 0
        """How many times a worker running an abandoned decode was replaced (tests, logs)."""
        self.overflows = 0
        """How many times a job went to a spare rather than wait behind a long decode."""
        self.loads = 0
        """Models loaded after start-up (a replaced worker that did not come back)."""
        self.sheddable = shed
        self.max_waiting = max_waiting
        self.shed = 0
        """Jobs refused with ``DecodeShed`` (sheddable lanes)."""
        self._lane_load = lane_load if lane_load is not None else LANE_LOAD
        self._lane_load.register(self)

    def _new_worker(self) -> _Worker[M]:
        return _Worker(self.name, self._load, self._nice, self._warm)

    @property
    def model(self) -> M:
        """The active worker's model."""
        return self._active.model

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The active worker's thread (tests check its priority)."""
        return self._active.executor

    @property
    def spares(self) -> int:
        """Spare workers (loaded, or loading) ready to take over."""
        return len(self._spares)

    @property
    def workers(self) -> int:
        """Workers (each with its own model) the lane holds: active, spares, hung."""
        return 1 + len(self._spares) + len(self._hung)

    @property
    def hung_workers(self) -> int:
        """Replaced workers still running the job they hung on."""
        return len(self._hung)

    def waiting_jobs(self) -> int:
        """Jobs on the active worker not started yet (``lane_load.Lane``)."""
        return sum(
            1
            for j in self._active.jobs
            if j.handle is not None and not j.handle.done() and not j.handle.running()
        )

    def _unfinished(self) -> int:
        return sum(1 for j in self._active.jobs if j.handle is not None and not j.handle.done())

    def submit(self, fn: Callable[[M], T]) -> asyncio.Future[T]:
        """Run ``fn(model)`` on the lane; the future settles on the event loop.

        A sheddable lane may raise ``DecodeShed`` here instead (see the class docstring)."""
        loop = asyncio.get_running_loop()
        self._reap()
        if self.sheddable:
            reason = self._lane_load.shed_reason(self._unfinished() > self.max_waiting)
            if reason is not None:
                self.shed += 1
                self._lane_load.count_shed(reason)
                raise DecodeShed(f"{self.name}: decode shed ({reason})")
        job = _Job(fn, loop.create_future())
        running = next((j for j in self._active.jobs if _running(j)), None)
        if running is not None and running.abandoned and self.replace_when_waiting:
            self._replace(self._active)  # never queue behind a decode nobody waits for
        elif running is not None and self._standby_ready() and self._long(running):
            self._swap(self._active)  # nor behind a long one, with a warm spare at hand
            self._moved(running, 0.0)
        self._dispatch(job, loop)
        if running is not None and job.worker is running.worker and self.busy_after_s:
            # Queued behind a decode that is not long yet: look again once it would be.
            left = self.busy_after_s - (time.monotonic() - (running.started or time.monotonic()))
            job.timer = loop.call_later(max(0.0, left), self._overflow, job, running)
        self._jobs[job.result] = job
        return job.result

    def _dispatch(self, job: _Job, loop: asyncio.AbstractEventLoop) -> None:
        worker = self._active

        def run() -> Any:
            job.started = started = time.monotonic()
            if not self.sheddable:
                self._lane_load.record_wait(started - job.submitted, at=started)
            return job.fn(worker.model)

        def done(handle: concurrent.futures.Future[Any]) -> None:
            try:
                loop.call_soon_threadsafe(self._settle, job, handle)
            except RuntimeError:  # the loop is gone: nobody is waiting
                pass

        job.worker = worker
        job.started = None
        job.handle = worker.executor.submit(run)
        worker.jobs.append(job)
        job.handle.add_done_callback(done)

    def _overflow(self, job: _Job, running: _Job) -> None:
        """``job`` still waits behind ``running``, which has now run ``busy_after_s``:
        a spare takes the queue."""
        job.timer = None
        worker = running.worker
        if (
            worker is self._active
            and worker is not None
            and job.worker is worker
            and _running(running)
            and job.handle is not None
            and not job.handle.running()
            and not job.handle.done()
            and self._standby_ready()
        ):
            self._swap(worker)
            self._moved(running, time.monotonic() - job.submitted)

    def _moved(self, running: _Job, waited_s: float) -> None:
        """Count (and log: the fault bench reads these lines) a queue moved to a spare."""
        self.overflows += 1
        ran = time.monotonic() - (running.started or time.monotonic())
        log.info(
            "STT lane %s: a decode moved to a spare after waiting %.0f ms behind one "
            "running for %.0f ms (%d moved so far)",
            self.name,
            waited_s * 1000.0,
            ran * 1000.0,
            self.overflows,
        )

    def _reap(self) -> None:
        """Jobs whose decode ended without being settled (their event loop had closed: one
        engine may outlive several loops, as in tests or an embedding app that runs
        ``asyncio.run`` more than once) are forgotten, so that nothing they hold (a
        session's stream and turn) stays alive; replaced workers left with no job come
        back now."""
        for worker in (self._active, *self._spares, *self._hung):
            for job in [j for j in worker.jobs if _orphaned(j)]:
                worker.jobs.remove(job)
                self._jobs.pop(job.result, None)
        for worker in list(self._hung):
            if all(j.handle is None or j.handle.done() for j in worker.jobs):
                for job in worker.jobs:
                    self._jobs.pop(job.result, None)
                worker.jobs.clear()
                self._hung.remove(worker)
                self._come_back(worker)

    def _standby_ready(self) -> bool:
        return any(w.loaded.done() for w in self._spares)

    def _long(self, job: _Job) -> bool:
        started = job.started
        return (
            self.busy_after_s is not None
            and started is not None
            and time.monotonic() - started >= self.busy_after_s
        )

    def _settle(self, job: _Job, handle: concurrent.futures.Future[Any]) -> None:
        worker = job.worker
        if job.handle is not handle:
            return  # moved to another worker; that one settles it
        if worker is not None and job in worker.jobs:
            worker.jobs.remove(job)
        if worker is not None and worker in self._hung and not worker.jobs:
            self._hung.remove(worker)
            self._come_back(worker)
        self._jobs.pop(job.result, None)
        if job.timer is not None:
            job.timer.cancel()
        if job.result.done():
            return
        if handle.cancelled():
            job.result.cancel()
        elif (exc := handle.exception()) is not None:
            job.result.set_exception(exc)
        else:
            job.result.set_result(handle.result())

    def wanted(self, future: asyncio.Future[Any]) -> bool:
        """Does anyone still wait for ``future``'s job?  False once it was abandoned.

        Safe to ask from the worker thread (one attribute read): a job that was held up
        before its decode began (an injected stall, a page fault storm) asks this and
        skips a decode whose result nobody will read -- on 2 cores, that decode's ~0.1
        CPU s would land on whichever healthy turn runs then."""
        job = self._jobs.get(future)
        return job is None or not job.abandoned

    def abandon(self, future: asyncio.Future[Any]) -> None:
        """Nobody waits for ``future``'s job any more (see the class docstring)."""
        job = self._jobs.get(future)
        if job is None or job.handle is None or job.abandoned:
            return
        job.abandoned = True
        if job.handle.cancel() or job.handle.done():  # still queued (never runs) or over
            return
        elapsed = time.monotonic() - (job.started or time.monotonic())
        worker = job.worker
        waiting = self.replace_when_waiting and any(
            j is not job and j.handle is not None and not j.handle.done()
            for j in (worker.jobs if worker is not None else [])
        )
        if waiting or elapsed >= self.hung_after_s:
            if worker is not None:
                self._replace(worker)
            return
        loop = asyncio.get_running_loop()
        job.timer = loop.call_later(self.hung_after_s - elapsed, self._check_hung, job)

    def _check_hung(self, job: _Job) -> None:
        if job.worker is not None and job in job.worker.jobs and _running(job):
            self._replace(job.worker)

    def _replace(self, worker: _Worker[M]) -> None:
        """``worker`` runs a decode nobody waits for: another worker takes over."""
        if worker is not self._active:
            return
        if len(self._hung) >= self.max_hung:
            log.warning(
                "STT lane %s: a decode hangs but %d replaced workers still run theirs; "
                "keeping this one",
                self.name,
                len(self._hung),
            )
            return
        self._swap(worker)
        self.replacements += 1
        log.warning(
            "STT lane %s: a decode nobody waits for is still running; another worker took "
            "over (%d replaced so far)",
            self.name,
            self.replacements,
        )

    def _swap(self, worker: _Worker[M]) -> None:
        """A spare (or a fresh worker) becomes active and takes ``worker``'s queue;
        ``worker`` finishes its decode and comes back as a spare (``_come_back``)."""
        if self._spares:
            ready = [w for w in self._spares if w.loaded.done()]
            spare = ready[0] if ready else self._spares[0]
            self._spares.remove(spare)
            self._active = spare
            # (+1: ``worker``, about to be hung or a spare again)
            if not self._spares and self._keep_standby and self.workers + 1 < self.max_workers:
                self.loads += 1  # the last spare: grow the pool, off the critical path
                self._spares.append(self._new_worker())
                log.info("STT lane %s: loading a spare (%d loaded so far)", self.name, self.loads)
        else:  # the job waits for this load, so no warm-up on top of it
            self.loads += 1
            self._active = _Worker(self.name, self._load, self._nice, None)
        loop = asyncio.get_running_loop()
        for job in list(worker.jobs):
            if job.handle is not None and job.handle.cancel():
                worker.jobs.remove(job)
                if not job.abandoned:
                    self._dispatch(job, loop)
                else:
                    self._jobs.pop(job.result, None)
                    job.result.cancel()
        if worker.jobs:
            self._hung.append(worker)
        else:
            self._come_back(worker)

    def _come_back(self, worker: _Worker[M]) -> None:
        if worker is self._active or worker in self._spares:
            return
        if self.workers < self.max_workers:  # also without standby: the next swap reuses it
            self._spares.append(worker)  # kept, not freed: see the module docstring
        elif worker is not self._active:
            worker.executor.shutdown(wait=False)

    def close(self) -> None:
        for worker in (self._active, *self._spares, *self._hung):
            if worker is not None:
                worker.executor.shutdown(wait=False, cancel_futures=True)
