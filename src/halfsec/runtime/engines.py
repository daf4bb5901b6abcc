"""The engines a process shares between its sessions.

Models are loaded once; each engine runs its inference on workers of its own with explicit
thread counts, sized for the moment each runs on a 2-core machine: the final transcript
and then the first clause's TTS each get both cores (they run one after the other), while
partial transcripts run at the lowest CPU priority and VAD stays inline on the loop.

``fallback`` holds what the turn's deadlines fall back to (``runtime/fallback.py``), and
``faults`` the lab's fault plan when ``halfsec serve --fault`` asked for one."""

from __future__ import annotations

from dataclasses import dataclass

from halfsec.logic.engine import LogicEngine
from halfsec.runtime.fallback import FallbackEngines
from halfsec.runtime.faults import FaultPlan
from halfsec.stt.engine import STTEngine
from halfsec.tts.engine import TTSEngine


@dataclass(slots=True)
class Engines:
    stt: STTEngine
    logic: LogicEngine
    tts: TTSEngine
    fallback: FallbackEngines | None = None
    faults: FaultPlan | None = None
    phone_stt: STTEngine | None = None
    """The recognizer of phone calls (``stt.phone_model``); ``None``: calls use ``stt``."""

    def warmup(self) -> None:
        self.stt.warmup()
        if self.phone_stt is not None:
            self.phone_stt.warmup()
        self.tts.warmup()
        if self.fallback is not None:
            self.fallback.warmup(self.tts)

    async def aclose(self) -> None:
        """Release network clients (the LLM's, a remote STT's or TTS's HTTP session);
        models stay until exit."""
        for engine in (self.stt, self.logic, self.tts):
            closer = getattr(engine, "aclose", None)
            if closer is not None:
                await closer()
