"""Typed frames that flow through a voice session.

Every frame carries the turn it belongs to and a monotonic timestamp (``t_ns``), so any
consumer (CLI, WebSocket transport, tracer) can place it on one timeline without asking
the stage that produced it.  Frames are immutable: a stage never edits another's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from halfsec.clock import now_ns


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    turn_id: int
    t_ns: int = field(default_factory=now_ns)


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioFrame(Frame):
    """PCM16 mono audio.  ``pcm`` is int16; ``sample_rate`` says its rate."""

    pcm: np.ndarray
    sample_rate: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechStarted(Frame):
    """VAD heard speech begin.  ``audio_ms`` is the position in the input stream."""

    audio_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechPaused(Frame):
    """VAD probability fell below the silence threshold; the turn may be ending.

    ``speech_end_ms`` is the estimated real end of speech in the input stream, already
    corrected for Silero's decay lag (the VAD reports silence ~100 ms late)."""

    audio_ms: float
    speech_end_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SpeechResumed(Frame):
    """Speech came back before the turn ended: speculative work is thrown away."""

    audio_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfTurn(Frame):
    """The end-of-turn decision.  ``reason`` names the rule that fired."""

    audio_ms: float
    speech_end_ms: float
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PartialTranscript(Frame):
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FinalTranscript(Frame):
    text: str
    stt_ms: float
    """Compute time of the decode that produced this text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IntentFrame(Frame):
    intent: str | None
    slots: dict[str, str]
    confidence: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyText(Frame):
    """One clause of the reply, in order.  ``index`` counts clauses from 0."""

    text: str
    index: int
    source: str
    """``domain``, ``llm`` or ``fallback``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyAudio(AudioFrame):
    """A chunk of reply audio, already at the session's output rate."""

    clause_index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyDone(Frame):
    """The turn's reply has been fully synthesized (playback may still be running)."""

    text: str
    fallbacks: tuple[str, ...] = ()
    """The fallback rungs that answered the turn, in order (``runtime/fallback.py``):
    empty when every stage answered on time."""
    faults: tuple[str, ...] = ()
    """Injected faults that fired in the turn (``halfsec serve --fault``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Interruption(Frame):
    """User barged in: the turn's pending and in-flight work was cancelled.

    ``cancel_ms`` is how long cancelling took, from the barge-in decision."""

    audio_ms: float
    cancel_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyPaused(Frame):
    """Speech began during turn ``turn_id``'s reply: its audio stops at once but is kept,
    because the speech may be a backchannel ("uh-huh") or noise (``runtime/barge_in.py``).
    A ``ReplyResumed`` or an ``Interruption`` of the same turn follows."""

    audio_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyResumed(Frame):
    """The speech that paused the reply was not an interruption: play on from where it
    stopped.  ``reason``: ``backchannel`` (its transcript is one), ``unclear`` (one or two
    words that are no cue and that the domain does not understand), ``noise`` (too short
    to be a turn, or no words) or ``timeout`` (no transcript in time); ``text`` is what
    STT heard."""

    paused_ms: float
    reason: str
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TimingMark(Frame):
    """A named point on the turn's timeline (``stage.start``/``stage.end``, ...)."""

    name: str
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorFrame(Frame):
    """Something failed; the session continues.  ``fatal`` ends the session."""

    code: str
    message: str
    fatal: bool = False
