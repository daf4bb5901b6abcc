"""What the benchmarks share instead of each writing its own: the machine beside every
figure (``halfsec.lab.report.json.cpu_info``, also in every report's ``meta.machine``)
and the command-line tail (``benchmarks/_cli.py``)."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from halfsec.audio.io import write_wav
from halfsec.lab.report.json import accepted, cpu_fields, cpu_info, default_meta
from halfsec.measure.end_of_speech import voiced_bounds
from halfsec.measure.percentile import percentile

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

LSCPU = """Architecture:                            x86_64
CPU(s):                                  2
Model name:                              AMD EPYC 9B45
Flags:                                   fpu sse avx2 avx512f avx512_vnni
"""
CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9B45
flags\t\t: fpu avx2 avx512f

processor\t: 1
model name\t: something else
flags\t\t: fpu
"""


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("_cli")


def test_cpu_fields_reads_lscpu_and_proc_cpuinfo_alike() -> None:
    a, b = cpu_fields(LSCPU), cpu_fields(CPUINFO)
    assert a["model name"] == b["model name"] == "AMD EPYC 9B45"
    assert a["flags"].split()[-2:] == ["avx512f", "avx512_vnni"]
    assert b["flags"] == "fpu avx2 avx512f"  # the first processor's, not the last one's


def test_cpu_info_is_this_machine_as_lscpu_names_it() -> None:
    info = cpu_info()
    assert set(info) == {"model", "cpus", "avx512f", "avx512_vnni", "isa"}
    assert info["model"]
    if shutil.which("lscpu"):
        fields = cpu_fields(subprocess.run(["lscpu"], capture_output=True, text=True).stdout)
        assert info["model"] == fields["model name"]
        flags = set(fields["flags"].split())
        assert info["avx512f"] == ("avx512f" in flags)
        assert info["avx512_vnni"] == ("avx512_vnni" in flags)
        assert set(info["isa"]) <= flags
    assert info["avx512f"] == ("avx512f" in info["isa"])
    assert default_meta("x")["machine"]["cpu"] == info


def test_emit_prints_and_writes_the_same_json(
    cli: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = {"a": 1, "p": Path("/x")}
    cli.emit(out, tmp_path / "new" / "o.json")  # the folder is made
    printed = capsys.readouterr()
    assert printed.out == (tmp_path / "new" / "o.json").read_text()
    assert json.loads(printed.out) == {"a": 1, "p": "/x"}
    assert printed.err == f"wrote {tmp_path / 'new' / 'o.json'}\n"  # stdout: the JSON alone
    cli.emit(out, None)
    assert capsys.readouterr().err == ""


def test_pct_is_the_projects_percentile_rounded(cli: ModuleType) -> None:
    xs = [10.0, 20.0, 30.0, 40.0]
    assert cli.pct(xs, 50) == 25.0  # linear interpolation: nearest rank would say 30
    assert cli.pct(xs, 95) == round(percentile(xs, 95) or 0.0, 1) == 38.5
    assert cli.pct([1.23456], 50, 2) == 1.23
    assert cli.pct(xs, 100) == 40.0
    assert cli.pct([], 50) is None


def lines_matching(pattern: str, but: set[str]) -> list[str]:
    """``file:line`` of every line of a benchmark (but the files named) matching
    ``pattern``: what a guard below lists as written a second time."""
    own = re.compile(pattern)
    return [
        f"{p.name}:{i}"
        for p in sorted(BENCH.glob("*.py"))
        if p.name not in but
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if own.search(line)
    ]


def test_no_benchmark_keeps_its_own_percentile_helper() -> None:
    """A benchmark that rounds (or ranks) its own percentiles drifts from the reported
    rule: stop 15 found logic_bench's nearest rank beside four copies of this one, and
    medians taken five other ways (the same number as the linear p50, written twice)."""
    own = r"^\s*def (pct|percentile|quantile)\(|\b(np|statistics)\.median\("
    bad = lines_matching(own, but={"_cli.py"})
    assert not bad, f"use _cli.pct (halfsec.measure.percentile, rounded): {bad}"


def test_no_benchmark_keeps_its_own_acceptance_rule() -> None:
    """Command acceptance is ``lab.report.json.accepted`` everywhere: stop 15 found the
    report case-folding the intent while run_corpus and slow_cpu compared it exactly, and
    nlu_bench splitting the slots by hand, three figures for one word."""
    own = r'parse_slots\([^)]*\)\s*==|\.intent\s*==|get\("intent"\)\s*==|def _labels\('
    bad = lines_matching(own, but=set())
    assert not bad, f"use halfsec.lab.report.json.accepted / same_intent: {bad}"


def test_nlu_bench_accepts_by_the_reports_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    nlu = importlib.import_module("nlu_bench")
    order = {"intent": "orderDrink", "slots": "coffeeDrink=latte;size=large"}
    for intent, slots in [
        ("orderDrink", {"coffeeDrink": "Latte", "size": "large"}),
        ("orderdrink", {"coffeeDrink": "latte", "size": "large"}),
        ("orderDrink", {"coffeeDrink": "latte"}),
        ("orderDrink", {"coffeeDrink": "latte", "size": "large", "milk": "oat"}),
        ("cancel", {"coffeeDrink": "latte", "size": "large"}),
    ]:
        u = nlu.Understanding(intent=intent, slots=slots)
        assert nlu._right(u, order) == accepted(intent, slots, order["intent"], order["slots"])


def test_shortest_orders_sorts_filters_cuts_and_leaves_out_silence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    speech = importlib.import_module("_speech")
    rate = 16000
    t = np.arange(rate) / rate
    tone = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)

    def clip(lead_s: float, tail_s: float) -> np.ndarray:
        z = np.zeros
        return np.concatenate(
            [z(int(lead_s * rate), np.int16), tone, z(int(tail_s * rate), np.int16)]
        )

    files = {
        "long.wav": ("orderDrink", clip(1.0, 2.0)),
        "short.wav": ("orderDrink", clip(0.5, 1.0)),
        "other.wav": ("", clip(0.1, 0.1)),  # no intent: not an order
        "silent.wav": ("orderDrink", np.zeros(rate, np.int16)),
    }
    lines = ["file\tduration_s\ttranscript\tintent\tslots"]
    for name, (intent, pcm) in files.items():
        write_wav(tmp_path / name, pcm, rate)
        lines.append(f"{name}\t{pcm.size / rate}\tt\t{intent}\t")
    (tmp_path / "manifest.tsv").write_text("\n".join(lines) + "\n")

    got = speech.shortest_orders(10, after_s=0.1, speech=tmp_path)
    assert [r["file"] for r, _ in got] == ["short.wav", "long.wav"]  # silent one left out
    for r, cut in got:
        pcm = files[r["file"]][1]
        b = voiced_bounds(pcm)
        assert b is not None
        assert np.array_equal(cut, pcm[b[0] - 4800 : b[1] + 1600])  # 0.3 s before, 0.1 s after
    # n counts recordings, as the benchmarks always did: the shortest is the silent one
    assert speech.shortest_orders(1, after_s=1.0, speech=tmp_path) == []
    assert [r["file"] for r, _ in speech.shortest_orders(2, 1.0, speech=tmp_path)] == ["short.wav"]


