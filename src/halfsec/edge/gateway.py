"""``halfsec edge``: a gateway near the user in front of a distant ``halfsec serve``.

Where the round trips go.  A client talking straight to a far origin pays, before it
can say anything, TCP (1 RTT), the WebSocket upgrade (1 RTT) and ``session.start``
(1 RTT) on the long path, and then every 20 ms frame -- silence included -- crosses it.
Through the edge the client's handshake is local: the edge holds origin sessions that
already paid all of that (``origin_pool.OriginPool``), answers ``session.start`` and
pings itself, and forwards only what the origin needs to hear.

What the origin needs to hear is decided by the same Silero ``TurnDetector`` the origin
runs (``gate.EdgeGate``): nothing while the user is silent; when speech starts, a preroll
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
import json
import logging
import uuid

import aiohttp
import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from halfsec import FRAME_MS, INTERNAL_RATE
from halfsec.audio.io import pcm16_from_bytes
from halfsec.audio.resample import StreamResampler
from halfsec.clock import now_ns
from halfsec.edge.conversation import EdgeConversation, EdgeSessionStats
from halfsec.edge.gate import EdgeGate
from halfsec.edge.options import EdgeError, EdgeOptions, check_edge_bind
from halfsec.edge.origin_link import OriginOptions, OriginRefused, OriginUnavailable
from halfsec.edge.origin_pool import OriginPool
from halfsec.errors import AudioInputError
from halfsec.server.admission import RealTimeAudio
from halfsec.server.client_socket import ClientSocket, client_messages
from halfsec.server.listen import listen
from halfsec.turn.detector import TurnDetector
from halfsec.turn.options import TurnOptions
from halfsec.wire.audio_packets import audio_header, decode_opus_in
from halfsec.wire.protocol import (
    AUDIO_BEFORE_START,
    PROTOCOL_VERSION,
    Ping,
    PlaybackDone,
    ProtocolError,
    SessionEnd,
    SessionStart,
    TraceContext,
    parse_client_message,
    playback_done_message,
    pong_event,
    session_started_event,
    trace_context_message,
)
from halfsec.wire.realtime_audio import InboundAudio, PacedOpusOut

__all__ = ["EdgeError", "EdgeOptions", "EdgeServer", "check_edge_bind", "start_edge"]

log = logging.getLogger("halfsec.edge")


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
        self.sessions: dict[str, EdgeConversation] = {}
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
            await conn.socket.close(WSCloseCode.GOING_AWAY, b"edge shutting down")
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

    # -- client side --------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.StreamResponse:
        refusal = self.options.admission.refusal(request, len(self.sessions))
        if refusal is not None:
            return web.Response(status=refusal.status, text=refusal.reason)
        ws = web.WebSocketResponse(max_msg_size=self.options.max_message_bytes * 4)
        await ws.prepare(request)
        opt = self.options
        conn = EdgeConversation(
            socket=ClientSocket(ws, request.transport, opt.write_timeout_s),
            session_id=uuid.uuid4().hex[:12],
            audio_budget=RealTimeAudio(opt.max_audio_rate, opt.audio_burst_s * 1e3),
        )
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
            await conn.close_audio()
            if conn.link is not None:
                await conn.link.close()
            await conn.socket.close()
        return ws

    async def _serve(self, conn: EdgeConversation) -> None:
        opt = self.options

        def rejected() -> None:
            conn.stats.rejected_messages += 1

        messages = client_messages(
            conn.socket,
            opt,
            started=lambda: conn.link is not None,
            on_rejected=rejected,
        )
        async with contextlib.aclosing(messages):
            async for msg in messages:
                if msg.type == WSMsgType.TEXT:
                    if await self._on_text(conn, msg.data):
                        return
                else:
                    await self._on_binary(conn, msg.data)
                if conn.origin_error is not None:
                    return

    async def _on_text(self, conn: EdgeConversation, text: str) -> bool:
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
        elif isinstance(m, PlaybackDone):
            # Turn ids are the origin's (events pass through unchanged): forward as is.
            await self._to_origin_text(conn, playback_done_message(m.turn_id))
        elif isinstance(m, SessionEnd):
            if conn.link is not None:
                await conn.link.close()  # sends session.end to the origin
            await conn.socket.close(WSCloseCode.OK, b"session.end")
            return True
        return False

    async def _start(self, conn: EdgeConversation, m: SessionStart) -> bool:
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
            await conn.socket.close(WSCloseCode.TRY_AGAIN_LATER, b"origin unavailable")
            return False
        conn.link = link
        conn.gate = EdgeGate(self.options, self.turn)
        self._client_audio(conn, m, link.started.get("output_sample_rate", INTERNAL_RATE))
        link.handler = lambda msg: self._from_origin(conn, msg)
        link.on_close = lambda reason: self._origin_lost(conn, reason)
        if not link.alive:  # died between the pool check and now
            await self._origin_lost(conn, link.closed_reason or "origin link closed")
            return False
        origin_started = link.started
        await conn.send_json(
            session_started_event(
                str(origin_started.get("session_id", conn.session_id)),
                origin_started.get("output_sample_rate", INTERNAL_RATE),
                now_ns(),
                input_sample_rate=m.sample_rate,
                encoding=m.encoding,
                output_encoding=m.output_encoding,
                domain=origin_started.get("domain"),
                edge_session_id=conn.session_id,
                # Whether the handshake cost no long-path round trip, and what one costs.
                edge_warm=warm,
                edge_origin_rtt_ms=None if link.rtt_ns is None else round(link.rtt_ns / 1e6, 3),
                edge_acquire_ms=round((now_ns() - t_req) / 1e6, 3),
            )
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

    async def _to_origin_text(self, conn: EdgeConversation, text: str) -> None:
        if conn.link is None:
            return
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            await conn.link.send_str(text)
            conn.stats.forwarded_control_messages += 1

    def _client_audio(self, conn: EdgeConversation, m: SessionStart, output_rate: int) -> None:
        """The client's encodings, honoured at the edge (its origin session is PCM16 at
        16 kHz both ways): Opus in through the same jitter buffer as the origin's, Opus
        out re-encoded and paced as the origin would."""
        if m.encoding == "opus":
            conn.inbound = InboundAudio(
                lambda pcm: self._gate_pcm(conn, pcm),
                on_malformed=lambda n: conn.error(
                    "bad_audio", f"{n} Opus packet(s) could not be decoded; concealed"
                ),
            )
        else:
            conn.resampler = StreamResampler(m.sample_rate, INTERNAL_RATE)
        if m.output_encoding == "opus":
            conn.paced_out = PacedOpusOut(int(output_rate))
            conn.pacer = asyncio.create_task(conn.send_paced_opus(), name="edge-opus-out")

    async def _on_binary(self, conn: EdgeConversation, data: bytes) -> None:
        if conn.link is None or conn.gate is None:
            conn.stats.rejected_messages += 1
            await conn.error("not_started", AUDIO_BEFORE_START)
            return
        try:
            if conn.inbound is not None:
                seq, ts, packet = decode_opus_in(data)
                audio_ms = float(FRAME_MS)
            else:
                pcm = pcm16_from_bytes(data, max_bytes=self.options.max_message_bytes)
                rate = conn.resampler.in_rate if conn.resampler is not None else INTERNAL_RATE
                audio_ms = pcm.size * 1e3 / rate
        except (AudioInputError, ProtocolError) as e:
            conn.stats.rejected_messages += 1
            await conn.error("bad_audio", f"{e}; send audio as session.start announced")
            return
        refused = conn.audio_budget.rejection(audio_ms)
        if refused is not None:
            conn.stats.rejected_messages += 1
            if refused.message is not None:
                await conn.error(refused.code, refused.message)
            return
        conn.stats.client_audio_messages += 1
        conn.stats.client_audio_bytes += len(data)
        if conn.inbound is not None:
            problem = conn.inbound.push(seq, ts, packet, report_refusal=False)
            if problem is not None:
                conn.stats.rejected_messages += 1
                await conn.error("bad_audio", f"{problem}; the frame is concealed as lost")
            return
        assert conn.resampler is not None
        await self._gate_pcm(conn, conn.resampler.process(pcm))

    async def _gate_pcm(self, conn: EdgeConversation, pcm: np.ndarray) -> None:
        conn.stats.client_audio_bytes_16k += 2 * int(pcm.size)
        for frame in conn.framer.push(pcm):
            await self._gate_frame(conn, frame)

    async def _gate_frame(self, conn: EdgeConversation, frame: np.ndarray) -> None:
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
    async def _from_origin(self, conn: EdgeConversation, msg: aiohttp.WSMessage) -> None:
        link = conn.link
        if link is None:
            return
        if msg.type == aiohttp.WSMsgType.BINARY:
            data: bytes = msg.data
            header = audio_header(data)
            if header is None:
                return
            turn_id, t_origin_ns = header
            if turn_id not in conn.first_audio_turns:
                conn.first_audio_turns.add(turn_id)
                sent = link.to_edge_ns(t_origin_ns)
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
        if kind == "interruption":
            conn.interrupted(tid)
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
            await conn.socket.close(WSCloseCode.INTERNAL_ERROR, b"origin error")

    async def _origin_lost(self, conn: EdgeConversation, reason: str) -> None:
        """The origin went away: tell this client plainly, end only this session."""
        if conn.origin_error is not None or conn.socket.closed:
            return
        conn.origin_error = reason
        await conn.error(
            "origin_lost",
            f"the origin server went away ({reason}); this conversation ended and any turn "
            "in flight was lost.  Reconnect to start a new one.",
            fatal=True,
        )
        await conn.socket.close(WSCloseCode.TRY_AGAIN_LATER, b"origin lost")


async def start_edge(
    options: EdgeOptions, turn: TurnOptions | None = None
) -> tuple[EdgeServer, web.AppRunner, int]:
    """Start listening; returns the edge, its runner (``await runner.cleanup()``) and
    the bound port.  The pool starts warming at once."""
    check_edge_bind(options)
    edge = EdgeServer(options, turn)
    runner, port = await listen(edge.app, options.host, options.port)
    return edge, runner, port
