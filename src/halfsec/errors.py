"""Errors users see.  Each message says what was wrong and what to do next."""

from __future__ import annotations


class HalfsecError(Exception):
    """Base class: anything halfsec raises on purpose."""


class AudioInputError(HalfsecError):
    """Input that cannot be audio (unreadable file, wrong width, empty, NaN/inf)."""


class ConfigError(HalfsecError):
    """A configuration or domain file is invalid."""


class EngineUnavailable(HalfsecError):
    """An engine's package or model is missing on this machine."""
