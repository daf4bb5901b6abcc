"""Network impairment specs: named profiles and a custom ``key=value`` string.

The lab has to answer "what does the user hear over 4G?", and the answer is only
honest if the network it simulates is written down and repeatable.  A :class:`NetSpec`
is that record: every number that shapes a packet's fate in ONE direction, plus the
seed that makes the per-packet decisions reproducible.  Relays apply one spec per
direction (``up`` = client to server, ``down`` = server to client); the named profiles
use the same spec for both, so a profile's RTT is twice its one-way delay.

Spec string grammar (comma separated, any order, each key at most once)::

    delay=40ms,jitter=10ms,loss=2%,ge=0.05/0.3/0.5,reorder=1%,dup=0.5%,rate=1mbit,
    queue=500ms,rto=200ms,seed=7

* ``delay``   one-way propagation delay (``ms``, ``us`` or ``s``; bare numbers are ms)
* ``jitter``  standard deviation of the per-packet extra delay (normal, clamped so the
  total is never negative; a FIFO queue keeps packets in order, see ``impair.py``)
* ``loss``    independent random loss (``%`` or a fraction ``0.02``)
* ``ge``      Gilbert-Elliott bursty loss ``p/r/h[/k]``: ``p`` = P(good->bad) per packet,
  ``r`` = P(bad->good), ``h`` = loss probability in the bad state, ``k`` = loss
  probability in the good state (default 0)
* ``reorder`` fraction of packets that skip the delay line and leave at once (netem's
  semantics), overtaking packets already in flight
* ``dup``     fraction of packets sent twice
* ``rate``    bottleneck bandwidth (``kbit``, ``mbit``, ``gbit``, ``bit``; ``0`` = none)
* ``queue``   most backlog the bottleneck holds before tail-dropping (default 500 ms)
* ``rto``     extra delay a lost TCP segment costs in the TCP relay (default: derived)
* ``seed``    integer; the same seed gives the same per-packet decisions
* ``blackout`` ``AT+DUR``: every packet dropped in that window (``outage.py``)
* ``burst``   ``AT+DUR@LOSS``: a scheduled loss burst (``outage.py``)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from halfsec.lab.netem.outage import Outage, parse_outage

__all__ = [
    "PROFILES",
    "GilbertElliott",
    "NetSpec",
    "NetSpecError",
    "parse_net",
    "parse_spec",
]


class NetSpecError(ValueError):
    """A spec string or profile name the lab cannot apply; the message says which part."""


@dataclass(frozen=True)
class GilbertElliott:
    """Two-state Markov loss: long quiet stretches, then bursts.

    Real radio links lose packets in runs (fades, handovers), and a jitter buffer or
    PLC that copes with 2 % random loss can still fall apart under 2 % bursty loss, so
    the lab needs both models.  ``p`` and ``r`` are per-packet transition
    probabilities; the mean time spent in the bad state is ``1/r`` packets."""

    p: float
    r: float
    h: float
    k: float = 0.0

    def stationary_bad(self) -> float:
        """Long-run fraction of packets that see the bad state."""
        return self.p / (self.p + self.r) if self.p + self.r > 0 else 0.0

    def expected_loss(self) -> float:
        """Long-run loss fraction of the GE model alone."""
        bad = self.stationary_bad()
        return bad * self.h + (1.0 - bad) * self.k

    def to_string(self) -> str:
        tail = f"/{_num(self.k)}" if self.k else ""
        return f"{_num(self.p)}/{_num(self.r)}/{_num(self.h)}{tail}"


@dataclass(frozen=True)
class NetSpec:
    """What one direction of the simulated network does to each packet.

    Times are milliseconds and probabilities fractions (0..1) so the numbers in the
    docs, the spec string and this object are the same numbers."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    ge: GilbertElliott | None = None
    reorder: float = 0.0
    dup: float = 0.0
    rate_bps: float = 0.0
    queue_ms: float = 500.0
    rto_ms: float | None = None
    seed: int = 0
    name: str = field(default="custom", compare=False)
    outages: tuple[Outage, ...] = ()
    """Scheduled faults: a blackout, a loss burst (``outage.py``)."""

    def expected_loss(self) -> float:
        """Long-run loss fraction from random and GE loss together (no queue drops)."""
        ge = self.ge.expected_loss() if self.ge else 0.0
        return 1.0 - (1.0 - self.loss) * (1.0 - ge)

    def tcp_rto_ms(self) -> float:
        """Extra delay one lost TCP segment costs: Linux's RTO floor is 200 ms, and the
        RTO is roughly SRTT + 4 * RTTVAR, so take whichever is larger."""
        if self.rto_ms is not None:
            return self.rto_ms
        return max(200.0, 2.0 * self.delay_ms + 4.0 * self.jitter_ms)

    def with_seed(self, seed: int) -> NetSpec:
        return replace(self, seed=seed)

    def to_string(self) -> str:
        """The spec string that parses back to this spec (round trip)."""
        parts = [f"delay={_num(self.delay_ms)}ms", f"jitter={_num(self.jitter_ms)}ms"]
        parts.append(f"loss={_num(self.loss * 100)}%")
        if self.ge:
            parts.append(f"ge={self.ge.to_string()}")
        parts.append(f"reorder={_num(self.reorder * 100)}%")
        parts.append(f"dup={_num(self.dup * 100)}%")
        parts.append(f"rate={_rate_text(self.rate_bps)}")
        parts.append(f"queue={_num(self.queue_ms)}ms")
        if self.rto_ms is not None:
            parts.append(f"rto={_num(self.rto_ms)}ms")
        parts.append(f"seed={self.seed}")
        parts += [f"{o.kind}={o.to_string()}" for o in self.outages]
        return ",".join(parts)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready numbers for reports (the bench stores this in ``meta``)."""
        return {
            "name": self.name,
            "spec": self.to_string(),
            "delay_ms": self.delay_ms,
            "jitter_ms": self.jitter_ms,
            "loss": self.loss,
            "ge": None
            if self.ge is None
            else {"p": self.ge.p, "r": self.ge.r, "h": self.ge.h, "k": self.ge.k},
            "expected_loss": self.expected_loss(),
            "reorder": self.reorder,
            "dup": self.dup,
            "rate_bps": self.rate_bps,
            "queue_ms": self.queue_ms,
            "tcp_rto_ms": self.tcp_rto_ms(),
            "seed": self.seed,
            "outages": [o.as_dict() for o in self.outages],
        }


def _rate_text(bps: float) -> str:
    for unit, mult in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bps >= mult and bps % mult == 0:
            return f"{_num(bps / mult)}{unit}"
    return f"{_num(bps)}bit"


def _num(x: float) -> str:
    """Plain decimal (no exponent), so the spec string always parses back."""
    text = f"{x:.9f}".rstrip("0").rstrip(".")
    return text or "0"


# Named profiles.  Numbers are per direction; docs/network-lab.md explains each choice.
PROFILES: dict[str, NetSpec] = {
    "lan": NetSpec(delay_ms=0.5, jitter_ms=0.1, rate_bps=1e9, name="lan"),
    "wifi": NetSpec(
        delay_ms=4.0,
        jitter_ms=4.0,
        loss=0.002,
        ge=GilbertElliott(p=0.005, r=0.4, h=0.5),
        rate_bps=50e6,
        name="wifi",
    ),
    "4g": NetSpec(delay_ms=30.0, jitter_ms=15.0, loss=0.01, rate_bps=10e6, name="4g"),
    "3g": NetSpec(
        delay_ms=100.0,
        jitter_ms=30.0,
        loss=0.01,
        ge=GilbertElliott(p=0.01, r=0.3, h=0.6),
        reorder=0.005,
        rate_bps=1e6,
        name="3g",
    ),
    "lossy": NetSpec(
        delay_ms=20.0,
        jitter_ms=10.0,
        loss=0.05,
        ge=GilbertElliott(p=0.02, r=0.25, h=0.8),
        reorder=0.01,
        dup=0.01,
        name="lossy",
    ),
    "satellite": NetSpec(
        delay_ms=300.0, jitter_ms=10.0, loss=0.005, rate_bps=5e6, queue_ms=1000.0, name="satellite"
    ),
}

_KEYS = (
    *("delay", "jitter", "loss", "ge", "reorder", "dup", "rate", "queue", "rto", "seed"),
    *("blackout", "burst"),
)
_TIME = re.compile(r"^([0-9]*\.?[0-9]+)\s*(us|ms|s)?$")
_RATE = re.compile(r"^([0-9]*\.?[0-9]+)\s*(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)?$")
_RATE_MULT = {
    None: 1e3,  # bare numbers are kbit/s: "rate=800" reads as 800 kbit/s
    "bit": 1.0,
    "bps": 1.0,
    "kbit": 1e3,
    "kbps": 1e3,
    "mbit": 1e6,
    "mbps": 1e6,
    "gbit": 1e9,
    "gbps": 1e9,
}


def _time_ms(key: str, value: str) -> float:
    m = _TIME.match(value)
    if not m:
        raise NetSpecError(f"{key}={value!r}: expected a time like 40ms, 500us or 0.3s")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3, None: 1.0}[m.group(2)]
    return float(m.group(1)) * scale


def _prob(key: str, value: str) -> float:
    text = value.strip()
    try:
        x = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise NetSpecError(
            f"{key}={value!r}: expected a percentage like 2% or a fraction like 0.02"
        ) from None
    if not 0.0 <= x <= 1.0:
        raise NetSpecError(f"{key}={value!r}: must be between 0% and 100%")
    return x


def _rate_bps(value: str) -> float:
    m = _RATE.match(value.lower())
    if not m:
        raise NetSpecError(
            f"rate={value!r}: expected a bandwidth like 1mbit, 800kbit or 0 (no cap)"
        )
    return float(m.group(1)) * _RATE_MULT[m.group(2)]


def _ge(value: str) -> GilbertElliott:
    parts = value.split("/")
    if len(parts) not in (3, 4):
        raise NetSpecError(f"ge={value!r}: expected p/r/h or p/r/h/k, e.g. ge=0.05/0.3/0.5")
    names = ("p", "r", "h", "k")
    nums = [_prob(f"ge.{n}", p) for n, p in zip(names, parts, strict=False)]
    if nums[1] == 0.0 and nums[0] > 0.0:
        raise NetSpecError(f"ge={value!r}: r=0 means the bad state never ends")
    return GilbertElliott(*nums)


def parse_spec(text: str, *, base: NetSpec | None = None) -> NetSpec:
    """Parse ``key=value,...`` onto ``base`` (default: a perfect network).

    Every mistake raises :class:`NetSpecError` naming the offending part, because a
    silently ignored typo ("los=5%") would make a run look clean when it was not."""
    spec = base if base is not None else NetSpec()
    seen: set[str] = set()
    changes: dict[str, object] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise NetSpecError(f"{item!r}: expected key=value (keys: {', '.join(_KEYS)})")
        if key not in _KEYS:
            raise NetSpecError(f"unknown key {key!r} in {item!r} (keys: {', '.join(_KEYS)})")
        if key in seen:
            raise NetSpecError(f"{key!r} given twice")
        seen.add(key)
        if key == "delay":
            changes["delay_ms"] = _time_ms(key, value)
        elif key == "jitter":
            changes["jitter_ms"] = _time_ms(key, value)
        elif key == "loss":
            changes["loss"] = _prob(key, value)
        elif key == "ge":
            changes["ge"] = _ge(value)
        elif key == "reorder":
            changes["reorder"] = _prob(key, value)
        elif key == "dup":
            changes["dup"] = _prob(key, value)
        elif key == "rate":
            changes["rate_bps"] = _rate_bps(value)
        elif key == "queue":
            changes["queue_ms"] = _time_ms(key, value)
        elif key == "rto":
            changes["rto_ms"] = _time_ms(key, value)
        elif key in ("blackout", "burst"):
            try:
                outage = parse_outage(key, value)
            except ValueError as e:
                raise NetSpecError(str(e)) from None
            before: tuple[Outage, ...] = changes.get("outages", spec.outages)  # type: ignore[assignment]
            kept = tuple(o for o in before if o.kind != key)
            changes["outages"] = (*kept, outage)
        elif key == "seed":
            try:
                changes["seed"] = int(value)
            except ValueError:
                raise NetSpecError(f"seed={value!r}: expected an integer") from None
    if not seen and text.strip():
        raise NetSpecError(f"{text!r}: empty spec")
    if not changes:
        return spec
    # A profile with overrides is no longer that profile: mark it so reports do not lie.
    name = "custom" if base is None else f"{spec.name}*"
    return replace(spec, name=name, **changes)  # type: ignore[arg-type]


def parse_net(text: str) -> NetSpec:
    """Resolve what a user typed after ``--net``.

    Accepts a profile name (``4g``), a custom spec (``delay=40ms,loss=2%``) or a
    profile with overrides (``4g,seed=3`` or ``3g:loss=5%``)."""
    text = text.strip()
    if not text:
        raise NetSpecError(
            "empty --net value; use a profile (" + ", ".join(PROFILES) + ") or key=value,..."
        )
    head, _, rest = text.replace(":", ",", 1).partition(",")
    if head.lower() in PROFILES:
        base = PROFILES[head.lower()]
        return parse_spec(rest, base=base) if rest.strip() else base
    if "=" not in head:
        raise NetSpecError(
            f"unknown profile {head!r}; profiles: {', '.join(PROFILES)}; or a spec like delay=40ms,loss=2%"
        )
    return parse_spec(text)
