"""How loaded this server process is, measured, as one number: its saturation.

Admission by a session count is wrong both ways: silent callers cost almost nothing,
while a few callers talking at once can fill two cores.  What decides whether an
admitted caller keeps the SLO (v2v p95 <= 500 ms) is how much work is in flight and
whether it is already waiting.  Four signals, each over the last ``window_s`` and each
divided by the value at which it starts to cost the SLO, so that 1.0 means "full":

* **active turns** (time-averaged): turns whose user is speaking or whose reply is being
  computed (``metrics.ServerMetrics.active_turns``), over ``turn_capacity``, the turns
  this worker carries at its SLO (``--capacity``; by default ``TURNS_PER_CORE`` per core
  of this worker's share).  The leading signal: it rises before anything waits.
* **event-loop lag** (p95): how late a 100 ms timer fires on this process's one loop,
  over ``lag_budget_ms`` (200 ms: the SLO's headroom over one caller's p95).  Every session's audio, VAD and sends run on that loop.
* **decode queue wait** (p95): how long a final transcript waited for a decode worker
  (``stt.lane_load``), over ``wait_budget_ms`` -- the final is on every turn's
  critical path, so its wait is the SLO being spent.

* **committed calls**: open sessions times the share of its time a session of this
  server spends in an active turn (its *duty*: time-averaged active turns over
  time-averaged open sessions, over ``duty_horizon_s``), over ``turn_capacity``.  The three signals above see only the load that is here now;
  a caller admitted while others think (1-2 s between turns) brings their turns back a
  moment later.  Measured 2026-12-01 (``benchmarks/admission_bench.py``, one worker):
  12 staggered callers were all admitted and v2v p95 went to 1646 ms with 0 refusals.
  The duty is measured over a minute, not the 5 s window, and is ``DEFAULT_DUTY``
  until that minute holds ``duty_mature_s`` session-seconds: a young window is wrong
  both ways.  Measured 2026-12-01 (the admission log, ``readiness.py``): while 16
  callers came in 0.7 s apart on a fresh server the 5 s duty read 0.00 at the 3rd and
  4th caller (connected, not yet speaking: ``calls`` counted them as free) and 0.57 at
  the 8th (everyone's first turn at once); over a minute of a ramp it settles at
  0.31-0.38.

**Workers share one box.**  With ``--workers N`` each worker used to compare its own
turns and calls with its share of the cores; but the shared listening socket hands
callers to workers by chance (the admission log, 2026-12-01: 9 admitted callers split
6/3 in one step, 4/5 in the next), so one worker could refuse a caller while the other
had room (the likely way 1 of 8 callers was refused in a quiet run), and a process is
not limited to its share when its sibling is idle.  So ``turns`` and
``calls`` are counted for the box: each worker publishes its averaged turns and its
committed calls in memory the parent shares with every worker (``SharedLoad``), and
divides the sum by the box's capacity (every worker's ``turn_capacity``).  ``lag`` and
``wait`` stay the worker's own: they measure the SLO being spent where it is spent.

``saturation = max(turns, lag, wait, calls)``: any one of them full is full.  The server admits
a new session while saturation < 1.0; once refused, it admits again only below
``resume_below`` (0.85), so a readiness probe (Envoy) does not flap at the edge.  A new
caller adds load gradually (it talks about half the time), so the leading signal and
the window leave the headroom that keeps admitted sessions inside their SLO.

Deterministic to test: the clock, the active-turn count and the lane waits are
injected; ``tick(lag_ms)`` is what the probe task calls every ``interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from halfsec.measure.percentile import percentile

__all__ = [
    "DEFAULT_DUTY",
    "TURNS_PER_CORE",
    "LoadLimits",
    "LoadMeter",
    "LoadSnapshot",
    "SharedLoad",
    "worker_cores",
]

DEFAULT_DUTY = 0.5
"""A session's share of time in an active turn until a minute of calls has measured it:
a caller talks about half the time (speaking and waiting for the reply, then listening
and thinking).  Cautious: the load lab's callers measure 0.31-0.38."""

