"""What every decode lane of a process reports, and the rule that sheds partial decodes.

Lanes are shared by every session of a process (``decode_lanes``), so their load is a
process-wide fact: ``LANE_LOAD`` is the one instance the lanes report to and the server's
load meter reads (``server/load_meter.py``).

**Priorities.**  Finals and partials already run on lanes of their own (a final never
queues behind a partial, and partial threads run at the lowest CPU priority).  What is
left to decide is when a partial is not worth running at all.  A partial is a preview:
nothing waits for it but its own session's ``transcript.partial`` event (and, when it
covers exactly the audio of the final, it saves that decode).  Under load it costs CPU
the finals and TTS of other callers need, and a partial that queued would come back
stale anyway.  So a partial is *shed* -- refused at submission, never started -- when

1. its own lane is busy (``max_waiting`` partials already started or queued: a partial
   never queues behind another session's partial, so a final that waits for the partial
   of its own audio waits only for that one, already running, decode);
2. a critical lane (finals) has a job waiting for its worker: the CPU belongs to it;
3. more turns are active in this process than ``shed_above_turns`` (set by the server
   from its turn capacity), where every core is already spoken for.

A shed decode raises ``DecodeShed``, a ``CancelledError``: a shed partial must end like a
cancelled one -- silently, no ``stt_partial_failed`` to the client, nothing promoted --
and because it is refused before it exists, no final can ever be waiting on it.

**Queue wait.**  Each critical job's wait (submitted -> started on a worker) is kept for
``keep_s``; it is one of the load meter's signals, measured where the SLO is lost.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Protocol

__all__ = ["LANE_LOAD", "DecodeShed", "LaneLoad"]


class DecodeShed(asyncio.CancelledError):
    """A partial decode refused because the process is busy (see the module docstring)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Lane(Protocol):
    """What the load asks of a lane (``decode_lanes.ReplaceableLane``)."""

    sheddable: bool

    def waiting_jobs(self) -> int:
        """Jobs submitted and not yet started on a worker."""
        ...


class LaneLoad:
    """Queue waits of critical lanes, and the shedding rule of sheddable ones."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, keep_s: float = 30.0, cap: int = 4096
    ) -> None:
        self._clock = clock
        self.keep_s = keep_s
        self._waits: deque[tuple[float, float]] = deque(maxlen=cap)
        self._lock = threading.Lock()
        self._lanes: weakref.WeakSet[Lane] = weakref.WeakSet()
        self.active_turns: Callable[[], int] = lambda: 0
        """Turns in progress in this process (set by the server's load meter)."""
        self.shed_above_turns: int | None = None
        """Rule 3's threshold; None: never shed for the turn count."""
        self.shed: dict[str, int] = {}
        """Partials shed so far, by reason (``lane_busy``, ``finals_waiting``, ``turns``)."""

    def register(self, lane: Lane) -> None:
        """``lane`` reports here (weakly held: a closed engine's lanes drop out)."""
        self._lanes.add(lane)

    def critical_waiting(self) -> int:
        """Critical jobs queued and not started, over every lane of the process."""
        return sum(lane.waiting_jobs() for lane in list(self._lanes) if not lane.sheddable)

    def record_wait(self, wait_s: float, at: float | None = None) -> None:
        """A critical job started ``wait_s`` after it was submitted."""
        t = self._clock() if at is None else at
        with self._lock:
            self._waits.append((t, max(0.0, wait_s)))

    def waits_since(self, since: float) -> list[float]:
        """Queue waits (s) of critical jobs started at or after ``since``."""
        with self._lock:
            return [w for t, w in self._waits if t >= since]

    def shed_reason(self, lane_busy: bool) -> str | None:
        """Why a sheddable job should be refused now, or None to run it."""
        if lane_busy:
            return "lane_busy"
        if self.critical_waiting() > 0:
            return "finals_waiting"
        limit = self.shed_above_turns
        if limit is not None and self.active_turns() > limit:
            return "turns"
        return None

    def count_shed(self, reason: str) -> None:
        self.shed[reason] = self.shed.get(reason, 0) + 1

    @property
    def shed_total(self) -> int:
        return sum(self.shed.values())


LANE_LOAD = LaneLoad()
"""The process's lane load: every ``ReplaceableLane`` reports here by default."""