def test_manifest_rows_reads_every_row_and_no_benchmark_reads_it_itself(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The shared corpus' manifest is read by ``_speech.manifest_rows`` alone (stop 15
    found eleven copies of the open-and-DictReader lines)."""
    monkeypatch.syspath_prepend(str(BENCH))
    speech = importlib.import_module("_speech")
    tsv = tmp_path / "manifest.tsv"
    tsv.write_text("file\ttranscript\tintent\na.wav\tone latte\torderDrink\nb.wav\tcaf\u00e9\t\n")
    assert speech.manifest_rows(tsv) == [
        {"file": "a.wav", "transcript": "one latte", "intent": "orderDrink"},
        {"file": "b.wav", "transcript": "caf\u00e9", "intent": ""},
    ]
    assert speech.MANIFEST == speech.SPEECH / "manifest.tsv"
    bad = lines_matching(r"DictReader\(f, delimiter=|open\([^)]*manifest", but={"_speech.py"})
    assert not bad, f"use _speech.manifest_rows: {bad}"


def test_every_benchmark_imports() -> None:
    """The scripts import each other's helpers (admission_bench and soak take load_bench's
    corpus): a helper moved into a shared module must not leave an importer behind.  In a
    fresh interpreter, so no module of this test run hides a missing name."""
    code = (
        "import importlib, pathlib, sys\n"
        f"sys.path.insert(0, {str(BENCH)!r})\n"
        f"for p in sorted(pathlib.Path({str(BENCH)!r}).glob('*.py')):\n"
        "    importlib.import_module(p.stem)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


TOOLS = {"barge_in_clips.py", "end_of_speech_view.py"}
"""Scripts that make inputs (clips, a spectrogram), not a result: no JSON to answer with."""


def test_every_benchmark_answers_through_the_shared_cli_tail() -> None:
    """``--json OUT`` and the printed JSON come from ``_cli`` (bench_parser, emit) in every
    benchmark, so the lead's one command per script behaves the same everywhere."""
    own_json = re.compile(r"add_argument\(\s*\"--json\"")
    bad = []
    for p in sorted(BENCH.glob("*.py")):
        if p.name.startswith("_") or p.name in TOOLS:
            continue
        text = p.read_text()
        if own_json.search(text) or "bench_parser(" not in text or "emit(" not in text:
            bad.append(p.name)
    assert not bad, f"use _cli.bench_parser and _cli.emit in: {bad}"
