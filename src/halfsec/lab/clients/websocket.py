"""The bench client: plays a recording into a server over the real WebSocket protocol.

It behaves like a microphone and a speaker on the other side of the network, and it is
the only place voice-to-voice is measured, because only the client hears what the user
hears.  One WebSocket session per recording: each recording is an independent
conversation (no state, barge-in or turn numbering leaks between files), the clock is
re-synchronised for each one (``lab.clients.clock_sync``), and a failure (server gone,
never answered) is confined to that recording.

Timeline: sample 0 is the first sent sample at ``t0``; frame ``k`` is sent at
``t0 + (k + 1) * 20 ms`` (``lab.clients.microphone``).  Reply audio is placed on the
same timeline at the moment the client *read* its message (``PlaybackTimeline``), or,
with ``codec="opus"``, when its jitter buffer plays it (``lab.clients.reply_player``),
so network, buffering and the client's own scheduling are inside the measurement, as
they are for a user.  When the timeline reaches the end of a turn's reply, the client
says so (``playback.done``, ``lab.clients.playback_done``): the server's barge-in
decision relies on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import numpy as np
from opentelemetry import trace

from halfsec import INTERNAL_RATE
from halfsec.audio.timeline import PlaybackTimeline
from halfsec.clock import now_ns
from halfsec.lab.clients.client_run import ClientRun, Received
from halfsec.lab.clients.clock_sync import sync_clock
from halfsec.lab.clients.errors import ClientError
from halfsec.lab.clients.microphone import stream_microphone
from halfsec.lab.clients.options import ClientOptions
from halfsec.lab.clients.playback_done import PlaybackDoneReporter
from halfsec.lab.clients.reply_player import PLAY_RATE, ReplyPlayer
from halfsec.lab.clients.turn_state import TurnState
from halfsec.trace.client_spans import ClientTurnSpan
from halfsec.trace.context import make_traceparent
from halfsec.wire.audio_packets import (
    decode_audio,
    decode_opus_out,
    encode_opus_in,
    encode_pcm16,
)
from halfsec.wire.opus import OpusEncoder
from halfsec.wire.protocol import (
    SESSION_STARTED,
    ProtocolError,
    parse_server_event,
    session_end_message,
    session_start_message,
    trace_context_message,
)


def turn_context(run: ClientRun, tracer: trace.Tracer | None, start_mono_ns: int) -> str:
    """The ``traceparent`` for the next turn: a ``client.turn`` span's when tracing (so the
    server's spans become its children), else a bare random one."""
    if tracer is None:
        tp = make_traceparent()
    else:
        span = ClientTurnSpan(tracer=tracer, start_mono_ns=start_mono_ns)
        run.turn_spans.append(span)
        tp = span.traceparent
    run.traceparents.append(tp)
    return tp


async def run_recording(
    url: str,
    pcm: np.ndarray,
    options: ClientOptions | None = None,
    tracer: trace.Tracer | None = None,
) -> ClientRun:
    """Stream ``pcm`` (16 kHz int16) to ``url`` at real-time pace and record the reply.

    ``tracer``: open a ``client.turn`` span per turn (``ClientRun.turn_spans``).
    Never raises for server misbehaviour: ``ClientRun.error`` says what went wrong."""
    opt = options or ClientOptions()
    run = ClientRun(tracer=tracer)
    headers = opt.handshake_headers()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=opt.connect_timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with await open_websocket(http, url, headers) as ws:
                await _converse(ws, pcm, opt, run)
    except ClientError as e:
        run.error = str(e)
    return run


