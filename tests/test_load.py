"""The load lab: many callers against a real ``halfsec serve``, the knee, refusals, soak rules.

The real runs are short (a 2-step ramp of 1 and 2 callers with 2 turns each, and 2
callers against a server that takes one) and assert behaviour, never speed: every
answered turn has a client-measured v2v, the report has its documented structure, and a
busy refusal is counted as refused, not failed.  The knee rule and the soak's flatness
rule are checked on synthetic figures, where the right answer is known."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from halfsec.audio.io import load_audio, write_wav
from halfsec.lab.bench.corpus import (
    CorpusError,
    CorpusItem,
    filter_domain,
    load_manifest,
    parse_slots,
)
from halfsec.lab.bench.options import BenchOptions
from halfsec.lab.bench.records import recording_bounds
from halfsec.lab.load.caller import is_refusal, plan_callers
from halfsec.lab.load.options import LoadError, LoadOptions, Slo, parse_ramp
from halfsec.lab.load.report import TURN_KEYS
from halfsec.lab.load.run import load_server, run_ramp, run_step, step_entry
from halfsec.lab.load.sampler import (
    ResourceSample,
    ResourceSampler,
    read_task_gauge,
    summarize_samples,
)
from halfsec.lab.load.slo import knee, step_stats, verdict
from halfsec.lab.load.soak import flatness, latency_drift
from halfsec.measure.end_of_speech import voiced_bounds


# -- units --------------------------------------------------------------------------------
def test_ramp_specs() -> None:
    assert parse_ramp("2:8:2") == [2, 4, 6, 8]
    assert parse_ramp("1:3") == [1, 2, 3]
    assert parse_ramp("1,2,4") == [1, 2, 4]
    assert parse_ramp("auto")[0] == 1
    for bad in ("4:2", "a:b", "1,1", "0:3", "1:2:0", "1:2:3:4"):
        with pytest.raises(LoadError):
            parse_ramp(bad)
    with pytest.raises(LoadError, match="think"):
        LoadOptions(think_min_s=2.0, think_max_s=1.0)


def _turn(v2v: float | None, refused: bool = False) -> dict[str, Any]:
    return {"ok": v2v is not None, "v2v_ms": v2v, "refused": refused, "error": None}


def _step(n: int, v2vs: list[float], failed: int = 0, refused: int = 0) -> dict[str, Any]:
    turns = [_turn(v) for v in v2vs] + [_turn(None) for _ in range(failed)]
    turns += [_turn(None, refused=True) for _ in range(refused)]
    stats = step_stats(n, turns)
    met, why = verdict(stats, Slo(p95_ms=500.0))
    return {**stats, "met_slo": met, "why": why}


def test_knee_is_the_last_step_before_the_first_break() -> None:
    ok = [300.0] * 19 + [450.0]
    slow = [300.0] * 18 + [700.0, 800.0]  # p95 interpolates to ~705 ms
    steps = [_step(1, ok), _step(2, ok), _step(4, ok), _step(6, slow), _step(8, ok)]
    assert [s["met_slo"] for s in steps] == [True, True, True, False, True]
    assert "p95" in steps[3]["why"]
    assert knee(steps) == 4  # step 8 met it after a break: luck, not capacity
    assert knee([_step(1, ok), _step(2, ok, failed=1)]) == 1
    refused = _step(2, ok, refused=1)
    assert refused["failed"] == 0 and refused["refused"] == 1 and not refused["met_slo"]
    assert knee([_step(1, ok), refused]) == 1
    assert verdict(refused, Slo(refusals_break=False))[0]
    assert knee([_step(1, slow), _step(2, ok)]) is None
    assert knee([_step(1, [])]) is None  # no answered turn is no capacity
    # A reply that starts at the end of speech (0 ms) is an answer, not a failure.
    assert step_stats(1, [_turn(0.0)])["failed"] == 0
    assert knee([_step(4, ok), _step(1, ok), _step(2, slow)]) == 1  # ramp order by N


def test_refusals_are_told_from_failures() -> None:
    assert is_refusal("server refused the WebSocket (503: Service Unavailable)")
    assert is_refusal('server refused the offer (503: {"error": "busy"})')
    assert not is_refusal("server refused the WebSocket (401: Unauthorized)")
    assert not is_refusal("server never answered: no speech detected")
    assert not is_refusal(None)


def test_callers_are_seeded_and_staggered(tmp_path: Path) -> None:
    items = [CorpusItem(tmp_path / f"{i}.wav") for i in range(5)]
    opts = LoadOptions(turns=4, seed=7, stagger_s=0.5)
    a, b = plan_callers(3, items, opts, 0), plan_callers(3, items, opts, 0)
    assert a == b
    assert [p.start_delay_s for p in a] == [0.0, 0.5, 1.0]
    assert all(1.0 <= t <= 2.0 for p in a for t in p.think_s)
    assert (
        len({tuple(i.path for i in p.items) for p in a}) > 1
    )  # callers do not say the same thing in lockstep


def _samples(values: list[float], key: str) -> list[ResourceSample]:
    out = []
    for i, v in enumerate(values):
        fields: dict[str, Any] = {
            "t_s": float(i * 10),
            "cpu_pct": 50.0,
            "machine_cpu_pct": 60.0,
            "rss_mb": 300.0,
            "fds": 40,
            "threads": 30,
            "processes": 1,
            "asyncio_tasks": None,
        }
        fields[key] = v
        out.append(ResourceSample(**fields))
    return out


def test_end_of_speech_is_computed_once_per_recording_and_never_changes(
    tmp_path: Path, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    pcm = load_audio(speech_dir / rows[0]["file"])
    item = CorpusItem(speech_dir / rows[0]["file"])
    first = recording_bounds(item, pcm)
    assert first == voiced_bounds(pcm) and first is not None
    assert recording_bounds(item, pcm.copy()) == first  # from the cache, the same figure
    cut = pcm[: first[1] // 2]  # same path, other samples: measured afresh
    assert recording_bounds(item, cut) == voiced_bounds(cut) != first


def test_soak_flatness_and_latency_drift() -> None:
    # Warm-up growth in the first 20 %, then flat with session noise: flat.
    warm = [200.0, 260.0, 300.0] + [300.0 + (4.0 if i % 2 else -4.0) for i in range(57)]
    assert flatness(_samples(warm, "rss_mb"), "rss_mb")["flat"] is True
    # One descriptor per sample (a leak per turn): not flat.
    leak = [40.0 + i for i in range(60)]
    f = flatness(_samples(leak, "fds"), "fds")
    assert f["flat"] is False and f["drift"] > f["limit"]
    assert flatness(_samples([1.0, 2.0], "fds"), "fds")["flat"] is None
    turns = [{"ok": True, "v2v_ms": 300.0 + (i % 5), "t_start_s": float(i)} for i in range(180)]
    assert latency_drift(turns, 180.0)["within_10pct"] is True
    turns += [{"ok": True, "v2v_ms": 600.0, "t_start_s": 175.0 + i / 10} for i in range(20)]
    assert latency_drift(turns, 180.0)["within_10pct"] is False
    assert read_task_gauge("# HELP x\nhalfsec_asyncio_tasks 17\n") == 17
    assert read_task_gauge("halfsec_turns_total 3\n") is None


def test_bad_load_options_fail_before_any_server_starts(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from halfsec.cli.main import app

    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "manifest.tsv").write_text("file\na.wav\n")
    base = ["bench", "--corpus", str(tmp_path / "manifest.tsv"), "--no-store"]
    for extra, words in (
        (["--sessions", "2", "--ramp", "1:2"], "not both"),
        (["--ramp", "3:1"], "--ramp"),
        (["--sessions", "2", "--think", "2:1"], "think"),
        (["--sessions", "2", "--transport", "twilio"], "websocket or webrtc"),
    ):
        r = CliRunner().invoke(app, base + extra)
        assert r.exit_code == 2, (extra, r.output)
        assert words in r.output, (extra, r.output)


def test_domain_picks_coffee_rows_of_a_manifest_without_a_domain_column(
    speech_dir: Path, tmp_path: Path
) -> None:
    """``--domain coffee`` on ../shared/speech (no domain column) keeps the coffee orders
    only, by the coffee domain's intents; with nothing to go by it says what to add."""
    from typer.testing import CliRunner

    from halfsec.cli.bench import domain_intents
    from halfsec.cli.main import app

    corpus = load_manifest(speech_dir / "manifest.tsv")
    assert all(it.domain is None for it in corpus.items)
    coffee = filter_domain(corpus.items, "coffee", domain_intents("coffee"))
    orders = [it for it in corpus.items if it.intent == "orderDrink"]
    assert len(coffee) == len(orders) == 150 < len(corpus.items)
    assert [it.path for it in coffee] == [it.path for it in orders]
    assert {it.domain for it in coffee} == {"coffee"}  # the server started runs coffee
    assert filter_domain(corpus.items, None) == corpus.items
    with pytest.raises(CorpusError, match="domain' column"):
        filter_domain(corpus.items, "coffee")  # intents unknown: no guessing
    with pytest.raises(CorpusError, match="addToCart.*orderDrink"):
        filter_domain(corpus.items, "retail", domain_intents("retail"))

    # A domain label wins over the intent; a row with neither label is no domain's.
    for name in ("a", "b", "c", "d"):
        (tmp_path / f"{name}.wav").write_bytes(b"")
    (tmp_path / "m.tsv").write_text(
        "file\tintent\tdomain\na.wav\torderDrink\tcoffee\nb.wav\torderDrink\tretail\n"
        "c.wav\torderDrink\t\nd.wav\t\t\n"
    )
    mixed = load_manifest(tmp_path / "m.tsv").items
    picked = filter_domain(mixed, "coffee", {"orderDrink"})
    assert [it.stem for it in picked] == ["a", "c"] and {it.domain for it in picked} == {"coffee"}
    with pytest.raises(CorpusError, match="coffee, retail"):
        filter_domain(mixed, "kiosk", {"buyTicket"})

    r = CliRunner().invoke(
        app,
        ["bench", "--corpus", str(speech_dir / "manifest.tsv"), "--domain", "retail"]
        + ["--sessions", "1", "--no-store"],
    )
    assert r.exit_code == 2 and "orderDrink" in r.output and "domain" in r.output, r.output


