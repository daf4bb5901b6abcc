"""One self-contained HTML file for a report: waterfall, CDF, histogram, tables.

Self-contained because lab reports get attached to issues and opened years later on
machines with no network: CSS is inline and every chart is an SVG generated here (no
JavaScript, no fonts or scripts fetched), so the file renders the same everywhere and is
diff-able text.  Colours are fixed per stage across all charts so the eye can follow a
stage from the waterfall to the table.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["STAGE_COLORS", "render_html", "write_html"]

STAGE_COLORS: dict[str, str] = {
    "endpointing": "#8e9aaf",
    "stt": "#4e79a7",
    "logic": "#f28e2b",
    "tts": "#59a14f",
    "server_send": "#b07aa1",
    "network_buffer": "#edc948",
}
_EXTRA_COLORS = ("#76b7b2", "#ff9da7", "#9c755f", "#bab0ac", "#e15759")
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _fmt(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{float(x):.{digits}f}"


def _color(stage: str, stages: Sequence[str]) -> str:
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
        f'<text x="{x1:.1f}" y="{y + h + 28:.1f}" class="tick" text-anchor="end">{_e(unit)}</text>'
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
            f'text-anchor="end">{i}. {_e(name)}</text>'
        )
        x = label_w
        for s in stages:
            v = _stage_val(t, s)
            if v <= 0:
                continue
            w = v / xmax * plot_w
            out.append(
                f'<rect x="{x:.2f}" y="{y + 2:.1f}" width="{max(w, 0.5):.2f}" height="{row_h - 4:.1f}" '
                f'fill="{_color(s, stages)}"><title>turn {i} {_e(s)}: {v:.1f} ms</title></rect>'
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


_CSS = """
:root{--fg:#1d2330;--muted:#6b7385;--bg:#f6f7fb;--card:#fff;--line:#e3e6ee;--ok:#2e9d5b;--bad:#d64545;--accent:#3b5bdb}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 FONT}
header{background:#1d2330;color:#fff;padding:22px 32px}header h1{margin:0 0 4px;font-size:22px;font-weight:650}
header .meta{color:#b8bfd0;font-size:12.5px}main{max-width:1080px;margin:0 auto;padding:20px 24px 60px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin:4px 0 18px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:24px;font-weight:650;font-variant-numeric:tabular-nums}.card .s{color:var(--muted);font-size:12px}
.card.bad .v{color:var(--bad)}.card.word .v{font-size:19px;overflow-wrap:anywhere}td{white-space:nowrap}.card.good .v{color:var(--ok)}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 18px;margin:0 0 16px}
section h2{margin:0 0 10px;font-size:16px}.two{display:grid;grid-template-columns:1fr 1fr;gap:16px}
@media (max-width:800px){.two{grid-template-columns:1fr}}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:6px 8px;border-bottom:1px solid var(--line);text-align:right}th{color:var(--muted);font-weight:600;font-size:12px}
td:first-child,th:first-child{text-align:left}td.l,th.l{text-align:left}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;vertical-align:-1px}
.pill{display:inline-block;border-radius:99px;padding:1px 8px;font-size:12px;font-weight:600}
.pill.ok{background:#e3f5ea;color:var(--ok)}.pill.bad{background:#fde8e8;color:var(--bad)}.pill.na{background:#eef0f5;color:var(--muted)}
.share{display:inline-block;height:8px;border-radius:4px;vertical-align:middle;margin-left:6px}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin:0 0 8px;font-size:12.5px;color:var(--muted)}
.muted{color:var(--muted)}code{font-size:12px}details summary{cursor:pointer;color:var(--accent)}
svg .grid{stroke:#eceef4;stroke-width:1}svg .tick{fill:#7a8194;font-size:10.5px;font-family:FONT}
svg .rowlabel{fill:#3a4152;font-size:10.5px;font-family:FONT}svg .val{fill:#3a4152;font-size:10px;font-family:FONT}
svg .target{stroke:var(--bad);stroke-width:1.5;stroke-dasharray:5 4}svg .targetlabel{fill:var(--bad);font-size:10.5px;font-family:FONT}
svg .cdfline{fill:none;stroke:var(--accent);stroke-width:2}svg .pmark{stroke:#9aa3b8;stroke-dasharray:2 3}
svg .bar{fill:#7d95e8}svg .bar.over{fill:#ee8b8b}
""".replace("FONT", _FONT)


def _card(k: str, v: str, s: str = "", cls: str = "") -> str:
    return f'<div class="card {cls}"><div class="k">{_e(k)}</div><div class="v">{v}</div><div class="s">{s}</div></div>'


def _pill(ok: bool | None) -> str:
    if ok is None:
        return '<span class="pill na">no line</span>'
    return '<span class="pill ok">within</span>' if ok else '<span class="pill bad">over</span>'


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one HTML string (see ``write_html``)."""
    s = report.get("summary") or {}
    meta = report.get("meta") or {}
    budget = report.get("budget") or {}
    v = s.get("v2v_ms") or {}
    ci = v.get("ci95") or {}
    stages_blk: Mapping[str, Any] = s.get("stages") or {}
    stages = list(stages_blk)
    pct = budget.get("percentile", 95)
    vb = budget.get("v2v") or {}
    dom = (s.get("dominant_stage") or {}).get("name")

    def ci_txt(key: str) -> str:
        c = ci.get(key) or [None, None]
        return f"95 % CI {_fmt(c[0])}–{_fmt(c[1])} ms" if c[0] is not None else ""

    machine = meta.get("machine")
    mtxt = (
        f"{machine.get('hostname', '')} ({machine.get('system', '')} {machine.get('machine', '')})"
        if isinstance(machine, Mapping)
        else str(machine or "")
    )
    head_bits = [
        f"<b>{_e(meta.get('command') or 'halfsec lab')}</b>",
        _e(meta.get("date") or ""),
        _e(mtxt),
    ]
    if meta.get("server_url"):
        head_bits.append(f"server <code style='color:#fff'>{_e(meta['server_url'])}</code>")
    if meta.get("source"):
        head_bits.append(f"source: {_e(meta['source'])}")
    if meta.get("run_id") is not None:
        head_bits.append(f"run #{_e(meta['run_id'])}")

    cards = [
        _card("v2v p50", f"{_fmt(v.get('p50'))}<small> ms</small>", ci_txt("p50")),
        _card(
            f"v2v p{pct:g}" if pct == 95 else "v2v p95",
            f"{_fmt(v.get('p95'))}<small> ms</small>",
            ci_txt("p95"),
            "" if not vb else ("good" if vb.get("ok") else "bad"),
        ),
        _card("v2v p99", f"{_fmt(v.get('p99'))}<small> ms</small>", f"max {_fmt(v.get('max'))} ms"),
        _card(
            "turns",
            f"{s.get('n_ok', 0)}<small> / {s.get('n_turns', 0)}</small>",
            f"{s.get('n_failed', 0)} failed",
            "bad" if s.get("n_failed") else "",
        ),
        _card(
            "budget",
            "within" if budget.get("ok") else "over",
            f"target p{pct:g} ≤ {_fmt(vb.get('limit_ms'))} ms"
            if vb
            else _e(budget.get("name", "")),
            "good" if budget.get("ok") else "bad",
        ),
        _card(
            "dominant stage",
            _e(dom or "–"),
            f"{_fmt(((stages_blk.get(dom) or {}).get('share') or 0) * 100)} % of v2v"
            if dom
            else "",
            "word",
        ),
    ]

    legend = "".join(
        f'<span><span class="sw" style="background:{_color(st, stages)}"></span>{_e(st)}</span>'
        for st in stages
    )

    # Stage table with budget compliance.
    lines = budget.get("lines") or {}
    rows = []
    for st, blk in stages_blk.items():
        line = blk.get("budget_line")
        ln = lines.get(line) if line else None
        share = blk.get("share")
        bar = (
            f'<span class="share" style="width:{(share or 0) * 120:.0f}px;background:{_color(st, stages)}"></span>'
            if share
            else ""
        )
        limit = (
            f"{_fmt(ln.get('observed_ms'), 1)} / {_fmt(ln.get('limit_ms'))}"
            + (
                f' <span class="muted">({_e(line)})</span>'
                if len(ln.get("stages") or []) > 1
                else ""
            )
            if ln
            else '<span class="muted">–</span>'
        )
        rows.append(
            f'<tr><td><span class="sw" style="background:{_color(st, stages)}"></span>{"<b>" + _e(st) + "</b>" if st == dom else _e(st)}</td>'
            f"<td>{_fmt(blk.get('p50'), 1)}</td><td>{_fmt(blk.get('p95'), 1)}</td><td>{_fmt(blk.get('mean'), 1)}</td>"
            f"<td>{_fmt((share or 0) * 100)} %{bar}</td><td>{limit}</td><td>{_pill(ln.get('ok') if ln else None)}</td></tr>"
        )
    if vb:
        rows.append(
            f"<tr><td><b>v2v (total)</b></td><td>{_fmt(v.get('p50'), 1)}</td><td>{_fmt(v.get('p95'), 1)}</td>"
            f"<td>{_fmt(v.get('mean'), 1)}</td><td>100 %</td><td>{_fmt(vb.get('observed_ms'), 1)} / {_fmt(vb.get('limit_ms'))}</td>"
            f"<td>{_pill(vb.get('ok'))}</td></tr>"
        )
    stage_table = (
        f"<table><thead><tr><th>stage</th><th>p50 ms</th><th>p95 ms</th><th>mean ms</th><th>share of v2v</th>"
        f"<th>p{pct:g} / budget ms</th><th>budget</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    viol = budget.get("violations") or []
    viol_html = (
        "<ul>"
        + "".join(
            f"<li><b>{_e(x['line'])}</b>: p{x['percentile']:g} {x['observed_ms']:.1f} ms, budget {x['limit_ms']:.0f} ms "
            f"(<span style='color:var(--bad)'>+{x['over_ms']:.1f} ms</span>)</li>"
            for x in viol
        )
        + "</ul>"
        if viol
        else '<p class="muted">Every budget line is within its limit.</p>'
    )

    acc = s.get("accuracy") or {}
    acc_rows = []
    wer = acc.get("wer")
    if wer:
        acc_rows.append(
            f"<tr><td>word error rate</td><td>{_fmt((wer.get('rate') or 0) * 100, 1)} %</td>"
            f"<td>{wer['errors']} errors / {wer['words']} words, {wer['n']} turns</td></tr>"
        )
    cmd = acc.get("command_acceptance")
    if cmd:
        acc_rows.append(
            f"<tr><td>commands accepted (intent + all slots)</td><td>{_fmt(cmd['rate'] * 100, 1)} %</td><td>{cmd['accepted']} / {cmd['n']}</td></tr>"
            f"<tr><td>intent correct</td><td>{_fmt(cmd['intent_rate'] * 100, 1)} %</td><td>{cmd['intent_correct']} / {cmd['n']}</td></tr>"
        )
    acc_html = (
        f"<table><tbody>{''.join(acc_rows)}</tbody></table>"
        if acc_rows
        else '<p class="muted">No reference transcripts or intents in this run.</p>'
    )
    if cmd and cmd.get("rejected"):
        acc_html += (
            "<details><summary>rejected commands</summary><table><thead><tr><th>#</th><th class='l'>file</th>"
            "<th class='l'>intent / slots</th><th class='l'>expected</th></tr></thead><tbody>"
            + "".join(
                f"<tr><td>{r['index']}</td><td class='l'>{_e(r.get('file'))}</td><td class='l'>{_e(r.get('intent'))} {_e(json.dumps(r.get('slots')))}</td>"
                f"<td class='l'>{_e(r.get('ref_intent'))} {_e(json.dumps(r.get('ref_slots')))}</td></tr>"
                for r in cmd["rejected"][:200]
            )
            + "</tbody></table></details>"
        )

    failed = s.get("failed") or []
    failed_html = (
        "<table><thead><tr><th>#</th><th class='l'>file</th><th class='l'>error</th></tr></thead><tbody>"
        + "".join(
            f"<tr><td>{f['index']}</td><td class='l'>{_e(f.get('file'))}</td><td class='l' style='color:var(--bad)'>{_e(f.get('error'))}</td></tr>"
            for f in failed
        )
        + "</tbody></table>"
        if failed
        else '<p class="muted">No failed turns.</p>'
    )

    turn_rows = []
    for i, t in enumerate(report.get("turns") or []):
        turn_rows.append(
            f"<tr><td>{i}</td><td class='l'>{_e(Path(str(t.get('file') or '')).name)}</td><td>{_fmt(t.get('v2v_ms'), 1)}</td>"
            f"<td class='l'>{_e(t.get('dominant_stage'))}</td><td class='l'>{_e(t.get('transcript'))}</td>"
            f"<td class='l'>{_e(t.get('reply_text'))}</td><td class='l'><code>{_e(t.get('trace_id') or '')}</code></td></tr>"
        )
    turns_html = (
        "<details><summary>all turns</summary><table><thead><tr><th>#</th><th class='l'>file</th><th>v2v ms</th>"
        "<th class='l'>dominant</th><th class='l'>heard</th><th class='l'>replied</th><th class='l'>trace</th></tr></thead><tbody>"
        + "".join(turn_rows)
        + "</tbody></table></details>"
    )
    cfg = meta.get("config")
    cfg_html = (
        f"<details><summary>configuration</summary><pre>{_e(json.dumps(cfg, indent=2, default=str))}</pre></details>"
        if cfg
        else ""
    )

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>halfsec latency report</title><style>{_CSS}</style></head>
<body><header><h1>halfsec latency report</h1><div class="meta">{" · ".join(head_bits)}</div></header>
<main>
<div class="cards">{"".join(cards)}</div>
<section id="waterfall"><h2>Per-turn waterfall <span class="muted" style="font-weight:400;font-size:12.5px">— from the user's last voiced sample to the first audible reply sample</span></h2>
<div class="legend">{legend}<span><span class="sw" style="background:var(--bad)"></span>target</span></div>
{waterfall_svg(report, stages)}</section>
<div class="two"><section id="cdf"><h2>Latency CDF</h2>{cdf_svg(report)}</section>
<section id="histogram"><h2>Latency histogram</h2>{histogram_svg(report)}</section></div>
<section id="stages"><h2>Stages and budget <span class="muted" style="font-weight:400;font-size:12.5px">— budget “{_e(budget.get("name", ""))}”, checked at p{pct:g}</span></h2>
{stage_table}{viol_html}</section>
<div class="two"><section id="accuracy"><h2>Accuracy</h2>{acc_html}</section>
<section id="failed"><h2>Failed turns</h2>{failed_html}</section></div>
<section id="turns"><h2>Turns</h2>{turns_html}{cfg_html}</section>
<p class="muted">schema {_e(report.get("schema"))} · percentiles from an HDR histogram · confidence intervals from a seeded bootstrap (2000 resamples)</p>
</main></body></html>
"""


def write_html(report: Mapping[str, Any], path: Path | str) -> Path:
    """Write the report as one self-contained HTML file; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(report), encoding="utf-8")
    return p
