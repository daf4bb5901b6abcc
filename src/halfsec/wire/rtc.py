"""WebRTC pieces both ends share: ICE on chosen hosts only, no STUN, Opus-only
negotiation, and RTP taken before aiortc's own jitter buffer and decoder.

Both the server (``server/webrtc.py``) and the lab's WebRTC client use these, so the
client never has to import the server.  Why we take RTP ourselves: aiortc's receiver
holds ~80 ms of packets and has neither PLC nor FEC (see ``server/webrtc.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc import sdp as aiortc_sdp

EVENTS_LABEL = "events"
_OPUS_PT = re.compile(r"^a=rtpmap:(\d+) opus/48000", re.MULTILINE | re.IGNORECASE)
_ice_hosts: list[str] | None = None
_original_host_addresses = aioice.ice.get_host_addresses


def restrict_ice_hosts(hosts: list[str] | None) -> None:
    """Gather ICE host candidates on exactly ``hosts`` (None: aioice's default, every
    non-loopback interface).  Process-wide, because aioice reads it at gathering time;
    the server and the bench set it once at start-up."""
    global _ice_hosts
    _ice_hosts = list(hosts) if hosts is not None else None

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if _ice_hosts is None:
            return _original_host_addresses(use_ipv4, use_ipv6)
        return list(_ice_hosts)

    aioice.ice.get_host_addresses = host_addresses


def rtc_configuration() -> RTCConfiguration:
    """No ICE servers: aiortc would otherwise ask Google's STUN server."""
    return RTCConfiguration(iceServers=[])


def opus_payload_type(sdp: str) -> int | None:
    m = _OPUS_PT.search(sdp)
    return int(m.group(1)) if m else None


def offer_problem(sdp: str) -> str | None:
    """Why aiortc cannot be trusted with ``sdp``, or None.  Checked before
    ``setRemoteDescription``: a media section of an unknown kind or without a mid, two
    with the same mid, or a BUNDLE group naming a mid no section has leave a transceiver
    (or the data channel) without a transport, and aiortc's connect task, scheduled by
    ``setRemoteDescription`` itself, then fails with an exception nobody can catch
    (found by the fuzz suite)."""
    try:
        description = aiortc_sdp.SessionDescription.parse(sdp)
    except Exception as e:  # aiortc's parser raises many types on garbage
        return f"unparsable SDP ({type(e).__name__}: {e})"
    kinds = [m.kind for m in description.media]
    if any(k not in ("audio", "video", "application") for k in kinds):
        return f"m-lines of unknown kinds ({kinds})"
    mids = [m.rtp.muxId for m in description.media]
    if not all(mids):
        return "every m-line needs an a=mid"
    if len(set(mids)) != len(mids):
        return f"m-lines share a mid ({mids})"
    for group in description.group:
        if group.semantic == "BUNDLE" and any(str(i) not in mids for i in group.items):
            return f"BUNDLE group {group.items} names a mid no m-line has ({mids})"
    return None


def prefer_opus(pc: RTCPeerConnection) -> None:
    """Negotiate Opus only: our sender hands aiortc pre-encoded Opus packets."""
    caps = RTCRtpSender.getCapabilities("audio")
    opus = [c for c in caps.codecs if c.mimeType.lower() == "audio/opus"]
    for t in pc.getTransceivers():
        if t.kind == "audio":
            t.setCodecPreferences(opus)


RtpSink = Callable[[int, int, bytes, int], None]
"""(seq, timestamp, payload, payload_type)."""


def intercept_rtp(receiver: RTCRtpReceiver, sink: RtpSink) -> None:
    """Take the decrypted RTP packets of ``receiver`` before aiortc's jitter buffer and
    decoder (see the module docstring for why)."""

    async def handle(packet: Any, arrival_time_ms: int = 0) -> None:
        sink(
            int(packet.sequence_number),
            int(packet.timestamp),
            bytes(packet.payload),
            int(packet.payload_type),
        )

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]
