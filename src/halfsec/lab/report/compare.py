"""Compare two runs: did B get faster or slower than A, beyond noise and beyond a threshold?

A verdict needs two things: the change must be *significant* (the bootstrap 95 % CI of
``percentile(B) - percentile(A)`` excludes 0) and, to call it a regression, *large enough
to matter* (at least ``threshold_ms`` and ``threshold_pct`` of A).  Significance alone
would fail CI on a 2 ms shift over 2000 turns; a threshold alone would fail it on noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from halfsec.lab.report.json import stage_names
from halfsec.lab.report.stats import bootstrap_diff_ci, percentiles

__all__ = ["Comparison", "MetricDiff", "compare"]

FASTER = "faster"
SLOWER = "slower"
NO_CHANGE = "no significant change"


@dataclass(frozen=True, slots=True)
class MetricDiff:
    metric: str
    """``v2v.p50``, ``v2v.p95``, ``stage.logic.p95`` ..."""
    a_ms: float
    b_ms: float
    diff_ms: float
    ci_low: float
    ci_high: float
    verdict: str
    regression: bool

    @property
    def diff_pct(self) -> float:
        return 100.0 * self.diff_ms / self.a_ms if self.a_ms else math.nan

    def as_dict(self) -> dict[str, Any]:
        r = lambda x: None if not math.isfinite(x) else round(x, 3)  # noqa: E731
        return {
            "metric": self.metric,
            "a_ms": r(self.a_ms),
            "b_ms": r(self.b_ms),
            "diff_ms": r(self.diff_ms),
            "diff_pct": r(self.diff_pct),
            "ci95": [r(self.ci_low), r(self.ci_high)],
            "verdict": self.verdict,
            "regression": self.regression,
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    v2v: list[MetricDiff]
    stages: list[MetricDiff]
    threshold_ms: float
    threshold_pct: float
    n_a: int
    n_b: int
    notes: list[str] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        """True when any v2v percentile regressed (stages explain, v2v decides)."""
        return any(d.regression for d in self.v2v)

    @property
    def verdict(self) -> str:
        """Overall: the p95 verdict, unless p50 regressed on its own."""
        by = {d.metric: d for d in self.v2v}
        p95 = by.get("v2v.p95")
        if self.regression:
            return SLOWER
        return p95.verdict if p95 is not None else NO_CHANGE

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "regression": self.regression,
            "threshold_ms": self.threshold_ms,
            "threshold_pct": self.threshold_pct,
            "n_a": self.n_a,
            "n_b": self.n_b,
            "v2v": [d.as_dict() for d in self.v2v],
            "stages": [d.as_dict() for d in self.stages],
            "notes": self.notes,
        }


def _v2v(report: Mapping[str, Any]) -> list[float]:
    return [
        float(t["v2v_ms"])
        for t in report.get("turns") or []
        if t.get("ok", True) and t.get("v2v_ms") is not None
    ]


def _stage(report: Mapping[str, Any], stage: str) -> list[float]:
    out: list[float] = []
    for t in report.get("turns") or []:
        if not t.get("ok", True) or t.get("v2v_ms") is None:
            continue
        st = t.get("stages") or {}
        v = st.get(f"{stage}_ms", st.get(stage))
        if v is not None:
            out.append(float(v))
    return out


def _diff(
    metric: str,
    a: list[float],
    b: list[float],
    p: float,
    threshold_ms: float,
    threshold_pct: float,
    seed: int,
) -> MetricDiff:
    if not a or not b:
        nan = math.nan
        return MetricDiff(metric, nan, nan, nan, nan, nan, NO_CHANGE, False)
    pa, pb = percentiles(a, (p,))[p], percentiles(b, (p,))[p]
    point, lo, hi = bootstrap_diff_ci(a, b, p, seed=seed)
    if math.isfinite(lo) and lo > 0:
        verdict = SLOWER
    elif math.isfinite(hi) and hi < 0:
        verdict = FASTER
    else:
        verdict = NO_CHANGE
    pct = 100.0 * point / pa if pa else math.inf
    regression = verdict == SLOWER and point >= threshold_ms and pct >= threshold_pct
    return MetricDiff(metric, pa, pb, point, lo, hi, verdict, regression)


def compare(
    report_a: Mapping[str, Any],
    report_b: Mapping[str, Any],
    threshold_ms: float = 10.0,
    threshold_pct: float = 5.0,
    *,
    seed: int = 7,
) -> Comparison:
    """B relative to A (A is the baseline).  Percentiles here are taken from the turn
    records by the one rule (``halfsec.measure.percentile``), the one the bootstrap and the
    reports use, so point, CI and each report's own p50/p95 agree."""
    a, b = _v2v(report_a), _v2v(report_b)
    notes: list[str] = []
    if min(len(a), len(b)) < 20:
        notes.append(f"few turns (A={len(a)}, B={len(b)}): p95 intervals are wide; run more turns")
    v2v = [_diff(f"v2v.p{p:g}", a, b, p, threshold_ms, threshold_pct, seed) for p in (50.0, 95.0)]
    stages: list[MetricDiff] = []
    names = stage_names(list(report_a.get("turns") or []) + list(report_b.get("turns") or []))
    for s in names:
        sa, sb = _stage(report_a, s), _stage(report_b, s)
        if sa and sb:
            stages.append(_diff(f"stage.{s}.p95", sa, sb, 95.0, threshold_ms, threshold_pct, seed))
    return Comparison(v2v, stages, threshold_ms, threshold_pct, len(a), len(b), notes)
