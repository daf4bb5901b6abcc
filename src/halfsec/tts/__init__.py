"""Text to speech: engines behind one streaming interface (``engine.TTSEngine``).

Importing this package is cheap: engine modules (onnxruntime, libespeak-ng) load only
when ``create_tts`` builds one.
"""

from halfsec.tts.engine import TTSEngine
from halfsec.tts.factory import available_engines, create_tts
from halfsec.tts.options import TTSOptions

__all__ = ["TTSEngine", "TTSOptions", "available_engines", "create_tts"]
