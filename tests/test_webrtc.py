"""WebRTC transport with real engines, real speech and a real aiortc client on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from halfsec.audio.io import load_audio
from halfsec.audio.resample import StreamResampler
from halfsec.config import load_config
from halfsec.lab.clients.reply_player import PLAY_RATE
from halfsec.lab.clients.webrtc import run_recording_webrtc
from halfsec.lab.netem.sdp import rewrite_candidates
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.runtime.engines import Engines
from halfsec.server.app import ServerOptions, VoiceServer, start_server
from halfsec.stt.factory import create_stt
from halfsec.stt.options import STTOptions


@contextlib.asynccontextmanager
async def serving(engines: Engines, **kw: Any) -> AsyncIterator[tuple[VoiceServer, str]]:
    server, runner, port = await start_server(
        engines, load_config(), ServerOptions(host="127.0.0.1", port=0, **kw)
    )
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def wait_until(pred: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``pred`` every 20 ms until it holds or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


def coffee(rows: list[dict[str, str]], speech_dir: Path, n: int = 0) -> np.ndarray:
    row = sorted(
        (r for r in rows if r["intent"] == "orderDrink"), key=lambda r: float(r["duration_s"])
    )[n]
    pcm = load_audio(speech_dir / row["file"])
    b = voiced_bounds(pcm)
    assert b is not None
    return pcm[max(0, b[0] - 4800) : b[1] + 16000]


async def transcribe(audio: np.ndarray, rate: int) -> str:
    """Our own Whisper on what the client heard: the reply must be intelligible."""
    pcm = StreamResampler(rate, 16000).process(audio, last=True) if rate != 16000 else audio
    stream = create_stt(STTOptions()).open_stream()
    stream.feed(pcm.astype(np.int16))
    return (await stream.hypothesis(final=True)).text.lower()


async def test_spoken_reply_over_webrtc(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    pcm = coffee(rows, speech_dir)
    async with serving(engines) as (server, base):
        run = await run_recording_webrtc(base, pcm)
        assert await wait_until(lambda: not server.webrtc.sessions, 5.0)
    assert run.error is None, run.error
    assert run.events_of("intent")[-1]["intent"] == "orderDrink"
    assert run.events_of("reply.audio"), "each reply announces its first RTP timestamp"
    jit = [e for e in run.events_of("timing") if e["name"] == "jitter_buffer"]
    assert jit and jit[0]["attrs"]["jitter_buffer_ms"] is not None
    assert run.packets and all(p.turn_id >= 1 for p in run.packets)
    b = voiced_bounds(pcm)
    assert b is not None
    heard = run.received_audio()[int(b[1] * PLAY_RATE / 16000) :]
    reply = run.events_of("reply.done")[-1]["text"].lower()
    text = await transcribe(heard, PLAY_RATE)
    words = [w.strip(".,!?") for w in reply.split() if len(w) > 3]
    assert sum(w in text for w in words) >= len(words) // 2, (text, reply)


async def test_malformed_sdp_is_400_and_server_keeps_serving(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    async with serving(engines) as (server, base), aiohttp.ClientSession() as http:
        for body in (
            {"sdp": "v=0\r\nthis is not sdp\r\n", "type": "offer"},
            {"sdp": "", "type": "offer"},
            {"type": "answer", "sdp": "v=0"},
        ):
            async with http.post(f"{base}/webrtc/offer", json=body) as r:
                assert r.status == 400
                assert "offer" in (await r.json())["error"].lower()
        async with http.post(f"{base}/webrtc/offer", data=b"{not json") as r:
            assert r.status == 400
        assert not server.webrtc.sessions
        run = await run_recording_webrtc(base, coffee(rows, speech_dir))
        assert run.error is None, run.error
        assert run.events_of("reply.done")


async def test_bogus_opus_gets_error_and_session_survives(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path, monkeypatch: Any
) -> None:
    """Garbage Opus payloads inside valid RTP: an error event, concealment, no crash."""
    from halfsec.lab.clients import webrtc as client_rtc

    real = client_rtc.MicTrack.put
    count = {"n": 0}

    def put(self: Any, frame: np.ndarray) -> None:
        count["n"] += 1
        if 5 <= count["n"] < 15:
            self.queue.put_nowait(b"\xff\xff\xff\xff\x00garbage")
        else:
            real(self, frame)

    monkeypatch.setattr(client_rtc.MicTrack, "put", put)
    async with serving(engines) as (server, base):
        run = await run_recording_webrtc(base, coffee(rows, speech_dir))
        async with aiohttp.ClientSession() as http, http.get(f"{base}/healthz") as r:
            assert r.status == 200
    errors = run.events_of("error")
    assert any(e["code"] == "bad_audio" for e in errors), errors
    assert run.events_of("reply.done"), "the session went on after the bad packets"


async def test_webrtc_through_udp_relay_4g(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    meta: dict[str, Any] = {}
    async with serving(engines) as (_server, base):
        run = await run_recording_webrtc(base, coffee(rows, speech_dir), net="4g", net_meta=meta)
    assert run.error is None, run.error
    assert run.events_of("reply.done")
    assert run.packets
    # Media really crossed the relays.  ICE may pair the microphone with either relay
    # (both candidates are rewritten to one), so count all of them: a 20 ms mic stream
    # of a few seconds plus the reply is several hundred packets.
    forwarded = sum(
        meta[side][direction]["forwarded"]
        for side in ("relay_server_side", "relay_client_side")
        for direction in ("up", "down")
    )
    assert forwarded > 200, meta


def test_candidate_rewrite() -> None:
    sdp = (
        "v=0\r\nm=audio 40000 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 127.0.0.1\r\n"
        "a=candidate:abc 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"
    )
    out = rewrite_candidates(sdp, 5555)
    assert "127.0.0.1 5555 typ host" in out and "m=audio 5555" in out
