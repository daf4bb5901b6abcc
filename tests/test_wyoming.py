"""``halfsec wyoming`` as Home Assistant uses it: the ``wyoming`` package's own client
against the server, over real recordings, with the real engines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncClient, AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe, Info
from wyoming.intent import Intent, NotRecognized, Recognize
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
)

from halfsec.audio.io import load_audio
from halfsec.audio.levels import loudest_frame_dbfs
from halfsec.audio.resample import resample
from halfsec.config import load_config
from halfsec.measure.wer import normalize_text, word_errors
from halfsec.runtime.engines import Engines
from halfsec.server.wyoming import WyomingError, WyomingServer, parse_uri

STUDIO_AND_COMMANDS = (
    "vctk_p225_001",
    "ljspeech_LJ001-0002",
    "rhasspy_what_time_is_it",
    "voice2json_would_you_please",
    "speechcommands_stop_a9abc695_nohash_1",
)
"""Recordings with a verbatim transcript, one of each source (the coffee orders have none)."""

SAMPLES_PER_CHUNK = 1024
"""What Home Assistant sends per audio-chunk (16 kHz, 16-bit, mono)."""


@contextlib.asynccontextmanager
async def serving(engines: Engines, uri: str = "tcp://127.0.0.1:0") -> AsyncIterator[str]:
    server = WyomingServer(engines, load_config(environ={}), parse_uri(uri))
    where = await server.start()
    try:
        yield where
    finally:
        await server.stop()


def client(uri: str) -> AsyncClient:
    return AsyncClient.from_uri(uri)


async def read(c: AsyncClient) -> Event:
    event = await asyncio.wait_for(c.read_event(), timeout=60)
    assert event is not None, "server closed the connection"
    return event


async def transcribe(c: AsyncClient, pcm: np.ndarray, rate: int = 16_000) -> str:
    await c.write_event(Transcribe(language="en").event())
    await c.write_event(AudioStart(rate=rate, width=2, channels=1).event())
    data = pcm.astype("<i2").tobytes()
    for i in range(0, len(data), SAMPLES_PER_CHUNK * 2):
        chunk = AudioChunk(
            rate=rate, width=2, channels=1, audio=data[i : i + SAMPLES_PER_CHUNK * 2]
        )
        await c.write_event(chunk.event())
    await c.write_event(AudioStop().event())
    event = await read(c)
    assert Transcript.is_type(event.type), event
    return Transcript.from_event(event).text


async def read_audio(c: AsyncClient) -> tuple[AudioStart, np.ndarray]:
    """One audio-start .. audio-stop group; every chunk must match the start's format."""
    start_event = await read(c)
    assert AudioStart.is_type(start_event.type), start_event
    start = AudioStart.from_event(start_event)
    parts = []
    while True:
        event = await read(c)
        if AudioStop.is_type(event.type):
            break
        assert AudioChunk.is_type(event.type), event
        chunk = AudioChunk.from_event(event)
        assert (chunk.rate, chunk.width, chunk.channels) == (
            start.rate,
            start.width,
            start.channels,
        )
        parts.append(np.frombuffer(chunk.audio, dtype="<i2"))
    return start, np.concatenate(parts) if parts else np.zeros(0, np.int16)


async def direct_final(engines: Engines, pcm: np.ndarray) -> str:
    """What ``halfsec run`` asks the STT engine at the end of a turn, on the same audio."""
    stream = engines.stt.open_stream()
    stream.feed(pcm)
    text = (await stream.hypothesis(final=True)).text
    stream.close()
    return text


# -- describe -----------------------------------------------------------------------------


async def test_describe_names_the_engines(engines: Engines) -> None:
    async with serving(engines) as uri, client(uri) as c:
        await c.write_event(Describe().event())
        info = Info.from_event(await read(c))
    assert [m.name for m in info.asr[0].models] == ["whisper"]
    assert info.asr[0].models[0].languages == ["en"] and info.asr[0].installed
    assert [v.name for v in info.tts[0].voices] == ["en_US-joe-medium"]
    assert info.tts[0].supports_synthesize_streaming
    assert [m.name for m in info.handle[0].models] == ["coffee"]
    assert [m.name for m in info.intent[0].models] == ["coffee"]


# -- speech to text -----------------------------------------------------------------------


