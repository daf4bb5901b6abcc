"""An example halfsec plugin engine: text to "speech" as one short tone per word.

It needs no model, so it shows the plugin contract and nothing else:

* subclass ``halfsec.tts.TTSEngine``, set ``name`` and ``sample_rate``;
* ``synthesize`` is an async generator of int16 mono chunks at ``sample_rate``, one chunk
  per word here, so the first audio leaves before the whole clause is rendered;
* blocking work (none here) would go to a worker thread (``loop.run_in_executor``);
* the constructor takes the stage's options object (``TTSOptions``), as the factory
  passes it; ``volume`` is honoured like the built-in engines do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from halfsec.tts import TTSEngine, TTSOptions

__all__ = ["EchoTTS"]


class EchoTTS(TTSEngine):
    name = "echo"
    sample_rate = 16_000

    word_ms = 120
    gap_ms = 40

    def __init__(self, options: TTSOptions | None = None) -> None:
        self.options = options or TTSOptions(engine="echo")

    def tone(self, word: str) -> np.ndarray:
        """A tone whose pitch follows the word's length, then a short pause."""
        n = self.sample_rate * self.word_ms // 1000
        t = np.arange(n) / self.sample_rate
        hz = 300.0 + 60.0 * min(len(word), 12)
        ramp = np.minimum(1.0, np.minimum(np.arange(n), n - np.arange(n)) / 80.0)
        wave = np.sin(2 * np.pi * hz * t) * ramp * 0.3 * self.options.volume
        gap = np.zeros(self.sample_rate * self.gap_ms // 1000)
        return (np.concatenate((wave, gap)) * 32767).astype(np.int16)

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        for word in text.split():
            yield self.tone(word)
