"""WebRTC transport (aiortc): ``POST /webrtc/offer`` -> one ``VoiceSession`` per peer.

Signaling is one HTTP round trip (no trickle): the client gathers its candidates, POSTs
``{"sdp", "type": "offer", "traceparent"?, "token"?}`` and gets ``{"sdp", "type":
"answer", "session_id"}`` back, under the same token / Origin / ``--max-sessions`` rules
as ``/ws``.  The client's offer carries one audio track (the microphone) and a data
channel labelled ``events``; the events channel carries exactly the WebSocket protocol's
JSON events (and accepts ``ping``, ``trace.context``, ``playback.done`` and
``session.end``).

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
FEC, but its sender also accepts pre-encoded ``av.Packet`` s.  ``ReplyTrack`` (in
``reply_track``) sends reply audio encoded by ``wire.opus.OpusEncoder`` (mono, voip,
24 kbit/s, in-band FEC with an expected-loss hint), one packet per 20 ms on a monotonic
grid while a reply plays.  Between replies nothing is sent (DTX): a reply's first packet leaves the
moment it is encoded instead of waiting for the next 20 ms slot of a silent stream
(docs/PERFORMANCE.md section 4 has the before and after), and its timestamp jump tells
the receiver the sender paused; our ``JitterBuffer`` keeps its jitter estimate across
such pauses, so a reply after seconds of silence still starts with the margin the link
needs.  An ``interruption`` drops what is queued.  Each turn's first packet is
announced on the events channel as ``reply.audio`` with its RTP timestamp, so a client
can tell which turn it is hearing and when the server let it go (the WebRTC counterpart
of the ``HSA1`` header's ``turn_id``/``t_server_ns``).

When does the client stop hearing a reply?  After the reply's last packet left, plus the
delay the client's jitter buffer holds it.  The server cannot see that buffer, but its
own receive buffer measures the same link, so its target delay stands in for the
client's: the session is told the reply's playback ends at ``last packet sent + 20 ms +
jitter estimate`` (``playback_end_ns``), and speech after that is a new turn, not a
barge-in.  A client that sends ``playback.done`` on the events channel knows better and
overrides it.

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
from typing import Any

import numpy as np
from aiohttp import web
from aiortc import (
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from halfsec import FRAME_MS
from halfsec.clock import now_ns
from halfsec.server.admission import is_loopback, presented_token
from halfsec.server.connection import ClientConnection, SessionServices
from halfsec.server.reply_track import ReplyTrack
from halfsec.wire.protocol import (
    Ping,
    PlaybackDone,
    ProtocolError,
    SessionEnd,
    SessionStart,
    TraceContext,
    load_json,
    parse_client_message,
    pong_event,
    valid_traceparent,
)
from halfsec.wire.realtime_audio import InboundAudio, PacedOpusOut
from halfsec.wire.rtc import (
    EVENTS_LABEL,
    intercept_rtp,
    offer_problem,
    opus_payload_type,
    prefer_opus,
    restrict_ice_hosts,
    rtc_configuration,
)

log = logging.getLogger("halfsec.webrtc")

MAX_SDP_BYTES = 64 * 1024
BODY_TIMEOUT_S = 10.0
"""An offer's body must arrive within this (a client trickling it holds a handler)."""
MAX_EVENTS_BUFFERED = 1 << 20
"""Events queued on the data channel beyond which the client is taken to have stopped
reading (the WebRTC counterpart of the WebSocket's write timeout)."""


def playback_end_ns(last_sent_ns: int, jitter_delay_ms: float) -> int:
    """When the client hears the end of a reply whose last packet left at
    ``last_sent_ns``: that packet's own 20 ms, after its jitter buffer held it for
    ``jitter_delay_ms`` (see the module docstring for why the server's own estimate)."""
    return last_sent_ns + int((FRAME_MS + jitter_delay_ms) * 1e6)


