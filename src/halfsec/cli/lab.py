"""``halfsec runs | report | compare | import-trace``: the lab's views on stored runs.

Each function returns the process exit code instead of exiting, so ``main.py`` stays a
thin typer layer and tests can call these directly.  Exit codes: 0 fine, 1 a verdict the
user asked to fail on (regression, over budget), 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from halfsec.errors import HalfsecError
from halfsec.lab.report.budget import check_budget, load_budget
from halfsec.lab.report.compare import compare
from halfsec.lab.report.html import write_html
from halfsec.lab.report.import_trace import import_trace
from halfsec.lab.report.json import build_report, default_meta, write_json
from halfsec.lab.report.store import list_runs, load_run, save_run
from halfsec.lab.report.term import print_comparison, print_runs, print_summary

out = Console()
err = Console(stderr=True)


def _fail(e: Exception) -> int:
    err.print(f"[red]error:[/red] {escape(str(e))}")
    return 2


def _warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}")


def _stored(ref: str, db: Path | None) -> dict[str, Any]:
    """A stored run as a full report.  A run cut short (its bench was killed) was saved
    turn by turn without a summary: rebuild it from the turns it holds, and say so."""
    report = load_run(ref, db)
    meta = report.get("meta") or {}
    if not meta.get("incomplete"):
        return report
    err.print(
        f"[yellow]warning:[/yellow] run {meta.get('run_id')} is incomplete (its bench "
        f"stopped mid-run): {len(report['turns'])} finished turn(s), summary rebuilt from them"
    )
    return build_report(report["turns"], dict(meta))


def runs_command(db: Path | None, limit: int, as_json: bool) -> int:
    try:
        rows = list_runs(db, limit)
    except HalfsecError as e:
        return _fail(e)
    if as_json:
        out.print_json(json.dumps(rows))
    elif not rows:
        out.print("no runs stored yet: `halfsec bench` saves one")
    else:
        print_runs(rows, out)
        if not all(r["complete"] for r in rows):
            out.print(
                "incomplete: the bench stopped mid-run (killed, crashed); the run holds "
                "every turn it finished (`halfsec report ID` summarises them)"
            )
    return 0


def report_command(
    run: str,
    db: Path | None,
    html: Path | None,
    json_out: Path | None,
    budget: Path | None,
    fail_over_budget: bool,
) -> int:
    """Re-render a stored run; with ``--budget`` the budget section is recomputed."""
    try:
        report = _stored(run, db)
        if budget is not None:
            meta = dict(report.get("meta") or {})
            report = build_report(report.get("turns") or [], meta, load_budget(budget))
        print_summary(report, out)
        if json_out is not None:
            out.print(f"JSON report: {write_json(report, json_out)}")
        if html is not None:
            out.print(f"HTML report: {write_html(report, html)}")
        violations = check_budget(report, load_budget(budget)) if fail_over_budget else []
    except HalfsecError as e:
        return _fail(e)
    return 1 if violations else 0


def compare_command(
    a: str,
    b: str,
    db: Path | None,
    threshold_ms: float,
    threshold_pct: float,
    json_out: Path | None,
) -> int:
    """Exit 1 when B regressed against A beyond the thresholds."""
    try:
        ra, rb = _load_any(a, db), _load_any(b, db)
    except HalfsecError as e:
        return _fail(e)
    c = compare(ra, rb, threshold_ms=threshold_ms, threshold_pct=threshold_pct)
    print_comparison(c, out, labels=(f"A ({a})", f"B ({b})"))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(c.as_dict(), indent=2) + "\n")
    return 1 if c.regression else 0


def _load_any(ref: str, db: Path | None) -> dict[str, object]:
    """A run id from the store, or a path to a JSON report written by ``--json``."""
    p = Path(ref)
    if p.suffix == ".json" and p.is_file():
        data = json.loads(p.read_text())
        if not isinstance(data, dict) or "turns" not in data:
            raise HalfsecError(f"{p}: not a halfsec report (no 'turns')")
        return data
    return _stored(ref, db)


def import_trace_command(
    file: Path,
    budget: Path | None,
    html: Path | None,
    json_out: Path | None,
    store: bool,
    db: Path | None,
    fail_over_budget: bool,
) -> int:
    try:
        turns, extra = import_trace(file)
        b = load_budget(budget)
        meta = default_meta(f"halfsec import-trace {file}", **extra)
        report = build_report(turns, meta, b)
        print_summary(report, out)
        if json_out is not None:
            out.print(f"JSON report: {write_json(report, json_out)}")
        if html is not None:
            out.print(f"HTML report: {write_html(report, html)}")
        if store:
            out.print(f"saved as run {save_run(report, db, warn=_warn)}")
    except HalfsecError as e:
        return _fail(e)
    return 1 if fail_over_budget and check_budget(report, b) else 0
