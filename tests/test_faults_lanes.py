"""A faulted session's recovery must not take the CPU from the healthy sessions beside it.

On 2 cores the healthy turns' Whisper finals and TTS compete with whatever the faulted
session still runs; ``benchmarks/fault_bench.py``'s per-turn breakdown showed two such
bursts: the decode an injected stall held up, run anyway once the stall ended though
nobody waited for it any more, and PocketSphinx decoding a faulted turn's whole audio at
normal priority.  These tests pin both rules on the real engines.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from halfsec.runtime.engines import Engines
from halfsec.runtime.fallback import FALLBACK_NICE
from halfsec.stt.decode_lanes import DecodeAbandoned, ReplaceableLane
from halfsec.stt.pocketsphinx import PocketSphinxEngine
from halfsec.stt.whisper import WhisperEngine


def _stall(seconds: float) -> Callable[[bool], Callable[[], None] | None]:
    def hook(final: bool) -> Callable[[], None] | None:
        return (lambda: time.sleep(seconds)) if final else None

    return hook


async def test_a_stalled_final_abandoned_meanwhile_is_not_decoded(engines: Engines) -> None:
    whisper = engines.stt
    assert isinstance(whisper, WhisperEngine)
    pcm = (np.random.default_rng(1).standard_normal(32_000) * 2000).astype(np.int16)
    whisper.fault_hook = _stall(0.4)
    try:
        running = whisper.submit(pcm, True, None)
        await asyncio.sleep(0.1)  # in its stall now
        whisper.abandon(running, True)  # its caller gave up (a deadline)
        kept = whisper.submit(pcm, True, None)  # on another worker, stalled, then decoded
        t0 = time.perf_counter()
        with pytest.raises(DecodeAbandoned):
            await asyncio.wait_for(asyncio.shield(running), 5)
        assert time.perf_counter() - t0 < 0.5, "the stall ended and nothing was decoded"
        decoded = await asyncio.wait_for(asyncio.shield(kept), 5)
        assert decoded.compute_ms > 0, "a decode still waited for is decoded"
    finally:
        whisper.fault_hook = None


async def test_lane_wanted_turns_false_once_a_job_is_abandoned() -> None:
    lane: ReplaceableLane[int] = ReplaceableLane("toy-wanted", lambda: 0, hung_after_s=5.0)
    seen: list[bool] = []
    holder: list[asyncio.Future[str]] = []
    started = threading.Event()

    def job(_model: int) -> str:
        started.set()
        time.sleep(0.2)
        seen.append(lane.wanted(holder[0]))  # asked from the worker thread
        return "done"

    try:
        holder.append(lane.submit(job))
        assert lane.wanted(holder[0])
        await asyncio.to_thread(started.wait, 2)
        lane.abandon(holder[0])
        assert not lane.wanted(holder[0])
        await asyncio.sleep(0.4)
        assert seen == [False]
    finally:
        lane.close()


def test_the_backup_recognizer_decodes_below_normal_priority(engines: Engines) -> None:
    backup = engines.fallback.stt if engines.fallback is not None else None
    assert isinstance(backup, PocketSphinxEngine), "the default backup is PocketSphinx"

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    assert backup.submit(nice).result(5) == FALLBACK_NICE
    # a PocketSphinx engine that is the configured recognizer keeps normal priority
    primary = PocketSphinxEngine()
    try:
        assert primary.submit(nice).result(5) == os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        primary.close()
