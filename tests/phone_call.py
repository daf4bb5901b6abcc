"""A recording as the server's recognizer gets it from a phone call (the tests of the
phone recognizers share it): speech-trimmed, band-limited to 300-3400 Hz, mu-law coded
at 8 kHz and brought back to 16 kHz by the server's upsampler for calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from halfsec.audio.io import load_audio
from halfsec.audio.resample import LowDelayResampler
from halfsec.lab.clients.telephone_band import telephone_band
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.wire.mulaw import MULAW_RATE, mulaw_decode, mulaw_encode


def as_a_call(path: Path) -> np.ndarray:
    """``path``'s speech (0.3 s before, 1 s after) as a call carries it, 16 kHz int16."""
    pcm = load_audio(path)
    b = voiced_bounds(pcm)
    assert b is not None
    clip = pcm[max(0, b[0] - 4800) : b[1] + 16000]
    narrow = mulaw_decode(mulaw_encode(telephone_band(clip)))
    up = LowDelayResampler(MULAW_RATE, 16_000)
    return np.concatenate([up.process(narrow), up.flush()]).astype(np.int16)
