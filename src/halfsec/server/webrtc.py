"""WebRTC transport (aiortc): ``POST /webrtc/offer`` -> one ``VoiceSession`` per peer.

Signaling is one HTTP round trip (no trickle): the client gathers its candidates, POSTs
``{"sdp", "type": "offer", "traceparent"?, "token"?}`` and gets ``{"sdp", "type":
"answer", "session_id"}`` back, under the same token / Origin / ``--max-sessions`` rules
as ``/ws``.  The client's offer carries one audio track (the microphone) and a data
channel labelled ``events``; the events channel carries exactly the WebSocket protocol's
JSON events (and accepts ``ping``, ``trace.context`` and ``session.end``).

Where the audio goes, and why not through aiortc's own media path
-----------------------------------------------------------------
aiortc's audio receiver holds 4 packets before it decodes (~80 ms), simply skips lost
packets (no PLC, no FEC: its FFmpeg decoder cannot be asked for either) and hands frames
on with no pacing.  That is the wrong trade for a half-second budget on a lossy link.  So
the server takes the SRTP-decrypted RTP packets straight from the receiver (its
``_handle_rtp_packet`` is replaced per receiver) and puts ``(seq, timestamp, Opus
payload)`` into our adaptive ``JitterBuffer``: Opus in-band FEC rebuilds a lost frame
from its successor, libopus PLC conceals the rest, and the buffer's delay adapts to the
measured jitter.  libopus decodes at 16 kHz for the pipeline directly (the wire format is
rate-agnostic).  The bench's WebRTC client does the same for the reply audio, so both
ends conceal and FEC-recover identically.

The sender side is ours too: aiortc's Opus encoder is fixed at 96 kbit/s stereo without
FEC, but its sender also accepts pre-encoded ``av.Packet`` s.  ``ReplyTrack`` encodes
reply audio with ``transport.opus.OpusEncoder`` (mono, voip, 24 kbit/s, in-band FEC with
an expected-loss hint) and releases one packet per 20 ms on a monotonic grid while a
reply plays.  Between replies nothing is sent (DTX): a reply's first packet leaves the
moment it is encoded instead of waiting for the next 20 ms slot of a silent stream
(docs/PERFORMANCE.md section 4 has the before and after), and its timestamp jump tells
the receiver the sender paused; our ``JitterBuffer`` keeps its jitter estimate across
such pauses, so a reply after seconds of silence still starts with the margin the link
needs.  An ``interruption`` drops what is queued.  Each turn's first packet is
announced on the events channel as ``reply.audio`` with its RTP timestamp, so a client
can tell which turn it is hearing and when the server let it go (the WebRTC counterpart of the ``HSA1`` header's ``turn_id``/``t_server_ns``).

ICE: host candidates only, no STUN server (nothing leaves the machine), and on a loopback
bind only 127.0.0.1 (aioice skips loopback by default, which would put lab traffic on the
LAN interface); see ``restrict_ice_hosts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Any, cast

import av
from aiohttp import web
from aiortc import (
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from halfsec.clock import now_ns
from halfsec.frames import EndOfTurn, ErrorFrame, Interruption, ReplyAudio
from halfsec.runtime.session import VoiceSession
from halfsec.wire.protocol import (
    Ping,
    ProtocolError,
    SessionEnd,
    SessionStart,
    TraceContext,
    error_event,
    parse_client_message,
    pong_event,
    session_started_event,
    valid_traceparent,
)
from halfsec.wire.realtime_audio import InboundAudio, PacedOpusOut
from halfsec.wire.rtc import (
    EVENTS_LABEL,
    intercept_rtp,
    opus_payload_type,
    prefer_opus,
    restrict_ice_hosts,
    rtc_configuration,
)

if TYPE_CHECKING:
    from halfsec.server.app import VoiceServer
    from halfsec.trace.turns import TurnTraceRecorder

log = logging.getLogger("halfsec.webrtc")

MAX_SDP_BYTES = 64 * 1024


class ReplyTrack(MediaStreamTrack):
    """Outgoing audio: pre-encoded Opus packets, one per 20 ms slot while a reply plays,
    nothing between replies (DTX)."""

    kind = "audio"

    def __init__(
        self,
        out: PacedOpusOut,
        on_first: Callable[[int, int, int], None] | None = None,
    ) -> None:
        super().__init__()
        self.out = out
        self.on_first = on_first
        """Called with (turn_id, RTP media pts, t_server_ns) for each turn's first packet."""
        self.sender: RTCRtpSender | None = None
        self._prev_pts: int | None = None
        self.rtp_origin: int | None = None
        self.cancelled: set[int] = set()

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
        while slot.turn_id in self.cancelled:
            slot = await self.out.next_slot()
        pts = slot.pts
        assert slot.packet is not None
        packet = av.Packet(slot.packet)
        packet.pts = pts
        packet.time_base = Fraction(1, 48_000)
        self._prev_pts = pts
        if slot.first_of_turn and slot.turn_id and self.on_first is not None:
            self.on_first(slot.turn_id, pts, now_ns())
        return packet


