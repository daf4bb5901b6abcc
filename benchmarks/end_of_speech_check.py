"""How far the end-of-speech rule moved every voice-to-voice figure, and how it meets the marks.

    python benchmarks/end_of_speech_check.py [--json OUT]

Every v2v figure is (first audible reply sample) - (reference end of speech), so when the
rule that finds the end changes, each figure moves by exactly -(new end - old end).  This
runs both rules on the 186 shared recordings and prints, per source, p5/p50/p95/min/max
of (new - old) end in ms (positive: the new end is later, v2v is lower), the same for the
start (where the lab's tests and benches trim a recording before sending it), and on the
hand-marked recordings of ``tests/data/end_of_speech_marks.tsv`` each rule's error.

The old rule is the one from commit f9d9740 (``src/halfsec/turn/reference.py``: Silero
segments refined by frame energy); it is read from git and run as it was, so this script
needs the repository's history and the Silero engine, which the new rule does not.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import types
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
from _cli import bench_parser, emit
from _speech import SPEECH, manifest_rows

from halfsec.audio.io import load_audio
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.measure.percentile import percentile

ROOT = Path(__file__).resolve().parents[1]
MARKS = ROOT / "tests" / "data" / "end_of_speech_marks.tsv"
OLD_COMMIT = "f9d9740"
OLD_PATH = "src/halfsec/turn/reference.py"

Rule = Callable[[np.ndarray], tuple[int, int] | None]


def old_rule() -> Rule:
    """``voiced_bounds`` exactly as it stood at ``OLD_COMMIT``."""
    src = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:{OLD_PATH}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType("old_reference")
    module.__package__ = "halfsec.turn"  # it imported ``.vad`` (Silero), still there
    exec(compile(src, f"{OLD_COMMIT}:{OLD_PATH}", "exec"), module.__dict__)
    fn: Rule = module.__dict__["voiced_bounds"]
    return fn


def source_of(name: str) -> str:
    """``picovoice_0b3c....flac`` -> ``picovoice`` (the corpus a recording comes from)."""
    return Path(name).name.split("_")[0]


def summary(values: list[float]) -> dict[str, float | int]:
    out: dict[str, float | int] = {"n": len(values)}
    for label, q in (("p5", 5.0), ("p50", 50.0), ("p95", 95.0)):
        got = percentile(values, q)
        out[label] = round(got, 1) if got is not None else float("nan")
    out["min"] = round(min(values), 1)
    out["max"] = round(max(values), 1)
    return out


Table = dict[str, dict[str, float | int]]


def shared_shift(old: Rule) -> tuple[Table, Table, list[dict[str, object]]]:
    """Per source: (new - old) end, and (new - old) start, in ms; and every file's bounds."""
    files = [r["file"] for r in manifest_rows()]
    ends: dict[str, list[float]] = {}
    starts: dict[str, list[float]] = {}
    rows: list[dict[str, object]] = []
    for name in files:
        pcm = load_audio(SPEECH / name)
        a, b = old(pcm), voiced_bounds(pcm)
        rows.append(
            {
                "file": name,
                "old_ms": None if a is None else [a[0] / 16.0, a[1] / 16.0],
                "new_ms": None if b is None else [b[0] / 16.0, b[1] / 16.0],
            }
        )
        if a is not None and b is not None:
            ends.setdefault(source_of(name), []).append((b[1] - a[1]) / 16.0)
            starts.setdefault(source_of(name), []).append((b[0] - a[0]) / 16.0)
    tables = []
    for by_source in (ends, starts):
        table = {src: summary(v) for src, v in sorted(by_source.items())}
        table["all"] = summary([d for v in by_source.values() for d in v])
        tables.append(table)
    return tables[0], tables[1], rows


def mark_errors(old: Rule) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    with open(MARKS, newline="") as f:
        for r in csv.DictReader(
            (line for line in f if not line.startswith("#")), delimiter="\t", quoting=csv.QUOTE_NONE
        ):
            base = SPEECH if r["file"].startswith("audio/") else MARKS.parent
            pcm = load_audio(base / r["file"])
            mark = float(r["end_ms"])
            a, b = old(pcm), voiced_bounds(pcm)
            out.append(
                {
                    "file": r["file"],
                    "kind": r["kind"],
                    "mark_ms": mark,
                    "tolerance_ms": float(r["tolerance_ms"]),
                    "old_err_ms": None if a is None else round(a[1] / 16.0 - mark, 1),
                    "new_err_ms": None if b is None else round(b[1] / 16.0 - mark, 1),
                }
            )
    return out


def show(ends: Table, starts: Table, marks: list[dict[str, object]]) -> None:
    """The shifts per source and each rule's error against the hand marks, as tables."""
    for title, table in (
        ("end of speech: new - old, ms (every v2v figure moves by minus this)", ends),
        ("start of speech: new - old, ms (where the lab trims recordings before sending)", starts),
    ):
        print(title)
        print(f"{'source':<16}{'n':>4}{'p5':>8}{'p50':>8}{'p95':>8}{'min':>8}{'max':>8}")
        for src, v in table.items():
            print(
                f"{src:<16}{v['n']:>4}{v['p5']:>8}{v['p50']:>8}{v['p95']:>8}"
                f"{v['min']:>8}{v['max']:>8}"
            )
        print()
    print("error against the hand marks, ms (rule - mark; tol: what the test allows)")
    print(f"{'file':<58}{'kind':<10}{'tol':>5}{'old':>8}{'new':>8}")
    for m in marks:
        print(
            f"{m['file']!s:<58}{m['kind']!s:<10}{m['tolerance_ms']!s:>5}"
            f"{m['old_err_ms']!s:>8}{m['new_err_ms']!s:>8}"
        )
    for key in ("old_err_ms", "new_err_ms"):
        errs = [abs(float(str(m[key]))) for m in marks if m[key] is not None]
        missing = sum(1 for m in marks if m[key] is None)
        within = sum(1 for e in errs if e <= 20.0)
        allowed = sum(
            1
            for m in marks
            if m[key] is not None and abs(float(str(m[key]))) <= float(str(m["tolerance_ms"]))
        )
        print(
            f"{key[:3]}: |error| p50 {percentile(errs, 50)} max {max(errs)} ms, "
            f"{within}/{len(marks)} within 20 ms, {allowed}/{len(marks)} within tolerance, "
            f"{missing} found no speech"
        )


def main() -> None:
    ap = bench_parser(__doc__)
    args = ap.parse_args()
    old = old_rule()
    ends, starts, rows = shared_shift(old)
    marks = mark_errors(old)
    with redirect_stdout(sys.stderr):  # the tables on stderr, the JSON on stdout
        show(ends, starts, marks)
    emit({"end_shift": ends, "start_shift": starts, "shared": rows, "marks": marks}, args.json)


if __name__ == "__main__":
    main()
