"""The bench client: plays a recording into a server over the real WebSocket protocol.

It behaves like a microphone and a speaker on the other side of the network, and it is
the only place voice-to-voice is measured, because only the client hears what the user
hears.  One WebSocket session per recording: each recording is an independent
conversation (no state, barge-in or turn numbering leaks between files), the clock is
re-synchronised for each one, and a failure (server gone, never answered) is confined to
that recording.

Timeline: sample 0 is the first sent sample at ``t0``; frame ``k`` is sent at
``t0 + (k + 1) * 20 ms`` (a microphone cannot deliver a frame before its last sample was
spoken, the rule of ``runtime/file_run.py``).  Reply audio is placed on the same timeline
at the moment the client *read* its message (``PlaybackTimeline``), so network, buffering
and the client's own scheduling are inside the measurement, as they are for a user.

Server timestamps are mapped with an NTP-style exchange: of >= 8 pings, the one with the
smallest round trip gives ``offset = t_server - (t_send + t_recv) / 2`` with uncertainty
``rtt / 2`` (the server's stamp lies somewhere inside the round trip).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from opentelemetry import trace

from halfsec import FRAME_MS, FRAME_SAMPLES, INTERNAL_RATE
from halfsec.audio.framing import frames_of
from halfsec.audio.timeline import PlaybackTimeline
from halfsec.clock import now_ns
from halfsec.trace.client_spans import ClientTurnSpan
from halfsec.wire.protocol import (
    PONG,
    SESSION_STARTED,
    ProtocolError,
    decode_audio,
    decode_opus_out,
    encode_opus_in,
    encode_pcm16,
    parse_server_event,
    ping_message,
    session_end_message,
    session_start_message,
    trace_context_message,
)


class ClientError(Exception):
    """The recording could not be played to the server; the message says why."""


@dataclass(frozen=True, slots=True)
class ClientOptions:
    token: str | None = None
    origin: str | None = None
    """Send this Origin header (tests of the server's allow-list); None like a non-browser."""
    pings: int = 8
    connect_timeout_s: float = 10.0
    max_tail_s: float = 10.0
    """After the recording, how long to wait for the reply before declaring the turn
    failed ("server never answered")."""
    no_speech_grace_s: float = 3.0
    """After the recording, how long to wait for the server to report any speech."""
    settle_s: float = 0.3
    """Silence kept flowing after the reply finished, so a late second turn is seen."""
    lead_ms: float = 20.0
    codec: str = "pcm16"
    """WebSocket audio encoding both ways: ``pcm16`` or ``opus`` (HSI1/HSO1 packets; the
    reply goes through the client's jitter buffer, see ``lab.client_rtc.ReplyPlayer``)."""


def new_traceparent() -> str:
    """A fresh W3C trace-context (version 00, sampled) for one turn."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


@dataclass(frozen=True, slots=True)
class ClockSync:
    offset_ns: int
    """Server clock minus client clock."""
    uncertainty_ns: int
    rtt_ns: int
    samples: int

    def to_client_ns(self, t_server_ns: int) -> int:
        return t_server_ns - self.offset_ns


def best_clock(exchanges: list[tuple[int, int, int]]) -> ClockSync:
    """Pick the smallest-RTT exchange of ``(t_send, t_server, t_recv)``."""
    if not exchanges:
        raise ClientError("clock sync failed: no pong received")
    t_send, t_server, t_recv = min(exchanges, key=lambda e: e[2] - e[0])
    rtt = t_recv - t_send
    offset = t_server - (t_send + t_recv) // 2
    return ClockSync(offset, rtt // 2, rtt, len(exchanges))


@dataclass
class Received:
    """One server message as the client saw it."""

    t_recv_ns: int
    event: dict[str, Any] | None = None
    turn_id: int = 0
    t_server_ns: int = 0
    start_sample: int = 0
    samples: int = 0
    buffer_ms: float | None = None
    """Time the audio sat in the client's jitter buffer (Opus/WebRTC clients only)."""


@dataclass
class ClientRun:
    """Everything one recording produced, raw; ``lab.bench`` turns it into a record."""

    t0_ns: int = 0
    output_rate: int = INTERNAL_RATE
    session_id: str = ""
    domain: str | None = None
    clock: ClockSync | None = None
    timeline: PlaybackTimeline | None = None
    sent: list[np.ndarray] = field(default_factory=list)
    late_ms: list[float] = field(default_factory=list)
    events: list[Received] = field(default_factory=list)
    packets: list[Received] = field(default_factory=list)
    traceparents: list[str] = field(default_factory=list)
    turn_spans: list[ClientTurnSpan] = field(default_factory=list)
    """With a tracer: one open ``client.turn`` span per trace context sent, in order;
    ``lab.bench`` closes the ones the server used once it knows v2v."""
    tracer: trace.Tracer | None = None
    error: str | None = None
    closed_by_server: str | None = None
    player: Any = None
    """``lab.client_rtc.ReplyPlayer`` when reply audio is Opus (jitter-buffered playout)."""

    def sent_audio(self) -> np.ndarray:
        return np.concatenate(self.sent) if self.sent else np.zeros(0, dtype=np.int16)

    def received_audio(self) -> np.ndarray:
        """Reply audio on the sent timeline, at least as long as what was sent."""
        if self.timeline is None:
            return np.zeros(0, dtype=np.int16)
        n = int(self.sent_audio().size * self.output_rate / INTERNAL_RATE)
        return self.timeline.audio(min_len=n)

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [r.event for r in self.events if r.event is not None and r.event["type"] == kind]


class _TurnState:
    """The client's view of whether the server still owes it something."""

    def __init__(self) -> None:
        self.started: set[int] = set()
        self.ended: set[int] = set()
        self.finished: set[int] = set()  # reply.done, interruption or turn error
        self.interrupted: set[int] = set()
        self.changed = asyncio.Event()

    @property
    def pending(self) -> bool:
        return bool(self.started - self.ended) or bool(self.ended - self.finished)

    def tail_done(self, elapsed_s: float, playing: bool, opt: ClientOptions) -> bool:
        """After the recording: may the client stop sending silence?  Raises
        ``ClientError`` when the server has had its chance and did not answer.  Shared by
        the WebSocket and WebRTC clients so both give up by the same rule."""
        if not self.started and elapsed_s >= opt.no_speech_grace_s:
            raise ClientError(
                "server never answered: no speech detected and no reply within "
                f"{opt.no_speech_grace_s:.0f} s after the recording ended"
            )
        if elapsed_s > opt.max_tail_s:
            if self.pending:
                raise ClientError(
                    "server never answered: the reply was not finished "
                    f"{opt.max_tail_s:.0f} s after the recording ended"
                )
            return True
        return bool(self.started) and elapsed_s >= opt.settle_s and not self.pending and not playing

    def apply(self, ev: dict[str, Any], t: int, run: ClientRun) -> bool:
        """Update from one server event received at ``t``; True on ``turn.end`` (the
        caller then sends a fresh trace context for the next turn).  Shared by the
        WebSocket and WebRTC clients so both read the server the same way."""
        kind, tid = ev["type"], int(ev.get("turn_id", 0) or 0)
        if kind == "vad.speech_started":
            self.started.add(tid)
        elif kind == "turn.end":
            self.ended.add(tid)
            return True
        elif kind == "reply.done":
            self.finished.add(tid)
        elif kind == "interruption":
            self.interrupted.add(tid)
            self.finished.add(tid)
            if run.timeline is not None:
                run.timeline.stop(t)
        elif kind == "error":
            if tid:
                self.finished.add(tid)
                self.ended.add(tid)
            if ev.get("fatal"):
                run.closed_by_server = (
                    f"server reported a fatal error: {ev.get('code')}: {ev.get('message')}"
                )
        return False


async def stream_microphone(
    run: ClientRun,
    pcm: np.ndarray,
    opt: ClientOptions,
    state: _TurnState,
    playing: Callable[[], bool],
    send: Callable[[int, np.ndarray], Awaitable[None]],
    check: Callable[[], None],
) -> None:
    """Play the recording as a microphone, then silence until the server is done.

    Frame ``k`` leaves at ``t0 + (k + 1) * 20 ms`` (when a real microphone would have
    captured its last sample), on absolute deadlines so sleep overshoot never
    accumulates; how late each one left is recorded.  ``send(k, frame)`` is the
    transport's part; ``check()`` raises ``ClientError`` when the connection is gone.
    One loop for every transport, so they are timed by the same rule."""
    k = 0

    async def one(frame: np.ndarray) -> None:
        nonlocal k
        due = run.t0_ns + (k + 1) * FRAME_MS * 1_000_000
        delay = (due - now_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        check()
        run.late_ms.append((now_ns() - due) / 1e6)
        await send(k, frame)
        run.sent.append(frame)
        k += 1

    for frame in frames_of(pcm):
        await one(frame)
    silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
    t_end = now_ns()
    while not state.tail_done((now_ns() - t_end) / 1e9, playing(), opt):
        await one(silence)


def _turn_context(run: ClientRun, tracer: trace.Tracer | None, start_mono_ns: int) -> str:
    """The ``traceparent`` for the next turn: a ``client.turn`` span's when tracing (so the
    server's spans become its children), else a bare random one."""
    if tracer is None:
        tp = new_traceparent()
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
    headers: dict[str, str] = {}
    if opt.token:
        headers["Authorization"] = f"Bearer {opt.token}"
    if opt.origin:
        headers["Origin"] = opt.origin
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=opt.connect_timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            try:
                ws = await http.ws_connect(
                    url, headers=headers, max_msg_size=16 * 1024 * 1024, autoping=True
                )
            except aiohttp.WSServerHandshakeError as e:
                raise ClientError(f"server refused the WebSocket ({e.status}: {e.message})") from e
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                raise ClientError(
                    f"cannot connect to {url} ({type(e).__name__}: {e}); is `halfsec serve` running?"
                ) from e
            async with ws:
                await _converse(ws, pcm, opt, run)
    except ClientError as e:
        run.error = str(e)
    return run


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
    tp = new_traceparent()
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


async def sync_clock(
    ws: aiohttp.ClientWebSocketResponse, n: int, timeout_s: float = 5.0
) -> ClockSync:
    """``n`` sequential ping/pong exchanges; the fastest one fixes the offset."""
    exchanges: list[tuple[int, int, int]] = []
    for i in range(n):
        t_send = now_ns()
        await ws.send_str(ping_message(i, t_send))
        while True:
            try:
                ev = await _next_json(ws, timeout_s)
            except TimeoutError as e:
                raise ClientError(f"server never answered ping {i} within {timeout_s:.0f} s") from e
            if ev["type"] == PONG and ev.get("id") == i:
                t_recv = now_ns()
                exchanges.append((t_send, int(ev["t_server_ns"]), t_recv))
                break
    return best_clock(exchanges)


async def _converse(
    ws: aiohttp.ClientWebSocketResponse, pcm: np.ndarray, opt: ClientOptions, run: ClientRun
) -> None:
    await _handshake(ws, opt, run)
    run.clock = await sync_clock(ws, max(1, opt.pings))
    send_lock = asyncio.Lock()
    state = _TurnState()

    async def send_str(text: str) -> None:
        async with send_lock:
            await ws.send_str(text)

    run.t0_ns = now_ns() + int(opt.lead_ms * 1e6)
    timeline = PlaybackTimeline(run.output_rate, run.t0_ns)
    run.timeline = timeline
    opus_enc = None
    if opt.codec == "opus":
        from halfsec.lab.clients.webrtc import PLAY_RATE, ReplyPlayer
        from halfsec.wire.opus import OpusEncoder

        opus_enc = OpusEncoder(INTERNAL_RATE, fec=True, expected_loss_pct=5)
        run.output_rate = PLAY_RATE
        timeline = run.timeline = PlaybackTimeline(PLAY_RATE, run.t0_ns)
        run.player = ReplyPlayer(run, state)
    if run.tracer is not None:
        # The first turn's span starts at sample 0; its context replaces the bare one of
        # session.start (the server takes the latest context before speech starts).
        await send_str(trace_context_message(_turn_context(run, run.tracer, run.t0_ns)))
    receiver = asyncio.create_task(_receive(ws, run, state, send_str))

    async def send_frame(k: int, frame: np.ndarray) -> None:
        async with send_lock:
            if opus_enc is not None:
                await ws.send_bytes(encode_opus_in(k, k * 960, opus_enc.encode(frame)))
            else:
                await ws.send_bytes(encode_pcm16(frame))

    def check() -> None:
        if receiver.done():
            raise ClientError(run.closed_by_server or "connection lost")

    def playing() -> bool:
        if run.player is not None:
            return run.player.playing
        return now_ns() < timeline.playing_until_ns

    try:
        try:
            await stream_microphone(run, pcm, opt, state, playing, send_frame, check)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as e:
            raise ClientError(
                run.closed_by_server or f"connection lost while streaming ({type(e).__name__}: {e})"
            ) from e
        if run.closed_by_server:
            raise ClientError(run.closed_by_server)
        with contextlib.suppress(Exception):
            await send_str(session_end_message())
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver
        if run.player is not None:
            await run.player.close()


async def _receive(
    ws: aiohttp.ClientWebSocketResponse,
    run: ClientRun,
    state: _TurnState,
    send_str: Any,
) -> None:
    """Record every server message with the moment it was read."""
    timeline = run.timeline
    assert timeline is not None
    async for msg in ws:
        t = now_ns()
        if msg.type == aiohttp.WSMsgType.BINARY and run.player is not None:
            try:
                op = decode_opus_out(msg.data)
            except ProtocolError as e:
                run.events.append(Received(t, {"type": "_client_error", "message": e.message}))
                continue
            if op.turn_id not in run.player.marked:
                run.player.marked.add(op.turn_id)
                run.player.mark_turn(op.timestamp, op.turn_id, op.t_server_ns)
            run.player.push(op.seq, op.timestamp, op.packet)
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
                tp = _turn_context(run, run.tracer, t)
                with contextlib.suppress(Exception):
                    await send_str(trace_context_message(tp))
        else:
            break
    if run.closed_by_server is None and state.pending:
        run.closed_by_server = f"server closed the connection mid-turn (close code {ws.close_code})"
    elif run.closed_by_server is None:
        run.closed_by_server = f"server closed the connection (close code {ws.close_code})"


def client_cpu_s() -> float:
    """CPU time of this process (all threads): the bench's own footprint."""
    t = os.times()
    return float(t.user + t.system)
