"""One step's figures, whether it met the SLO, and the knee of a ramp.

Pure functions of turn records, so the knee rule is tested on synthetic steps and the
same rule judges a real ramp.  Percentiles come from ``halfsec.measure.percentile`` only;
voice-to-voice is the record's own (``measure.v2v``, computed by the bench client)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from halfsec.lab.load.options import Slo
from halfsec.measure.percentile import percentile

__all__ = ["knee", "step_stats", "verdict"]


def _p(xs: list[float], q: float) -> float | None:
    v = percentile(xs, q)
    return None if v is None else round(v, 1)


def step_stats(sessions: int, turns: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Turn counts and v2v p50/p95/p99 of one step.  A turn is ``ok`` with a v2v, or
    ``refused`` (the server said busy), or failed (anything else: no reply, lost
    connection, unreadable audio)."""

    def answered(t: Mapping[str, Any]) -> bool:
        return bool(t.get("ok")) and t.get("v2v_ms") is not None  # 0 ms is an answer

    v2v = [float(t["v2v_ms"]) for t in turns if answered(t)]
    refused = sum(1 for t in turns if t.get("refused"))
    failed = [t for t in turns if not t.get("refused") and not answered(t)]
    late = [float(t["send_late_max_ms"]) for t in turns if t.get("send_late_max_ms") is not None]
    return {
        "sessions": sessions,
        "turns": len(turns),
        "ok": len(v2v),
        "failed": len(failed),
        "refused": refused,
        "v2v_ms": {"n": len(v2v), "p50": _p(v2v, 50), "p95": _p(v2v, 95), "p99": _p(v2v, 99)},
        "max_concurrent": max((int(t.get("concurrent") or 0) for t in turns), default=0),
        "client_send_late_max_ms": round(max(late), 1) if late else None,
        "errors": sorted({str(t.get("error")) for t in failed if t.get("error")})[:5],
    }


def verdict(stats: Mapping[str, Any], slo: Slo) -> tuple[bool, str]:
    """(met, why): the step met the SLO when it answered turns, p95 is within the bound,
    failed turns are within ``max_failed``, and (``refusals_break``) nobody was refused."""
    p95 = (stats.get("v2v_ms") or {}).get("p95")
    if stats.get("failed", 0) > slo.max_failed:
        return False, f"{stats['failed']} failed turn(s)"
    if slo.refusals_break and stats.get("refused", 0) > 0:
        return False, f"{stats['refused']} session(s) refused as busy"
    if p95 is None:
        return False, "no turn answered"
    if p95 > slo.p95_ms:
        return False, f"v2v p95 {p95:.0f} ms > {slo.p95_ms:.0f} ms"
    return True, f"v2v p95 {p95:.0f} ms <= {slo.p95_ms:.0f} ms"


def knee(steps: Sequence[Mapping[str, Any]]) -> int | None:
    """The largest session count that met the SLO with every smaller step meeting it
    too (steps in ramp order, each with ``sessions`` and ``met_slo``).  A step that met
    it after a broken one is luck, not capacity: the knee is before the first break.
    None when the first step already broke."""
    best = None
    for s in sorted(steps, key=lambda s: int(s["sessions"])):
        if not s.get("met_slo"):
            break
        best = int(s["sessions"])
    return best