async def open_websocket(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> aiohttp.ClientWebSocketResponse:
    """Connect to a server's WebSocket endpoint; a refusal or an unreachable server is a
    ``ClientError`` that says which."""
    try:
        return await http.ws_connect(
            url, headers=headers, max_msg_size=16 * 1024 * 1024, autoping=True
        )
    except aiohttp.WSServerHandshakeError as e:
        raise ClientError(f"server refused the WebSocket ({e.status}: {e.message})") from e
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        raise ClientError(
            f"cannot connect to {url} ({type(e).__name__}: {e}); is `halfsec serve` running?"
        ) from e


async def stream_over_websocket(
    run: ClientRun,
    pcm: np.ndarray,
    opt: ClientOptions,
    state: TurnState,
    playing: Callable[[], bool],
    send: Callable[[int, np.ndarray], Awaitable[None]],
    check: Callable[[], None],
) -> None:
    """``stream_microphone`` over a WebSocket (ours or a phone gateway's): a socket that
    fails mid-stream, or a server that closed it, ends the turn with a ``ClientError``
    that says which, preferring the server's own reason."""
    try:
        await stream_microphone(run, pcm, opt, state, playing, send, check)
    except (ConnectionError, aiohttp.ClientError, RuntimeError) as e:
        raise ClientError(
            run.closed_by_server or f"connection lost while streaming ({type(e).__name__}: {e})"
        ) from e
    if run.closed_by_server:
        raise ClientError(run.closed_by_server)


async def _next_json(ws: aiohttp.ClientWebSocketResponse, wait_s: float) -> dict[str, Any]:
    msg = await ws.receive(timeout=wait_s)
    if msg.type == aiohttp.WSMsgType.TEXT:
        return parse_server_event(msg.data)
    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
        raise ClientError(f"server closed the connection ({ws.close_code}: {msg.extra or ''})")
    if msg.type == aiohttp.WSMsgType.BINARY:
        return {"type": "_binary"}
    raise ClientError(f"websocket error: {ws.exception()}")


async def _handshake(
    ws: aiohttp.ClientWebSocketResponse, opt: ClientOptions, run: ClientRun
) -> None:
    tp = make_traceparent()
    run.traceparents.append(tp)
    if opt.codec == "opus":
        await ws.send_str(session_start_message(48_000, tp, "opus", "opus"))
    else:
        await ws.send_str(session_start_message(INTERNAL_RATE, traceparent=tp))
    deadline = now_ns() + int(opt.connect_timeout_s * 1e9)
    while True:
        left = (deadline - now_ns()) / 1e9
        if left <= 0:
            raise ClientError("server never answered session.start")
        try:
            ev = await _next_json(ws, left)
        except TimeoutError as e:
            raise ClientError(
                f"server never answered session.start within {opt.connect_timeout_s:.0f} s"
            ) from e
        if ev["type"] == SESSION_STARTED:
            run.output_rate = int(ev.get("output_sample_rate", INTERNAL_RATE))
            run.session_id = str(ev.get("session_id", ""))
            run.domain = ev.get("domain")
            return
        if ev["type"] == "error":
            raise ClientError(
                f"server rejected session.start: {ev.get('code')}: {ev.get('message')}"
            )
    # (unreachable)


async def open_session(
    ws: aiohttp.ClientWebSocketResponse, opt: ClientOptions, run: ClientRun
) -> None:
    """``session.start`` and the clock sync: what a session does once, before any turn."""
    await _handshake(ws, opt, run)

    async def next_json(wait_s: float) -> dict[str, Any]:
        return await _next_json(ws, wait_s)

    run.clock = await sync_clock(max(1, opt.pings), ws.send_str, next_json)


async def _converse(
    ws: aiohttp.ClientWebSocketResponse, pcm: np.ndarray, opt: ClientOptions, run: ClientRun
) -> None:
    await open_session(ws, opt, run)
    await play_turn(ws, pcm, opt, run, asyncio.Lock(), now_ns() + int(opt.lead_ms * 1e6))


async def play_turn(
    ws: aiohttp.ClientWebSocketResponse,
    pcm: np.ndarray,
    opt: ClientOptions,
    run: ClientRun,
    send_lock: asyncio.Lock,
    t0_ns: int,
    end_session: bool = True,
    seq_base: int = 0,
) -> None:
    """Play one recording on an open session (``open_session``) whose sample 0 is
    ``t0_ns`` and record the reply into ``run``, until the server is done with it.

    ``end_session``: send ``session.end`` after it (False: more turns follow on this
    socket, ``lab.clients.conversation``).  ``seq_base``: the Opus packet number of
    this recording's first frame (a session's numbering never restarts)."""
    state = TurnState()

    async def send_str(text: str) -> None:
        async with send_lock:
            await ws.send_str(text)

    run.t0_ns = t0_ns
    timeline = PlaybackTimeline(run.output_rate, run.t0_ns)
    run.timeline = timeline
    opus_enc = None
    player: ReplyPlayer | None = None
    if opt.codec == "opus":
        opus_enc = OpusEncoder(INTERNAL_RATE, fec=True, expected_loss_pct=5)
        run.output_rate = PLAY_RATE
        timeline = run.timeline = PlaybackTimeline(PLAY_RATE, run.t0_ns)
        player = ReplyPlayer(run, state)
        run.jitter = player.buffer
    reporter = PlaybackDoneReporter(run, state, send_str, player)
    if run.tracer is not None:
        # The first turn's span starts at sample 0; its context replaces the bare one of
        # session.start (the server takes the latest context before speech starts).
        await send_str(trace_context_message(turn_context(run, run.tracer, run.t0_ns)))
    receiver = asyncio.create_task(_receive(ws, run, state, player, reporter, send_str))

    async def send_frame(k: int, frame: np.ndarray) -> None:
        async with send_lock:
            if opus_enc is not None:
                n = seq_base + k
                await ws.send_bytes(encode_opus_in(n, n * 960, opus_enc.encode(frame)))
            else:
                await ws.send_bytes(encode_pcm16(frame))

    def check() -> None:
        if receiver.done():
            raise ClientError(run.closed_by_server or "connection lost")

    def playing() -> bool:
        if player is not None:
            return player.playing
        return now_ns() < timeline.playing_until_ns

    try:
        await stream_over_websocket(run, pcm, opt, state, playing, send_frame, check)
        if end_session:
            with contextlib.suppress(Exception):
                await send_str(session_end_message())
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver
        await reporter.close()
        if player is not None:
            await player.close()


async def _receive(
    ws: aiohttp.ClientWebSocketResponse,
    run: ClientRun,
    state: TurnState,
    player: ReplyPlayer | None,
    reporter: PlaybackDoneReporter,
    send_str: Callable[[str], Awaitable[None]],
) -> None:
    """Record every server message with the moment it was read."""
    timeline = run.timeline
    assert timeline is not None
    async for msg in ws:
        t = now_ns()
        if msg.type == aiohttp.WSMsgType.BINARY and player is not None:
            try:
                op = decode_opus_out(msg.data)
            except ProtocolError as e:
                run.events.append(Received(t, {"type": "_client_error", "message": e.message}))
                continue
            if op.turn_id not in player.marked:
                player.marked.add(op.turn_id)
                player.mark_turn(op.timestamp, op.turn_id, op.t_server_ns)
            player.push(op.seq, op.timestamp, op.packet)
        elif msg.type == aiohttp.WSMsgType.BINARY:
            try:
                pkt = decode_audio(msg.data)
            except ProtocolError as e:
                run.events.append(Received(t, {"type": "_client_error", "message": e.message}))
                continue
            if pkt.turn_id in state.interrupted:
                continue
            start = timeline.place(pkt.pcm, t, pkt.turn_id)
            run.packets.append(Received(t, None, pkt.turn_id, pkt.t_server_ns, start, pkt.pcm.size))
        elif msg.type == aiohttp.WSMsgType.TEXT:
            try:
                ev = parse_server_event(msg.data)
            except ProtocolError as e:
                run.events.append(Received(t, {"type": "_client_error", "message": e.message}))
                continue
            run.events.append(
                Received(t, ev, int(ev.get("turn_id", 0) or 0), int(ev.get("t_server_ns", 0) or 0))
            )
            if state.apply(ev, t, run):
                # A fresh trace context parents the *next* turn's spans.
                tp = turn_context(run, run.tracer, t)
                with contextlib.suppress(Exception):
                    await send_str(trace_context_message(tp))
            elif ev["type"] == "reply.done":
                reporter.reply_done(int(ev.get("turn_id", 0) or 0))
        else:
            break
    if run.closed_by_server is None and state.pending:
        run.closed_by_server = f"server closed the connection mid-turn (close code {ws.close_code})"
    elif run.closed_by_server is None:
        run.closed_by_server = f"server closed the connection (close code {ws.close_code})"
