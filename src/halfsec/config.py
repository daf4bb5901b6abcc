"""The whole configuration: one typed options object per concern.

``HalfsecConfig`` groups ``AudioOptions``, ``TurnOptions``, ``STTOptions``,
``LogicOptions``, ``TTSOptions`` and ``SessionOptions``.  A TOML file has one table per
concern (``[turn]``, ``[stt]``, ...); environment variables ``HALFSEC_<SECTION>_<KEY>``
(``HALFSEC_TURN_SILENCE_MS=250``) override the file, as containers and services set them;
the CLI overrides single keys last with ``--set turn.silence_ms=300``.  Unknown keys,
wrong types and values out of range (each options class declares its ranges and checks
them with ``halfsec.options_check``: ``nan``, ``0`` Hz, ``--2``) are ``ConfigError``s that
name the key (and the variable), the value and what is allowed: a typo must not silently
fall back to a default, and a bad number must not surface later as a crash."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halfsec.audio.options import AudioOptions
from halfsec.errors import ConfigError
from halfsec.logic.options import LogicOptions
from halfsec.options_check import ConfigKeys
from halfsec.runtime.options import SessionOptions
from halfsec.stt.options import STTOptions
from halfsec.tts.options import TTSOptions
from halfsec.turn.options import TurnOptions


@dataclass(frozen=True, slots=True)
class HalfsecConfig:
    audio: AudioOptions = field(default_factory=AudioOptions)
    turn: TurnOptions = field(default_factory=TurnOptions)
    stt: STTOptions = field(default_factory=STTOptions)
    logic: LogicOptions = field(default_factory=LogicOptions)
    tts: TTSOptions = field(default_factory=TTSOptions)
    session: SessionOptions = field(default_factory=SessionOptions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_KINDS: dict[Any, str] = {
    int: "int (a whole number such as 2)",
    float: "float (a number such as 0.5)",
    bool: "bool (true or false)",
    str: "str (text)",
    Path: "a path",
}

_INT = re.compile(r"[+-]?[0-9]+")
"""A whole number as typed: one optional sign (``--2`` is not a number, not minus minus 2)."""


def _coerce(section: str, key: str, typ: Any, value: Any) -> Any:
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(section, key, a, value)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{section}.{key}: bad value {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(
            f"{section}.{key}: must be one of {', '.join(map(repr, args))}, got {value!r}"
        )
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif typ is float:
        # float() of a huge TOML integer overflows; "nan"/"inf" parse here and are
        # refused by the options' own range check, which can say what is allowed.
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except (ValueError, OverflowError):
                pass
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            return int(value)
    elif typ is str:
        if isinstance(value, str):
            return value
    elif typ is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value)
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            return tuple(value) if origin is tuple else list(value)
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
            return tuple(items) if origin is tuple else items
    elif typ is Any:
        return value
    raise ConfigError(
        f"{section}.{key}: expected {_KINDS.get(typ, getattr(typ, '__name__', typ))}, "
        f"got {value!r}; {ConfigKeys(section).fix(key)}"
    )


def _build(cls: type, section: str, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"[{section}] has unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}"
        )
    return cls(**{k: _coerce(section, k, hints[k], v) for k, v in values.items()})


ENV_PREFIX = "HALFSEC_"


def env_settings(environ: Mapping[str, str]) -> dict[tuple[str, str], tuple[str, str]]:
    """``(section, key) -> (variable, value)`` for every ``HALFSEC_<SECTION>_<KEY>``.

    Only a name whose first word is a section counts: other ``HALFSEC_`` variables
    (``HALFSEC_DB``, ``HALFSEC_TRACE_DIR``) are not configuration.  A variable naming a
    key the section does not have, or holding a value of the wrong type, is an error that
    names the variable."""
    sections = typing.get_type_hints(HalfsecConfig)
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for var, value in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        section, _, key = var[len(ENV_PREFIX) :].lower().partition("_")
        if section not in sections:
            continue
        hints = typing.get_type_hints(sections[section])
        if key not in {f.name for f in dataclasses.fields(sections[section])}:
            raise ConfigError(
                f"environment variable {var}: [{section}] has no key {key!r}; valid keys: "
                f"{', '.join(sorted(f.name for f in dataclasses.fields(sections[section])))}"
            )
        try:
            _coerce(section, key, hints[key], value)
        except ConfigError as e:
            raise ConfigError(f"environment variable {var}: {e}") from e
        found[(section, key)] = (var, value)
    return found


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> HalfsecConfig:
    """Defaults, then the TOML file, then ``HALFSEC_<SECTION>_<KEY>`` variables of
    ``environ`` (default: the process environment), then ``section.key=value`` overrides."""
    data: dict[str, dict[str, Any]] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"config file {p} not found; check the --config path") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not UTF-8 text ({e}); a config file is TOML text") from e
        except OSError as e:  # a directory, no permission
            raise ConfigError(f"config file {p} cannot be read: {e.strerror or e}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: invalid TOML ({e})") from e
        for k, v in raw.items():
            if not isinstance(v, dict):
                raise ConfigError(f"{p}: top-level key {k!r} must be a table like [{k}]")
            data[k] = dict(v)
    from_env = env_settings(os.environ if environ is None else environ)
    for (sec, key), (_var, value) in from_env.items():
        data.setdefault(sec, {})[key] = value
    for ov in overrides or []:
        if "=" not in ov or "." not in ov.split("=", 1)[0]:
            raise ConfigError(
                f"override {ov!r} must look like section.key=value (e.g. turn.silence_ms=250)"
            )
        lhs, rhs = ov.split("=", 1)
        sec, key = lhs.strip().split(".", 1)
        data.setdefault(sec, {})[key] = rhs.strip()
        from_env.pop((sec.strip(), key.strip()), None)
    sections = {f.name: f for f in dataclasses.fields(HalfsecConfig)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(
            f"unknown config section(s) {', '.join(unknown)}; valid: {', '.join(sections)}"
        )
    built: dict[str, Any] = {}
    hints = typing.get_type_hints(HalfsecConfig)
    for name in sections:
        try:
            built[name] = _build(hints[name], name, data.get(name, {}))
        except ConfigError as e:  # an options class's own check: say which variable set it
            named = [
                var
                for (sec, key), (var, _) in from_env.items()
                if sec == name and f"{sec}.{key}" in str(e)
            ]
            if named:
                raise ConfigError(f"{e} (set by {', '.join(named)})") from e
            raise
    return HalfsecConfig(**built)
