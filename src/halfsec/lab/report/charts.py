"""The report's charts as inline SVG: waterfall, CDF and histogram.

SVG written here rather than a plotting library because the HTML report must open years
later with no network and no scripts, and stay diff-able text; the charts are simple
enough that a small writer is clearer than matplotlib's SVG backend plus post-editing.
Colours are fixed per stage so the eye can follow a stage from chart to table.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "FONT",
    "STAGE_COLORS",
    "cdf_svg",
    "esc",
    "fmt_num",
    "histogram_svg",
    "stage_color",
    "waterfall_svg",
]

STAGE_COLORS: dict[str, str] = {
    "endpointing": "#8e9aaf",
    "stt": "#4e79a7",
    "logic": "#f28e2b",
    "tts": "#59a14f",
    "server_send": "#b07aa1",
    "network_buffer": "#edc948",
}
_EXTRA_COLORS = ("#76b7b2", "#ff9da7", "#9c755f", "#bab0ac", "#e15759")
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def fmt_num(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{float(x):.{digits}f}"


def stage_color(stage: str, stages: Sequence[str]) -> str:
    if stage in STAGE_COLORS:
        return STAGE_COLORS[stage]
    extras = [s for s in stages if s not in STAGE_COLORS]
    return _EXTRA_COLORS[extras.index(stage) % len(_EXTRA_COLORS)] if stage in extras else "#999"


def _nice_step(span: float, target_ticks: int = 6) -> float:
    """A 1/2/5 x 10^k tick step giving about ``target_ticks`` ticks over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / target_ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _stage_val(turn: Mapping[str, Any], stage: str) -> float:
    st = turn.get("stages") or {}
    v = st.get(f"{stage}_ms", st.get(stage))
    try:
        f = float(v) if v is not None else 0.0
    except (TypeError, ValueError):
        return 0.0
    return f if math.isfinite(f) and f > 0 else 0.0


def _ok_turns(report: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    return [
        (i, t)
        for i, t in enumerate(report.get("turns") or [])
        if t.get("ok", True) and t.get("v2v_ms") is not None
    ]


def _axis(x0: float, x1: float, w: float, xmax: float, y: float, h: float, unit: str) -> str:
    """Vertical grid lines with labels under a plot of width ``w`` starting at ``x0``."""
    step = _nice_step(xmax)
    parts = []
    v = 0.0
    while v <= xmax + 1e-9:
        x = x0 + (v / xmax) * w if xmax else x0
        parts.append(
            f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x:.1f}" y2="{y + h:.1f}" class="grid"/>'
            f'<text x="{x:.1f}" y="{y + h + 14:.1f}" class="tick" text-anchor="middle">{v:g}</text>'
        )
        v += step
    parts.append(
        f'<text x="{x1:.1f}" y="{y + h + 28:.1f}" class="tick" text-anchor="end">{esc(unit)}</text>'
    )
    return "".join(parts)


def waterfall_svg(report: Mapping[str, Any], stages: Sequence[str], max_rows: int = 250) -> str:
    """Per-turn waterfall: one row per turn, stages stacked left to right on one ms axis.

    Stages telescope (they add up to v2v), so each bar ends at the turn's v2v, and a
    stage's colour block starts where the previous one ended: the picture is the turn's
    timeline from the user's last voiced sample to the first audible reply sample."""
    rows = _ok_turns(report)
    truncated = max(0, len(rows) - max_rows)
    rows = rows[:max_rows]
    if not rows:
        return '<p class="muted">No successful turns to draw.</p>'
    budget = report.get("budget") or {}
    target = (budget.get("v2v") or {}).get("limit_ms")
    xmax = max(float(t.get("v2v_ms") or 0.0) for _, t in rows)
    xmax = max(xmax, float(target or 0.0)) * 1.05 or 1.0
    label_w, right, row_h, top = 170.0, 60.0, 16.0, 26.0
    width = 960.0
    plot_w = width - label_w - right
    height = top + row_h * len(rows) + 44
    out = [
        f'<svg class="chart waterfall" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="100%" role="img" '
        f'aria-label="per-turn latency waterfall"><title>Per-turn waterfall</title>'
    ]
    out.append(_axis(label_w, label_w + plot_w, plot_w, xmax, top - 4, row_h * len(rows) + 4, "ms"))
    for r, (i, t) in enumerate(rows):
        y = top + r * row_h
        name = Path(str(t.get("file") or f"turn {i}")).name
        if len(name) > 24:
            name = name[:23] + "…"
        out.append(
            f'<text x="{label_w - 8:.1f}" y="{y + row_h * 0.72:.1f}" class="rowlabel" '
            f'text-anchor="end">{i}. {esc(name)}</text>'
        )
        x = label_w
        for s in stages:
            v = _stage_val(t, s)
            if v <= 0:
                continue
            w = v / xmax * plot_w
            out.append(
                f'<rect x="{x:.2f}" y="{y + 2:.1f}" width="{max(w, 0.5):.2f}" height="{row_h - 4:.1f}" '
                f'fill="{stage_color(s, stages)}"><title>turn {i} {esc(s)}: {v:.1f} ms</title></rect>'
            )
            x += w
        v2v = float(t.get("v2v_ms") or 0.0)
        out.append(
            f'<text x="{label_w + v2v / xmax * plot_w + 4:.1f}" y="{y + row_h * 0.72:.1f}" '
            f'class="val">{v2v:.0f}</text>'
        )
    if target:
        xt = label_w + float(target) / xmax * plot_w
        out.append(
            f'<line x1="{xt:.1f}" y1="{top - 10:.1f}" x2="{xt:.1f}" y2="{top + row_h * len(rows):.1f}" class="target"/>'
            f'<text x="{xt:.1f}" y="{top - 13:.1f}" class="targetlabel" text-anchor="middle">target {float(target):g} ms</text>'
        )
    out.append("</svg>")
    if truncated:
        out.append(f'<p class="muted">{truncated} more turns not drawn.</p>')
    return "".join(out)