class WebRtcConnection(ClientConnection):
    """One peer connection = one conversation."""

    def __init__(self, services: SessionServices, traceparent: str | None) -> None:
        super().__init__(services)
        self.pc = RTCPeerConnection(rtc_configuration())
        self.open_voice_session(opus_input=True)
        assert self.inbound is not None
        self.audio_in: InboundAudio = self.inbound
        # A reply's first 3 frames leave at once (``PacedOpusOut.talkspurt_frames``).
        self.out = PacedOpusOut(services.config.audio.output_rate, talkspurt_frames=3)
        self.paced_out = self.out
        self.track = ReplyTrack(self.out, self.is_cancelled, self._on_packet_sent)
        self.channel: RTCDataChannel | None = None
        self._pending: list[str] = []
        self.next_traceparent = traceparent
        self.opus_pt: int | None = None
        self.foreign_packets = 0
        self.created = time.monotonic()
        self.last_rtp = 0.0
        self._last_sent_ns: dict[int, int] = {}
        """Turn -> when its latest reply packet left."""
        self._complete_turns: set[int] = set()
        """Turns whose ``reply.done`` went out: their latest packet may be their last."""

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

        problem = offer_problem(offer_sdp)
        if problem is not None:
            raise ValueError(problem)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        if not any(t.kind == "audio" for t in pc.getTransceivers()):
            raise ValueError("the offer has no audio m-line (add the microphone track)")
        prefer_opus(pc)
        self.track.sender = pc.addTrack(self.track)
        answer = await pc.createAnswer()
        # Checked before setLocalDescription, which starts aiortc's connect task: a peer
        # connection closed while that task runs makes it raise AttributeError into the
        # loop (an aiortc race the fuzz suite found on offers refused here).
        self.opus_pt = opus_payload_type(answer.sdp)
        if self.opus_pt is None:
            raise ValueError("the offer does not allow Opus at 48 kHz")
        await pc.setLocalDescription(answer)
        sdp = pc.localDescription.sdp
        started = self.services.session_started(
            self.session_id,
            input_sample_rate=48_000,
            encoding="opus",
            output_encoding="opus",
            transport="webrtc",
        )
        self.supervise(self.run_sender(started), f"rtc-send-{self.session_id}")
        self.supervise(self._watchdog(), f"rtc-wd-{self.session_id}")
        return str(sdp)

    # -- media in -----------------------------------------------------------------------
    def _on_rtp(self, seq: int, ts: int, payload: bytes, pt: int) -> None:
        if self.closing:
            return
        if pt != self.opus_pt or not payload:
            self.foreign_packets += 1
            return
        self.last_rtp = time.monotonic()
        refused = self.audio_budget.rejection(FRAME_MS)
        if refused is not None:
            if refused.message is not None:
                self.supervise(self.error(refused.code, refused.message), "rtc-rate")
            return
        # A packet refused at the door is reported with the undecodable ones (once a
        # second) and concealed as lost.
        self.audio_in.push(seq, ts, payload)

    # -- output (ClientConnection) --------------------------------------------------------
    async def send_json(self, obj: dict[str, Any]) -> None:
        text = json.dumps(obj)
        ch = self.channel
        if ch is not None and ch.readyState == "open" and not self._pending:
            if ch.bufferedAmount > MAX_EVENTS_BUFFERED:
                # SCTP queues without bound for a peer that stopped reading the channel.
                if not self.closing:
                    self.supervise(self.end("the client stopped reading events"), "rtc-end")
                return
            with contextlib.suppress(Exception):
                ch.send(text)
        else:
            self._pending.append(text)

    async def send_reply_audio(self, turn_id: int, pcm: np.ndarray) -> None:
        self.out.put(turn_id, pcm)  # sent by ``ReplyTrack.recv`` in real time

    def reply_complete(self, turn_id: int) -> None:
        self._complete_turns.add(turn_id)
        last = self._last_sent_ns.get(turn_id)
        if last is not None:
            self._report_playback_end(turn_id, last)
        elif self.out.queued_ms == 0:
            self.playback_ended(turn_id)  # a reply without audio: nothing to hear

    async def end_after_fatal_error(self) -> None:
        await self.end("fatal error")

    async def shutdown(self) -> None:
        await self.end("server shutting down")

    def _on_packet_sent(self, turn_id: int, pts: int, t_ns: int, first: bool) -> None:
        self._last_sent_ns[turn_id] = t_ns
        if turn_id in self._complete_turns:
            # Each later packet moves the end on; the last one's report stands.
            self._report_playback_end(turn_id, t_ns)
        if first:
            self._announce_reply_audio(turn_id, pts, t_ns)

    def _report_playback_end(self, turn_id: int, last_sent_ns: int) -> None:
        jitter_ms = self.audio_in.buffer.target_delay_ms
        self.playback_ended(turn_id, playback_end_ns(last_sent_ns, jitter_ms))

    def _announce_reply_audio(self, turn_id: int, pts: int, t_ns: int) -> None:
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

    # -- events channel -----------------------------------------------------------------
    def _attach(self, channel: RTCDataChannel) -> None:
        self.channel = channel

        @channel.on("open")
        def on_open() -> None:
            self._flush()

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            if not self.closing:
                self.supervise(self._on_message(message), f"rtc-msg-{self.session_id}")

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
        elif isinstance(m, PlaybackDone):
            self.playback_ended(m.turn_id)
        elif isinstance(m, SessionStart):
            await self.error("already_started", "a WebRTC session starts with its offer")
        elif isinstance(m, SessionEnd):
            await self.end("session.end")

    # -- lifecycle ----------------------------------------------------------------------
    async def _watchdog(self) -> None:
        opt = self.services.options
        while not self.closing:
            await asyncio.sleep(0.5)
            t = time.monotonic()
            if self.audio_in.error is not None:
                log.error(
                    "session %s: audio input failed: %r", self.session_id, self.audio_in.error
                )
                await self.error("internal_error", str(self.audio_in.error), fatal=True)
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
        self.services.connections.pop(self.session_id, None)
        self._flush()
        await self.close_session()
        self.track.stop()
        self.cancel_tasks()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), timeout=3.0)


