"""What a turn falls back to when a stage is late or fails, and the names of the rungs.

The ladder, rung by rung (``runtime/ladder.py`` walks it, ``runtime/deadlines.py`` says
when a stage is late):

* STT final late or failing -> the best partial transcript of the turn
  (``stt.partial``), or PocketSphinx on the turn's audio when there is none
  (``stt.pocketsphinx``);
* LLM/logic silent -> "One moment." is spoken (``logic.filler``) while the reply is
  asked for once more (``logic.retry``); that failing too -> the domain's template
  answer (``logic.templates``); a reply that goes quiet half-way ends there
  (``logic.cut``);
* Piper late or failing -> espeak-ng for the rest of the turn (``tts.espeak``);
* nothing left -> a spoken apology rendered at start-up (``turn.apology``), then
  ``reply.done``: never silence.

Which rungs answered a turn goes into its ``reply.done`` event (``fallbacks``), a
``fallback`` timing mark each (with the reason), its spans and the bench's turn record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from halfsec.logic.domain_logic import DomainLogic
from halfsec.logic.engine import LogicEngine, Understanding
from halfsec.stt.engine import STTEngine
from halfsec.tts.engine import TTSEngine

log = logging.getLogger(__name__)

STT_PARTIAL = "stt.partial"
STT_POCKETSPHINX = "stt.pocketsphinx"
LOGIC_FILLER = "logic.filler"
LOGIC_RETRY = "logic.retry"
LOGIC_TEMPLATES = "logic.templates"
LOGIC_CUT = "logic.cut"
TTS_ESPEAK = "tts.espeak"
TURN_APOLOGY = "turn.apology"
RUNGS = (
    STT_PARTIAL,
    STT_POCKETSPHINX,
    LOGIC_FILLER,
    LOGIC_RETRY,
    LOGIC_TEMPLATES,
    LOGIC_CUT,
    TTS_ESPEAK,
    TURN_APOLOGY,
)
"""Every rung's name, as ``reply.done``'s ``fallbacks`` and the ``fallback`` mark give it."""

FILLER_TEXT = "One moment."
APOLOGY_TEXT = "Sorry, something went wrong on my side. Could you say that again?"
SOURCE_FILLER = "filler"
"""``ReplyText.source`` of the filler clause."""

Templates = Callable[[Understanding], list[str]]


@dataclass(slots=True)
class FallbackEngines:
    """The engines and canned answers the ladder falls back to (shared, like ``Engines``)."""

    stt: STTEngine | None = None
    """PocketSphinx: a different recognizer, not another Whisper that may hang the same way."""
    tts: TTSEngine | None = None
    """espeak-ng: first audio in ~1 ms, no model."""
    templates: Templates | None = None
    """The domain's answer to an understanding (its template, or the domain's fallback
    sentence); None for logic engines without templates."""
    apology: tuple[np.ndarray, int] | None = None
    """``APOLOGY_TEXT`` as int16 audio and its rate, rendered once by ``warmup``: the last
    rung must not depend on an engine working at that moment."""

    def warmup(self, primary_tts: TTSEngine) -> None:
        """Warm the fallback engines and render the apology (in the primary voice when
        it can render offline, else espeak-ng's)."""
        for engine in (self.stt, self.tts):
            if engine is not None:
                engine.warmup()
        for tts in (primary_tts, self.tts):
            if tts is None:
                continue
            render = getattr(tts, "render_blocking", None)
            if render is None:
                continue
            try:
                pcm = np.asarray(render(APOLOGY_TEXT), dtype=np.int16)
            except Exception:  # a voice that cannot render offline: try the next
                log.warning("could not render the apology with %s", tts.name, exc_info=True)
                continue
            if pcm.size:
                self.apology = (pcm, int(tts.sample_rate))
                return


def domain_templates(logic: LogicEngine) -> Templates | None:
    """The template rung for a domain logic engine: its template answer to the
    understanding, else the domain's own fallback sentence."""
    if not isinstance(logic, DomainLogic):
        return None

    def answer(understanding: Understanding) -> list[str]:
        return logic.template_reply(understanding) or [logic.domain.fallback]

    return answer
