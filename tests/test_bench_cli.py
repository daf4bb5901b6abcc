"""What the benchmarks share instead of each writing its own: the machine beside every
figure (``halfsec.lab.report.json.cpu_info``, also in every report's ``meta.machine``)
and the command-line tail (``benchmarks/_cli.py``)."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from halfsec.lab.report.json import cpu_fields, cpu_info, default_meta
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
    cli.emit(out, tmp_path / "o.json")
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "o.json").read_text()
    assert json.loads(printed) == {"a": 1, "p": "/x"}


def test_pct_is_the_projects_percentile_rounded(cli: ModuleType) -> None:
    xs = [10.0, 20.0, 30.0, 40.0]
    assert cli.pct(xs, 50) == 25.0  # linear interpolation: nearest rank would say 30
    assert cli.pct(xs, 95) == round(percentile(xs, 95) or 0.0, 1) == 38.5
    assert cli.pct([1.23456], 50, 2) == 1.23
    assert cli.pct(xs, 100) == 40.0
    assert cli.pct([], 50) is None


def test_no_benchmark_keeps_its_own_percentile_helper() -> None:
    """A benchmark that rounds (or ranks) its own percentiles drifts from the reported
    rule: stop 15 found logic_bench's nearest rank beside four copies of this one, and
    medians taken five other ways (the same number as the linear p50, written twice)."""
    own = re.compile(r"^\s*def (pct|percentile|quantile)\(|\b(np|statistics)\.median\(")
    bad = [
        f"{p.name}:{i}"
        for p in sorted(BENCH.glob("*.py"))
        if p.name != "_cli.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if own.search(line)
    ]
    assert not bad, f"use _cli.pct (halfsec.measure.percentile, rounded): {bad}"
