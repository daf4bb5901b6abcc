"""The load report as one self-contained HTML page: v2v against callers, and the table.

Inline SVG in the style of ``lab.report.charts`` (same font, grid, target line and
colours; no plotting library, no script), for the same reason: a report attached to an
issue must open years later with no network and stay diff-able text.  The chart puts
p50, p95 and p99 against the number of callers on one axis with the SLO's p95 bound
as the target line, and marks the knee."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from halfsec.lab.report.charts import FONT, esc, fmt_num

__all__ = ["load_html", "p95_svg"]

_SERIES = (("p50", "#8e9aaf"), ("p95", "#3b5bdb"), ("p99", "#f28e2b"))


def _step(span: float) -> float:
    """A 1/2/5 x 10^k step giving about six ticks over ``span``."""
    raw = max(span, 1e-9) / 6
    mag = 10 ** math.floor(math.log10(raw))
    return next((m * mag for m in (1, 2, 5) if raw <= m * mag), 10 * mag)


def p95_svg(report: Mapping[str, Any]) -> str:
    """v2v p50/p95/p99 (ms) against sessions, the SLO bound dashed, the knee marked."""
    steps = [s for s in report.get("steps") or [] if (s.get("v2v_ms") or {}).get("p95") is not None]
    if not steps:
        return '<p class="muted">No step answered a turn.</p>'
    target = float((report.get("slo") or {}).get("v2v_p95_ms") or 0.0)
    ns = [int(s["sessions"]) for s in steps]
    vals = [
        float(s["v2v_ms"][k]) for s in steps for k, _ in _SERIES if s["v2v_ms"].get(k) is not None
    ]
    ymax = max([*vals, target]) * 1.08 or 1.0
    xmax = max(ns) + 1
    w, h, left, top, right, bottom = 720.0, 340.0, 56.0, 16.0, 20.0, 46.0
    pw, ph = w - left - right, h - top - bottom

    def x(n: float) -> float:
        return left + n / xmax * pw

    def y(ms: float) -> float:
        return top + ph - ms / ymax * ph

    out = [
        f'<svg class="chart load" viewBox="0 0 {w:.0f} {h:.0f}" width="100%" role="img" '
        'aria-label="v2v against sessions"><title>v2v percentiles against sessions</title>'
    ]
    v, dy = 0.0, _step(ymax)
    while v <= ymax:
        out.append(
            f'<line x1="{left:.1f}" y1="{y(v):.1f}" x2="{left + pw:.1f}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{left - 6:.1f}" y="{y(v) + 4:.1f}" class="tick" text-anchor="end">{v:g}</text>'
        )
        v += dy
    for n in ns:
        out.append(
            f'<text x="{x(n):.1f}" y="{top + ph + 16:.1f}" class="tick" text-anchor="middle">{n}</text>'
        )
    out.append(
        f'<text x="{left + pw:.1f}" y="{top + ph + 34:.1f}" class="tick" text-anchor="end">'
        "concurrent callers</text>"
        f'<text x="{left - 44:.1f}" y="{top + 8:.1f}" class="tick">ms</text>'
    )
    if target:
        out.append(
            f'<line x1="{left:.1f}" y1="{y(target):.1f}" x2="{left + pw:.1f}" y2="{y(target):.1f}" class="target"/>'
            f'<text x="{left + pw:.1f}" y="{y(target) - 4:.1f}" class="targetlabel" text-anchor="end">'
            f"SLO p95 {target:g} ms</text>"
        )
    k = report.get("knee")
    if k is not None:
        out.append(
            f'<line x1="{x(k):.1f}" y1="{top:.1f}" x2="{x(k):.1f}" y2="{top + ph:.1f}" class="pmark"/>'
            f'<text x="{x(k) + 4:.1f}" y="{top + 12:.1f}" class="tick">knee {k}</text>'
        )
    for key, color in _SERIES:
        pts = [
            (x(int(s["sessions"])), y(float(s["v2v_ms"][key])))
            for s in steps
            if s["v2v_ms"].get(key) is not None
        ]
        line = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
        width = 2.5 if key == "p95" else 1.5
        out.append(
            f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="{width}"/>'
        )
        for (a, b), s in zip(pts, steps, strict=False):
            bad = key == "p95" and not s.get("met_slo")
            out.append(
                f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{4 if key == "p95" else 2.5}" '
                f'fill="{"#d64545" if bad else color}"><title>{s["sessions"]} sessions {key}: '
                f"{float(s['v2v_ms'][key]):.0f} ms</title></circle>"
            )
    out.append("</svg>")
    legend = "".join(
        f'<span><span class="sw" style="background:{c}"></span>{k}</span>' for k, c in _SERIES
    )
    return f'<div class="legend">{legend}</div>' + "".join(out)


_CSS = """
body{margin:0;background:#f6f7fb;color:#1d2330;font:14px/1.45 FONT}
header{background:#1d2330;color:#fff;padding:22px 32px}header h1{margin:0 0 4px;font-size:22px}
header .meta{color:#b8bfd0;font-size:12.5px}main{max-width:1080px;margin:0 auto;padding:20px 24px 60px}
section{background:#fff;border:1px solid #e3e6ee;border-radius:10px;padding:16px 18px;margin:0 0 16px}
section h2{margin:0 0 10px;font-size:16px}table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:6px 8px;border-bottom:1px solid #e3e6ee;text-align:right}th{color:#6b7385;font-size:12px}
td:last-child,th:last-child{text-align:left}.muted{color:#6b7385}
.legend{display:flex;gap:14px;font-size:12.5px;color:#6b7385}.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.ok{color:#2e9d5b;font-weight:600}.bad{color:#d64545;font-weight:600}
svg .grid{stroke:#eceef4;stroke-width:1}svg .tick{fill:#7a8194;font-size:10.5px;font-family:FONT}
svg .target{stroke:#d64545;stroke-width:1.5;stroke-dasharray:5 4}svg .targetlabel{fill:#d64545;font-size:10.5px;font-family:FONT}
svg .pmark{stroke:#9aa3b8;stroke-dasharray:2 3}
""".replace("FONT", FONT)


def load_html(report: Mapping[str, Any]) -> str:
    """The report as one HTML string: the chart, the step table, the knee."""
    meta = report.get("meta") or {}
    rows = []
    for s in report.get("steps") or []:
        v, srv = s.get("v2v_ms") or {}, s.get("server") or {}
        cells = [
            s["sessions"],
            s["turns"],
            s["ok"],
            s["failed"],
            s["refused"],
            fmt_num(v.get("p50")),
            fmt_num(v.get("p95")),
            fmt_num(v.get("p99")),
            fmt_num(srv.get("cpu_pct_mean")),
            fmt_num(srv.get("rss_mb_max")),
        ]
        verdict = f'<span class="{"ok" if s["met_slo"] else "bad"}">{esc(s["why"])}</span>'
        rows.append(
            "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + f"<td>{verdict}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "sessions",
            "turns",
            "ok",
            "failed",
            "refused",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "server CPU % (machine)",
            "server RSS MB (max)",
            "SLO",
        )
    )
    k = report.get("knee")
    knee = f"{k} session(s)" if k is not None else "none: the first step broke the SLO"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>halfsec load report</title><style>{_CSS}</style></head><body>"
        f"<header><h1>Load: knee at {esc(knee)}</h1><div class=meta>{esc(meta.get('date'))} · "
        f"{esc((meta.get('machine') or {}).get('hostname'))} · transport {esc(meta.get('transport'))} · "
        f"stopped: {esc(report.get('stop_reason'))}</div></header><main>"
        f"<section><h2>Voice-to-voice against concurrent callers</h2>{p95_svg(report)}</section>"
        f"<section><h2>Steps</h2><table><tr>{head}</tr>{''.join(rows)}</table></section>"
        "</main></body></html>\n"
    )
