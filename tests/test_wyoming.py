"""``halfsec wyoming`` as Home Assistant uses it: the ``wyoming`` package's own client
against the server, over real recordings, with the real engines."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from halfsec.logic.state import DialogueState
from halfsec.measure.wer import normalize_text, word_errors
from halfsec.runtime.engines import Engines
from halfsec.runtime.file_run import run_file
from halfsec.runtime.session import VoiceSession
from halfsec.server.wyoming import WyomingError, WyomingServer, parse_uri
from halfsec.server.wyoming_dialogue import WyomingDialogues, conversation_id
from halfsec.server.wyoming_speech import SpeechGate
from halfsec.stt.engine import STTEngine, STTStream
from halfsec.stt.engine import Transcript as STTTranscript
from halfsec.turn.options import TurnOptions

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
async def serving(
    engines: Engines, uri: str = "tcp://127.0.0.1:0", overrides: list[str] | None = None
) -> AsyncIterator[str]:
    server = WyomingServer(engines, load_config(overrides=overrides, environ={}), parse_uri(uri))
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


async def transcribe(
    c: AsyncClient, pcm: np.ndarray, rate: int = 16_000, gap_s: float = 0.0
) -> str:
    """``gap_s`` between chunks lets the server act on each as it comes (a live stream);
    without it, chunks already buffered are read back to back."""
    await c.write_event(Transcribe(language="en").event())
    await c.write_event(AudioStart(rate=rate, width=2, channels=1).event())
    data = pcm.astype("<i2").tobytes()
    for i in range(0, len(data), SAMPLES_PER_CHUNK * 2):
        chunk = AudioChunk(
            rate=rate, width=2, channels=1, audio=data[i : i + SAMPLES_PER_CHUNK * 2]
        )
        await c.write_event(chunk.event())
        if gap_s:
            await asyncio.sleep(gap_s)
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


def gated(pcm: np.ndarray) -> np.ndarray:
    """What a turn's STT stream gets of ``pcm`` (the default turn options)."""
    gate = SpeechGate(TurnOptions())
    frames = gate.feed(pcm)
    whole = gate.finish()
    return whole if whole is not None else np.concatenate(frames)


async def whole_final(engines: Engines, pcm: np.ndarray) -> str:
    """One final on the whole recording, silence and all (what Wyoming did before)."""
    stream = engines.stt.open_stream()
    stream.feed(pcm)
    text = (await stream.hypothesis(final=True)).text
    stream.close()
    return text


async def direct_final(engines: Engines, pcm: np.ndarray) -> str:
    """What ``halfsec run`` asks the STT engine at the end of a turn, on the same audio."""
    stream = engines.stt.open_stream()
    stream.feed(gated(pcm))
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
    transcript is the text the engine gives for what a ``halfsec run`` turn feeds it."""
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


def test_the_gate_keeps_what_a_turn_feeds_the_recognizer(speech_dir: Path) -> None:
    """Around the speech: at most the pre-roll before it, none of the pause after it; a
    long pause inside is cut to the pre-roll; no speech at all: the command as sent."""
    pcm = load_audio(speech_dir / "audio/vctk_p225_002.flac")
    silence = np.zeros(32_000, np.int16)  # 2 s
    opt = TurnOptions()
    gate = SpeechGate(opt)
    out = np.concatenate(gate.feed(np.concatenate([silence, pcm, silence])))
    assert gate.finish() is None and gate.speech_heard
    assert pcm.size * 0.6 < out.size < pcm.size + opt.preroll_ms * 16 + 16_000
    # Twice the sentence with 2 s between: the gap shrinks to the pre-roll.
    gate = SpeechGate(opt)
    twice = np.concatenate(gate.feed(np.concatenate([silence, pcm, silence, pcm, silence])))
    assert twice.size < 2 * out.size + opt.preroll_ms * 16 + 8_000
    assert twice.size > 1.6 * out.size
    quiet = SpeechGate(opt)
    assert quiet.feed(silence) == []
    whole = quiet.finish()
    assert whole is not None and whole.size == silence.size and not quiet.speech_heard


async def test_transcripts_match_halfsec_run(
    engines: Engines, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    """Through Wyoming and through ``halfsec run``'s turn (real-time pace, VAD, partials):
    the same words, on two single-word clips whose whole-file transcript differs from the
    turn's (measured: "now," and "go," whole; "No." and "Dell," in a turn)."""
    cfg = load_config(environ={})
    stems = ("speechcommands_no_37e8db82_nohash_1", "speechcommands_go_37e8db82_nohash_1")
    picked = [r for r in rows if Path(r["file"]).stem in stems]
    assert len(picked) == len(stems)
    async with serving(engines) as uri, client(uri) as c:
        for row in picked:
            pcm = load_audio(speech_dir / row["file"])
            got = await transcribe(c, pcm)
            session = VoiceSession(
                engines, cfg.turn, cfg.session, output_rate=cfg.audio.output_rate
            )
            ran = (await run_file(session, pcm)).summary()["transcript"]
            assert normalize_text(got) == normalize_text(ran), (row["file"], got, ran)
            assert normalize_text(got) != normalize_text(await whole_final(engines, pcm))
            if "_no_" in row["file"]:
                assert normalize_text(got) == "no", got


