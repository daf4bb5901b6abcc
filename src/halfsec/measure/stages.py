"""Split one turn's voice-to-voice time into stages that add up to it exactly.

All points are on the *client's* timeline (server timestamps already mapped with the
clock offset).  A stage ends at a named point, but points are clamped into order (each is
the max of itself and the previous one, and never later than the first audible sample),
so the stages telescope: their sum is ``first audible - reference end of speech`` to the
nanosecond.  Clamping matters because work the pipeline did *speculatively* before the
end-of-turn decision (STT, logic, even TTS start at the pause) is not latency the user
waits for: it is counted as zero, and the wait lands on endpointing where it belongs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

STAGES: tuple[str, ...] = (
    "endpointing_ms",
    "stt_ms",
    "logic_ms",
    "tts_ms",
    "server_send_ms",
    "network_buffer_ms",
)
"""In order.  Each ends at: ``turn.end``; timing mark ``stt.end``; ``logic.first_clause``;
``tts.first_audio``; the first heard audio packet's header ``t_server_ns``; the first
audible sample at the client."""


@dataclass(frozen=True, slots=True)
class StagePoints:
    """Client-timeline milliseconds (relative to the first sent sample); None = not seen."""

    ref_end_ms: float
    turn_end_ms: float | None
    stt_end_ms: float | None
    logic_first_clause_ms: float | None
    tts_first_audio_ms: float | None
    server_send_ms: float | None
    first_audible_ms: float


def breakdown(p: StagePoints) -> dict[str, float]:
    """Telescoping stages; ``sum(values) == first_audible_ms - ref_end_ms``."""
    ends: Sequence[float | None] = (
        p.turn_end_ms,
        p.stt_end_ms,
        p.logic_first_clause_ms,
        p.tts_first_audio_ms,
        p.server_send_ms,
    )
    out: dict[str, float] = {}
    prev = p.ref_end_ms
    for name, point in zip(STAGES[:-1], ends, strict=True):
        cur = prev if point is None else min(p.first_audible_ms, max(prev, point))
        out[name] = cur - prev
        prev = cur
    out["network_buffer_ms"] = max(0.0, p.first_audible_ms - prev)
    return out


def dominant_stage(stages: dict[str, float]) -> str | None:
    """The stage that cost the most; None when there is nothing to attribute."""
    if not stages:
        return None
    name, value = max(stages.items(), key=lambda kv: kv[1])
    return name if value > 0 else None
