"""Speech to text: engines behind one streaming interface (``engine.STTEngine``).

``create_stt(STTOptions(...))`` loads an engine; ``available_engines()`` says which ones
this machine can run.  Model code is imported only when an engine is created, so
importing this package stays cheap.
"""

from halfsec.stt.engine import STTEngine, STTStream, Transcript
from halfsec.stt.factory import available_engines, create_stt
from halfsec.stt.options import STTOptions

__all__ = [
    "STTEngine",
    "STTOptions",
    "STTStream",
    "Transcript",
    "available_engines",
    "create_stt",
]
