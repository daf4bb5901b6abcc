"""Latency statistics for reports: percentiles and seeded bootstrap confidence intervals.

Percentiles follow the project's one rule (``halfsec.measure.percentile``, linear
interpolation between the closest ranks), so a report's p95 is the bench summary's p95
and the benchmarks' p95 for the same turns.

Why bootstrap: a p95 from 40 turns is a noisy estimate.  Reporting it with a confidence
interval, and comparing two runs by the interval of their *difference*, stops us from
celebrating or chasing noise.  The generator is seeded so a report is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from halfsec.measure.percentile import percentile, percentile_rows

__all__ = [
    "PERCENTILES",
    "LatencySummary",
    "bootstrap_ci",
    "bootstrap_diff_ci",
    "percentiles",
    "summarize",
]

PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0)
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 20240601


def _clean(values: Iterable[float | int | None]) -> list[float]:
    out: list[float] = []
    for v in values:
        if v is None:
            continue
        f = float(v)
        if math.isfinite(f):
            out.append(f)
    return out


def percentiles(
    values_ms: Iterable[float | int | None], ps: Sequence[float] = PERCENTILES
) -> dict[float, float]:
    """Percentiles of ``values_ms`` (missing and non-finite values skipped; NaN if none)."""
    vals = _clean(values_ms)
    out: dict[float, float] = {}
    for p in ps:
        got = percentile(vals, p)
        out[p] = math.nan if got is None else got
    return out


def _central(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` mass of resampled statistics (percentile bootstrap)."""
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = percentile_rows(stats, [tail, 100.0 - tail], axis=None)
    return (float(lo), float(hi))


def bootstrap_ci(
    values_ms: Iterable[float | int | None],
    p: float,
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval for the ``p``-th percentile.

    Turns are resampled with replacement; the interval is the central ``confidence``
    mass of the resampled percentiles.  With fewer than 2 samples there is no spread to
    estimate and the interval is ``(nan, nan)``."""
    vals = np.asarray(_clean(values_ms), dtype=float)
    if vals.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, vals.size, size=(resamples, vals.size))
    return _central(percentile_rows(vals[idx], p, axis=1), confidence)


def bootstrap_diff_ci(
    a_ms: Iterable[float | int | None],
    b_ms: Iterable[float | int | None],
    p: float,
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float, float]:
    """(point, lo, hi) for ``percentile(b) - percentile(a)``; positive means B is slower.

    The two runs are independent samples (different turns, maybe different machines), so
    each is resampled on its own and the difference is taken per resample."""
    a = np.asarray(_clean(a_ms), dtype=float)
    b = np.asarray(_clean(b_ms), dtype=float)
    if a.size == 0 or b.size == 0:
        return (math.nan, math.nan, math.nan)
    point = float(percentile_rows(b, p) - percentile_rows(a, p))
    if a.size < 2 or b.size < 2:
        return (point, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a.size, size=(resamples, a.size))
    ib = rng.integers(0, b.size, size=(resamples, b.size))
    diffs = percentile_rows(b[ib], p, axis=1) - percentile_rows(a[ia], p, axis=1)
    return (point, *_central(diffs, confidence))


@dataclass(frozen=True, slots=True)
class LatencySummary:
    n: int
    mean: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float
    ci95_p50: tuple[float, float]
    ci95_p95: tuple[float, float]

    def as_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "mean": _num(self.mean),
            "min": _num(self.min),
            "max": _num(self.max),
            "p50": _num(self.p50),
            "p90": _num(self.p90),
            "p95": _num(self.p95),
            "p99": _num(self.p99),
            "ci95": {
                "p50": [_num(self.ci95_p50[0]), _num(self.ci95_p50[1])],
                "p95": [_num(self.ci95_p95[0]), _num(self.ci95_p95[1])],
            },
        }


def _num(x: float) -> float | None:
    """JSON has no NaN: missing statistics are ``null``; others rounded to 0.001 ms."""
    return None if x is None or not math.isfinite(x) else round(float(x), 3)


def summarize(
    values_ms: Iterable[float | int | None], *, seed: int = DEFAULT_SEED
) -> LatencySummary:
    """Everything the report says about one latency sample, in one pass."""
    vals = _clean(values_ms)
    if not vals:
        nan = math.nan
        return LatencySummary(0, nan, nan, nan, nan, nan, nan, nan, (nan, nan), (nan, nan))
    ps = percentiles(vals)
    return LatencySummary(
        n=len(vals),
        mean=float(np.mean(vals)),
        min=min(vals),
        max=max(vals),
        p50=ps[50.0],
        p90=ps[90.0],
        p95=ps[95.0],
        p99=ps[99.0],
        ci95_p50=bootstrap_ci(vals, 50.0, seed=seed),
        ci95_p95=bootstrap_ci(vals, 95.0, seed=seed),
    )
