"""One client's conversation through the edge: its socket, its origin link, and the maps
that make the origin's view of the stream read as the client's.

The origin hears only what the gate forwards, so its stream has the silences cut out:
``PositionMap`` maps its ``audio_ms`` positions back onto the client's own stream.  Reply
audio keeps its HSA1 bytes, restamped at the moment the edge hands it to the client's
socket, on the edge's clock, which the client synchronised with (the edge answers its
pings), as the protocol defines ``t_server_ns``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from halfsec.audio.framing import Framer
from halfsec.audio.resample import StreamResampler
from halfsec.clock import now_ns
from halfsec.edge.gate import EdgeGate
from halfsec.edge.origin_link import OriginLink
from halfsec.server.admission import RealTimeAudio
from halfsec.server.client_socket import ClientSocket
from halfsec.wire.audio_packets import decode_audio, restamp_audio
from halfsec.wire.protocol import ProtocolError
from halfsec.wire.realtime_audio import InboundAudio, PacedOpusOut, send_paced_opus


class PositionMap:
    """Origin stream position -> client stream position (the origin's has gaps cut)."""

    def __init__(self) -> None:
        self.segments: list[tuple[float, float]] = [(0.0, 0.0)]

    def add(self, origin_ms: float, client_ms: float) -> None:
        self.segments.append((origin_ms, client_ms))

    def to_client(self, origin_ms: float) -> float:
        for o, c in reversed(self.segments):
            if origin_ms >= o:
                return c + (origin_ms - o)
        return origin_ms


@dataclass
class EdgeSessionStats:
    """Byte and message counts of one client conversation (what the gate saved)."""

    client_audio_messages: int = 0
    client_audio_bytes: int = 0
    """As received from the client (at its sample rate)."""
    client_audio_bytes_16k: int = 0
    """The same audio at 16 kHz: the fair comparison with what was forwarded."""
    forwarded_audio_messages: int = 0
    forwarded_audio_bytes: int = 0
    forwarded_control_messages: int = 0
    rejected_messages: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: int(getattr(self, k)) for k in self.__dataclass_fields__}


@dataclass
class EdgeConversation:
    socket: ClientSocket
    session_id: str
    link: OriginLink | None = None
    gate: EdgeGate | None = None
    resampler: StreamResampler | None = None
    framer: Framer = field(default_factory=Framer)
    positions: PositionMap = field(default_factory=PositionMap)
    origin_pos_ms: float = 0.0
    stats: EdgeSessionStats = field(default_factory=EdgeSessionStats)
    first_audio_turns: set[int] = field(default_factory=set)
    origin_error: str | None = None
    audio_budget: RealTimeAudio = field(default_factory=RealTimeAudio)
    """Real-time admission of the client's audio (the origin's rule, applied here first)."""
    inbound: InboundAudio | None = None
    """``encoding: opus``: the client's packets through a jitter buffer, at 16 kHz."""
    paced_out: PacedOpusOut | None = None
    """``output_encoding: opus``: the origin's PCM replies re-encoded and paced (HSO1)."""
    interrupted_turns: set[int] = field(default_factory=set)
    pacer: asyncio.Task[None] | None = None

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.socket.send_json(obj)

    async def send_audio_packet(self, packet: bytes) -> None:
        """Reply audio from the origin (always ``HSA1``: the edge's origin sessions are
        PCM both ways): restamped and passed on, or with Opus output queued to be
        encoded and paced like the origin's own Opus replies."""
        if self.paced_out is None:
            await self.socket.send_stamped(lambda t: restamp_audio(packet, t))
            return
        try:
            reply = decode_audio(packet)
        except ProtocolError:
            return
        if reply.turn_id not in self.interrupted_turns:
            self.paced_out.put(reply.turn_id, reply.pcm)

    def interrupted(self, turn_id: int) -> None:
        """Barge-in: nothing more of ``turn_id``'s reply may reach the client."""
        self.interrupted_turns.add(turn_id)
        if self.paced_out is not None:
            self.paced_out.flush(turn_id)

    async def send_paced_opus(self) -> None:
        assert self.paced_out is not None
        await send_paced_opus(
            self.paced_out,
            self.socket.send_stamped,
            lambda: self.socket.closed,
            self.interrupted_turns.__contains__,
        )

    async def close_audio(self) -> None:
        if self.pacer is not None:
            self.pacer.cancel()
        if self.inbound is not None:
            await self.inbound.close()

    async def error(self, code: str, message: str, fatal: bool = False) -> None:
        await self.socket.error(code, message, fatal=fatal)

    async def mark(
        self, name: str, turn_id: int = 0, t_ns: int | None = None, **attrs: Any
    ) -> None:
        """An ``edge.*`` timing event, so the lab can show the edge hop."""
        await self.send_json(
            {
                "type": "timing",
                "turn_id": turn_id,
                "t_server_ns": now_ns() if t_ns is None else t_ns,
                "name": name,
                "attrs": attrs,
            }
        )
