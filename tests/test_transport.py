"""The WebSocket transport with real engines and real speech, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from halfsec.audio.io import load_audio
from halfsec.clock import now_ns
from halfsec.config import load_config
from halfsec.frames import (
    EndOfTurn,
    ErrorFrame,
    FinalTranscript,
    IntentFrame,
    Interruption,
    PartialTranscript,
    ReplyAudio,
    ReplyDone,
    ReplyText,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TimingMark,
)
from halfsec.lab.clients.options import ClientOptions
from halfsec.lab.clients.websocket import run_recording
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.runtime.engines import Engines
from halfsec.server.admission import origin_allowed
from halfsec.server.app import ServeError, ServerOptions, VoiceServer, check_bind, start_server
from halfsec.wire.audio_packets import (
    AUDIO_HEADER_BYTES,
    decode_audio,
    encode_audio,
)
from halfsec.wire.protocol import (
    PlaybackDone,
    ProtocolError,
    frame_to_event,
    parse_client_message,
    playback_done_message,
    session_start_message,
)


@contextlib.asynccontextmanager
async def serving(engines: Engines, **kw: Any) -> AsyncIterator[tuple[VoiceServer, str]]:
    """An in-process server on a free loopback port (client and server share the loop:
    fine for behaviour tests; latency is measured out of process in test_bench)."""
    opts = ServerOptions(host="127.0.0.1", port=0, **kw)
    server, runner, port = await start_server(engines, load_config(), opts)
    try:
        yield server, f"ws://127.0.0.1:{port}/ws"
    finally:
        await runner.cleanup()


def _coffee(
    rows: list[dict[str, str]], speech_dir: Path, n: int
) -> tuple[np.ndarray, dict[str, str]]:
    """The n-th shortest coffee order, cut to 0.3 s before and 1 s after the speech."""
    coffee = sorted(
        (r for r in rows if r["intent"] == "orderDrink"), key=lambda r: float(r["duration_s"])
    )
    row = coffee[n]
    pcm = load_audio(speech_dir / row["file"])
    b = voiced_bounds(pcm)
    assert b is not None
    return pcm[max(0, b[0] - 4800) : b[1] + 16000], row


def _slots(row: dict[str, str]) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in row["slots"].split(";") if kv)


async def _drained(server: VoiceServer) -> bool:
    """Sessions end asynchronously after the client's close; wait up to 2 s."""
    for _ in range(100):
        if not server.sessions:
            return True
        await asyncio.sleep(0.02)
    return False


async def _json(ws: aiohttp.ClientWebSocketResponse, wait_s: float = 5.0) -> dict[str, Any]:
    while True:
        msg = await ws.receive(timeout=wait_s)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return dict(json.loads(msg.data))
        if msg.type != aiohttp.WSMsgType.BINARY:
            raise AssertionError(f"connection ended: {msg.type} {msg.extra}")


# -- protocol unit checks -----------------------------------------------------------------
def test_audio_header_round_trip() -> None:
    pcm = np.arange(-50, 50, dtype=np.int16)
    data = encode_audio(7, 123456789012, pcm)
    assert data[:4] == b"HSA1" and AUDIO_HEADER_BYTES == 16
    assert int.from_bytes(data[4:8], "little") == 7
    assert int.from_bytes(data[8:16], "little") == 123456789012
    pkt = decode_audio(data)
    assert pkt.turn_id == 7 and pkt.t_server_ns == 123456789012
    assert np.array_equal(pkt.pcm, pcm)
    with pytest.raises(ProtocolError):
        decode_audio(b"XXXX" + data[4:])
    with pytest.raises(ProtocolError):
        decode_audio(data + b"\x00")


def test_every_frame_type_has_one_event_with_turn_and_time() -> None:
    frames = [
        SpeechStarted(turn_id=1, audio_ms=1.0),
        SpeechPaused(turn_id=1, audio_ms=2.0, speech_end_ms=1.5),
        SpeechResumed(turn_id=1, audio_ms=3.0),
        EndOfTurn(turn_id=1, audio_ms=4.0, speech_end_ms=3.5, reason="silence"),
        PartialTranscript(turn_id=1, text="a"),
        FinalTranscript(turn_id=1, text="a b", stt_ms=3.0),
        IntentFrame(turn_id=1, intent="orderDrink", slots={"size": "large"}, confidence=1.0),
        ReplyText(turn_id=1, text="Got it.", index=0, source="domain"),
        ReplyDone(turn_id=1, text="Got it."),
        Interruption(turn_id=1, audio_ms=5.0, cancel_ms=1.0),
        TimingMark(turn_id=1, name="stt.end", attrs={"x": object()}),
        ErrorFrame(turn_id=1, code="c", message="m"),
    ]
    types = set()
    for f in frames:
        ev = frame_to_event(f)
        assert ev is not None
        assert ev["turn_id"] == 1 and ev["t_server_ns"] == f.t_ns
        json.dumps(ev)  # always serialisable, even with odd attrs
        types.add(ev["type"])
    assert len(types) == len(frames)
    audio = ReplyAudio(turn_id=1, pcm=np.zeros(4, np.int16), sample_rate=16000, clause_index=0)
    assert frame_to_event(audio) is None


