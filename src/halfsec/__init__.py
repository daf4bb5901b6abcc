"""halfsec: streaming voice response pipelines that answer in under half a second.

Two wings on one shared floor (docs/architecture.md draws it; tests/test_architecture.py
enforces which package may import which):

The product wing
  ``audio`` decode, resample, 20 ms framing -> ``turn`` VAD and end of turn -> ``stt``
  speech to text -> ``logic`` intent and reply text -> ``tts`` reply audio, run per
  conversation by ``runtime``; served over WebSocket and WebRTC by ``server``, and from
  near the user by ``edge``.

The lab wing
  ``lab.clients`` talk to a server as users do (Python WebSocket/WebRTC, Chromium);
  ``lab.bench`` drives them over a corpus; ``lab.netem`` impairs the network between;
  ``lab.report`` turns runs into JSON, HTML, terminal tables, budgets and comparisons;
  ``lab.peer`` runs Pipecat beside halfsec on the same models. ``lab`` holds them.

The shared floor
  ``wire`` what client and server both speak (protocol, Opus, jitter buffer, RTC);
  ``measure`` the one rule for each measurement (end of speech, audible, v2v, stages,
  percentiles, WER); ``trace`` OpenTelemetry and every span name; ``frames``, ``clock``,
  ``errors``.

``cli`` is the command line on top of both wings.
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