class RtcSession:
    """One peer connection = one conversation; mirrors ``server._Conn`` for the shared
    event helpers (trace contexts, recorder)."""

    def __init__(self, gateway: WebRtcGateway, traceparent: str | None) -> None:
        server = gateway.server
        cfg = server.config
        self.gateway = gateway
        self.server = server
        self.session_id = uuid.uuid4().hex[:12]
        self.pc = RTCPeerConnection(rtc_configuration())
        self.session = VoiceSession(
            server.engines, cfg.turn, cfg.session, output_rate=cfg.audio.output_rate
        )
        self.inbound = InboundAudio(self.session.push, on_malformed=self._bad_opus)
        self.out = PacedOpusOut(cfg.audio.output_rate)
        self.track = ReplyTrack(self.out, self._on_first_audio)
        self.channel: RTCDataChannel | None = None
        self._pending: list[str] = []
        self.next_traceparent = traceparent
        self.turn_traces: dict[int, str] = {}
        self.cancelled_turns: set[int] = set()
        self.recorder: TurnTraceRecorder | None = None
        self.closing = False
        self.opus_pt: int | None = None
        self.foreign_packets = 0
        self.created = time.monotonic()
        self.last_rtp = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._ended = asyncio.Event()

    # -- signaling ----------------------------------------------------------------------
    async def negotiate(self, offer_sdp: str) -> str:
        pc = self.pc

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label == EVENTS_LABEL:
                self._attach(channel)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind != "audio":
                return
            for t in pc.getTransceivers():
                if t.receiver.track is track:
                    intercept_rtp(t.receiver, self._on_rtp)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.end(f"peer connection {pc.connectionState}")

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        if not any(t.kind == "audio" for t in pc.getTransceivers()):
            raise ValueError("the offer has no audio m-line (add the microphone track)")
        prefer_opus(pc)
        self.track.sender = pc.addTrack(self.track)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        sdp = pc.localDescription.sdp
        self.opus_pt = opus_payload_type(sdp)
        if self.opus_pt is None:
            raise ValueError("the offer does not allow Opus at 48 kHz")
        self._tasks.append(asyncio.create_task(self._sender(), name=f"rtc-send-{self.session_id}"))
        self._tasks.append(asyncio.create_task(self._watchdog(), name=f"rtc-wd-{self.session_id}"))
        return str(sdp)

    # -- media in -----------------------------------------------------------------------
    def _on_rtp(self, seq: int, ts: int, payload: bytes, pt: int) -> None:
        if self.closing:
            return
        if pt != self.opus_pt or not payload:
            self.foreign_packets += 1
            return
        self.last_rtp = time.monotonic()
        self.inbound.push(seq, ts, payload)

    async def _bad_opus(self, n: int) -> None:
        await self.error("bad_audio", f"{n} Opus packet(s) could not be decoded; concealed")

    # -- events -------------------------------------------------------------------------
    def _attach(self, channel: RTCDataChannel) -> None:
        self.channel = channel

        @channel.on("open")
        def on_open() -> None:
            self._flush()

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            asyncio.ensure_future(self._on_message(message))

        @channel.on("close")
        def on_close() -> None:
            asyncio.ensure_future(self.end("events channel closed"))

        if channel.readyState == "open":
            self._flush()

    def _flush(self) -> None:
        ch = self.channel
        if ch is None or ch.readyState != "open":
            return
        pending, self._pending = self._pending, []
        for text in pending:
            ch.send(text)

    async def send_json(self, obj: dict[str, Any]) -> None:
        text = json.dumps(obj)
        ch = self.channel
        if ch is not None and ch.readyState == "open" and not self._pending:
            with contextlib.suppress(Exception):
                ch.send(text)
        else:
            self._pending.append(text)

    async def error(self, code: str, message: str, fatal: bool = False) -> None:
        await self.send_json(error_event(code, message, now_ns(), fatal=fatal))

    async def _on_message(self, message: str | bytes) -> None:
        if not isinstance(message, str):
            await self.error("bad_message", "the events channel carries JSON text only")
            return
        try:
            m = parse_client_message(message)
        except ProtocolError as e:
            await self.error(e.code, e.message)
            return
        if isinstance(m, Ping):
            await self.send_json(pong_event(m, now_ns()))
        elif isinstance(m, TraceContext):
            self.next_traceparent = m.traceparent
        elif isinstance(m, SessionStart):
            await self.error("already_started", "a WebRTC session starts with its offer")
        elif isinstance(m, SessionEnd):
            await self.end("session.end")

    def _on_first_audio(self, turn_id: int, pts: int, t_ns: int) -> None:
        ev: dict[str, Any] = {
            "type": "reply.audio",
            "turn_id": turn_id,
            "t_server_ns": t_ns,
            "pts": pts,
        }
        if self.track.rtp_origin is not None:
            ev["rtp_timestamp"] = (self.track.rtp_origin + pts) & 0xFFFFFFFF
        if self.recorder is not None:
            self.recorder.audio_sent(turn_id, t_ns)
        asyncio.ensure_future(self.send_json(ev))

    async def _sender(self) -> None:
        server = self.server
        cfg = server.config
        self.recorder = server._recorder(cast(Any, self))
        await self.send_json(
            session_started_event(
                self.session_id,
                cfg.audio.output_rate,
                now_ns(),
                input_sample_rate=48_000,
                domain=cfg.logic.domain,
                encoding="opus",
                output_encoding="opus",
                transport="webrtc",
            )
        )
        try:
            async for f in self.session.events():
                if self.recorder is not None:
                    self.recorder.frame(f)
                if isinstance(f, ReplyAudio):
                    if f.turn_id not in self.cancelled_turns:
                        self.out.put(f.turn_id, f.pcm)
                    continue
                if isinstance(f, Interruption):
                    self.cancelled_turns.add(f.turn_id)
                    self.track.cancelled.add(f.turn_id)
                    self.out.flush(f.turn_id)
                ev = server._event(cast(Any, self), f)
                if ev is not None:
                    await self.send_json(ev)
                if isinstance(f, EndOfTurn):
                    from halfsec.server.app import jitter_event

                    await self.send_json(jitter_event(f.turn_id, self.inbound.turn_summary()))
                if isinstance(f, ErrorFrame) and f.fatal:
                    await self.end("fatal error")
                    break
        finally:
            if self.recorder is not None:
                self.recorder.close()

    async def _watchdog(self) -> None:
        opt = self.server.options
        while not self.closing:
            await asyncio.sleep(0.5)
            t = time.monotonic()
            if self.inbound.error is not None:
                log.error("session %s: audio input failed: %r", self.session_id, self.inbound.error)
                await self.error("internal_error", str(self.inbound.error), fatal=True)
                await self.end("audio input failed")
            elif not self.last_rtp and t - self.created > opt.start_timeout_s:
                await self.error(
                    "start_timeout",
                    f"no audio within {opt.start_timeout_s:.0f} s of the answer (ICE/DTLS "
                    "did not connect?)",
                    fatal=True,
                )
                await self.end("start timeout")
            elif self.last_rtp and t - self.last_rtp > opt.idle_timeout_s:
                await self.error(
                    "idle_timeout", f"no audio for {opt.idle_timeout_s:.0f} s", fatal=True
                )
                await self.end("idle timeout")

    async def end(self, reason: str) -> None:
        """Idempotent: cancel the session's work and close the peer connection."""
        if self.closing:
            return
        self.closing = True
        log.info("webrtc session %s closed (%s)", self.session_id, reason)
        self.gateway.sessions.pop(self.session_id, None)
        self._flush()
        with contextlib.suppress(Exception):
            await self.session.close()
        await self.inbound.close()
        self.track.stop()
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current and not t.done():
                t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), timeout=3.0)
        self._ended.set()


