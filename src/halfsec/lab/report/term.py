"""The report at a glance in a terminal (rich tables).

What a reader needs first: is v2v under target (with how sure we are), which stage is
eating the budget, did the pipeline understand people, and which turns failed.  Numbers
come from the report document only, so a stored run prints exactly like a fresh one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from halfsec.lab.report.compare import Comparison

__all__ = ["print_comparison", "print_runs", "print_summary"]


def _ms(x: Any, digits: int = 1) -> str:
    return "–" if x is None else f"{float(x):.{digits}f}"


def _ci(pair: Any) -> str:
    if not pair or pair[0] is None or pair[1] is None:
        return ""
    return f"[dim][{float(pair[0]):.0f}–{float(pair[1]):.0f}][/dim]"


def print_summary(report: Mapping[str, Any], console: Console | None = None) -> None:
    """Print the summary tables of a ``halfsec.report/1`` document."""
    con = console or Console()
    s = report.get("summary") or {}
    meta = report.get("meta") or {}
    budget = report.get("budget") or {}
    v = s.get("v2v_ms") or {}
    title = "voice-to-voice (ms, measured at the client)"
    if meta.get("source"):
        title = f"voice-to-voice (ms, {meta['source']})"
    t = Table(title=title, title_justify="left")
    for col in ("n", "p50", "p90", "p95", "p99", "mean", "max"):
        t.add_column(col, justify="right")
    ci = v.get("ci95") or {}
    vb = budget.get("v2v") or {}
    p95_style = "" if vb.get("ok", True) else "bold red"
    t.add_row(
        str(v.get("n", 0)),
        f"{_ms(v.get('p50'))} {_ci(ci.get('p50'))}",
        _ms(v.get("p90")),
        f"[{p95_style}]{_ms(v.get('p95'))}[/] {_ci(ci.get('p95'))}"
        if p95_style
        else f"{_ms(v.get('p95'))} {_ci(ci.get('p95'))}",
        _ms(v.get("p99")),
        _ms(v.get("mean")),
        _ms(v.get("max")),
    )
    con.print(t)
    if vb:
        mark = "[green]within[/green]" if vb.get("ok") else "[bold red]OVER[/bold red]"
        con.print(
            f"  target p{budget.get('percentile', 95):g} ≤ {_ms(vb.get('limit_ms'), 0)} ms: {mark}"
            "   [dim](CI: bootstrap 95 %)[/dim]"
        )

    stages = s.get("stages") or {}
    if stages:
        st = Table(title="where the time goes (per stage)", title_justify="left")
        st.add_column("stage")
        for col in ("p50", "p95", "mean", "share"):
            st.add_column(col, justify="right")
        st.add_column(f"budget (p{budget.get('percentile', 95):g})", justify="right")
        lines = budget.get("lines") or {}
        dom = (s.get("dominant_stage") or {}).get("name")
        for name, blk in stages.items():
            share = blk.get("share")
            bar = "█" * round((share or 0) * 10)
            line = blk.get("budget_line")
            if line:
                ln = lines.get(line) or {}
                style = "green" if ln.get("ok", True) else "bold red"
                shared = f" ({line})" if ln.get("stages") and len(ln["stages"]) > 1 else ""
                bcell = (
                    f"[{style}]{_ms(ln.get('observed_ms'))} / {_ms(ln.get('limit_ms'), 0)}"
                    f"{shared}[/{style}]"
                )
            else:
                bcell = "[dim]no line[/dim]"
            label = f"[bold]{name}[/bold] ◀" if name == dom else name
            st.add_row(
                label,
                _ms(blk.get("p50")),
                _ms(blk.get("p95")),
                _ms(blk.get("mean")),
                f"{(share or 0) * 100:4.0f}% [cyan]{bar}[/cyan]" if share is not None else "–",
                bcell,
            )
        con.print(st)
        d = s.get("dominant_stage") or {}
        if d.get("name"):
            per_turn = ", ".join(f"{k} {n}" for k, n in (d.get("turns") or {}).items())
            con.print(
                f"  dominant stage: [bold]{d['name']}[/bold]  [dim](per turn: {per_turn})[/dim]"
            )

    viol = budget.get("violations") or []
    for vi in viol:
        con.print(
            f"  [bold red]over budget[/bold red] {vi['line']}: p{vi['percentile']:g} "
            f"{vi['observed_ms']:.1f} ms > {vi['limit_ms']:.0f} ms (+{vi['over_ms']:.1f})"
        )

    acc = s.get("accuracy") or {}
    wer, cmd = acc.get("wer"), acc.get("command_acceptance")
    if wer or cmd:
        at = Table(title="accuracy", title_justify="left")
        at.add_column("measure")
        at.add_column("value", justify="right")
        at.add_column("over", justify="right")
        if wer:
            rate = wer.get("rate")
            at.add_row(
                "WER",
                "–" if rate is None else f"{rate * 100:.1f} %",
                f"{wer['words']} words / {wer['n']} turns",
            )
        if cmd:
            at.add_row(
                "commands accepted", f"{cmd['rate'] * 100:.1f} %", f"{cmd['accepted']}/{cmd['n']}"
            )
            at.add_row(
                "intent correct",
                f"{cmd['intent_rate'] * 100:.1f} %",
                f"{cmd['intent_correct']}/{cmd['n']}",
            )
        con.print(at)

    failed = s.get("failed") or []
    if failed:
        ft = Table(
            title=f"failed turns ({len(failed)} of {s.get('n_turns', '?')})", title_justify="left"
        )
        ft.add_column("#", justify="right")
        ft.add_column("file")
        ft.add_column("error", style="red")
        for f in failed[:20]:
            ft.add_row(str(f.get("index")), str(f.get("file") or ""), str(f.get("error") or ""))
        if len(failed) > 20:
            ft.add_row("…", f"{len(failed) - 20} more", "")
        con.print(ft)
    rel = s.get("reliability") or {}
    if rel.get("faults_fired") or rel.get("fallbacks"):

        def counts(d: Mapping[str, Any]) -> str:
            return ", ".join(f"{k} ×{v}" for k, v in d.items()) or "none"

        con.print(
            f"  faults fired: {counts(rel.get('faults_fired') or {})}   "
            f"fallbacks answered: {counts(rel.get('fallbacks') or {})}   "
            f"[dim]({rel.get('turns_in_faulted_sessions', 0)} turns in faulted sessions, "
            f"{rel.get('turns_with_fallback', 0)} answered by a fallback)[/dim]"
        )
    extra = []
    if s.get("interruptions"):
        extra.append(f"interruptions {s['interruptions']}")
    if s.get("premature_replies"):
        extra.append(f"[yellow]premature replies {s['premature_replies']}[/yellow]")
    if extra:
        con.print("  " + "  ".join(extra))


def print_runs(runs: list[dict[str, Any]], console: Console | None = None) -> None:
    """The ``halfsec runs`` table."""
    con = console or Console()
    t = Table(title="lab runs", title_justify="left")
    for col, j in (
        ("id", "right"),
        ("date", "left"),
        ("command", "left"),
        ("server", "left"),
        ("turns", "right"),
        ("failed", "right"),
        ("p50", "right"),
        ("p95", "right"),
        ("budget", "left"),
    ):
        t.add_column(col, justify=j)  # type: ignore[arg-type]
    for r in runs:
        b = r.get("budget_ok")
        t.add_row(
            str(r["id"]),
            str(r.get("date") or ""),
            str(r.get("command") or ""),
            str(r.get("server_url") or ""),
            # A run whose bench was killed holds the turns it finished: say so by them.
            f"{r.get('n_turns')}"
            + ("" if r.get("complete", True) else " [yellow]incomplete[/yellow]"),
            str(r.get("n_failed")),
            _ms(r.get("v2v_p50")),
            _ms(r.get("v2v_p95")),
            "–" if b is None else ("[green]ok[/green]" if b else "[red]over[/red]"),
        )
    con.print(t)


def print_comparison(
    c: Comparison, console: Console | None = None, labels: tuple[str, str] = ("A", "B")
) -> None:
    """The ``halfsec compare`` table: B minus A with its bootstrap CI and verdict."""
    con = console or Console()
    a, b = labels
    t = Table(title=f"{b} vs {a} (positive = {b} slower)", title_justify="left")
    for col in ("metric", a, b, "Δ ms", "Δ %", "95 % CI", "verdict"):
        t.add_column(col, justify="left" if col in ("metric", "verdict") else "right")
    for d in [*c.v2v, *c.stages]:
        style = (
            "bold red"
            if d.regression
            else (
                "green" if d.verdict == "faster" else ("yellow" if d.verdict == "slower" else "dim")
            )
        )
        t.add_row(
            d.metric,
            _ms(d.a_ms),
            _ms(d.b_ms),
            f"{d.diff_ms:+.1f}",
            f"{d.diff_pct:+.1f}",
            f"[{d.ci_low:+.1f}, {d.ci_high:+.1f}]",
            f"[{style}]{d.verdict}{' (regression)' if d.regression else ''}[/{style}]",
        )
    con.print(t)
    for n in c.notes:
        con.print(f"  [yellow]note:[/yellow] {n}")
    verdict = "[bold red]REGRESSION[/bold red]" if c.regression else c.verdict
    con.print(
        f"  verdict: {verdict}  [dim](regression = significant and ≥ {c.threshold_ms:g} ms and "
        f"≥ {c.threshold_pct:g} %)[/dim]"
    )