def test_client_message_validation() -> None:
    for bad, code in [
        ("{nope", "bad_json"),
        ("[1]", "bad_message"),
        ('{"type":"dance"}', "unknown_type"),
        ('{"type":"session.start","sample_rate":16000,"encoding":"flac"}', "unsupported_encoding"),
        ('{"type":"session.start","sample_rate":16000,"encoding":"opus"}', "bad_sample_rate"),
        ('{"type":"session.start","sample_rate":1000000,"encoding":"pcm16"}', "bad_sample_rate"),
        ('{"type":"session.start","protocol":2,"sample_rate":16000}', "unsupported_protocol"),
        ('{"type":"trace.context","traceparent":"00-xyz"}', "bad_traceparent"),
        ('{"type":"ping","id":"a","t_client_ns":1}', "bad_ping"),
        ('{"type":"playback.done"}', "bad_playback_done"),
        ('{"type":"playback.done","turn_id":0}', "bad_playback_done"),
        ('{"type":"playback.done","turn_id":true}', "bad_playback_done"),
        ('{"type":"playback.done","turn_id":4294967296}', "bad_playback_done"),
    ]:
        with pytest.raises(ProtocolError) as e:
            parse_client_message(bad)
        assert e.value.code == code, bad
    assert parse_client_message(session_start_message(44100)).sample_rate == 44100  # type: ignore[union-attr]
    assert parse_client_message(playback_done_message(7)) == PlaybackDone(turn_id=7)


