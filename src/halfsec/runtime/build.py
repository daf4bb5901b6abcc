"""Build the shared engines from a configuration, and a conversation on them."""

from __future__ import annotations

import dataclasses
import logging

from halfsec.config import HalfsecConfig
from halfsec.errors import HalfsecError
from halfsec.logic.engine import LogicEngine
from halfsec.logic.factory import create_logic
from halfsec.runtime.engines import Engines
from halfsec.runtime.fallback import FallbackEngines, domain_templates
from halfsec.runtime.fault_wrappers import apply_faults
from halfsec.runtime.faults import FaultPlan
from halfsec.runtime.session import VoiceSession
from halfsec.stt.factory import create_stt
from halfsec.stt.options import STTOptions
from halfsec.tts.factory import create_tts
from halfsec.tts.options import TTSOptions

log = logging.getLogger(__name__)


def build_engines(
    config: HalfsecConfig, warmup: bool = True, faults: FaultPlan | None = None
) -> Engines:
    """Load logic first: its domain vocabulary biases the recognizer (``stt.prompt``).

    ``faults``: the lab's fault plan (``halfsec serve --fault``), wrapped around the
    loaded engines before warmup."""
    logic = create_logic(config.logic)
    stt_opt = config.stt
    domain = getattr(logic, "domain", None)
    if stt_opt.prompt is None and domain is not None and hasattr(domain, "stt_prompt"):
        stt_opt = dataclasses.replace(stt_opt, prompt=domain.stt_prompt())
    stt = create_stt(stt_opt)
    hung_after = getattr(stt, "hung_after_ms", None)
    if hung_after is not None:  # an engine whose hung workers can be replaced (Whisper)
        stt.hung_after_ms = config.session.stt_hung_ms  # type: ignore[attr-defined]
    engines = Engines(
        stt=stt, logic=logic, tts=create_tts(config.tts), fallback=build_fallbacks(config, logic)
    )
    if faults is not None:
        engines = apply_faults(engines, faults)
    if warmup:
        engines.warmup()
    return engines


def build_fallbacks(config: HalfsecConfig, logic: LogicEngine) -> FallbackEngines:
    """What the turns' deadlines fall back to: PocketSphinx and espeak-ng when
    ``session.fallback_engines`` (each skipped with a warning where its package is
    missing: a missing fallback must not stop the server), and the domain's templates."""
    fb = FallbackEngines(templates=domain_templates(logic))
    if not config.session.fallback_engines:
        return fb
    if config.stt.engine != "pocketsphinx":
        try:
            fb.stt = create_stt(STTOptions(engine="pocketsphinx"))
        except HalfsecError as e:
            log.warning("no STT fallback: %s", e)
    if config.tts.engine != "espeak":
        try:
            fb.tts = create_tts(TTSOptions(engine="espeak"))
        except HalfsecError as e:
            log.warning("no TTS fallback: %s", e)
    return fb


def open_session(engines: Engines, config: HalfsecConfig) -> VoiceSession:
    """A new conversation on shared ``engines``, with ``config``'s turn-taking, session
    options and output rate (what ``halfsec run`` and ``halfsec serve`` open per client)."""
    return VoiceSession(engines, config.turn, config.session, output_rate=config.audio.output_rate)
