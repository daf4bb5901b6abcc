"""The lab's phone client: plays a recording into ``/twilio`` as Twilio plays a call.

It speaks Twilio Media Streams (``wire.twilio``) from Twilio's side: ``connected``,
``start``, then a ``media`` message every 20 ms carrying the recording as a phone line
would (``telephone_band``: 8 kHz, 300-3400 Hz, mu-law), then ``stop``.  Reply ``media``
is decoded and placed on the playback timeline where it arrived, back to back, as
Twilio plays its buffer; a ``clear`` stops that playback; each ``mark`` goes back when
the playback reaches it (``mark_echo``).

It is measured as every other client is: the microphone loop, the turn state, the clock
sync and the record are the shared ones (``microphone``, ``turn_state``,
``clock_sync``, ``lab.bench.records``), and voice-to-voice is the first audible sample
of what it played after the recording's reference end of speech.  What Twilio's
messages lack (turn ids, server times, transcripts, pongs) comes through the protocol's
lab extension (``halfsec_events=1``): the session's events wrapped, and a
``reply.audio`` event before each run of reply media naming its turn and send time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from typing import Any

import aiohttp
import numpy as np
from opentelemetry import trace

from halfsec.audio.timeline import PlaybackTimeline
from halfsec.clock import now_ns
from halfsec.lab.clients.client_run import ClientRun, Received
from halfsec.lab.clients.clock_sync import sync_clock
from halfsec.lab.clients.errors import ClientError
from halfsec.lab.clients.mark_echo import MarkEcho
from halfsec.lab.clients.options import ClientOptions
from halfsec.lab.clients.telephone_band import telephone_band
from halfsec.lab.clients.turn_state import TurnState
from halfsec.lab.clients.websocket import open_websocket, stream_over_websocket, turn_context
from halfsec.wire.mulaw import MULAW_RATE, MULAW_SILENCE, mulaw_decode, mulaw_encode
from halfsec.wire.protocol import SESSION_STARTED, trace_context_message
from halfsec.wire.twilio import (
    LAB_PARAMETER,
    MEDIA_CHUNK_BYTES,
    TOKEN_PARAMETER,
    Clear,
    LabMessage,
    Mark,
    ReplyMedia,
    TwilioProtocolError,
    caller_media_message,
    connected_message,
    lab_message,
    mark_played_message,
    parse_stream_message,
    start_message,
    stop_message,
)

_CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


class _Call:
    """One call's socket, ids and Twilio's message counter."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.call_sid = "CA" + uuid.uuid4().hex
        self._sequence = itertools.count(1)
        self._lock = asyncio.Lock()

    def sequence(self) -> int:
        return next(self._sequence)

    async def send(self, text: str) -> None:
        async with self._lock:
            await self.ws.send_str(text)

    async def send_lab(self, text: str) -> None:
        """A WebSocket-protocol message (``ping``, ``trace.context``), wrapped."""
        await self.send(lab_message(self.stream_sid, json.loads(text)))

    def closed_reason(self, extra: object) -> str:
        return f"server closed the stream ({self.ws.close_code}: {extra or ''})"

    async def next_lab(self, wait_s: float) -> dict[str, Any]:
        """The next wrapped event (nothing else is sent before the call's audio)."""
        while True:
            msg = await self.ws.receive(timeout=wait_s)
            if msg.type in _CLOSED:
                raise ClientError(self.closed_reason(msg.extra))
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ClientError(f"unexpected {msg.type.name} message from the server")
            try:
                m = parse_stream_message(msg.data, self.stream_sid)
            except TwilioProtocolError as e:
                raise ClientError(f"server broke the Media Streams protocol: {e}") from e
            if isinstance(m, LabMessage):
                return m.body


async def run_recording_twilio(
    url: str,
    pcm: np.ndarray,
    options: ClientOptions | None = None,
    tracer: trace.Tracer | None = None,
) -> ClientRun:
    """Play ``pcm`` (16 kHz int16) as a phone call into ``url`` (``ws://.../twilio``).

    Never raises for server misbehaviour: ``ClientRun.error`` says what went wrong."""
    opt = options or ClientOptions()
    run = ClientRun(tracer=tracer)
    headers = {"Origin": opt.origin} if opt.origin else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=opt.connect_timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with await open_websocket(http, url, headers) as ws:
                await _converse(_Call(ws), pcm, opt, run)
    except ClientError as e:
        run.error = str(e)
    return run


