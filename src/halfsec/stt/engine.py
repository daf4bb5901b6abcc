"""The speech-to-text engine interface.

A session opens one ``STTStream`` per turn and feeds it 16 kHz int16 speech as it
arrives.  ``hypothesis(final=False)`` gives a partial transcript while the user speaks;
``hypothesis(final=True)`` gives the transcript of everything fed so far.  The runtime
asks for a *speculative* final as soon as the VAD hears a pause, and again at the end of
turn: an engine must answer the second call from cache when nothing was fed in between
(this is what makes the final transcript ready ~0 ms after the end-of-turn decision).

A vendor streaming API (Deepgram, Google, AWS) implements the same two classes: ``feed``
sends audio on its socket, ``hypothesis`` returns the latest result it has received.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    final: bool
    compute_ms: float
    """Time spent computing this hypothesis (0 when served from cache)."""
    audio_ms: float
    """Length of the audio it covers."""


class STTStream(ABC):
    """One utterance's recognition state."""

    @abstractmethod
    def feed(self, pcm: np.ndarray) -> None:
        """Append 16 kHz mono int16 audio.  Must be cheap: never blocks on inference."""

    @abstractmethod
    async def hypothesis(self, final: bool) -> Transcript:
        """Transcript of all audio fed so far; inference runs off the event loop."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release per-utterance resources."""


class STTEngine(ABC):
    """A loaded recognizer, shared by all sessions of a process."""

    name: str = "stt"
    sample_rate: int = 16_000

    @abstractmethod
    def open_stream(self) -> STTStream: ...

    def warmup(self) -> None:  # noqa: B027 - optional hook
        """Run once before the first turn so the first user does not pay model load."""

    def lower_priority(self, nice: int) -> None:  # noqa: B027 - optional hook
        """Run later decodes at nice value ``nice`` (lower CPU priority), for an engine
        serving as a fallback whose work must not slow other sessions
        (``runtime.fallback.FALLBACK_NICE``).  Engines whose threads this process cannot
        renice (a remote service) keep the default: nothing to do."""
