"""What a receiver actually saw: delay percentiles, jitter, loss, reordering.

Used by the tests and ``benchmarks/netem_bench.py`` to check that the lab applies what
a profile says, measured from timestamps at the endpoints rather than trusted from the
relay's own bookkeeping."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from halfsec.measure.percentile import percentile

__all__ = ["PathReport", "summarize"]


@dataclass(frozen=True)
class PathReport:
    """One direction's numbers over a run of sequence-numbered packets."""

    sent: int
    received: int  # distinct sequence numbers that arrived
    duplicates: int  # extra copies beyond the first
    loss: float  # 1 - received / sent
    reordered: int  # arrivals with a lower seq than one already seen
    delay_ms_p50: float | None
    delay_ms_p95: float | None
    delay_ms_mean: float | None
    delay_ms_std: float | None
    jitter_ms: float | None  # RFC 3550 interarrival jitter (smoothed |D| with gain 1/16)
    mean_burst: float | None  # mean length of runs of consecutive lost seqs

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def summarize(sent: int, arrivals: Iterable[tuple[int, int, int]]) -> PathReport:
    """Summarize arrivals ``(seq, send_ns, recv_ns)`` in the order they arrived.

    Delay is one way, ``recv - send`` on the same monotonic clock (both ends live on
    this machine), so it includes the relay's scheduler lateness: that is the honest
    number.  The RFC 3550 jitter is what an RTP receiver would report, so it can be
    compared with WebRTC stats; ``delay_ms_std`` is the spread the spec's ``jitter``
    asks for."""
    seen: set[int] = set()
    dups = 0
    reordered = 0
    highest = -1
    delays: list[float] = []
    jitter = 0.0
    prev_transit: float | None = None
    for seq, send_ns, recv_ns in arrivals:
        if seq in seen:
            dups += 1
            continue
        seen.add(seq)
        if seq < highest:
            reordered += 1
        highest = max(highest, seq)
        transit = (recv_ns - send_ns) / 1e6
        delays.append(transit)
        if prev_transit is not None:
            jitter += (abs(transit - prev_transit) - jitter) / 16.0
        prev_transit = transit
    received = len(seen)
    bursts: list[int] = []
    run = 0
    for s in range(sent):
        if s in seen:
            if run:
                bursts.append(run)
            run = 0
        else:
            run += 1
    if run:
        bursts.append(run)
    mean = sum(delays) / len(delays) if delays else None
    std = (
        math.sqrt(sum((d - mean) ** 2 for d in delays) / (len(delays) - 1))
        if mean is not None and len(delays) > 1
        else None
    )
    return PathReport(
        sent=sent,
        received=received,
        duplicates=dups,
        loss=1.0 - received / sent if sent else 0.0,
        reordered=reordered,
        delay_ms_p50=percentile(delays, 50),
        delay_ms_p95=percentile(delays, 95),
        delay_ms_mean=mean,
        delay_ms_std=std,
        jitter_ms=jitter if len(delays) > 1 else None,
        mean_burst=sum(bursts) / len(bursts) if bursts else None,
    )
