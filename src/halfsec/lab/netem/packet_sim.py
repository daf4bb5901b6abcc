"""A network profile's effect on a 20 ms audio stream, in simulated time.

The jitter buffer's tests and ``benchmarks/jitter_bench.py`` need to ask "how much
buffer delay and concealment does ``4g`` cost?" thousands of packets at a time, without
sockets or sleeping.  The answer is only worth having if "4g" means what it means
everywhere else in the lab, so there is no second link model here: every packet goes
through :class:`~halfsec.lab.netem.impair.Impairment`, the same per-packet model the
UDP relay applies to WebRTC's RTP, with a profile from the one table in
:mod:`~halfsec.lab.netem.profile`.

How a :class:`~halfsec.lab.netem.profile.NetSpec` becomes arrivals
-----------------------------------------------------------------
Packet ``i`` (sequence ``i``, RTP timestamp ``i * 20 ms`` at 48 kHz) is sent at
``start_ns + i * 20 ms`` and its fate is ``Impairment(spec, direction).decide(size,
sent)`` with ``size`` = payload + 22 bytes (RTP header and SRTP tag: the datagram the
relay sees).  So, in the order the model applies them:

* ``loss`` and ``ge``: the packet never arrives (independent and bursty loss; the
  Gilbert-Elliott bursts are what defeat Opus FEC, which only rebuilds one frame);
* ``rate``/``queue``: serialization and tail drop at the bottleneck (at 50 packets a
  second of under 100 bytes even ``3g``'s 1 Mbit/s never queues: under 1 ms each);
* ``delay`` + ``jitter``: one-way delay plus a normal sample of standard deviation
  ``jitter``, clamped at zero, through a FIFO: jitter alone never reorders, and a late
  packet holds back the ones behind it, the way queueing delay reaches a receiver;
* ``reorder``: the packet skips the delay line and overtakes what is in flight;
* ``dup``: a second copy right behind the first.

The seed is the spec's own (``4g,seed=3``), or ``seed`` when given; the same seed
gives the same arrivals, run after run.
"""

from __future__ import annotations

import numpy as np

from halfsec import FRAME_MS
from halfsec.lab.netem.impair import Impairment
from halfsec.lab.netem.profile import NetSpec
from halfsec.wire.jitter import RTP_CLOCK, SEQ_MOD, TS_MOD, JitterBuffer, JitterPacket

__all__ = ["SRTP_OVERHEAD_BYTES", "run_simulation", "simulate_arrivals"]

SRTP_OVERHEAD_BYTES = 12 + 10
"""RTP header and SRTP authentication tag around each Opus payload."""


def simulate_arrivals(
    spec: NetSpec,
    payloads: list[bytes],
    seed: int | None = None,
    frame_ms: int = FRAME_MS,
    clock_rate: int = RTP_CLOCK,
    start_ns: int = 1_000_000_000,
    direction: str = "up",
) -> list[tuple[int, JitterPacket]]:
    """(arrival_ns, packet) for ``payloads`` sent every ``frame_ms`` over ``spec`` (see
    the module docstring), sorted by arrival, so reordering and duplicates appear as the
    network produces them.  ``direction`` picks the seeded stream, as in the relays:
    ``up`` (client to server, the server's input buffer) or ``down``."""
    imp = Impairment(spec if seed is None else spec.with_seed(seed), direction)
    step_ns = frame_ms * 1_000_000
    step_ts = clock_rate * frame_ms // 1000
    events: list[tuple[int, JitterPacket]] = []
    for i, payload in enumerate(payloads):
        decision = imp.decide(len(payload) + SRTP_OVERHEAD_BYTES, start_ns + i * step_ns)
        pkt = JitterPacket(i % SEQ_MOD, (i * step_ts) % TS_MOD, payload)
        events.extend((departure, pkt) for departure in decision.departures)
    events.sort(key=lambda e: e[0])
    return events


def run_simulation(
    buffer: JitterBuffer,
    events: list[tuple[int, JitterPacket]],
    n_frames: int,
    tick_phase_ms: float = 0.0,
    tail_ms: float = 1000.0,
) -> list[np.ndarray]:
    """Feed ``events`` and pop every ``frame_ms`` in simulated time (no sleeping)."""
    if not events:
        return []
    period = buffer.cfg.frame_ms * 1_000_000
    t = events[0][0] - events[0][0] % period + int(tick_phase_ms * 1e6)
    end = events[-1][0] + int(tail_ms * 1e6)
    out: list[np.ndarray] = []
    i = 0
    while t <= end and buffer.stats.played < n_frames + 100:
        while i < len(events) and events[i][0] <= t:
            buffer.push(events[i][1], events[i][0])
            i += 1
        if i == len(events) and not buffer.buffered:
            break  # the stream has ended and everything sent has been played
        frame = buffer.pop(t)
        if frame is not None:
            out.append(frame)
        t += period
    return out
