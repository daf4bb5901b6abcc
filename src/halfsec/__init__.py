"""halfsec: streaming voice response pipelines that answer in under half a second.

Two wings on one shared floor (docs/architecture.md draws it; tests/test_architecture.py
enforces which package may import which):

The product wing
  ``audio`` decode, resample, 20 ms framing -> ``turn`` VAD and end of turn -> ``stt``
  speech to text -> ``logic`` intent and reply text -> ``tts`` reply audio, run per
  conversation by ``runtime``; served over WebSocket and WebRTC by ``server``, and from
  near the user by ``edge``; many servers sit behind Envoy, nearest healthy zone
  first, through ``gateway``.

The lab wing
  ``lab.clients`` talk to a server as users do (Python WebSocket/WebRTC, Chromium);
  ``lab.bench`` drives them over a corpus; ``lab.netem`` impairs the network between;
  ``lab.report`` turns runs into JSON, HTML, terminal tables, budgets and comparisons;
  ``lab.peer`` runs Pipecat beside halfsec on the same models; ``lab.load`` runs many
  callers at once (ramps, soaks); ``lab.eot`` evaluates end-of-turn policies;
  ``lab.regions`` emulates near and far regions behind Envoy. ``lab`` holds them.

The shared floor
  ``wire`` what client and server both speak (protocol, Opus, jitter buffer, RTC);
  ``measure`` the one rule for each measurement (end of speech, audible, v2v, stages,
  percentiles, WER); ``trace`` OpenTelemetry and every span name; ``frames``, ``clock``,
  ``errors``, ``options_check`` (the one range check every options object runs).

``cli`` is the command line on top of both wings.

The Python API (docs/api.md): the names a program embedding halfsec needs, importable
from the top, e.g. `from halfsec import load_config, build_engines, open_session`.  They
are resolved on first use (a module-level `__getattr__`, PEP 562), so `import halfsec` loads
nothing but this file: a lab client or a tool that only wants the version or a constant
never pulls in numpy, onnxruntime or the models.  `_API` says where each name lives.
"""

import importlib as _importlib
import os as _os
from typing import Any as _Any

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

_API: dict[str, str] = {
    # configuration, engines, conversations
    "HalfsecConfig": "halfsec.config",
    "load_config": "halfsec.config",
    "Engines": "halfsec.runtime.engines",
    "build_engines": "halfsec.runtime.build",
    "open_session": "halfsec.runtime.build",
    "VoiceSession": "halfsec.runtime.session",
    "SessionOptions": "halfsec.runtime.options",
    "DialogueState": "halfsec.logic.state",
    "run_file": "halfsec.runtime.file_run",
    "run_conversation": "halfsec.runtime.file_run",
    "FileRun": "halfsec.runtime.file_run",
    "load_audio": "halfsec.audio.io",
    "frames_of": "halfsec.audio.framing",
    # what a session emits
    "Frame": "halfsec.frames",
    "AudioFrame": "halfsec.frames",
    "SpeechStarted": "halfsec.frames",
    "SpeechPaused": "halfsec.frames",
    "SpeechResumed": "halfsec.frames",
    "EndOfTurn": "halfsec.frames",
    "PartialTranscript": "halfsec.frames",
    "FinalTranscript": "halfsec.frames",
    "IntentFrame": "halfsec.frames",
    "ReplyText": "halfsec.frames",
    "ReplyAudio": "halfsec.frames",
    "ReplyDone": "halfsec.frames",
    "Interruption": "halfsec.frames",
    "TimingMark": "halfsec.frames",
    "ErrorFrame": "halfsec.frames",
    # engines of one's own (or from a plugin package: docs/integrations.md)
    "STTEngine": "halfsec.stt.engine",
    "TTSEngine": "halfsec.tts.engine",
    "LogicEngine": "halfsec.logic.engine",
    # serving
    "VoiceServer": "halfsec.server.app",
    "ServerOptions": "halfsec.server.options",
    "start_server": "halfsec.server.app",
    # errors
    "HalfsecError": "halfsec.errors",
    "AudioInputError": "halfsec.errors",
    "ConfigError": "halfsec.errors",
    "EngineUnavailable": "halfsec.errors",
    "ModelIntegrityError": "halfsec.models",
}
"""Public name -> the module that defines it."""

__all__ = ["FRAME_MS", "FRAME_SAMPLES", "INTERNAL_RATE", "__version__", *_API]


def __getattr__(name: str) -> _Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'halfsec' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # resolved once; later lookups never come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
