"""Scheduled faults on a simulated path: a blackout, a loss burst.

Random loss and Gilbert-Elliott bursts say how a network behaves on average; a tunnel,
a handover or a Wi-Fi roam is one event at one moment, and what matters is what the user
hears right after it.  So the lab can schedule one, in the ``--net`` spec:

* ``blackout=AT+DUR`` -- every packet dropped from ``AT`` to ``AT + DUR``
  (``blackout=3s+800ms``);
* ``burst=AT+DUR@LOSS`` -- each packet dropped with probability ``LOSS`` in that window
  (``burst=2s+500ms@50%``; without ``@`` it is 50 %).

``AT`` counts from the first packet the path's model sees in that direction (for the
bench: the start of each recording's connection), so every recording meets the fault
at the same point of its speech.  Datagrams in the window are dropped (``dropped_by``:
``blackout``/``burst``).  A TCP stream never loses bytes: a chunk sent into a blackout
is retransmitted with the RTO doubling (RTO, 2 RTO, 4 RTO, ... after it was sent) and
arrives with the first retransmission after the window ends; a chunk that loses a roll
in a burst costs one RTO, like random loss.  The rolls use a stream of their own, so
adding a fault never changes the other decisions of a seeded run.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

__all__ = ["Outage", "OutageModel", "parse_outage"]

_NS_PER_MS = 1_000_000
_MAX_BACKOFFS = 16
_WINDOW = re.compile(r"^([0-9]*\.?[0-9]+)(us|ms|s)?\+([0-9]*\.?[0-9]+)(us|ms|s)?(?:@(.+))?$")
_SCALE = {"us": 1e-3, "ms": 1.0, "s": 1e3, None: 1.0}


@dataclass(frozen=True)
class Outage:
    """One scheduled fault of one direction: ``kind`` is ``blackout`` or ``burst``."""

    kind: str
    at_ms: float
    dur_ms: float
    loss: float = 1.0

    def to_string(self) -> str:
        text = f"{_num(self.at_ms)}ms+{_num(self.dur_ms)}ms"
        return f"{text}@{_num(self.loss * 100)}%" if self.kind == "burst" else text

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "at_ms": self.at_ms, "dur_ms": self.dur_ms, "loss": self.loss}


def _num(x: float) -> str:
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def parse_outage(kind: str, value: str) -> Outage:
    """``3s+800ms`` (blackout) or ``2s+500ms@30%`` (burst); ``ValueError`` that says
    what was expected."""
    m = _WINDOW.match(value.replace(" ", ""))
    if not m or (kind == "blackout" and m.group(5) is not None):
        example = "blackout=3s+800ms" if kind == "blackout" else "burst=2s+500ms@50%"
        raise ValueError(f"{kind}={value!r}: expected AT+DURATION like {example}")
    at = float(m.group(1)) * _SCALE[m.group(2)]
    dur = float(m.group(3)) * _SCALE[m.group(4)]
    if dur <= 0:
        raise ValueError(f"{kind}={value!r}: the duration must be above 0")
    loss = 1.0
    if kind == "burst":
        loss = 0.5
        if m.group(5) is not None:
            text = m.group(5)
            try:
                loss = float(text[:-1]) / 100 if text.endswith("%") else float(text)
            except ValueError:
                raise ValueError(f"{kind}={value!r}: @{text} is not a probability") from None
            if not 0.0 < loss <= 1.0:
                raise ValueError(f"{kind}={value!r}: the loss must be above 0% and at most 100%")
    return Outage(kind, at, dur, loss)


class OutageModel:
    """The scheduled faults of one direction, on the clock of its first packet."""

    def __init__(self, outages: tuple[Outage, ...], rng: random.Random) -> None:
        self.outages = outages
        self._rng = rng
        self._t0: int | None = None

    def _active(self, now_ns: int) -> Outage | None:
        if self._t0 is None:
            self._t0 = now_ns
        t_ms = (now_ns - self._t0) / _NS_PER_MS
        for o in self.outages:
            if o.at_ms <= t_ms < o.at_ms + o.dur_ms:
                return o
        return None

    def drop(self, now_ns: int) -> str | None:
        """Datagrams: ``"blackout"``/``"burst"`` if this one is lost to a fault, else
        None.  One roll per packet, always (see the module docstring)."""
        u = self._rng.random() if self.outages else 1.0
        o = self._active(now_ns) if self.outages else None
        return o.kind if o is not None and u < o.loss else None

    def tcp_release_ns(self, now_ns: int, rto_ms: float) -> int | None:
        """A TCP chunk sent at ``now_ns``: when its retransmission first gets through
        (None: the fault does not touch it)."""
        u = self._rng.random() if self.outages else 1.0
        o = self._active(now_ns) if self.outages else None
        if o is None or u >= o.loss:
            return None
        rto = int(rto_ms * _NS_PER_MS)
        if o.kind == "burst":
            return now_ns + rto
        assert self._t0 is not None
        end = self._t0 + int((o.at_ms + o.dur_ms) * _NS_PER_MS)
        t, step = now_ns + rto, rto
        for _ in range(_MAX_BACKOFFS):
            if t >= end:
                return t
            step *= 2
            t += step
        return t
