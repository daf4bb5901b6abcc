"""``halfsec edge``: a gateway near the user in front of a distant ``halfsec serve``.

Where the round trips go.  A client talking straight to a far origin pays, before it
can say anything, TCP (1 RTT), the WebSocket upgrade (1 RTT) and ``session.start``
(1 RTT) on the long path, and then every 20 ms frame -- silence included -- crosses it.
Through the edge the client's handshake is local: the edge holds origin sessions that
already paid all of that (``edge_origin.OriginPool``), answers ``session.start`` and
pings itself, and forwards only what the origin needs to hear.

What the origin needs to hear is decided by the same Silero ``TurnDetector`` the origin
runs (``EdgeGate``): nothing while the user is silent; when speech starts, a preroll
longer than the origin's own (so its VAD and STT hear the onset) and then everything;
after speech pauses, silence until the origin itself says ``turn.end`` (the origin
still makes every end-of-turn decision; the edge never invents one), then it stops.

What the edge cannot remove: the last frame before the end of turn still has to reach
the origin and the reply has to come back, one long RTT per turn.  An "end of speech"
hint from the edge's VAD would not beat that either: it would travel on the same ordered
stream as, and right behind, the very audio frames it is derived from, so the origin
would learn nothing earlier than its own VAD does.  So there is no hint; the protocol
stays honest and unchanged.

Everything from the origin flows back unchanged in meaning: JSON events pass through
with their times mapped onto the edge's clock (the client synchronises its clock with
the edge, which answers its pings) and ``audio_ms`` positions mapped back onto the
client's own stream (the origin's stream has the gaps cut out); reply audio keeps its
HSA1 bytes, with the header's ``t_server_ns`` restamped at the moment the edge hands it
to the client socket, as the protocol defines.  The edge adds ``timing`` events named
``edge.*`` so the lab can show the edge hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import struct
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from halfsec import FRAME_MS, FRAME_SAMPLES, INTERNAL_RATE
from halfsec.audio.framing import Framer
from halfsec.audio.io import pcm16_from_bytes
from halfsec.audio.resample import StreamResampler
from halfsec.clock import now_ns
from halfsec.edge.origin_pool import (
    OriginLink,
    OriginOptions,
    OriginPool,
    OriginRefused,
    OriginUnavailable,
)
from halfsec.errors import AudioInputError, HalfsecError
from halfsec.server.admission import RateLimiter, exposure_problem, origin_allowed
from halfsec.turn.detector import TurnDetector, VadEvent, VadState
from halfsec.turn.options import TurnOptions
from halfsec.wire.protocol import (
    AUDIO_HEADER_BYTES,
    AUDIO_MAGIC,
    PROTOCOL_VERSION,
    Ping,
    ProtocolError,
    SessionEnd,
    SessionStart,
    TraceContext,
    error_event,
    parse_client_message,
    pong_event,
    trace_context_message,
)

log = logging.getLogger("halfsec.edge")

_T_HEADER = struct.Struct("<Q")


class EdgeError(HalfsecError):
    """The edge cannot start as configured (unsafe bind, bad origin URL or option)."""


@dataclass(frozen=True, slots=True)
class EdgeOptions:
    origin: str
    """``ws://host:port/ws`` of the origin ``halfsec serve``."""
    host: str = "127.0.0.1"
    port: int = 8766
    token: str | None = None
    """Required of clients of the edge (same rules as ``halfsec serve --token``)."""
    origin_token: str | None = None
    """Sent to the origin (``Authorization: Bearer``)."""
    allow_origins: tuple[str, ...] = ()
    max_sessions: int = 32
    max_message_bytes: int = 64 * 1024
    max_messages_per_s: float = 200.0
    idle_timeout_s: float = 30.0
    start_timeout_s: float = 10.0
    pool_size: int = 2
    preroll_ms: float = 500.0
    """Audio before the edge's speech onset sent with it.  Longer than the origin's own
    preroll (300 ms) plus its VAD's confirmation time, so the origin's detector sees a
    stretch of silence before the onset and its STT hears the onset it detects late."""
    hold_ms: float = 1000.0
    """Silence forwarded after the edge's VAD paused, even if the origin has not reported
    a turn (its ``vad.speech_started`` may still be on the way back)."""
    max_tail_ms: float = 4000.0
    """Safety cap: stop forwarding silence this long after the pause even if the origin
    never ended its turn (it resumes on the next speech)."""
    speech_batch_ms: float = 40.0
    """While the user speaks, frames are sent in messages of this much audio (fewer
    messages on the long path).  Pause and silence frames go one by one, at once: they
    are what the origin's end-of-turn decision waits for."""

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise EdgeError(f"port {self.port} is out of range 0..65535 (0 = any free port)")
        if not self.origin.startswith(("ws://", "wss://")):
            raise EdgeError(f"--origin {self.origin!r} must be a URL like ws://HOST:PORT/ws")
        if self.pool_size < 0 or self.max_sessions < 1:
            raise EdgeError("--pool-size must be >= 0 and --max-sessions >= 1")
        if self.preroll_ms < 100 or self.speech_batch_ms < FRAME_MS:
            raise EdgeError("preroll must be >= 100 ms and the speech batch >= 20 ms")


