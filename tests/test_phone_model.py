"""The phone calls' recognizer: Whisper base joined from two pinned packages."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from halfsec.audio.io import load_audio
from halfsec.audio.resample import LowDelayResampler
from halfsec.config import ConfigError, load_config
from halfsec.errors import EngineUnavailable
from halfsec.lab.clients.telephone_band import telephone_band
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.measure.wer import word_errors
from halfsec.runtime.build import build_engines
from halfsec.runtime.engines import Engines
from halfsec.stt.options import STTOptions
from halfsec.stt.phone_model import (
    BASE_MODEL_SHA256,
    PhoneWhisperEngine,
    create_phone_stt,
    phone_model_dir,
)
from halfsec.stt.whisper_decoder import WhisperDecoder
from halfsec.wire.mulaw import MULAW_RATE, mulaw_decode, mulaw_encode


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def test_the_two_pieces_join_to_systrans_faster_whisper_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HALFSEC_CACHE", str(tmp_path))
    d = phone_model_dir()
    assert d == tmp_path / "whisper-base"
    assert _sha256(d / "model.bin") == BASE_MODEL_SHA256
    assert {p.name for p in d.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }


def test_a_damaged_joined_file_is_joined_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HALFSEC_CACHE", str(tmp_path))
    joined = phone_model_dir() / "model.bin"
    with open(joined, "r+b") as f:  # truncated, as by a full disk or a killed copy
        f.truncate(1000)
    assert _sha256(phone_model_dir() / "model.bin") == BASE_MODEL_SHA256


def test_an_unwritable_cache_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("HALFSEC_CACHE", str(blocker))
    with pytest.raises(EngineUnavailable, match="HALFSEC_CACHE.*stt.phone_model=same"):
        phone_model_dir()


def test_which_recognizer_calls_get() -> None:
    assert create_phone_stt(STTOptions(phone_model="same")) is None
    assert create_phone_stt(STTOptions(engine="pocketsphinx")) is None
    with pytest.raises(ConfigError, match="phone_model"):
        load_config(overrides=["stt.phone_model=large"], environ={})
    assert load_config(overrides=["stt.phone_model=base"], environ={}).stt.phone_model == "base"


def test_base_understands_a_phone_line_that_tiny_en_mishears(speech_dir: Path) -> None:
    """ "Please call Stella." as a call carries it: tiny.en writes "stellar" (the cue is
    above 3.4 kHz); the multilingual base, told the language, gets it."""
    pcm = load_audio(speech_dir / "audio" / "vctk_p226_001.flac")
    b = voiced_bounds(pcm)
    assert b is not None
    clip = pcm[max(0, b[0] - 4800) : b[1] + 16000]
    narrow = mulaw_decode(mulaw_encode(telephone_band(clip)))
    up = LowDelayResampler(MULAW_RATE, 16_000)  # the server's upsampler for calls
    pcm16 = np.concatenate([up.process(narrow), up.flush()]).astype(np.int16)
    base = WhisperDecoder(STTOptions(model_path=str(phone_model_dir())))
    assert base.model.is_multilingual
    got = base.decode(pcm16, final=True).text
    assert word_errors("Please call Stella.", got)[0] == 0, got


def test_a_build_with_the_phone_model_carries_it(engines: Engines) -> None:
    """``stt.phone_model = "base"``: loaded next to tiny.en, with the same deadline for
    a hung decode; ``same`` (the shared test engines' setting) loads nothing more."""
    assert engines.phone_stt is None
    config = load_config(overrides=["stt.phone_model=base"], environ={})
    built = build_engines(config, warmup=False)
    try:
        assert isinstance(built.phone_stt, PhoneWhisperEngine)
        assert built.phone_stt.hung_after_ms == config.session.stt_hung_ms
        assert built.phone_stt.options.prompt == built.stt.options.prompt  # type: ignore[attr-defined]
    finally:
        for e in (built.stt, built.phone_stt):
            getattr(e, "close", lambda: None)()
