"""Engines from other packages: the factories find them through entry points.

Nothing is installed: the example package's directory goes on ``sys.path`` and
``importlib.metadata.entry_points`` answers with the EntryPoint objects its
``pyproject.toml`` declares, which is all an installed package would change."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from halfsec.cli.engines import engines_command
from halfsec.config import load_config
from halfsec.errors import ConfigError, EngineUnavailable
from halfsec.logic.engine import LogicEngine, ReplyClause, Understanding
from halfsec.logic.factory import create_logic
from halfsec.logic.options import LogicOptions
from halfsec.stt import STTOptions, create_stt
from halfsec.tts import TTSEngine, TTSOptions, create_tts

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "halfsec-echo-tts"


def declared_entry_points() -> list[metadata.EntryPoint]:
    """The entry points examples/halfsec-echo-tts/pyproject.toml declares."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    return [
        metadata.EntryPoint(name=name, value=value, group=group)
        for group, entries in project["entry-points"].items()
        for name, value in entries.items()
    ]


def fake_entry_points(extra: list[metadata.EntryPoint]) -> Any:
    def entry_points(*, group: str) -> list[metadata.EntryPoint]:
        return [ep for ep in extra if ep.group == group]

    return entry_points


@pytest.fixture
def echo_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setattr(metadata, "entry_points", fake_entry_points(declared_entry_points()))


async def test_the_factory_loads_the_example_plugin(echo_installed: None) -> None:
    engine = create_tts(TTSOptions(engine="echo"))
    assert isinstance(engine, TTSEngine) and type(engine).__name__ == "EchoTTS"
    chunks = [c async for c in engine.synthesize("one small latte")]
    assert len(chunks) == 3 and all(c.dtype == np.int16 for c in chunks)
    assert np.abs(np.concatenate(chunks)).max() > 5000


def test_config_accepts_a_plugin_name_only_when_it_is_installed(
    echo_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_config(overrides=["tts.engine=echo"], environ={}).tts.engine == "echo"
    monkeypatch.setattr(metadata, "entry_points", fake_entry_points([]))
    with pytest.raises(ConfigError, match="'echo' is unknown; use one of piper, espeak, openai"):
        load_config(overrides=["tts.engine=echo"], environ={})


def test_engines_lists_plugins(echo_installed: None) -> None:
    rows = engines_command(as_json=True)
    echo = [r for r in rows if r["name"] == "echo"]
    assert echo == [
        {"kind": "tts", "name": "echo", "usable": True, "detail": "plugin halfsec_echo_tts:EchoTTS"}
    ]


class NamedLogic(LogicEngine):
    name = "named"

    def __init__(self, options: LogicOptions) -> None:
        self.options = options

    def understand(self, text: str) -> Understanding:
        return Understanding(intent="said", slots={"text": text}, confidence=1.0)

    async def reply(self, text: str, understanding: Understanding) -> Any:
        yield ReplyClause(f"You said {text}.", "plugin")


def test_every_stage_has_a_group_and_bad_plugins_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [
        metadata.EntryPoint("named", f"{__name__}:NamedLogic", "halfsec.logic"),
        metadata.EntryPoint("broken", "no_such_module_here:Engine", "halfsec.stt"),
        metadata.EntryPoint("wrong", f"{__name__}:NamedLogic", "halfsec.stt"),
    ]
    monkeypatch.setattr(metadata, "entry_points", fake_entry_points(eps))
    logic = create_logic(LogicOptions(engine="named"))
    assert isinstance(logic, NamedLogic) and logic.understand("hi").intent == "said"
    with pytest.raises(EngineUnavailable, match="'broken'.*failed to load: ModuleNotFoundError"):
        create_stt(STTOptions(engine="broken"))
    with pytest.raises(EngineUnavailable, match="returned NamedLogic, not a STTEngine"):
        create_stt(STTOptions(engine="wrong"))
    with pytest.raises(
        EngineUnavailable, match="choose one of whisper, pocketsphinx, openai, broken"
    ):
        create_stt(STTOptions(engine="nope"))
    rows = {r["name"]: r for r in engines_command(as_json=True) if r["kind"] in ("stt", "logic")}
    assert rows["broken"]["usable"] is False and rows["named"]["usable"] is True


def test_a_plugin_never_shadows_a_built_in_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [metadata.EntryPoint("espeak", "no_such_module_here:Engine", "halfsec.tts")]
    monkeypatch.setattr(metadata, "entry_points", fake_entry_points(eps))
    assert type(create_tts(TTSOptions(engine="espeak"))).__name__ == "EspeakEngine"
