"""Lab reports: statistics, budgets, the JSON schema, HTML, store, compare, import, CLI."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from lab_synth import synthetic_turns
from typer.testing import CliRunner

from halfsec.cli.main import app
from halfsec.lab.report.budget import (
    DEFAULT_BUDGET,
    DEFAULT_BUDGET_PATH,
    Budget,
    BudgetLine,
    check_budget,
    load_budget,
)
from halfsec.lab.report.compare import compare
from halfsec.lab.report.html import render_html, write_html
from halfsec.lab.report.import_trace import import_trace
from halfsec.lab.report.json import (
    SCHEMA,
    accepted,
    build_report,
    default_meta,
    parse_slots,
    same_intent,
)
from halfsec.lab.report.stats import bootstrap_ci, bootstrap_diff_ci, percentiles
from halfsec.lab.report.store import (
    SCHEMA_VERSION,
    journal_mode,
    list_runs,
    load_run,
    save_run,
)
from halfsec.measure.percentile import percentile

DATA = Path(__file__).parent / "data"


# -- stats -----------------------------------------------------------------------------
def test_report_percentiles_are_the_one_rule() -> None:
    """A report's p50..p99 are exactly what the bench summary and the benchmarks compute."""
    rng = np.random.default_rng(3)
    vals = rng.lognormal(mean=6.0, sigma=0.4, size=5000)  # ~400 ms, long right tail
    ps = percentiles([*vals, None, float("nan")])  # missing turns are skipped
    assert set(ps) == {50.0, 90.0, 95.0, 99.0}
    for p, got in ps.items():
        assert got == percentile(vals, p), p


def test_percentiles_small_known_values() -> None:
    ps = percentiles([100.0, 200.0, 300.0, 400.0, 1000.0])
    assert ps[50.0] == 300.0
    assert ps[99.0] == pytest.approx(976.0)  # 400 + 0.96 * (1000 - 400): interpolated
    assert all(np.isnan(v) for v in percentiles([]).values())


def test_bootstrap_ci_covers_truth_on_synthetic_data() -> None:
    # Normal(400, 50): the true median is 400, the true p95 is 400 + 1.645*50.
    truth50, truth95 = 400.0, 400.0 + 1.6449 * 50.0
    covered50 = covered95 = 0
    trials = 40
    for seed in range(trials):
        vals = np.random.default_rng(100 + seed).normal(400, 50, size=200)
        lo, hi = bootstrap_ci(vals, 50.0, seed=seed)
        covered50 += lo <= truth50 <= hi
        lo, hi = bootstrap_ci(vals, 95.0, seed=seed)
        covered95 += lo <= truth95 <= hi
    # A 95 % interval should cover the truth in most trials (allow bootstrap slack).
    assert covered50 >= 0.85 * trials
    assert covered95 >= 0.80 * trials


def test_bootstrap_ci_is_seeded_and_narrows_with_n() -> None:
    vals = np.random.default_rng(1).normal(400, 50, size=100)
    assert bootstrap_ci(vals, 50.0) == bootstrap_ci(vals, 50.0)
    big = np.random.default_rng(1).normal(400, 50, size=2000)
    w_small = np.subtract(*bootstrap_ci(vals, 50.0)[::-1])
    w_big = np.subtract(*bootstrap_ci(big, 50.0)[::-1])
    assert w_big < w_small


def test_bootstrap_diff_ci_detects_shift_and_not_noise() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(400, 40, size=300)
    b = rng.normal(450, 40, size=300)
    point, lo, hi = bootstrap_diff_ci(a, b, 50.0)
    assert 30 < point < 70 and lo > 0 and lo <= 50 <= hi
    c = rng.normal(400, 40, size=300)
    _, lo, hi = bootstrap_diff_ci(a, c, 50.0)
    assert lo < 0 < hi


# -- budget ----------------------------------------------------------------------------
def test_default_budget_file_equals_builtin() -> None:
    b = load_budget(DEFAULT_BUDGET_PATH)
    assert b.lines == DEFAULT_BUDGET.lines
    assert b.v2v_ms == DEFAULT_BUDGET.v2v_ms and b.percentile == DEFAULT_BUDGET.percentile
    names = {ln.name: ln for ln in b.lines}
    assert names["network"].stages == ("server_send", "network_buffer")
    assert (names["network"].limit_ms, names["stt"].limit_ms) == (100.0, 200.0)
    assert (names["logic"].limit_ms, names["tts"].limit_ms) == (150.0, 50.0)


