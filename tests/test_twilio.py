"""Phone calls: Twilio Media Streams at ``/twilio``, the mu-law codec, the low-delay
resampler, and the lab's phone client, with real engines and real speech on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soxr

from halfsec.audio.io import load_audio
from halfsec.audio.resample import LowDelayResampler, resample
from halfsec.audio.timeline import PlaybackTimeline
from halfsec.cli.bench import bench_command
from halfsec.clock import now_ns
from halfsec.config import load_config
from halfsec.lab.bench.corpus import CorpusItem
from halfsec.lab.bench.options import BenchOptions
from halfsec.lab.bench.run import run_bench
from halfsec.lab.clients.client_run import ClientRun
from halfsec.lab.clients.mark_echo import MarkEcho
from halfsec.lab.clients.telephone_band import telephone_band
from halfsec.lab.clients.twilio import run_recording_twilio
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.runtime.engines import Engines
from halfsec.runtime.session import VoiceSession
from halfsec.server.app import ServerOptions, VoiceServer, start_server
from halfsec.server.twilio import close_reason, phone_turn_options
from halfsec.stt.phone_model import create_phone_stt
from halfsec.turn.options import TurnOptions
from halfsec.wire.mulaw import MULAW_RATE, MULAW_SILENCE, mulaw_decode, mulaw_encode
from halfsec.wire.twilio import (
    TwilioProtocolError,
    caller_media_message,
    connected_message,
    lab_message,
    parse_twilio_message,
    start_message,
    stop_message,
)

SID = "MZ" + "1" * 32
CALL = "CA" + "2" * 32
WAIT_S = 20.0


@contextlib.asynccontextmanager
async def serving(engines: Engines, **kw: Any) -> AsyncIterator[tuple[VoiceServer, str]]:
    opts = ServerOptions(host="127.0.0.1", port=0, **kw)
    server, runner, port = await start_server(engines, load_config(), opts)
    try:
        yield server, f"ws://127.0.0.1:{port}/twilio"
    finally:
        await runner.cleanup()


def _coffee(rows: list[dict[str, str]], speech_dir: Path, n: int) -> tuple[np.ndarray, str]:
    """The n-th shortest coffee order cut to 0.3 s before and 1 s after its speech, and
    its labelled drink."""
    coffee = sorted(
        (r for r in rows if r["intent"] == "orderDrink"), key=lambda r: float(r["duration_s"])
    )
    row = coffee[n]
    pcm = load_audio(speech_dir / row["file"])
    b = voiced_bounds(pcm)
    assert b is not None
    slots = dict(kv.split("=", 1) for kv in row["slots"].split(";") if kv)
    return pcm[max(0, b[0] - 4800) : b[1] + 16000], slots["coffeeDrink"]


def _start(params: dict[str, str] | None = None, sid: str = SID) -> str:
    return start_message(sid, CALL, params or {}, 1)


def _media(payload: bytes, k: int = 0) -> str:
    return caller_media_message(SID, k + 2, k + 1, k * 20, payload)


async def _closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    """Read until the server closes; (close code, reason)."""
    while True:
        msg = await ws.receive(timeout=5.0)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return ws.close_code, str(msg.extra or "")


# -- codec, resampler, band, messages ---------------------------------------------------------
def test_mulaw_is_g711_bit_for_bit() -> None:
    """The tables equal audioop's lin2ulaw/ulaw2lin (hashes taken from Python 3.11's audioop,
    which this module replaces): every int16 value and every code."""
    every = np.arange(-32768, 32768, dtype=np.int16)
    codes = mulaw_encode(every)
    assert hashlib.sha256(codes).hexdigest() == (
        "81d633c9e6972a18c74a58720b96cb8ca0bdd096d4060b646dd708c3b846019a"
    )
    decoded = mulaw_decode(bytes(range(256)))
    assert hashlib.sha256(decoded.astype("<i2").tobytes()).hexdigest() == (
        "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827"
    )
    assert mulaw_encode(np.array([0, 32767, -32768], dtype=np.int16)) == b"\xff\x80\x00"
    assert mulaw_decode(bytes([MULAW_SILENCE])).tolist() == [0]
    # Logarithmic: the round-trip error is at most half a step, 6 % of the level at worst.
    back = mulaw_decode(codes).astype(np.int32)
    big = np.abs(every.astype(np.int32)) > 256
    rel = np.abs(back[big] - every[big]) / np.abs(every[big].astype(np.int32))
    assert rel.max() < 0.06 and np.median(rel) < 0.02


def test_low_delay_resampler_equals_whole_buffer_and_holds_only_its_lookahead(
    rows: list[dict[str, str]], speech_dir: Path
) -> None:
    pcm16, _ = _coffee(rows, speech_dir, 0)
    pcm8 = resample(pcm16, 16_000, 8_000)
    for rate_in, rate_out, x, n in ((8_000, 16_000, pcm8, 160), (16_000, 8_000, pcm16, 320)):
        rs = LowDelayResampler(rate_in, rate_out)
        assert rs.delay_samples == 3 * rate_in // 1000  # 3 ms
        out: list[np.ndarray] = []
        fed = 0
        for i in range(0, x.size, n):
            chunk = rs.process(x[i : i + n])
            fed += x[i : i + n].size
            # Exactly the output whose input is at least the lookahead old, every chunk.
            released = sum(c.size for c in out) + chunk.size
            assert released == (fed - rs.delay_samples) * rate_out // rate_in
            out.append(chunk)
        out.append(rs.flush())
        y = np.concatenate(out).astype(np.int32)
        whole = soxr.resample(x, rate_in, rate_out, quality="LQ").astype(np.int32)
        assert y.size == whole.size
        assert np.abs(y - whole).max() <= 4, "chunking must not be audible"


def test_telephone_band_keeps_300_to_3400_hz() -> None:
    t = np.arange(16_000) / 16_000
    for hz, kept in ((150, False), (1000, True), (3000, True), (3800, False)):
        tone = (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
        out = telephone_band(tone)
        assert out.size == 8_000
        gain = np.std(out[1000:-1000].astype(float)) / np.std(tone.astype(float))
        assert (gain > 0.9) if kept else (gain < 0.1), (hz, gain)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", "bad_json"),
        ('["event"]', "bad_message"),
        ('{"event": "hangup", "streamSid": "MZ1"}', "unknown_event"),
        ('{"event": "media", "streamSid": "MZ1"}', "bad_message"),
        ('{"event": "media", "streamSid": "MZ1", "media": {"payload": "!!"}}', "bad_audio"),
        ('{"event": "media", "streamSid": "MZ1", "media": {"payload": ""}}', "bad_audio"),
        (
            '{"event": "media", "streamSid": "MZ1", "media": {"payload": "AA==", "track": "x"}}',
            "bad_message",
        ),
        (
            '{"event": "media", "streamSid": "MZ1", "media": {"payload": "AA==", "chunk": "1a"}}',
            "bad_message",
        ),
        ('{"event": "mark", "streamSid": "MZ1", "mark": {}}', "bad_message"),
        ('{"event": "stop"}', "bad_message"),
        (
            '{"event": "start", "start": {"streamSid": "MZ1", "mediaFormat": '
            '{"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1}}}',
            "unsupported_media_format",
        ),
        (
            '{"event": "start", "start": {"streamSid": "MZ1", "customParameters": {"a": 1},'
            ' "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}',
            "bad_message",
        ),
    ],
)
def test_media_streams_messages_are_validated(text: str, code: str) -> None:
    with pytest.raises(TwilioProtocolError) as e:
        parse_twilio_message(text)
    assert e.value.code == code and e.value.message


def test_twilio_messages_parse_as_sent() -> None:
    start = parse_twilio_message(_start({"token": "t"}))
    assert start == parse_twilio_message(_start({"token": "t"}))
    assert getattr(start, "custom_parameters", None) == {"token": "t"}
    media = parse_twilio_message(_media(b"\x01\x02", 4))
    assert getattr(media, "payload", None) == b"\x01\x02"
    assert (getattr(media, "chunk", None), getattr(media, "timestamp_ms", None)) == (5, 80)
    assert close_reason("bad_message", "x" * 500) == (b"bad_message: " + b"x" * 110)


def test_phone_sessions_listen_with_lower_vad_thresholds() -> None:
    phone = phone_turn_options(TurnOptions())
    assert (phone.threshold, phone.neg_threshold) == (0.3, 0.2)
    assert phone.silence_ms == TurnOptions().silence_ms
    assert phone.preroll_ms == 800.0 > TurnOptions().preroll_ms  # Silero hears onsets late
    low = TurnOptions(threshold=0.25, neg_threshold=0.1, preroll_ms=900.0)
    assert phone_turn_options(low) == low


async def test_marks_go_back_when_their_audio_has_played_or_is_cleared() -> None:
    run = ClientRun()
    run.t0_ns = now_ns()
    run.timeline = PlaybackTimeline(8_000, run.t0_ns)
    run.timeline.place(np.ones(1600, dtype=np.int16), run.t0_ns, 1)  # 200 ms of reply
    sent: list[tuple[str, int]] = []

    async def send(name: str) -> None:
        sent.append((name, now_ns()))

    echo = MarkEcho(run, send)
    echo.mark("a")
    await asyncio.sleep(0.05)
    assert sent == [], "a mark waits for the audio before it to play"
    await asyncio.sleep(0.25)
    assert [n for n, _ in sent] == ["a"]
    assert sent[0][1] - run.t0_ns >= 190_000_000
    run.timeline.place(np.ones(8000, dtype=np.int16), now_ns(), 2)  # 1 s more
    echo.mark("b")
    echo.mark("c")
    await asyncio.sleep(0.05)
    echo.clear()
    await asyncio.sleep(0.01)
    assert [n for n, _ in sent] == ["a", "b", "c"], "clear sends every pending mark back"
    await echo.close()


# -- real calls ---------------------------------------------------------------------------
async def test_spoken_reply_over_twilio(
    engines: Engines,
    rows: list[dict[str, str]],
    speech_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A coffee order as a phone call: understood, answered with audible mu-law, and the
    echo of the reply's mark reaches the session as the playback end."""
    reported: list[int] = []
    original = VoiceSession.playback_ended

    def spy(self: VoiceSession, turn_id: int, at_ns: int | None = None) -> None:
        reported.append(turn_id)
        original(self, turn_id, at_ns)

    monkeypatch.setattr(VoiceSession, "playback_ended", spy)
    pcm, drink = _coffee(rows, speech_dir, 0)
    async with serving(engines) as (server, url):
        run = await run_recording_twilio(url, pcm)
        for _ in range(100):
            if not server.sessions:
                break
            await asyncio.sleep(0.02)
        assert not server.sessions
    assert run.error is None, run.error
    assert run.output_rate == 8_000 and run.clock is not None and run.clock.samples >= 8
    intent = run.events_of("intent")[-1]
    assert intent["intent"] == "orderDrink" and intent["slots"].get("coffeeDrink") == drink
    done = run.events_of("reply.done")
    committed = {e["turn_id"] for e in run.events_of("turn.end")}
    assert done and run.packets and {p.turn_id for p in run.packets} <= committed
    assert run.session_id and run.domain == "coffee"
    b = voiced_bounds(pcm)
    assert b is not None
    heard = run.received_audio()[b[1] // 2 :]
    assert np.abs(heard.astype(np.int32)).max() > 1000, "the reply is audible"
    assert done[-1]["turn_id"] in reported, "the mark's echo is the playback end"


async def test_barge_in_sends_clear(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    """A plain Media Stream (no lab extension): speech while the reply plays gets a
    ``clear``; the server sends nothing Twilio would not understand."""
    first, _ = _coffee(rows, speech_dir, 0)
    second, _ = _coffee(rows, speech_dir, 3)
    phone1, phone2 = mulaw_encode(telephone_band(first)), mulaw_encode(telephone_band(second))
    silence = bytes([MULAW_SILENCE]) * 160
    got: list[dict[str, Any]] = []
    async with serving(engines) as (_server, url), aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url)

        async def read() -> None:
            async for msg in ws:
                got.append(json.loads(msg.data))

        reader = asyncio.create_task(read())
        await ws.send_str(connected_message())
        await ws.send_str(_start())
        k = 0

        async def say(audio: bytes) -> None:
            nonlocal k
            for i in range(0, len(audio), 160):
                await ws.send_str(_media(audio[i : i + 160].ljust(160, b"\xff"), k))
                k += 1
                await asyncio.sleep(0.02)

        def seen(event: str) -> bool:
            return any(m["event"] == event for m in got)

        await say(phone1)
        deadline = now_ns() + int(WAIT_S * 1e9)
        while not seen("media"):
            assert now_ns() < deadline, f"no reply: {got[-3:]}"
            await say(silence)
        await say(phone2)  # the reply is still playing: a barge-in
        while not seen("clear"):
            assert now_ns() < deadline, "no clear after speech over the reply"
            await say(silence)
        await ws.send_str(stop_message(SID, CALL, k + 2))
        await reader
        assert ws.close_code == 1000
    assert {m["event"] for m in got} <= {"media", "mark", "clear"}
    assert all(m["streamSid"] == SID for m in got)


async def test_bad_input_closes_with_a_reason_and_the_server_keeps_serving(
    engines: Engines,
) -> None:
    async with serving(engines) as (server, url), aiohttp.ClientSession() as http:

        async def expect(messages: list[str | bytes], code: str) -> None:
            ws = await http.ws_connect(url)
            for m in messages:
                await (ws.send_bytes(m) if isinstance(m, bytes) else ws.send_str(m))
            close_code, reason = await _closed(ws)
            assert close_code == 1008 and reason.startswith(code + ":"), (messages, reason)

        good = mulaw_encode(np.zeros(160, dtype=np.int16))
        await expect(["{oops"], "bad_json")
        await expect([b"\x00\x01"], "bad_message")
        await expect([connected_message(), _media(good)], "not_started")
        await expect(['{"event": "ring"}'], "unknown_event")
        await expect([_start(), _start()], "already_started")
        await expect([_start(), _media(good).replace(SID, "MZother")], "bad_message")
        bad_b64 = _media(good).replace('"payload": "', '"payload": "*')
        await expect([_start(), bad_b64], "bad_audio")
        await expect([_start(), lab_message(SID, {"type": "ping", "id": 1})], "bad_message")
        await expect(
            [_start({"halfsec_events": "1"}), lab_message(SID, {"type": "session.end"})],
            "bad_message",
        )
        await expect(
            [_start().replace('"sampleRate": 8000', '"sampleRate": 16000')],
            "unsupported_media_format",
        )
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, headers={"Origin": "https://evil.example"})
        assert refused.value.status == 403
        assert not server.sessions
        # The server still takes a call: start, a lab ping, stop.
        ws = await http.ws_connect(url)
        await ws.send_str(_start({"halfsec_events": "1"}))
        started = json.loads((await ws.receive(timeout=5)).data)["halfsec"]
        assert started["type"] == "session.started" and started["transport"] == "twilio"
        await ws.send_str(lab_message(SID, {"type": "ping", "id": 7, "t_client_ns": 1}))
        pong = json.loads((await ws.receive(timeout=5)).data)["halfsec"]
        assert pong["type"] == "pong" and pong["id"] == 7
        await ws.send_str(_media(good))
        await ws.send_str(stop_message(SID, CALL, 3))
        assert await _closed(ws) == (1000, "stop")


