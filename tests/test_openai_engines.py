"""The ``openai`` STT and TTS engines against a local server that follows OpenAI's audio
API (tests/openai_audio_double.py: a test double for an outside service, answering with
halfsec's own Whisper and Piper behind it)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from openai_audio_double import PCM_RATE, OpenAIAudioDouble

from halfsec.audio.io import load_audio
from halfsec.audio.levels import loudest_frame_dbfs
from halfsec.config import load_config
from halfsec.errors import ConfigError, EngineUnavailable
from halfsec.logic.factory import create_logic
from halfsec.measure.wer import word_errors
from halfsec.remote_api import RemoteEngineError
from halfsec.runtime.engines import Engines
from halfsec.runtime.fallback import FallbackEngines, backup_engines
from halfsec.runtime.file_run import run_file
from halfsec.runtime.session import VoiceSession
from halfsec.stt import STTOptions, create_stt
from halfsec.stt.openai_api import OpenAITranscriptionEngine
from halfsec.trace.names import MARK_FALLBACK
from halfsec.tts import TTSOptions, create_tts
from halfsec.tts.openai_api import OpenAISpeechEngine, WavStreamReader

FILES = ["vctk_p225_002", "ljspeech_LJ001-0001", "rhasspy_turn_on_living_room_lamp"]


def _recording(rows: list[dict[str, str]], speech_dir: Path, stem: str) -> np.ndarray:
    row = next(r for r in rows if Path(r["file"]).stem.startswith(stem))
    return load_audio(speech_dir / row["file"])


def _stt(base_url: str, **kw: object) -> OpenAITranscriptionEngine:
    engine = create_stt(STTOptions(engine="openai", openai_base_url=base_url, **kw))  # type: ignore[arg-type]
    assert isinstance(engine, OpenAITranscriptionEngine)
    return engine


def _tts(base_url: str, **kw: object) -> OpenAISpeechEngine:
    engine = create_tts(TTSOptions(engine="openai", openai_base_url=base_url, **kw))  # type: ignore[arg-type]
    assert isinstance(engine, OpenAISpeechEngine)
    return engine


async def _final(engine: OpenAITranscriptionEngine, pcm: np.ndarray) -> str:
    stream = engine.open_stream()
    stream.feed(pcm)
    return (await stream.hypothesis(final=True)).text


async def _speak(engine: OpenAISpeechEngine, text: str) -> list[np.ndarray]:
    return [chunk async for chunk in engine.synthesize(text)]


# -- speech to text ---------------------------------------------------------------------


async def test_transcribes_like_the_engine_behind_the_api(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remote path gives the text the server's own engine gives for the same audio,
    and sends the documented request (multipart file, model, json, language, key)."""
    monkeypatch.setenv("HALFSEC_TEST_AUDIO_KEY", "sk-test")
    async with OpenAIAudioDouble(stt=engines.stt, api_key="sk-test") as api:
        remote = _stt(
            api.base_url, openai_model="whisper-1", openai_api_key_env="HALFSEC_TEST_AUDIO_KEY"
        )
        for stem in FILES:
            pcm = _recording(rows, speech_dir, stem)
            via_api = await _final(remote, pcm)
            direct = await _final(engines.stt, pcm)  # type: ignore[arg-type]
            # Not always letter-equal: under load the full suite once read "concerned" for
            # "concern" on the 10 s LJSpeech clip through one path.  One word in twenty is
            # the same text for this purpose; a wrong or dropped upload misses by far more.
            errors, words = word_errors(direct, via_api)
            assert words > 0 and errors <= max(1, words // 20), (direct, via_api)
        await remote.aclose()
    assert len(api.requests) == len(FILES)
    req = api.requests[0]
    assert req.fields["model"] == "whisper-1" and req.fields["response_format"] == "json"
    assert req.fields["language"] == "en" and req.fields["file"] > 1000
    assert req.headers["Authorization"] == "Bearer sk-test"
    assert (
        req.audio is not None
        and abs(req.audio.size - _recording(rows, speech_dir, FILES[0]).size) <= 1
    )


async def test_one_request_per_audio_and_none_for_silence() -> None:
    """Speculative and end-of-turn finals of the same audio cost one request; a partial
    asked while a request is out waits for it; silence costs none."""
    async with OpenAIAudioDouble(chunk_delay_s=0.0) as api:
        remote = _stt(api.base_url)
        stream = remote.open_stream()
        t = np.arange(16_000) / 16_000
        stream.feed((np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16))
        first, partial = await asyncio.gather(
            stream.hypothesis(final=True), stream.hypothesis(final=False)
        )
        again = await stream.hypothesis(final=True)
        assert first.text == partial.text == again.text == "one small latte please"
        assert again.compute_ms == 0.0 and first.compute_ms > 0 and first.audio_ms == 1000.0
        assert len(api.requests) == 1
        stream.feed(np.zeros(1600, np.int16))
        await stream.hypothesis(final=True)
        assert len(api.requests) == 2  # more audio: a new request
        silent = remote.open_stream()
        silent.feed(np.zeros(16_000, np.int16))
        assert (await silent.hypothesis(final=True)).text == ""
        assert len(api.requests) == 2
        await remote.aclose()


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("http500", "HTTP 500 from http://127.0.0.1"),
        ("hang", "within 0.3 s"),
        ("malformed", "not JSON"),
    ],
)
async def test_stt_failures_are_engine_errors(mode: str, message: str) -> None:
    async with OpenAIAudioDouble(mode=mode) as api:
        remote = _stt(api.base_url, openai_timeout_s=0.3)
        tone = (np.sin(np.arange(16_000) * 0.2) * 8000).astype(np.int16)
        with pytest.raises(RemoteEngineError, match=message):
            await _final(remote, tone)
        await remote.aclose()