def test_budget_violations_at_p95(tmp_path: Path) -> None:
    turns = synthetic_turns(80, seed=2)
    # tts in synthetic data is gamma(5, 9): p95 ~ 80 ms > 50 ms; logic p95 ~ 150 is close.
    report = build_report(turns, default_meta("test"))
    v = {x.line: x for x in check_budget(report, DEFAULT_BUDGET)}
    assert "tts" in v and v["tts"].observed_ms > 50 and v["tts"].over_ms > 0
    assert "network" not in v and "endpointing" not in v
    # network line is the per-turn sum of its two stages
    net = [t["stages"]["server_send_ms"] + t["stages"]["network_buffer_ms"] for t in turns]
    assert report["budget"]["lines"]["network"]["observed_ms"] == pytest.approx(
        percentile(net, 95), abs=1e-3
    )
    # A generous budget has no violations; a custom file is parsed.
    f = tmp_path / "loose.toml"
    f.write_text(
        'name = "loose"\npercentile = 90\nv2v_ms = 2000\n'
        '[lines.all]\nlimit_ms = 5000\nstages = ["endpointing", "stt", "logic", "tts"]\n'
    )
    loose = load_budget(f)
    assert loose.name == "loose" and loose.percentile == 90
    assert check_budget(report, loose) == []
    tight = Budget("tight", 95.0, (BudgetLine("stt", 1.0, ("stt",)),), v2v_ms=100.0)
    lines = {x.line for x in check_budget(report, tight)}
    assert lines == {"stt", "v2v"}


def test_bad_budget_file_is_a_clear_error(tmp_path: Path) -> None:
    from halfsec.errors import HalfsecError

    f = tmp_path / "bad.toml"
    f.write_text("[lines.stt]\nstages = ['stt']\n")
    with pytest.raises(HalfsecError, match="limit_ms"):
        load_budget(f)


# -- JSON report -----------------------------------------------------------------------
def test_report_schema_keys_and_values() -> None:
    turns = synthetic_turns(50, seed=4, failed=2)
    meta = default_meta("halfsec bench", server_url="ws://127.0.0.1:8765/ws", config={"a": 1})
    r = build_report(turns, meta)
    json.dumps(r)  # serialisable, no NaN objects
    assert "NaN" not in json.dumps(r)
    assert r["schema"] == SCHEMA == "halfsec.report/1"
    assert set(r) >= {"schema", "meta", "summary", "budget", "turns"}
    assert set(r["meta"]) >= {"command", "machine", "date", "server_url", "config"}
    s = r["summary"]
    v = s["v2v_ms"]
    assert set(v) >= {"p50", "p90", "p95", "p99", "mean", "n", "ci95"}
    assert v["n"] == 50 and s["n_failed"] == 2 and s["n_turns"] == 52
    assert v["ci95"]["p50"][0] <= v["p50"] <= v["ci95"]["p50"][1]
    assert v["ci95"]["p95"][0] <= v["p95"] <= v["ci95"]["p95"][1]
    ok = [t["v2v_ms"] for t in turns if t["ok"]]
    assert v["mean"] == pytest.approx(np.mean(ok), abs=1e-3)
    st = s["stages"]
    assert list(st) == ["endpointing", "stt", "logic", "tts", "server_send", "network_buffer"]
    assert sum(x["share"] for x in st.values()) == pytest.approx(1.0, abs=1e-3)
    assert st["tts"]["budget_line"] == "tts" and st["server_send"]["budget_line"] == "network"
    assert s["dominant_stage"]["name"] == "endpointing"
    # WER: every 5th turn says "late" for "latte" (1 error in 6 words), failed turns
    # heard nothing (all words deleted).
    wer = s["accuracy"]["wer"]
    assert wer["n"] == 52 and wer["errors"] == 10 * 1 + 2 * 3 and wer["words"] == 50 * 6 + 2 * 3
    cmd = s["accuracy"]["command_acceptance"]
    wrong_intent = sum(1 for i in range(50) if i % 7 == 0)
    assert cmd["n"] == 52 and cmd["accepted"] == 50 - wrong_intent
    assert [f["index"] for f in s["failed"]] == [50, 51]
    assert "timeout" in s["failed"][0]["error"]
    assert len(r["turns"]) == 52


def test_parse_slots_and_extra_slot_rejects() -> None:
    assert parse_slots("drink=latte; size=Large") == {"drink": "latte", "size": "large"}
    assert parse_slots({"Drink": "Latte"}) == {"drink": "latte"}
    turns = synthetic_turns(3, seed=1)
    turns[1]["slots"] = {"drink": "latte", "size": "large", "milk": "oat"}  # extra slot
    r = build_report(turns, default_meta())
    assert r["summary"]["accuracy"]["command_acceptance"]["accepted"] == 1  # turn 0: greet