class WebRtcGateway:
    """The ``/webrtc/offer`` route of a ``VoiceServer`` and its open peer sessions."""

    def __init__(self, server: VoiceServer) -> None:
        from halfsec.server.admission import is_loopback

        self.server = server
        self.sessions: dict[str, RtcSession] = {}
        if is_loopback(server.options.host):
            restrict_ice_hosts(["127.0.0.1"])

    async def offer(self, request: web.Request) -> web.Response:
        from halfsec.server.admission import origin_allowed

        server = self.server
        opt = server.options
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, opt.allow_origins):
            return _fail(
                403, f"origin {origin} is not allowed; start the server with --allow-origin"
            )
        raw = await request.content.read(MAX_SDP_BYTES + 1)
        if len(raw) > MAX_SDP_BYTES:
            return _fail(413, f"offer larger than {MAX_SDP_BYTES} bytes")
        try:
            body = json.loads(raw)
        except ValueError as e:
            return _fail(400, f"body is not JSON ({e}); send {{'sdp': ..., 'type': 'offer'}}")
        if not isinstance(body, dict):
            return _fail(400, "body must be a JSON object {'sdp': ..., 'type': 'offer'}")
        token = body.get("token")
        if isinstance(token, str) and "Authorization" not in request.headers:
            request = request.clone(headers={**request.headers, "Authorization": f"Bearer {token}"})
        if not server._authorized(request):
            return _fail(401, "missing or wrong token: 'Authorization: Bearer <token>' or 'token'")
        if server.session_count >= opt.max_sessions:
            return _fail(503, f"server busy: {opt.max_sessions} sessions already open")
        sdp, kind, tp = body.get("sdp"), body.get("type"), body.get("traceparent")
        if kind != "offer" or not isinstance(sdp, str) or not sdp.strip():
            return _fail(400, "expected {'sdp': <non-empty string>, 'type': 'offer'}")
        if tp is not None and not valid_traceparent(tp):
            return _fail(400, f"traceparent {tp!r} is not W3C version 00")
        sess = RtcSession(self, tp)
        self.sessions[sess.session_id] = sess
        try:
            answer = await asyncio.wait_for(sess.negotiate(sdp), timeout=10.0)
        except Exception as e:  # aiortc raises many types for bad SDP; all mean "bad offer"
            await sess.end("bad offer")
            log.info("rejected offer: %s: %s", type(e).__name__, e)
            return _fail(400, f"malformed or unusable SDP offer: {type(e).__name__}: {e}")
        log.info("webrtc session %s started", sess.session_id)
        return web.json_response({"sdp": answer, "type": "answer", "session_id": sess.session_id})

    async def shutdown(self, app: web.Application) -> None:
        for sess in list(self.sessions.values()):
            await sess.end("server shutting down")


def _fail(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def wait_until(pred: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``pred`` every 20 ms (test and client helper)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


__all__ = ["ReplyTrack", "RtcSession", "WebRtcGateway", "wait_until"]