# -- real runs ----------------------------------------------------------------------------
def _manifest(rows: list[dict[str, str]], speech_dir: Path, tmp: Path, n: int) -> Path:
    """The n shortest coffee orders, cut to 0.3 s before / 0.8 s after the speech."""
    coffee = sorted(
        (r for r in rows if r["intent"] == "orderDrink"), key=lambda r: float(r["duration_s"])
    )[:n]
    lines = ["file\tintent\tslots"]
    for r in coffee:
        pcm = load_audio(speech_dir / r["file"])
        b = voiced_bounds(pcm)
        assert b is not None
        out = tmp / (Path(r["file"]).stem + ".wav")
        write_wav(out, pcm[max(0, b[0] - 4800) : b[1] + 12800], 16000)
        lines.append(f"{out.name}\t{r['intent']}\t{r['slots']}")
    (tmp / "manifest.tsv").write_text("\n".join(lines) + "\n")
    return tmp / "manifest.tsv"


async def _cli_ramp(manifest: Path, out: Path, html: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "halfsec.cli.main", "bench", "--corpus", str(manifest)],
        *["--ramp", "1:2", "--turns", "2", "--think", "0.2:0.4", "--slo-p95-ms", "100000"],
        *["--json", str(out), "--html", str(html), "--no-store"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=240)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return int(proc.returncode or 0), err.decode(errors="replace")