class FinalsSeen(STTEngine):
    """The real recognizer, noting how much audio each final was asked for."""

    def __init__(self, inner: STTEngine) -> None:
        self.inner = inner
        self.name = inner.name
        self.finals: list[int] = []

    def open_stream(self) -> STTStream:
        return _Noting(self.inner.open_stream(), self.finals)


class _Noting(STTStream):
    def __init__(self, inner: STTStream, finals: list[int]) -> None:
        self.inner, self.finals, self.samples = inner, finals, 0

    def feed(self, pcm: np.ndarray) -> None:
        self.inner.feed(pcm)
        self.samples += pcm.size

    async def hypothesis(self, final: bool) -> STTTranscript:
        if final:
            self.finals.append(self.samples)
        return await self.inner.hypothesis(final)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("speculate", [True, False])
async def test_a_pause_starts_the_final_as_in_a_live_turn(
    speculate: bool, engines: Engines, speech_dir: Path
) -> None:
    """The final is asked for at the pause (speculatively, as ``halfsec run`` does) and
    again at ``audio-stop``, for the same audio, so the second is answered by the first;
    speech after a pause makes the first stale.  ``session.speculate = false``: once."""
    pcm = load_audio(speech_dir / "audio/vctk_p225_001.flac")
    more = load_audio(speech_dir / "audio/vctk_p225_002.flac")
    silence = np.zeros(16_000, np.int16)
    seen = FinalsSeen(engines.stt)
    spied = dataclasses.replace(engines, stt=seen)
    overrides = [f"session.speculate={str(speculate).lower()}"]
    async with serving(spied, overrides=overrides) as uri, client(uri) as c:
        once = await transcribe(c, np.concatenate([silence, pcm, silence]))
        first = list(seen.finals)
        seen.finals.clear()
        both = np.concatenate([silence, pcm, silence, more, silence])
        twice = await transcribe(c, both, gap_s=0.005)
    assert normalize_text(once) == "please call stella", once
    assert "stella" in normalize_text(twice) and "store" in normalize_text(twice), twice
    if speculate:
        assert len(first) == 2 and first[0] == first[1], first
        assert len(seen.finals) == 3 and seen.finals[0] < seen.finals[1] == seen.finals[2]
    else:
        assert len(first) == 1 and len(seen.finals) == 1, (first, seen.finals)


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
        # Another conversation: in this one, the open order would be asked about again.
        other = {"conversation_id": "another"}
        await c.write_event(
            Transcript(text="what is the weather like on mars", context=other).event()
        )
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


async def test_handle_keeps_the_conversation_of_home_assistants_id(engines: Engines) -> None:
    """Home Assistant opens a connection per utterance and names the conversation in the
    context: "large" answers the size question of that conversation only; without an
    id, the connection is the conversation."""

    async def say(text: str, cid: str | None = None, c: AsyncClient | None = None) -> Event:
        context = {"conversation_id": cid} if cid else None
        if c is not None:
            await c.write_event(Transcript(text=text, context=context).event())
            return await read(c)
        async with client(uri) as fresh:
            await fresh.write_event(Transcript(text=text, context=context).event())
            return await read(fresh)

    async with serving(engines) as uri:
        asked = Handled.from_event(await say("can I get a latte", "ha-1"))
        other = Handled.from_event(await say("can I get a cappuccino", "ha-2"))
        sized = Handled.from_event(await say("large", "ha-1"))
        unsized = Handled.from_event(await say("large", "ha-3"))
        async with client(uri) as c:
            await say("can I get an americano", c=c)
            on_socket = Handled.from_event(await say("small", c=c))
        alone = Handled.from_event(await say("small"))
    assert "size" in (asked.text or "") and "size" in (other.text or ""), (asked, other)
    assert "large latte" in (sized.text or "").lower(), sized
    assert sized.context == {"conversation_id": "ha-1"}
    assert "latte" not in (unsized.text or "").lower().split(":")[0], unsized
    assert "small americano" in (on_socket.text or "").lower(), on_socket
    assert "americano" not in (alone.text or "").lower().split(":")[0], alone


def test_conversations_expire_and_are_bounded() -> None:
    now = [0.0]
    store = WyomingDialogues(idle_s=300, max_conversations=2, clock=lambda: now[0])
    state = DialogueState(turns=3)
    store.put("a", state)
    assert store.get("a") == state
    now[0] = 301.0
    assert store.get("a") == DialogueState() and len(store) == 0
    for cid in ("x", "y", "z"):
        store.put(cid, state)
    assert len(store) == 2 and store.get("x") == DialogueState() and store.get("z") == state
    assert conversation_id({"conversation_id": "ha-1"}) == "ha-1"
    assert conversation_id({"conversation_id": 5}) is None and conversation_id(None) is None


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
