"""The one check every options object runs: numbers finite and in range, choices known.

Each options dataclass (``AudioOptions`` ... ``SessionOptions``, ``ServerOptions``,
``EdgeOptions``, ``BenchOptions``) declares its fields' ranges as data and calls
``check_fields`` from ``__post_init__``.  One helper, so that every bad value, whether
it came from a TOML file, an environment variable, ``--set`` or a command-line flag, is
refused the same way, at construction, with a message that names the key, the value,
what is allowed and where to fix it.  ``nan`` in particular passes every ``<=``
comparison, so a hand-written ``if x <= 0`` lets it through: here any float field that
is not finite is refused, declared range or not.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from halfsec.errors import ConfigError, HalfsecError

__all__ = [
    "CommandFlags",
    "ConfigKeys",
    "OneOf",
    "Range",
    "Rule",
    "at_least",
    "between",
    "check_fields",
    "flags_of",
    "positive",
]


@dataclass(frozen=True, slots=True)
class Range:
    """Allowed values of one numeric option; a bound of None is no bound."""

    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True
    unit: str = ""
    note: str = ""
    """What a special value means (``0: any free port``), said with the range."""

    def admits(self, value: float) -> bool:
        if self.low is not None and (
            value < self.low or (value == self.low and not self.low_inclusive)
        ):
            return False
        return not (
            self.high is not None
            and (value > self.high or (value == self.high and not self.high_inclusive))
        )

    def describe(self, whole: bool) -> str:
        kind = "a whole number" if whole else "a finite number"
        unit = f" {self.unit}" if self.unit else ""
        lo = None if self.low is None else _num(self.low)
        hi = None if self.high is None else _num(self.high)
        note = f" ({self.note})" if self.note else ""
        if lo is not None and hi is not None and self.low_inclusive and self.high_inclusive:
            return f"{kind} in {lo}..{hi}{unit}{note}"
        parts = []
        if lo is not None:
            parts.append(f"{'>=' if self.low_inclusive else '>'} {lo}")
        if hi is not None:
            parts.append(f"{'<=' if self.high_inclusive else '<'} {hi}")
        return (f"{kind} {' and '.join(parts)}{unit}" if parts else kind) + note


@dataclass(frozen=True, slots=True)
class OneOf:
    """Allowed values of a string option kept as ``str`` (so plugins or callers can pass
    any string type-wise) but with a closed set of meanings."""

    values: tuple[str, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


Rule = Range | OneOf
"""What a field of an options object may hold."""


def positive(unit: str = "", at_most: float | None = None) -> Range:
    """Strictly above zero: durations, rates and timeouts where 0 means nothing works."""
    return Range(0, at_most, low_inclusive=False, unit=unit)


def at_least(low: float, unit: str = "", at_most: float | None = None) -> Range:
    return Range(low, at_most, unit=unit)


def between(low: float, high: float, unit: str = "") -> Range:
    return Range(low, high, unit=unit)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True, slots=True)
class ConfigKeys:
    """Options that are a section of the config file: a key is ``section.field``, and it
    is fixed in the file, a ``HALFSEC_<SECTION>_<KEY>`` variable or ``--set``."""

    section: str

    def key(self, name: str) -> str:
        return f"{self.section}.{name}"

    def fix(self, name: str) -> str:
        var = f"HALFSEC_{self.section}_{name}".upper()
        return f"set it in [{self.section}] of the config file, {var} or --set {self.key(name)}=..."


@dataclass(frozen=True, slots=True)
class CommandFlags:
    """Options of a command (``halfsec serve``): a field set by a command-line flag is
    named as the flag users type, the rest as the options class's attribute."""

    command: str
    owner: str
    flags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Field name -> its flag (``{"idle_timeout_s": "--idle-timeout-s"}``)."""

    def key(self, name: str) -> str:
        return self.flags.get(name) or f"{self.owner}.{name}"

    def fix(self, name: str) -> str:
        if name in self.flags:
            return f"pass {self.command} {self.flags[name]} a value in range"
        return f"construct {self.owner} with {name} in range"


def flags_of(*names: str) -> dict[str, str]:
    """``{"idle_timeout_s": "--idle-timeout-s"}`` for fields whose flag is their name."""
    return {n: "--" + n.replace("_", "-") for n in names}


def check_fields(
    obj: Any,
    rules: Mapping[str, Rule],
    where: ConfigKeys | CommandFlags,
    error: type[HalfsecError] = ConfigError,
) -> None:
    """Raise ``error`` for the first field of dataclass ``obj`` that is a non-finite float,
    a number outside its ``Range`` or a string outside its ``OneOf``.

    ``None`` means "not set" and always passes; bools are never numbers here."""
    fields = {f.name: f for f in dataclasses.fields(obj)}
    cls: type = type(obj)
    unknown = set(rules) - set(fields)
    if unknown:  # a typo in a rules table would silently check nothing
        raise TypeError(f"{type(obj).__name__} has no field(s) {sorted(unknown)}")
    for name, f in fields.items():
        value = getattr(obj, name)
        rule = rules.get(name)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(rule, OneOf):
            if value not in rule.values:
                raise error(_message(where, name, value, rule.describe(), f))
            continue
        if not isinstance(value, (int, float)):
            continue
        whole = name in _whole_fields(cls)
        bad = isinstance(value, float) and not math.isfinite(value)
        if rule is not None and not bad:
            bad = not rule.admits(value)
        if bad:
            allowed = rule.describe(whole) if rule is not None else "a finite number"
            raise error(_message(where, name, value, allowed, f))


_WHOLE: dict[type, frozenset[str]] = {}


def _whole_fields(cls: type) -> frozenset[str]:
    """Fields declared ``int`` (so the message says "a whole number" even when a caller
    passed ``-1.0``, and "a finite number" for a float field given ``-1``)."""
    if cls not in _WHOLE:
        hints = typing.get_type_hints(cls)
        _WHOLE[cls] = frozenset(
            n
            for n, t in hints.items()
            if t is int or (int in typing.get_args(t) and float not in typing.get_args(t))
        )
    return _WHOLE[cls]


def _message(where: ConfigKeys | CommandFlags, name: str, value: Any, allowed: str, f: Any) -> str:
    default = f.default
    hint = "" if default is dataclasses.MISSING or default is None else f" (default {default!r})"
    return f"{where.key(name)} must be {allowed}, got {value!r}; {where.fix(name)}{hint}"
