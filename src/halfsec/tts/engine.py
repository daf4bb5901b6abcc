"""The text-to-speech engine interface.

The runtime hands an engine one clause at a time (the logic stage streams clauses), so
the first audio leaves after the first clause, not after the whole reply.  An engine
yields int16 mono chunks at its native ``sample_rate``; the runtime resamples to the
consumer's rate with soxr.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

import numpy as np


class TTSEngine(ABC):
    name: str = "tts"
    sample_rate: int = 22_050

    @abstractmethod
    def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        """Yield int16 chunks for ``text``; inference runs off the event loop.

        Cancelling the consuming task must stop synthesis at the next chunk boundary."""

    def warmup(self) -> None:  # noqa: B027 - optional hook
        """Run once before the first turn so the first user does not pay model load."""
