"""When a reply becomes audible: the sample that stops the voice-to-voice clock.

One threshold and one criterion for every client (the in-process file runner, the
WebSocket and WebRTC bench clients, the Pipecat harness, and the browser page, which gets
``AUDIBLE_DBFS`` from the server's ``/constants.js``), so their figures can be compared.

A *peak* criterion is used, not an RMS window: the ear hears the onset, and a window mean
would move the stop point by up to half a window depending on where the window falls.
-45 dBFS sits above dither and codec noise (Opus comfort noise, resampler ringing) and
well below the quietest syllable onset of the project's voices, so it marks where speech
starts rather than where the noise floor wobbles.
"""

from __future__ import annotations

import numpy as np

from halfsec.audio.levels import dbfs_to_int16

__all__ = ["AUDIBLE_DBFS", "first_audible_sample", "is_audible"]

AUDIBLE_DBFS: float = -45.0
"""A reply sample is audible when its magnitude exceeds this level (dB full scale)."""


def first_audible_sample(pcm: np.ndarray, dbfs: float = AUDIBLE_DBFS, start: int = 0) -> int | None:
    """Index of the first int16 sample at or after ``start`` louder than ``dbfs``, or None."""
    threshold = dbfs_to_int16(dbfs)
    seg = np.abs(pcm[start:].astype(np.int32))
    idx = np.flatnonzero(seg > threshold)
    return None if idx.size == 0 else start + int(idx[0])


def is_audible(pcm: np.ndarray, dbfs: float = AUDIBLE_DBFS) -> bool:
    """True when any sample of ``pcm`` is audible (a played packet still carries sound)."""
    return first_audible_sample(pcm, dbfs) is not None
