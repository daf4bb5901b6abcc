"""Fault injection for the lab: engines that stall or fail on purpose, seeded, off unless asked.

``halfsec serve --fault SPEC`` (repeatable) arms a ``FaultPlan``; without it nothing here
runs.  A spec is ``KIND[:DURATION][@PROBABILITY]``::

    stt.stall:5s     every final transcript hangs its decode worker for 5 s
    stt.error        every final transcript fails
    tts.stall:2s     every clause's synthesis is silent for 2 s before its audio
    tts.error@0.3    three clauses in ten fail to synthesize
    llm.stall        the reply (template or LLM) says nothing for 10 s
    llm.error        the reply fails before its first clause
    loop.stall:200ms the event loop is blocked for 200 ms at the start of each turn
    worker.kill      the process dies (SIGKILL to itself) as the reply's first clause
                     starts synthesizing: a crash in native code, mid-turn

Faults act inside the real engines' paths, not on doubles: an STT stall holds the Whisper
final lane's worker thread as a hung CTranslate2 decode would (so other sessions' finals
queue behind it, unless the runtime abandons it), a TTS fault wraps the real engine's
stream, an LLM fault wraps each reply attempt's clause stream, and a loop stall blocks
the process's one event loop (every session on it feels that one, by design), and a
worker kill ends the process the way a segfault in onnxruntime would: no handler runs, no
session is told.  With ``halfsec serve --workers N`` only that worker's sessions end and
the parent starts a replacement (``server/workers.py``); with one process, every session
ends.  The fallback engines (PocketSphinx, espeak-ng) are never faulted: they are what answers.

Which sessions: ``every`` = 1 arms all of them; 2 arms sessions 1, 3, 5, ... (in the
order they start), so a healthy session can run beside a faulted one in the same
process.  Whether a fault fires is drawn from ``random.Random`` seeded with the plan's
seed, the session's ordinal, the turn, the fault and how many times it was drawn in that
turn: the same run fires the same faults, whatever else runs concurrently.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from halfsec.errors import HalfsecError

T = TypeVar("T")

DEFAULT_DURATION_MS: dict[str, float] = {
    "stt.stall": 5000.0,
    "stt.error": 0.0,
    "tts.stall": 2000.0,
    "tts.error": 0.0,
    "llm.stall": 10000.0,
    "llm.error": 0.0,
    "loop.stall": 200.0,
    "worker.kill": 0.0,
}
"""Every fault kind and its duration when the spec names none."""

_INSTANT = frozenset(k for k in DEFAULT_DURATION_MS if not k.endswith(".stall"))
"""Kinds that have no duration."""

_SPEC = re.compile(
    r"^(?P<kind>[a-z]+\.[a-z]+)(?::(?P<dur>[0-9.]+)(?P<unit>ms|s)?)?(?:@(?P<p>[0-9.]+))?$"
)


class FaultSpecError(HalfsecError):
    """A ``--fault`` spec that cannot be read."""


class InjectedFault(HalfsecError):
    """The failure an ``*.error`` fault raises inside an engine's path."""


@dataclass(frozen=True, slots=True)
class FaultSpec:
    kind: str
    """One of ``DEFAULT_DURATION_MS``'s keys."""
    duration_ms: float
    probability: float = 1.0

    def __str__(self) -> str:
        dur = f":{self.duration_ms:g}ms" if self.kind.endswith(".stall") else ""
        prob = f"@{self.probability:g}" if self.probability < 1.0 else ""
        return f"{self.kind}{dur}{prob}"


def parse_fault(text: str) -> FaultSpec:
    """``stt.stall:5s``, ``tts.error@0.3``, ``loop.stall:200ms@0.5`` -> ``FaultSpec``."""
    m = _SPEC.match(text.strip())
    if m is None:
        raise FaultSpecError(
            f"fault {text!r} is not KIND[:DURATION][@PROBABILITY] "
            "(e.g. stt.stall:5s, tts.error@0.3, loop.stall:200ms)"
        )
    kind = m["kind"]
    if kind not in DEFAULT_DURATION_MS:
        raise FaultSpecError(
            f"fault kind {kind!r} is unknown; use one of {', '.join(DEFAULT_DURATION_MS)}"
        )
    duration = DEFAULT_DURATION_MS[kind]
    if m["dur"] is not None:
        try:
            value = float(m["dur"])
        except ValueError as e:
            raise FaultSpecError(f"fault {text!r}: duration {m['dur']!r} is not a number") from e
        duration = value if m["unit"] == "ms" else value * 1000.0
        if kind in _INSTANT:
            raise FaultSpecError(f"fault {text!r}: {kind} has no duration")
    probability = 1.0
    if m["p"] is not None:
        try:
            probability = float(m["p"])
        except ValueError as e:
            raise FaultSpecError(f"fault {text!r}: probability {m['p']!r} is not a number") from e
        if not 0.0 < probability <= 1.0:
            raise FaultSpecError(f"fault {text!r}: probability must be in (0, 1]")
    return FaultSpec(kind, duration, probability)


