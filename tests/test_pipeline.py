"""End to end: real recordings through VAD -> Whisper -> logic -> Piper at real-time pace."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from halfsec.audio.io import load_audio
from halfsec.config import load_config
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.runtime.engines import Engines
from halfsec.runtime.file_run import run_file
from halfsec.runtime.session import VoiceSession


def _session(engines: Engines, **overrides: str) -> VoiceSession:
    cfg = load_config(None, [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()])
    return VoiceSession(engines, cfg.turn, cfg.session, output_rate=cfg.audio.output_rate)


def _coffee(
    rows: list[dict[str, str]], speech_dir: Path, n: int = 0
) -> tuple[Path, dict[str, str]]:
    coffee = [r for r in rows if r["intent"] == "orderDrink" and float(r["duration_s"]) < 7.0]
    r = coffee[n]
    return speech_dir / r["file"], r


async def test_coffee_order_end_to_end(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    path, row = _coffee(rows, speech_dir)
    pcm = load_audio(path)
    run = await run_file(_session(engines), pcm)
    s = run.summary()
    assert s["errors"] == [], s
    assert s["intent"] == "orderDrink", s
    expected = dict(kv.split("=", 1) for kv in row["slots"].split(";"))
    assert s["slots"].get("coffeeDrink") == expected["coffeeDrink"], (s, expected)
    assert s["reply_text"]
    assert s["v2v_ms"] is not None and s["v2v_ms"] > 0
    st = s["stages"]
    parts = (
        st["endpointing_ms"]
        + st["reply_ready_after_eot_ms"]
        + st["playback_queue_ms"]
        + st["leading_silence_ms"]
    )
    # The breakdown adds up to the measured voice-to-voice (frame rounding only).
    assert abs(parts - s["v2v_ms"]) < 5, (parts, s)
    # The reply audio is on the input's timeline and starts after the user stopped.
    audio = run.reply_audio()
    assert audio.size >= pcm.size
    first = int(np.flatnonzero(np.abs(audio.astype(np.int32)) > 184)[0])
    assert first >= voiced_bounds(pcm)[1]  # type: ignore[index]


async def test_speculation_and_sequential_give_the_same_answer(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    path, _ = _coffee(rows, speech_dir, 1)
    pcm = load_audio(path)
    fast = (await run_file(_session(engines), pcm)).summary()
    slow = (await run_file(_session(engines, session__speculate="false"), pcm)).summary()
    assert fast["transcript"] == slow["transcript"] and fast["reply_text"] == slow["reply_text"]
    assert fast["v2v_ms"] is not None and slow["v2v_ms"] is not None


async def test_silence_only_input_gives_no_turn(engines: Engines) -> None:
    pcm = np.zeros(16000, dtype=np.int16)
    run = await run_file(_session(engines), pcm)
    s = run.summary()
    assert s["turns"] == 0 and "no speech detected in the input" in s["errors"]


async def test_barge_in_stops_playback_and_cancels_within_100ms(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    path, _ = _coffee(rows, speech_dir)
    order = load_audio(path)
    b1 = voiced_bounds(order)
    assert b1 is not None
    order = order[: b1[1] + 1600]  # the order and 100 ms after it
    stop = load_audio(speech_dir / "audio" / "speechcommands_stop_a9abc695_nohash_1.flac")
    b2 = voiced_bounds(stop)
    assert b2 is not None
    gap = np.zeros(int(16000 * 1.2), dtype=np.int16)  # the reply is playing during this gap
    pcm = np.concatenate([order, gap, stop])
    onset = order.size + gap.size + b2[0]  # the user's barge-in starts here (sample)

    run = await run_file(_session(engines), pcm)
    assert run.interruptions, "speech during the reply must interrupt it"
    intr = run.interruptions[0]
    assert intr.cancel_ms < 100
    # Playback of the first reply stopped within 100 ms of the barge-in's onset.
    first_reply = [c for c in run.timeline.chunks if c[0] == intr.turn_id]
    assert first_reply and first_reply[0][1] < onset, "the reply was playing before the barge-in"
    audio = run.reply_audio()
    heard_after = np.flatnonzero(np.abs(audio[onset:].astype(np.int32)) > 184)
    # Reply audio heard after the onset, before the *next* turn's answer begins.
    later = [c for c in run.timeline.chunks if c[0] != intr.turn_id and c[1] > onset]
    limit = (later[0][1] - onset) if later else audio.size - onset
    heard_ms = (
        (heard_after[heard_after < limit].max() / 16.0)
        if heard_after[heard_after < limit].size
        else 0.0
    )
    assert heard_ms <= 100, f"reply still audible {heard_ms:.0f} ms after the user started speaking"
    # The interrupted turn's work was cancelled: none of its audio arrived after the interruption.
    assert all(
        c[3] <= run.timeline.sample_at(intr.t_ns)
        for c in run.timeline.chunks
        if c[0] == intr.turn_id
    )


async def test_llm_reply_streams_first_clause_to_tts(speech_dir: Path) -> None:
    """Off-domain speech goes to an OpenAI-compatible endpoint (a local TEST DOUBLE for a
    vendor API); the first clause is spoken while the LLM is still streaming."""
    from llm_double import LLMDouble

    from halfsec.runtime.build import build_engines

    words = "The lamp is not something I can reach, but I can brew you a coffee instead.".split(" ")
    tokens = [w if i == 0 else " " + w for i, w in enumerate(words)]
    async with LLMDouble(tokens=tokens, delay_s=0.08) as llm:
        cfg = load_config(
            None, [f"logic.llm_base_url={llm.base_url}", "logic.llm_model=test-double"]
        )
        engines = build_engines(cfg)
        session = VoiceSession(engines, cfg.turn, cfg.session, output_rate=cfg.audio.output_rate)
        pcm = load_audio(speech_dir / "audio" / "rhasspy_turn_on_living_room_lamp.flac")
        run = await run_file(session, pcm)
        await engines.aclose()
        assert llm.requests, "the LLM was not asked"
        finished = llm.finished_at[-1]
    s = run.summary()
    t = run.answer_turn()
    assert t is not None and s["v2v_ms"] is not None, s
    assert "lamp" in s["transcript"].lower()
    assert s["reply_text"].startswith("The lamp is not something I can reach,"), s["reply_text"]
    # First reply audio arrived before the LLM finished streaming (perf_counter and
    # monotonic_ns share CLOCK_MONOTONIC on Linux).
    assert t.first_audio_ns is not None and t.first_audio_ns / 1e9 < finished