async def test_transcripts_match_the_stt_engine_on_shared_recordings(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    """Studio, read-aloud, assistant commands and crowd-sourced coffee orders: the Wyoming
    transcript is the text the engine gives ``halfsec run`` for the same audio."""
    stems = STUDIO_AND_COMMANDS
    picked = [r for r in rows if Path(r["file"]).stem in stems]
    picked += [r for r in rows if r["intent"] == "orderDrink"][:3]
    assert len(picked) == len(stems) + 3
    errors = words = 0
    async with serving(engines) as uri, client(uri) as c:
        for row in picked:
            pcm = load_audio(speech_dir / row["file"])
            got = await transcribe(c, pcm)
            assert got == await direct_final(engines, pcm), row["file"]
            if row["transcript"]:
                e, n = word_errors(row["transcript"], got)
                errors, words = errors + e, words + n
    assert errors / words < 0.25, f"WER {errors}/{words}"


async def test_audio_at_another_rate_is_resampled(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    row = next(r for r in rows if r["file"].endswith("vctk_p225_002.flac"))
    pcm = load_audio(speech_dir / row["file"])
    at_22k = resample(pcm, 16_000, 22_050)
    async with serving(engines) as uri, client(uri) as c:
        got = await transcribe(c, at_22k, rate=22_050)
        again = await transcribe(c, pcm)  # the connection serves the next request
    assert normalize_text(got) == normalize_text(again) == normalize_text(row["transcript"])


# -- text to speech -----------------------------------------------------------------------


async def test_synthesize_returns_speech_that_transcribes_back(engines: Engines) -> None:
    text = "One large latte with oat milk, coming right up."
    async with serving(engines) as uri, client(uri) as c:
        await c.write_event(Synthesize(text=text).event())
        start, audio = await read_audio(c)
        heard = await transcribe(c, resample(audio, start.rate, 16_000).astype(np.int16))
    assert (start.rate, start.width, start.channels) == (engines.tts.sample_rate, 2, 1)
    assert 1.5 < audio.size / start.rate < 6.0
    assert loudest_frame_dbfs(audio) > -20
    assert "latte" in normalize_text(heard) and "oat milk" in normalize_text(heard), heard


async def test_streamed_text_is_spoken_clause_by_clause(engines: Engines) -> None:
    """The first sentence is answered with audio before the text stream has ended; the
    whole-text ``synthesize`` sent for compatibility is not spoken a second time."""
    async with serving(engines) as uri, client(uri) as c:
        await c.write_event(SynthesizeStart().event())
        for piece in ("Sure, one large", " latte. It will", " be ready "):
            await c.write_event(SynthesizeChunk(text=piece).event())
        _, first = await read_audio(c)
        await c.write_event(SynthesizeChunk(text="in a minute.").event())
        await c.write_event(
            Synthesize(text="Sure, one large latte. It will be ready in a minute.").event()
        )
        await c.write_event(SynthesizeStop().event())
        _, second = await read_audio(c)
        assert SynthesizeStopped.is_type((await read(c)).type)
    assert loudest_frame_dbfs(first) > -20 and loudest_frame_dbfs(second) > -20


# -- intents ------------------------------------------------------------------------------


async def test_handle_and_recognize_use_the_domain(engines: Engines) -> None:
    async with serving(engines) as uri, client(uri) as c:
        await c.write_event(Transcript(text="can I get a large latte with oat milk").event())
        handled = await read(c)
        await c.write_event(Transcript(text="what is the weather like on mars").event())
        not_handled = await read(c)
        await c.write_event(Recognize(text="can I get a large latte").event())
        intent = await read(c)
        await c.write_event(Recognize(text="what is the weather like on mars").event())
        unknown = await read(c)
    assert Handled.is_type(handled.type) and "latte" in Handled.from_event(handled).text.lower()
    assert NotHandled.is_type(not_handled.type) and NotHandled.from_event(not_handled).text
    assert Intent.is_type(intent.type)
    recognized = Intent.from_event(intent)
    assert recognized.name == "orderDrink"
    assert {e.name for e in recognized.entities} >= {"coffeeDrink", "size"}
    assert NotRecognized.is_type(unknown.type)


# -- errors and binding -------------------------------------------------------------------


async def test_a_bad_request_answers_an_error_and_the_connection_stays(engines: Engines) -> None:
    async with serving(engines) as uri, client(uri) as c:
        await c.write_event(AudioChunk(rate=16_000, width=2, channels=1, audio=b"\0\0").event())
        error = Error.from_event(await read(c))
        await c.write_event(Describe().event())
        assert Info.is_type((await read(c)).type)
    assert "audio-start" in error.text


async def test_unix_socket(engines: Engines, tmp_path: Path) -> None:
    async with serving(engines, f"unix://{tmp_path}/h.sock") as uri, client(uri) as c:
        await c.write_event(Describe().event())
        assert Info.is_type((await read(c)).type)


def test_binds_loopback_unless_told() -> None:
    with pytest.raises(WyomingError, match="--allow-remote"):
        parse_uri("tcp://0.0.0.0:10300")
    assert parse_uri("tcp://0.0.0.0:10300", allow_remote=True).host == "0.0.0.0"
    for bad in ("http://127.0.0.1:10300", "tcp://127.0.0.1", "unix://"):
        with pytest.raises(WyomingError):
            parse_uri(bad)


async def test_the_command_serves_until_sigterm() -> None:
    """``halfsec wyoming`` with the light engines: it says where it listens, answers a
    Wyoming client, and stops cleanly on SIGTERM; an unsafe bind fails before loading."""
    cmd = [sys.executable, "-m", "halfsec.cli.main", "wyoming"]
    env = dict(os.environ, COLUMNS="300")
    refused = await asyncio.create_subprocess_exec(
        *cmd, "--uri", "tcp://0.0.0.0:10300", stderr=asyncio.subprocess.PIPE, env=env
    )
    _, err = await asyncio.wait_for(refused.communicate(), 60)
    assert refused.returncode == 2 and b"--allow-remote" in err
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        *("--uri", "tcp://127.0.0.1:0", "--stt", "pocketsphinx", "--tts", "espeak"),
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stderr is not None
    try:
        line = b""
        while b"listening on tcp://" not in line:
            line = await asyncio.wait_for(proc.stderr.readline(), 120)
            assert line, "halfsec wyoming exited before listening"
        uri = line.decode().split("listening on ")[1].split()[0]
        async with AsyncTcpClient.from_uri(uri) as c:
            await c.write_event(Describe().event())
            info = Info.from_event(await read(c))
        assert info.asr[0].models[0].name == "pocketsphinx"
        assert info.tts[0].voices[0].name == "espeak"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
