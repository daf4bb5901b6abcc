"""Latency budgets: a TOML file of per-stage ceilings, checked at a percentile.

A budget turns "v2v p95 is 640 ms" into "logic is 90 ms over its line", which is the
sentence that tells someone what to fix.  Lines are checked on the per-turn *sum* of their
stages (the network line adds ``server_send`` and ``network_buffer`` turn by turn) and
then the percentile is taken: the sum of two p95s is not the p95 of a sum.

The default budget is one file, ``default_budget.toml`` beside this module, shipped in
the wheel as package data (an installed halfsec has no repository around it);
``budgets/default.toml`` at the repository root is a symbolic link to it, where people
look for it.  ``DEFAULT_BUDGET`` is that file, parsed once.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from halfsec.errors import HalfsecError
from halfsec.lab.report.stats import percentiles

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_BUDGET_PATH",
    "Budget",
    "BudgetLine",
    "Violation",
    "budget_table",
    "check_budget",
    "load_budget",
]

DEFAULT_BUDGET_PATH = Path(__file__).resolve().with_name("default_budget.toml")


@dataclass(frozen=True, slots=True)
class BudgetLine:
    name: str
    limit_ms: float
    stages: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    percentile: float
    lines: tuple[BudgetLine, ...]
    v2v_ms: float | None = None
    source: str = "builtin"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "percentile": self.percentile,
            "v2v_ms": self.v2v_ms,
            "lines": {
                ln.name: {"limit_ms": ln.limit_ms, "stages": list(ln.stages)} for ln in self.lines
            },
        }


@dataclass(frozen=True, slots=True)
class Violation:
    """One budget line over its limit at the budget's percentile."""

    line: str
    stages: tuple[str, ...]
    limit_ms: float
    observed_ms: float
    percentile: float
    over_ms: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "over_ms", round(self.observed_ms - self.limit_ms, 3))

    def __str__(self) -> str:
        return (
            f"{self.line}: p{self.percentile:g} {self.observed_ms:.1f} ms > "
            f"{self.limit_ms:.0f} ms budget (+{self.over_ms:.1f} ms)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "stages": list(self.stages),
            "limit_ms": self.limit_ms,
            "observed_ms": round(self.observed_ms, 3),
            "percentile": self.percentile,
            "over_ms": self.over_ms,
        }


def stage_key(name: str) -> str:
    """Stage names without the record's ``_ms`` suffix (``stt_ms`` -> ``stt``)."""
    return name[:-3] if name.endswith("_ms") else name


def parse_budget(data: Mapping[str, Any], source: str = "<dict>") -> Budget:
    """Validate a parsed TOML table; errors name the offending key (budgets are hand-written)."""
    lines_raw = data.get("lines")
    if not isinstance(lines_raw, Mapping) or not lines_raw:
        raise HalfsecError(f"{source}: budget needs a [lines.<name>] table per line")
    lines: list[BudgetLine] = []
    for name, spec in lines_raw.items():
        if not isinstance(spec, Mapping) or "limit_ms" not in spec:
            raise HalfsecError(f"{source}: [lines.{name}] needs limit_ms")
        stages = spec.get("stages", [name])
        if isinstance(stages, str) or not isinstance(stages, Sequence) or not stages:
            raise HalfsecError(f"{source}: [lines.{name}].stages must be a non-empty list")
        limit = float(spec["limit_ms"])
        if limit < 0:
            raise HalfsecError(f"{source}: [lines.{name}].limit_ms must be >= 0")
        lines.append(BudgetLine(str(name), limit, tuple(stage_key(str(s)) for s in stages)))
    pct = float(data.get("percentile", 95))
    if not 0 < pct <= 100:
        raise HalfsecError(f"{source}: percentile must be in (0, 100]")
    v2v = data.get("v2v_ms")
    return Budget(
        name=str(data.get("name", Path(source).stem)),
        percentile=pct,
        lines=tuple(lines),
        v2v_ms=None if v2v is None else float(v2v),
        source=source,
    )


def load_budget(path: Path | str | None = None) -> Budget:
    """The budget in ``path``; with no path, the default (``DEFAULT_BUDGET_PATH``)."""
    p = DEFAULT_BUDGET_PATH if path is None else Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError as e:
        raise HalfsecError(f"budget file not found: {p}") from e
    except tomllib.TOMLDecodeError as e:
        raise HalfsecError(f"{p}: invalid TOML: {e}") from e
    return parse_budget(data, str(p))


DEFAULT_BUDGET = load_budget(DEFAULT_BUDGET_PATH)
"""The default budget (``default_budget.toml``)."""


def _ok_turns(turns: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [t for t in turns if t.get("ok", True) and t.get("v2v_ms") is not None]


def line_values(turns: Sequence[Mapping[str, Any]], line: BudgetLine) -> list[float]:
    """Per-turn sums of a line's stages; a turn missing every stage of the line is skipped
    (imported traces may not measure the network), a turn missing some counts them as 0."""
    out: list[float] = []
    for t in _ok_turns(turns):
        stages = {stage_key(k): v for k, v in (t.get("stages") or {}).items()}
        vals = [stages.get(s) for s in line.stages]
        present = [float(v) for v in vals if v is not None]
        if present:
            out.append(sum(present))
    return out


def budget_table(turns: Sequence[Mapping[str, Any]], budget: Budget) -> dict[str, Any]:
    """The ``budget`` section of a report: each line's observed percentile and verdict."""
    pct = budget.percentile
    lines: dict[str, Any] = {}
    violations: list[Violation] = []
    for ln in budget.lines:
        vals = line_values(turns, ln)
        observed = percentiles(vals, (pct,))[pct] if vals else None
        ok = observed is None or observed <= ln.limit_ms
        lines[ln.name] = {
            "limit_ms": ln.limit_ms,
            "stages": list(ln.stages),
            "observed_ms": None if observed is None else round(observed, 3),
            "n": len(vals),
            "ok": ok,
        }
        if observed is not None and not ok:
            violations.append(Violation(ln.name, ln.stages, ln.limit_ms, observed, pct))
    v2v_block: dict[str, Any] | None = None
    if budget.v2v_ms is not None:
        vals = [float(t["v2v_ms"]) for t in _ok_turns(turns)]
        observed = percentiles(vals, (pct,))[pct] if vals else None
        ok = observed is None or observed <= budget.v2v_ms
        v2v_block = {
            "limit_ms": budget.v2v_ms,
            "observed_ms": None if observed is None else round(observed, 3),
            "ok": ok,
        }
        if observed is not None and not ok:
            violations.append(Violation("v2v", ("v2v",), budget.v2v_ms, observed, pct))
    return {
        **budget.as_dict(),
        "lines": lines,
        "v2v": v2v_block,
        "ok": not violations,
        "violations": [v.as_dict() for v in violations],
    }


def check_budget(report: Mapping[str, Any], budget: Budget | None = None) -> list[Violation]:
    """Budget lines over their limit for a built report (``--fail-over-budget`` exits 1 when
    this is non-empty).  Recomputed from ``report["turns"]`` so any budget can be applied
    to a stored run, not only the one it was built with."""
    b = budget if budget is not None else load_budget()
    table = budget_table(report.get("turns") or [], b)
    return [
        Violation(v["line"], tuple(v["stages"]), v["limit_ms"], v["observed_ms"], v["percentile"])
        for v in table["violations"]
    ]
