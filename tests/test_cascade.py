"""The tiny.en -> base cascade for phone calls (``halfsec.stt.cascade``), on real models
and real recordings as a call carries them."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from phone_call import as_a_call

from halfsec.stt.cascade import CascadeDecoder, confidence
from halfsec.stt.options import STTOptions
from halfsec.stt.phone_model import (
    CASCADE_MIN_LOGPROB,
    PhoneWhisperEngine,
    base_options,
    create_phone_stt,
    phone_model_dir,
)
from halfsec.stt.whisper_decoder import Decoded, WhisperDecoder

PROMPT = "Coffee order: small, medium, large, latte, cappuccino, americano, iced, hot."


@pytest.fixture(scope="module")
def pair() -> tuple[WhisperDecoder, WhisperDecoder]:
    tiny = WhisperDecoder(STTOptions(prompt=PROMPT))
    base = WhisperDecoder(
        replace(base_options(STTOptions(prompt=PROMPT)), model_path=str(phone_model_dir()))
    )
    return tiny, base


def test_a_floor_of_minus_infinity_never_asks_the_second_model(
    pair: tuple[WhisperDecoder, WhisperDecoder], speech_dir: Path
) -> None:
    tiny, base = pair
    call = as_a_call(speech_dir / "audio" / "vctk_p226_001.flac")
    alone = tiny.decode(call, final=True)
    cascade = CascadeDecoder(tiny, base, -math.inf)
    got = cascade.decode(call, final=True)
    assert cascade.escalated == 0
    assert got.text == alone.text


def test_an_unsure_first_text_is_checked_by_the_second_and_the_surer_one_kept(
    pair: tuple[WhisperDecoder, WhisperDecoder], speech_dir: Path
) -> None:
    """A floor of +inf asks base on every final; the kept text is the more confident of
    the two, and the compute counts both decodes."""
    tiny, base = pair
    cascade = CascadeDecoder(tiny, base, math.inf)
    for name in ("vctk_p226_001.flac", "ljspeech_LJ001-0002.flac"):
        call = as_a_call(speech_dir / "audio" / name)
        a, b = tiny.decode(call, final=True), base.decode(call, final=True)
        got = cascade.decode(call, final=True)
        want = a if confidence(a) > confidence(b) else b
        assert got.text == want.text
        assert got.compute_ms > max(a.compute_ms, b.compute_ms) * 0.5
    assert cascade.escalated == 2
    # A partial is the first model's alone, whatever the floor.
    partial = cascade.decode(as_a_call(speech_dir / "audio" / "vctk_p226_001.flac"), final=False)
    assert cascade.escalated == 2 and partial.text


def test_a_text_without_a_comparable_score_is_the_least_sure() -> None:
    assert confidence(Decoded("x", False, 1.0, avg_logprob=-0.2)) == -0.2
    assert confidence(Decoded("x", False, 1.0, fallback=True)) == -math.inf
    assert confidence(Decoded("x x x", True, 1.0, avg_logprob=-0.01)) == -math.inf


def test_stt_phone_model_cascade_builds_the_cascade_on_the_final_lane() -> None:
    """``stt.phone_model = "cascade"``: the final lane holds tiny.en (its own window and
    prompt, the lane's threads) in front of base at the chosen floor; partials stay on
    tiny.en."""
    engine = create_phone_stt(STTOptions(prompt=PROMPT, phone_model="cascade"))
    assert isinstance(engine, PhoneWhisperEngine)
    try:
        final = engine.decoder
        assert isinstance(final, CascadeDecoder)
        assert final.min_logprob == CASCADE_MIN_LOGPROB
        assert not final.first.model.is_multilingual and final.second.model.is_multilingual
        assert final.first.options.min_window_s == STTOptions().min_window_s
        assert final.first.options.cpu_threads == engine.options.cpu_threads
        assert not engine.partial_decoder.model.is_multilingual
    finally:
        engine.close()