def check_edge_bind(options: EdgeOptions) -> None:
    """Same rule as the origin: no unauthenticated voice endpoint beyond this machine."""
    problem = exposure_problem(options.host, options.token)
    if problem:
        raise EdgeError(problem)


# -- the gate -----------------------------------------------------------------------------
@dataclass
class GateOutput:
    """What one 20 ms frame made the gate do."""

    send: list[np.ndarray] = field(default_factory=list)
    """Frames to forward now, in order, as one message."""
    events: list[VadEvent] = field(default_factory=list)
    opened: bool = False
    closed: bool = False


class EdgeGate:
    """Decides, frame by frame, what of the client's audio the origin must hear.

    Pure bookkeeping over ``TurnDetector`` (no I/O), so it can be reasoned about and
    tested on its own.  ``origin_open_turns`` is fed by the origin's own events: the
    gate keeps forwarding silence while the origin has a turn that has not ended."""

    def __init__(self, options: EdgeOptions, turn: TurnOptions | None = None) -> None:
        self.opt = options
        self.detector = TurnDetector(turn or TurnOptions())
        self.preroll: deque[np.ndarray] = deque(maxlen=max(1, int(options.preroll_ms // FRAME_MS)))
        self.open = False
        self.origin_open_turns: set[int] = set()
        self._batch: list[np.ndarray] = []
        self._pause_pos_ms: float | None = None

    def process(self, frame: np.ndarray) -> GateOutput:
        out = GateOutput(events=self.detector.process(frame))
        state = self.detector.state
        if not self.open:
            self.preroll.append(frame)
            if any(e.kind == "start" for e in out.events):
                self.open, out.opened = True, True
                self._pause_pos_ms = None
                out.send = list(self.preroll)
                self.preroll.clear()
            return out
        if state is VadState.SPEECH:
            self._pause_pos_ms = None
            self._batch.append(frame)
            if len(self._batch) * FRAME_MS >= self.opt.speech_batch_ms:
                out.send, self._batch = self._batch, []
            return out
        # Paused (or silence after the origin's turn.end): flush now, frame by frame.
        out.send, self._batch = [*self._batch, frame], []
        if self._pause_pos_ms is None:
            self._pause_pos_ms = self.detector.pos_ms
        tail_ms = self.detector.pos_ms - self._pause_pos_ms
        if tail_ms >= self.opt.max_tail_ms or (
            tail_ms >= self.opt.hold_ms and not self.origin_open_turns
        ):
            # Either the origin has no turn to end (a blip only the edge heard, or its
            # turn already ended), or it never ended one: stop, or a cough would keep
            # the gate open forever.
            self._close(out)
        return out

    def origin_turn_ended(self) -> bool:
        """The origin committed a turn: if the user is not speaking, stop forwarding.

        Returns whether the gate closed.  This is where the silence saving comes from:
        the origin needed exactly the silence it took to decide, and not a frame more
        than the round trip its ``turn.end`` took to come back."""
        if self.open and self.detector.state is not VadState.SPEECH and not self.origin_open_turns:
            self.open = False
            self.detector.end_turn()
            self._batch = []
            return True
        return False

    def _close(self, out: GateOutput) -> None:
        self.open, out.closed = False, True
        self.detector.end_turn()
        self._batch = []


class _PositionMap:
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
class _EdgeConn:
    ws: web.WebSocketResponse
    session_id: str
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    link: OriginLink | None = None
    gate: EdgeGate | None = None
    resampler: StreamResampler | None = None
    framer: Framer = field(default_factory=Framer)
    positions: _PositionMap = field(default_factory=_PositionMap)
    origin_pos_ms: float = 0.0
    stats: EdgeSessionStats = field(default_factory=EdgeSessionStats)
    first_audio_turns: set[int] = field(default_factory=set)
    origin_error: str | None = None

    async def send_json(self, obj: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        async with self.send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(json.dumps(obj))

    async def send_audio_packet(self, data: bytes) -> None:
        if self.ws.closed:
            return
        async with self.send_lock:
            # Restamp: the header means "handed to the socket", on the clock the client
            # synchronised with (the edge's).
            buf = bytearray(data)
            _T_HEADER.pack_into(buf, 8, now_ns())
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(bytes(buf))

    async def error(self, code: str, message: str, fatal: bool = False) -> None:
        await self.send_json(error_event(code, message, now_ns(), fatal=fatal))

    async def mark(
        self, name: str, turn_id: int = 0, t_ns: int | None = None, **attrs: Any
    ) -> None:
        await self.send_json(
            {
                "type": "timing",
                "turn_id": turn_id,
                "t_server_ns": now_ns() if t_ns is None else t_ns,
                "name": name,
                "attrs": attrs,
            }
        )


class EdgeServer:
    """The aiohttp application of the edge.  ``app`` is ready to run."""

    def __init__(self, options: EdgeOptions, turn: TurnOptions | None = None) -> None:
        self.options = options
        self.turn = turn or TurnOptions()
        self.pool = OriginPool(
            OriginOptions(
                url=options.origin, token=options.origin_token, pool_size=options.pool_size
            )
        )
        self.sessions: dict[str, _EdgeConn] = {}
        self.finished: list[EdgeSessionStats] = []
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/ws", self._ws)
        self.app.on_startup.append(self._on_startup)
        self.app.on_shutdown.append(self._on_shutdown)

    async def _on_startup(self, app: web.Application) -> None:
        TurnDetector(self.turn)  # loads the shared Silero session before the first user
        self.pool.start()

    async def _on_shutdown(self, app: web.Application) -> None:
        conns = list(self.sessions.values())
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"edge shutting down")
        for conn in conns:  # handlers may be cancelled before their own cleanup runs
            if conn.link is not None:
                await conn.link.close()
        await self.pool.close()

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in [*self.finished, *(c.stats for c in self.sessions.values())]:
            for k, v in s.as_dict().items():
                out[k] = out.get(k, 0) + v
        return out

    async def _healthz(self, request: web.Request) -> web.Response:
        started = self.pool.last_started
        return web.json_response(
            {
                "status": "ok" if self.pool.last_error is None else "degraded",
                "role": "edge",
                "protocol": PROTOCOL_VERSION,
                "sessions": len(self.sessions),
                "max_sessions": self.options.max_sessions,
                "origin": self.options.origin,
                "origin_error": self.pool.last_error,
                "pool_warm": self.pool.warm,
                "pool_size": self.options.pool_size,
                "pool_acquired_warm": self.pool.acquired_warm,
                "pool_acquired_cold": self.pool.acquired_cold,
                "pool": self.pool.stats(),
                "output_sample_rate": started.get("output_sample_rate"),
                "domain": started.get("domain"),
                "totals": self.totals(),
            }
        )

    def _authorized(self, request: web.Request) -> bool:
        token = self.options.token
        if not token:
            return True
        given = request.query.get("token")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer ") :].strip()
        return given is not None and hmac.compare_digest(given.encode(), token.encode())

    # -- client side --------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.Response(status=401, text="missing or wrong token")
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, self.options.allow_origins):
            return web.Response(status=403, text=f"origin {origin} is not allowed")
        if len(self.sessions) >= self.options.max_sessions:
            return web.Response(status=503, text="edge busy (--max-sessions); retry later")
        ws = web.WebSocketResponse(max_msg_size=self.options.max_message_bytes * 4)
        await ws.prepare(request)
        conn = _EdgeConn(ws=ws, session_id=uuid.uuid4().hex[:12])
        self.sessions[conn.session_id] = conn
        try:
            await self._serve(conn)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one session's failure must never reach the others
            log.exception("edge session %s failed", conn.session_id)
            await conn.error("internal_error", f"{type(e).__name__}: {e}", fatal=True)
        finally:
            self.sessions.pop(conn.session_id, None)
            self.finished.append(conn.stats)
            del self.finished[:-1000]
            if conn.link is not None:
                await conn.link.close()
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
        return ws

    async def _serve(self, conn: _EdgeConn) -> None:
        opt = self.options
        limiter = RateLimiter(opt.max_messages_per_s)
        started_at = time.monotonic()
        ws = conn.ws
        while not ws.closed:
            timeout = opt.idle_timeout_s
            if conn.link is None:
                timeout = max(0.01, opt.start_timeout_s - (time.monotonic() - started_at))
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                code = "start_timeout" if conn.link is None else "idle_timeout"
                await conn.error(code, "no message in time; send audio or pings", fatal=True)
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"timeout")
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if not limiter.allow():
                conn.stats.rejected_messages += 1
                if limiter.should_warn():
                    await conn.error(
                        "rate_limited",
                        f"more than {opt.max_messages_per_s:.0f} messages/s; messages are "
                        "being dropped (send 20 ms frames at real-time pace)",
                    )
                continue
            size = len(msg.data) if isinstance(msg.data, str | bytes) else 0
            if size > opt.max_message_bytes:
                conn.stats.rejected_messages += 1
                await conn.error(
                    "message_too_large",
                    f"message of {size} bytes exceeds the {opt.max_message_bytes} byte limit",
                )
                continue
            if msg.type == WSMsgType.TEXT:
                if await self._on_text(conn, msg.data):
                    return
            elif msg.type == WSMsgType.BINARY:
                await self._on_binary(conn, msg.data)
            if conn.origin_error is not None:
                return

    async def _on_text(self, conn: _EdgeConn, text: str) -> bool:
        """Validate at the edge: nothing malformed ever costs a long-path trip."""
        try:
            m = parse_client_message(text)
        except ProtocolError as e:
            conn.stats.rejected_messages += 1
            await conn.error(e.code, e.message, fatal=e.fatal)
            return e.fatal
        if isinstance(m, Ping):
            await conn.send_json(pong_event(m, now_ns()))
        elif isinstance(m, SessionStart):
            if conn.link is not None:
                conn.stats.rejected_messages += 1
                await conn.error("already_started", "session.start was already received")
                return False
            return not await self._start(conn, m)
        elif isinstance(m, TraceContext):
            await self._to_origin_text(conn, trace_context_message(m.traceparent))
        elif isinstance(m, SessionEnd):
            if conn.link is not None:
                await conn.link.close()  # sends session.end to the origin
            await conn.ws.close(code=WSCloseCode.OK, message=b"session.end")
            return True
        return False

    async def _start(self, conn: _EdgeConn, m: SessionStart) -> bool:
        t_req = now_ns()
        try:
            link, warm = await self.pool.acquire()
        except OriginUnavailable as e:
            what = (
                "the origin server refused a new session"
                if isinstance(e, OriginRefused)
                else "the edge cannot reach the origin server"
            )
            await conn.error("origin_unavailable", f"{what}: {e}; retry shortly", fatal=True)
            await conn.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"origin unavailable")
            return False
        conn.link = link
        conn.gate = EdgeGate(self.options, self.turn)
        conn.resampler = StreamResampler(m.sample_rate, INTERNAL_RATE)
        link.handler = lambda msg: self._from_origin(conn, msg)
        link.on_close = lambda reason: self._origin_lost(conn, reason)
        if not link.alive:  # died between the pool check and now
            await self._origin_lost(conn, link.closed_reason or "origin link closed")
            return False
        origin_started = link.started
        await conn.send_json(
            {
                "type": "session.started",
                "turn_id": 0,
                "t_server_ns": now_ns(),
                "session_id": str(origin_started.get("session_id", conn.session_id)),
                "protocol": PROTOCOL_VERSION,
                "output_sample_rate": origin_started.get("output_sample_rate", INTERNAL_RATE),
                "encoding": "pcm16",
                "input_sample_rate": m.sample_rate,
                "domain": origin_started.get("domain"),
                "edge_session_id": conn.session_id,
                # Whether the handshake cost no long-path round trip, and what one costs.
                "edge_warm": warm,
                "edge_origin_rtt_ms": None if link.rtt_ns is None else round(link.rtt_ns / 1e6, 3),
                "edge_acquire_ms": round((now_ns() - t_req) / 1e6, 3),
            }
        )
        if m.traceparent is not None:
            await self._to_origin_text(conn, trace_context_message(m.traceparent))
        log.info(
            "edge session %s -> origin %s (warm=%s)",
            conn.session_id,
            link.started.get("session_id"),
            warm,
        )
        return True

    async def _to_origin_text(self, conn: _EdgeConn, text: str) -> None:
        if conn.link is None:
            return
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            await conn.link.send_str(text)
            conn.stats.forwarded_control_messages += 1

    async def _on_binary(self, conn: _EdgeConn, data: bytes) -> None:
        if conn.link is None or conn.resampler is None or conn.gate is None:
            conn.stats.rejected_messages += 1
            await conn.error(
                "not_started",
                "audio received before session.start; send "
                '{"type":"session.start","protocol":1,"sample_rate":16000,"encoding":"pcm16"} first',
            )
            return
        try:
            pcm = pcm16_from_bytes(data, max_bytes=self.options.max_message_bytes)
        except AudioInputError as e:
            conn.stats.rejected_messages += 1
            await conn.error("bad_audio", f"{e}; frames must be 16-bit little-endian mono PCM")
            return
        conn.stats.client_audio_messages += 1
        conn.stats.client_audio_bytes += len(data)
        pcm = conn.resampler.process(pcm)
        conn.stats.client_audio_bytes_16k += 2 * int(pcm.size)
        for frame in conn.framer.push(pcm):
            await self._gate_frame(conn, frame)

    async def _gate_frame(self, conn: _EdgeConn, frame: np.ndarray) -> None:
        gate, link = conn.gate, conn.link
        assert gate is not None and link is not None
        out = gate.process(frame)
        pos = gate.detector.pos_ms
        for ev in out.events:
            if ev.kind in ("start", "pause"):
                await conn.mark(
                    f"edge.vad.speech_{'started' if ev.kind == 'start' else 'paused'}",
                    audio_ms=round(ev.speech_ms, 1),
                )
        if out.send:
            if out.opened:
                # The first forwarded sample sits this far back in the client's stream.
                first_ms = pos - len(out.send) * FRAME_MS
                conn.positions.add(conn.origin_pos_ms, first_ms)
                await conn.mark("edge.gate.open", audio_ms=round(first_ms, 1))
            payload = np.concatenate(out.send).astype("<i2", copy=False).tobytes()
            try:
                await link.send_bytes(payload)
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as e:
                await self._origin_lost(conn, f"sending to the origin failed ({e})")
                return
            conn.origin_pos_ms += len(out.send) * FRAME_MS
            conn.stats.forwarded_audio_messages += 1
            conn.stats.forwarded_audio_bytes += len(payload)
        if out.closed:
            await conn.mark("edge.gate.closed", audio_ms=round(pos, 1))

    # -- origin side --------------------------------------------------------------------
    async def _from_origin(self, conn: _EdgeConn, msg: aiohttp.WSMessage) -> None:
        link = conn.link
        if link is None:
            return
        if msg.type == aiohttp.WSMsgType.BINARY:
            data: bytes = msg.data
            if len(data) < AUDIO_HEADER_BYTES or data[:4] != AUDIO_MAGIC:
                return
            turn_id = int.from_bytes(data[4:8], "little")
            if turn_id not in conn.first_audio_turns:
                conn.first_audio_turns.add(turn_id)
                t_origin = _T_HEADER.unpack_from(data, 8)[0]
                sent = link.to_edge_ns(t_origin)
                await conn.mark(
                    "edge.reply.first_audio",
                    turn_id=turn_id,
                    origin_send_ns=sent,
                    hop_ms=round((now_ns() - sent) / 1e6, 3),
                )
            await conn.send_audio_packet(data)
            return
        try:
            ev = json.loads(msg.data)
        except ValueError:
            return
        if not isinstance(ev, dict) or not isinstance(ev.get("type"), str):
            return
        kind = ev["type"]
        if kind in ("session.started", "pong"):
            return  # the edge answered these itself
        t_origin = ev.get("t_server_ns")
        if isinstance(t_origin, int):
            ev["t_server_ns"] = link.to_edge_ns(t_origin)
            ev["t_origin_ns"] = t_origin
        for key in ("audio_ms", "speech_end_ms"):
            if isinstance(ev.get(key), int | float):
                ev[key] = round(conn.positions.to_client(float(ev[key])), 2)
        tid = int(ev.get("turn_id", 0) or 0)
        gate = conn.gate
        await conn.send_json(ev)
        if gate is None:
            return
        if kind == "vad.speech_started":
            gate.origin_open_turns.add(tid)
        elif kind in ("turn.end", "error") and tid in gate.origin_open_turns:
            gate.origin_open_turns.discard(tid)
            if kind == "turn.end":
                await conn.mark("edge.turn.end_received", turn_id=tid, t_ns=now_ns())
            if gate.origin_turn_ended():
                await conn.mark("edge.gate.closed", audio_ms=round(gate.detector.pos_ms, 1))
        if kind == "error" and ev.get("fatal"):
            conn.origin_error = str(ev.get("message"))
            with contextlib.suppress(Exception):
                await conn.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"origin error")

    async def _origin_lost(self, conn: _EdgeConn, reason: str) -> None:
        """The origin went away: tell this client plainly, end only this session."""
        if conn.origin_error is not None or conn.ws.closed:
            return
        conn.origin_error = reason
        await conn.error(
            "origin_lost",
            f"the origin server went away ({reason}); this conversation ended and any turn "
            "in flight was lost.  Reconnect to start a new one.",
            fatal=True,
        )
        with contextlib.suppress(Exception):
            await conn.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"origin lost")


async def start_edge(
    options: EdgeOptions, turn: TurnOptions | None = None
) -> tuple[EdgeServer, web.AppRunner, int]:
    """Start listening; returns the edge, its runner (``await runner.cleanup()``) and
    the bound port.  The pool starts warming at once."""
    check_edge_bind(options)
    edge = EdgeServer(options, turn)
    runner = web.AppRunner(edge.app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port, reuse_address=True)
    await site.start()
    port = options.port
    srv = getattr(site, "_server", None)
    if srv is not None and srv.sockets:
        port = int(srv.sockets[0].getsockname()[1])
    return edge, runner, port


__all__ = [
    "FRAME_SAMPLES",
    "EdgeError",
    "EdgeGate",
    "EdgeOptions",
    "EdgeServer",
    "EdgeSessionStats",
    "check_edge_bind",
    "start_edge",
]
