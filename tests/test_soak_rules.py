"""The soak's verdict (``lab.load.soak``): both latency rules, and ``ok`` only when it held."""

from __future__ import annotations

from typing import Any

from halfsec.lab.load.sampler import ResourceSample
from halfsec.lab.load.soak import soak_verdict, steady_latency


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
