"""How ``halfsec serve`` runs: one process, or a parent and N worker processes on one port.

**One process** (``--workers 1``, the default): the server on one event loop, engines
loaded once.  SIGTERM drains it (``/ready`` says ``draining``, new sessions get ``busy``,
open ones run to their end for up to ``--drain-s``) and it exits 0; a second SIGTERM or
a SIGINT stops it at once.

**N workers** (``--workers N``): a crash in native code (onnxruntime, CTranslate2) kills
a whole process, and with one process that is every caller.  With N, the parent binds the
port and each worker -- a fresh interpreter (``spawn``) with its own engines -- accepts
on that same socket, so a crash ends only that worker's sessions.  The parent loads no
model and serves nothing: it replaces a worker that dies (any exit but a start-up error,
or a signal) -- at once when it had run 60 s, else after a backoff that starts at 0.5 s
and doubles with each young death up to 30 s (a worker that crashes at every start must
not spin) -- and forwards SIGTERM (drain) and SIGINT (stop) to the workers.  A worker
whose parent dies drains too (Linux ``PR_SET_PDEATHSIG``).

Why one shared socket and not ``SO_REUSEPORT`` (a socket per worker): the kernel hashes
each connection to a reuse-port socket by its addresses, whatever that worker's load,
and the connections waiting in a dead worker's accept queue are reset.  A shared socket
keeps its queue when a worker dies, and each connection goes to the worker that calls
``accept`` first -- an idle loop wins over a busy one, so load spreads by itself.  It
also works with ``--port 0``.  Each worker still refuses past its own measured capacity
(``readiness.py``): a caller it turns away is told ``Retry-After``.

**Thread plan.**  The engines' thread counts are sized for one process owning the
machine (final STT and Piper two threads each, used one after the other in a turn).  N
workers each get ``share = max(1, cores // N)``: final-STT threads and Piper intra-op
threads ``min(configured, share)``; partials stay one thread at the lowest priority
(shed under load, ``stt/lane_load.py``); VAD runs inline on each loop (one thread).  So
with every worker in its busiest moment (a final or a clause) at most about ``cores``
compute threads run at normal priority, and the load meter's capacity is that share
too (``load_meter.worker_cores``).  Admission counts the box, not the share: every
worker publishes its load in memory the parent shares (``load_meter.SharedLoad``), so
a caller refused by one worker is a caller the whole box has no room for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from aiohttp import web

from halfsec.config import HalfsecConfig
from halfsec.errors import HalfsecError
from halfsec.runtime.build import build_engines
from halfsec.runtime.engines import Engines
from halfsec.runtime.faults import FaultPlan, parse_fault
from halfsec.server import load_meter
from halfsec.server.app import start_server
from halfsec.server.options import ServerOptions

log = logging.getLogger("halfsec.workers")

EXIT_STARTUP = 2
"""A worker that cannot start (models, port, configuration): replacing it cannot help."""
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0
"""A worker that lived this long resets its slot's backoff."""
STOP_GRACE_S = 0.5
"""From closing the listener to aiohttp's cleanup: the connections accepted last are
answered (``stop_serving``)."""