async def test_a_ramp_and_refusals_against_a_real_server(
    tmp_path: Path, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    manifest = _manifest(rows, speech_dir, tmp_path, 3)
    out, html = tmp_path / "load.json", tmp_path / "load.html"
    items = [
        CorpusItem(tmp_path / line.split("\t")[0], intent="orderDrink", slots=parse_slots(""))
        for line in manifest.read_text().splitlines()[1:]
    ]
    # Two callers, a server that takes one: the second is refused while the first talks
    # (its whole call: one record, not one per turn it would have said).
    busy = run_ramp(
        items,
        [2],
        LoadOptions(turns=2, think_min_s=0.1, think_max_s=0.1, stagger_s=0.5),
        BenchOptions(),
        Slo(),
        max_sessions=1,
    )
    (rc, err), refused = await asyncio.gather(_cli_ramp(manifest, out, html), busy)

    assert rc == 0, err[-3000:]
    report = json.loads(out.read_text())
    assert report["schema"] == "halfsec.load/1"
    assert report["callers"]["session_per_turn"] is False
    assert [s["sessions"] for s in report["steps"]] == [1, 2]
    assert report["knee"] == 2 and report["stop_reason"] == "ramp done", report["steps"]
    for s in report["steps"]:
        assert s["turns"] == 2 * s["sessions"] and s["ok"] == s["turns"], s
        assert s["failed"] == 0 and s["refused"] == 0 and s["met_slo"]
        assert s["v2v_ms"]["p50"] <= s["v2v_ms"]["p95"] <= s["v2v_ms"]["p99"]
        srv = s["server"]
        assert srv["samples"] >= 1 and srv["rss_mb_max"] > 50 and srv["threads_max"] > 1
        assert 0 <= srv["cpu_pct_mean"] <= 100
    turns = report["turns"]
    assert len(turns) == 6 and all(set(TURN_KEYS) == set(t) for t in turns)
    for t in turns:  # every turn answered, with the client's v2v
        assert t["ok"] and t["v2v_ms"] is not None and t["v2v_ms"] >= 0, t
    two = [t for t in turns if t["step_sessions"] == 2]
    assert {t["caller"] for t in two} == {0, 1}
    assert max(t["concurrent"] for t in two) == 2  # both callers were in a turn at once
    # A caller is one session for its whole call: one session.started per caller.
    for n in (1, 2):
        calls = {
            c: {t["session_id"] for t in turns if t["step_sessions"] == n and t["caller"] == c}
            for c in range(n)
        }
        assert all(len(ids) == 1 and "" not in ids for ids in calls.values()), calls
        assert len(set().union(*calls.values())) == n, calls
    page = html.read_text()
    assert "<svg" in page and "knee" in page and "SLO p95" in page
    assert "knee: 2 session(s)" in err

    (step,) = refused.steps
    assert step["refused"] == 1 and step["failed"] == 0 and step["ok"] == 2, step
    assert len({t["session_id"] for t in refused.turns if t["ok"]}) == 1
    assert not step["met_slo"] and "refused" in step["why"]
    assert refused.knee is None
    no = next(t for t in refused.turns if t["refused"])
    assert no["v2v_ms"] is None and "503" in no["error"]


async def test_webrtc_callers_hold_one_peer_connection_for_their_call(
    tmp_path: Path, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    """Three WebRTC callers x 2 turns (``lab.clients.rtc_call``): every turn answered
    with the client's v2v, one session per caller for its whole call.  Beside the
    sampler on the server's pid, one with no pid reads the same process over /metrics
    (what ``--server URL`` gets): same process, so close figures."""
    manifest = _manifest(rows, speech_dir, tmp_path, 3)
    items = [
        CorpusItem(tmp_path / line.split("\t")[0], intent="orderDrink")
        for line in manifest.read_text().splitlines()[1:]
    ]
    bench = BenchOptions(transport="webrtc")
    opts = LoadOptions(turns=2, think_min_s=0.2, think_max_s=0.4, stagger_s=0.3)
    async with load_server(bench, items, 3) as server:
        assert server.pid is not None and server.metrics_url is not None
        local = ResourceSampler(server.pid, server.metrics_url, 0.5)
        remote = ResourceSampler(None, server.metrics_url, 0.5)
        local.start()
        remote.start()
        try:
            run = await asyncio.wait_for(
                run_step(server, items, 3, opts, bench, local), timeout=240
            )
        finally:
            await local.stop()
            far = await remote.stop()
    step = step_entry(run, Slo(p95_ms=100_000.0))
    # The server admits by measured load, loop lag included: on a shared box it may turn
    # a caller away (one refused record, never a failed turn); every caller it took
    # talks to the end of its call.
    bad = [(t["caller"], t["turn"], t["error"]) for t in run.turns if not t["ok"]]
    assert step["failed"] == 0, bad
    refused = {t["caller"] for t in run.turns if t["refused"]}
    assert all(t["turn"] == 0 for t in run.turns if t["refused"]), bad
    admitted = sorted(set(range(3)) - refused)
    assert admitted and step["ok"] == 2 * len(admitted) == step["turns"] - len(refused), bad
    for t in run.turns:
        if t["refused"]:
            continue
        assert t["ok"] and t["v2v_ms"] is not None and 0 <= t["v2v_ms"] < 10_000, t
        # The record's v2v is the rule's figure from its own fields.  (Not "heard after the
        # end" per turn: the shortest orders include 273ecb20, whose reference end counts a
        # trailing sound 343 ms past the words, and a reply may sound over it: v2v 0.)
        assert t["transport"] == "webrtc", t
        assert t["v2v_ms"] == pytest.approx(t["first_audible_ms"] - t["ref_end_ms"], abs=0.05), t
    calls = {c: {t["session_id"] for t in run.turns if t["caller"] == c} for c in admitted}
    assert all(len(ids) == 1 and "" not in ids for ids in calls.values()), calls
    assert len(set().union(*calls.values())) == len(admitted), calls
    # The second turn of a call is measured on its own timeline: its reference end of
    # speech is within its own recording, not after the first turn and the pause.
    seconds = [t for t in run.turns if t["turn"] == 1]
    assert len(seconds) == len(admitted)
    for t in seconds:
        assert t["ref_end_ms"] < load_audio(Path(t["file"])).size / 16.0, t

    near, over_http = summarize_samples(run.samples), summarize_samples(far)
    assert near is not None and over_http is not None
    assert near["source"] == "psutil" and over_http["source"] == "metrics"
    assert over_http["processes"] == 1 and over_http["threads_max"] is None
    assert all(s.source == "metrics" for s in far)
    # A sample whose scrapes all timed out (a lagging loop) has no figure, never a 0.
    assert 2 * sum(s.cpu_pct is not None for s in far) >= len(far) >= 3, far
    assert all(s.rss_mb is None or s.rss_mb > 50 for s in far), far
    assert abs(over_http["rss_mb_max"] - near["rss_mb_max"]) < 0.1 * near["rss_mb_max"]
    assert 0 < over_http["cpu_pct_mean"] <= 100 and 0 < near["cpu_pct_mean"] <= 100
    # Both read the same process's CPU over the same step: within a factor of two.
    assert 0.5 < over_http["cpu_pct_mean"] / near["cpu_pct_mean"] < 2.0, (near, over_http)
    assert over_http["fds_max"] is not None and over_http["fds_max"] > 5