def test_acceptance_rule_is_one_rule_case_folded_and_exact_on_slots() -> None:
    """The one acceptance rule (the report, run_corpus, slow_cpu and nlu_bench count by it):
    intent and slot names/values compared stripped and case-folded, and a missing, extra
    or different slot rejects."""
    ref = "coffeeDrink=latte;size=large"
    assert accepted("orderDrink", {"coffeeDrink": "Latte", "size": "Large"}, "orderDrink", ref)
    assert accepted(" ORDERDRINK", "size=large; coffeedrink=latte", "orderDrink", ref)
    assert not accepted("cancelOrder", "coffeeDrink=latte;size=large", "orderDrink", ref)
    assert not accepted("orderDrink", {"coffeeDrink": "latte"}, "orderDrink", ref)  # missing
    assert not accepted("orderDrink", ref + ";milk=oat", "orderDrink", ref)  # extra
    assert not accepted("orderDrink", "coffeeDrink=mocha;size=large", "orderDrink", ref)
    assert not accepted(None, {}, "orderDrink", "")  # nothing understood is not the order
    assert same_intent(None, "") and not same_intent("orderDrink", "orderDrinks")
    # The report counts by it: a case-only difference is accepted, a wrong slot is listed.
    turns = synthetic_turns(3, seed=2)
    for t in turns:
        t.update(
            ref_intent="orderDrink", ref_slots=ref, slots={"coffeeDrink": "LATTE", "size": "large"}
        )
    turns[0]["intent"], turns[1]["intent"] = "OrderDrink", "orderdrink "
    turns[2]["intent"], turns[2]["slots"] = "orderDrink", {"coffeeDrink": "latte"}
    cmd = build_report(turns, default_meta())["summary"]["accuracy"]["command_acceptance"]
    assert (cmd["accepted"], cmd["intent_correct"]) == (2, 3)
    assert [r["index"] for r in cmd["rejected"]] == [2]


# -- HTML ------------------------------------------------------------------------------
def test_html_is_self_contained_with_charts(tmp_path: Path) -> None:
    r = build_report(synthetic_turns(30, seed=6, failed=1), default_meta("bench"))
    p = write_html(r, tmp_path / "r.html")
    text = p.read_text()
    assert not re.search(r"https?://", text), "report must not reference any URL"
    assert not re.search(r"<(script|link|img|iframe)\b", text)
    assert 'class="chart waterfall"' in text and 'class="chart cdf"' in text
    assert 'class="chart hist"' in text
    # one waterfall row per successful turn: 30 turns x 6 stages of rects
    wf = text.split('class="chart waterfall"')[1].split("</svg>")[0]
    assert wf.count("<rect") == 30 * 6
    assert "broken_0.wav" in text and "over" in text  # failed turn, tts over budget


def test_html_handles_empty_report() -> None:
    r = build_report(synthetic_turns(0, failed=1), default_meta())
    assert "No successful turns" in render_html(r)


