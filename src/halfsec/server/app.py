"""WebSocket server: one ``VoiceSession`` per connection over engines loaded once.

The server is the pipeline's only network-facing surface, so it is written defensively:
it binds loopback unless a token protects it, checks the token and the browser Origin
before the WebSocket upgrade, caps message size, message rate, idle time and the number
of concurrent sessions, and turns every malformed message into an ``error`` event rather
than an exception.  Each connection runs in its own handler with its own try/except, so a
bad or vanished client can only ever end its own session.

``inject_delay_ms`` holds every reply-audio packet back before it is handed to the
socket.  It exists so the latency lab can prove it measures what it claims: a known delay
injected here must show up, to the millisecond, in the client's voice-to-voice numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from halfsec import INTERNAL_RATE
from halfsec.audio.io import pcm16_from_bytes
from halfsec.audio.resample import StreamResampler
from halfsec.clock import now_ns
from halfsec.config import HalfsecConfig
from halfsec.errors import AudioInputError, HalfsecError
from halfsec.frames import (
    EndOfTurn,
    ErrorFrame,
    Frame,
    Interruption,
    ReplyAudio,
    ReplyDone,
    SpeechStarted,
)
from halfsec.runtime.engines import Engines
from halfsec.runtime.session import VoiceSession
from halfsec.server.admission import RateLimiter, exposure_problem, origin_allowed
from halfsec.trace.setup import Tracing, configure_tracing
from halfsec.trace.turns import TurnTraceRecorder, engine_models
from halfsec.wire.protocol import (
    PROTOCOL_VERSION,
    Ping,
    ProtocolError,
    SessionEnd,
    SessionStart,
    TraceContext,
    decode_opus_in,
    encode_audio,
    encode_opus_out,
    error_event,
    frame_to_event,
    parse_client_message,
    pong_event,
    session_started_event,
)
from halfsec.wire.realtime_audio import InboundAudio, PacedOpusOut

log = logging.getLogger("halfsec.serve")


class ServeError(HalfsecError):
    """The server cannot start as configured (unsafe bind, bad option)."""


@dataclass(frozen=True, slots=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    """Shared secret: ``Authorization: Bearer <token>`` or ``?token=<token>``."""
    allow_origins: tuple[str, ...] = ()
    """Browser origins allowed to connect.  Empty: loopback origins only
    (``http://localhost:*``, ``http://127.0.0.1:*``).  ``*`` allows any origin."""
    max_sessions: int = 8
    max_message_bytes: int = 64 * 1024
    """Largest accepted client message.  Larger ones (up to 4x) get an ``error`` event;
    beyond that the WebSocket layer closes the connection (1009)."""
    max_messages_per_s: float = 200.0
    """Token bucket on client messages (burst = one second's worth).  A real-time client
    sends 50 frames/s; a flood is dropped with one ``rate_limited`` error per second."""
    idle_timeout_s: float = 30.0
    """A connection that sends nothing for this long is closed (a live mic never stops)."""
    start_timeout_s: float = 10.0
    """Time allowed between the upgrade and a valid ``session.start``."""
    inject_delay_ms: float = 0.0
    """Fault injector: delay each reply-audio packet by this much before sending."""
    trace: bool = False
    """Emit each committed turn's spans (``halfsec serve`` turns this on).  Off for the
    library default so embedding the server or testing it writes no files."""
    trace_file: str | None = None
    """JSON-lines span file; None: ``halfsec.trace.setup.default_trace_path``."""
    otlp_endpoint: str | None = None
    """OTLP/HTTP collector (``http://127.0.0.1:4318``); exported in batches off the loop."""

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ServeError(f"port {self.port} is out of range 0..65535 (0 = any free port)")
        if self.max_sessions < 1:
            raise ServeError("--max-sessions must be at least 1")
        if self.inject_delay_ms < 0:
            raise ServeError("--inject-delay-ms must be >= 0")
        if self.max_message_bytes < 1024:
            raise ServeError("max message size must be at least 1024 bytes")


def check_bind(options: ServerOptions) -> None:
    """Refuse to expose an unauthenticated voice endpoint beyond this machine."""
    problem = exposure_problem(options.host, options.token)
    if problem:
        raise ServeError(problem)


@dataclass
class _Conn:
    """Per-connection state; everything a handler needs to tidy up after itself."""

    ws: web.WebSocketResponse
    session_id: str
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: VoiceSession | None = None
    resampler: StreamResampler | None = None
    next_traceparent: str | None = None
    turn_traces: dict[int, str] = field(default_factory=dict)
    cancelled_turns: set[int] = field(default_factory=set)
    closing: bool = False
    recorder: TurnTraceRecorder | None = None
    inbound: InboundAudio | None = None
    """Opus input (``encoding: opus``): jitter buffer + FEC/PLC, paced into the session."""
    opus_out: PacedOpusOut | None = None
    """Opus reply audio (``output_encoding: opus``): paced 20 ms HSO1 packets."""
    pacer: asyncio.Task[None] | None = None

    async def send_json(self, obj: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        async with self.send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(json.dumps(obj))

    async def send_audio(self, turn_id: int, pcm: np.ndarray) -> None:
        if self.ws.closed:
            return
        if self.opus_out is not None:
            self.opus_out.put(turn_id, pcm)  # sent by ``_opus_pacer`` in real time
            return
        async with self.send_lock:
            # The header carries the moment the packet is handed to the socket; the
            # turn's ``send`` span ends at the same stamp, so trace and bench agree.
            t = now_ns()
            data = encode_audio(turn_id, t, pcm)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(data)
            if self.recorder is not None:
                self.recorder.audio_sent(turn_id, t)

    async def error(self, code: str, message: str, fatal: bool = False) -> None:
        await self.send_json(error_event(code, message, now_ns(), fatal=fatal))

    async def _opus_pacer(self) -> None:
        """Send queued reply audio as one HSO1 Opus packet per 20 ms slot."""
        out = self.opus_out
        assert out is not None
        seq = 0
        while not self.ws.closed:
            slot = await out.next_slot()
            if slot.packet is None or slot.turn_id in self.cancelled_turns:
                continue
            async with self.send_lock:
                t = now_ns()
                data = encode_opus_out(slot.turn_id, t, seq, slot.pts & 0xFFFFFFFF, slot.packet)
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.ws.send_bytes(data)
            seq += 1
            if self.recorder is not None:
                self.recorder.audio_sent(slot.turn_id, t)


class VoiceServer:
    """The aiohttp application around shared engines.  ``app`` is ready to run."""

    def __init__(
        self,
        engines: Engines,
        config: HalfsecConfig,
        options: ServerOptions | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.engines = engines
        self.config = config
        self.options = options or ServerOptions()
        # Tracing given by the caller is the caller's to shut down; one built from the
        # options is flushed and closed with the app (in a thread: a flush can wait on
        # an unreachable collector, the loop must not).
        self._own_tracing = tracing is None and self.options.trace
        self.tracing = tracing
        if self._own_tracing:
            self.tracing = configure_tracing(
                "halfsec-server",
                otlp_endpoint=self.options.otlp_endpoint,
                jsonl_path=self.options.trace_file,
            )
        self.models = engine_models(engines, config)
        self.sessions: dict[str, _Conn] = {}
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/ws", self._ws)
        from halfsec.server.page import add_routes as add_page_routes  # the browser page at /

        add_page_routes(self.app)
        from halfsec.server.webrtc import WebRtcGateway  # aiortc is imported only with the server

        self.webrtc = WebRtcGateway(self)
        self.app.router.add_post("/webrtc/offer", self.webrtc.offer)
        self.app.on_shutdown.append(self.webrtc.shutdown)
        self.app.on_shutdown.append(self._on_shutdown)
        self.app.on_cleanup.append(self._close_tracing)

    # -- HTTP ---------------------------------------------------------------------------
    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "protocol": PROTOCOL_VERSION,
                "sessions": self.session_count,
                "transports": ["websocket", "webrtc"],
                "encodings": ["pcm16", "opus"],
                "max_sessions": self.options.max_sessions,
                "output_sample_rate": self.config.audio.output_rate,
                "domain": self.config.logic.domain,
                "stt": self.config.stt.engine,
                "tts": self.config.tts.engine,
                "inject_delay_ms": self.options.inject_delay_ms,
            }
        )

    @property
    def session_count(self) -> int:
        """Open sessions of every transport (``--max-sessions`` caps the sum)."""
        return len(self.sessions) + len(self.webrtc.sessions)

    def _authorized(self, request: web.Request) -> bool:
        token = self.options.token
        if not token:
            return True
        given = request.query.get("token")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer ") :].strip()
        return given is not None and hmac.compare_digest(given.encode(), token.encode())

    async def _close_tracing(self, app: web.Application) -> None:
        if self._own_tracing and self.tracing is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.tracing.shutdown)

    def _recorder(self, conn: _Conn) -> TurnTraceRecorder | None:
        if self.tracing is None:
            return None
        attrs = {"halfsec.session_id": conn.session_id}
        attrs.update({f"halfsec.model.{k}": v for k, v in self.models.items()})
        return TurnTraceRecorder(self.tracing.tracer, models=self.models, attributes=attrs)

    async def _on_shutdown(self, app: web.Application) -> None:
        for conn in list(self.sessions.values()):
            conn.closing = True
            with contextlib.suppress(Exception):
                await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    # -- WebSocket ----------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.Response(
                status=401,
                text="missing or wrong token: send 'Authorization: Bearer <token>' or ?token=",
            )
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, self.options.allow_origins):
            return web.Response(
                status=403,
                text=f"origin {origin} is not allowed; start the server with --allow-origin {origin}",
            )
        if self.session_count >= self.options.max_sessions:
            return web.Response(
                status=503,
                text=f"server busy: {self.options.max_sessions} sessions already open "
                "(--max-sessions); retry later",
            )
        ws = web.WebSocketResponse(max_msg_size=self.options.max_message_bytes * 4)
        await ws.prepare(request)
        conn = _Conn(ws=ws, session_id=uuid.uuid4().hex[:12])
        self.sessions[conn.session_id] = conn
        sender: asyncio.Task[None] | None = None
        try:
            sender = await self._serve(conn)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one session's bug must never reach the others
            log.exception("session %s failed", conn.session_id)
            await conn.error("internal_error", f"{type(e).__name__}: {e}", fatal=True)
        finally:
            conn.closing = True
            self.sessions.pop(conn.session_id, None)
            if conn.inbound is not None:
                await conn.inbound.close()
            if conn.pacer is not None:
                conn.pacer.cancel()
            if conn.session is not None:
                # Cancels the turn in flight (client gone mid-turn) and ends events().
                with contextlib.suppress(Exception):
                    await conn.session.close()
            if sender is not None:
                try:
                    await asyncio.wait_for(sender, timeout=2.0)
                except (TimeoutError, asyncio.CancelledError, Exception):
                    sender.cancel()
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
            log.info("session %s closed", conn.session_id)
        return ws

    async def _serve(self, conn: _Conn) -> asyncio.Task[None] | None:
        """Receive loop.  Returns the sender task (if the session started) for cleanup."""
        opt = self.options
        limiter = RateLimiter(opt.max_messages_per_s)
        started_at = time.monotonic()
        sender: asyncio.Task[None] | None = None
        ws = conn.ws
        while not ws.closed:
            timeout = opt.idle_timeout_s
            if conn.session is None:
                timeout = max(0.01, opt.start_timeout_s - (time.monotonic() - started_at))
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                if conn.session is None:
                    await conn.error(
                        "start_timeout",
                        f"no valid session.start within {opt.start_timeout_s:.0f} s of connecting",
                        fatal=True,
                    )
                else:
                    await conn.error(
                        "idle_timeout",
                        f"no message for {opt.idle_timeout_s:.0f} s; send audio (silence "
                        "counts) or pings to keep the session open",
                        fatal=True,
                    )
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"timeout")
                break
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
            if msg.type == WSMsgType.ERROR:
                log.info("session %s: websocket error %s", conn.session_id, ws.exception())
                break
            if not limiter.allow():
                if limiter.should_warn():
                    await conn.error(
                        "rate_limited",
                        f"more than {opt.max_messages_per_s:.0f} messages/s; messages are "
                        "being dropped (send 20 ms frames at real-time pace)",
                    )
                continue
            size = len(msg.data) if isinstance(msg.data, str | bytes) else 0
            if size > opt.max_message_bytes:
                await conn.error(
                    "message_too_large",
                    f"message of {size} bytes exceeds the {opt.max_message_bytes} byte "
                    "limit; send audio in frames of 20-100 ms",
                )
                continue
            if msg.type == WSMsgType.TEXT:
                done, new_sender = await self._on_text(conn, msg.data)
                sender = sender or new_sender
                if done:
                    break
            elif msg.type == WSMsgType.BINARY:
                await self._on_binary(conn, msg.data)
        return sender

    async def _on_text(self, conn: _Conn, text: str) -> tuple[bool, asyncio.Task[None] | None]:
        """Handle one JSON message; returns (session over, sender task if just started)."""
        try:
            m = parse_client_message(text)
        except ProtocolError as e:
            await conn.error(e.code, e.message, fatal=e.fatal)
            return e.fatal, None
        if isinstance(m, Ping):
            await conn.send_json(pong_event(m, now_ns()))
        elif isinstance(m, SessionStart):
            if conn.session is not None:
                await conn.error("already_started", "session.start was already received")
                return False, None
            return False, self._start(conn, m)
        elif isinstance(m, TraceContext):
            conn.next_traceparent = m.traceparent
        elif isinstance(m, SessionEnd):
            await conn.ws.close(code=WSCloseCode.OK, message=b"session.end")
            return True, None
        return False, None

    def _start(self, conn: _Conn, m: SessionStart) -> asyncio.Task[None]:
        cfg = self.config
        conn.session = VoiceSession(
            self.engines, cfg.turn, cfg.session, output_rate=cfg.audio.output_rate
        )
        conn.resampler = StreamResampler(m.sample_rate, INTERNAL_RATE)
        conn.next_traceparent = m.traceparent
        if m.encoding == "opus":

            async def bad_opus(n: int) -> None:
                await conn.error("bad_audio", f"{n} Opus packet(s) could not be decoded; concealed")

            conn.inbound = InboundAudio(conn.session.push, on_malformed=bad_opus)
        if m.output_encoding == "opus":
            conn.opus_out = PacedOpusOut(cfg.audio.output_rate)
            conn.pacer = asyncio.create_task(conn._opus_pacer(), name=f"opus-{conn.session_id}")
        log.info(
            "session %s started (%d Hz, %s in, %s out)",
            conn.session_id,
            m.sample_rate,
            m.encoding,
            m.output_encoding,
        )
        started = session_started_event(
            conn.session_id,
            cfg.audio.output_rate,
            now_ns(),
            input_sample_rate=m.sample_rate,
            domain=cfg.logic.domain,
            encoding=m.encoding,
            output_encoding=m.output_encoding,
        )
        return asyncio.create_task(self._sender(conn, started), name=f"send-{conn.session_id}")

    async def _on_binary(self, conn: _Conn, data: bytes) -> None:
        if conn.session is None or conn.resampler is None:
            await conn.error(
                "not_started",
                "audio received before session.start; send "
                '{"type":"session.start","protocol":1,"sample_rate":16000,"encoding":"pcm16"} first',
            )
            return
        if conn.inbound is not None:
            try:
                seq, ts, packet = decode_opus_in(data)
            except ProtocolError as e:
                await conn.error(e.code, e.message)
                return
            conn.inbound.push(seq, ts, packet)
            if conn.inbound.error is not None:
                raise conn.inbound.error
            return
        try:
            pcm = pcm16_from_bytes(data, max_bytes=self.options.max_message_bytes)
        except AudioInputError as e:
            await conn.error("bad_audio", f"{e}; frames must be 16-bit little-endian mono PCM")
            return
        pcm = conn.resampler.process(pcm)
        if pcm.size:
            await conn.session.push(pcm)

    # -- server -> client ---------------------------------------------------------------
    async def _sender(self, conn: _Conn, started: dict[str, Any]) -> None:
        """Forward the session's frames in order; audio optionally through the delay line."""
        assert conn.session is not None
        conn.recorder = self._recorder(conn)
        await conn.send_json(started)
        delay_ns = int(self.options.inject_delay_ms * 1e6)
        delayed: asyncio.Queue[tuple[int, int, np.ndarray | dict[str, Any]] | None] = (
            asyncio.Queue()
        )
        delay_task = asyncio.create_task(self._delay_line(conn, delayed)) if delay_ns > 0 else None
        send_audio: Callable[[int, np.ndarray], Awaitable[None]] = conn.send_audio
        try:
            async for f in conn.session.events():
                if conn.recorder is not None:
                    conn.recorder.frame(f)
                if isinstance(f, ReplyAudio):
                    if f.turn_id in conn.cancelled_turns:
                        continue
                    if delay_task is not None:
                        delayed.put_nowait((now_ns() + delay_ns, f.turn_id, f.pcm))
                    else:
                        await send_audio(f.turn_id, f.pcm)
                    continue
                if isinstance(f, Interruption):
                    conn.cancelled_turns.add(f.turn_id)
                    if conn.opus_out is not None:
                        conn.opus_out.flush(f.turn_id)
                ev = self._event(conn, f)
                if ev is not None and delay_task is not None and isinstance(f, ReplyDone):
                    # Through the delay line too: ``reply.done`` must not overtake the
                    # audio it closes (a client may stop listening once it is done).
                    delayed.put_nowait((now_ns() + delay_ns, f.turn_id, ev))
                elif ev is not None:
                    await conn.send_json(ev)
                if isinstance(f, EndOfTurn) and conn.inbound is not None:
                    await conn.send_json(jitter_event(f.turn_id, conn.inbound.turn_summary()))
                if isinstance(f, ErrorFrame) and f.fatal:
                    await conn.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"fatal error")
                    break
        finally:
            if delay_task is not None:
                delayed.put_nowait(None)
                try:
                    await asyncio.wait_for(
                        delay_task, timeout=self.options.inject_delay_ms / 1e3 + 1
                    )
                except (TimeoutError, asyncio.CancelledError, Exception):
                    delay_task.cancel()
            if conn.recorder is not None:
                conn.recorder.close()

    async def _delay_line(
        self, conn: _Conn, q: asyncio.Queue[tuple[int, int, np.ndarray | dict[str, Any]] | None]
    ) -> None:
        while True:
            item = await q.get()
            if item is None or conn.closing:
                return
            due, turn_id, payload = item
            wait = (due - now_ns()) / 1e9
            if wait > 0:
                await asyncio.sleep(wait)
            if isinstance(payload, dict):
                await conn.send_json(payload)
            elif turn_id not in conn.cancelled_turns:
                await conn.send_audio(turn_id, payload)

    def _event(self, conn: _Conn, f: Frame) -> dict[str, Any] | None:
        ev = frame_to_event(f)
        if ev is None:
            return None
        if isinstance(f, SpeechStarted) and f.turn_id not in conn.turn_traces:
            # The trace context sent before a turn parents that turn's spans.
            if conn.next_traceparent is not None:
                conn.turn_traces[f.turn_id] = conn.next_traceparent
                conn.next_traceparent = None
                if conn.recorder is not None:
                    conn.recorder.set_traceparent(f.turn_id, conn.turn_traces[f.turn_id])
        tp = conn.turn_traces.get(f.turn_id)
        if tp is not None and ev["type"] in ("vad.speech_started", "turn.end", "reply.done"):
            ev["traceparent"] = tp
        return ev


