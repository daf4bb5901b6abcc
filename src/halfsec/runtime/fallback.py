"""What a turn falls back to when a stage is late or fails, and the names of the rungs.

The ladder, rung by rung (``runtime/ladder.py`` walks it, ``runtime/deadlines.py`` says
when a stage is late):

* STT final late or failing -> the best partial transcript of the turn
  (``stt.partial``), or the backup recognizer on the turn's audio when there is none
  (``stt.pocketsphinx``; ``stt.whisper`` behind a remote engine, see
  :func:`backup_engines`);
* LLM/logic silent -> "One moment." is spoken (``logic.filler``) while the reply is
  asked for once more (``logic.retry``); that failing too -> the domain's template
  answer (``logic.templates``); a reply that goes quiet half-way ends there
  (``logic.cut``);
* Piper late or failing -> espeak-ng for the rest of the turn (``tts.espeak``; a
  remote voice falls back to Piper, ``tts.piper``);
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
STT_WHISPER = "stt.whisper"
LOGIC_FILLER = "logic.filler"
LOGIC_RETRY = "logic.retry"
LOGIC_TEMPLATES = "logic.templates"
LOGIC_CUT = "logic.cut"
TTS_ESPEAK = "tts.espeak"
TTS_PIPER = "tts.piper"
TURN_APOLOGY = "turn.apology"
RUNGS = (
    STT_PARTIAL,
    STT_POCKETSPHINX,
    STT_WHISPER,
    LOGIC_FILLER,
    LOGIC_RETRY,
    LOGIC_TEMPLATES,
    LOGIC_CUT,
    TTS_ESPEAK,
    TTS_PIPER,
    TURN_APOLOGY,
)
"""Every rung's name, as ``reply.done``'s ``fallbacks`` and the ``fallback`` mark give it."""

FILLER_TEXT = "One moment."
APOLOGY_TEXT = "Sorry, something went wrong on my side. Could you say that again?"
SOURCE_FILLER = "filler"
"""``ReplyText.source`` of the filler clause."""

Templates = Callable[[Understanding], list[str]]

FALLBACK_NICE = 10
"""Nice value of the backup recognizer's thread (PocketSphinx; Linux, per thread).  It
decodes a faulted turn's whole audio at once when the final is late or failed and no
partial came (~90 ms of CPU per second of speech), and on 2 cores that burst landed on
the healthy session beside it: its Whisper final took 140-180 ms instead of 75
(``fault_bench.py --workers 2``, per-turn breakdown, 2026-12-01).  The faulted turn has a
fault's budget (p95 <= 1000 ms) and the healthy one its own (+50 ms), so the fallback
yields: at nice 10 (scheduler weight 110 against 1024) it runs in the gaps of the
healthy turns' work.  Measured: healthy Δp95 beside stt.stall/stt.error +119.5/-11.7 at
nice 0 (08:20 run), +14.6/+12.4 at nice 10, +26.6/+128.1 at nice 5 (healthy finals still
at 140 ms beside a PocketSphinx decode).  The price: on a machine busy for longer than
the backup's own deadline (450 ms) the faulted turn gets the apology instead."""

REMOTE_ENGINES = frozenset({"openai"})
"""Engines that run on another machine: they fail the ways a network does (a server
down, a request that never comes back), which a local model on this machine does not."""


def backup_engines(stt_engine: str, tts_engine: str) -> tuple[str | None, str | None]:
    """The engine each stage falls back to (STT, TTS), by the configured engines' names;
    None: no backup for that stage.

    A remote engine falls back to the local default (Whisper, Piper): the remote one is
    there for quality or to spare this machine's CPU, and when it is late the best this
    machine can do is what it would have done alone.  The local defaults fall back to
    the light engines (PocketSphinx, espeak-ng), which answer in a few ms and cannot hang
    the way their primaries do; those two have no backup."""
    stt = "whisper" if stt_engine in REMOTE_ENGINES else "pocketsphinx"
    tts = "piper" if tts_engine in REMOTE_ENGINES else "espeak"
    return (
        None if stt_engine == "pocketsphinx" else stt,
        None if tts_engine == "espeak" else tts,
    )


def stt_rung(backup: STTEngine) -> str:
    """The rung name of a backup recognizer's answer."""
    return STT_WHISPER if backup.name == "whisper" else STT_POCKETSPHINX


def tts_rung(backup: TTSEngine) -> str:
    """The rung name of a backup voice's audio."""
    return TTS_PIPER if backup.name == "piper" else TTS_ESPEAK


@dataclass(slots=True)
class FallbackEngines:
    """The engines and canned answers the ladder falls back to (shared, like ``Engines``)."""

    stt: STTEngine | None = None
    """PocketSphinx: a different recognizer, not another Whisper that may hang the same
    way (local Whisper behind a remote engine: ``backup_engines``)."""
    tts: TTSEngine | None = None
    """espeak-ng: first audio in ~1 ms, no model (Piper behind a remote voice)."""
    templates: Templates | None = None
    """The domain's answer to an understanding (its template, or the domain's fallback
    sentence); None for logic engines without templates."""
    apology: tuple[np.ndarray, int] | None = None
    """``APOLOGY_TEXT`` as int16 audio and its rate, rendered once by ``warmup``: the last
    rung must not depend on an engine working at that moment."""

    def warmup(self, primary_tts: TTSEngine) -> None:
        """Warm the fallback engines and render the apology (in the primary voice when
        it can render offline, else espeak-ng's); a local backup recognizer is set to
        decode at ``FALLBACK_NICE``."""
        if self.stt is not None:
            self.stt.lower_priority(FALLBACK_NICE)
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