# -- store -----------------------------------------------------------------------------
def test_store_round_trip_wal(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    r = build_report(synthetic_turns(12, seed=7, failed=1), default_meta("bench"))
    spans = [
        {
            "traceId": "ab" * 16,
            "spanId": "cd" * 8,
            "parentSpanId": "",
            "name": "client.turn",
            "startTimeUnixNano": "1",
            "endTimeUnixNano": "2",
        }
    ]
    rid = save_run(r, db, spans=spans)
    rid2 = save_run(r, db)
    assert rid2 == rid + 1
    assert journal_mode(db) == "wal"
    back = load_run(rid, db)
    assert back["summary"] == r["summary"] and back["turns"] == r["turns"]
    assert back["meta"]["run_id"] == rid
    assert load_run("latest", db)["meta"]["run_id"] == rid2
    rows = list_runs(db)
    assert [x["id"] for x in rows] == [rid2, rid]
    assert rows[0]["n_turns"] == 13 and rows[0]["n_failed"] == 1
    # A second reader while a connection is open (WAL: readers do not block).
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("SELECT count(*) FROM spans").fetchone()[0] == 1
    assert load_run(rid, db)["summary"]["n_turns"] == 13
    con.close()


def test_store_default_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALFSEC_DB", str(tmp_path / "x" / "env.db"))
    rid = save_run(build_report(synthetic_turns(3), default_meta()))
    assert (tmp_path / "x" / "env.db").exists() and load_run(rid)["summary"]["n_turns"] == 3


# -- compare ---------------------------------------------------------------------------
def _report(shift: float, seed: int, n: int = 120) -> dict:
    return build_report(synthetic_turns(n, seed=seed, logic_shift_ms=shift), default_meta())


def test_compare_verdicts_on_known_shift() -> None:
    base = _report(0.0, seed=10)
    slower = compare(base, _report(80.0, seed=11))
    assert slower.verdict == "slower" and slower.regression
    d = {x.metric: x for x in slower.v2v}
    assert 50 < d["v2v.p50"].diff_ms < 110 and d["v2v.p50"].ci_low > 0
    logic = next(x for x in slower.stages if x.metric == "stage.logic.p95")
    assert logic.verdict == "slower"
    faster = compare(_report(80.0, seed=12), _report(0.0, seed=13))
    assert faster.verdict == "faster" and not faster.regression
    same = compare(base, _report(0.0, seed=14))
    assert same.verdict == "no significant change" and not same.regression
    # Significant but under the threshold: not a regression.
    assert not compare(base, _report(80.0, seed=11), threshold_ms=500).regression


def test_cli_compare_runs_report_exit_codes(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    a = save_run(_report(0.0, seed=20), db)
    b = save_run(_report(90.0, seed=21), db)
    c = save_run(_report(0.0, seed=22), db)
    runner = CliRunner()
    res = runner.invoke(app, ["compare", str(a), str(b), "--db", str(db)])
    assert res.exit_code == 1, res.output
    assert "REGRESSION" in res.output
    res = runner.invoke(app, ["compare", str(a), str(c), "--db", str(db)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compare", str(a), str(b), "--db", str(db), "--threshold-ms", "1000"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compare", str(b), str(a), "--db", str(db)])
    assert res.exit_code == 0 and "faster" in res.output
    res = runner.invoke(app, ["runs", "--db", str(db)])
    assert res.exit_code == 0 and str(c) in res.output
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    res = runner.invoke(
        app, ["report", "latest", "--db", str(db), "--html", str(html), "--json", str(js)]
    )
    assert res.exit_code == 0, res.output
    assert html.exists() and json.loads(js.read_text())["schema"] == SCHEMA
    res = runner.invoke(app, ["report", str(a), "--db", str(db), "--fail-over-budget"])
    assert res.exit_code == 1  # synthetic tts is over its 50 ms line
    res = runner.invoke(app, ["report", "99", "--db", str(db)])
    assert res.exit_code == 2


# -- import ----------------------------------------------------------------------------
def test_import_pipecat_fixture() -> None:
    recs, meta = import_trace(DATA / "pipecat_trace.otlp.json")
    assert meta["framework"] == "pipecat"
    assert [r["ok"] for r in recs] == [True, True, False]
    r0 = recs[0]
    assert r0["stages"] == {"stt_ms": 180.0, "logic_ms": 430.0, "tts_ms": 270.0}
    assert r0["v2v_ms"] == pytest.approx(880.0)
    assert r0["transcript"] == "I'd like a large latte" and r0["dominant_stage"] == "logic"
    assert recs[2]["interruptions"] == 1 and "tts" in recs[2]["error"]
    rep = build_report(recs, {"command": "import", **meta})
    assert rep["summary"]["n_failed"] == 1
    assert "endpointing" not in rep["summary"]["stages"]
    assert rep["budget"]["lines"]["network"]["observed_ms"] is None  # not in the trace
    assert {v.line for v in check_budget(rep, DEFAULT_BUDGET)} >= {"logic", "tts", "v2v"}


def test_import_livekit_fixture() -> None:
    recs, meta = import_trace(DATA / "livekit_trace.otlp.json")
    assert meta["framework"] == "livekit" and len(recs) == 2
    assert recs[0]["stages"] == {
        "endpointing_ms": 500.0,
        "stt_ms": 30.0,
        "logic_ms": 350.0,
        "tts_ms": 180.0,
    }
    # Turn 2 has no TTFT attribute: first token falls back to tts_node start.
    assert recs[1]["stages"]["logic_ms"] == pytest.approx(420.0)
    assert recs[1]["v2v_ms"] == pytest.approx(640 + 25 + 420 + 210)
    assert recs[0]["transcript"] == "what time do you close"


def test_cli_import_trace(tmp_path: Path) -> None:
    runner = CliRunner()
    html = tmp_path / "lk.html"
    res = runner.invoke(
        app, ["import-trace", str(DATA / "livekit_trace.otlp.json"), "--html", str(html)]
    )
    assert res.exit_code == 0, res.output
    assert "endpointing" in res.output and html.exists()
    res = runner.invoke(
        app,
        ["import-trace", str(DATA / "pipecat_trace.otlp.json"), "--fail-over-budget"],
    )
    assert res.exit_code == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceSpans": []}')
    assert runner.invoke(app, ["import-trace", str(bad)]).exit_code == 2