TURNS_PER_CORE = 1.8
"""Committed turns one core carries at the SLO (the default capacity's rate; with
``--workers N`` the box's capacity is this times every core).  A turn costs a final
decode (~90 ms on two threads of this box), a first clause (~50 ms), VAD and a partial
or two, and the cost comes in bursts: the two cores run at 35-40 % on average while the
p95 breaks.  The one calibrated figure of admission, from
``benchmarks/admission_bench.py`` on the 2-core AVX-512 EPYC (2026-12-01) once the duty
was measured right: 12 callers at 4.1 committed turns kept v2v p95 at 377 ms, 15 at 4.7
broke it (742 ms); earlier, 10 callers held and 11 broke with one worker.  3.6 turns is
~11 callers at the measured duty and 8 before it is measured (``DEFAULT_DUTY``).
Measure yours with the load bench and pass ``--capacity``."""


def worker_cores(workers: int = 1) -> float:
    """This worker's share of the cores it may run on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1.0, cores / max(1, workers))


@dataclass(frozen=True, slots=True)
class LoadLimits:
    """The values at which each signal counts as full (see the module docstring)."""

    turn_capacity: float
    lag_budget_ms: float = 200.0
    """Every ms the loop is late is a ms on some caller's voice to voice: one caller's
    p95 is ~280 ms on this box, so 200 ms more spends the SLO's headroom.  (100 ms was
    tried: on the shared box other processes' bursts alone reached it.)"""
    wait_budget_ms: float = 200.0
    """The same headroom for a final waiting for a decode worker (the final lane already
    moves a final that waited 150 ms to a spare, ``BUSY_FACTOR``: a wait past that means
    no spare was free)."""
    window_s: float = 5.0
    interval_s: float = 0.1
    resume_below: float = 0.85
    duty_horizon_s: float = 60.0
    """Over how long a session's duty is measured: several turn cycles of every caller
    (a cycle -- speak, wait, listen, think -- is 5-8 s), so a burst of arrivals barely
    moves it."""
    duty_mature_s: float = 60.0
    """Session-seconds the horizon must hold before the measured duty is believed
    (about ten turn cycles of one caller)."""

    @staticmethod
    def default(capacity: float | None, workers: int = 1) -> LoadLimits:
        turns = capacity if capacity is not None else TURNS_PER_CORE * worker_cores(workers)
        return LoadLimits(turn_capacity=max(0.1, turns))


class SharedLoad:
    """Every worker's load in one array of shared memory (module docstring): per worker
    ``(published at, averaged turns, committed calls)``, written by that worker's meter
    every tick and read by its siblings.  A torn read of a float mid-write is harmless
    (the next tick rewrites it); an entry older than ``stale_s`` -- a dead worker's --
    counts as nothing."""

    FIELDS = 3

    def __init__(self, array: Any, index: int, stale_s: float = 1.0) -> None:
        self.array = array
        """A ``multiprocessing`` RawArray of doubles, ``FIELDS`` per worker."""
        self.index = index
        self.stale_s = stale_s

    @property
    def workers(self) -> int:
        return len(self.array) // self.FIELDS

    def publish(self, t: float, turns: float, calls: float) -> None:
        i = self.index * self.FIELDS
        self.array[i + 1], self.array[i + 2] = turns, calls
        self.array[i] = t

    def others(self, now: float) -> tuple[float, float]:
        """The other workers' (turns, calls), from their fresh entries."""
        turns = calls = 0.0
        for w in range(self.workers):
            i = w * self.FIELDS
            if w != self.index and now - self.array[i] <= self.stale_s:
                turns += self.array[i + 1]
                calls += self.array[i + 2]
        return turns, calls


SHARED: SharedLoad | None = None
"""Set by a ``--workers N`` worker before its server starts (``workers.worker_main``);
a meter built without ``shared`` uses it.  None: this process is the whole server."""


@dataclass(frozen=True, slots=True)
class LoadSnapshot:
    saturation: float
    active_turns: int
    turns: float
    """Time-averaged active turns over the window."""
    lag_p95_ms: float
    wait_p95_ms: float
    terms: dict[str, float]
    """Each signal over its limit: ``turns``, ``lag``, ``wait``, ``calls``."""
    sessions: int = 0
    duty: float = DEFAULT_DUTY


