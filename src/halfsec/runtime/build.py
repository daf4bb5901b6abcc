"""Build the shared engines from a configuration, and a conversation on them."""

from __future__ import annotations

import dataclasses

from halfsec.config import HalfsecConfig
from halfsec.logic.factory import create_logic
from halfsec.runtime.engines import Engines
from halfsec.runtime.session import VoiceSession
from halfsec.stt.factory import create_stt
from halfsec.tts.factory import create_tts


def build_engines(config: HalfsecConfig, warmup: bool = True) -> Engines:
    """Load logic first: its domain vocabulary biases the recognizer (``stt.prompt``)."""
    logic = create_logic(config.logic)
    stt_opt = config.stt
    domain = getattr(logic, "domain", None)
    if stt_opt.prompt is None and domain is not None and hasattr(domain, "stt_prompt"):
        stt_opt = dataclasses.replace(stt_opt, prompt=domain.stt_prompt())
    engines = Engines(stt=create_stt(stt_opt), logic=logic, tts=create_tts(config.tts))
    if warmup:
        engines.warmup()
    return engines


def open_session(engines: Engines, config: HalfsecConfig) -> VoiceSession:
    """A new conversation on shared ``engines``, with ``config``'s turn-taking, session
    options and output rate (what ``halfsec run`` and ``halfsec serve`` open per client)."""
    return VoiceSession(engines, config.turn, config.session, output_rate=config.audio.output_rate)
