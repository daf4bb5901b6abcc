"""Read audio files and validate PCM.

Anything that cannot be audio is rejected here with an ``AudioInputError`` that names the
problem and the file, so later stages can trust their input: 16 kHz mono int16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from halfsec import INTERNAL_RATE
from halfsec.audio.resample import resample
from halfsec.errors import AudioInputError


def load_audio(
    path: str | Path, rate: int = INTERNAL_RATE, max_seconds: float | None = None
) -> np.ndarray:
    """Decode WAV/FLAC/OGG/... at any rate and channel count into mono int16 at ``rate``."""
    p = Path(path)
    if not p.exists():
        raise AudioInputError(f"{p}: no such file")
    if p.is_dir():
        raise AudioInputError(f"{p}: is a directory; pass audio files")
    try:
        info = sf.info(str(p))
    except Exception as e:  # soundfile raises several types for junk
        raise AudioInputError(
            f"{p}: not a readable audio file ({e}). Supported: WAV, FLAC, OGG/Opus, MP3 "
            "(whatever libsndfile decodes); convert it with e.g. `ffmpeg -i IN -ar 16000 OUT.wav`."
        ) from e
    if max_seconds is not None and info.duration > max_seconds:
        raise AudioInputError(
            f"{p}: {info.duration:.1f} s long, over the {max_seconds:.0f} s limit for one turn "
            "of input (it would be played at real-time pace). Cut it, or raise "
            "audio.max_input_s in the config."
        )
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioInputError(f"{p}: decoding failed ({e})") from e
    return to_pcm16(data, sr, rate, name=str(p))


def to_pcm16(
    data: np.ndarray, sr: int, rate: int = INTERNAL_RATE, name: str = "audio"
) -> np.ndarray:
    """Validate float or int samples (frames x channels or 1-D), mix to mono, resample, int16."""
    if data.size == 0:
        raise AudioInputError(f"{name}: contains no samples")
    x = np.asarray(data)
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)):
            raise AudioInputError(f"{name}: contains NaN or infinite samples; not valid audio")
        x = x.astype(np.float32)
    elif x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    elif x.dtype == np.int32:
        x = x.astype(np.float32) / 2147483648.0
    else:
        raise AudioInputError(f"{name}: unsupported sample type {x.dtype}; use int16 or float")
    if x.ndim == 2:
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise AudioInputError(f"{name}: expected mono or (frames, channels), got shape {x.shape}")
    if sr <= 0:
        raise AudioInputError(f"{name}: invalid sample rate {sr}")
    x = resample(x, sr, rate)
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def pcm16_from_bytes(data: bytes, max_bytes: int = 64_000) -> np.ndarray:
    """Decode little-endian PCM16 bytes from a transport, rejecting odd or oversized frames."""
    if len(data) == 0:
        raise AudioInputError("empty audio frame")
    if len(data) % 2:
        raise AudioInputError(f"audio frame of {len(data)} bytes is not 16-bit PCM (odd length)")
    if len(data) > max_bytes:
        raise AudioInputError(
            f"audio frame of {len(data)} bytes exceeds the {max_bytes} byte limit"
        )
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def write_wav(path: str | Path, pcm: np.ndarray, rate: int) -> None:
    sf.write(str(path), pcm.astype(np.int16), rate, subtype="PCM_16")
