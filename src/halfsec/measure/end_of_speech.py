"""The reference end of speech: where the voice-to-voice clock starts.

The clock starts at the *last voiced sample* of the user's speech as the client sent it,
found offline on the clean recording (never by the pipeline under test).  Silero marks
speech windows generously (its probability decays ~100 ms after speech ends), so the end
of its last segment is refined with frame energy: the last 10 ms frame that stands clearly
above the recording's own noise floor."""

from __future__ import annotations

import numpy as np

from halfsec.turn.vad import speech_segments

_HOP = 160  # 10 ms at 16 kHz


def _frame_db(pcm: np.ndarray) -> np.ndarray:
    n = pcm.size // _HOP
    x = pcm[: n * _HOP].astype(np.float64).reshape(n, _HOP) / 32768.0
    rms = np.sqrt(np.mean(x * x, axis=1))
    return np.asarray(20.0 * np.log10(np.maximum(rms, 1e-6)))


def voiced_bounds(pcm: np.ndarray, rate: int = 16_000) -> tuple[int, int] | None:
    """(first voiced sample, last voiced sample + 1) of a 16 kHz recording, or None."""
    if rate != 16_000:
        raise ValueError("reference VAD runs at 16 kHz")
    segs = speech_segments(pcm)
    if not segs:
        return None
    start, end = segs[0][0], segs[-1][1]
    db = _frame_db(pcm)
    if db.size == 0:
        return start, end
    floor = float(np.percentile(db, 10))
    peak = float(np.percentile(db[start // _HOP : max(start // _HOP + 1, end // _HOP)], 95))
    # Voiced = within 35 dB of the speech peak and 12 dB above the floor.
    thr = max(floor + 12.0, peak - 35.0)
    lo = max(0, start // _HOP - 10)
    hi = min(db.size, end // _HOP + 10)
    idx = np.flatnonzero(db[lo:hi] > thr)
    if idx.size == 0:
        return start, end
    return (lo + int(idx[0])) * _HOP, (lo + int(idx[-1]) + 1) * _HOP


def last_voiced_sample(pcm: np.ndarray, rate: int = 16_000) -> int | None:
    """Index one past the last voiced sample (the v2v clock's start), or None if no speech."""
    b = voiced_bounds(pcm, rate)
    return None if b is None else b[1]
