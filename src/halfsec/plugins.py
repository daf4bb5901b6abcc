"""Engines from other packages, found through Python entry points.

A separate package adds an engine without editing halfsec by declaring it in its
``pyproject.toml``::

    [project.entry-points."halfsec.tts"]
    echo = "halfsec_echo_tts:EchoTTS"

The entry point names a callable (usually the engine class) that takes the stage's
options object (``STTOptions``, ``TTSOptions`` or ``LogicOptions``) and returns a loaded
engine.  The factories ask here only for a name that is not built in, so a plugin can
never shadow a built-in engine, and a broken plugin package cannot slow or break a run
that does not use it.  ``examples/halfsec-echo-tts`` is a complete plugin package.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any

from halfsec.errors import EngineUnavailable

STT_GROUP = "halfsec.stt"
TTS_GROUP = "halfsec.tts"
LOGIC_GROUP = "halfsec.logic"
GROUPS = (STT_GROUP, TTS_GROUP, LOGIC_GROUP)


@dataclass(frozen=True, slots=True)
class PluginEngine:
    """One engine a plugin package declares."""

    group: str
    name: str
    target: str
    """``module:attribute`` the entry point names."""
    package: str | None
    """Distribution (``name version``) that declares it, when known."""


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    # ``metadata.entry_points`` is looked up at call time so that tests can hand in
    # EntryPoint objects without installing a package.
    return sorted(metadata.entry_points(group=group), key=lambda ep: ep.name)


def plugin_engines(group: str) -> list[PluginEngine]:
    """Engines declared for ``group`` by installed packages (nothing is imported)."""
    found = []
    for ep in _entry_points(group):
        dist = getattr(ep, "dist", None)
        package = f"{dist.name} {dist.version}" if dist is not None else None
        found.append(PluginEngine(group, ep.name, ep.value, package))
    return found


def plugin_names(group: str) -> list[str]:
    return [p.name for p in plugin_engines(group)]


def load_plugin(group: str, name: str) -> Any:
    """The callable registered as ``name`` in ``group``, imported now.

    Raises ``EngineUnavailable`` when no package declares it, or when its module cannot
    be imported (the message names the package and the import error)."""
    for ep in _entry_points(group):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as e:  # any import-time failure of a third-party package
                raise EngineUnavailable(
                    f"plugin engine {name!r} ({ep.value}, group {group}) failed to load: "
                    f"{type(e).__name__}: {e}"
                ) from e
    raise EngineUnavailable(f"no plugin engine named {name!r} in entry-point group {group}")


def create_plugin_engine(group: str, name: str, options: Any, base: type) -> Any:
    """Build plugin engine ``name`` from ``options`` and check it is a ``base``."""
    factory = load_plugin(group, name)
    engine = factory(options)
    if not isinstance(engine, base):
        raise EngineUnavailable(
            f"plugin engine {name!r} (group {group}) returned {type(engine).__name__}, "
            f"not a {base.__name__}"
        )
    return engine
