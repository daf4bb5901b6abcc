"""Resampling with soxr, the only resampler halfsec uses.

Streams (microphone, network) use ``StreamResampler`` so chunk boundaries cost nothing in
quality; whole buffers (files, TTS clauses) use ``resample``."""

from __future__ import annotations

import numpy as np
import soxr


def resample(pcm: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample a whole int16 or float buffer; returns the same dtype."""
    if in_rate == out_rate or pcm.size == 0:
        return pcm
    return soxr.resample(pcm, in_rate, out_rate, quality="HQ")


class StreamResampler:
    """Chunk-by-chunk int16 resampling that keeps filter state between chunks."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._rs = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
        )

    def process(self, pcm: np.ndarray, last: bool = False) -> np.ndarray:
        if self._rs is None:
            return pcm
        return np.asarray(self._rs.resample_chunk(pcm.astype(np.int16), last=last))