def thread_plan(config: HalfsecConfig, workers: int, cores: int | None = None) -> HalfsecConfig:
    """``config`` with each worker's thread counts (module docstring)."""
    if workers <= 1:
        return config
    n = cores if cores is not None else len(os.sched_getaffinity(0))
    share = max(1, n // workers)
    stt = dataclasses.replace(config.stt, cpu_threads=min(config.stt.cpu_threads, share))
    tts = dataclasses.replace(config.tts, threads=min(config.tts.threads, share))
    return dataclasses.replace(config, stt=stt, tts=tts)


def run_process(
    engines: Engines,
    config: HalfsecConfig,
    options: ServerOptions,
    sock: socket.socket | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> int:
    """Serve until SIGINT, or SIGTERM and the drain; 0, or 2 when it cannot listen."""

    async def main() -> None:
        server, runner, port = await start_server(engines, config, options, sock)
        if on_listening is not None:
            on_listening(port)
        loop = asyncio.get_running_loop()
        stop, drain = asyncio.Event(), asyncio.Event()

        def on_term() -> None:
            (stop if drain.is_set() else drain).set()  # a second SIGTERM: stop now

        loop.add_signal_handler(signal.SIGTERM, on_term)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        try:
            await _first(stop.wait(), drain.wait())
            if drain.is_set() and not stop.is_set():
                done = await _first(server.drain(), stop.wait())
                log.info("drained%s", "" if done else "; closing the sessions still open")
        finally:
            await stop_serving(runner)

    try:
        asyncio.run(main())
    except OSError as e:
        log.error(
            "cannot listen on %s:%s (%s); pick another --port or stop the process using it",
            options.host,
            options.port,
            e,
        )
        return EXIT_STARTUP
    return 0


async def stop_serving(runner: web.AppRunner, grace_s: float = STOP_GRACE_S) -> None:
    """Stop accepting, give the connections accepted last ``grace_s`` to be answered, then
    run aiohttp's cleanup (the app's shutdown and cleanup hooks).

    Why not ``runner.cleanup()`` alone: it closes the listener, yields one loop turn and
    marks every connection closing, after which a request is ignored.  A connection
    accepted just before (its reading task is not started eagerly on Python 3.11) has
    not read its request by then: it was dropped unanswered -- or, a turn later, its
    reader waited for a request aiohttp had ignored and the exit waited out aiohttp's
    60 s shutdown timeout, so the parent killed the worker at ``--drain-s`` + 15 s and
    the probe on that connection hung until then.  A draining worker answers ``/ready``
    (503 ``draining``) until it exits: what a load balancer needs.  After ``grace_s``
    with the listener closed every connection is reading (and is closed promptly) or
    answered; the other workers go on accepting on the shared socket meanwhile."""
    for site in list(runner.sites):
        await site.stop()
    await asyncio.sleep(grace_s)
    await runner.cleanup()


async def _first(*aws: object) -> bool:
    """Wait for the first of ``aws`` (coroutines) and cancel the rest; the first one's
    result when it is a bool, else True."""
    tasks = [asyncio.ensure_future(a) for a in aws]  # type: ignore[call-overload]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
    result = next(iter(done)).result()
    return result if isinstance(result, bool) else True


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What every worker is started with (picklable: it crosses to a fresh interpreter)."""

    config: HalfsecConfig
    options: ServerOptions
    faults: tuple[str, ...] = ()
    fault_seed: int = 0
    fault_every: int = 1


def _die_with_parent() -> None:
    """Linux: SIGTERM (a drain) to this worker when the parent dies, so no worker outlives
    the supervisor that would have stopped it."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def worker_main(spec: WorkerSpec, sock: socket.socket, shared: Any = None, index: int = 0) -> None:
    """A worker process: its own engines (its thread plan), the server on ``sock``;
    ``shared``: the box's load array (``load_meter.SharedLoad``), ``index`` its entry."""
    _die_with_parent()
    if shared is not None:
        load_meter.SHARED = load_meter.SharedLoad(shared, index)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # until the server's loop handles it
    config = thread_plan(spec.config, spec.options.workers)
    try:
        plan = (
            FaultPlan(tuple(parse_fault(f) for f in spec.faults), spec.fault_seed, spec.fault_every)
            if spec.faults
            else None
        )
        engines = build_engines(config, faults=plan)
    except HalfsecError as e:
        log.error("worker %d cannot start: %s", os.getpid(), e)
        sys.exit(EXIT_STARTUP)

    def listening(port: int) -> None:
        log.info("worker %d ready on port %d", os.getpid(), port)

    sys.exit(run_process(engines, config, spec.options, sock, listening))


@dataclass
class _Slot:
    process: BaseProcess | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None


class Supervisor:
    """The parent of ``--workers N`` (module docstring)."""

    def __init__(
        self,
        spec: WorkerSpec,
        sock: socket.socket,
        workers: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.sock = sock
        self.slots = [_Slot() for _ in range(workers)]
        self._clock = clock
        self._ctx = multiprocessing.get_context("spawn")
        self.shared = self._ctx.RawArray("d", load_meter.SharedLoad.FIELDS * workers)
        """Every worker's load, read by its siblings' admission (``load_meter``)."""
        self._signal: int | None = None
        self.replaced = 0
        self.exit_code = 0

    def pids(self) -> list[int]:
        return [s.process.pid for s in self.slots if s.process is not None and s.process.pid]

    def _start(self, slot: _Slot) -> None:
        index = next(i for i, s in enumerate(self.slots) if s is slot)  # _Slot: eq by value
        args = (self.spec, self.sock, self.shared, index)
        p = self._ctx.Process(target=worker_main, args=args, name="halfsec-worker", daemon=False)
        p.start()
        slot.process, slot.started, slot.restart_at = p, self._clock(), None
        log.info("worker %s started", p.pid)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signal = signum
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def backoff_s(self, slot: _Slot) -> float:
        return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** max(0, slot.quick_deaths - 1))

    def _reap(self, slot: _Slot) -> None:
        p = slot.process
        assert p is not None
        code = p.exitcode
        slot.process = None
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        if self._signal is not None:
            log.info("worker %s ended (%s)", p.pid, how)
            return
        if code == EXIT_STARTUP:
            log.error("worker %s could not start (%s); stopping every worker", p.pid, how)
            self.exit_code = EXIT_STARTUP
            self._on_signal(signal.SIGINT, None)
            return
        lived = self._clock() - slot.started
        slot.quick_deaths = 0 if lived >= STABLE_S else slot.quick_deaths + 1
        delay = 0.0 if slot.quick_deaths == 0 else self.backoff_s(slot)
        slot.restart_at = self._clock() + delay
        log.warning(
            "worker %s died (%s) after %.1f s; its sessions ended, a replacement starts in %.1f s",
            p.pid,
            how,
            lived,
            delay,
        )

    def run(self) -> int:
        """Start the workers and keep them running until a signal; the exit code."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in self.slots:
                self._start(slot)
            while self._signal is None:
                sentinels = [s.process.sentinel for s in self.slots if s.process is not None]
                multiprocessing.connection.wait(sentinels, timeout=0.25)
                for slot in self.slots:
                    if slot.process is not None and not slot.process.is_alive():
                        self._reap(slot)
                now = self._clock()
                for slot in self.slots:
                    due = slot.restart_at
                    if self._signal is None and due is not None and now >= due:
                        self.replaced += 1
                        self._start(slot)
            self._wait_all()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return self.exit_code

    def _wait_all(self) -> None:
        """After a signal: wait for the workers (a drain takes up to ``--drain-s``), then
        kill what is left."""
        deadline = self._clock() + self.spec.options.drain_s + 15.0
        for slot in self.slots:
            p = slot.process
            if p is None:
                continue
            p.join(max(0.0, deadline - self._clock()))
            if p.is_alive():
                log.warning("worker %s did not stop in time; killing it", p.pid)
                p.kill()
                p.join(5.0)


def bind_shared(host: str, port: int) -> socket.socket:
    """The listening socket every worker accepts on (module docstring)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock
