"""A soak: steady load for a long time, watching for what only time shows.

A leak of one descriptor, one task or one buffer per session is invisible in a
two-minute ramp and fatal after a day.  The soak runs K callers (``lab.load.run``) for
the whole duration and samples the server's RSS, open descriptors, threads and asyncio
tasks (``lab.load.sampler``); then it asks of each series whether it stayed *flat*, and
whether latency at the end is what it was at the start.

Flat: a least-squares line through the samples of the last 80 % of the run (the first
20 % is warm-up: allocator pools, model caches and lazily made threads grow there by
design) may change the quantity by at most ``max(abs, rel x median)`` over that window.
The bounds (``FLAT_BOUNDS``) are loose enough that sessions opening and closing (a
socket each) do not trip them and tight enough that one leaked descriptor, task or
thread per turn does over a 10-minute soak (~100 turns).

Latency, two rules, both reported:

* ``first_vs_last_minute`` (the issue's words): v2v p95 of the turns that started in the
  last minute within 10 % of the first minute's.  At ~30 turns a minute a minute's p95 is
  its second-slowest turn, so this rule is mostly noise: in the quiet 10-minute soak of
  2026-12-01 the per-minute p95 of minutes 2-10 ranged 375-483 ms (-9/+17 % around their
  median) with nothing changing in the server.
* ``steady`` (what ``ok`` uses): p95 of the first two minutes after the warm-up share
  against the last two minutes', within 10 % either way.  Twice the turns per window and
  the same warm-up cut as the resource rule, so a server that slows down over time
  still fails it, and the start-up (first loads, first inferences) is judged by the
  first-minute rule instead of hiding in it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from halfsec.lab.load.sampler import ResourceSample
from halfsec.measure.percentile import percentile

__all__ = [
    "FLAT_BOUNDS",
    "WARMUP_SHARE",
    "flatness",
    "latency_drift",
    "soak_verdict",
    "steady_latency",
]

WARMUP_SHARE = 0.2
"""The first 20 % of the run is warm-up, left out of the slope."""

FLAT_BOUNDS: dict[str, tuple[float, float]] = {
    "rss_mb": (16.0, 0.05),
    "fds": (8.0, 0.10),
    "threads": (3.0, 0.10),
    "asyncio_tasks": (8.0, 0.10),
}
"""Series -> (absolute bound, share of its median): the most the fitted line may move
over the last 80 % of the run and still be flat."""

P95_DRIFT_SHARE = 0.10
"""The last minute's v2v p95 may be at most 10 % above (or below) the first minute's."""


def flatness(
    samples: Sequence[ResourceSample], key: str, bound: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Slope and verdict of one series after warm-up (see the module docstring)."""
    absolute, rel = bound or FLAT_BOUNDS[key]
    pts = [(s.t_s, getattr(s, key)) for s in samples if getattr(s, key) is not None]
    if len(pts) < 3:
        return {"flat": None, "why": "too few samples", "samples": len(pts)}
    t_end = pts[-1][0]
    t_from = pts[0][0] + WARMUP_SHARE * (t_end - pts[0][0])
    window = [(t, float(v)) for t, v in pts if t >= t_from]
    if len(window) < 3 or window[-1][0] <= window[0][0]:
        return {"flat": None, "why": "too few samples after warm-up", "samples": len(window)}
    ts = np.array([t for t, _ in window])
    vs = np.array([v for _, v in window])
    slope = float(np.polyfit(ts, vs, 1)[0])
    span = float(ts[-1] - ts[0])
    drift = slope * span
    median = percentile(vs, 50)  # the project's one rule (linear: p50 = the median)
    assert median is not None  # the window has >= 3 samples
    limit = max(absolute, rel * abs(median))
    return {
        "flat": abs(drift) <= limit,
        "slope_per_min": round(slope * 60, 4),
        "drift": round(drift, 2),
        "limit": round(limit, 2),
        "median": round(median, 2),
        "first": window[0][1],
        "last": window[-1][1],
        "max": float(vs.max()),
        "window_s": round(span, 1),
        "samples": len(window),
    }


def _p95(turns: Sequence[Mapping[str, Any]], lo: float, hi: float) -> tuple[float | None, int]:
    """v2v p95 (and count) of the answered turns that started in ``[lo, hi)`` s."""
    xs = [
        float(t["v2v_ms"])
        for t in turns
        if t.get("ok") and t.get("v2v_ms") is not None and lo <= float(t["t_start_s"]) < hi
    ]
    v = percentile(xs, 95)
    return (None if v is None else round(v, 1)), len(xs)


def latency_drift(turns: Sequence[Mapping[str, Any]], duration_s: float) -> dict[str, Any]:
    """v2v p95 of the turns that started in the first minute against the last minute's.
    ``within``: the last is within ``P95_DRIFT_SHARE`` of the first."""
    first, n_first = _p95(turns, 0.0, 60.0)
    last, n_last = _p95(turns, max(60.0, duration_s - 60.0), float("inf"))
    within = None
    if first is not None and last is not None and duration_s >= 120.0:
        within = abs(last - first) <= P95_DRIFT_SHARE * first
    return {
        "first_minute_p95_ms": first,
        "first_minute_turns": n_first,
        "last_minute_p95_ms": last,
        "last_minute_turns": n_last,
        "change_pct": None if first is None or last is None else round(100 * (last / first - 1), 1),
        "within_10pct": within,
    }


STEADY_WINDOW_S = 120.0
"""Each window of the steady latency rule: two minutes, ~60 turns at the soak's load."""


def steady_latency(turns: Sequence[Mapping[str, Any]], duration_s: float) -> dict[str, Any]:
    """v2v p95 of the first ``STEADY_WINDOW_S`` after the warm-up share against the last
    ``STEADY_WINDOW_S`` (module docstring); judged when the windows do not overlap."""
    start = WARMUP_SHARE * duration_s
    first, n_first = _p95(turns, start, start + STEADY_WINDOW_S)
    last, n_last = _p95(turns, duration_s - STEADY_WINDOW_S, float("inf"))
    judged = (
        first is not None
        and last is not None
        and start + STEADY_WINDOW_S <= duration_s - STEADY_WINDOW_S
    )
    return {
        "first_window_s": [round(start, 1), round(start + STEADY_WINDOW_S, 1)],
        "first_p95_ms": first,
        "first_turns": n_first,
        "last_window_s": [round(max(0.0, duration_s - STEADY_WINDOW_S), 1), round(duration_s, 1)],
        "last_p95_ms": last,
        "last_turns": n_last,
        "change_pct": None if first is None or last is None else round(100 * (last / first - 1), 1),
        "within_10pct": (abs(last - first) <= P95_DRIFT_SHARE * first)
        if judged and first is not None and last is not None
        else None,
    }


def per_minute_p95(turns: Sequence[Mapping[str, Any]], duration_s: float) -> list[dict[str, Any]]:
    """Every minute's p95 and turn count: how noisy a one-minute p95 is in this run."""
    out = []
    for m in range(max(1, math.ceil(duration_s / 60.0))):
        p, n = _p95(turns, 60.0 * m, 60.0 * (m + 1))
        out.append({"minute": m + 1, "p95_ms": p, "turns": n})
    return out


def soak_verdict(
    samples: Sequence[ResourceSample], turns: Sequence[Mapping[str, Any]], duration_s: float
) -> dict[str, Any]:
    """Every series' flatness and both latency rules; ``ok``: every series judged flat,
    the steady latency rule held, and no turn failed (``why`` says what did not hold)."""
    series = {k: flatness(samples, k) for k in FLAT_BOUNDS}
    drift = latency_drift(turns, duration_s)
    steady = steady_latency(turns, duration_s)
    failed = sum(1 for t in turns if not t.get("ok") and not t.get("refused"))
    why = [f"{k} not flat" for k, v in series.items() if v["flat"] is False]
    why += [f"{k} not judged ({v.get('why')})" for k, v in series.items() if v["flat"] is None]
    if steady["within_10pct"] is None:
        why.append("steady latency not judged (runs shorter than ~5 minutes)")
    elif not steady["within_10pct"]:
        why.append(f"steady p95 changed {steady['change_pct']} % (limit 10 %)")
    if failed:
        why.append(f"{failed} failed turn(s)")
    if not any(t.get("ok") for t in turns):
        why.append("no answered turn")
    # A series the server cannot report (no task gauge) is not held against it.
    why = [w for w in why if not w.startswith("asyncio_tasks not judged (too few samples)")]
    return {
        "series": series,
        "latency": drift,
        "latency_steady": steady,
        "latency_per_minute": per_minute_p95(turns, duration_s),
        "failed_turns": failed,
        "ok": not why,
        "why": why,
    }
