"""The phone calls' recognizer: Whisper base joined from two pinned packages."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from pathlib import Path

import pytest
from phone_call import as_a_call

from halfsec.config import ConfigError, load_config
from halfsec.errors import EngineUnavailable
from halfsec.measure.wer import word_errors
from halfsec.runtime.build import build_engines
from halfsec.runtime.engines import Engines
from halfsec.stt.cascade import CascadeDecoder
from halfsec.stt.options import STTOptions
from halfsec.stt.phone_model import (
    BASE_MIN_WINDOW_S,
    BASE_MODEL_SHA256,
    BASE_TAIL_PAD_S,
    PROMPT_CLOSER,
    PhoneWhisperEngine,
    base_options,
    base_prompt,
    create_phone_stt,
    phone_model_dir,
)
from halfsec.stt.whisper_decoder import WhisperDecoder, prompt_text


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


def test_base_options_window_and_prompt() -> None:
    """Base decodes calls on ``max(7 s, audio + 2 s)`` and its domain prompt ends in a
    plain sentence (rule ``closer``); another rule changes only the prompt; no prompt
    stays no prompt."""
    o = base_options(STTOptions(prompt="latte mocha"))
    assert (o.min_window_s, o.tail_pad_s) == (BASE_MIN_WINDOW_S, BASE_TAIL_PAD_S)
    assert o.prompt == f"latte, mocha. {PROMPT_CLOSER}"
    assert base_options(o).prompt == f"{o.prompt} {PROMPT_CLOSER}"  # not idempotent: once
    bare = base_options(STTOptions(prompt="latte mocha"), rule="bare")
    assert bare == dataclasses.replace(o, prompt="latte, mocha.")
    assert base_options(STTOptions()).prompt is None
    assert base_options(STTOptions(prompt="  ")).prompt == "  "
    dec = WhisperDecoder(base_options(STTOptions(model_path=str(phone_model_dir()))))
    assert dec._window_s(1.0) == BASE_MIN_WINDOW_S
    assert dec._window_s(6.5) == 6.5 + BASE_TAIL_PAD_S


def test_base_prompt_rules() -> None:
    """Every rule of ``PROMPT_RULES`` on a hint with a heading; an unknown rule (such as
    the bench's shorter hints, which no call uses) is a clear error."""
    hint = "Coffee order: small, large, iced latte, latte, mocha."
    assert base_prompt(hint, "bare") == hint
    assert base_prompt(hint, "closer") == f"{hint} {PROMPT_CLOSER}"
    assert base_prompt(hint, "none") is None
    assert base_prompt(None, "closer") is None
    for rule in ("prefix", "first2", "longest"):
        with pytest.raises(ValueError, match="unknown prompt rule"):
            base_prompt(hint, rule)


def test_the_bench_compares_shorter_hints(monkeypatch: pytest.MonkeyPatch) -> None:
    """The prompt bench's shorter hints (``experiment_prompt``) on a hint with a heading,
    multi-word items and a repeated word; the product's rules come out as calls make them."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    bench = importlib.import_module("phone_prompt_bench")
    hint = "Coffee order: small, large, iced latte, latte, mocha."
    exp = bench.experiment_prompt
    assert exp(hint, "closer") == base_prompt(hint, "closer")
    assert exp(hint, "none") is None
    assert exp(hint, "prefix") == f"Coffee order. {PROMPT_CLOSER}"
    assert exp(hint, "unique") == f"Coffee order: small, large, iced, latte, mocha. {PROMPT_CLOSER}"
    assert exp(hint, "first2") == f"Coffee order: small, large. {PROMPT_CLOSER}"
    assert exp("latte mocha", "first1") == f"latte. {PROMPT_CLOSER}"
    with pytest.raises(ValueError, match="unknown prompt rule"):
        exp(hint, "longest")


def test_the_bench_changes_one_decoder_setting_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """``closer:beam2`` is base as calls build it with beam search of width 2, nothing
    else changed; an unknown modifier is refused before any model loads."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    bench = importlib.import_module("phone_prompt_bench")
    hint = "Coffee order: small, large, iced latte, latte, mocha."
    plain = bench._decoder(hint, "closer", None).options
    beam = bench._decoder(hint, "closer", None, ["beam2"]).options
    assert (plain.beam_size, beam.beam_size) == (1, 2)
    assert dataclasses.replace(beam, beam_size=1) == plain
    with pytest.raises(ValueError, match="unknown decoder modifier"):
        bench._decoder(hint, "closer", None, ["beam"])


def test_base_understands_a_phone_line_that_tiny_en_mishears(speech_dir: Path) -> None:
    """ "Please call Stella." as a call carries it: tiny.en writes "stellar" (the cue is
    above 3.4 kHz); the multilingual base, told the language, gets it."""
    base = WhisperDecoder(STTOptions(model_path=str(phone_model_dir())))
    assert base.model.is_multilingual
    got = base.decode(as_a_call(speech_dir / "audio" / "vctk_p226_001.flac"), final=True)
    assert word_errors("Please call Stella.", got.text)[0] == 0, got.text
    # The decoder's confidence comes with the text (what the prompt bench's ``pick`` reads).
    assert -2.0 < got.avg_logprob < 0.0, got.avg_logprob


def test_the_prompt_closer_keeps_base_writing_sentences(speech_dir: Path, engines: Engines) -> None:
    """ "in being comparatively modern." over the phone, decoded as calls are (base's
    window, the domain prompt with its closing sentence): with the bare coffee list as
    its prompt base wrote "Invying comparatively modern." (stop 10, and live at 16:12
    on 2026-12-01)."""
    prompt = engines.stt.options.prompt  # type: ignore[attr-defined]
    assert prompt
    opt = base_options(STTOptions(prompt=prompt, model_path=str(phone_model_dir())))
    got = WhisperDecoder(opt).decode(
        as_a_call(speech_dir / "audio" / "ljspeech_LJ001-0002.flac"), final=True
    )
    assert word_errors("in being comparatively modern.", got.text)[0] == 0, got.text


def test_a_build_with_the_phone_model_carries_it(engines: Engines) -> None:
    """``stt.phone_model = "base"``: loaded next to tiny.en with the same deadline for a
    hung decode, base's window and the domain prompt with its closer (tiny.en's options
    untouched); the default is the cascade (the shared test engines carry it), and an
    entry point that takes no calls loads none."""
    assert STTOptions().phone_model == "cascade"
    assert isinstance(engines.phone_stt, PhoneWhisperEngine)
    assert isinstance(engines.phone_stt.decoder, CascadeDecoder)
    assert build_engines(load_config(environ={}), warmup=False, phone=False).phone_stt is None
    assert create_phone_stt(STTOptions(phone_model="same")) is None
    config = load_config(overrides=["stt.phone_model=base"], environ={})
    built = build_engines(config, warmup=False)
    try:
        phone = built.phone_stt
        assert isinstance(phone, PhoneWhisperEngine)
        assert phone.hung_after_ms == config.session.stt_hung_ms
        main = built.stt.options  # type: ignore[attr-defined]
        assert phone.options.prompt == f"{prompt_text(main.prompt)} {PROMPT_CLOSER}"
        assert (phone.options.min_window_s, phone.options.tail_pad_s) == (7.0, 2.0)
        assert (main.min_window_s, main.tail_pad_s) == (10.0, 3.0)
        # Finals on base, partials on tiny.en with tiny.en's own settings at one thread
        # (PARTIALS_ON_TINY); a tiny.en partial is never promoted to a base final.
        assert phone.decoder.model.is_multilingual
        assert not phone.partial_decoder.model.is_multilingual
        assert phone.partial_decoder.options == dataclasses.replace(main, cpu_threads=1)
        assert not phone.partials_are_finals
    finally:
        for e in (built.stt, built.phone_stt):
            getattr(e, "close", lambda: None)()
