"""Typed configuration: TOML tables per concern, CLI overrides, clear errors, ranges."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import typing
from collections.abc import Callable
from pathlib import Path

import pytest

from halfsec.config import HalfsecConfig, load_config
from halfsec.edge.options import EdgeError, EdgeOptions
from halfsec.errors import ConfigError
from halfsec.lab.bench.options import BenchError, BenchOptions
from halfsec.options_check import ConfigKeys, at_least, check_fields
from halfsec.server.options import ServeError, ServerOptions


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


# -- ranges: every options object refuses bad numbers, naming the key -------------------
@pytest.mark.parametrize(
    "override, names",
    [
        ("session.max_turn_s=nan", ["session.max_turn_s", "got nan", "> 0", "--set"]),
        ("audio.output_rate=0", ["audio.output_rate", "got 0", "8000..48000 Hz"]),
        ("stt.cpu_threads=--2", ["stt.cpu_threads", "'--2'", "whole number"]),
        ("stt.cpu_threads=0", ["stt.cpu_threads", "1..256", "default 2"]),
        ("turn.silence_ms=-5", ["turn.silence_ms", "got -5.0", "0..60000 ms"]),
        ("tts.volume=inf", ["tts.volume", "got inf", "HALFSEC_TTS_VOLUME"]),
        ("logic.llm_timeout_s=nan", ["logic.llm_timeout_s", "got nan"]),
        ("session.end_of_turn=sometimes", ["session.end_of_turn", "'transcript', 'silence'"]),
        ("stt.min_window_s=1e999", ["stt.min_window_s", "got inf", "<= 30 s"]),
        ("turn.threshold=0.2", ["turn.neg_threshold", "turn.threshold", "set both"]),
    ],
)
def test_out_of_range_values_are_config_errors_that_say_what_to_do(
    override: str, names: list[str]
) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override], environ={})
    for n in names:
        assert n in str(e.value), (n, str(e.value))


def _numeric_keys() -> list[tuple[str, str, type]]:
    keys = []
    for section, cls in typing.get_type_hints(HalfsecConfig).items():
        for name, hint in typing.get_type_hints(cls).items():
            kinds = {hint, *typing.get_args(hint)} & {int, float}
            if kinds:
                keys.append((section, name, float if float in kinds else int))
    return keys


@pytest.mark.parametrize("section, key, kind", _numeric_keys())
def test_every_numeric_key_has_a_range(section: str, key: str, kind: type) -> None:
    """No number is taken as it comes: nan (for floats) and one of two absurd magnitudes
    are refused for every key, so every key has a declared range."""
    if kind is float:
        with pytest.raises(ConfigError, match=f"{section}.{key} must be .*got nan"):
            load_config(overrides=[f"{section}.{key}=nan"], environ={})
    refused = 0
    for v in ("-1000000000000", "1000000000000"):
        try:
            load_config(overrides=[f"{section}.{key}={v}"], environ={})
        except ConfigError as e:
            assert f"{section}.{key}" in str(e)
            refused += 1
    assert refused, f"{section}.{key} takes both -1e12 and 1e12"


def test_the_helper_checks_what_it_is_given() -> None:
    @dataclasses.dataclass
    class Opts:
        a: float = 1.0
        n: int = 2

    with pytest.raises(ConfigError, match=r"x\.a must be a finite number, got inf"):
        check_fields(Opts(a=math.inf), {}, ConfigKeys("x"))
    with pytest.raises(ConfigError, match=r"x\.n must be a whole number >= 1, got 0"):
        check_fields(Opts(n=0), {"n": at_least(1)}, ConfigKeys("x"))
    with pytest.raises(TypeError, match="no field"):  # a typo in a rules table
        check_fields(Opts(), {"nn": at_least(1)}, ConfigKeys("x"))
    check_fields(Opts(), {"n": at_least(1)}, ConfigKeys("x"))


@pytest.mark.parametrize(
    "make, error, names",
    [
        (lambda: ServerOptions(idle_timeout_s=-1), ServeError, ["--idle-timeout-s", "got -1"]),
        (lambda: ServerOptions(start_timeout_s=math.nan), ServeError, ["start_timeout_s"]),
        (lambda: ServerOptions(port=70000), ServeError, ["--port", "0: any free port"]),
        (
            lambda: EdgeOptions(origin="ws://h:1/ws", preroll_ms=math.nan),
            EdgeError,
            ["--preroll-ms", "100..10000 ms"],
        ),
        (lambda: BenchOptions(inject_delay_ms=-1), BenchError, ["--inject-delay-ms"]),
        (lambda: BenchOptions(client_kind="firefox"), BenchError, ["--client", "'browser'"]),
    ],
)
def test_command_options_name_the_flag(
    make: Callable[[], object], error: type[Exception], names: list[str]
) -> None:
    with pytest.raises(error) as e:
        make()
    for n in names:
        assert n in str(e.value), (n, str(e.value))


@pytest.mark.parametrize(
    "args, says",
    [
        (["serve", "--idle-timeout-s", "-1"], "--idle-timeout-s must be a finite number > 0"),
        (["serve", "--set", "stt.cpu_threads=--2"], "stt.cpu_threads: expected int"),
        (["run", "x.wav", "--set", "session.max_turn_s=nan"], "session.max_turn_s must be"),
        (["serve", "--set", "audio.output_rate=0"], "[audio] of the config file"),
    ],
)
def test_the_command_line_shows_the_message_and_exits_2(args: list[str], says: str) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "halfsec.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert p.returncode == 2, p.stderr
    assert says in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
