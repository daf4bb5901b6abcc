"""The ``/twilio`` endpoint: phone calls through Twilio Media Streams.

A call whose TwiML says ``<Connect><Stream url="wss://HOST/twilio"/></Connect>`` opens
one WebSocket here; ``wire.twilio`` has the messages.  The call becomes a
``ClientConnection`` like any other transport, so the conversation, the order of events,
barge-in and the ``--inject-delay-ms`` delay line are ``connection.py``'s; this module
only says how a phone line's bytes come and go:

* in: ``media`` (mu-law, 8 kHz, 20 ms) decoded and resampled to 16 kHz with
  ``LowDelayResampler`` (3 ms of delay; soxr's own stream would hold ~120 ms back);
  only the ``inbound`` track is the caller, ``outbound`` is our own reply;
* out: reply audio resampled to 8 kHz per turn, mu-law coded and sent as 20 ms
  ``media`` messages the moment it is produced (Twilio plays them from its buffer in
  order); after a turn's ``reply.done``, the resampler's tail and a ``mark`` named
  after the turn.  Twilio sends a mark back when the caller has heard everything before
  it, so the mark's echo is the turn's playback end (``playback_ended``): speech before
  it is a barge-in, speech after it a new turn;
* barge-in: the session's ``interruption`` becomes ``clear`` (Twilio drops what it still
  holds and returns its pending marks).

Admission is ``/ws``'s: Origin and the session cap are checked before the upgrade; the
token too when the request carries one, otherwise it must come as the custom parameter
``token`` of ``start`` (Twilio sets no headers, and a ``<Stream>`` URL may carry no
query string).  The session counts against ``--max-sessions`` from ``start`` on.

Strict: Twilio itself never sends a malformed message, so anything off-protocol (bad
JSON, unknown event, media before ``start``, a foreign ``streamSid``, bad base64, a
binary message, another media format) means the peer is not Twilio or the stream is
broken; it is logged and the socket closed with code 1008 and the reason (plus an
``error`` event first on a lab stream).  A connection's failure never leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from halfsec import INTERNAL_RATE
from halfsec.audio.resample import LowDelayResampler
from halfsec.clock import now_ns
from halfsec.server.client_socket import ClientSocket, client_messages
from halfsec.server.connection import ClientConnection, SessionServices
from halfsec.turn.options import TurnOptions
from halfsec.wire.mulaw import MULAW_RATE, mulaw_decode, mulaw_encode
from halfsec.wire.protocol import (
    Ping,
    ProtocolError,
    TraceContext,
    error_event,
    parse_client_message,
    pong_event,
)
from halfsec.wire.twilio import (
    LAB_PARAMETER,
    MEDIA_CHUNK_BYTES,
    TOKEN_PARAMETER,
    Connected,
    Dtmf,
    LabMessage,
    Mark,
    Media,
    Start,
    Stop,
    TwilioProtocolError,
    clear_message,
    lab_message,
    mark_message,
    media_message,
    parse_twilio_message,
    reply_mark_name,
)

log = logging.getLogger("halfsec.twilio")

MAX_CLOSE_REASON_BYTES = 123
"""A WebSocket close frame's reason is at most 123 bytes (RFC 6455)."""
PHONE_VAD_THRESHOLD = 0.3
PHONE_VAD_NEG_THRESHOLD = 0.2
PHONE_PREROLL_MS = 800.0
"""Audio kept before the detected start of speech on a call (wideband: ``preroll_ms``,
300 ms).  Even at 0.3, Silero finds a narrowband utterance's start late: over
``twilio_bench.py --limit 16`` the call's stream of "in being comparatively modern." held
420 ms less audio than the WebSocket's and its transcript began "Comparatively modern."
(a soft onset under the threshold for ~0.4 s).  The extra audio costs the final nothing
that matters (Whisper base's window is at least 7 s) and adds no latency."""