async def test_stt_wrong_key_and_no_server_are_engine_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tone = (np.sin(np.arange(16_000) * 0.2) * 8000).astype(np.int16)
    monkeypatch.setenv("HALFSEC_TEST_AUDIO_KEY", "sk-wrong")
    async with OpenAIAudioDouble(api_key="sk-right") as api:
        remote = _stt(api.base_url, openai_api_key_env="HALFSEC_TEST_AUDIO_KEY")
        with pytest.raises(RemoteEngineError, match="HTTP 401 .*Incorrect API key"):
            await _final(remote, tone)
        await remote.aclose()
        gone = api.base_url
    remote = _stt(gone)
    with pytest.raises(RemoteEngineError, match="cannot reach"):
        await _final(remote, tone)
    await remote.aclose()


# -- text to speech ---------------------------------------------------------------------


async def test_speech_streams_pcm_from_the_engine_behind_the_api(engines: Engines) -> None:
    """PCM at 24 kHz, heard as it streams: the first chunk is in hand before the server
    has written the last one."""
    text = "Sure, one large latte with oat milk is coming right up, thank you for waiting."
    async with OpenAIAudioDouble(tts=engines.tts, chunk_delay_s=0.05) as api:
        remote = _tts(api.base_url, openai_voice="joe", openai_model="tts-1")
        assert remote.sample_rate == PCM_RATE
        t0 = time.perf_counter()
        first_at = None
        chunks = []
        async for chunk in remote.synthesize(text):
            first_at = first_at or time.perf_counter()
            chunks.append(chunk)
        await remote.aclose()
    assert first_at is not None and first_at < api.chunk_sent_at[-1], "not streamed"
    assert first_at - t0 < 2.0
    audio = np.concatenate(chunks)
    assert len(chunks) > 3 and audio.dtype == np.int16
    assert 3.0 < audio.size / PCM_RATE < 8.0
    assert loudest_frame_dbfs(audio) > -20
    body = api.requests[0].fields
    assert body == {"model": "tts-1", "input": text, "voice": "joe", "response_format": "pcm"}


async def test_speech_as_wav_at_another_rate_is_resampled(engines: Engines) -> None:
    async with OpenAIAudioDouble(tts=engines.tts, wav_rate=22_050) as api:
        pcm_engine = _tts(api.base_url)
        wav_engine = _tts(api.base_url, openai_format="wav")
        text = "Your order is ready."
        as_pcm = np.concatenate(await _speak(pcm_engine, text))
        as_wav = np.concatenate(await _speak(wav_engine, text))
        await pcm_engine.aclose()
        await wav_engine.aclose()
    assert api.requests[1].fields["response_format"] == "wav"
    assert wav_engine.sample_rate == PCM_RATE
    # Same length at 24 kHz, within Piper's own run-to-run spread (its VITS decoder draws
    # noise, so one sentence varies by a few percent; a wrong rate would be off by ~9 %).
    assert abs(as_wav.size - as_pcm.size) < 0.05 * as_pcm.size
    assert loudest_frame_dbfs(as_wav) > -20


def test_wav_reader_holds_the_header_until_it_is_complete() -> None:
    header = b"RIFF\xff\xff\xff\xffWAVEfmt " + bytes.fromhex(
        "10000000010001002256000044ac00000200100064617461ffffffff"
    )
    reader = WavStreamReader("http://x")
    assert reader.feed(header[:20]) == b"" and reader.rate is None
    assert reader.feed(header[20:] + b"\x01\x00") == b"\x01\x00" and reader.rate == 22_050
    assert reader.feed(b"\x02\x00") == b"\x02\x00"
    with pytest.raises(RemoteEngineError, match="not a WAV"):
        WavStreamReader("http://x").feed(b"ID3\x04" + b"\x00" * 20)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("http500", "HTTP 500"),
        ("hang", "within 0.3 s"),
        ("stall", "within 0.3 s"),
        ("malformed", "application/json, not audio"),
    ],
)
async def test_tts_failures_are_engine_errors(mode: str, message: str) -> None:
    async with OpenAIAudioDouble(mode=mode) as api:
        remote = _tts(api.base_url, openai_timeout_s=0.3)
        with pytest.raises(RemoteEngineError, match=message):
            await _speak(remote, "Hello there.")
        await remote.aclose()


