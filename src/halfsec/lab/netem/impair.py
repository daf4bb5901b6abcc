"""Per-packet impairment decisions for one direction of a simulated link.

The relays know nothing about loss models; they ask :meth:`Impairment.decide` what to
do with each datagram (or TCP chunk) and schedule the answer.  Keeping the model here,
free of sockets and clocks, is what lets the tests check the statistics of 100 000
packets in milliseconds and lets a seed reproduce a run exactly.

Model, in the order a packet meets it:

1. **Loss on the path** -- independent random loss and a Gilbert-Elliott two-state
   chain (bursty loss).  A lost packet never reaches the bottleneck.
2. **Bottleneck** -- a FIFO link of ``rate_bps``: the packet waits until the link is
   free, then takes ``size * 8 / rate`` to serialize.  If the wait would exceed
   ``queue_ms`` the packet is tail-dropped, the way a router's buffer overflows.
3. **Delay line** -- propagation ``delay_ms`` plus a normal jitter sample of standard
   deviation ``jitter_ms`` (clamped at zero).  Packets leave in order: a departure is
   never before the previous one, because real jitter comes from queues, and queues do
   not reorder.  So jitter alone never reorders, and the added delay under heavy jitter
   is slightly above ``delay_ms`` (the queue holds early packets behind late ones).
4. **Reordering** -- with probability ``reorder`` a packet skips the delay line and
   leaves as soon as it is serialized (netem's semantics), overtaking what is in flight.
5. **Duplication** -- with probability ``dup`` a second copy leaves right behind it.

Determinism: every packet consumes the same fixed set of random draws whatever
happens to it, so packet ``i``'s loss/reorder/duplicate/jitter decisions depend only on
the seed, the direction and ``i`` -- not on timing, sizes or earlier outcomes.  (Queue
drops depend on timing by nature; with no ``rate`` there are none.)
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass, field, replace

from halfsec.lab.netem.outage import OutageModel
from halfsec.lab.netem.profile import NetSpec
from halfsec.measure.percentile import percentile

__all__ = ["Decision", "ImpairStats", "Impairment", "LossModel", "TcpImpairment", "simulate"]

_NS_PER_MS = 1_000_000
_GAP_NS = 1_000  # least spacing between in-order departures


@dataclass(frozen=True)
class Decision:
    """What happens to one packet: when each copy leaves (monotonic ns), or why it died."""

    seq: int
    arrival_ns: int
    departures: tuple[int, ...]
    dropped: str | None = None  # "loss" (random), "burst" (Gilbert-Elliott), "queue"
    reordered: bool = False
    duplicated: bool = False

    @property
    def delivered(self) -> bool:
        return bool(self.departures)

    @property
    def delay_ms(self) -> float | None:
        """Added delay of the first copy, or ``None`` if the packet was dropped."""
        if not self.departures:
            return None
        return (self.departures[0] - self.arrival_ns) / _NS_PER_MS


@dataclass
class ImpairStats:
    """Running counters for one direction (what the relays report)."""

    packets: int = 0
    bytes: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    duplicated: int = 0
    reordered: int = 0
    # The most recent added delays (ms): enough for percentiles, bounded for long runs.
    delays_ms: deque[float] = field(default_factory=lambda: deque(maxlen=65536))

    def as_dict(self) -> dict[str, object]:
        ds = sorted(self.delays_ms)
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "dropped": sum(self.dropped.values()),
            "dropped_by": dict(self.dropped),
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "delay_ms_p50": percentile(ds, 50),
            "delay_ms_p95": percentile(ds, 95),
            "delay_ms_mean": sum(ds) / len(ds) if ds else None,
        }


class LossModel:
    """Random plus Gilbert-Elliott loss, three fixed draws per packet.

    Split out so the TCP relay can apply the same loss chain per segment while the
    timing model stays loss-free (TCP turns loss into delay, not into gaps)."""

    def __init__(self, spec: NetSpec, rng: random.Random) -> None:
        self.spec = spec
        self._rng = rng
        self._bad = False

    def next(self) -> str | None:
        """``None`` if the packet survives, else ``"loss"`` or ``"burst"``."""
        rng, ge = self._rng, self.spec.ge
        u_loss = rng.random()
        u_ge_state = rng.random()
        u_ge_loss = rng.random()
        burst_lost = False
        if ge is not None:
            if self._bad:
                if u_ge_state < ge.r:
                    self._bad = False
            elif u_ge_state < ge.p:
                self._bad = True
            burst_lost = u_ge_loss < (ge.h if self._bad else ge.k)
        if u_loss < self.spec.loss:
            return "loss"
        return "burst" if burst_lost else None


def _rng(spec: NetSpec, direction: str, stream: str = "") -> random.Random:
    # str seeds hash with SHA-512 in random.Random: stable across runs and
    # PYTHONHASHSEED, and distinct per direction and stream.
    return random.Random(f"halfsec-netem/{spec.seed}/{direction}{stream}")


class Impairment:
    """The stateful per-direction model (GE state, link busy time, last departure).

    One instance per direction: ``up`` and ``down`` draw from independent streams
    derived from the same seed, so changing traffic in one direction never changes the
    decisions in the other."""

    def __init__(self, spec: NetSpec, direction: str = "up") -> None:
        self.spec = spec
        self.direction = direction
        self._rng = _rng(spec, direction)
        self._loss = LossModel(spec, self._rng)
        self._outage = OutageModel(spec.outages, _rng(spec, direction, "/outage"))
        self._link_free_ns = 0
        self._last_departure_ns = 0
        self._seq = 0
        self.stats = ImpairStats()

    def decide(self, size: int, now_ns: int) -> Decision:
        """Decide the fate of a ``size``-byte packet that arrived at ``now_ns``."""
        spec, rng = self.spec, self._rng
        # Fixed draws per packet (see module docstring): never make these conditional.
        lost = self._loss.next()
        lost = self._outage.drop(now_ns) or lost
        u_reorder = rng.random()
        u_dup = rng.random()
        z_jitter = rng.gauss(0.0, 1.0)

        seq = self._seq
        self._seq += 1
        st = self.stats
        st.packets += 1
        st.bytes += size
        if lost is not None:
            st.dropped[lost] += 1
            return Decision(seq, now_ns, (), dropped=lost)

        if spec.rate_bps > 0:
            start = max(now_ns, self._link_free_ns)
            if (start - now_ns) > spec.queue_ms * _NS_PER_MS:
                st.dropped["queue"] += 1
                return Decision(seq, now_ns, (), dropped="queue")
            tx_ns = int(size * 8 / spec.rate_bps * 1e9)
            tx_end = start + tx_ns
            self._link_free_ns = tx_end
        else:
            tx_ns = 0
            tx_end = now_ns

        reordered = u_reorder < spec.reorder
        if reordered:
            departure = tx_end
            st.reordered += 1
        else:
            added = max(0.0, spec.delay_ms + spec.jitter_ms * z_jitter)
            # Strictly after the previous departure (1 us): equal times could be swapped
            # by the scheduler's heap, which would reorder without ``reorder``.
            departure = max(tx_end + int(added * _NS_PER_MS), self._last_departure_ns + _GAP_NS)
            self._last_departure_ns = departure

        departures: tuple[int, ...] = (departure,)
        duplicated = u_dup < spec.dup
        if duplicated:
            copy = max(departure + max(tx_ns, _GAP_NS), self._last_departure_ns + _GAP_NS)
            if not reordered:
                self._last_departure_ns = copy
            departures = (departure, copy)
            st.duplicated += 1
        st.delays_ms.append((departure - now_ns) / _NS_PER_MS)
        return Decision(seq, now_ns, departures, reordered=reordered, duplicated=duplicated)


_MSS = 1448  # TCP payload per segment on a 1500-byte MTU path with timestamps


class TcpImpairment:
    """Delay/jitter/rate for a byte stream, with loss turned into retransmission delay.

    TCP never shows the application a gap: a lost segment is resent after a timeout
    and everything behind it waits (head-of-line blocking).  So a chunk of ``size``
    bytes is split into MSS segments, each rolled through the same loss chain as UDP;
    if any is lost the chunk leaves ``spec.tcp_rto_ms()`` later, and because delivery
    is in order, so does everything queued behind it.  Reordering and duplication are
    invisible above TCP and are ignored.  This is the tail-loss case (RTO, not fast
    retransmit), which is what small voice-control messages hit; it is pessimistic for
    bulk transfers."""

    def __init__(self, spec: NetSpec, direction: str = "up") -> None:
        self.spec = spec
        timing = replace(
            spec, loss=0.0, ge=None, reorder=0.0, dup=0.0, queue_ms=float("inf"), outages=()
        )
        self._timing = Impairment(timing, direction)
        self._loss = LossModel(spec, _rng(spec, direction, "/tcp-loss"))
        self._outage = OutageModel(spec.outages, _rng(spec, direction, "/tcp-outage"))
        self._last_ns = 0
        self.stats = self._timing.stats

    def decide(self, size: int, now_ns: int) -> Decision:
        """When a chunk of ``size`` bytes read at ``now_ns`` reaches the other side."""
        segments = max(1, -(-size // _MSS))
        lost = [self._loss.next() for _ in range(segments)]
        base = self._timing.decide(size, now_ns)
        departure = base.departures[0]
        retransmitted = any(x is not None for x in lost)
        if retransmitted:
            departure += int(self.spec.tcp_rto_ms() * _NS_PER_MS)
            self.stats.dropped["retransmit"] += 1
        released = self._outage.tcp_release_ns(now_ns, self.spec.tcp_rto_ms())
        if released is not None:
            # Sent into a blackout (or lost in a burst): it gets through with the first
            # retransmission after the fault, plus the path's delay.
            departure = max(departure, released + (departure - now_ns))
            self.stats.dropped["outage"] += 1
        departure = max(departure, self._last_ns + _GAP_NS)
        self._last_ns = departure
        self.stats.delays_ms[-1] = (departure - now_ns) / _NS_PER_MS
        return Decision(base.seq, now_ns, (departure,), dropped=None)

    def pieces(self, size: int, now_ns: int) -> list[tuple[int, int]]:
        """``(bytes, departure_ns)`` of each MSS-sized piece of a chunk read at ``now_ns``.

        Why pieces: with a ``rate`` the bottleneck serializes a chunk segment by segment,
        so its first segment leaves one segment's time after the link is free and its
        last the whole chunk's time later.  A relay writing the chunk at once at the last
        byte's time would hold the first bytes too long; one handing it over at the first
        byte's time would leave the serialization to a kernel shaper (``tbf``) whose
        queue the relay never sees.  Writing each piece when the model lets it leave
        keeps every byte's queueing delay inside the lab, where it is counted.  The
        chunk still draws once (loss, jitter, RTO), as :meth:`decide`; the last piece
        leaves at the chunk's departure, earlier ones spaced back by their serialization
        time, never before an earlier departure (in order).  Without a rate: one piece."""
        before = self._last_ns
        departure = self.decide(size, now_ns).departures[0]
        rate = self.spec.rate_bps
        if rate <= 0 or size <= _MSS:
            return [(size, departure)]
        out: list[tuple[int, int]] = []
        rest, prev = size, before
        while rest > 0:
            n = min(_MSS, rest)
            rest -= n
            t = max(departure - int(rest * 8 / rate * 1e9), prev + _GAP_NS)
            out.append((n, t))
            prev = t
        self._last_ns = max(self._last_ns, prev)
        self.stats.delays_ms.pop()
        self.stats.delays_ms.extend((t - now_ns) / _NS_PER_MS for _n, t in out)
        return out


def simulate(
    spec: NetSpec,
    n: int,
    *,
    interval_ms: float = 20.0,
    size: int = 160,
    direction: str = "up",
) -> list[Decision]:
    """Decisions for ``n`` packets sent every ``interval_ms`` (no sockets, no waiting).

    This is the ground truth the socket tests compare against: the relays must apply
    exactly these decisions, up to scheduler lateness."""
    imp = Impairment(spec, direction)
    step = int(interval_ms * _NS_PER_MS)
    return [imp.decide(size, i * step) for i in range(n)]
