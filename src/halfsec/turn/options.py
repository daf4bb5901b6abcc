"""Turn-detection options: VAD thresholds and the end-of-speech silence window."""

from __future__ import annotations

from dataclasses import dataclass

from halfsec.errors import ConfigError
from halfsec.options_check import ConfigKeys, Range, at_least, between, check_fields

_WINDOW = at_least(0, "ms", at_most=60_000)
"""A wait or stretch of audio: never negative, and a minute is surely a unit mistake."""

_RULES = {
    "threshold": Range(0, 1, low_inclusive=False),
    "neg_threshold": between(0, 1),
    "min_speech_ms": _WINDOW,
    "silence_ms": _WINDOW,
    "vad_lag_ms": _WINDOW,
    "incomplete_silence_ms": _WINDOW,
    "uncertain_silence_ms": _WINDOW,
    "max_wait_for_transcript_ms": _WINDOW,
    "preroll_ms": _WINDOW,
    "continuation_ms": _WINDOW,
    "barge_in_min_speech_ms": _WINDOW,
    "smart_turn_threads": Range(1, 64),
    "smart_turn_deadline_ms": _WINDOW,
}


@dataclass(frozen=True, slots=True)
class TurnOptions:
    threshold: float = 0.5
    """Silero speech probability at or above which a window is speech."""
    neg_threshold: float = 0.35
    """Probability below which speech is considered paused (hysteresis avoids flapping)."""
    min_speech_ms: float = 64.0
    """Speech must last this long before a turn starts (two 32 ms VAD windows)."""
    silence_ms: float = 200.0
    """End-of-speech silence window, counted from the *estimated real end of speech*, not
    from the VAD's late drop (see ``vad_lag_ms``)."""
    vad_lag_ms: float = 72.0
    """How late Silero's probability falls after real speech ends (median, measured on 73 shared
    recordings with ``python benchmarks/vad_bench.py``).  Used only when frame energy cannot
    place the end: the detector first looks for the last frame clearly above the noise floor
    so the silence window is real silence."""
    incomplete_silence_ms: float = 700.0
    """Silence window when the speculative transcript ends mid-phrase ("...with", "and",
    "uh"): users pause inside orders, and cutting them there costs more than waiting."""
    uncertain_silence_ms: float = 400.0
    """Silence window for an off-domain transcript that ends on a comma: the recognizer
    heard a pause inside a sentence, and no domain can say whether the request is done."""
    max_wait_for_transcript_ms: float = 400.0
    """If the speculative transcript is not ready when the window ends, wait at most this
    long beyond it before deciding without it."""
    preroll_ms: float = 300.0
    """Audio kept from before the VAD fired, so STT hears the onset it detected late."""
    continuation_ms: float = 1500.0
    """Speech that starts this soon after an end of turn whose reply is interrupted joins
    that turn (the user had only paused): STT hears the whole utterance."""
    barge_in_min_speech_ms: float = 64.0
    """Speech needed to interrupt a reply that is playing."""
    smart_turn: bool = True
    """The combined end-of-turn policy asks Smart Turn v3.2 (an audio model, in the
    optional pipecat-ai package) how finished each pause sounds; off, or without the
    package, it decides on words and meaning alone (``turn/combined.py``)."""
    smart_turn_threads: int = 1
    """Threads of the Smart Turn model (~30 ms a call on one thread of the usual box).
    One: it runs at a pause, next to the final decode's two."""
    smart_turn_deadline_ms: float = 150.0
    """A Smart Turn verdict later than this after it was asked is dropped: by then the
    decision it was for has moved on (the model is asked again as the pause lasts)."""

    def __post_init__(self) -> None:
        check_fields(self, _RULES, ConfigKeys("turn"))
        if self.neg_threshold > self.threshold:  # hysteresis upside down: a turn flaps
            raise ConfigError(
                f"turn.neg_threshold ({self.neg_threshold}) must not exceed turn.threshold "
                f"({self.threshold}): speech pauses below the first and starts above the second; "
                "set both, e.g. --set turn.threshold=0.3 --set turn.neg_threshold=0.2"
            )
