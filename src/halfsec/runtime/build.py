"""Build the shared engines from a configuration, and a conversation on them."""

from __future__ import annotations

import dataclasses
import logging

from halfsec.config import HalfsecConfig
from halfsec.errors import HalfsecError
from halfsec.logic.domain_logic import DomainLogic
from halfsec.logic.engine import LogicEngine
from halfsec.logic.factory import create_logic
from halfsec.logic.templates import is_fixed
from halfsec.runtime.engines import Engines
from halfsec.runtime.fallback import FallbackEngines, backup_engines, domain_templates
from halfsec.runtime.fault_wrappers import apply_faults
from halfsec.runtime.faults import FaultPlan
from halfsec.runtime.session import VoiceSession
from halfsec.runtime.turn_models import preload_turn_models
from halfsec.stt.factory import create_stt
from halfsec.stt.options import STTOptions
from halfsec.stt.phone_model import create_phone_stt
from halfsec.tts.factory import create_tts
from halfsec.tts.options import TTSOptions
from halfsec.tts.phrase_cache import PhraseCache

log = logging.getLogger(__name__)


def build_engines(
    config: HalfsecConfig,
    warmup: bool = True,
    faults: FaultPlan | None = None,
    phone: bool = True,
) -> Engines:
    """Load logic first: its domain vocabulary biases the recognizer (``stt.prompt``).

    ``faults``: the lab's fault plan (``halfsec serve --fault``), wrapped around the
    loaded engines before warmup.  ``phone``: also load the phone calls' recognizer
    (``stt.phone_model``); an entry point that takes no calls (``halfsec run``, Wyoming)
    passes False and saves its load and memory."""
    logic = create_logic(config.logic)
    stt_opt = config.stt
    domain = getattr(logic, "domain", None)
    if stt_opt.prompt is None and domain is not None and hasattr(domain, "stt_prompt"):
        stt_opt = dataclasses.replace(stt_opt, prompt=domain.stt_prompt())
    stt = create_stt(stt_opt)
    try:
        phone_stt = create_phone_stt(stt_opt) if phone else None
    except HalfsecError as e:  # calls then use the main recognizer: worse WER, still served
        log.warning("no phone model, calls use the main recognizer: %s", e)
        phone_stt = None
    for engine in (stt, phone_stt):
        hung_after = getattr(engine, "hung_after_ms", None)
        if hung_after is not None:  # an engine whose hung workers can be replaced (Whisper)
            engine.hung_after_ms = config.session.stt_hung_ms  # type: ignore[union-attr]
    engines = Engines(
        stt=stt,
        logic=logic,
        tts=PhraseCache(
            create_tts(config.tts),
            entries=config.tts.phrase_cache_entries,
            max_chars=config.tts.phrase_cache_max_chars,
            prefill=fixed_clauses(logic),
        ),
        fallback=build_fallbacks(config, logic, prompt=stt_opt.prompt),
        phone_stt=phone_stt,
    )
    if faults is not None:
        engines = apply_faults(engines, faults)
    if warmup:
        engines.warmup()
        # The session's shared turn models too, for every entry point (``halfsec run``,
        # Wyoming, an embedding program), not only the server's start-up.
        preload_turn_models(config.turn, config.session.end_of_turn)
    return engines


def fixed_clauses(logic: LogicEngine) -> list[str]:
    """The clauses of a domain's replies and questions that hold no slot ("Sure.", "Got
    it."): the same words every time, so the TTS phrase cache renders them at warmup.
    None for a logic engine without a domain (an LLM's words are its own)."""
    if not isinstance(logic, DomainLogic):
        return []
    out: list[str] = []
    for intent in logic.domain.intents.values():
        for text in (*intent.confirm, *intent.reply, *intent.ask.values()):
            if is_fixed(text):
                out.append(text)
    out.append(logic.domain.fallback)
    return out


def build_fallbacks(
    config: HalfsecConfig, logic: LogicEngine, prompt: str | None = None
) -> FallbackEngines:
    """What the turns' deadlines fall back to: PocketSphinx and espeak-ng (local Whisper,
    with the recognizer's ``prompt``, and Piper behind remote engines:
    ``fallback.backup_engines``) when ``session.fallback_engines`` (each skipped with a
    warning where its package is missing: a missing fallback must not stop the server),
    and the domain's templates."""
    fb = FallbackEngines(templates=domain_templates(logic))
    if not config.session.fallback_engines:
        return fb
    stt_name, tts_name = backup_engines(config.stt.engine, config.tts.engine)
    if stt_name is not None:
        try:
            fb.stt = create_stt(STTOptions(engine=stt_name, prompt=prompt))
        except HalfsecError as e:
            log.warning("no STT fallback: %s", e)
    if tts_name is not None:
        try:
            fb.tts = create_tts(TTSOptions(engine=tts_name))
        except HalfsecError as e:
            log.warning("no TTS fallback: %s", e)
    return fb


def open_session(engines: Engines, config: HalfsecConfig) -> VoiceSession:
    """A new conversation on shared ``engines``, with ``config``'s turn-taking, session
    options and output rate (what ``halfsec run`` and ``halfsec serve`` open per client)."""
    return VoiceSession(engines, config.turn, config.session, output_rate=config.audio.output_rate)
