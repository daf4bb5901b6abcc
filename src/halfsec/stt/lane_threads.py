"""The threads decodes run on: one worker thread per model, optionally at lower CPU
priority (used by ``decode_lanes`` and by PocketSphinx)."""

from __future__ import annotations

import concurrent.futures
import os
import threading


def inference_executor(name: str, nice: int = 0) -> concurrent.futures.ThreadPoolExecutor:
    """One worker thread: decodes run one at a time, in order, off the event loop.

    ``nice`` > 0 sets the worker's nice value, i.e. lowers its CPU priority (Linux:
    per thread; where that is not permitted the worker runs at normal priority).  Threads created
    from the worker inherit it, which is why a model meant to run at low priority must be
    *loaded* on its worker (CTranslate2 starts its compute threads at load time).  Used
    for background work such as partial transcripts, which must yield the CPU to the
    final decode and TTS on a 2-core machine rather than halve their speed.
    """

    return concurrent.futures.ThreadPoolExecutor(
        max_workers=1,
        thread_name_prefix=f"halfsec-stt-{name}",
        initializer=lambda: lower_thread_priority(nice),
    )


def lower_thread_priority(nice: int) -> None:
    """Set the calling thread's nice value to ``nice`` (> 0: lower priority; Linux: per
    thread).  Where that is not permitted the thread keeps its priority."""
    if nice > 0 and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:  # not permitted here: run at normal priority
            pass
