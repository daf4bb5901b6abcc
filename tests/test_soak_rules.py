"""The soak's verdict (``lab.load.soak``): both latency rules, and ``ok`` only when it held."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from halfsec.lab.load.sampler import ResourceSample
from halfsec.lab.load.soak import flatness, soak_verdict, steady_latency

SRC = Path(__file__).resolve().parents[1] / "src" / "halfsec"


def _turns(minutes: int, v2v: Any, per_minute: int = 30) -> list[dict[str, Any]]:
    out = []
    for i in range(minutes * per_minute):
        t = 60.0 * i / per_minute
        out.append({"ok": True, "v2v_ms": float(v2v(t, i)), "t_start_s": t})
    return out


def _samples(minutes: int) -> list[ResourceSample]:
    return [
        ResourceSample(float(t), 30.0, 50.0, 1000.0 + (t % 2), 17, 20, 1, 24)
        for t in range(0, minutes * 60, 5)
    ]


def test_a_slow_first_minute_fails_the_issue_rule_but_not_the_steady_one() -> None:
    turns = _turns(10, lambda t, i: (520.0 if t < 60 else 380.0) + i % 7)
    v = soak_verdict(_samples(10), turns, 600.0)
    assert v["latency"]["within_10pct"] is False, "the first-minute rule sees the warm-up"
    assert v["latency_steady"]["within_10pct"] is True
    assert v["latency_steady"]["first_window_s"] == [120.0, 240.0]
    assert v["ok"] is True and v["why"] == []
    assert [m["turns"] for m in v["latency_per_minute"]] == [30] * 10


def test_a_server_that_slows_down_fails_the_steady_rule() -> None:
    turns = _turns(10, lambda t, i: 380.0 + 0.2 * t + i % 7)  # +120 ms over 10 minutes
    v = soak_verdict(_samples(10), turns, 600.0)
    assert v["latency_steady"]["within_10pct"] is False
    assert v["ok"] is False and any("steady p95" in w for w in v["why"])


def test_failed_turns_or_a_short_run_are_not_ok() -> None:
    turns = _turns(10, lambda t, i: 380.0 + i % 7)
    turns[5] = {"ok": False, "v2v_ms": None, "t_start_s": 10.0, "error": "no reply"}
    v = soak_verdict(_samples(10), turns, 600.0)
    assert v["failed_turns"] == 1 and v["ok"] is False
    short = soak_verdict(_samples(1), _turns(1, lambda t, i: 380.0), 30.0)
    assert short["ok"] is False and short["why"], "nothing judged is not a pass"
    assert steady_latency(_turns(3, lambda t, i: 380.0), 180.0)["within_10pct"] is None
    nothing = soak_verdict(_samples(10), [{"ok": False, "t_start_s": 1.0}], 600.0)
    assert nothing["ok"] is False and "no answered turn" in nothing["why"]


def test_flatness_median_is_the_projects_p50() -> None:
    """The bound's median is ``measure.percentile``'s p50: on an even window the mean of
    the middle two (linear), so the limit moves with the rule every figure uses."""
    rss = [999.0, 100.0, 110.0, 130.0, 200.0]  # 0 s is warm-up; window = 5 s..20 s
    samples = [ResourceSample(5.0 * i, 30.0, 50.0, v, 17, 20, 1, 24) for i, v in enumerate(rss)]
    got = flatness(samples, "rss_mb", bound=(0.0, 1.0))
    assert got["samples"] == 4 and got["median"] == 120.0  # (110 + 130) / 2


def test_no_module_keeps_its_own_median_or_percentile() -> None:
    """Percentiles only from ``halfsec.measure.percentile`` (stop 15 found the soak's flat
    bound on ``statistics.median`` beside it)."""
    own = re.compile(r"\b(np|numpy|statistics)\.(median|percentile|quantile|quantiles|nanmedian)\(")
    bad = [
        f"{p.relative_to(SRC)}:{i}"
        for p in sorted(SRC.rglob("*.py"))
        if p != SRC / "measure" / "percentile.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if own.search(line)
    ]
    assert not bad, f"use halfsec.measure.percentile: {bad}"
