"""halfsec: streaming voice response pipelines that answer in under half a second.

The package is laid out by concern; a frame travels
``audio`` (decode, resample, 20 ms framing) -> ``turn`` (VAD, end of turn) ->
``stt`` (speech to text) -> ``logic`` (intent, reply text) -> ``tts`` (reply audio),
orchestrated per session by ``runtime``.  ``cli`` is the command line.
"""

import os as _os

# numpy's OpenBLAS spins worker threads on every moderate matrix product; on a 2-core
# machine that steals the core that TTS or VAD needs.  Inference threads are set per
# engine; library thread pools stay at one.  (setdefault: a user's explicit choice wins.)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

__version__ = "0.1.0"

INTERNAL_RATE = 16_000
"""Every stage inside the pipeline speaks 16 kHz mono int16."""

FRAME_MS = 20
FRAME_SAMPLES = INTERNAL_RATE * FRAME_MS // 1000
