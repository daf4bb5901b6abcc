"""Text to speech: engines behind one streaming interface (``engine.TTSEngine``).

Importing this package is cheap: engine modules (onnxruntime, libespeak-ng) load only
when ``create_tts`` builds one.
"""

from .engine import TTSEngine
from .factory import available_engines, create_tts
from .options import TTSOptions

__all__ = ["TTSEngine", "TTSOptions", "available_engines", "create_tts"]
