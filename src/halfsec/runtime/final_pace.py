"""How long this machine's final decodes take lately: the turn task's early start
(``runtime/turn_task.py``) is worth its CPU only where the final is slow.

Early start runs logic and the reply's synthesis from a partial *while* the final
decodes, to hide a final that is the floor of every turn (a CPU without AVX-512:
~230-280 ms).  Where the final is fast it hides nothing (the end-of-turn wait is longer
than the final) and costs the final its cores: on the usual 2-core box the early reply's
Piper synthesis ran beside Whisper's two threads and the final took 146 instead of 75 ms,
302 instead of 118 ms (two coffee orders of 30 in a live probe, 2026-12-01; the end of
turn waits for the final, so those turns ended 80 and 200 ms later than the replay's).
So early start is allowed only while the recent finals' median is at least
``EARLY_MIN_FINAL_MS``.  One record per process: its sessions share the CPU."""

from __future__ import annotations

import threading
from collections import deque
from statistics import median

EARLY_MIN_FINAL_MS = 200.0
"""Median final decode (ms) from which early start pays.  The default end-of-turn windows
close 180-450 ms after the estimated end of speech, which the detector sees ~70 ms after
it: a final under ~110 ms plus ~25 ms to the first clause's audio is ready before the
fastest window; 200 ms leaves room for a final slowed by a busy box.  Usual box: median
~100-120 ms (never early); emulated AVX2: ~141 ms; a CPU without AVX-512: ~280 ms; the
usual box capped at 0.9 CPUs (``benchmarks/slow_cpu.py``): 248-275 ms (early allowed)."""
WINDOW = 16
"""Recent finals the median is taken over."""


class FinalPace:
    """The compute time of the last ``WINDOW`` finals, and whether they are slow."""

    def __init__(self, min_final_ms: float = EARLY_MIN_FINAL_MS, window: int = WINDOW) -> None:
        self.min_final_ms = min_final_ms
        self._recent: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def record(self, compute_ms: float) -> None:
        """A final decode took ``compute_ms`` (a cached or promoted final, 0 ms, is not
        a decode and is not recorded)."""
        if compute_ms > 0:
            with self._lock:
                self._recent.append(compute_ms)

    def __len__(self) -> int:
        """Finals on record."""
        with self._lock:
            return len(self._recent)

    def slow(self) -> bool:
        """Is early start worth it?  False until a final has been measured."""
        with self._lock:
            return bool(self._recent) and median(self._recent) >= self.min_final_ms


FINAL_PACE = FinalPace()
"""The process's record, shared by its sessions' turn tasks."""
