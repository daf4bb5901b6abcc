"""A session gives back what its turns took from a shared STT engine.

Found in stop 15's audit (docs/reliability.md): the runtime never closed a turn's STT
stream.  PocketSphinx lends each stream a decoder from a pool and takes it back on
``close``; unclosed, every turn after the first loaded a decoder of its own on the one
inference thread (~250 ms, in front of that turn's first decodes), and the pool stayed
empty for ever (20 turns: 19 loads)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from halfsec.audio.io import load_audio
from halfsec.frames import ReplyDone
from halfsec.runtime.engines import Engines
from halfsec.runtime.options import SessionOptions
from halfsec.runtime.session import VoiceSession
from halfsec.stt.factory import create_stt
from halfsec.stt.options import STTOptions
from halfsec.stt.pocketsphinx import PocketSphinxEngine

ORDER = "audio/picovoice_1cf61395-1205-46c4-bf1c-2e43dd489455.flac"


async def _one_turn(engines: Engines, pcm: np.ndarray) -> None:
    """A session that hears one order, answers it and is closed by its client."""
    session = VoiceSession(engines, options=SessionOptions(end_of_turn="silence"))
    answered = asyncio.Event()

    async def read() -> None:
        async for f in session.events():
            if isinstance(f, ReplyDone):
                answered.set()

    reader = asyncio.create_task(read())
    audio = np.concatenate([pcm, np.zeros(24_000, np.int16)])
    try:
        for i in range(0, audio.size, 320):  # 20 ms frames, 4x real time
            await session.push(audio[i : i + 320])
            await asyncio.sleep(0.005)
        await asyncio.wait_for(answered.wait(), 30)
    finally:
        await session.close()
        await asyncio.wait_for(reader, 10)


async def test_turns_give_their_pocketsphinx_decoder_back(
    engines: Engines, speech_dir: Path
) -> None:
    sphinx = create_stt(STTOptions(engine="pocketsphinx"))
    assert isinstance(sphinx, PocketSphinxEngine)
    sphinx.warmup()
    loads = 0
    load = sphinx._new_decoder

    def counted() -> Any:
        nonlocal loads
        loads += 1
        return load()

    sphinx._new_decoder = counted  # type: ignore[method-assign]
    light = dataclasses.replace(engines, stt=sphinx)
    pcm = load_audio(speech_dir / ORDER)
    try:
        for _ in range(3):
            await _one_turn(light, pcm)
        await asyncio.sleep(0.5)  # the last give-back runs after the decodes queued before it
        assert loads <= 1, f"{loads} decoders loaded for 3 turns one after another"
        assert sphinx._pool, "no decoder went back to the pool"
    finally:
        sphinx.close()