class WebRtcEndpoint:
    """``POST /webrtc/offer``: admit, negotiate, and keep the peer session running."""

    def __init__(self, services: SessionServices) -> None:
        self.services = services
        if is_loopback(services.options.host):
            restrict_ice_hosts(["127.0.0.1"])

    @property
    def sessions(self) -> dict[str, WebRtcConnection]:
        """Open WebRTC sessions (the server's registry holds every transport's)."""
        return {
            sid: c
            for sid, c in self.services.connections.items()
            if isinstance(c, WebRtcConnection)
        }

    async def offer(self, request: web.Request) -> web.Response:
        """Admit and answer one offer.  Order matters: nothing a refused client sends is
        parsed.  Origin first (a page that may not ask), then a token presented outside
        the body (header or ``?token=``) before the body is read; then the whole body,
        chunk by chunk (413 over ``MAX_SDP_BYTES``), parsed as JSON that cannot blow the
        stack (400), and a token in the body checked before the SDP reaches aiortc."""
        services = self.services
        bad_origin = services.options.admission.origin_refusal(request)
        if bad_origin is not None:  # before reading a body from a page that may not ask
            services.metrics.refusal(bad_origin.status)
            return _fail(bad_origin.status, bad_origin.reason)
        outside = presented_token(request)
        if outside is not None:
            refusal = services.refusal(request)
            if refusal is not None:
                return _fail(refusal.status, refusal.reason)
        if (request.content_length or 0) > MAX_SDP_BYTES:
            return _fail(413, f"offer larger than {MAX_SDP_BYTES} bytes")
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                raw = await read_body(request, MAX_SDP_BYTES)
        except TimeoutError:
            return _fail(408, f"the offer's body did not arrive within {BODY_TIMEOUT_S:g} s")
        if raw is None:
            return _fail(413, f"offer larger than {MAX_SDP_BYTES} bytes")
        try:
            body = load_json(raw, "the body")
        except ProtocolError as e:
            return _fail(400, f"{e.message}; send {{'sdp': ..., 'type': 'offer'}}")
        if not isinstance(body, dict):
            return _fail(400, "body must be a JSON object {'sdp': ..., 'type': 'offer'}")
        token = body.get("token")
        in_body = token if isinstance(token, str) and outside is None else None
        refusal = services.refusal(request, in_body)
        if refusal is not None:
            return _fail(refusal.status, refusal.reason)
        sdp, kind, tp = body.get("sdp"), body.get("type"), body.get("traceparent")
        if kind != "offer" or not isinstance(sdp, str) or not sdp.strip():
            return _fail(400, "expected {'sdp': <non-empty string>, 'type': 'offer'}")
        if tp is not None and not valid_traceparent(tp):
            return _fail(400, f"traceparent {tp!r} is not W3C version 00")
        sess = WebRtcConnection(services, tp)
        services.connections[sess.session_id] = sess
        try:
            answer = await asyncio.wait_for(sess.negotiate(sdp), timeout=10.0)
        except Exception as e:  # aiortc raises many types for bad SDP; all mean "bad offer"
            await sess.end("bad offer")
            log.info("rejected offer: %s: %s", type(e).__name__, e)
            return _fail(400, f"malformed or unusable SDP offer: {type(e).__name__}: {e}")
        log.info("webrtc session %s started", sess.session_id)
        return web.json_response({"sdp": answer, "type": "answer", "session_id": sess.session_id})


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole request body, or None when it is longer than ``limit`` bytes (one
    ``content.read(n)`` returns only what has arrived: the first chunk)."""
    buf = bytearray()
    while chunk := await request.content.read(limit + 1 - len(buf)):
        buf += chunk
        if len(buf) > limit:
            return None
    return bytes(buf)


def _fail(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
