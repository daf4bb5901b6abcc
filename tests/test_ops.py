"""Operations: ``--version``, ``--log-level``/``--log-json``, configuration from the
environment, and the LICENSE."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from halfsec import __version__
from halfsec.cli.logs import JsonLogFormatter
from halfsec.config import load_config
from halfsec.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
HALFSEC = [sys.executable, "-m", "halfsec.cli.main"]


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, COLUMNS="200", **env)
    return subprocess.run(HALFSEC + args, capture_output=True, text=True, timeout=120, env=full_env)


# -- --version ----------------------------------------------------------------------------


def test_version_names_halfsec_and_the_engine_packages() -> None:
    p = _run(["--version"])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == f"halfsec {__version__}"
    versions = dict(line.split(" ", 1) for line in lines[1:])
    for package in ("faster-whisper", "ctranslate2", "onnxruntime", "piper-tts", "wyoming"):
        assert versions[package] == metadata.version(package), versions


# -- logging ------------------------------------------------------------------------------


def test_log_json_writes_one_json_object_per_line() -> None:
    p = _run(["--log-json", "--log-level", "debug", "engines", "--json"])
    assert p.returncode == 0, p.stderr
    records = [json.loads(line) for line in p.stderr.splitlines() if line.strip()]
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    assert {
        "level": "debug",
        "logger": "halfsec.cli",
        "message": f"halfsec {__version__}: engines",
    } in [{k: r[k] for k in ("level", "logger", "message")} for r in records]
    json.loads(p.stdout)  # the command's own output is untouched


def test_log_level_filters_and_a_bad_level_is_refused() -> None:
    quiet = _run(["--log-json", "--log-level", "warning", "engines", "--json"])
    assert quiet.returncode == 0 and "halfsec.cli" not in quiet.stderr
    bad = _run(["--log-level", "loud", "engines"])
    assert bad.returncode == 2 and "--log-level" in bad.stderr and "debug, info" in bad.stderr


def test_json_log_lines_carry_the_traceback() -> None:
    try:
        raise RuntimeError("model file vanished")
    except RuntimeError:
        record = logging.LogRecord(
            "halfsec.x", logging.ERROR, "f.py", 1, "failed %s", ("x",), sys.exc_info()
        )
    line = json.loads(JsonLogFormatter().format(record))
    assert line["level"] == "error" and line["message"] == "failed x"
    assert "RuntimeError: model file vanished" in line["exc"] and line["ts"].endswith("Z")


# -- configuration from the environment ---------------------------------------------------


def test_environment_sits_between_the_file_and_set(tmp_path: Path) -> None:
    toml = tmp_path / "h.toml"
    toml.write_text("[turn]\nsilence_ms = 300\nthreshold = 0.6\n")
    env = {
        "HALFSEC_TURN_SILENCE_MS": "250",
        "HALFSEC_SESSION_SPECULATE": "false",
        "HALFSEC_TTS_ENGINE": "espeak",
        "HALFSEC_STT_OPENAI_BASE_URL": "http://127.0.0.1:8000/v1",
        "HALFSEC_TTS_MODEL_PATH": "/voices/en_US-joe-medium.onnx",  # a Path key
        "HALFSEC_DB": "/tmp/not-config.db",  # other HALFSEC_ variables are not config
        "PATH": "/usr/bin",
    }
    c = load_config(toml, environ=env)
    assert c.turn.silence_ms == 250.0 and c.turn.threshold == 0.6  # env over file
    assert c.session.speculate is False and c.tts.engine == "espeak"
    assert c.stt.openai_base_url == "http://127.0.0.1:8000/v1"
    assert c.tts.model_path == Path("/voices/en_US-joe-medium.onnx")
    c = load_config(toml, ["turn.silence_ms=180"], environ=env)
    assert c.turn.silence_ms == 180.0  # --set over env


@pytest.mark.parametrize(
    ("env", "match"),
    [
        (
            {"HALFSEC_TURN_SILENCE_MSS": "250"},
            "HALFSEC_TURN_SILENCE_MSS: \\[turn\\] has no key 'silence_mss'",
        ),
        (
            {"HALFSEC_TURN_SILENCE_MS": "fast"},
            "HALFSEC_TURN_SILENCE_MS: turn.silence_ms: expected float",
        ),
        (
            {"HALFSEC_TTS_THREADS": "0"},
            "tts.threads must be a whole number in 1..256, got 0; .*\\(set by HALFSEC_TTS_THREADS\\)",
        ),
    ],
)
def test_environment_errors_name_the_variable(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(environ=env)


def test_the_command_line_reads_the_environment(tmp_path: Path) -> None:
    p = _run(["run", str(tmp_path / "x.wav")], HALFSEC_TURN_SILENCE_MS="fast")
    assert p.returncode == 2 and "HALFSEC_TURN_SILENCE_MS" in p.stderr


# -- license ------------------------------------------------------------------------------


def test_license_is_the_gpl3_text_the_dependencies_need() -> None:
    """piper-tts is GPL-3.0-or-later, so halfsec (which links it) is too."""
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE")
    assert "Version 3, 29 June 2007" in text and "END OF TERMS AND CONDITIONS" in text
    assert len(text) > 30_000  # the full text, not a pointer to it
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == "GPL-3.0-or-later"
    assert "GPL-3.0" in (metadata.metadata("piper-tts").get("License") or "")
