"""Typed configuration: TOML tables per concern, CLI overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from halfsec.config import load_config
from halfsec.errors import ConfigError


def test_defaults_meet_the_brief() -> None:
    c = load_config()
    assert c.turn.silence_ms <= 200
    assert c.stt.engine == "whisper" and c.tts.engine == "piper"


def test_toml_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "h.toml"
    p.write_text('[turn]\nsilence_ms = 250\n[tts]\nengine = "espeak"\n')
    c = load_config(p, ["turn.threshold=0.6", "session.speculate=false"])
    assert c.turn.silence_ms == 250.0 and c.turn.threshold == 0.6
    assert c.tts.engine == "espeak" and c.session.speculate is False


@pytest.mark.parametrize(
    "text, overrides, match",
    [
        ("[turn]\nsilence_mss = 1\n", [], "unknown key"),
        ("[tunr]\n", [], "unknown config section"),
        ("[turn]\nsilence_ms = 'abc'\n", [], "turn.silence_ms: expected float"),
        ("[turn\n", [], "invalid TOML"),
        ("", ["silence_ms=3"], "section.key=value"),
    ],
)
def test_errors_name_the_problem(
    tmp_path: Path, text: str, overrides: list[str], match: str
) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p, overrides)