def phone_turn_options(turn: TurnOptions) -> TurnOptions:
    """The configured turn options with VAD thresholds for telephone audio.

    Silero VAD (16 kHz) is far less sure of speech it hears through a phone's 300-3400 Hz
    band: over 30 shared recordings, 64 % of the speech windows reach 0.5 after
    ``telephone_band`` and mu-law, against 98 % of the wideband ones, and some utterances
    fall apart into fragments (premature ends of turn, cut transcripts).  At 0.3 it is
    89 %, while the loudest window of the silences stays under 0.1 (p95), so the
    thresholds drop to 0.3 / 0.2 (hysteresis kept); lower configured ones stay.  The
    preroll grows to ``PHONE_PREROLL_MS`` (a longer configured one stays)."""
    return dataclasses.replace(
        turn,
        threshold=min(turn.threshold, PHONE_VAD_THRESHOLD),
        neg_threshold=min(turn.neg_threshold, PHONE_VAD_NEG_THRESHOLD),
        preroll_ms=max(turn.preroll_ms, PHONE_PREROLL_MS),
    )


def close_reason(code: str, message: str) -> bytes:
    return f"{code}: {message}".encode()[:MAX_CLOSE_REASON_BYTES]


class TwilioSocket(ClientSocket):
    """The call's WebSocket; every error on it ends the call (see the module docstring)."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None = None,
        write_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(ws, transport, write_timeout_s)
        self.stream_sid: str | None = None
        self.lab_events = False
        """The stream asked for the lab extension (``halfsec_events=1``)."""

    async def send_lab(self, body: dict[str, Any]) -> None:
        if self.lab_events and self.stream_sid is not None:
            await self.send_str(lab_message(self.stream_sid, body))

    async def error(self, code: str, message: str, fatal: bool = True) -> None:
        log.info("twilio stream %s closed: %s: %s", self.stream_sid, code, message)
        await self.send_lab(error_event(code, message, now_ns(), fatal=True))
        await self.close(WSCloseCode.POLICY_VIOLATION, close_reason(code, message))


class TwilioConnection(ClientConnection):
    """One phone call: a Media Stream from ``start`` to ``stop``."""

    can_pause_reply = False  # see ClientConnection: barge-in cancels at once on a phone

    def __init__(
        self, services: SessionServices, socket: TwilioSocket, request: web.Request
    ) -> None:
        super().__init__(services)
        self.socket = socket
        self.request = request
        self.stream: Start | None = None
        self.upsampler = LowDelayResampler(MULAW_RATE, INTERNAL_RATE, aligned=True)
        """Its first output starts with the lead that lets each 20 ms ``media`` chunk
        complete its own frame (``LowDelayResampler.aligning_lead``: without it every frame
        of a call was processed 20 ms late)."""
        self._downsamplers: dict[int, LowDelayResampler] = {}
        """Per turn: reply audio at the session's rate -> 8 kHz (flushed at reply.done)."""
        self._marks: dict[str, int] = {}
        """Marks sent and not yet played back: name -> turn id."""
        self.outbound_chunks = 0
        """``media`` of the outbound track (our own reply, forked back): not the caller."""
        self._sender: asyncio.Task[None] | None = None

    # -- output (ClientConnection) --------------------------------------------------------
    async def send_json(self, obj: dict[str, Any]) -> None:
        """The session's events as a phone line knows them: ``interruption`` is
        ``clear``, ``reply.done`` is the reply's tail and a ``mark``; a lab stream gets
        every event wrapped as well."""
        kind, turn_id = obj.get("type"), int(obj.get("turn_id", 0) or 0)
        sid = self.socket.stream_sid
        if sid is None:
            return
        if kind == "interruption":
            self._downsamplers.pop(turn_id, None)
            await self.socket.send_str(clear_message(sid))
        reply_over = kind == "reply.done" and not self.is_cancelled(turn_id)
        if reply_over:
            rs = self._downsamplers.pop(turn_id, None)
            if rs is not None:
                await self._send_media(turn_id, rs.flush())
        await self.socket.send_lab(obj)
        if reply_over:
            name = reply_mark_name(turn_id)
            self._marks[name] = turn_id
            await self.socket.send_str(mark_message(sid, name))
        if kind == "error":
            log.info("twilio stream %s: %s: %s", sid, obj.get("code"), obj.get("message"))

    async def send_reply_audio(self, turn_id: int, pcm: np.ndarray) -> None:
        rs = self._downsamplers.get(turn_id)
        if rs is None:
            rs = self._downsamplers[turn_id] = LowDelayResampler(
                self.services.config.audio.output_rate, MULAW_RATE
            )
        await self._send_media(turn_id, rs.process(pcm))

    async def _send_media(self, turn_id: int, pcm: np.ndarray) -> None:
        sid = self.socket.stream_sid
        if pcm.size == 0 or sid is None or self.socket.closed:
            return
        payload = mulaw_encode(pcm)
        t = now_ns()
        # The lab's stand-in for the HSA1 header: which turn, sent when.
        await self.socket.send_lab(
            {"type": "reply.audio", "turn_id": turn_id, "t_server_ns": t, "samples": pcm.size}
        )
        for i in range(0, len(payload), MEDIA_CHUNK_BYTES):
            await self.socket.send_str(media_message(sid, payload[i : i + MEDIA_CHUNK_BYTES]))
        if self.recorder is not None:
            self.recorder.audio_sent(turn_id, t)

    def reply_complete(self, turn_id: int) -> None:
        """Nothing to do: the ``mark`` sent after ``reply.done`` comes back from Twilio
        when the caller has heard the reply, and that is the playback end."""

    async def end_after_fatal_error(self) -> None:
        await self.socket.close(WSCloseCode.INTERNAL_ERROR, b"fatal error")

    async def shutdown(self) -> None:
        self.closing = True
        await self.socket.close(WSCloseCode.GOING_AWAY, b"server shutting down")

    # -- input --------------------------------------------------------------------------
    async def serve(self) -> None:
        """Receive loop: until Twilio stops the stream, hangs up, or breaks the protocol."""
        opt = self.services.options
        messages = client_messages(
            self.socket,
            opt,
            started=lambda: self.stream is not None,
        )
        async with contextlib.aclosing(messages):
            async for msg in messages:
                if msg.type != WSMsgType.TEXT:
                    await self.socket.error("bad_message", "Media Streams messages are JSON text")
                    return
                if await self._on_text(msg.data):
                    return

    async def _on_text(self, text: str) -> bool:
        """Handle one message; returns whether the stream is over."""
        try:
            m = parse_twilio_message(text)
        except TwilioProtocolError as e:
            await self.socket.error(e.code, e.message)
            return True
        if isinstance(m, Connected | Start):
            if self.stream is not None:
                await self.socket.error(
                    "already_started", f"{type(m).__name__.lower()} after start"
                )
                return True
            return await self._start(m) if isinstance(m, Start) else False
        if self.stream is None or self.session is None:
            await self.socket.error("not_started", f"{type(m).__name__.lower()} before start")
            return True
        if m.stream_sid != self.stream.stream_sid:
            await self.socket.error(
                "bad_message", f"streamSid {m.stream_sid!r} is not this stream's"
            )
            return True
        if isinstance(m, Media):
            return await self._on_media(m)
        elif isinstance(m, Mark):
            turn_id = self._marks.pop(m.name, None)
            if turn_id is not None:
                self.playback_ended(turn_id)
        elif isinstance(m, Dtmf):
            log.info("twilio stream %s: key %s pressed", self.stream.stream_sid, m.digit)
        elif isinstance(m, LabMessage):
            return await self._on_lab(m)
        elif isinstance(m, Stop):
            await self.socket.close(WSCloseCode.OK, b"stop")
            return True
        return False

    async def _start(self, m: Start) -> bool:
        refusal = self.services.refusal(self.request, m.custom_parameters.get(TOKEN_PARAMETER))
        if refusal is not None:
            await self.socket.error("refused", f"{refusal.status}: {refusal.reason}")
            return True
        self.stream = m
        self.socket.stream_sid = m.stream_sid
        self.socket.lab_events = m.custom_parameters.get(LAB_PARAMETER) == "1"
        self.open_voice_session(
            opus_input=False, turn=phone_turn_options(self.services.config.turn), phone=True
        )
        self.services.connections[self.session_id] = self
        log.info("twilio session %s started (call %s)", self.session_id, m.call_sid)
        started = self.services.session_started(
            self.session_id,
            transport="twilio",
            input_sample_rate=MULAW_RATE,
            encoding="mulaw",
            output_encoding="mulaw",
            stream_sid=m.stream_sid,
            call_sid=m.call_sid,
        )
        started["output_sample_rate"] = MULAW_RATE  # what the caller hears, not the session's
        self._sender = self.supervise(self.run_sender(started), f"tw-{self.session_id}")
        return False

    async def _on_media(self, m: Media) -> bool:
        """Caller audio into the session; True when the stream must end (audio far
        faster than real time is not a phone line)."""
        if m.track != "inbound":
            self.outbound_chunks += 1
            return False
        refused = self.audio_budget.rejection(len(m.payload) * 1000 / MULAW_RATE)
        if refused is not None:
            await self.socket.error(refused.code, refused.message or "audio faster than real time")
            return True
        assert self.session is not None
        pcm = self.upsampler.process(mulaw_decode(m.payload))
        if pcm.size:
            await self.session.push(pcm)
        return False

    async def _on_lab(self, m: LabMessage) -> bool:
        if not self.socket.lab_events:
            await self.socket.error(
                "bad_message", f"wrapped messages need the custom parameter {LAB_PARAMETER}=1"
            )
            return True
        try:
            inner = parse_client_message(json.dumps(m.body))
        except ProtocolError as e:
            await self.socket.error(e.code, e.message)
            return True
        if isinstance(inner, Ping):
            await self.socket.send_lab(pong_event(inner, now_ns()))
        elif isinstance(inner, TraceContext):
            self.next_traceparent = inner.traceparent
        else:
            await self.socket.error(
                "bad_message", "a Media Stream wraps only ping and trace.context messages"
            )
            return True
        return False

    # -- end ----------------------------------------------------------------------------
    async def close(self) -> None:
        """Tidy up after the receive loop, whatever ended it."""
        self.closing = True
        self.services.connections.pop(self.session_id, None)
        await self.close_session()
        if self._sender is not None:
            try:
                await asyncio.wait_for(self._sender, timeout=2.0)
            except (TimeoutError, asyncio.CancelledError, Exception):
                self._sender.cancel()
        await self.socket.close()
        if self.stream is not None:
            log.info("twilio session %s closed", self.session_id)


class TwilioEndpoint:
    """``GET /twilio``: admit, upgrade, and run one ``TwilioConnection`` to its end."""

    def __init__(self, services: SessionServices) -> None:
        self.services = services

    async def handle(self, request: web.Request) -> web.StreamResponse:
        refusal = self.services.refusal(request)
        # 401 can wait: the token may still come as a custom parameter of ``start``.
        if refusal is not None and refusal.status != 401:
            return web.Response(status=refusal.status, text=refusal.reason)
        ws = web.WebSocketResponse(max_msg_size=self.services.options.max_message_bytes * 4)
        await ws.prepare(request)
        socket = TwilioSocket(ws, request.transport, self.services.options.write_timeout_s)
        conn = TwilioConnection(self.services, socket, request)
        try:
            await conn.serve()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one call's bug must never reach the others
            log.exception("twilio session %s failed", conn.session_id)
            await conn.socket.error("internal_error", f"{type(e).__name__}: {e}")
        finally:
            await conn.close()
        return ws
