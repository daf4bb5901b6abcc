"""Level arithmetic in dB full scale (dBFS) for int16 PCM.

Only the conversions live here; what counts as *audible* is a measurement rule and lives
in ``halfsec.measure.audible``."""

from __future__ import annotations

import numpy as np


def dbfs_to_int16(dbfs: float) -> float:
    """Amplitude of a full-scale-relative level in int16 units."""
    return float(32768.0 * 10 ** (dbfs / 20.0))


def frame_rms_dbfs(pcm: np.ndarray) -> float:
    """RMS level of a frame in dBFS (-120 for digital silence)."""
    if pcm.size == 0:
        return -120.0
    x = pcm.astype(np.float64) / 32768.0
    rms = float(np.sqrt(np.mean(x * x)))
    return -120.0 if rms <= 1e-6 else 20.0 * float(np.log10(rms))


def loudest_frame_dbfs(audio: np.ndarray, frame: int = 320) -> float:
    """Level of the loudest 20 ms frame of float audio in [-1, 1], in dBFS (-120 floor).

    The loudest frame rather than the mean: a short "yes" in a long silent buffer must
    not read as silence (the STT's silence gate uses it).
    """
    if audio.size == 0:
        return -120.0
    n = audio.size // frame * frame
    if n == 0:
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    else:
        frames = audio[:n].reshape(-1, frame).astype(np.float64)
        rms = float(np.sqrt(np.max(np.mean(np.square(frames), axis=1))))
    return 20.0 * float(np.log10(max(rms, 1e-6)))
