"""Session options: what the orchestration does beyond each stage's own options."""

from __future__ import annotations

from dataclasses import dataclass

from halfsec.options_check import ConfigKeys, OneOf, Rule, check_fields, positive

_RULES: dict[str, Rule] = {
    "partial_interval_ms": positive("ms", at_most=60_000),
    "end_of_turn": OneOf(("transcript", "silence")),
    "max_turn_s": positive("s", at_most=3600),
}


@dataclass(frozen=True, slots=True)
class SessionOptions:
    speculate: bool = True
    """Start STT, logic and the first clause's TTS as soon as the user pauses, and release
    the result only at the end-of-turn decision.  The decision then finds the reply ready:
    voice-to-voice approaches the endpointing wait itself.  Off = classic sequential
    pipeline (useful as the A/B baseline)."""
    partials: bool = True
    """Emit partial transcripts while the user speaks."""
    partial_interval_ms: float = 500.0
    """Audio between two partial decodes (each costs one decode on the STT engine's
    low-priority partial lane)."""
    end_of_turn: str = "transcript"
    """``transcript`` (longer window for unfinished phrases) or ``silence`` (fixed window)."""
    max_turn_s: float = 30.0
    """A turn longer than this is ended by force (a stuck-open VAD must not hold the
    session forever)."""

    def __post_init__(self) -> None:
        check_fields(self, _RULES, ConfigKeys("session"))
