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

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from halfsec.lab.peer.pipecat_harness import compare  # noqa: E402

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
