"""The one end-of-speech rule (``halfsec.measure.end_of_speech``) against hand marks.

Every voice-to-voice figure starts its clock at this rule's end of speech, so each test
here guards a number the lab reports: agreement with ends marked by eye on 40 recordings
of five kinds (``tests/data/end_of_speech_marks.tsv``), the IVR prompt in digital silence
that the old rule cut 90 ms short, and that a client can import the rule without
onnxruntime or any engine.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from halfsec.audio.io import load_audio
from halfsec.measure.audible import AUDIBLE_DBFS
from halfsec.measure.end_of_speech import last_voiced_sample, voiced_bounds

DATA = Path(__file__).resolve().parent / "data"
MARKS = DATA / "end_of_speech_marks.tsv"
KINDS = ("studio", "phone", "crowd", "read", "command")


def _marks() -> list[dict[str, str]]:
    with open(MARKS, newline="") as f:
        lines = (line for line in f if not line.startswith("#"))
        return list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))


def _load(row: dict[str, str], speech_dir: Path) -> np.ndarray:
    base = speech_dir if row["file"].startswith("audio/") else DATA
    return load_audio(base / row["file"])


@pytest.mark.parametrize("row", _marks(), ids=lambda r: Path(r["file"]).stem)
def test_agrees_with_the_hand_mark(row: dict[str, str], speech_dir: Path) -> None:
    end = last_voiced_sample(_load(row, speech_dir))
    assert end is not None, "found no speech"
    error_ms = end / 16.0 - float(row["end_ms"])
    assert abs(error_ms) <= float(row["tolerance_ms"]), (
        f"{row['file']}: rule ends {error_ms:+.1f} ms from the hand mark ({row['note']})"
    )


def test_the_marks_hold_at_least_20_recordings_to_20_ms_across_kinds() -> None:
    """The issue's bar: 20 ms on at least 20 recordings of different kinds.  Loosening
    tolerances in the TSV until the rule passes would fail here."""
    rows = _marks()
    strict = [r for r in rows if float(r["tolerance_ms"]) <= 20.0]
    assert len(strict) >= 20
    kinds = Counter(r["kind"] for r in strict)
    assert set(kinds) == set(KINDS), kinds
    assert min(kinds[k] for k in ("studio", "phone", "crowd")) >= 5, kinds
    assert all(float(r["tolerance_ms"]) <= 60.0 for r in rows)


def test_ivr_prompt_in_digital_silence_keeps_its_final_fricative() -> None:
    """Issue 8's case: a studio prompt in exact zeros, whose floor reads -inf.  The old
    rule's threshold fell back to 35 dB under the speech peak and ended "press six"
    inside the /ks/, with -23..-31 dBFS of voice after its end.  Now nothing audible
    (by the lab's own audible threshold) follows the end, the end is within 20 ms of
    the hand mark, and it does not depend on the prompt's gain."""
    pcm = load_audio(DATA / "end_of_speech" / "studio_piper_six.flac")
    zeros = pcm[: 16 * 150]
    assert not zeros.any(), "the prompt must start in digital silence"
    end = last_voiced_sample(pcm)
    assert end is not None
    assert abs(end / 16.0 - 1690.0) <= 20.0
    after = np.abs(pcm[end:].astype(np.int32)).max() / 32768.0
    assert 20.0 * np.log10(max(after, 1e-9)) < AUDIBLE_DBFS
    quieter = np.round(pcm.astype(np.float64) * 10 ** (-10 / 20)).astype(np.int16)
    end_quieter = last_voiced_sample(quieter)
    assert end_quieter is not None and abs(end_quieter - end) <= 5 * 16


def test_no_voice_no_end() -> None:
    """Silence, steady noise and a click are not speech: no end, so no v2v figure."""
    rng = np.random.default_rng(8)
    noise = (rng.standard_normal(16_000) * 32768 * 10 ** (-40 / 20)).astype(np.int16)
    click = np.zeros(16_000, dtype=np.int16)
    click[8000:8040] = 20_000
    assert voiced_bounds(np.zeros(16_000, dtype=np.int16)) is None
    assert voiced_bounds(noise) is None
    assert voiced_bounds(click) is None


def test_bounds_are_ordered_and_inside_the_recording(speech_dir: Path) -> None:
    pcm = load_audio(speech_dir / "audio" / "rhasspy_what_time_is_it.flac")
    bounds = voiced_bounds(pcm)
    assert bounds is not None
    start, end = bounds
    assert 0 <= start < end <= pcm.size
    with pytest.raises(ValueError):
        voiced_bounds(pcm, rate=8000)


def test_importing_the_rule_loads_no_engine() -> None:
    """A client computes v2v with this rule and installs without the pipeline."""
    code = (
        "import sys, halfsec.measure.end_of_speech\n"
        "bad = [m for m in ('onnxruntime', 'halfsec.turn.vad', 'halfsec.turn', 'piper',"
        " 'ctranslate2', 'faster_whisper') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"
