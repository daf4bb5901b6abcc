"""``benchmarks/slow_cpu.py``: the CPU cap that emulates a slower CPU (a cgroup v1 cpu
quota).  CI runs as root with the cgroup v1 cpu controller mounted, as the benchmark
needs; the cap must really slow a child, and the cgroup must go whatever happens."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def slow_cpu(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("slow_cpu")


def test_cap_values_keep_the_kernel_minimum(slow_cpu: ModuleType) -> None:
    assert slow_cpu.cap_values(1.1, 2000) == (2000, 2200)
    assert slow_cpu.cap_values(0.8, 2000) == (2000, 1600)
    assert slow_cpu.cap_values(0.25, 2000) == (4000, 1000)  # 500 us would be refused
    assert slow_cpu.cap_values(2.0, 500) == (1000, 2000)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="--quota"):
            slow_cpu.cap_values(bad, 2000)


def test_refuses_where_there_is_no_cpu_controller(slow_cpu: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(slow_cpu.CgroupError, match="no cgroup v1 cpu controller"):
        with slow_cpu.cpu_cap(0.5, 2000, root=tmp_path):
            pass
    assert list(tmp_path.iterdir()) == []


def test_a_capped_child_runs_slower_and_the_group_goes(slow_cpu: ModuleType) -> None:
    """0.2 s of CPU at a quarter of a CPU takes >= 0.8 s of wall time (bound 0.6 s)."""
    burn = "import time\nwhile time.process_time() < 0.2: pass"
    with slow_cpu.cpu_cap(0.25, 2000) as group:
        assert (group / "cpu.cfs_quota_us").read_text().strip() == "1000"
        t0 = time.monotonic()
        assert slow_cpu.run_capped(group, [sys.executable, "-c", burn], {}, 30.0) == 0
        wall = time.monotonic() - t0
        assert slow_cpu.throttling(group)["nr_throttled"] > 0
    assert wall >= 0.6, wall
    assert not group.exists()


def test_a_child_past_its_time_is_killed_and_the_group_still_goes(slow_cpu: ModuleType) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        with slow_cpu.cpu_cap(1.0, 2000) as group:
            slow_cpu.run_capped(group, ["sleep", "30"], {}, 0.3)
    assert not group.exists()