def test_non_loopback_bind_without_token_is_refused() -> None:
    with pytest.raises(ServeError, match="--token"):
        check_bind(ServerOptions(host="0.0.0.0"))
    check_bind(ServerOptions(host="0.0.0.0", token="s3cret"))
    check_bind(ServerOptions(host="127.0.0.1"))
    check_bind(ServerOptions(host="::1"))
    # The command refuses before loading any model, with the reason on stderr.
    p = subprocess.run(
        [sys.executable, "-m", "halfsec.cli.main", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2, p
    assert "--token" in p.stderr and "0.0.0.0" in p.stderr


def test_origin_rules() -> None:
    assert origin_allowed(None, ())  # not a browser
    assert origin_allowed("http://localhost:5173", ())
    assert origin_allowed("http://127.0.0.1:8765", ())
    assert not origin_allowed("https://evil.example", ())
    assert origin_allowed("https://app.example", ("https://app.example",))
    assert not origin_allowed("http://localhost:5173", ("https://app.example",))
    assert origin_allowed("https://any.example", ("*",))


# -- real sessions ------------------------------------------------------------------------
async def test_spoken_reply_over_websocket(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    pcm, row = _coffee(rows, speech_dir, 0)
    async with serving(engines) as (_server, url):
        run = await run_recording(url, pcm)
    assert run.error is None, run.error
    finals = run.events_of("transcript.final")
    intents = run.events_of("intent")
    assert finals and intents
    assert intents[-1]["intent"] == "orderDrink"
    assert intents[-1]["slots"].get("coffeeDrink") == _slots(row)["coffeeDrink"]
    assert run.events_of("reply.done") and run.events_of("turn.end")
    assert run.packets, "reply audio must arrive as HSA1 binary packets"
    assert all(p.t_server_ns > 0 and p.turn_id >= 1 for p in run.packets)
    # Every JSON event carries turn_id and the server's monotonic time.
    for r in run.events:
        assert r.event is not None and "turn_id" in r.event and "t_server_ns" in r.event
    audio = run.received_audio()
    b = voiced_bounds(pcm)
    assert b is not None
    assert np.abs(audio[b[1] :].astype(np.int32)).max() > 1000, "the reply is audible"
    assert run.clock is not None and run.clock.samples >= 8


async def test_two_sessions_at_once(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    (a, ra), (b, rb) = _coffee(rows, speech_dir, 0), _coffee(rows, speech_dir, 3)
    async with serving(engines) as (server, url):
        health_url = url.replace("ws://", "http://").replace("/ws", "/healthz")
        task = asyncio.gather(run_recording(url, a), run_recording(url, b))
        await asyncio.sleep(1.0)
        async with aiohttp.ClientSession() as http, http.get(health_url) as r:
            assert (await r.json())["sessions"] == 2
        runs = await task
        assert await _drained(server)
    assert runs[0].session_id != runs[1].session_id
    for run, row in zip(runs, (ra, rb), strict=True):
        assert run.error is None, run.error
        it = run.events_of("intent")[-1]
        assert it["slots"].get("coffeeDrink") == _slots(row)["coffeeDrink"], (it, row)


async def test_junk_gets_error_events_and_server_keeps_serving(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    pcm, row = _coffee(rows, speech_dir, 0)
    async with serving(engines) as (server, url), aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url)
        await ws.send_bytes(b"\x00\x00" * 160)
        assert (await _json(ws))["code"] == "not_started"
        await ws.send_str(playback_done_message(1))
        assert (await _json(ws))["code"] == "not_started"
        await ws.send_str("{not json")
        assert (await _json(ws))["code"] == "bad_json"
        await ws.send_str('{"type":"frobnicate"}')
        assert (await _json(ws))["code"] == "unknown_type"
        await ws.send_str(session_start_message(encoding="flac"))
        ev = await _json(ws)
        assert ev["code"] == "unsupported_encoding" and "pcm16" in ev["message"]
        await ws.send_str(
            '{"type":"session.start","protocol":1,"sample_rate":0,"encoding":"pcm16"}'
        )
        assert (await _json(ws))["code"] == "bad_sample_rate"
        await ws.send_str(session_start_message(16000))
        started = await _json(ws)
        assert started["type"] == "session.started" and started["protocol"] == 1
        assert started["output_sample_rate"] == 16000 and started["session_id"]
        await ws.send_bytes(b"\x01\x02\x03")
        ev = await _json(ws)
        assert ev["code"] == "bad_audio" and "odd" in ev["message"]
        await ws.send_bytes(b"\x00" * (100 * 1024))
        ev = await _json(ws)
        assert ev["type"] == "error" and ev["code"] == "message_too_large" and not ev["fatal"]
        await ws.send_str('{"type":"playback.done","turn_id":-1}')
        ev = await _json(ws)
        assert ev["code"] == "bad_playback_done" and not ev["fatal"]
        await ws.send_str(playback_done_message(3))  # no such reply playing: ignored
        await ws.send_str('{"type":"ping","id":5,"t_client_ns":42}')
        pong = await _json(ws)
        assert pong["type"] == "pong" and pong["id"] == 5 and pong["t_client_ns"] == 42
        assert not ws.closed
        await ws.close()
        # The same server still answers a good session.
        run = await run_recording(url, pcm)
        assert run.error is None, run.error
        assert run.events_of("intent")[-1]["slots"].get("coffeeDrink") == _slots(row)["coffeeDrink"]
        assert await _drained(server)


@pytest.mark.parametrize("rate", [48000, 44100])
async def test_each_pcm_chunk_at_another_rate_completes_its_own_frame(
    engines: Engines, pushed: list[int], rate: int
) -> None:
    """A page whose AudioContext cannot downsample sends its own rate: after k 20 ms
    chunks the session holds k whole 20 ms frames, although the resampler keeps its
    lookahead back (``LowDelayResampler.aligning_lead``; without it each frame would be
    heard with the next chunk, 20 ms late)."""
    chunk = rate // 50
    tone = (3000 * np.sin(np.arange(chunk) * 2 * np.pi * 440 / rate)).astype("<i2")
    async with serving(engines) as (_s, url), aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url)
        await ws.send_str(session_start_message(rate))
        assert (await _json(ws))["type"] == "session.started"
        for k in range(5):
            await ws.send_bytes(tone.tobytes())
            for _ in range(100):
                if len(pushed) == k + 1:
                    break
                await asyncio.sleep(0.01)
            assert (k + 1) * 320 <= sum(pushed) < (k + 2) * 320, pushed
        await ws.close()


async def test_any_input_rate_is_resampled(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    from halfsec.audio.resample import resample

    pcm, row = _coffee(rows, speech_dir, 0)
    pcm48 = resample(pcm, 16000, 48000)
    async with serving(engines) as (_s, url), aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url)
        await ws.send_str(session_start_message(48000))
        assert (await _json(ws))["type"] == "session.started"
        intent: dict[str, Any] | None = None
        for i in range(0, pcm48.size, 960):
            await ws.send_bytes(pcm48[i : i + 960].astype("<i2").tobytes())
            await asyncio.sleep(0.02)
        silence = np.zeros(960, np.int16).tobytes()
        for _ in range(150):
            await ws.send_bytes(silence)
            await asyncio.sleep(0.02)
            with contextlib.suppress(TimeoutError):
                while True:
                    msg = await ws.receive(timeout=0.001)
                    if msg.type == aiohttp.WSMsgType.TEXT and '"intent"' in msg.data:
                        ev = json.loads(msg.data)
                        if ev["type"] == "intent":
                            intent = ev
            if intent is not None:
                break
        await ws.close()
    assert intent is not None and intent["slots"].get("coffeeDrink") == _slots(row)["coffeeDrink"]


async def test_disconnect_mid_turn_cancels_cleanly(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    pcm, row = _coffee(rows, speech_dir, 0)
    b = voiced_bounds(pcm)
    assert b is not None
    async with serving(engines) as (server, url):
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url)
            await ws.send_str(session_start_message(16000))
            assert (await _json(ws))["type"] == "session.started"
            # All the speech and a bit of the pause, as fast as the socket takes it: the
            # turn's STT/logic/TTS is in flight when the client vanishes.
            for i in range(0, b[1] + 4000, 320):
                await ws.send_bytes(pcm[i : i + 320].astype("<i2").tobytes())
            await asyncio.sleep(0.05)
            await ws.close()
        assert await _drained(server)
        await asyncio.sleep(0.3)
        leftover = [t for t in asyncio.all_tasks() if t.get_name().startswith(("turn-", "send-"))]
        assert not leftover, leftover
        run = await run_recording(url, pcm)
        assert run.error is None, run.error
        assert run.events_of("intent")[-1]["slots"].get("coffeeDrink") == _slots(row)["coffeeDrink"]


async def test_token_is_enforced(engines: Engines) -> None:
    async with serving(engines, token="s3cret") as (_s, url), aiohttp.ClientSession() as http:
        for headers, query in [({}, ""), ({"Authorization": "Bearer wrong"}, ""), ({}, "?token=x")]:
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await http.ws_connect(url + query, headers=headers)
            assert e.value.status == 401
        for headers, query in [({"Authorization": "Bearer s3cret"}, ""), ({}, "?token=s3cret")]:
            ws = await http.ws_connect(url + query, headers=headers)
            await ws.send_str(session_start_message())
            assert (await _json(ws))["type"] == "session.started"
            await ws.close()
        # The bench client passes it too.
        run = await run_recording(url, np.zeros(0, np.int16), ClientOptions(token="wrong"))
        assert run.error is not None and "401" in run.error


async def test_origin_is_enforced(engines: Engines) -> None:
    async with (
        serving(engines, allow_origins=("https://app.example",)) as (_s, url),
        aiohttp.ClientSession() as http,
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await http.ws_connect(url, headers={"Origin": "https://evil.example"})
        assert e.value.status == 403
        for headers in ({"Origin": "https://app.example"}, {}):
            ws = await http.ws_connect(url, headers=headers)
            await ws.send_str(session_start_message())
            assert (await _json(ws))["type"] == "session.started"
            await ws.close()


async def test_limits_sessions_rate_and_idle(engines: Engines) -> None:
    async with (
        serving(engines, max_sessions=1, idle_timeout_s=0.5, max_messages_per_s=50) as (_s, url),
        aiohttp.ClientSession() as http,
    ):
        ws = await http.ws_connect(url)
        await ws.send_str(session_start_message())
        assert (await _json(ws))["type"] == "session.started"
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await http.ws_connect(url)
        assert e.value.status == 503
        # A flood is dropped with a rate_limited error, the session survives.
        for _ in range(200):
            await ws.send_bytes(b"\x00\x00" * 160)
        ev = await _json(ws)
        while ev["type"] != "error":
            ev = await _json(ws)
        assert ev["code"] == "rate_limited" and not ev["fatal"]
        # Then silence from the client: the idle timeout closes the session.
        t0 = now_ns()
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type == aiohttp.WSMsgType.TEXT:
                ev = json.loads(msg.data)
                if ev.get("code") == "idle_timeout":
                    assert ev["fatal"]
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        assert (now_ns() - t0) / 1e9 < 3
        # The slot is free again.
        ws2 = await http.ws_connect(url)
        await ws2.send_str(session_start_message())
        assert (await _json(ws2))["type"] == "session.started"
        await ws2.close()
