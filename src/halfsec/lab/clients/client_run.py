"""What one recording produced on a client, raw: the bench turns it into a record.

Every client fills the same ``ClientRun`` -- the Python WebSocket and WebRTC clients
live, the browser page rebuilt from its export -- so one function
(``lab.bench.records.make_record``) measures them all.  Nothing here computes a
figure; it is what the client saw, with the moment it saw it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from opentelemetry import trace

from halfsec import INTERNAL_RATE
from halfsec.audio.timeline import PlaybackTimeline
from halfsec.lab.clients.clock_sync import ClockSync
from halfsec.trace.client_spans import ClientTurnSpan
from halfsec.wire.jitter import JitterBuffer


@dataclass
class Received:
    """One server message as the client saw it."""

    t_recv_ns: int
    event: dict[str, Any] | None = None
    turn_id: int = 0
    t_server_ns: int = 0
    start_sample: int = 0
    samples: int = 0
    buffer_ms: float | None = None
    """Time the audio sat in the client's jitter buffer (Opus/WebRTC clients only)."""


@dataclass
class ClientRun:
    """Everything one recording produced, raw; ``lab.bench.records`` turns it into a record."""

    t0_ns: int = 0
    output_rate: int = INTERNAL_RATE
    session_id: str = ""
    domain: str | None = None
    clock: ClockSync | None = None
    timeline: PlaybackTimeline | None = None
    sent: list[np.ndarray] = field(default_factory=list)
    late_ms: list[float] = field(default_factory=list)
    events: list[Received] = field(default_factory=list)
    packets: list[Received] = field(default_factory=list)
    traceparents: list[str] = field(default_factory=list)
    turn_spans: list[ClientTurnSpan] = field(default_factory=list)
    """With a tracer: one open ``client.turn`` span per trace context sent, in order;
    ``lab.bench`` closes the ones the server used once it knows v2v."""
    tracer: trace.Tracer | None = None
    error: str | None = None
    closed_by_server: str | None = None
    jitter: JitterBuffer | None = None
    """The reply's jitter buffer when reply audio is Opus (``lab.clients.reply_player``);
    None when PCM is placed on the timeline as it arrives."""

    def sent_audio(self) -> np.ndarray:
        return np.concatenate(self.sent) if self.sent else np.zeros(0, dtype=np.int16)

    def received_audio(self) -> np.ndarray:
        """Reply audio on the sent timeline, at least as long as what was sent."""
        if self.timeline is None:
            return np.zeros(0, dtype=np.int16)
        n = int(self.sent_audio().size * self.output_rate / INTERNAL_RATE)
        return self.timeline.audio(min_len=n)

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [r.event for r in self.events if r.event is not None and r.event["type"] == kind]