async def _start(call: _Call, opt: ClientOptions, run: ClientRun) -> None:
    """``connected`` and ``start`` (token and lab extension as custom parameters), then
    the server's ``session.started``."""
    params = {LAB_PARAMETER: "1"}
    if opt.token:
        params[TOKEN_PARAMETER] = opt.token
    await call.send(connected_message())
    await call.send(start_message(call.stream_sid, call.call_sid, params, call.sequence()))
    try:
        ev = await call.next_lab(opt.connect_timeout_s)
    except TimeoutError as e:
        raise ClientError(
            f"server never answered start within {opt.connect_timeout_s:.0f} s"
        ) from e
    if ev["type"] == "error":
        raise ClientError(f"server rejected start: {ev.get('code')}: {ev.get('message')}")
    if ev["type"] != SESSION_STARTED:
        raise ClientError(f"expected session.started after start, got {ev['type']!r}")
    run.session_id = str(ev.get("session_id", ""))
    run.domain = ev.get("domain")


async def _converse(call: _Call, pcm: np.ndarray, opt: ClientOptions, run: ClientRun) -> None:
    await _start(call, opt, run)
    run.clock = await sync_clock(max(1, opt.pings), call.send_lab, call.next_lab)
    state = TurnState()
    phone = mulaw_encode(telephone_band(pcm))
    run.output_rate = MULAW_RATE
    run.t0_ns = now_ns() + int(opt.lead_ms * 1e6)
    timeline = run.timeline = PlaybackTimeline(MULAW_RATE, run.t0_ns)

    async def echo_mark(name: str) -> None:
        await call.send(mark_played_message(call.stream_sid, call.sequence(), name))

    echo = MarkEcho(run, echo_mark)
    tp = turn_context(run, run.tracer, run.t0_ns)
    await call.send_lab(trace_context_message(tp))
    receiver = asyncio.create_task(_receive(call, run, state, echo))

    async def send_frame(k: int, frame: np.ndarray) -> None:
        chunk = phone[k * MEDIA_CHUNK_BYTES : (k + 1) * MEDIA_CHUNK_BYTES]
        chunk += bytes([MULAW_SILENCE]) * (MEDIA_CHUNK_BYTES - len(chunk))
        ms = k * MEDIA_CHUNK_BYTES * 1000 // MULAW_RATE
        await call.send(caller_media_message(call.stream_sid, call.sequence(), k + 1, ms, chunk))

    def check() -> None:
        if receiver.done():
            raise ClientError(run.closed_by_server or "connection lost")

    def playing() -> bool:
        return now_ns() < timeline.playing_until_ns

    try:
        await stream_over_websocket(run, pcm, opt, state, playing, send_frame, check)
        await echo.settle()
        with contextlib.suppress(Exception):
            await call.send(stop_message(call.stream_sid, call.call_sid, call.sequence()))
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiver
        await echo.close()


async def _receive(call: _Call, run: ClientRun, state: TurnState, echo: MarkEcho) -> None:
    """Play the reply media, answer marks and clears, and record every event with the
    moment it was read."""
    timeline = run.timeline
    assert timeline is not None
    turn_id, t_server_ns = 0, 0  # of the media that follow (from ``reply.audio``)
    while True:
        msg = await call.ws.receive()
        t = now_ns()
        if msg.type in _CLOSED or msg.type == aiohttp.WSMsgType.ERROR:
            if run.closed_by_server is None:
                mid_turn = " mid-turn" if state.pending else ""
                run.closed_by_server = call.closed_reason(msg.extra) + mid_turn
            return
        try:
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise TwilioProtocolError("bad_message", "Media Streams messages are JSON text")
            m = parse_stream_message(msg.data, call.stream_sid)
        except TwilioProtocolError as e:
            run.events.append(Received(t, {"type": "_client_error", "message": e.message}))
            continue
        if isinstance(m, ReplyMedia):
            if turn_id in state.interrupted:
                continue
            pcm = mulaw_decode(m.payload)
            start = timeline.place(pcm, t, turn_id)
            run.packets.append(Received(t, None, turn_id, t_server_ns, start, pcm.size))
        elif isinstance(m, Mark):
            echo.mark(m.name)
        elif isinstance(m, Clear):
            timeline.stop(t)
            echo.clear()
            run.events.append(Received(t, {"type": "clear", "turn_id": turn_id}, turn_id))
        else:
            ev = m.body
            tid, t_srv = int(ev.get("turn_id", 0) or 0), int(ev.get("t_server_ns", 0) or 0)
            run.events.append(Received(t, ev, tid, t_srv))
            if ev["type"] == "reply.audio":
                turn_id, t_server_ns = tid, t_srv
            elif state.apply(ev, t, run):
                # A fresh trace context parents the *next* turn's spans.
                with contextlib.suppress(Exception):
                    await call.send_lab(trace_context_message(turn_context(run, run.tracer, t)))