async def test_each_chunk_completes_its_own_frame(engines: Engines, pushed: list[int]) -> None:
    """After k ``media`` chunks the session holds exactly k whole 20 ms frames: the frame
    carrying a chunk's audio is complete when that chunk arrives, not one chunk (20 ms)
    later, although the upsampler keeps its 3 ms lookahead back (``aligning_lead``)."""
    tone = (3000 * np.sin(np.arange(160) * 2 * np.pi * 440 / MULAW_RATE)).astype(np.int16)
    async with serving(engines) as (server, url), aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url)
        await ws.send_str(_start())
        for k in range(5):
            await ws.send_str(_media(mulaw_encode(tone), k))
            for _ in range(100):
                if len(pushed) == k + 1:
                    break
                await asyncio.sleep(0.01)
            assert sum(pushed) == (k + 1) * 320, pushed
        await ws.close()


async def test_audio_faster_than_a_phone_line_ends_the_stream(engines: Engines) -> None:
    """Twilio sends 20 ms every 20 ms; a peer that pours audio in is not a phone line
    (the real-time admission every transport shares, ``admission.RealTimeAudio``)."""
    async with serving(engines) as (server, url), aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url)
        await ws.send_str(_start())
        second = bytes([MULAW_SILENCE]) * 8000  # 1 s per message: few messages, much audio
        for k in range(20):
            if ws.closed:
                break
            await ws.send_str(_media(second, k))
        close_code, reason = await _closed(ws)
        assert close_code == 1008 and reason.startswith("rate_limited:"), reason
        for _ in range(100):
            if not server.sessions:
                break
            await asyncio.sleep(0.02)
        assert not server.sessions


