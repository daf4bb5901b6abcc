"""A recording as a phone line carries it: 8 kHz, 300-3400 Hz, before mu-law coding.

The lab's phone client sends what a caller's voice becomes on the telephone network, so
the STT is tested on the audio it would get from a call: the recording is resampled to
8 kHz and band-limited to G.712's 300-3400 Hz (raised-cosine edges, so no ringing), then
``wire.mulaw`` codes it as Twilio would.

The filter is zero-phase and runs over the whole recording before it is streamed, so
every sample stays where it was: the phone run and the wideband run of one recording
share their reference end of speech, and their voice-to-voice figures can be paired.
A causal filter would delay the speech by its group delay (a few ms) -- far less than a
real phone network adds (tens of ms of codec, jitter buffer and PSTN transit), which the
bench does not model and does not pretend to.
"""

from __future__ import annotations

import numpy as np

from halfsec import INTERNAL_RATE
from halfsec.audio.resample import resample
from halfsec.wire.mulaw import MULAW_RATE

TELEPHONE_BAND_HZ = (300.0, 3400.0)
"""G.712's pass band for a telephone channel."""
EDGE_HZ = 100.0
"""Width of each raised-cosine edge, centred on the band's limits."""


def _edge(f: np.ndarray, at: float) -> np.ndarray:
    """0 below ``at - EDGE_HZ/2``, 1 above ``at + EDGE_HZ/2``, a raised cosine between."""
    x = np.clip((f - (at - EDGE_HZ / 2)) / EDGE_HZ, 0.0, 1.0)
    return np.asarray(0.5 - 0.5 * np.cos(np.pi * x))


def telephone_band(pcm: np.ndarray, rate: int = INTERNAL_RATE) -> np.ndarray:
    """int16 ``pcm`` at ``rate`` -> int16 at 8 kHz, 300-3400 Hz."""
    x = resample(pcm, rate, MULAW_RATE).astype(np.float64)
    if x.size == 0:
        return np.zeros(0, dtype=np.int16)
    f = np.fft.rfftfreq(x.size, 1.0 / MULAW_RATE)
    low, high = TELEPHONE_BAND_HZ
    gain = _edge(f, low) * (1.0 - _edge(f, high))
    y = np.fft.irfft(np.fft.rfft(x) * gain, n=x.size)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)
