"""Silero VAD v6 through onnxruntime, without torch.

The ONNX file ships inside faster-whisper (``assets/silero_vad_v6.onnx``), so no extra
download and no multi-GB torch.  The model takes 512-sample (32 ms at 16 kHz) windows
plus 64 samples of context and carries an LSTM state between calls; each call costs
~70 us, so the detector runs it inline on the event loop: a thread hop would cost more
than the inference (see ``benchmarks/vad_bench.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from halfsec.errors import EngineUnavailable
from halfsec.models import verify_model_file

WINDOW = 512
CONTEXT = 64
WINDOW_MS = 32.0


def silero_model_path() -> Path:
    """The packaged ONNX file, checked against the pinned SHA-256 (``halfsec.models``)."""
    try:
        import faster_whisper
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise EngineUnavailable(
            "Silero VAD needs faster-whisper: pip install faster-whisper"
        ) from e
    p = Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"
    if not p.exists():
        raise EngineUnavailable(f"Silero VAD model missing at {p}; reinstall faster-whisper")
    return verify_model_file("silero/silero_vad_v6.onnx", p)


_SESSION: ort.InferenceSession | None = None


def _session() -> ort.InferenceSession:
    """One shared ONNX session per process: the state lives in each ``SileroVAD``."""
    global _SESSION
    if _SESSION is None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4
        _SESSION = ort.InferenceSession(
            str(silero_model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    return _SESSION


def loaded() -> bool:
    """Has this process loaded the model (``runtime/turn_models`` preloads it once)?"""
    return _SESSION is not None


class SileroVAD:
    """Streaming speech probability, one value per 32 ms window."""

    def __init__(self) -> None:
        self._sess = _session()
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, pcm: np.ndarray) -> list[float]:
        """Feed int16 samples; returns the probability of each window completed."""
        x = pcm.astype(np.float32) / 32768.0
        buf = np.concatenate([self._pending, x])
        probs: list[float] = []
        n = buf.size // WINDOW
        for i in range(n):
            win = buf[i * WINDOW : (i + 1) * WINDOW]
            inp = np.concatenate([self._context, win])[None, :]
            out, self._h, self._c = self._sess.run(None, {"input": inp, "h": self._h, "c": self._c})
            self._context = win[-CONTEXT:]
            probs.append(float(np.asarray(out).reshape(-1)[0]))
        self._pending = buf[n * WINDOW :]
        return probs


def speech_segments(
    pcm: np.ndarray,
    threshold: float = 0.5,
    neg_threshold: float = 0.35,
    min_silence_ms: float = 300.0,
) -> list[tuple[int, int]]:
    """Offline speech segments (sample ranges) of a whole clean recording.

    Used as the *reference* VAD of the latency lab: the end of the last segment is refined
    to the last frame above the noise floor, because Silero's probability decays ~100 ms
    after the real end and the v2v clock must start at the real last voiced sample."""
    vad = SileroVAD()
    probs = vad.push(pcm)
    segs: list[tuple[int, int]] = []
    start: int | None = None
    last_speech = 0
    for i, p in enumerate(probs):
        if p >= threshold:
            if start is None:
                start = i
            last_speech = i
        elif start is not None and p < neg_threshold:
            if (i - last_speech) * WINDOW_MS >= min_silence_ms:
                segs.append((start * WINDOW, (last_speech + 1) * WINDOW))
                start = None
    if start is not None:
        segs.append((start * WINDOW, (last_speech + 1) * WINDOW))
    return segs