@pytest.mark.parametrize("model", ["base", "cascade"])
async def test_a_call_is_transcribed_by_the_phone_model(
    model: str,
    engines: Engines,
    rows: list[dict[str, str]],
    speech_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call's turns open their streams on the phone recognizer (``stt.phone_model``,
    Whisper base), and the order is still understood; other transports keep ``stt``."""
    phone = create_phone_stt(replace(engines.stt.options, phone_model=model))  # type: ignore[attr-defined]
    assert phone is not None
    phone.warmup()
    engines = replace(engines, phone_stt=phone)
    opened: list[object] = []
    original = type(phone).open_stream

    def spy(self: Any) -> Any:
        opened.append(self)
        return original(self)

    monkeypatch.setattr(type(phone), "open_stream", spy)
    pcm, drink = _coffee(rows, speech_dir, 1)
    async with serving(engines) as (server, url):
        run = await run_recording_twilio(url, pcm)
        assert server.services.voice_session().engines.stt is engines.stt
    phone.close()  # type: ignore[attr-defined]
    assert run.error is None, run.error
    assert opened and all(e is phone for e in opened)
    intent = run.events_of("intent")[-1]
    assert intent["intent"] == "orderDrink" and intent["slots"].get("coffeeDrink") == drink


async def test_the_token_comes_as_a_custom_parameter(engines: Engines) -> None:
    async with serving(engines, token="s3cret") as (_server, url), aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url)  # Twilio sends no header: admitted until start
        await ws.send_str(_start({"halfsec_events": "1"}))
        close_code, reason = await _closed(ws)
        assert close_code == 1008 and reason.startswith("refused: 401"), reason
        ws = await http.ws_connect(url)
        await ws.send_str(_start({"halfsec_events": "1", "token": "wrong"}))
        assert (await _closed(ws))[1].startswith("refused: 401")
        ws = await http.ws_connect(url)
        await ws.send_str(_start({"halfsec_events": "1", "token": "s3cret"}))
        started = json.loads((await ws.receive(timeout=5)).data)["halfsec"]
        assert started["type"] == "session.started"
        await ws.close()


async def test_bench_plays_a_phone_call_end_to_end(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    assert bench_command(**_bench_args(transport="twilio", codec="opus")) == 2
    assert bench_command(**_bench_args(transport="fax")) == 2
    coffee = min(
        (r for r in rows if r["intent"] == "orderDrink"), key=lambda r: float(r["duration_s"])
    )
    item = CorpusItem(path=speech_dir / coffee["file"], intent="orderDrink", domain="coffee")
    async with serving(engines) as (_server, url):
        server = url.replace("/twilio", "/ws")
        result = await run_bench(
            [item], BenchOptions(server=server, transport="twilio", trace=False)
        )
    (rec,) = result.records
    assert rec["ok"], rec["error"]
    assert rec["transport"] == "twilio" and rec["codec"] == "mulaw"
    assert rec["v2v_ms"] is not None and rec["v2v_ms"] > 0
    assert rec["intent"] == "orderDrink" and rec["stages"]
    assert result.meta["transport"] == "twilio" and result.meta["codec"] == "mulaw"


def _bench_args(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "server": None,
        "corpus_path": None,
        "limit": 1,
        "json_out": None,
        "save_audio": None,
        "budget_path": None,
        "fail_over_budget": False,
        "html_out": None,
        "token": None,
        "config": None,
        "overrides": [],
        "inject_delay_ms": 0.0,
        "domain": None,
        "store": False,
        "timeout_s": 10.0,
    }
    args.update(kw)
    return args
