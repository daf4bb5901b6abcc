"""One self-contained HTML file for a report: waterfall, CDF, histogram, tables.

Self-contained because lab reports get attached to issues and opened years later on
machines with no network: CSS is inline and every chart is an SVG generated here (no
JavaScript, no fonts or scripts fetched), so the file renders the same everywhere and is
diff-able text.  Colours are fixed per stage across all charts so the eye can follow a
stage from the waterfall to the table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from halfsec.lab.report.charts import (
    FONT,
    STAGE_COLORS,
    cdf_svg,
    esc,
    fmt_num,
    histogram_svg,
    stage_color,
    waterfall_svg,
)

__all__ = ["STAGE_COLORS", "render_html", "write_html"]

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
""".replace("FONT", FONT)


def _card(k: str, v: str, s: str = "", cls: str = "") -> str:
    return f'<div class="card {cls}"><div class="k">{esc(k)}</div><div class="v">{v}</div><div class="s">{s}</div></div>'


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
        return f"95 % CI {fmt_num(c[0])}–{fmt_num(c[1])} ms" if c[0] is not None else ""

    machine = meta.get("machine")
    mtxt = (
        f"{machine.get('hostname', '')} ({machine.get('system', '')} {machine.get('machine', '')})"
        if isinstance(machine, Mapping)
        else str(machine or "")
    )
    head_bits = [
        f"<b>{esc(meta.get('command') or 'halfsec lab')}</b>",
        esc(meta.get("date") or ""),
        esc(mtxt),
    ]
    if meta.get("server_url"):
        head_bits.append(f"server <code style='color:#fff'>{esc(meta['server_url'])}</code>")
    if meta.get("source"):
        head_bits.append(f"source: {esc(meta['source'])}")
    if meta.get("run_id") is not None:
        head_bits.append(f"run #{esc(meta['run_id'])}")

    cards = [
        _card("v2v p50", f"{fmt_num(v.get('p50'))}<small> ms</small>", ci_txt("p50")),
        _card(
            f"v2v p{pct:g}" if pct == 95 else "v2v p95",
            f"{fmt_num(v.get('p95'))}<small> ms</small>",
            ci_txt("p95"),
            "" if not vb else ("good" if vb.get("ok") else "bad"),
        ),
        _card(
            "v2v p99",
            f"{fmt_num(v.get('p99'))}<small> ms</small>",
            f"max {fmt_num(v.get('max'))} ms",
        ),
        _card(
            "turns",
            f"{s.get('n_ok', 0)}<small> / {s.get('n_turns', 0)}</small>",
            f"{s.get('n_failed', 0)} failed",
            "bad" if s.get("n_failed") else "",
        ),
        _card(
            "budget",
            "within" if budget.get("ok") else "over",
            f"target p{pct:g} ≤ {fmt_num(vb.get('limit_ms'))} ms"
            if vb
            else esc(budget.get("name", "")),
            "good" if budget.get("ok") else "bad",
        ),
        _card(
            "dominant stage",
            esc(dom or "–"),
            f"{fmt_num(((stages_blk.get(dom) or {}).get('share') or 0) * 100)} % of v2v"
            if dom
            else "",
            "word",
        ),
    ]

    legend = "".join(
        f'<span><span class="sw" style="background:{stage_color(st, stages)}"></span>{esc(st)}</span>'
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
            f'<span class="share" style="width:{(share or 0) * 120:.0f}px;background:{stage_color(st, stages)}"></span>'
            if share
            else ""
        )
        limit = (
            f"{fmt_num(ln.get('observed_ms'), 1)} / {fmt_num(ln.get('limit_ms'))}"
            + (
                f' <span class="muted">({esc(line)})</span>'
                if len(ln.get("stages") or []) > 1
                else ""
            )
            if ln
            else '<span class="muted">–</span>'
        )
        rows.append(
            f'<tr><td><span class="sw" style="background:{stage_color(st, stages)}"></span>{"<b>" + esc(st) + "</b>" if st == dom else esc(st)}</td>'
            f"<td>{fmt_num(blk.get('p50'), 1)}</td><td>{fmt_num(blk.get('p95'), 1)}</td><td>{fmt_num(blk.get('mean'), 1)}</td>"
            f"<td>{fmt_num((share or 0) * 100)} %{bar}</td><td>{limit}</td><td>{_pill(ln.get('ok') if ln else None)}</td></tr>"
        )
    if vb:
        rows.append(
            f"<tr><td><b>v2v (total)</b></td><td>{fmt_num(v.get('p50'), 1)}</td><td>{fmt_num(v.get('p95'), 1)}</td>"
            f"<td>{fmt_num(v.get('mean'), 1)}</td><td>100 %</td><td>{fmt_num(vb.get('observed_ms'), 1)} / {fmt_num(vb.get('limit_ms'))}</td>"
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
            f"<li><b>{esc(x['line'])}</b>: p{x['percentile']:g} {x['observed_ms']:.1f} ms, budget {x['limit_ms']:.0f} ms "
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
            f"<tr><td>word error rate</td><td>{fmt_num((wer.get('rate') or 0) * 100, 1)} %</td>"
            f"<td>{wer['errors']} errors / {wer['words']} words, {wer['n']} turns</td></tr>"
        )
    cmd = acc.get("command_acceptance")
    if cmd:
        acc_rows.append(
            f"<tr><td>commands accepted (intent + all slots)</td><td>{fmt_num(cmd['rate'] * 100, 1)} %</td><td>{cmd['accepted']} / {cmd['n']}</td></tr>"
            f"<tr><td>intent correct</td><td>{fmt_num(cmd['intent_rate'] * 100, 1)} %</td><td>{cmd['intent_correct']} / {cmd['n']}</td></tr>"
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
                f"<tr><td>{r['index']}</td><td class='l'>{esc(r.get('file'))}</td><td class='l'>{esc(r.get('intent'))} {esc(json.dumps(r.get('slots')))}</td>"
                f"<td class='l'>{esc(r.get('ref_intent'))} {esc(json.dumps(r.get('ref_slots')))}</td></tr>"
                for r in cmd["rejected"][:200]
            )
            + "</tbody></table></details>"
        )

    failed = s.get("failed") or []
    failed_html = (
        "<table><thead><tr><th>#</th><th class='l'>file</th><th class='l'>error</th></tr></thead><tbody>"
        + "".join(
            f"<tr><td>{f['index']}</td><td class='l'>{esc(f.get('file'))}</td><td class='l' style='color:var(--bad)'>{esc(f.get('error'))}</td></tr>"
            for f in failed
        )
        + "</tbody></table>"
        if failed
        else '<p class="muted">No failed turns.</p>'
    )

    turn_rows = []
    for i, t in enumerate(report.get("turns") or []):
        turn_rows.append(
            f"<tr><td>{i}</td><td class='l'>{esc(Path(str(t.get('file') or '')).name)}</td><td>{fmt_num(t.get('v2v_ms'), 1)}</td>"
            f"<td class='l'>{esc(t.get('dominant_stage'))}</td><td class='l'>{esc(t.get('transcript'))}</td>"
            f"<td class='l'>{esc(t.get('reply_text'))}</td><td class='l'><code>{esc(t.get('trace_id') or '')}</code></td></tr>"
        )
    turns_html = (
        "<details><summary>all turns</summary><table><thead><tr><th>#</th><th class='l'>file</th><th>v2v ms</th>"
        "<th class='l'>dominant</th><th class='l'>heard</th><th class='l'>replied</th><th class='l'>trace</th></tr></thead><tbody>"
        + "".join(turn_rows)
        + "</tbody></table></details>"
    )
    cfg = meta.get("config")
    cfg_html = (
        f"<details><summary>configuration</summary><pre>{esc(json.dumps(cfg, indent=2, default=str))}</pre></details>"
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
<section id="stages"><h2>Stages and budget <span class="muted" style="font-weight:400;font-size:12.5px">— budget “{esc(budget.get("name", ""))}”, checked at p{pct:g}</span></h2>
{stage_table}{viol_html}</section>
<div class="two"><section id="accuracy"><h2>Accuracy</h2>{acc_html}</section>
<section id="failed"><h2>Failed turns</h2>{failed_html}</section></div>
<section id="turns"><h2>Turns</h2>{turns_html}{cfg_html}</section>
<p class="muted">schema {esc(report.get("schema"))} · percentiles interpolated between closest ranks · confidence intervals from a seeded bootstrap (2000 resamples)</p>
</main></body></html>
"""


def write_html(report: Mapping[str, Any], path: Path | str) -> Path:
    """Write the report as one self-contained HTML file; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(report), encoding="utf-8")
    return p
