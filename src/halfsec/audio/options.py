"""Audio options: what the pipeline accepts and produces."""

from __future__ import annotations

from dataclasses import dataclass

from halfsec.options_check import ConfigKeys, Range, between, check_fields, positive

_RULES = {
    "output_rate": between(8000, 48000, "Hz"),
    "max_input_s": positive("s"),
    # dBFS is at most 0; below -120 nothing a 16-bit sample can hold is quieter.
    "audible_dbfs": Range(-120, 0, high_inclusive=False, unit="dBFS"),
}


@dataclass(frozen=True, slots=True)
class AudioOptions:
    output_rate: int = 16_000
    """Rate of reply audio handed to the consumer; TTS output is resampled to it with soxr."""
    max_input_s: float = 120.0
    """Longest input file ``halfsec run`` accepts.  A file is played at real-time pace, so a
    10-minute file would tie a run up for 10 minutes: reject it with a clear message instead."""
    audible_dbfs: float | None = None
    """Level above which a reply sample counts as audible (the stop of the v2v clock);
    None: the one rule's ``halfsec.measure.audible.AUDIBLE_DBFS``."""

    def __post_init__(self) -> None:
        check_fields(self, _RULES, ConfigKeys("audio"))