class LoadMeter:
    """Samples the signals every ``interval_s`` and keeps the last ``window_s`` of them."""

    def __init__(
        self,
        limits: LoadLimits,
        active_turns: Callable[[], int],
        lane_waits: Callable[[float], Sequence[float]],
        clock: Callable[[], float] = time.monotonic,
        open_sessions: Callable[[], int] | None = None,
        shared: SharedLoad | None = None,
    ) -> None:
        self.limits = limits
        self.shared = shared if shared is not None else SHARED
        self._active_turns = active_turns
        self._open_sessions = open_sessions or (lambda: 0)
        self._lane_waits = lane_waits
        self._clock = clock
        self._samples: deque[tuple[float, float, int, int]] = deque()
        """(time, loop lag ms, active turns, open sessions) per tick."""
        self._saturated = False
        self.forced: float | None = None
        """A saturation that overrides the measurement (tests, and an operator's lever)."""
        self._task: asyncio.Task[None] | None = None

    def tick(self, lag_ms: float) -> None:
        """One probe: the loop was ``lag_ms`` late; count the active turns now."""
        t = self._clock()
        self._samples.append((t, max(0.0, lag_ms), self._active_turns(), self._open_sessions()))
        horizon = t - max(self.limits.window_s, self.limits.duty_horizon_s)
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        if self.shared is not None:
            turns, _, sessions, duty = self._own(t)
            self.shared.publish(t, turns, sessions * duty)

    def _own(self, now: float) -> tuple[float, list[tuple[float, float, int, int]], int, float]:
        """This process's averaged turns, its window's samples, open sessions, duty."""
        lim = self.limits
        since = now - lim.window_s
        samples = [s for s in self._samples if s[0] >= since]
        turns = (
            sum(s[2] for s in samples) / len(samples) if samples else float(self._active_turns())
        )
        history = [s for s in self._samples if s[0] >= now - lim.duty_horizon_s]
        return turns, samples, self._open_sessions(), self.duty(history, lim)

    def snapshot(self) -> LoadSnapshot:
        """The signals over the window, and the saturation they add up to."""
        lim = self.limits
        now = self._clock()
        turns, samples, sessions, duty = self._own(now)
        box_turns, box_calls, capacity = turns, sessions * duty, lim.turn_capacity
        if self.shared is not None:  # the box's load over the box's capacity
            other_turns, other_calls = self.shared.others(now)
            box_turns, box_calls = box_turns + other_turns, box_calls + other_calls
            capacity *= self.shared.workers
        lag = percentile([s[1] for s in samples], 95) or 0.0
        since = now - lim.window_s
        wait_ms = percentile([w * 1e3 for w in self._lane_waits(since)], 95) or 0.0
        terms = {
            "turns": box_turns / capacity,
            "lag": lag / lim.lag_budget_ms,
            "wait": wait_ms / lim.wait_budget_ms,
            "calls": box_calls / capacity,
        }
        saturation = max(terms.values()) if self.forced is None else self.forced
        current = self._active_turns()
        return LoadSnapshot(saturation, current, turns, lag, wait_ms, terms, sessions, duty)

    @staticmethod
    def duty(samples: Sequence[tuple[float, float, int, int]], limits: LoadLimits) -> float:
        """Measured share of a session's time in an active turn over ``samples``;
        ``DEFAULT_DUTY`` until they hold ``limits.duty_mature_s`` session-seconds
        (module docstring: a young window is wrong both ways)."""
        busy = [s for s in samples if s[3] > 0]
        session_s = sum(s[3] for s in busy)
        if session_s * limits.interval_s < limits.duty_mature_s:
            return DEFAULT_DUTY
        return min(1.0, sum(s[2] for s in busy) / session_s)

    def admits(self, saturation: float) -> bool:
        """Whether a new session may come in at ``saturation`` (with hysteresis)."""
        if self._saturated:
            self._saturated = saturation >= self.limits.resume_below
        else:
            self._saturated = saturation >= 1.0
        return not self._saturated

    # -- the probe on the event loop ----------------------------------------------------
    def start(self) -> None:
        """Run the lag probe on the running loop (``stop`` ends it)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._probe(), name="load-probe")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _probe(self) -> None:
        interval = self.limits.interval_s
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + interval
            await asyncio.sleep(interval)
            self.tick((loop.time() - due) * 1e3)
