"""The ``/ws`` endpoint: protocol v1 over one WebSocket per conversation.

The upgrade is admitted (token, Origin, session cap) before anything else, every
malformed message becomes an ``error`` event rather than an exception, and each
connection runs in its own handler with its own try/except, so a bad or vanished client
can only ever end its own session.  Client audio is PCM16 at any rate (resampled to
16 kHz) or Opus packets through the jitter buffer; reply audio is HSA1 PCM sent as soon
as it is produced, or HSO1 Opus paced in real time (``docs/protocol.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from halfsec import FRAME_MS, INTERNAL_RATE
from halfsec.audio.io import pcm16_from_bytes
from halfsec.audio.resample import LowDelayResampler
from halfsec.clock import now_ns
from halfsec.errors import AudioInputError
from halfsec.server.client_socket import ClientSocket, client_messages
from halfsec.server.connection import ClientConnection, SessionServices
from halfsec.server.resume import ResumeError, sealer_from_key
from halfsec.wire.audio_packets import decode_opus_in, encode_audio
from halfsec.wire.protocol import (
    AUDIO_BEFORE_START,
    Ping,
    PlaybackDone,
    ProtocolError,
    SessionEnd,
    SessionStart,
    TraceContext,
    context_event,
    parse_client_message,
    pong_event,
)
from halfsec.wire.realtime_audio import PacedOpusOut, send_paced_opus

log = logging.getLogger("halfsec.serve")


class WebSocketConnection(ClientConnection):
    """One conversation on one WebSocket."""

    def __init__(
        self,
        services: SessionServices,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None = None,
    ) -> None:
        super().__init__(services)
        self.socket = ClientSocket(ws, transport, services.options.write_timeout_s)
        self.resampler: LowDelayResampler | None = None
        self._pacer: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._sealer = sealer_from_key(services.options.resume_key)
        """Signs the ``context`` event after each answered turn (None: no resume key)."""

    # -- output (ClientConnection) --------------------------------------------------------
    async def send_json(self, obj: dict[str, Any]) -> None:
        await self.socket.send_json(obj)

    async def send_reply_audio(self, turn_id: int, pcm: np.ndarray) -> None:
        if self.socket.closed:
            return
        if self.paced_out is not None:
            self.paced_out.put(turn_id, pcm)  # sent by ``_send_paced_opus`` in real time
            return
        # The header carries the moment the packet is handed to the socket; the turn's
        # ``send`` span ends at the same stamp, so trace and bench agree.
        t = await self.socket.send_stamped(lambda t: encode_audio(turn_id, t, pcm))
        if t is not None and self.recorder is not None:
            self.recorder.audio_sent(turn_id, t)

    def reply_complete(self, turn_id: int) -> None:
        """The turn is answered: send the conversation so far, sealed, so the client can
        resume it on another server (``server.resume``).  Playback needs nothing: only
        the client knows when it played the reply's last sample (``playback.done``)."""
        if self._sealer is not None and self.session is not None and not self.closing:
            state = self.session.dialogue
            sealed = self._sealer.seal(state, self.services.config.logic.domain, self.session_id)
            ev = context_event(
                turn_id, now_ns(), sealed["token"], sealed["expires_at"], state.turns
            )
            self.supervise(self.send_json(ev), f"context-{self.session_id}")

    async def end_after_fatal_error(self) -> None:
        await self.socket.close(WSCloseCode.INTERNAL_ERROR, b"fatal error")

    async def shutdown(self) -> None:
        self.closing = True
        await self.socket.close(WSCloseCode.GOING_AWAY, b"server shutting down")

    async def _send_paced_opus(self) -> None:
        """Send queued reply audio as one HSO1 Opus packet per 20 ms slot."""
        assert self.paced_out is not None
        await send_paced_opus(
            self.paced_out,
            self.socket.send_stamped,
            lambda: self.socket.closed,
            self.is_cancelled,
            self._audio_sent,
        )

    def _audio_sent(self, turn_id: int, t_ns: int) -> None:
        if self.recorder is not None:
            self.recorder.audio_sent(turn_id, t_ns)

    # -- input --------------------------------------------------------------------------
    async def serve(self) -> None:
        """Receive loop: until the client leaves, times out or ends the session."""
        opt = self.services.options
        messages = client_messages(
            self.socket,
            opt,
            started=lambda: self.session is not None,
        )
        async with contextlib.aclosing(messages):
            async for msg in messages:
                if msg.type == WSMsgType.TEXT:
                    if await self._on_text(msg.data):
                        return
                else:
                    await self._on_binary(msg.data)

    async def _on_text(self, text: str) -> bool:
        """Handle one JSON message; returns whether the session is over."""
        try:
            m = parse_client_message(text)
        except ProtocolError as e:
            await self.error(e.code, e.message, fatal=e.fatal)
            return e.fatal
        if isinstance(m, Ping):
            await self.send_json(pong_event(m, now_ns()))
        elif isinstance(m, SessionStart):
            if self.session is not None:
                await self.error("already_started", "session.start was already received")
            else:
                await self._start(m)
        elif isinstance(m, TraceContext):
            self.next_traceparent = m.traceparent
        elif isinstance(m, PlaybackDone):
            if self.session is None:
                await self.error("not_started", "playback.done received before session.start")
            else:
                self.playback_ended(m.turn_id)
        elif isinstance(m, SessionEnd):
            await self.socket.close(WSCloseCode.OK, b"session.end")
            return True
        return False

    async def _start(self, m: SessionStart) -> None:
        session = self.open_voice_session(opus_input=m.encoding == "opus")
        refused = self._resume(m.resume) if m.resume is not None else None
        output_rate = session.output_rate
        # Not soxr's stream: fed 20 ms chunks it holds 48 kHz input back 20-40 ms (the
        # browser page sends its AudioContext rate); HQ with 3 ms of look-ahead is within
        # 7 LSB of resampling the whole recording at once.
        self.resampler = LowDelayResampler(
            m.sample_rate, INTERNAL_RATE, quality="HQ", aligned=True
        )  # aligned: each 20 ms chunk completes its own session frame
        self.next_traceparent = m.traceparent
        if m.output_encoding == "opus":
            self.paced_out = PacedOpusOut(output_rate)
            self._pacer = self.supervise(self._send_paced_opus(), f"opus-{self.session_id}")
        log.info(
            "session %s started (%d Hz, %s in, %s out)",
            self.session_id,
            m.sample_rate,
            m.encoding,
            m.output_encoding,
        )
        started = self.services.session_started(
            self.session_id,
            input_sample_rate=m.sample_rate,
            encoding=m.encoding,
            output_encoding=m.output_encoding,
        )
        if m.resume is not None:
            started["resumed"] = refused is None
        # Sent here, not by the sender task: ``session.started`` precedes the answer to
        # anything the client sends after ``session.start`` (a ping's pong included).
        await self.send_json(started)
        if refused is not None:  # after session.started: the session is on, only fresh
            await self.error(refused.code, refused.message)
        self._sender = self.supervise(self.run_sender(None), f"send-{self.session_id}")

    def _resume(self, token: object) -> ResumeError | None:
        """Continue the conversation sealed in ``token``; why not, if it cannot be."""
        assert self.session is not None
        if self._sealer is None:
            return ResumeError(
                "resume_unavailable",
                "this server has no --resume-key, so it cannot resume a conversation; "
                "the session starts fresh",
            )
        try:
            state, payload = self._sealer.open(token, self.services.config.logic.domain)
        except ResumeError as e:
            return e
        self.session.dialogue = state
        log.info(
            "session %s resumes session %s (%d turns)",
            self.session_id,
            payload.get("session"),
            state.turns,
        )
        return None

    async def _on_binary(self, data: bytes) -> None:
        if self.session is None or self.resampler is None:
            await self.error("not_started", AUDIO_BEFORE_START)
            return
        if self.inbound is not None:
            try:
                seq, ts, packet = decode_opus_in(data)
            except ProtocolError as e:
                await self.error(e.code, e.message)
                return
            if await self._over_rate(FRAME_MS):
                return
            problem = self.inbound.push(seq, ts, packet, report_refusal=False)
            if problem is not None:
                await self.error("bad_audio", f"{problem}; the frame is concealed as lost")
            if self.inbound.error is not None:
                raise self.inbound.error
            return
        try:
            pcm = pcm16_from_bytes(data, max_bytes=self.services.options.max_message_bytes)
        except AudioInputError as e:
            await self.error("bad_audio", f"{e}; frames must be 16-bit little-endian mono PCM")
            return
        if await self._over_rate(pcm.size * 1e3 / self.resampler.in_rate):
            return
        pcm = self.resampler.process(pcm)
        if pcm.size:
            # Waits while the client's events are not being sent (back-pressure): a
            # client that does not read stops being read.
            await self.session.push(pcm)

    async def _over_rate(self, audio_ms: float) -> bool:
        """Whether this audio is refused by the real-time admission (and say so, at most
        once a second)."""
        refused = self.audio_budget.rejection(audio_ms)
        if refused is None:
            return False
        if refused.message is not None:
            await self.error(refused.code, refused.message)
        return True

    # -- end ----------------------------------------------------------------------------
    async def close(self) -> None:
        """Tidy up after the receive loop, whatever ended it."""
        self.closing = True
        self.services.connections.pop(self.session_id, None)
        if self._pacer is not None:
            self._pacer.cancel()
        # Cancels the turn in flight (client gone mid-turn) and ends events().
        await self.close_session()
        if self._sender is not None:
            try:
                await asyncio.wait_for(self._sender, timeout=2.0)
            except (TimeoutError, asyncio.CancelledError, Exception):
                self._sender.cancel()
        await self.socket.close()
        log.info("session %s closed", self.session_id)


class WebSocketEndpoint:
    """``GET /ws``: admit, upgrade, and run one ``WebSocketConnection`` to its end."""

    def __init__(self, services: SessionServices) -> None:
        self.services = services

    async def handle(self, request: web.Request) -> web.StreamResponse:
        services = self.services
        refusal = services.refusal(request)
        if refusal is not None:
            return web.Response(status=refusal.status, text=refusal.reason)
        ws = web.WebSocketResponse(max_msg_size=services.options.max_message_bytes * 4)
        await ws.prepare(request)
        conn = WebSocketConnection(services, ws, request.transport)
        services.connections[conn.session_id] = conn
        try:
            await conn.serve()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one session's bug must never reach the others
            log.exception("session %s failed", conn.session_id)
            await conn.error("internal_error", f"{type(e).__name__}: {e}", fatal=True)
        finally:
            await conn.close()
        return ws
