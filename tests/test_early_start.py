"""Early start (``runtime/turn_task.py``) where finals are slow: before the final confirms,
the early reply has logic and its *first* clause only.  Why: on a slow CPU the rest's
synthesis ran beside the final and slowed it (``benchmarks/slow_cpu.py``, stop 14: with
early start firing on 16 of 20 orders the final missed its 450 ms deadline in 7)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from halfsec.audio.io import load_audio
from halfsec.frames import Frame, ReplyAudio, ReplyText
from halfsec.runtime.deadlines import Deadlines
from halfsec.runtime.engines import Engines
from halfsec.runtime.final_pace import FinalPace
from halfsec.runtime.ladder import HeardSoFar
from halfsec.runtime.options import SessionOptions
from halfsec.runtime.turn_task import TurnTask
from halfsec.stt.engine import STTStream, Transcript

ORDER = "audio/picovoice_1cf61395-1205-46c4-bf1c-2e43dd489455.flac"


class HeldFinal(STTStream):
    """A real Whisper stream whose final is handed out only once ``release`` is set: a
    final that takes as long as the test needs."""

    def __init__(self, inner: STTStream) -> None:
        self.inner = inner
        self.release = asyncio.Event()

    def feed(self, pcm: np.ndarray) -> None:
        self.inner.feed(pcm)

    async def hypothesis(self, final: bool) -> Transcript:
        if final:
            await self.release.wait()
        return await self.inner.hypothesis(final)


def _texts(frames: Sequence[object]) -> list[int]:
    return [f.index for f in frames if isinstance(f, ReplyText)]


async def test_an_early_reply_synthesizes_its_first_clause_only_until_confirmed(
    engines: Engines, speech_dir: Path
) -> None:
    pcm = load_audio(speech_dir / ORDER)
    probe = engines.stt.open_stream()
    probe.feed(pcm)
    said = (await probe.hypothesis(final=True)).text
    stream = HeldFinal(engines.stt.open_stream())
    stream.feed(pcm)
    slow = FinalPace()
    for _ in range(3):
        slow.record(300.0)
    frames: list[Frame] = []
    heard = HeardSoFar([pcm], partial=said, partial_audio_ms=pcm.size / 16)
    deadlines = Deadlines.from_options(SessionOptions(stt_deadline_ms=30_000))
    task = TurnTask(
        1, stream, engines, 16_000, frames.append, deadlines=deadlines, heard=heard, pace=slow
    )
    task.commit()
    task.start()
    try:
        for _ in range(200):  # the first clause's audio, held behind the early gate
            held = list(task._early_hold or [])
            if any(isinstance(f, ReplyAudio) for f in held):
                break
            await asyncio.sleep(0.05)
        assert any(isinstance(f, ReplyAudio) and f.clause_index == 0 for f in held), held
        await asyncio.sleep(0.5)  # time enough to synthesize the next clause, were it allowed
        held = list(task._early_hold or [])
        assert _texts(held) == [0], "only the first clause before the final"
        assert not [f for f in frames if isinstance(f, (ReplyAudio, ReplyText))], "unheard"
    finally:
        stream.release.set()
    await asyncio.wait_for(task.done.wait(), 30)
    assert task.early == "kept"
    assert max(_texts(frames)) >= 1, "the rest of the reply follows once confirmed"
    assert _texts(frames) == sorted(_texts(frames))
