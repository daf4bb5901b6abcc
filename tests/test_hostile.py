"""Hostile clients against a real server (issue 9, item 3): each test is one finding.

Every test here failed before its fix: a client that only pings held its slot for ever,
400 s of audio a second went straight to VAD, ``[[[[...`` ended the session with
``internal_error`` (HTTP 500 on ``/webrtc/offer``), a client that stopped reading froze
its session, a crashed sender went unnoticed, a lost packet followed by a bad one froze
the jitter buffer, 60 ms Opus packets took 20 ms slots, continuation audio escaped
``max_turn_s``, and the edge read Opus as PCM and sent its token over cleartext.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from rtc_offer import real_offer

from halfsec.audio.io import load_audio
from halfsec.audio.resample import resample
from halfsec.config import load_config
from halfsec.edge.gateway import EdgeError, EdgeOptions, start_edge
from halfsec.edge.origin_link import OriginOptions, OriginUnavailable, open_link
from halfsec.errors import AudioInputError
from halfsec.frames import EndOfTurn, TimingMark
from halfsec.lab.clients.options import ClientOptions
from halfsec.lab.clients.websocket import run_recording
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.runtime.engines import Engines
from halfsec.runtime.file_run import run_file
from halfsec.runtime.options import SessionOptions
from halfsec.runtime.session import MAX_QUEUED_FRAMES, VoiceSession
from halfsec.server.app import ServerOptions, VoiceServer, start_server
from halfsec.server.connection import ClientConnection
from halfsec.wire.audio_packets import encode_opus_in
from halfsec.wire.frame_decoders import OpusFrameDecoder
from halfsec.wire.jitter import JitterBuffer, JitterConfig, JitterPacket
from halfsec.wire.opus import MAX_PACKET_BYTES, OpusEncoder, packet_problem
from halfsec.wire.protocol import ping_message, session_start_message

SILENCE_20MS = np.zeros(320, np.int16)


@contextlib.asynccontextmanager
async def serving(engines: Engines, **kw: Any) -> AsyncIterator[tuple[VoiceServer, str]]:
    """An in-process server on a free loopback port; yields it and its base URL."""
    opts = ServerOptions(host="127.0.0.1", port=0, **kw)
    server, runner, port = await start_server(engines, load_config(), opts)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws"


async def next_event(ws: aiohttp.ClientWebSocketResponse, wait_s: float = 5.0) -> dict[str, Any]:
    """The next JSON event (binary audio skipped); fails if the connection ends."""
    while True:
        msg = await ws.receive(timeout=wait_s)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return dict(json.loads(msg.data))
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise AssertionError(f"connection ended: {msg.type} {msg.extra}")


async def events_until_closed(
    ws: aiohttp.ClientWebSocketResponse, wait_s: float
) -> list[dict[str, Any]]:
    """Every JSON event until the server closes the connection (fails after ``wait_s``;
    a deadline, since aiohttp restarts ``receive``'s own timeout at every PONG)."""
    out: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(wait_s):
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    out.append(json.loads(msg.data))
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    return out
    except TimeoutError:
        raise AssertionError(f"still open after {wait_s} s; events: {out}") from None


async def keep_pinging(ws: aiohttp.ClientWebSocketResponse) -> None:
    """WebSocket PING control frames every 200 ms (what a keep-alive proxy sends)."""
    with contextlib.suppress(Exception):
        while not ws.closed:
            await ws.ping()
            await asyncio.sleep(0.2)


async def until(cond: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return bool(cond())


# -- timeouts that pings cannot extend ----------------------------------------------------
async def test_pinging_sockets_that_never_start_are_closed_on_time(engines: Engines) -> None:
    async with (
        serving(engines, start_timeout_s=1.0, max_sessions=2) as (server, base),
        aiohttp.ClientSession() as http,
    ):
        squatters = [await http.ws_connect(ws_url(base)) for _ in range(2)]
        pingers = [asyncio.create_task(keep_pinging(ws)) for ws in squatters]
        try:
            with pytest.raises(aiohttp.WSServerHandshakeError) as full:
                await http.ws_connect(ws_url(base))
            assert full.value.status == 503
            t0 = time.monotonic()
            for ws in squatters:
                events = await events_until_closed(ws, 4.0)
                assert [(e["code"], e["fatal"]) for e in events] == [("start_timeout", True)]
            assert time.monotonic() - t0 < 3.0
        finally:
            for p in pingers:
                p.cancel()
            for ws in squatters:
                await ws.close()
        assert await until(lambda: server.session_count == 0, 2.0)
        ws = await http.ws_connect(ws_url(base))  # the slots are free again
        await ws.send_str(session_start_message())
        assert (await next_event(ws))["type"] == "session.started"
        await ws.close()


async def test_idle_timeout_fires_while_the_client_only_pings(engines: Engines) -> None:
    async with (
        serving(engines, idle_timeout_s=1.0) as (_server, base),
        aiohttp.ClientSession() as http,
    ):
        ws = await http.ws_connect(ws_url(base))
        await ws.send_str(session_start_message())
        assert (await next_event(ws))["type"] == "session.started"
        pinger = asyncio.create_task(keep_pinging(ws))
        try:
            t0 = time.monotonic()
            events = await events_until_closed(ws, 4.0)
        finally:
            pinger.cancel()
            await ws.close()
        assert [(e["code"], e["fatal"]) for e in events if e["type"] == "error"] == [
            ("idle_timeout", True)
        ]
        assert time.monotonic() - t0 < 3.0


# -- a client that stops reading ----------------------------------------------------------
def ws_text_frame(text: str) -> bytes:
    """One masked client->server WebSocket text frame (RFC 6455 5.2)."""
    payload = np.frombuffer(text.encode(), np.uint8)
    mask = np.frombuffer(os.urandom(4), np.uint8)
    n = payload.size
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask.tobytes() + (payload ^ np.resize(mask, n)).tobytes()


async def raw_websocket(base: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that does nothing it is not told to (aiohttp's reads for us,
    and its close waits for buffers a test wants to leave full)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def test_a_client_that_stops_reading_is_dropped_and_frees_its_slot(
    engines: Engines,
) -> None:
    """Each message with a 60 kB unknown type is answered with an error that quotes it;
    the client never reads, so once the socket buffers are full the server's writes
    block.  The write timeout must drop the connection (before: the receive loop waited
    on that write for ever, so not even the idle timeout fired, and the slot was lost)."""
    async with (
        serving(engines, max_sessions=1, write_timeout_s=1.0, max_messages_per_s=100_000) as (
            server,
            base,
        ),
        aiohttp.ClientSession() as http,
    ):
        _reader, writer = await raw_websocket(base)
        writer.write(ws_text_frame(session_start_message()))
        echo = ws_text_frame(json.dumps({"type": "x" * 60_000}))

        async def flood() -> None:
            with contextlib.suppress(Exception):
                for _ in range(1000):  # 60 MB: far more than loopback buffers hold
                    writer.write(echo)
                    await writer.drain()

        flooder = asyncio.create_task(flood())
        try:
            assert await until(lambda: server.session_count == 1, 5.0)
            assert await until(lambda: server.session_count == 0, 20.0), "the session is stuck"
        finally:
            flooder.cancel()
            writer.transport.abort()
        other = await http.ws_connect(ws_url(base))
        await other.send_str(session_start_message())
        assert (await next_event(other))["type"] == "session.started"
        await other.close()


# -- real-time admission of audio -----------------------------------------------------------
async def test_audio_faster_than_real_time_is_refused_and_others_keep_pace(
    engines: Engines,
) -> None:
    async with serving(engines) as (server, base), aiohttp.ClientSession() as http:
        flooder = await http.ws_connect(ws_url(base))
        await flooder.send_str(session_start_message(16000))
        started = await next_event(flooder)
        conn = server.sessions[started["session_id"]]
        other = await http.ws_connect(ws_url(base))
        await other.send_str(session_start_message(16000))
        assert (await next_event(other))["type"] == "session.started"

        rtts: list[float] = []

        async def ping_other() -> None:
            for i in range(20):
                t = time.monotonic()
                await other.send_str(ping_message(i, 0))
                ev = await next_event(other)
                assert ev["type"] == "pong", ev
                rtts.append(time.monotonic() - t)
                await asyncio.sleep(0.05)

        pinger = asyncio.create_task(ping_other())
        t0 = time.monotonic()
        two_s = np.zeros(32_000, np.int16).astype("<i2").tobytes()  # 64,000 bytes = 2 s
        for _ in range(60):  # 120 s of audio, as fast as the socket takes it
            await flooder.send_bytes(two_s)
        codes = set()
        with contextlib.suppress(TimeoutError):
            while "rate_limited" not in codes:
                ev = await next_event(flooder, 3.0)
                if ev["type"] == "error":
                    assert not ev["fatal"], ev
                    codes.add(ev["code"])
        await pinger
        elapsed_ms = (time.monotonic() - t0) * 1e3
        assert codes == {"rate_limited"}, codes
        assert conn.session is not None
        # The burst (5 s), 1.5x real time since, and the one message that went into debt.
        assert conn.session.position_ms <= 5000 + 1.5 * elapsed_ms + 2000, (
            conn.session.position_ms,
            elapsed_ms,
        )
        assert max(rtts) < 1.0, rtts
        await flooder.send_str(ping_message(99, 0))  # the flooder's session goes on
        while (ev := await next_event(flooder))["type"] != "pong":
            pass
        await flooder.close()
        await other.close()


async def test_a_long_push_lets_other_sessions_run(engines: Engines) -> None:
    """VAD runs on the event loop every session shares: a 4 s chunk must not hold it for
    its 200 frames at once."""
    session = VoiceSession(engines)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await session.push(np.zeros(16_000 * 4, np.int16))
    during = ticks - before
    task.cancel()
    await session.close()
    assert during >= 30, during


async def test_the_event_queue_is_bounded_with_back_pressure(engines: Engines) -> None:
    """Events nobody reads (a transport whose client stopped reading) stop the input
    instead of piling up; reading them lets the input go on."""
    session = VoiceSession(engines)
    for _ in range(MAX_QUEUED_FRAMES):
        session._emit(TimingMark(turn_id=0, name="filler"))  # what a busy turn emits
    push = asyncio.create_task(session.push(SILENCE_20MS))
    await asyncio.sleep(0.3)
    assert not push.done(), "push went on with the queue full"
    events = session.events()
    for _ in range(MAX_QUEUED_FRAMES // 2 + 1):
        await anext(events)
    await asyncio.wait_for(push, 2.0)
    await session.close()


# -- malformed input ---------------------------------------------------------------------
async def test_deeply_nested_json_is_a_protocol_error(engines: Engines) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    async with serving(engines) as (_server, base), aiohttp.ClientSession() as http:
        ws = await http.ws_connect(ws_url(base))
        await ws.send_str(deep[:60_000])
        ev = await next_event(ws)
        assert (ev["code"], ev["fatal"]) == ("bad_json", False), ev
        await ws.send_str(session_start_message())
        assert (await next_event(ws))["type"] == "session.started"
        await ws.send_str('{"type": "ping", "id": ' + "[" * 50_000 + "}")
        ev = await next_event(ws)
        assert (ev["code"], ev["fatal"]) == ("bad_json", False), ev
        await ws.close()
        body = '{"type": "offer", "sdp": ' + "[" * 50_000
        async with http.post(f"{base}/webrtc/offer", data=body) as r:
            assert r.status == 400, await r.text()
            assert "nested" in (await r.json())["error"]


async def _chunks(parts: list[bytes], pause_s: float = 0.05) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
        await asyncio.sleep(pause_s)


async def test_offer_body_is_read_whole_and_capped(engines: Engines) -> None:
    body = json.dumps({"type": "answer", "sdp": "v=0"}).encode()
    async with serving(engines) as (server, base), aiohttp.ClientSession() as http:
        url = f"{base}/webrtc/offer"
        # Chunked, slowly: the whole body is JSON, so the answer is about the offer.
        async with http.post(url, data=_chunks([body[:5], body[5:12], body[12:]])) as r:
            assert r.status == 400
            assert "expected {'sdp'" in (await r.json())["error"]
        big = b'{"sdp": "' + b"a" * 70_000 + b'", "type": "offer"}'
        async with http.post(
            url, data=_chunks([big[i : i + 8192] for i in range(0, 80_000, 8192)])
        ) as r:
            assert r.status == 413, await r.text()
        async with http.post(url, data=big) as r:
            assert r.status == 413
        assert server.session_count == 0


async def test_offer_token_is_checked_before_the_body_is_parsed(engines: Engines) -> None:
    async with (
        serving(engines, token="s3cret") as (_server, base),
        aiohttp.ClientSession() as http,
    ):
        url = f"{base}/webrtc/offer"
        for body in ("{not json", "[" * 50_000):
            async with http.post(url, data=body, headers={"Authorization": "Bearer no"}) as r:
                assert r.status == 401, (body[:10], r.status)
            async with http.post(url + "?token=no", data=body) as r:
                assert r.status == 401, (body[:10], r.status)
        # A token in the body is still honoured (a browser page cannot set headers).
        async with http.post(url, json={"token": "no", "type": "offer", "sdp": "v=0"}) as r:
            assert r.status == 401
        async with http.post(url, json={"token": "s3cret", "type": "offer", "sdp": "v=0"}) as r:
            assert r.status == 400


async def test_offers_that_would_leave_aiortc_without_a_transport_are_refused_first(
    engines: Engines,
) -> None:
    """Found by the fuzz suite: an m-line without a mid, two with one mid, or one of an
    unknown kind left a transceiver or the data channel without a transport, and the
    connect task aiortc schedules inside setRemoteDescription raised into the loop."""
    offer = await real_offer()
    mids = [line for line in offer.split("\r\n") if line.startswith("a=mid:")]
    broken = [
        offer.replace(mids[0] + "\r\n", "", 1),  # no mid on the audio m-line
        offer.replace(mids[1], mids[0]),  # both m-lines mid 0
        offer.replace("m=audio", "m=audiox", 1),  # an unknown kind
    ]
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: unhandled.append(ctx))
    try:
        async with serving(engines) as (server, base), aiohttp.ClientSession() as http:
            for sdp in broken:
                async with http.post(
                    f"{base}/webrtc/offer", json={"sdp": sdp, "type": "offer"}
                ) as r:
                    assert r.status == 400, await r.text()
            await asyncio.sleep(0.5)
            assert server.session_count == 0
    finally:
        loop.set_exception_handler(previous)
    assert not unhandled, unhandled


# -- supervised per-session tasks ---------------------------------------------------------
async def test_a_crashed_sender_ends_its_session_and_the_server_lives_on(
    engines: Engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_sender(self: ClientConnection, started: dict[str, Any] | None) -> None:
        raise RuntimeError("sender bug")

    async with serving(engines) as (server, base), aiohttp.ClientSession() as http:
        monkeypatch.setattr(ClientConnection, "run_sender", broken_sender)
        ws = await http.ws_connect(ws_url(base))
        await ws.send_str(session_start_message())
        events = await events_until_closed(ws, 5.0)
        errors = [e for e in events if e["type"] == "error"]
        assert [(e["code"], e["fatal"]) for e in errors] == [("internal_error", True)], events
        assert "sender bug" in errors[0]["message"]
        assert await until(lambda: server.session_count == 0, 3.0)
        monkeypatch.undo()
        ws = await http.ws_connect(ws_url(base))
        await ws.send_str(session_start_message())
        assert (await next_event(ws))["type"] == "session.started"
        await ws.close()


async def test_a_crashed_pacer_ends_its_session(
    engines: Engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    from halfsec.server import websocket

    async def broken_pacer(*args: Any, **kw: Any) -> None:
        raise RuntimeError("pacer bug")

    monkeypatch.setattr(websocket, "send_paced_opus", broken_pacer)
    async with serving(engines) as (server, base), aiohttp.ClientSession() as http:
        ws = await http.ws_connect(ws_url(base))
        await ws.send_str(session_start_message(48000, None, "pcm16", "opus"))
        events = await events_until_closed(ws, 5.0)
        errors = [(e["code"], e["fatal"]) for e in events if e["type"] == "error"]
        assert errors == [("internal_error", True)], events
        assert await until(lambda: server.session_count == 0, 3.0)


# -- Opus and the jitter buffer -----------------------------------------------------------
def _opus_packets(n: int) -> list[bytes]:
    enc = OpusEncoder(16000, fec=True, expected_loss_pct=10)
    t = np.arange(320 * n) / 16000
    tone = (3000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    return [enc.encode(tone[i * 320 : (i + 1) * 320]) for i in range(n)]


def test_a_lost_packet_then_an_undecodable_one_does_not_freeze_the_buffer() -> None:
    """Packet 10 is lost and 11 does not decode: FEC of 10 from 11 fails.  That failure
    used to leave the buffer on 10, concealing it at every pop until 500 packets later."""
    clock = [0]
    buf = JitterBuffer(OpusFrameDecoder(16000), JitterConfig(), clock=lambda: clock[0])
    good = _opus_packets(50)
    for k in range(60):  # one packet arrives and one frame plays every 20 ms
        clock[0] = k * 20_000_000
        if k < 50 and k != 10:
            payload = b"\xff\xfe garbage" if k == 11 else good[k]  # bypasses the door
            buf.push(JitterPacket(k, k * 960, payload))
        with contextlib.suppress(AudioInputError):  # as wire.playout does: conceal, go on
            buf.pop()
    assert buf.stats.malformed == 1
    assert buf.stats.decoded == 48, buf.stats  # every good packet played, none frozen


def test_opus_packets_are_checked_at_the_door() -> None:
    assert packet_problem(_opus_packets(1)[0]) is None
    sixty = OpusEncoder(48000, frame_ms=60).encode(np.zeros(2880, np.int16))
    assert "60 ms" in (packet_problem(sixty) or "")
    # 120 ms: six 20 ms frames in one code-3 packet (CBR, count 6).
    silk20 = _opus_packets(1)[0]
    frame = silk20[1:]
    code3 = bytes([(silk20[0] & 0xFC) | 3, 6]) + frame * 6
    assert "120 ms" in (packet_problem(code3) or "")
    assert "exceeds" in (packet_problem(bytes(MAX_PACKET_BYTES + 1)) or "")
    assert packet_problem(b"") is not None


async def test_opus_over_the_websocket_refuses_wrong_packets_at_once(engines: Engines) -> None:
    async with serving(engines) as (server, base), aiohttp.ClientSession() as http:
        ws = await http.ws_connect(ws_url(base))
        await ws.send_str(session_start_message(48000, None, "opus", "pcm16"))
        started = await next_event(ws)
        conn = server.sessions[started["session_id"]]
        sixty = OpusEncoder(48000, frame_ms=60).encode(np.zeros(2880, np.int16))
        for seq, packet in enumerate((sixty, bytes(2000), b"\x00" * 64_000)):
            await ws.send_bytes(encode_opus_in(seq, seq * 960, packet))
            ev = await next_event(ws)
            assert (ev["code"], ev["fatal"]) == ("bad_audio", False), ev
        assert conn.inbound is not None
        assert conn.inbound.buffer.buffered == 0, "refused packets must not be buffered"
        assert conn.inbound.buffer.stats.malformed == 3
        await ws.close()


# -- max_turn_s ---------------------------------------------------------------------------
async def _speech(engines: Engines, text: str) -> np.ndarray:
    chunks = [c async for c in engines.tts.synthesize(text)]
    pcm = resample(np.concatenate(chunks).astype(np.int16), engines.tts.sample_rate, 16_000)
    pcm = pcm.astype(np.int16)
    b = voiced_bounds(pcm)
    assert b is not None
    return pcm[max(0, b[0] - 800) : b[1]]


async def test_continuation_audio_counts_towards_max_turn_s(engines: Engines) -> None:
    """'A small latte.' is answered, then 'Make it iced please.' barges in within the
    continuation window and carries the first phrase along: together they are longer
    than max_turn_s, each alone is not."""
    first = await _speech(engines, "A small latte.")
    second = await _speech(engines, "Make it iced, please.")
    a_s, b_s = first.size / 16000, second.size / 16000
    max_turn_s = max(a_s, b_s) + 0.35
    assert max_turn_s < a_s + b_s - 0.3, (a_s, b_s)
    silence = np.zeros(int(16000 * 0.7), np.int16)
    pcm = np.concatenate([silence, first, silence, second, silence])
    session = VoiceSession(engines, options=SessionOptions(max_turn_s=max_turn_s))
    frames: list[Any] = []
    real_emit = session._emit

    def tap(frame: Any) -> None:
        frames.append(frame)
        real_emit(frame)

    session._emit = tap  # type: ignore[method-assign]
    run = await run_file(session, pcm)
    assert run.interruptions, "the second phrase barged in and continued the first"
    reasons = [f.reason for f in frames if isinstance(f, EndOfTurn)]
    assert reasons[0] != "max_turn_length", reasons
    assert "max_turn_length" in reasons[1:], reasons


# -- the edge -------------------------------------------------------------------------------
async def test_the_edge_never_sends_its_token_over_cleartext_to_a_remote_origin() -> None:
    with pytest.raises(EdgeError, match="wss://"):
        EdgeOptions(origin="ws://203.0.113.7:8765/ws", origin_token="t")
    EdgeOptions(origin="wss://203.0.113.7:8765/ws", origin_token="t")
    EdgeOptions(origin="ws://127.0.0.1:8765/ws", origin_token="t")
    EdgeOptions(origin="ws://203.0.113.7:8765/ws")  # no token, nothing to leak
    t0 = time.monotonic()
    with pytest.raises(OriginUnavailable, match="cleartext"):
        await open_link(OriginOptions(url="ws://203.0.113.7:8765/ws", token="t"))
    assert time.monotonic() - t0 < 1.0, "refused before connecting"


async def test_the_edge_honours_opus_both_ways(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    coffee = sorted(
        (r for r in rows if r["intent"] == "orderDrink"), key=lambda r: float(r["duration_s"])
    )[0]
    pcm = load_audio(speech_dir / coffee["file"])
    b = voiced_bounds(pcm)
    assert b is not None
    pcm = pcm[max(0, b[0] - 4800) : b[1] + 16000]
    _origin, o_runner, o_port = await start_server(
        engines, load_config(), ServerOptions(host="127.0.0.1", port=0)
    )
    edge, e_runner, e_port = await start_edge(
        EdgeOptions(origin=f"ws://127.0.0.1:{o_port}/ws", port=0)
    )
    try:
        assert await until(lambda: edge.pool.warm >= 1, 10.0)
        run = await run_recording(f"ws://127.0.0.1:{e_port}/ws", pcm, ClientOptions(codec="opus"))
    finally:
        await e_runner.cleanup()
        await o_runner.cleanup()
    assert run.error is None, run.error
    assert not run.events_of("error"), run.events_of("error")
    assert run.events_of("intent")[-1]["intent"] == "orderDrink"
    assert run.jitter is not None and run.jitter.stats.decoded > 50, "HSO1 replies, paced"
