"""The measurement rules: one definition each, pinned, and used by every client.

If one of these fails, a figure the project reports changed meaning: the audible
threshold, the voice-to-voice rule, or the percentile rule.  Change the rule on purpose
(and every figure with it), never by accident.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from halfsec.audio.timeline import PlaybackTimeline
from halfsec.measure.audible import AUDIBLE_DBFS, first_audible_sample, is_audible
from halfsec.measure.percentile import percentile, percentile_rows
from halfsec.measure.stages import STAGES
from halfsec.measure.v2v import premature_replies, reply_sample, rule_constants, voice_to_voice
from halfsec.runtime.file_run import FileRun, TurnRecord
from halfsec.server.page import CONSTANTS_PATH, STATIC_DIR, add_routes, page_constants
from halfsec.trace.names import page_span_names

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "halfsec"


# -- the audible threshold -------------------------------------------------------------
def test_audible_threshold_is_minus_45_dbfs_on_the_sample_peak() -> None:
    assert AUDIBLE_DBFS == -45.0
    # -45 dBFS = 184.2 in int16 units: 184 is silent, 185 is heard, either sign.
    assert first_audible_sample(np.array([0, 184, -184, 185], np.int16)) == 3
    assert first_audible_sample(np.array([0, 184, -185, 0], np.int16)) == 2
    assert first_audible_sample(np.full(1000, 184, np.int16)) is None
    # A peak criterion: one loud sample in silence is the onset (an RMS window would not be).
    spike = np.zeros(4800, np.int16)
    spike[4000] = 200
    assert first_audible_sample(spike) == 4000
    assert is_audible(spike) and not is_audible(spike[:4000])


def test_first_audible_sample_searches_from_start() -> None:
    pcm = np.zeros(100, np.int16)
    pcm[[10, 60]] = 1000
    assert first_audible_sample(pcm, start=11) == 60
    assert first_audible_sample(pcm, start=61) is None
    assert first_audible_sample(pcm, dbfs=-20.0) is None  # 1000 = -30.3 dBFS


# -- the voice-to-voice rule -----------------------------------------------------------
def _reply(rate: int, seconds: float, at_s: list[tuple[float, float, int]]) -> np.ndarray:
    """Played audio at ``rate``: for each (start s, length s, amplitude) a constant block."""
    out = np.zeros(int(seconds * rate), np.int16)
    for start, length, amp in at_s:
        out[int(start * rate) : int((start + length) * rate)] = amp
    return out


@pytest.mark.parametrize("rate", [16_000, 24_000, 48_000])
def test_v2v_is_first_audible_reply_sample_minus_reference_end(rate: int) -> None:
    # End of speech at 1.000 s of a 16 kHz input.  A premature reply at 0.5 s and a quiet
    # hiss (-51 dBFS) from 1.0 s do not count; speech starting at 1.3 s stops the clock.
    played = _reply(rate, 3.0, [(0.5, 0.2, 8000), (1.0, 0.3, 90), (1.3, 0.5, 4000)])
    v = voice_to_voice(played, rate, ref_end_sample=16_000)
    assert v is not None
    assert v.ref_end_ms == 1000.0
    assert v.first_audible_sample == int(1.3 * rate)
    assert v.v2v_ms == pytest.approx(300.0)
    # Nothing audible after the end of speech: no measurement.
    assert voice_to_voice(played[: int(1.3 * rate)], rate, 16_000) is None


def test_v2v_search_starts_at_the_reply_sample_nearest_the_end_of_speech() -> None:
    assert reply_sample(16_000, 48_000) == 48_000
    assert reply_sample(3, 24_000) == 4  # 4.5 rounds to even
    assert reply_sample(5, 24_000) == 8  # 7.5 rounds to even
    # A reply already sounding at the end of speech is heard at once (v2v 0, not negative).
    played = _reply(16_000, 2.0, [(0.8, 0.5, 4000)])
    v = voice_to_voice(played, 16_000, 16_000)
    assert v is not None and v.v2v_ms == 0.0


def test_file_run_measures_with_the_one_rule() -> None:
    """``halfsec run``'s summary is the rule's figure, and its threshold can be overridden."""
    rate = 24_000
    timeline = PlaybackTimeline(rate, t0_ns=0)
    quiet = np.full(int(0.1 * rate), 1000, np.int16)  # -30 dBFS
    loud = np.full(int(0.4 * rate), 8000, np.int16)
    timeline.place(quiet, t_ns=1_250_000_000, turn_id=1)
    timeline.place(loud, t_ns=1_350_000_000, turn_id=1)
    turn = TurnRecord(
        1,
        eot_ns=1_200_000_000,
        first_audio_ns=1_250_000_000,
        first_audio_sample=int(1.25 * rate),
    )
    run = FileRun(np.zeros(32_000, np.int16), 0, timeline, {1: turn}, (4000, 16_000), [], [])
    expected = voice_to_voice(timeline.played, rate, 16_000)
    assert expected is not None and expected.v2v_ms == pytest.approx(250.0)
    out = run.summary()
    assert out["v2v_ms"] == round(expected.v2v_ms, 1) == 250.0
    assert out["first_audible_ms"] == 1250.0 and out["last_voiced_ms"] == 1000.0
    assert out["premature_replies"] == 0
    # The config's audio.audible_dbfs still overrides the level: -20 dBFS skips the quiet part.
    assert run.summary(audible_dbfs=-20.0)["v2v_ms"] == 350.0


# -- percentiles ------------------------------------------------------------------------
def test_percentile_is_linear_between_closest_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([10.0, 20.0, 30.0, 40.0, 50.0], 90) == pytest.approx(46.0)
    assert percentile([400.0, 100.0, 300.0, 200.0], 25) == pytest.approx(175.0)  # unsorted in
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    assert percentile(np.array([1.0, 3.0]), 50) == 2.0


def test_percentile_rows_is_the_same_rule() -> None:
    rows = np.random.default_rng(0).normal(400, 50, size=(20, 33))
    got = percentile_rows(rows, 95, axis=1)
    assert got.shape == (20,)
    for row, g in zip(rows, got, strict=True):
        assert g == percentile(row, 95)
    lo, hi = percentile_rows(rows[0], [2.5, 97.5])
    assert (lo, hi) == (percentile(rows[0], 2.5), percentile(rows[0], 97.5))


def test_no_second_percentile_or_threshold_definition_in_the_source() -> None:
    """numpy's percentile/quantile, a hand-written percentile or a -45 dB literal anywhere
    but their one home (in the package or the benchmarks) means a second rule crept back."""
    homes = {SRC / "measure" / "percentile.py", SRC / "measure" / "audible.py"}
    pattern = re.compile(
        r"np\.(percentile|quantile|nanpercentile)\(|def _?percentile\(|-45(\.0)?\b(?!\s*ms)"
    )
    bad = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
        for p in sorted(
            [*SRC.rglob("*.py"), *SRC.rglob("*.js"), *(ROOT / "benchmarks").glob("*.py")]
        )
        if p not in homes
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not bad, (
        "use halfsec.measure.percentile (percentile / percentile_rows) and "
        "halfsec.measure.audible.AUDIBLE_DBFS instead of:\n" + "\n".join(bad)
    )


# -- the constants the browser page gets -------------------------------------------------
async def test_constants_route_serves_the_python_constants() -> None:
    app = web.Application()
    add_routes(app)
    async with TestClient(TestServer(app)) as client:
        r = await client.get(CONSTANTS_PATH)
        assert r.status == 200
        assert "javascript" in r.content_type
        body = await r.text()
    m = re.search(r"window\.HALFSEC_CONSTANTS = Object\.freeze\((\{.*\})\);", body, re.S)
    assert m, body
    served = json.loads(m.group(1))
    assert served == page_constants()
    assert served["audible_dbfs"] == AUDIBLE_DBFS
    assert served["stages"] == list(STAGES)
    assert served["span_names"] == page_span_names()
    assert rule_constants().items() <= served.items()


def test_page_loads_the_constants_before_its_script_and_uses_them() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    assert html.index(f'src="{CONSTANTS_PATH}"') < html.index('src="/static/app.js"')
    # The page's script is app.js and the modules it imports (static/*.js).
    js = "\n".join(f.read_text() for f in sorted(STATIC_DIR.glob("*.js")))
    assert re.search(r"AUDIBLE_DBFS\s*=\s*HALFSEC_CONSTANTS\.audible_dbfs", js)
    # The page's waterfall telescopes over the same stages, in the same order.
    keys = re.findall(r'^\s*\["(\w+_ms)",', js, re.M)
    assert keys == list(STAGES)


def test_a_reply_counts_as_premature_only_when_heard_before_the_end_of_speech() -> None:
    """One rule for premature replies, the v2v rule's line and audibility: a reply whose
    silent lead began before the end of speech but which sounded only after it is not
    premature (its v2v is positive); one that sounded before the end is; and the file
    runner counts with that rule."""
    rate = 24_000
    timeline = PlaybackTimeline(rate, t0_ns=0)
    silent = np.zeros(int(0.2 * rate), np.int16)
    loud = np.full(int(0.3 * rate), 8000, np.int16)
    # Turn 1: silence from 0.9 s, sound from 1.1 s; the speech ends at 1.0 s.
    timeline.place(silent, t_ns=900_000_000, turn_id=1)
    timeline.place(loud, t_ns=1_100_000_000, turn_id=1)
    played = timeline.played
    end = 16_000  # 1.0 s at 16 kHz
    assert premature_replies(played, rate, [int(0.9 * rate)], end) == 0
    v = voice_to_voice(played, rate, end)
    assert v is not None and v.v2v_ms == pytest.approx(100.0)
    # The same reply one 150 ms earlier sounds at 0.95 s: heard before the end.
    early = PlaybackTimeline(rate, t0_ns=0)
    early.place(silent, t_ns=750_000_000, turn_id=1)
    early.place(loud, t_ns=950_000_000, turn_id=1)
    assert premature_replies(early.played, rate, [int(0.75 * rate)], end) == 1
    # A turn starting after the line is never premature, whatever it holds.
    assert premature_replies(played, rate, [int(1.1 * rate)], end) == 0

    def summary(tl: PlaybackTimeline, first_s: float) -> dict[str, object]:
        turn = TurnRecord(
            1,
            eot_ns=int(first_s * 1e9) - 50_000_000,
            first_audio_ns=int(first_s * 1e9),
            first_audio_sample=int(first_s * rate),
        )
        run = FileRun(np.zeros(32_000, np.int16), 0, tl, {1: turn}, (4000, end), [], [])
        return run.summary()

    assert summary(timeline, 0.9)["premature_replies"] == 0
    assert summary(early, 0.75)["premature_replies"] == 1
