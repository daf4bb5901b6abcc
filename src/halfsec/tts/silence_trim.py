"""Leading-silence trimming shared by the engines.

Works on a stream of chunks (espeak hands audio over in 20 ms pieces) as well as on
one whole sentence (Piper), so each engine trims the same way.
"""

from __future__ import annotations

import numpy as np


class LeadingSilenceTrimmer:
    """Drops samples before the first one louder than ``threshold``, keeping ``keep``.

    One instance per utterance: once the onset has been found every later sample passes
    through untouched, so pauses *inside* the speech are never shortened.
    """

    def __init__(self, threshold: int, keep: int, enabled: bool = True) -> None:
        self._threshold = threshold
        self._keep = max(0, keep)
        self._started = not enabled
        self._preroll = np.zeros(0, dtype=np.int16)
        self.trimmed = 0
        """Samples dropped so far (for tests and tracing)."""

    @property
    def started(self) -> bool:
        return self._started

    def feed(self, chunk: np.ndarray) -> np.ndarray:
        """Return the part of ``chunk`` to emit (possibly empty) until the onset is found."""
        if self._started:
            return chunk
        loud = np.flatnonzero(np.abs(chunk.astype(np.int32)) > self._threshold)
        if loud.size == 0:
            # Still silence: remember just enough of it to serve as pre-roll later.
            joined = np.concatenate((self._preroll, chunk))
            cut = max(0, joined.size - self._keep)
            self.trimmed += cut
            self._preroll = joined[cut:]
            return chunk[:0]
        self._started = True
        onset = int(loud[0])
        joined = np.concatenate((self._preroll, chunk))
        start = max(0, self._preroll.size + onset - self._keep)
        self.trimmed += start
        self._preroll = np.zeros(0, dtype=np.int16)
        return joined[start:]
