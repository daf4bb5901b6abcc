"""A turn that does not stop when it is cancelled must not keep its session open.

Stop 15 (docs/reliability.md): a session of the bench's plain server never finished its
turn and stayed open minutes after its client left.  The cause, caught in the server's
task stacks: the user resumed speaking, the session cancelled the speculative turn task,
which cancelled its early reply; that reply was in Python 3.11's ``asyncio.wait_for``
with its next audio chunk already there, which *returns* the chunk instead of raising
the cancel.  The reply went on to wait for a confirmation no final would give, the turn
task waited for it, the session's ``push`` waited for the turn task, and the receive loop
that would have seen the client leave never ran again.

The races here are the real ones (asyncio's own ``wait_for``, real engines); the tests
only decide, with events, in which loop iteration each thing happens."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from halfsec.audio.io import load_audio
from halfsec.frames import Frame, TimingMark
from halfsec.runtime.deadlines import Deadlines
from halfsec.runtime.engines import Engines
from halfsec.runtime.final_pace import FinalPace
from halfsec.runtime.ladder import HeardSoFar
from halfsec.runtime.options import SessionOptions
from halfsec.runtime.session import VoiceSession
from halfsec.runtime.turn_task import TurnTask
from halfsec.stt.engine import STTEngine, STTStream, Transcript
from halfsec.tts.engine import TTSEngine, WrappedTTS

ORDER = "audio/picovoice_1cf61395-1205-46c4-bf1c-2e43dd489455.flac"
PAUSING_ORDER = "audio/picovoice_13b57702-312b-4b35-974b-a9d0a4473099.flac"
"""The order of the stop-15 hang: "can i get twenty ounce mocha | with ... skim milk"
(a pause the detector sees, then speech again: the session cancels the turn task)."""


class GatedVoice(WrappedTTS):
    """The real voice, whose every chunk's second half waits for ``gate``: the early
    reply then sits in ``wait_for`` for a chunk the test releases when it chooses."""

    def __init__(self, inner: TTSEngine) -> None:
        super().__init__(inner)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        async for chunk in self.inner.synthesize(text):
            half = chunk.size // 2
            yield chunk[:half]
            self.waiting.set()
            await self.gate.wait()
            yield chunk[half:]


class HeldFinal(STTStream):
    """A final transcript (decoded beforehand) handed out once ``release`` is set."""

    def __init__(self, final: Transcript) -> None:
        self.final = final
        self.release = asyncio.Event()

    def feed(self, pcm: np.ndarray) -> None:
        pass

    async def hypothesis(self, final: bool) -> Transcript:
        await self.release.wait()
        return self.final


async def _decoded(engines: Engines, pcm: np.ndarray) -> Transcript:
    stream = engines.stt.open_stream()
    stream.feed(pcm)
    return await stream.hypothesis(final=True)


def _early_turn(
    engines: Engines, pcm: np.ndarray, final: Transcript
) -> tuple[TurnTask, HeldFinal, GatedVoice, list[Frame]]:
    """A turn whose early reply starts from a partial the final will refute."""
    voice = GatedVoice(engines.tts)
    stream = HeldFinal(final)
    slow = FinalPace()
    for _ in range(3):
        slow.record(300.0)  # finals are slow lately: early start is on
    heard = HeardSoFar([pcm], partial="two small teas and a blueberry muffin please")
    heard.partial_audio_ms = pcm.size / 16
    opts = SessionOptions(stt_deadline_ms=30_000, tts_deadline_ms=30_000)
    frames: list[Frame] = []
    task = TurnTask(
        1,
        stream,
        dataclasses.replace(engines, tts=voice),
        16_000,
        frames.append,
        deadlines=Deadlines.from_options(opts),
        heard=heard,
        pace=slow,
    )
    task.commit()
    return task, stream, voice, frames


def _pending_replies() -> list[asyncio.Task[object]]:
    """Early replies still running (one left waiting for ever is a leak)."""
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and t.get_coro().__qualname__ == "TurnTask._reply"  # type: ignore[union-attr]
    ]


async def test_cancelling_a_turn_whose_early_reply_swallowed_the_cancel_returns(
    engines: Engines, speech_dir: Path
) -> None:
    """The session cancels a speculative turn (the user resumed) while its early reply's
    next chunk is arriving.  For some of these interleavings 3.11's ``wait_for`` swallows
    the cancel; before the fix ``TurnTask.cancel`` then never returned (k = 0..2 here)."""
    pcm = load_audio(speech_dir / ORDER)
    final = await _decoded(engines, pcm)
    for k in range(8):  # loop iterations between the chunk's arrival and the cancel
        task, stream, voice, _ = _early_turn(engines, pcm, final)
        task.start()
        try:
            await asyncio.wait_for(voice.waiting.wait(), 30)
            voice.gate.set()
            for _ in range(k):
                await asyncio.sleep(0)
            await asyncio.wait_for(task.cancel(), 5)  # the stop deadline is 1 s
            assert task.task is not None and task.task.done(), k
            await asyncio.sleep(0.1)
            assert not _pending_replies(), f"k={k}: an early reply left running"
        finally:
            stream.release.set()


async def test_a_refuted_early_reply_that_swallowed_the_cancel_lets_the_turn_answer(
    engines: Engines, speech_dir: Path
) -> None:
    """The final refutes the early reply while its next chunk is arriving: the turn drops
    it and answers from the final.  Before the fix the dropped reply could go on to wait
    for a confirmation for ever, and its turn with it: no reply, nothing to stop it."""
    pcm = load_audio(speech_dir / ORDER)
    final = await _decoded(engines, pcm)
    for chunk_first in (False, True):
        for k in range(8):
            task, stream, voice, frames = _early_turn(engines, pcm, final)
            task.start()
            try:
                await asyncio.wait_for(voice.waiting.wait(), 30)
                first, second = (
                    (voice.gate, stream.release) if chunk_first else (stream.release, voice.gate)
                )
                first.set()
                for _ in range(k):
                    await asyncio.sleep(0)
                second.set()
                await asyncio.wait_for(task.done.wait(), 15)
            finally:
                stream.release.set()
                voice.gate.set()
                await task.cancel()
            assert task.early == "redone", (chunk_first, k)
            assert any(isinstance(f, TimingMark) and f.name == "tts.end" for f in frames)
            await asyncio.sleep(0.1)
            assert not _pending_replies(), f"chunk_first={chunk_first} k={k}: left running"


class DeafFinal(STTStream):
    """A real stream whose final never comes and which goes on through every cancel, as
    an STT plugin that catches ``CancelledError`` to finish a decode that cannot finish."""

    def __init__(self, inner: STTStream, quit_: asyncio.Event) -> None:
        self.inner = inner
        self.quit = quit_

    def feed(self, pcm: np.ndarray) -> None:
        self.inner.feed(pcm)

    async def hypothesis(self, final: bool) -> Transcript:
        if not final:
            return await self.inner.hypothesis(final)
        while not self.quit.is_set():
            try:
                await asyncio.sleep(0.02)
            except asyncio.CancelledError:
                pass
        raise RuntimeError("the test is over")


class DeafFinals(STTEngine):
    name = "deaf-finals"

    def __init__(self, inner: STTEngine) -> None:
        self.inner = inner
        self.quit = asyncio.Event()

    def open_stream(self) -> STTStream:
        return DeafFinal(self.inner.open_stream(), self.quit)


async def test_a_session_whose_turn_will_not_stop_takes_audio_and_closes(
    engines: Engines, speech_dir: Path
) -> None:
    """The product rule: a session whose client is gone is closed in bounded time,
    whatever its turn is doing.  Here no final ever comes and the stream ignores its
    cancels; the user pauses mid-order and goes on (the session cancels the turn), then
    the client leaves (``close``).  Before the fix ``push`` hung at the resume: the
    server's receive loop, blocked in it, never saw the client go."""
    deaf = DeafFinals(engines.stt)
    session = VoiceSession(
        dataclasses.replace(engines, stt=deaf),
        options=SessionOptions(end_of_turn="silence"),
    )
    pcm = load_audio(speech_dir / PAUSING_ORDER)
    audio = np.concatenate([pcm, np.zeros(32_000, np.int16)])
    kinds: list[str] = []

    async def read() -> None:
        async for f in session.events():
            kinds.append(type(f).__name__)

    reader = asyncio.create_task(read())

    async def speak() -> None:
        for i in range(0, audio.size, 320):  # 20 ms frames, 4x real time
            await session.push(audio[i : i + 320])
            await asyncio.sleep(0.005)

    try:
        await asyncio.wait_for(speak(), 60)
        assert "SpeechResumed" in kinds, kinds  # the turn task was cancelled mid-order
        await asyncio.wait_for(session.close(), 10)  # 3 stops of at most 1 s
        await asyncio.wait_for(reader, 5)
    finally:
        deaf.quit.set()
        reader.cancel()