def jitter_event(turn_id: int, summary: dict[str, Any]) -> dict[str, Any]:
    """``timing`` event ``jitter_buffer`` with the server's input jitter-buffer stats for
    the turn just ended, so the lab can show the buffer's share of the latency."""
    keep = (
        "jitter_buffer_ms",
        "delay_p95_ms",
        "target_delay_ms",
        "played",
        "concealed",
        "concealed_pct",
        "fec_recovered",
        "late_dropped",
        "malformed",
    )
    return {
        "type": "timing",
        "turn_id": turn_id,
        "t_server_ns": now_ns(),
        "name": "jitter_buffer",
        "attrs": {k: summary.get(k) for k in keep},
    }


async def start_server(
    engines: Engines, config: HalfsecConfig, options: ServerOptions
) -> tuple[VoiceServer, web.AppRunner, int]:
    """Start listening; returns the server, its runner (``await runner.cleanup()``) and
    the bound port (useful with port 0)."""
    check_bind(options)
    server = VoiceServer(engines, config, options)
    runner = web.AppRunner(server.app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port, reuse_address=True)
    await site.start()
    port = options.port
    srv = getattr(site, "_server", None)
    if srv is not None and srv.sockets:
        port = int(srv.sockets[0].getsockname()[1])
    return server, runner, port
