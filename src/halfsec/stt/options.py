"""Speech-to-text settings, chosen for a < 500 ms answer on a 2-core CPU."""

from __future__ import annotations

from dataclasses import dataclass

from halfsec.options_check import (
    ConfigKeys,
    OneOf,
    Rule,
    at_least,
    between,
    check_fields,
    positive,
)

_RULES: dict[str, Rule] = {
    "cpu_threads": between(1, 256),
    "beam_size": between(1, 32),
    "partial_interval_ms": positive("ms", at_most=60_000),
    # Whisper's encoder window is 30 s: a longer minimum cannot be decoded.
    "min_window_s": positive("s", at_most=30),
    "tail_pad_s": between(0, 30, "s"),
    "max_tokens_per_second": positive(at_most=100),
    # 448 is Whisper's whole decoder context.
    "min_tokens": between(0, 448),
    "no_speech_threshold": between(0, 1),
    "logprob_threshold": at_least(-100, at_most=0),
    "silence_dbfs": between(-120, 0, "dBFS"),
    "openai_timeout_s": positive("s", at_most=600),
    "phone_model": OneOf(("same", "base", "cascade")),
}


@dataclass(frozen=True, slots=True)
class STTOptions:
    """How the recognizer is loaded and how it decodes.

    Frozen so one instance can be shared by every session of a process and replaced with
    ``dataclasses.replace`` (the runtime does this to add the domain ``prompt``).
    """

    engine: str = "whisper"
    """Whisper is the accurate default; PocketSphinx is the small true-streaming
    fallback for machines where even Whisper tiny is too slow; ``openai`` sends the audio
    to an OpenAI-compatible server (``openai_*`` below).  Any other name is looked up
    among installed plugin engines (entry-point group ``halfsec.stt``)."""

    model_path: str | None = None
    """A CTranslate2 Whisper directory (or, for PocketSphinx, an acoustic model
    directory).  ``None`` uses the packaged model so that nothing is downloaded at run
    time."""

    compute_type: str = "int8"
    """The packaged weights are float16; int8 on CPU is ~2x faster with no measurable
    WER change for tiny.en."""

    cpu_threads: int = 2
    """Threads of the *final* decode, which the end-of-turn decision waits for; nothing
    else is busy then (TTS starts after it, VAD costs ~70 us a frame).  Measured on a
    2-core AVX2 EPYC (2026-11-29, ``python benchmarks/whisper_cost_bench.py``): a coffee
    order's final with the domain prompt takes 360.8 ms on one thread, 233.7 ms on two
    (on an AVX-512 VNNI box one thread was as fast).  Partials always use one thread at
    low priority (see ``WhisperEngine``)."""

    beam_size: int = 1
    """Greedy decoding: beam 5 costs ~3x the decoder time for < 1 point of WER on short
    commands."""

    language: str = "en"
    """tiny.en is English only; kept explicit so the setting is visible in configs."""

    prompt: str | None = None
    """Domain vocabulary ("cappuccino americano latte twelve ounce") given to Whisper as
    the previous-text prompt, which biases spelling and word choice toward the domain.
    ``None`` or empty: no bias."""

    partial_interval_ms: float = 400.0
    """Suggested audio between two partial decodes; each partial costs one decode on the
    single STT thread, so more often would delay the speculative final."""

    min_window_s: float = 10.0
    """Shortest encoder window.  Whisper was trained on 30 s windows; measured on the
    shared speech set, windows under ~10 s make tiny.en loop ("yes yes yes ...") or
    invent text after the speech, while a 10 s window keeps the batch WER at ~1/6 of the
    30 s encoder cost."""

    tail_pad_s: float = 3.0
    """Silence appended after the audio (the window is at least this much longer than
    the speech), so the model sees the speech end inside the window."""

    max_tokens_per_second: float = 8.0
    """Cap on generated tokens per second of audio (plus ``min_tokens``).  Fast speech is
    ~6 tokens/s; anything longer is a repetition loop, and the cap bounds its cost."""

    min_tokens: int = 8
    """Token headroom for very short audio, where one word may cost several tokens."""

    no_speech_threshold: float = 0.6
    """Whisper's own no-speech probability above which, with a low average
    log-probability, the text is treated as hallucinated and dropped."""

    logprob_threshold: float = -1.0
    """Average token log-probability below which a high no-speech probability wins."""

    silence_dbfs: float = -55.0
    """Audio whose loudest 20 ms frame is quieter than this is silence: answered ""
    without decoding, since Whisper invents words ("you", "Thank you.") on silence."""

    fallback: bool = True
    """When the short-window decode looks broken (a repetition loop, or it hit the token
    cap), redo the final with the standard 30 s window (~300 ms) rather than return
    garbage.  Partials never fall back: they are cheap previews."""

    openai_base_url: str | None = None
    """``engine = "openai"``: the server's base URL (``http://127.0.0.1:8000/v1``);
    halfsec posts to ``{base}/audio/transcriptions``."""

    openai_model: str = "whisper-1"
    """``model`` field of the request (the server's name for its recognizer)."""

    openai_api_key_env: str | None = "OPENAI_API_KEY"
    """Environment variable holding the API key (never the key itself); unset: no key."""

    openai_timeout_s: float = 5.0
    """Longest wait to connect and for the transcription to come back; past it the turn
    fails with an error that names the server."""

    phone_model: str = "cascade"
    """The recognizer of phone calls (``/twilio``: 8 kHz mu-law, 300-3400 Hz) when
    ``engine = "whisper"``: ``cascade`` (the default) is tiny.en, with Whisper base
    decoding too where tiny.en is unsure and the more confident text kept
    (``halfsec.stt.cascade``): on calls, +1.3..+2.9 WER points over the WebSocket path at
    its speed, where tiny.en alone lost +5..+6 (docs/twilio.md, stop 15), for ~+350 MiB
    and ~3 s more start-up; ``base`` is Whisper base on every final (~2x tiny.en's decode);
    ``same`` gives calls the recognizer above."""

    def __post_init__(self) -> None:
        check_fields(self, _RULES, ConfigKeys("stt"))
