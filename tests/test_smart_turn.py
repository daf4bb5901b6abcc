"""Smart Turn v3.2 as halfsec runs it: numpy features held to pipecat's extractor, the
same probability as pipecat's analyzer, off the event loop with a deadline, and a
runtime that never imports pipecat (only the test does, to compare)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from halfsec.audio.io import load_audio
from halfsec.turn.mel import SAMPLES, last_seconds, log_mel
from halfsec.turn.smart_turn import SmartTurn


@pytest.fixture(scope="module")
def model() -> SmartTurn:
    return SmartTurn(threads=1)


def _clip(speech_dir: Path, name: str, keep: float = 1.0) -> np.ndarray:
    pcm = load_audio(speech_dir / "audio" / f"{name}.flac")
    return pcm[: int(pcm.size * keep)]


def test_features_match_pipecat(speech_dir: Path) -> None:
    from pipecat.audio.turn.smart_turn._whisper_features import (
        compute_whisper_log_mel_features,
    )

    for name, keep in (("vctk_p225_002", 1.0), ("librispeech_1272-128104-0000", 0.6)):
        x = last_seconds(_clip(speech_dir, name, keep))
        ours = log_mel(x)
        theirs = compute_whisper_log_mel_features(x, do_normalize=True)
        assert ours.shape == theirs.shape == (80, 800)
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
    # Longer than 8 s: the *end* is kept, the start padded with zeros when shorter.
    long = np.arange(SAMPLES + 1000, dtype=np.int16)
    assert last_seconds(long)[-1] == pytest.approx(long[-1] / 32768.0)
    assert last_seconds(long[:100])[: SAMPLES - 100].max() == 0.0
    with pytest.raises(ValueError, match="8 s"):
        log_mel(np.zeros(100, dtype=np.float32))


def test_probability_matches_pipecat_and_hears_a_cut(speech_dir: Path, model: SmartTurn) -> None:
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

    ref = LocalSmartTurnAnalyzerV3(sample_rate=16000)
    full = _clip(speech_dir, "rhasspy_turn_on_living_room_lamp")
    half = _clip(speech_dir, "rhasspy_turn_on_living_room_lamp", 0.5)
    for pcm in (full, half):
        theirs = ref._predict_endpoint(pcm.astype(np.float32) / 32768.0)["probability"]
        assert model.probability(pcm) == pytest.approx(theirs, abs=1e-4)
    # A finished command sounds finished; the same cut mid-phrase does not.
    assert model.probability(full) > 0.7
    assert model.probability(half) < 0.3
    assert model.last_ms > 0


def test_predict_off_the_loop_with_deadline(speech_dir: Path, model: SmartTurn) -> None:
    pcm = _clip(speech_dir, "vctk_p225_001")

    async def go() -> tuple[float | None, float | None]:
        late = await model.predict(pcm, deadline_ms=0.001)
        ok = await model.predict(pcm, deadline_ms=5000)
        return late, ok

    late, ok = asyncio.run(go())
    assert late is None
    assert ok == pytest.approx(model.probability(pcm), abs=1e-6)


def test_runtime_does_not_import_pipecat() -> None:
    code = (
        "import sys, numpy as np\n"
        "from halfsec.turn.smart_turn import SmartTurn\n"
        "p = SmartTurn().probability(np.zeros(16000, dtype=np.int16))\n"
        "assert 0.0 <= p <= 1.0\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'pipecat'], 'pipecat imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
