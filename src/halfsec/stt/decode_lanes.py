"""The worker threads STT decodes run on ("lanes"), one decode at a time, off the event loop."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor


def inference_executor(name: str, nice: int = 0) -> ThreadPoolExecutor:
    """One worker thread: decodes run one at a time, in order, off the event loop.

    ``nice`` > 0 sets the worker's nice value, i.e. lowers its CPU priority (Linux:
    per thread; where that is not permitted the worker runs at normal priority).  Threads created
    from the worker inherit it, which is why a model meant to run at low priority must be
    *loaded* on its worker (CTranslate2 starts its compute threads at load time).  Used
    for background work such as partial transcripts, which must yield the CPU to the
    final decode and TTS on a 2-core machine rather than halve their speed.
    """

    def lower_priority() -> None:
        if nice > 0 and hasattr(os, "setpriority"):
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
            except OSError:  # not permitted here: run at normal priority
                pass

    return ThreadPoolExecutor(
        max_workers=1, thread_name_prefix=f"halfsec-stt-{name}", initializer=lower_priority
    )
