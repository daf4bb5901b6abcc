"""Smart Turn v3.2: an audio model's opinion on whether the user has finished.

The model (Daily's Smart Turn v3.2, BSD-2-Clause, ~8.7 MB) is a Whisper-tiny encoder
with a classifier head: from the last <= 8 s of the turn's audio it gives the
probability that the speaker is done, judged from intonation and rhythm rather than
words.  Its CPU ONNX file ships inside the ``pipecat-ai`` wheel; halfsec loads that file
with onnxruntime and never imports pipecat (a whole framework and loguru at import
time): the package is only *located* with ``importlib.util.find_spec``.  The file is
pinned by SHA-256 in ``halfsec.models``.

Cost on the 2-core AVX-512 EPYC: ~24 ms per call on one thread (~14 ms on two) plus
~7 ms of features (``turn/mel.py``).  It runs in a worker thread of its own, never on
the event loop, and a caller gives it a deadline: a late verdict is worth nothing to an
end-of-turn decision that has already been made."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from halfsec.errors import EngineUnavailable
from halfsec.models import verify_model_file
from halfsec.turn.mel import last_seconds, log_mel

MODEL_KEY = "smart_turn/smart-turn-v3.2-cpu.onnx"
LICENSE = "BSD-2-Clause (Daily, Smart Turn v3.2, shipped in pipecat-ai 1.14)"


def smart_turn_model_path() -> Path:
    """The ONNX file inside the installed pipecat-ai, checked against its pinned digest."""
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable(
            "Smart Turn v3.2 ships inside pipecat-ai: pip install 'halfsec[peer]' "
            "(or choose session.end_of_turn=transcript)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    p = root / "audio" / "turn" / "smart_turn" / "data" / "smart-turn-v3.2-cpu.onnx"
    if not p.exists():
        raise EngineUnavailable(f"Smart Turn model missing at {p}; reinstall pipecat-ai==1.14.0")
    return verify_model_file(MODEL_KEY, p)


class SmartTurn:
    """One loaded model, shared by the sessions of a process; calls are serialised on
    its own single worker thread (the ONNX session uses ``threads`` intra-op threads)."""

    def __init__(self, threads: int = 1, path: Path | None = None) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 4
        self._sess = ort.InferenceSession(
            str(path or smart_turn_model_path()),
            sess_options=opts,
            providers=["CPUExecutionProvider"],
        )
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="smart-turn")
        self.last_ms = 0.0
        """Compute time of the latest call (features and inference)."""

    def probability(self, pcm: np.ndarray) -> float:
        """P(turn complete) from the audio so far (16 kHz; int16 or float in [-1, 1])."""
        t0 = time.perf_counter()
        feats = log_mel(last_seconds(pcm))[None, :, :]
        out = self._sess.run(None, {"input_features": feats})
        self.last_ms = (time.perf_counter() - t0) * 1000.0
        return float(np.asarray(out[0]).reshape(-1)[0])

    async def predict(self, pcm: np.ndarray, deadline_ms: float) -> float | None:
        """``probability`` off the event loop; None when it is not ready in time (the
        call still finishes in its thread, and its result is dropped)."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._pool, self.probability, pcm)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), deadline_ms / 1000.0)
        except TimeoutError:
            return None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
