"""Prometheus ``/metrics`` on ``halfsec serve``: a spoken turn moves the counters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from halfsec.audio.io import load_audio
from halfsec.config import load_config
from halfsec.frames import (
    EndOfTurn,
    ErrorFrame,
    Interruption,
    ReplyAudio,
    ReplyDone,
    ReplyText,
    TimingMark,
)
from halfsec.lab.clients.options import ClientOptions
from halfsec.lab.clients.websocket import run_recording
from halfsec.runtime.engines import Engines
from halfsec.server.app import ServerOptions, VoiceServer, start_server
from halfsec.server.metrics import ServerMetrics
from halfsec.trace import names

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scrape: dict[Any, float], name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


@contextlib.asynccontextmanager
async def serving(engines: Engines, **kw: Any) -> AsyncIterator[tuple[VoiceServer, str]]:
    server, runner, port = await start_server(
        engines, load_config(), ServerOptions(host="127.0.0.1", port=0, **kw)
    )
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def scrape(host: str) -> dict[Any, float]:
    async with aiohttp.ClientSession() as http, http.get(f"http://{host}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return samples(await r.text())


def test_observer_counts_a_committed_turn_and_its_stages() -> None:
    m = ServerMetrics(lambda: 3)
    s = m.session()
    t = 1_000_000_000_000
    # Speech really ended 200 ms before the decision (VAD position 900 ms, end 700 ms).
    s.frame(EndOfTurn(turn_id=1, t_ns=t, audio_ms=900.0, speech_end_ms=700.0, reason="silence"))
    s.frame(TimingMark(turn_id=1, t_ns=t - 150_000_000, name=names.MARK_STT_START))
    s.frame(TimingMark(turn_id=1, t_ns=t - 90_000_000, name=names.MARK_STT_END))
    s.frame(TimingMark(turn_id=1, t_ns=t - 90_000_000, name=names.MARK_LOGIC_START))
    s.frame(TimingMark(turn_id=1, t_ns=t - 89_000_000, name=names.MARK_LOGIC_FIRST_CLAUSE))
    s.frame(ReplyText(turn_id=1, t_ns=t, text="Sorry?", index=0, source="fallback"))
    s.frame(TimingMark(turn_id=1, t_ns=t - 89_000_000, name=names.MARK_TTS_START))
    s.frame(TimingMark(turn_id=1, t_ns=t - 40_000_000, name=names.MARK_TTS_FIRST_AUDIO))
    pcm = np.zeros(320, dtype=np.int16)
    s.frame(ReplyAudio(turn_id=1, t_ns=t - 40_000_000, pcm=pcm, sample_rate=16000, clause_index=0))
    s.frame(ReplyDone(turn_id=1, text="Sorry?"))
    # A second turn fails, a third is interrupted; a turn never committed is not a turn.
    s.frame(EndOfTurn(turn_id=2, audio_ms=0.0, speech_end_ms=0.0, reason="silence"))
    s.frame(ErrorFrame(turn_id=2, code="turn_failed", message="boom"))
    s.frame(EndOfTurn(turn_id=3, audio_ms=0.0, speech_end_ms=0.0, reason="silence"))
    s.frame(Interruption(turn_id=3, audio_ms=0.0, cancel_ms=1.0))
    s.frame(ReplyDone(turn_id=4, text="never committed"))
    got = samples(m.exposition().decode())
    assert value(got, "halfsec_turns_total", outcome="answered") == 1
    assert value(got, "halfsec_turns_total", outcome="failed") == 1
    assert value(got, "halfsec_turns_total", outcome="interrupted") == 1
    assert value(got, "halfsec_interruptions_total") == 1
    assert value(got, "halfsec_errors_total", code="turn_failed") == 1
    assert value(got, "halfsec_fallbacks_total", kind="logic") == 1
    assert value(got, "halfsec_active_sessions") == 3
    assert value(got, "halfsec_sessions_total") == 1
    stage = "halfsec_stage_seconds_sum"
    assert abs(value(got, stage, stage="stt") - 0.060) < 1e-9
    assert abs(value(got, stage, stage="logic_first_clause") - 0.001) < 1e-9
    assert abs(value(got, stage, stage="tts_first_audio") - 0.049) < 1e-9
    assert abs(value(got, stage, stage="endpointing") - 0.200) < 1e-9
    assert value(got, "halfsec_stage_seconds_count", stage="endpointing") == 3  # committed
    # v2v at the server runs to when the sender saw the audio (now), from 200 ms before t.
    assert value(got, "halfsec_server_v2v_seconds_count") == 1
    # 50-1000 ms is resolved in steps of at most 50 ms up to half a second.
    edges = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.8, 1.0)
    assert all(("halfsec_server_v2v_seconds_bucket", (("le", str(e)),)) in got for e in edges)


async def test_scrape_after_a_spoken_turn(engines: Engines) -> None:
    pcm = load_audio(EXAMPLES / "coffee_order.flac")
    async with serving(engines, token="s3cret") as (_server, host):
        before = await scrape(host)
        assert value(before, "halfsec_turns_total", outcome="answered") == 0
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{host}/ws") as r:
                assert r.status == 401
            evil = {"Origin": "https://evil.example", "Authorization": "Bearer s3cret"}
            async with http.get(f"http://{host}/ws", headers=evil) as r:
                assert r.status == 403
            async with http.post(f"http://{host}/webrtc/offer", headers=evil, json={}) as r:
                assert r.status == 403
        run = await run_recording(f"ws://{host}/ws", pcm, ClientOptions(token="s3cret"))
        assert run.error is None, run.error
        during = await scrape(host)
        for _ in range(100):  # the session ends asynchronously after the client's close
            after = await scrape(host)
            if value(after, "halfsec_active_sessions") == 0:
                break
            await asyncio.sleep(0.02)
        async with serving(engines) as (_other, other_host):
            fresh = await scrape(other_host)
    assert value(during, "halfsec_turns_total", outcome="answered") == 1
    assert value(during, "halfsec_sessions_total") == 1
    assert value(during, "halfsec_refused_sessions_total", reason="unauthorized") == 1
    assert value(during, "halfsec_refused_sessions_total", reason="origin") == 2  # ws, webrtc
    assert value(during, "halfsec_server_v2v_seconds_count") == 1
    v2v_s = value(during, "halfsec_server_v2v_seconds_sum")
    assert 0.0 < v2v_s < 2.0, v2v_s
    for stage in ("endpointing", "stt", "logic_first_clause", "tts_first_audio"):
        assert value(during, "halfsec_stage_seconds_count", stage=stage) >= 1, stage
    assert value(after, "halfsec_active_sessions") == 0
    # Each server counts its own: a second server in the same process starts at zero.
    assert value(fresh, "halfsec_turns_total", outcome="answered") == 0
    assert value(fresh, "halfsec_sessions_total") == 0
