"""``halfsec bench --client browser``, exactly as a user runs it: a subprocess that starts
its own server, drives headless Chromium through the page, and writes the JSON report.

The browser's own behaviour is checked in ``test_browser.py``; this only proves the CLI
wiring (option parsing, dispatch to ``run_browser_items``, ``--net`` reaching the page,
report building) end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from halfsec.lab.clients.chromium import DEFAULT_CHROMIUM


@pytest.mark.slow
def test_bench_cli_with_the_browser_client(
    rows: list[dict[str, str]], speech_dir: Path, tmp_path: Path
) -> None:
    assert shutil.which(DEFAULT_CHROMIUM), f"{DEFAULT_CHROMIUM} is missing (scripts/setup.sh)"
    coffee = min(
        (r for r in rows if r["intent"] == "orderDrink"), key=lambda r: float(r["duration_s"])
    )
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text(
        "file\ttranscript\tintent\n"
        f"{speech_dir / coffee['file']}\t{coffee['transcript']}\t{coffee['intent']}\n"
    )
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "halfsec.cli.main", "bench", "--client", "browser"]
    cmd += ["--transport", "websocket", "--corpus", str(manifest), "--json", str(out)]
    cmd += ["--net", "lan"]  # the lab's TCP relay between the page and the server
    cmd += ["--no-store"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["meta"]["client_kind"] == "browser"
    assert isinstance(report["summary"]["v2v_ms"]["p50"], float)
    turn = report["turns"][0]
    assert turn["client"] == "browser" and turn["transport"] == "websocket"
    assert 0 < turn["v2v_ms"] < 5000
    assert set(turn["stages"]) >= {"endpointing_ms", "network_buffer_ms"}
    assert report["meta"]["net"] == "lan" and report["meta"]["net_mode"] == "relay"
    net = turn["net"]
    assert net["transport"] == "tcp-relay" and net["counters"]["connections"] == 1
    assert net["counters"]["up"]["chunks"] > 0 and net["counters"]["down"]["chunks"] > 0


def test_bench_cli_rejects_an_unknown_client(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "halfsec.cli.main", "bench", "--client", "firefox"]
    cmd += ["--corpus", str(tmp_path), "--no-store"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--client must be python or browser" in p.stderr