@dataclass(frozen=True)
class _SmallChart:
    """Frame, x scale and target marker of a small v2v chart (the CDF and the histogram).

    The two stand side by side on the page, so they share one geometry, one scale rule
    (the largest value or the budget target, plus 5 %) and one target marker: a given ms
    lands at the same x in both, and a change to the frame changes both."""

    target: Any
    xmax: float
    width: ClassVar[float] = 460.0
    height: ClassVar[float] = 280.0
    left: ClassVar[float] = 46.0
    top: ClassVar[float] = 14.0
    pw: ClassVar[float] = 460.0 - 46.0 - 16.0  # plot width: width minus left/right margins
    ph: ClassVar[float] = 280.0 - 14.0 - 44.0  # plot height: height minus top/bottom margins

    @classmethod
    def of(cls, report: Mapping[str, Any], vmax: float) -> _SmallChart:
        """The chart for values up to ``vmax`` ms under ``report``'s v2v budget target."""
        target = ((report.get("budget") or {}).get("v2v") or {}).get("limit_ms")
        return cls(target, max(vmax, float(target or 0.0)) * 1.05 or 1.0)

    def x(self, ms: float) -> float:
        return self.left + ms / self.xmax * self.pw

    def head(self, kind: str, name: str) -> list[str]:
        """The ``<svg>`` start tag (titled "Latency ``name``") and the ms axis."""
        return [
            f'<svg class="chart {kind}" viewBox="0 0 {self.width:.0f} {self.height:.0f}" '
            f'width="100%" role="img" aria-label="latency {name}"><title>Latency {name}</title>',
            _axis(self.left, self.left + self.pw, self.pw, self.xmax, self.top, self.ph, "v2v ms"),
        ]

    def vline(self, x: float, cls: str) -> str:
        """A line across the plot's height at ``x`` (percentile and target markers)."""
        return f'<line x1="{x:.1f}" y1="{self.top:.1f}" x2="{x:.1f}" y2="{self.top + self.ph:.1f}" class="{cls}"/>'

    def close(self, out: list[str]) -> str:
        """Append the target marker (when the budget has one) and the end tag; join."""
        if self.target:
            out.append(self.vline(self.x(float(self.target)), "target"))
        out.append("</svg>")
        return "".join(out)


def cdf_svg(report: Mapping[str, Any]) -> str:
    """Empirical CDF of v2v with p50/p95 and the target marked: the shape of the tail."""
    vals = sorted(float(t["v2v_ms"]) for _, t in _ok_turns(report))
    if not vals:
        return '<p class="muted">No data.</p>'
    s = report.get("summary") or {}
    v = s.get("v2v_ms") or {}
    c = _SmallChart.of(report, vals[-1])
    left, top, pw, ph = c.left, c.top, c.pw, c.ph
    n = len(vals)
    pts = [(left, top + ph)]
    for k, x in enumerate(vals):
        px = c.x(x)
        pts.append((px, top + ph - (k / n) * ph))
        pts.append((px, top + ph - ((k + 1) / n) * ph))
    pts.append((left + pw, top))
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    out = c.head("cdf", "CDF")
    for q in (0.0, 0.25, 0.5, 0.75, 0.95, 1.0):
        y = top + ph - q * ph
        out.append(
            f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{left + pw:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6:.1f}" y="{y + 4:.1f}" class="tick" text-anchor="end">{q:.2f}</text>'
        )
    out.append(f'<polyline points="{path}" class="cdfline"/>')
    for key, cls in (("p50", "pmark"), ("p95", "pmark")):
        pv = v.get(key)
        if pv is None:
            continue
        x = c.x(float(pv))
        out.append(
            c.vline(x, cls)
            + f'<text x="{x + 3:.1f}" y="{top + 12 if key == "p95" else top + ph - 8:.1f}" class="tick">{key} {float(pv):.0f}</text>'
        )
    return c.close(out)


def histogram_svg(report: Mapping[str, Any], bins: int = 24) -> str:
    """Histogram of v2v: is the distribution one hump or are there two kinds of turn?"""
    vals = [float(t["v2v_ms"]) for _, t in _ok_turns(report)]
    if not vals:
        return '<p class="muted">No data.</p>'
    c = _SmallChart.of(report, max(vals))
    left, top, ph = c.left, c.top, c.ph
    bw = c.xmax / bins
    counts = [0] * bins
    for x in vals:
        counts[min(bins - 1, int(x / bw))] += 1
    cmax = max(counts) or 1
    out = c.head("hist", "histogram")
    step = max(1, math.ceil(cmax / 5))
    for n in range(0, cmax + 1, step):
        y = top + ph - n / cmax * ph
        out.append(
            f'<text x="{left - 6:.1f}" y="{y + 4:.1f}" class="tick" text-anchor="end">{n}</text>'
        )
    for k, n in enumerate(counts):
        if not n:
            continue
        x = c.x(k * bw)
        h = n / cmax * ph
        over = c.target is not None and (k + 0.5) * bw > float(c.target)
        out.append(
            f'<rect x="{x + 0.5:.1f}" y="{top + ph - h:.1f}" width="{bw / c.xmax * c.pw - 1:.1f}" height="{h:.1f}" '
            f'class="{"bar over" if over else "bar"}"><title>{k * bw:.0f}–{(k + 1) * bw:.0f} ms: {n}</title></rect>'
        )
    return c.close(out)
