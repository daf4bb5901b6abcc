"""One client's conversation through the edge: its socket, its origin link, and the maps
that make the origin's view of the stream read as the client's.

The origin hears only what the gate forwards, so its stream has the silences cut out:
``PositionMap`` maps its ``audio_ms`` positions back onto the client's own stream.  Reply
audio keeps its HSA1 bytes, restamped at the moment the edge hands it to the client's
socket, on the edge's clock, which the client synchronised with (the edge answers its
pings), as the protocol defines ``t_server_ns``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from halfsec.audio.framing import Framer
from halfsec.audio.resample import StreamResampler
from halfsec.clock import now_ns
from halfsec.edge.gate import EdgeGate
from halfsec.edge.origin_link import OriginLink
from halfsec.server.client_socket import ClientSocket
from halfsec.wire.audio_packets import restamp_audio


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

    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.socket.send_json(obj)

    async def send_audio_packet(self, packet: bytes) -> None:
        await self.socket.send_stamped(lambda t: restamp_audio(packet, t))

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