class TurnFaults:
    """One turn's draws and what fired.  Lives in a context variable while the turn's
    task runs, so engine wrappers shared by every session find their turn's faults."""

    def __init__(
        self,
        specs: Sequence[FaultSpec],
        key: str,
        on_fire: Callable[[FaultSpec], None] | None = None,
    ) -> None:
        self._specs = {s.kind: s for s in specs}
        self._key = key
        self._draws: dict[str, int] = {}
        self.on_fire = on_fire
        self.fired: list[str] = []
        """Kinds that fired, in order (a kind once per firing)."""

    @property
    def armed(self) -> bool:
        return bool(self._specs)

    def roll(self, kind: str) -> FaultSpec | None:
        """Does ``kind`` fire now?  Seeded (see the module docstring)."""
        spec = self._specs.get(kind)
        if spec is None:
            return None
        n = self._draws.get(kind, 0)
        self._draws[kind] = n + 1
        if random.Random(f"{self._key}/{kind}/{n}").random() >= spec.probability:
            return None
        self.fired.append(kind)
        if self.on_fire is not None:
            self.on_fire(spec)
        return spec

    # -- effects, each at the place its fault lives ----------------------------------------
    def stall_loop(self) -> None:
        """``loop.stall``: block the event loop (every session of the process waits)."""
        spec = self.roll("loop.stall")
        if spec is not None:
            time.sleep(spec.duration_ms / 1000.0)

    def stt_worker_fault(self, final: bool) -> Callable[[], None] | None:
        """``stt.stall``/``stt.error`` of a final: what the decode worker runs first."""
        if not final:
            return None
        stall = self.roll("stt.stall")
        error = self.roll("stt.error")
        if stall is None and error is None:
            return None

        def act() -> None:
            if stall is not None:
                time.sleep(stall.duration_ms / 1000.0)
            if error is not None:
                raise InjectedFault("injected fault stt.error: the final decode failed")

        return act

    def kill_worker(self) -> None:
        """``worker.kill``: the process dies now, abruptly (SIGKILL: nothing is flushed,
        no ``finally`` runs, as when native code crashes)."""
        if self.roll("worker.kill") is not None:
            os.kill(os.getpid(), signal.SIGKILL)

    async def before_stream(self, stage: str) -> None:
        """``tts.*``/``llm.*``: stall, then maybe fail, before a stream's first item
        (and ``worker.kill`` as a TTS stream starts)."""
        if stage == "tts":
            self.kill_worker()
        stall = self.roll(f"{stage}.stall")
        if stall is not None:
            await asyncio.sleep(stall.duration_ms / 1000.0)
        if self.roll(f"{stage}.error") is not None:
            raise InjectedFault(f"injected fault {stage}.error")

    async def stream(self, stage: str, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """``items`` behind ``stage``'s faults (closed when the consumer stops)."""
        try:
            await self.before_stream(stage)
            async for item in items:
                yield item
        finally:
            closer = getattr(items, "aclose", None)
            if closer is not None:
                await closer()


_TURN: ContextVar[TurnFaults | None] = ContextVar("halfsec_turn_faults", default=None)


def current_turn_faults() -> TurnFaults | None:
    """The faults of the turn whose task is running (None outside a turn or unarmed)."""
    return _TURN.get()


def enter_turn(faults: TurnFaults) -> None:
    """Make ``faults`` the running task's turn faults (a task has its own context, so
    this never leaks into another turn)."""
    _TURN.set(faults)


@dataclass
class SessionFaults:
    """A session's share of the plan: armed or not, and its ordinal for the seed."""

    specs: tuple[FaultSpec, ...]
    seed: int
    ordinal: int

    @property
    def armed(self) -> bool:
        return bool(self.specs)

    def turn(self, turn_id: int, on_fire: Callable[[FaultSpec], None] | None) -> TurnFaults:
        return TurnFaults(self.specs, f"{self.seed}/{self.ordinal}/{turn_id}", on_fire)


@dataclass
class FaultPlan:
    """What ``--fault`` asked for, shared by every session of a process."""

    specs: tuple[FaultSpec, ...]
    seed: int = 0
    every: int = 1
    """Arm one session in ``every`` (1: all)."""
    _ordinals: itertools.count[int] = field(
        default_factory=lambda: itertools.count(1), init=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.every < 1:
            raise FaultSpecError(f"--fault-every must be >= 1, got {self.every}")

    def session(self) -> SessionFaults:
        """The next session's faults (armed for sessions 1, 1 + every, ...)."""
        n = next(self._ordinals)
        armed = (n - 1) % self.every == 0
        return SessionFaults(self.specs if armed else (), self.seed, n)

    def describe(self) -> dict[str, Any]:
        return {"faults": [str(s) for s in self.specs], "seed": self.seed, "every": self.every}
