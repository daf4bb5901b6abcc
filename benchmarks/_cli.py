"""The command-line tail the benchmark scripts share: their docstring as ``--help`` and
``--json OUT``, and the result printed as JSON and, with ``--json``, written to OUT; and
:func:`pct`, the percentile as the benchmarks write it (the project's one rule, rounded).

One place for it so every benchmark answers the same way: the lead re-measures the
headline figures with one command per script (``python benchmarks/X.py ... --json OUT``),
and a script that printed or wrote its result differently would break that.  Imported
as ``_cli`` (a script's own folder is first on ``sys.path``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from halfsec.measure.percentile import percentile


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose help is the script's docstring ``doc`` (kept as written), with
    ``--json OUT``; the script adds its own options."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", type=Path, help="also write the result to this file")
    return ap


def emit(out: dict[str, Any], path: Path | None) -> None:
    """Print ``out`` as indented JSON and, when ``path`` is given, write the same text there
    and say so on stderr (stdout stays the JSON alone, ready for a pipe)."""
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        print(f"wrote {path}", file=sys.stderr)


def pct(xs: Iterable[float], q: float, digits: int = 1) -> float | None:
    """The ``q``-th percentile (0..100) of ``xs`` by ``halfsec.measure.percentile`` (linear
    interpolation, the rule behind every reported figure), rounded to ``digits`` as the
    benchmarks write it; None when there are none (JSON ``null``, not a made-up 0)."""
    p = percentile(xs, q)
    return None if p is None else round(p, digits)