# -- selection and the whole pipeline ---------------------------------------------------


def test_selected_by_config_like_the_local_engines() -> None:
    cfg = load_config(
        overrides=[
            "stt.engine=openai",
            "stt.openai_base_url=http://127.0.0.1:9/v1",
            "tts.engine=openai",
            "tts.openai_base_url=http://127.0.0.1:9/v1",
            "tts.openai_voice=nova",
        ],
        environ={},
    )
    assert isinstance(create_stt(cfg.stt), OpenAITranscriptionEngine)
    tts = create_tts(cfg.tts)
    assert isinstance(tts, OpenAISpeechEngine) and tts.options.openai_voice == "nova"
    with pytest.raises(EngineUnavailable, match="stt.openai_base_url"):
        create_stt(STTOptions(engine="openai"))
    with pytest.raises(EngineUnavailable, match="tts.openai_base_url"):
        create_tts(TTSOptions(engine="openai", openai_base_url="ftp://x"))
    with pytest.raises(ConfigError, match="openai_format"):
        load_config(overrides=["tts.openai_format=mp3"], environ={})


async def test_a_turn_runs_end_to_end_on_remote_engines(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    """``halfsec run``'s pipeline with both ends remote: the coffee order is understood
    and answered in audio; with the service down the turn fails with a clear error."""
    cfg = load_config(environ={})
    row = next(r for r in rows if r["intent"] == "orderDrink" and float(r["duration_s"]) < 7.0)
    pcm = load_audio(speech_dir / row["file"])
    async with OpenAIAudioDouble(stt=engines.stt, tts=engines.tts) as api:
        remote = Engines(
            stt=_stt(api.base_url, prompt=engines.stt.options.prompt),  # type: ignore[attr-defined]
            logic=create_logic(cfg.logic),
            tts=_tts(api.base_url),
        )
        session = VoiceSession(remote, cfg.turn, cfg.session, output_rate=cfg.audio.output_rate)
        summary = (await run_file(session, pcm)).summary()
        assert summary["intent"] == "orderDrink" and summary["v2v_ms"] is not None, summary
        assert not summary["errors"], summary
        api.mode = "http500"
        session = VoiceSession(remote, cfg.turn, cfg.session, output_rate=cfg.audio.output_rate)
        failed = (await run_file(session, pcm)).summary()
        await remote.aclose()
    assert any("turn_failed: RemoteEngineError: HTTP 500" in e for e in failed["errors"]), failed


@pytest.mark.parametrize("mode", ["hang", "http500"])
async def test_late_or_failing_remote_engines_fall_back_to_the_local_ones(
    mode: str, engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    """The remote engines are held to the local engines' deadlines and fall back to
    local Whisper and Piper (``backup_engines``): with the service hanging (no answer
    ever) or failing (HTTP 500) the coffee order is still understood and answered in
    audio, within the deadlines, and a ``fallback`` mark says so."""
    assert backup_engines("openai", "openai") == ("whisper", "piper")
    assert backup_engines("whisper", "piper") == ("pocketsphinx", "espeak")
    cfg = load_config(environ={})
    row = next(r for r in rows if r["intent"] == "orderDrink" and float(r["duration_s"]) < 7.0)
    pcm = load_audio(speech_dir / row["file"])
    async with OpenAIAudioDouble(mode=mode) as api:
        remote = Engines(
            stt=_stt(api.base_url, prompt=engines.stt.options.prompt),  # type: ignore[attr-defined]
            logic=create_logic(cfg.logic),
            tts=_tts(api.base_url),
            fallback=FallbackEngines(stt=engines.stt, tts=engines.tts),
        )
        session = VoiceSession(remote, cfg.turn, cfg.session, output_rate=cfg.audio.output_rate)
        run = await run_file(session, pcm)
        await remote.aclose()
        asked = {r.path for r in api.requests}
    summary = run.summary()
    turn = run.answer_turn()
    assert turn is not None and MARK_FALLBACK in turn.marks, summary
    assert asked == {"/v1/audio/transcriptions", "/v1/audio/speech"}, asked
    assert summary["intent"] == "orderDrink" and summary["v2v_ms"] is not None, summary
    assert not any("turn_failed" in e for e in summary["errors"]), summary
    # Deadlines: 450 ms for the transcript, 300 ms for the first audio (plus the local
    # engines' own time); the remote timeout (5 s) never comes into it.
    assert summary["v2v_ms"] < 2500, summary
