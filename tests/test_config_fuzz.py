"""Property-based fuzz of the configuration: whatever a TOML file, a ``--set`` string or a
``HALFSEC_*`` variable holds, for every key, ``load_config`` either returns a valid config
or raises ``ConfigError`` (the clear message the CLI prints, exit 2), never another
exception (a raw ``ValueError`` or ``OverflowError`` is a traceback for the user)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import typing
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halfsec.config import HalfsecConfig, load_config
from halfsec.errors import ConfigError

SECTIONS: dict[str, type] = typing.get_type_hints(HalfsecConfig)
KEYS: list[tuple[str, str]] = [
    (s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)
]

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- values ------------------------------------------------------------------------------
NUMBER_TEXT = st.sampled_from(
    ["nan", "-nan", "inf", "-inf", "1e999", "-1e999", "--2", "+3", "0x10", "1_000", " 7 ",
     "0", "-0", "-1", "1e-320", "3.5", "9" * 40, "", "true", "yes", "٣", "1,2"]
)  # fmt: skip
"""Strings that look almost like numbers: what ``--set`` and variables carry."""

SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),  # TOML's integer range
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    NUMBER_TEXT,
    st.dates(),
    st.datetimes(),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=5), SCALARS, max_size=2),
)


def toml_value(v: Any) -> str:
    """TOML for one value (hypothesis draws Python values; the file is written by hand
    because the standard library reads TOML but does not write it)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise AssertionError(type(v))


KEY = st.one_of(
    st.sampled_from(KEYS), st.tuples(st.sampled_from(list(SECTIONS)), st.text(max_size=8))
)
"""Mostly real keys, sometimes a typo'd one."""

TABLES = st.dictionaries(KEY, VALUES, max_size=4)


def _loads_or_says_why(**kwargs: Any) -> None:
    try:
        config = load_config(**kwargs)
    except ConfigError as e:
        assert str(e).strip()
        return
    _assert_valid(config)


def _assert_valid(config: HalfsecConfig) -> None:
    """What loaded is a config its own checks accept, with no nan or inf anywhere."""
    for section in SECTIONS:
        options = getattr(config, section)
        dataclasses.replace(options)  # runs __post_init__ again: it must pass
        for f in dataclasses.fields(options):
            value = getattr(options, f.name)
            if isinstance(value, float):
                assert math.isfinite(value), (section, f.name, value)


# -- properties ---------------------------------------------------------------------------
@FUZZ
@given(tables=TABLES)
def test_any_toml_loads_or_is_a_config_error(tmp_path: Path, tables: dict[Any, Any]) -> None:
    by_section: dict[str, list[str]] = {}
    for (section, key), value in tables.items():
        by_section.setdefault(section, []).append(f"{json.dumps(key)} = {toml_value(value)}")
    text = "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in by_section.items())
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    _loads_or_says_why(path=path, environ={})


@FUZZ
@given(keys=st.lists(KEY, max_size=3), values=st.lists(st.one_of(st.text(), NUMBER_TEXT)))
def test_any_set_string_loads_or_is_a_config_error(
    keys: list[tuple[str, str]], values: list[str]
) -> None:
    overrides = [f"{s}.{k}={v}" for (s, k), v in zip(keys, values, strict=False)]
    _loads_or_says_why(overrides=overrides, environ={})


@FUZZ
@given(overrides=st.lists(st.text(max_size=30), max_size=3))
def test_any_free_text_after_set_is_a_config_error_or_loads(overrides: list[str]) -> None:
    _loads_or_says_why(overrides=overrides, environ={})


@FUZZ
@given(
    variables=st.dictionaries(
        st.sampled_from(KEYS).map(lambda k: f"HALFSEC_{k[0]}_{k[1]}".upper()),
        st.one_of(st.text(max_size=12), NUMBER_TEXT),
        max_size=3,
    )
)
def test_any_environment_value_loads_or_is_a_config_error(variables: dict[str, str]) -> None:
    variables = {k: v.replace("\x00", "") for k, v in variables.items()}
    _loads_or_says_why(environ=variables)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_any_file_bytes_load_or_are_a_config_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "bytes.toml"
    path.write_bytes(raw)
    _loads_or_says_why(path=path, environ={})


def test_the_fuzz_reaches_every_key() -> None:
    """Every key of every section is drawn from: a new options field is fuzzed too."""
    assert len(KEYS) >= 60 and {s for s, _ in KEYS} == set(SECTIONS)
