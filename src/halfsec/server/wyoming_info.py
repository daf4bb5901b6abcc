"""What ``halfsec wyoming`` tells Home Assistant it offers (the answer to ``describe``).

Home Assistant lists a Wyoming service's programs as separate integrations: an ``asr``
program becomes a speech-to-text provider, ``tts`` a text-to-speech provider, ``handle``
a conversation agent and ``intent`` an intent recognizer.  Each names the halfsec engine
behind it, so the user sees "whisper" or "piper" in the Assist pipeline settings.
"""

from __future__ import annotations

from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    HandleModel,
    HandleProgram,
    Info,
    IntentModel,
    IntentProgram,
    TtsProgram,
    TtsVoice,
)

from halfsec import __version__
from halfsec.config import HalfsecConfig
from halfsec.runtime.engines import Engines

HALFSEC = Attribution(name="halfsec", url="https://pypi.org/project/halfsec/")

ENGINE_ATTRIBUTIONS = {
    "whisper": Attribution(name="OpenAI Whisper tiny.en", url="https://github.com/openai/whisper"),
    "pocketsphinx": Attribution(name="CMU PocketSphinx", url="https://github.com/cmusphinx"),
    "piper": Attribution(name="Piper", url="https://github.com/rhasspy/piper"),
    "espeak": Attribution(name="eSpeak NG", url="https://github.com/espeak-ng/espeak-ng"),
}
"""Who made each built-in engine; remote and plugin engines are credited to halfsec."""


def voice_name(engines: Engines) -> str:
    """Piper's voice file stem (``en_US-joe-medium``), else the engine's name."""
    model_path = getattr(engines.tts, "model_path", None)
    stem = getattr(model_path, "stem", None)
    return stem if isinstance(stem, str) and stem else engines.tts.name


def wyoming_info(engines: Engines, config: HalfsecConfig) -> Info:
    """One program per Wyoming domain halfsec serves, each with one model or voice."""
    languages = [config.stt.language]
    stt_name, tts_name = engines.stt.name, engines.tts.name
    domain = config.logic.domain if config.logic.engine == "domain" else config.logic.engine
    return Info(
        asr=[
            AsrProgram(
                name="halfsec",
                attribution=HALFSEC,
                installed=True,
                description=f"halfsec speech to text ({stt_name})",
                version=__version__,
                models=[
                    AsrModel(
                        name=stt_name,
                        attribution=ENGINE_ATTRIBUTIONS.get(stt_name, HALFSEC),
                        installed=True,
                        description=f"{stt_name} through halfsec",
                        version=None,
                        languages=languages,
                    )
                ],
                supports_transcript_streaming=False,
            )
        ],
        tts=[
            TtsProgram(
                name="halfsec",
                attribution=HALFSEC,
                installed=True,
                description=f"halfsec text to speech ({tts_name})",
                version=__version__,
                voices=[
                    TtsVoice(
                        name=voice_name(engines),
                        attribution=ENGINE_ATTRIBUTIONS.get(tts_name, HALFSEC),
                        installed=True,
                        description=f"{tts_name}, {engines.tts.sample_rate} Hz",
                        version=None,
                        languages=languages,
                    )
                ],
                supports_synthesize_streaming=True,
            )
        ],
        handle=[
            HandleProgram(
                name="halfsec",
                attribution=HALFSEC,
                installed=True,
                description=f"halfsec {domain} assistant",
                version=__version__,
                models=[
                    HandleModel(
                        name=domain,
                        attribution=HALFSEC,
                        installed=True,
                        description=f"intents and replies of the {domain} domain",
                        version=None,
                        languages=languages,
                    )
                ],
            )
        ],
        intent=[
            IntentProgram(
                name="halfsec",
                attribution=HALFSEC,
                installed=True,
                description=f"halfsec {domain} intents and slots",
                version=__version__,
                models=[
                    IntentModel(
                        name=domain,
                        attribution=HALFSEC,
                        installed=True,
                        description=f"intents of the {domain} domain",
                        version=None,
                        languages=languages,
                    )
                ],
            )
        ],
    )
