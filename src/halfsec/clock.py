"""One monotonic clock for every timestamp in halfsec.

Wall clocks jump (NTP, DST); latency must never be computed from them.  All frames
carry ``time.monotonic_ns()`` values; helpers here convert for display.
"""

from __future__ import annotations

import time


def now_ns() -> int:
    """Monotonic nanoseconds: the only timestamp source allowed in the pipeline."""
    return time.monotonic_ns()


def ns_to_ms(ns: int) -> float:
    return ns / 1e6


def ms_since(t0_ns: int, t1_ns: int | None = None) -> float:
    """Milliseconds from ``t0_ns`` to ``t1_ns`` (or now)."""
    return ((now_ns() if t1_ns is None else t1_ns) - t0_ns) / 1e6
