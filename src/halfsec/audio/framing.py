"""Cut a stream of samples into fixed 20 ms frames.

Transports deliver audio in whatever sizes the network gives; every stage inside halfsec
sees exactly 20 ms frames so timing arithmetic is frame counting."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from halfsec import FRAME_SAMPLES


class Framer:
    def __init__(self, frame_samples: int = FRAME_SAMPLES) -> None:
        self.frame_samples = frame_samples
        self._buf = np.zeros(0, dtype=np.int16)

    def push(self, pcm: np.ndarray) -> Iterator[np.ndarray]:
        """Yield every complete frame; keep the remainder for the next push."""
        buf = np.concatenate([self._buf, pcm.astype(np.int16, copy=False)])
        n = buf.size // self.frame_samples
        for i in range(n):
            yield buf[i * self.frame_samples : (i + 1) * self.frame_samples]
        self._buf = buf[n * self.frame_samples :]

    @property
    def pending(self) -> int:
        return int(self._buf.size)


def frames_of(pcm: np.ndarray, frame_samples: int = FRAME_SAMPLES) -> Iterator[np.ndarray]:
    """Split a whole buffer into frames, zero-padding the last one."""
    n = -(-pcm.size // frame_samples)
    padded = np.zeros(n * frame_samples, dtype=np.int16)
    padded[: pcm.size] = pcm
    for i in range(n):
        yield padded[i * frame_samples : (i + 1) * frame_samples]
