"""G.711 mu-law, the telephone network's 8-bit audio: int16 PCM <-> one byte a sample.

Phone calls reach halfsec as mu-law at 8 kHz (Twilio Media Streams: ``audio/x-mulaw``),
and the lab's phone client codes its recordings the same way, so both ends use this one
codec.  It is two lookup tables built once with numpy (all 65 536 int16 values -> code,
all 256 codes -> int16): a conversion is one fancy index, as fast as a C loop.  Python's
``audioop`` would do the same, but it is deprecated since 3.11 and removed in 3.13
(PEP 594), warns on import, and the ``audioop-lts`` backport would be one more compiled
dependency for a client that should install anywhere.

The tables follow G.711's mu-law on 14-bit samples (the two low bits of int16 dropped,
bias 0x84 on the 16-bit scale, clip at 32635), bit for bit what ``audioop.lin2ulaw`` and
``ulaw2lin`` give: code 0xFF is silence, 0x80 and 0x00 are +/-32124, and every code is
stored bit-inverted, as on the wire."""

from __future__ import annotations

import numpy as np

__all__ = ["MULAW_RATE", "MULAW_SILENCE", "mulaw_decode", "mulaw_encode"]

MULAW_RATE = 8_000
"""Telephone audio: 8000 samples a second, one byte each."""
MULAW_SILENCE = 0xFF
"""The code of a zero sample (what a line carries between words)."""

_BIAS = 0x84
_CLIP_14 = 8159
"""The largest 14-bit magnitude mu-law codes (32635 on the 16-bit scale)."""
_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
"""Upper end of each of the eight segments, for biased 14-bit magnitudes."""


def _decode_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _encode_table() -> np.ndarray:
    # G.711 codes 14-bit samples: drop the two low bits first (an arithmetic shift, so a
    # small negative sample stays negative), then bias, find the segment, keep 4 bits.
    x = np.arange(-32768, 32768, dtype=np.int32) >> 2
    negative = x < 0
    magnitude = np.minimum(np.where(negative, -x, x), _CLIP_14) + (_BIAS >> 2)
    segment = np.searchsorted(_SEGMENT_ENDS, magnitude)
    mantissa = (magnitude >> (np.minimum(segment, 7) + 1)) & 0x0F
    code = np.where(segment > 7, 0x7F, (segment << 4) | mantissa)
    codes = code ^ np.where(negative, 0x7F, 0xFF)
    # Index by the sample's bit pattern (int16 viewed as uint16): 0..32767, then -32768..-1.
    return np.roll(codes.astype(np.uint8), -32768)


_DECODE = _decode_table()
_ENCODE = _encode_table()


def mulaw_encode(pcm: np.ndarray) -> bytes:
    """int16 samples -> mu-law bytes (one per sample)."""
    samples = np.ascontiguousarray(pcm, dtype=np.int16)
    return bytes(_ENCODE[samples.view(np.uint16)].tobytes())


def mulaw_decode(data: bytes) -> np.ndarray:
    """mu-law bytes -> int16 samples."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]
