"""One synthesis worker thread that serves a reply's first audio before anything else.

A TTS engine is shared by every session of a process and runs on one thread (more would
only split the same cores).  With one caller, jobs arrive one clause at a time and order
does not matter.  With many, a FIFO queue puts caller B's first clause -- the one B is
waiting for in silence, on B's voice-to-voice clock -- behind the second and third
clauses of caller A's reply, which A will not hear for seconds (A is still listening to
the first).  ``RankedWorker`` runs the lowest rank first and FIFO within a rank; the
engines give rank 0 to the first sentence of a reply's first clause and rank 1 to the
rest (``tts.engine.clause_index``).  A render cannot be interrupted, so a first clause
waits for at most the one render in progress.

Later clauses cannot starve: first clauses arrive once per turn and take tens of
milliseconds, while a later clause is due only when the audio before it has played
(seconds).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import heapq
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["FIRST_AUDIO", "LATER", "RankedWorker"]

FIRST_AUDIO = 0
"""Rank of the job that yields a reply's first audio."""
LATER = 1
"""Rank of every other job."""


@dataclass(order=True)
class _Item:
    rank: int
    seq: int
    fn: Callable[..., Any] = field(compare=False)
    args: tuple[Any, ...] = field(compare=False)
    future: concurrent.futures.Future[Any] = field(compare=False)


class RankedWorker:
    """One thread; ``submit(rank, fn, *args)`` runs the lowest rank first."""

    def __init__(self, name: str) -> None:
        self._heap: list[_Item] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._closed = False
        self.ran: list[int] = []
        """Ranks in the order they ran, the last 64 (tests, diagnostics)."""
        # A daemon thread, shut down at exit: the engine may never be closed (tests,
        # one-shot tools), and a pool thread waiting for work must not hold the exit.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        atexit.register(self.shutdown)

    def submit(self, rank: int, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("the synthesis worker is shut down")
            heapq.heappush(self._heap, _Item(rank, next(self._seq), fn, args, future))
            self._cv.notify()
        return future

    async def run(self, rank: int, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the worker; cancelling the caller drops a job not yet started."""
        return await asyncio.wrap_future(self.submit(rank, fn, *args))

    @property
    def queued(self) -> int:
        with self._cv:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap and not self._closed:
                    self._cv.wait()
                if not self._heap:
                    return
                item = heapq.heappop(self._heap)
            if not item.future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            self.ran = [*self.ran[-63:], item.rank]
            try:
                result = item.fn(*item.args)
            except BaseException as e:  # handed to the waiter, like an executor does
                item.future.set_exception(e)
            else:
                item.future.set_result(result)

    def shutdown(self) -> None:
        """Drop the queued jobs (their futures are cancelled) and stop the thread once the
        job in progress ends."""
        with self._cv:
            self._closed = True
            dropped, self._heap = self._heap, []
            self._cv.notify_all()
        for item in dropped:
            item.future.cancel()
        atexit.unregister(self.shutdown)
