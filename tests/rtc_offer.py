"""A real WebRTC offer from aiortc, for tests that send offers to the server (the fuzz
suite mutates it; the hostile-input tests strip parts of it)."""

from __future__ import annotations

from aiortc import RTCPeerConnection


async def real_offer() -> str:
    """The SDP of an audio + events data channel offer, as the lab's WebRTC client makes."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendrecv")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp
