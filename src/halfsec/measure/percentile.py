"""The one percentile rule behind every figure the project reports.

Linear interpolation between the two closest ranks (Hyndman & Fan type 7, numpy's
default): ``p`` of ``n`` sorted values sits at position ``(n - 1) * p / 100``, between the
values either side of it.  Chosen because it is what the headline figures (the bench's
``v2v_p50_ms``, ``benchmarks/*``, ``docs/PERFORMANCE.md``) have always used; a report, a
bench summary, a network-lab counter and a comparison of two runs now agree on what
"p95" means for the same sample, which they did not when each had its own definition
(linear, nearest rank, HDR buckets).

:func:`percentile` takes one sample; :func:`percentile_rows` applies the same rule to
many samples at once (the bootstrap's thousands of resamples).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np

__all__ = ["METHOD", "percentile", "percentile_rows"]

METHOD: Final = "linear"
"""numpy's name for the rule (``np.percentile(..., method=METHOD)``)."""


def percentile(values: Iterable[float] | np.ndarray, q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ``values``; None when there are none."""
    xs = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float)
    if xs.size == 0:
        return None
    return float(np.percentile(xs, q, method=METHOD))


def percentile_rows(
    samples: np.ndarray, q: float | Sequence[float], axis: int | None = -1
) -> np.ndarray:
    """The same rule along ``axis`` of an array (``axis=None``: the whole array)."""
    qs = np.asarray(q, dtype=float)
    return np.asarray(np.percentile(samples, qs, axis=axis, method=METHOD))
