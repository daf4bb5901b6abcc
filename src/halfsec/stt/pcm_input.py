"""What every STT engine accepts: 16 kHz mono int16 PCM, checked once at the door."""

from __future__ import annotations

import numpy as np

from halfsec.errors import AudioInputError

SAMPLE_RATE = 16_000
"""The rate both recognisers were trained at; the session resamples to it."""


def as_pcm16(pcm: np.ndarray) -> np.ndarray:
    """Validate one fed chunk and return an owned 1-D int16 copy.

    A copy, because transports reuse their receive buffers: a view would change under the
    decoder.  Float input is rejected rather than guessed at, since a wrong scale turns
    into silently empty transcripts.
    """
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise AudioInputError(
            f"STT expects 16 kHz mono int16 PCM, got dtype {arr.dtype}; convert with "
            "(x * 32767).astype(np.int16) for float audio in [-1, 1]"
        )
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise AudioInputError(f"STT expects mono audio, got an array of shape {arr.shape}")
    return arr.copy()
