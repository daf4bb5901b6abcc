"""``ReplyTrack``: the WebRTC track that carries reply audio, pre-encoded and paced.

aiortc's own Opus encoder is fixed at 96 kbit/s stereo without FEC, but its sender also
accepts pre-encoded ``av.Packet`` s: this track hands it our packets (``PacedOpusOut``:
mono, voip, 24 kbit/s, in-band FEC), one per 20 ms while a reply plays and nothing
between replies (DTX).  See ``server/webrtc.py`` for why.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import av
from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from halfsec.clock import now_ns
from halfsec.wire.realtime_audio import PacedOpusOut

PacketSent = Callable[[int, int, int, bool], None]
"""(turn_id, RTP media pts, t_server_ns, first packet of the turn) for each reply packet."""


class ReplyTrack(MediaStreamTrack):
    """Outgoing audio: pre-encoded Opus packets, one per 20 ms slot while a reply plays,
    nothing between replies (DTX)."""

    kind = "audio"

    def __init__(
        self,
        out: PacedOpusOut,
        is_cancelled: Callable[[int], bool],
        on_sent: PacketSent | None = None,
    ) -> None:
        super().__init__()
        self.out = out
        self.is_cancelled = is_cancelled
        """The connection's record of interrupted turns, whose packets are never sent."""
        self.on_sent = on_sent
        self.sender: RTCRtpSender | None = None
        self._prev_pts: int | None = None
        self.rtp_origin: int | None = None

    def _learn_origin(self) -> None:
        # aiortc adds a random origin to our pts; its sender remembers the last timestamp
        # it sent (for RTCP SR).  Reading it once lets the events name exact RTP times.
        if self.rtp_origin is not None or self.sender is None or self._prev_pts is None:
            return
        last = getattr(self.sender, "_RTCRtpSender__rtp_timestamp", None)
        if isinstance(last, int) and last:
            self.rtp_origin = (last - self._prev_pts) & 0xFFFFFFFF

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        self._learn_origin()
        # DTX: nothing is sent between replies, and a reply's first packet leaves the
        # moment it is encoded, on a grid anchored then (``PacedOpusOut.next_slot``).  A
        # continuous silent stream would make it wait for the next 20 ms slot (~10 ms
        # on average).  The receiver's jitter buffer keeps its link estimate across the
        # pause (``JitterBuffer`` excludes sender pauses from its window), which is what
        # made DTX cost concealment at 4g before.
        # The very first packet is one frame of silence sent at once: aiortc adds a
        # random origin to our pts that only a sent packet reveals (``_learn_origin``),
        # and each ``reply.audio`` event must name its packet's exact RTP timestamp.
        slot = await self.out.next_slot(continuous=self._prev_pts is None)
        while slot.turn_id and self.is_cancelled(slot.turn_id):
            slot = await self.out.next_slot()
        pts = slot.pts
        assert slot.packet is not None
        packet = av.Packet(slot.packet)
        packet.pts = pts
        packet.time_base = Fraction(1, 48_000)
        self._prev_pts = pts
        if slot.turn_id and self.on_sent is not None:
            self.on_sent(slot.turn_id, pts, now_ns(), slot.first_of_turn)
        return packet
