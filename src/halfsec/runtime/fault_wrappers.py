"""The fault plan's wrappers around the real engines (see ``runtime/faults.py``).

Only ``halfsec serve --fault`` applies them; the engines stay the shared, loaded ones, and
a wrapper asks the running turn's ``TurnFaults`` (a context variable) whether to act, so a
session that is not armed goes through them untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import numpy as np

from halfsec.runtime.engines import Engines
from halfsec.runtime.faults import FaultPlan, FaultSpecError, current_turn_faults
from halfsec.tts.engine import WrappedTTS


class FaultyTTS(WrappedTTS):
    """A TTS engine whose streams pass through the running turn's ``tts.*`` faults."""

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        faults = current_turn_faults()
        chunks = self.inner.synthesize(text)
        if faults is not None:
            chunks = faults.stream("tts", chunks)
        async for chunk in chunks:
            yield chunk


def _stt_hook(final: bool) -> Callable[[], None] | None:
    faults = current_turn_faults()
    return faults.stt_worker_fault(final) if faults is not None else None


def apply_faults(engines: Engines, plan: FaultPlan) -> Engines:
    """``engines`` with the plan's wrappers: the same models, shared as before.

    The STT engine must offer a ``fault_hook`` (Whisper does: the fault runs on its decode
    worker); another STT engine is refused rather than faulted somewhere unrealistic."""
    stt_kinds = {s.kind for s in plan.specs if s.kind.startswith("stt.")}
    if stt_kinds:
        if not hasattr(engines.stt, "fault_hook"):
            raise FaultSpecError(
                f"{', '.join(sorted(stt_kinds))} needs the whisper STT engine "
                f"(this server runs {engines.stt.name!r})"
            )
        engines.stt.fault_hook = _stt_hook
        if hasattr(engines.phone_stt, "fault_hook"):  # calls' recognizer: faulted alike
            engines.phone_stt.fault_hook = _stt_hook  # type: ignore[union-attr]
    return replace(engines, tts=FaultyTTS(engines.tts), faults=plan)
