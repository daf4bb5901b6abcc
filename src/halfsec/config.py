"""The whole configuration: one typed options object per concern.

``HalfsecConfig`` groups ``AudioOptions``, ``TurnOptions``, ``STTOptions``,
``LogicOptions``, ``TTSOptions`` and ``SessionOptions``.  A TOML file has one table per
concern (``[turn]``, ``[stt]``, ...); the CLI overrides single keys with
``--set turn.silence_ms=300``.  Unknown keys and wrong types are errors that name the key:
a typo must not silently fall back to a default."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halfsec.audio.options import AudioOptions
from halfsec.errors import ConfigError
from halfsec.logic.options import LogicOptions
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
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
    elif typ is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            return tuple(value) if origin is tuple else list(value)
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
            return tuple(items) if origin is tuple else items
    elif typ is Any:
        return value
    raise ConfigError(f"{section}.{key}: expected {getattr(typ, '__name__', typ)}, got {value!r}")


def _build(cls: type, section: str, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"[{section}] has unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}"
        )
    return cls(**{k: _coerce(section, k, hints[k], v) for k, v in values.items()})


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> HalfsecConfig:
    """Defaults, then the TOML file, then ``section.key=value`` overrides."""
    data: dict[str, dict[str, Any]] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"config file {p} not found") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: invalid TOML ({e})") from e
        for k, v in raw.items():
            if not isinstance(v, dict):
                raise ConfigError(f"{p}: top-level key {k!r} must be a table like [{k}]")
            data[k] = dict(v)
    for ov in overrides or []:
        if "=" not in ov or "." not in ov.split("=", 1)[0]:
            raise ConfigError(
                f"override {ov!r} must look like section.key=value (e.g. turn.silence_ms=250)"
            )
        lhs, rhs = ov.split("=", 1)
        sec, key = lhs.strip().split(".", 1)
        data.setdefault(sec, {})[key] = rhs.strip()
    sections = {f.name: f for f in dataclasses.fields(HalfsecConfig)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(
            f"unknown config section(s) {', '.join(unknown)}; valid: {', '.join(sections)}"
        )
    built: dict[str, Any] = {}
    hints = typing.get_type_hints(HalfsecConfig)
    for name in sections:
        built[name] = _build(hints[name], name, data.get(name, {}))
    return HalfsecConfig(**built)
