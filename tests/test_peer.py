"""Pipecat 1.14 side by side: both pipelines answer, and the ratio is computed.

Needs the optional ``peer`` extra, which ``scripts/setup.sh`` (and so CI) installs.
Without it this module fails at import, on purpose: a skipped comparison must not read
as a passing one.
No speed assertion: the comparison's numbers live in ``docs/peer-comparison.md``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from halfsec.audio.io import load_audio  # noqa: E402
from halfsec.audio.timeline import PlaybackTimeline  # noqa: E402
from halfsec.lab.peer.pipecat_harness import (  # noqa: E402
    Comparison,
    PeerResult,
    client_v2v,
    compare,
)
from halfsec.measure.end_of_speech import voiced_bounds  # noqa: E402
from halfsec.measure.percentile import percentile  # noqa: E402
from halfsec.measure.v2v import voice_to_voice  # noqa: E402

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "speech"
FILES = ("audio/vctk_p225_001.flac", "audio/vctk_p226_001.flac")  # ~2 s each


@pytest.mark.slow
def test_both_answer_and_the_ratio_is_computed() -> None:
    import pipecat

    assert pipecat.__version__.startswith("1.14"), pipecat.__version__
    result = asyncio.run(compare([SPEECH / f for f in FILES]))
    assert len(result.halfsec) == len(result.pipecat) == 2
    for r in result.halfsec + result.pipecat:
        assert r.spoke, r
        assert r.transcript and r.reply_text, r
        assert 0 < (r.v2v_ms or 0) < 10_000, r
    s = result.summary()
    assert s["halfsec"]["ok"] == s["pipecat"]["ok"] == 2
    ratio = s["ratio_p50_halfsec_over_pipecat"]
    assert ratio is not None and ratio > 0
    assert ratio == pytest.approx(s["halfsec"]["p50_ms"] / s["pipecat"]["p50_ms"], abs=1e-3)


def test_both_frameworks_are_measured_by_the_one_v2v_rule() -> None:
    """``client_v2v`` is ``halfsec.measure.v2v`` on the real end of speech, not a copy."""
    pcm = load_audio(SPEECH / FILES[0])
    bounds = voiced_bounds(pcm)
    assert bounds is not None
    rate = 24_000
    timeline = PlaybackTimeline(rate, t0_ns=0)
    reply_at_ns = int(bounds[1] * 1e9 / 16_000) + 320_000_000
    timeline.place(np.full(rate // 5, 5000, np.int16), reply_at_ns, turn_id=1)
    expected = voice_to_voice(timeline.played, rate, bounds[1])
    assert expected is not None
    assert client_v2v(pcm, timeline) == round(expected.v2v_ms, 1)
    assert client_v2v(pcm, timeline) == pytest.approx(320.0, abs=0.1)


def test_comparison_summary_uses_the_percentile_rule() -> None:
    h = [PeerResult("halfsec", str(i), v) for i, v in enumerate([400.0, 500.0, 450.0, None])]
    p = [PeerResult("pipecat", str(i), v) for i, v in enumerate([800.0, 900.0, 1000.0, 700.0])]
    h[0].points_ms["end_of_turn"] = 210.0
    h[1].points_ms["end_of_turn"] = 230.0
    s = Comparison(h, p).summary()
    assert s["n"] == 4 and s["halfsec"]["ok"] == 3 and s["pipecat"]["ok"] == 4
    assert s["halfsec"]["p50_ms"] == 450.0 and s["pipecat"]["p50_ms"] == 850.0
    assert s["halfsec"]["p95_ms"] == percentile([400.0, 500.0, 450.0], 95) == 495.0
    assert s["pipecat"]["p95_ms"] == pytest.approx(985.0)
    assert s["points_p50_ms"]["halfsec"]["end_of_turn"] == 220.0
    assert s["points_p50_ms"]["pipecat"]["end_of_turn"] is None
    assert s["ratio_p50_halfsec_over_pipecat"] == round(450.0 / 850.0, 3)
