"""Whisper-style log-mel features in numpy, the input Smart Turn v3 was trained on.

Smart Turn v3.2 is a Whisper-encoder classifier: it expects exactly the features of
``transformers.WhisperFeatureExtractor(chunk_length=8)`` on 8 s of 16 kHz audio
(waveform normalised to zero mean and unit variance, 400-point periodic Hann STFT every
160 samples, power spectrum through 80 Slaney mel filters, log10, floor at the maximum
minus 8, then ``(x + 4) / 4``).  Importing transformers or pipecat for this would pull
torch or a whole framework into the runtime, so the math is here (~3 ms for 8 s);
``tests/test_smart_turn.py`` holds it to pipecat's extractor."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

RATE = 16_000
N_FFT = 400
HOP = 160
N_MELS = 80
SECONDS = 8
SAMPLES = RATE * SECONDS
FRAMES = SAMPLES // HOP
"""800 feature frames for 8 s."""


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear to 1 kHz, logarithmic above (librosa's default)."""
    hz = np.asarray(hz, dtype=np.float64)
    lin = 3.0 * hz / 200.0
    log = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz >= 1000.0, log, lin)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    lin = 200.0 * mel / 3.0
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log, lin)


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = RATE) -> np.ndarray:
    """Triangular filters with Slaney area normalisation, shape (n_fft // 2 + 1, n_mels)."""
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(rate / 2)), n_mels + 2)
    )
    bins = np.linspace(0, rate // 2, n_fft // 2 + 1)
    slopes = edges[None, :] - bins[:, None]
    width = np.diff(edges)
    down = -slopes[:, :-2] / width[:-1]
    up = slopes[:, 2:] / width[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]


_FILTERS = mel_filterbank()
_WINDOW = np.hanning(N_FFT + 1)[:-1]  # periodic Hann, as torch.hann_window


def last_seconds(pcm: np.ndarray) -> np.ndarray:
    """The last 8 s of int16 (or float) audio as float32 in [-1, 1], zero-padded at the
    start: the model reads the end of the turn at a fixed place."""
    x = pcm.astype(np.float32)
    if pcm.dtype == np.int16:
        x = x / 32768.0
    x = x[-SAMPLES:]
    if x.size < SAMPLES:
        x = np.concatenate([np.zeros(SAMPLES - x.size, dtype=np.float32), x])
    return x


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Features (80, 800) float32 of exactly 8 s of float audio (see ``last_seconds``)."""
    if audio.shape != (SAMPLES,):
        raise ValueError(f"log_mel needs {SAMPLES} samples (8 s at 16 kHz), got {audio.shape}")
    x = audio.astype(np.float32)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    pad = N_FFT // 2
    padded = np.pad(x.astype(np.float64), (pad, pad), mode="reflect")
    frames = sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2  # (frames + 1, bins)
    mel = np.log10(np.maximum(power @ _FILTERS, 1e-10)).T[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)
