"""The codecs a jitter buffer plays out: what it needs from one, and the two it uses.

The buffer (``wire.jitter``) decides *when* a frame plays and *whether* it is real,
rebuilt or concealed; the codec decides what those sound like.  Keeping the two apart
lets the buffer's policy be tested on tagged PCM frames (exact, cheap) and run on Opus
in production without a line of codec code in the policy.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from halfsec import FRAME_MS, INTERNAL_RATE
from halfsec.errors import AudioInputError
from halfsec.wire.opus import OpusDecoder

__all__ = ["FrameDecoder", "OpusFrameDecoder", "Pcm16FrameDecoder"]


class FrameDecoder(Protocol):
    """What the buffer needs from a codec: decode, conceal, and (optionally) FEC."""

    frame_samples: int

    def decode(self, payload: bytes) -> np.ndarray: ...

    def conceal(self) -> np.ndarray: ...

    def decode_fec(self, next_payload: bytes) -> np.ndarray | None: ...


class OpusFrameDecoder:
    """Opus packets -> int16 frames at ``sample_rate`` (16 kHz for the pipeline)."""

    def __init__(self, sample_rate: int = INTERNAL_RATE, frame_ms: int = FRAME_MS) -> None:
        self._dec = OpusDecoder(sample_rate, 1, frame_ms)
        self.frame_samples = self._dec.frame_samples

    def decode(self, payload: bytes) -> np.ndarray:
        return self._dec.decode(payload)

    def conceal(self) -> np.ndarray:
        return self._dec.conceal()

    def decode_fec(self, next_payload: bytes) -> np.ndarray | None:
        return self._dec.decode_fec(next_payload)


class Pcm16FrameDecoder:
    """Raw little-endian int16 frames.  No FEC; PLC repeats the last frame, faded by
    ``fade`` per repetition, so a gap sounds like a short sustain, not a click or a
    hard drop to zero."""

    def __init__(self, frame_samples: int = INTERNAL_RATE * FRAME_MS // 1000, fade: float = 0.5):
        self.frame_samples = frame_samples
        self._fade = fade
        self._last = np.zeros(frame_samples, np.int16)
        self._gain = 1.0

    def decode(self, payload: bytes) -> np.ndarray:
        if len(payload) != self.frame_samples * 2:
            raise AudioInputError(
                f"PCM16 frame must be {self.frame_samples * 2} bytes, got {len(payload)}"
            )
        pcm = np.frombuffer(payload, dtype="<i2").astype(np.int16)
        self._last = pcm
        self._gain = 1.0
        return pcm

    def conceal(self) -> np.ndarray:
        start = self._gain
        self._gain *= self._fade
        ramp = np.linspace(start, self._gain, self.frame_samples)
        return (self._last.astype(np.float32) * ramp).astype(np.int16)

    def decode_fec(self, next_payload: bytes) -> np.ndarray | None:
        return None
