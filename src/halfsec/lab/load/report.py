"""The load report: one JSON document (schema ``halfsec.load/1``) and its HTML and
terminal views.

Each step is one line of the capacity curve (v2v p50/p95/p99, failed and refused
turns, the server's CPU and memory); the knee is the largest number of callers that
met the SLO.  Turns are kept slim (the fields a load question needs: who, when, how
many at once, v2v and its stages); the full turn records are ``halfsec bench``'s."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from halfsec.lab.load.chart import load_html
from halfsec.lab.load.options import LoadOptions, Slo
from halfsec.lab.report.json import default_meta

__all__ = ["SCHEMA", "TURN_KEYS", "build_load_report", "print_load", "write_load"]

SCHEMA = "halfsec.load/1"
TURN_KEYS: tuple[str, ...] = (
    "step_sessions",
    "caller",
    "turn",
    "file",
    "t_start_s",
    "t_end_s",
    "concurrent",
    "ok",
    "refused",
    "error",
    "v2v_ms",
    "stages",
    "session_id",
    "intent",
    "ref_intent",
    "send_late_max_ms",
)


def slim_turn(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: rec.get(k) for k in TURN_KEYS}


def build_load_report(
    steps: Sequence[Mapping[str, Any]],
    turns: Sequence[Mapping[str, Any]],
    knee: int | None,
    stop_reason: str,
    opts: LoadOptions,
    slo: Slo,
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """The whole report (see docs/scaling.md, "Load")."""
    return {
        "schema": SCHEMA,
        "meta": {**default_meta("halfsec bench --sessions/--ramp"), **meta},
        "slo": {
            "v2v_p95_ms": slo.p95_ms,
            "max_failed_turns": slo.max_failed,
            "refusals_break": slo.refusals_break,
        },
        "callers": {
            "turns_per_step": opts.turns,
            "duration_s": opts.duration_s,
            "think_s": [opts.think_min_s, opts.think_max_s],
            "stagger_s": opts.stagger_s,
            "seed": opts.seed,
            # Python callers hold one session for their whole call over either
            # transport (``lab.load.caller``); the browser client opens one per recording.
            "session_per_turn": meta.get("client_kind", "python") != "python",
        },
        "knee": knee,
        "stop_reason": stop_reason,
        "steps": [dict(s) for s in steps],
        "turns": [slim_turn(t) for t in turns],
    }


def write_load(report: Mapping[str, Any], json_out: Path | None, html_out: Path | None) -> None:
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if html_out is not None:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(load_html(report))


def _ms(x: Any) -> str:
    return "–" if x is None else f"{float(x):.0f}"


def print_load(report: Mapping[str, Any], console: Console) -> None:
    """One row per step, then the knee."""
    t = Table(title=f"load: SLO v2v p95 <= {report['slo']['v2v_p95_ms']:.0f} ms, no failed turn")
    for col in (
        "sessions",
        "turns",
        "ok",
        "failed",
        "refused",
        "p50",
        "p95",
        "p99",
        "CPU %",
        "RSS MB",
        "SLO",
    ):
        t.add_column(col, justify="right")
    for s in report["steps"]:
        v = s["v2v_ms"]
        srv = s.get("server") or {}
        t.add_row(
            str(s["sessions"]),
            str(s["turns"]),
            str(s["ok"]),
            str(s["failed"]),
            str(s["refused"]),
            _ms(v["p50"]),
            _ms(v["p95"]),
            _ms(v["p99"]),
            _ms(srv.get("cpu_pct_mean")),
            _ms(srv.get("rss_mb_max")),
            "[green]met[/green]" if s["met_slo"] else f"[red]broke[/red] ({s['why']})",
        )
    console.print(t)
    k = report["knee"]
    console.print(
        f"knee: {k} session(s)" if k is not None else "knee: none (the first step broke the SLO)",
        f"- stopped: {report['stop_reason']}",
    )
