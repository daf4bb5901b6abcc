"""What one load run is asked to do: how many callers, how they behave, what the SLO is.

Kept apart from the runner so the CLI, ``benchmarks/load_bench.py`` and
``benchmarks/soak.py`` check the same values the same way (``options_check``), and a
bad ``--ramp`` fails before any server starts."""

from __future__ import annotations

from dataclasses import dataclass

from halfsec.errors import HalfsecError
from halfsec.options_check import CommandFlags, Range, Rule, at_least, check_fields, positive

__all__ = ["DEFAULT_RAMP", "MAX_SESSIONS", "LoadError", "LoadOptions", "Slo", "parse_ramp"]

MAX_SESSIONS = 256
"""The most callers one step may ask for: load traffic stays bounded (loopback only)."""

DEFAULT_RAMP = (1, 2, 4, 6, 8, 10, 12, 16)
"""``--ramp`` with no value: dense where a 2-core box breaks, sparser above."""


class LoadError(HalfsecError):
    """The load run cannot start (bad option, bad ramp, mixed domains)."""


@dataclass(frozen=True, slots=True)
class Slo:
    """What a step must meet: p95 of voice-to-voice and failed turns.

    ``refusals_break``: a busy refusal (HTTP 503) is counted as refused, never as
    failed; by default a step with refusals still does not count as met, because it did
    not serve N callers (the knee is a capacity).  Off, the ramp measures what an
    admission-controlled server does with the callers it admits."""

    p95_ms: float = 500.0
    max_failed: int = 0
    refusals_break: bool = True


_RULES: dict[str, Rule] = {
    "turns": Range(1, 10_000),
    "think_min_s": Range(0, 600, unit="s"),
    "think_max_s": Range(0, 600, unit="s"),
    "stagger_s": Range(0, 600, unit="s"),
    "duration_s": positive("s", at_most=86_400),
    "settle_s": Range(0, 600, unit="s"),
    "sample_s": at_least(0.05, "s", at_most=600),
}
_FLAGS = CommandFlags(
    "halfsec bench",
    "LoadOptions",
    {"turns": "--turns", "think_min_s": "--think", "think_max_s": "--think"},
)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How each caller of a step behaves.

    A caller plays a recording, waits until the reply has finished playing (the lab
    client's own rule, ``lab.clients.turn_state``), thinks for a seeded uniform draw in
    ``[think_min_s, think_max_s]``, and plays its next recording.  Callers start
    ``stagger_s`` apart, so N sessions do not all speak in the same 20 ms."""

    turns: int | None = 3
    """Turns per caller per step (None: until ``duration_s``)."""
    duration_s: float | None = None
    """Stop starting turns this long after the step began (soak; None: ``turns`` only)."""
    think_min_s: float = 1.0
    think_max_s: float = 2.0
    stagger_s: float = 0.7
    seed: int = 0
    settle_s: float = 2.0
    """Pause between steps, so one step's last replies are not the next step's load."""
    sample_s: float = 1.0
    """How often the server's CPU, memory, descriptors and threads are sampled."""

    def __post_init__(self) -> None:
        check_fields(self, _RULES, _FLAGS, LoadError)
        if self.think_max_s < self.think_min_s:
            raise LoadError(
                f"--think {self.think_min_s:g}:{self.think_max_s:g}: the longest think time "
                "must not be shorter than the shortest"
            )
        if self.turns is None and self.duration_s is None:
            raise LoadError("a load step needs a number of turns per caller or a duration")


def parse_ramp(spec: str | None) -> list[int]:
    """``"2:16:2"`` (start:stop[:step], stop included), ``"1,2,4,8"`` or ``"auto"`` (the
    default ramp) as a rising list of session counts."""
    if spec is None or spec.strip().lower() in ("", "auto", "default"):
        return list(DEFAULT_RAMP)
    text = spec.strip()
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop = parts[0], parts[1]
            step = parts[2] if len(parts) == 3 else 1
            if step < 1:
                raise ValueError
            ns = list(range(start, stop + 1, step))
        else:
            ns = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise LoadError(
            f"--ramp {spec!r} is not START:STOP[:STEP] (e.g. 2:16:2) or a list like 1,2,4,8"
        ) from None
    if not ns:
        raise LoadError(f"--ramp {spec!r} has no steps")
    if any(n < 1 or n > MAX_SESSIONS for n in ns):
        raise LoadError(f"--ramp {spec!r}: every step must be 1..{MAX_SESSIONS} sessions")
    if any(b <= a for a, b in zip(ns, ns[1:], strict=False)):
        raise LoadError(f"--ramp {spec!r}: steps must rise (a ramp stops at the first break)")
    return ns
