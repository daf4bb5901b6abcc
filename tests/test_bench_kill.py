"""``kill -9`` of a real ``halfsec bench`` mid-run: the store opens cleanly and keeps every
turn the bench finished (it saves turn by turn), and ``halfsec runs`` says the run is
incomplete.  Not simulated: the bench is a subprocess against a real server, killed with
SIGKILL once its second turn is in the database."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from halfsec.audio.io import load_audio, write_wav
from halfsec.lab.bench.records import RECORD_KEYS
from halfsec.lab.bench.server_process import ServerProcess
from halfsec.lab.report.json import build_report, default_meta
from halfsec.lab.report.store import list_runs, load_run, save_run
from halfsec.measure.end_of_speech import voiced_bounds

LIGHT = ["stt.engine=pocketsphinx", "tts.engine=espeak", "session.end_of_turn=silence"]
"""The cheapest real engines: the test is about the store, not the pipeline's speed."""


def _corpus(rows: list[dict[str, str]], speech_dir: Path, tmp: Path, n: int) -> Path:
    """A manifest of the n shortest coffee orders, cut close around their speech."""
    orders = sorted(
        (r for r in rows if r["intent"] == "orderDrink"), key=lambda r: float(r["duration_s"])
    )[:n]
    lines = ["file\tintent"]
    for r in orders:
        pcm = load_audio(speech_dir / r["file"])
        b = voiced_bounds(pcm)
        assert b is not None
        name = Path(r["file"]).stem + ".wav"
        write_wav(tmp / name, pcm[max(0, b[0] - 4800) : b[1] + 12800], 16000)
        lines.append(f"{name}\t{r['intent']}")
    (tmp / "manifest.tsv").write_text("\n".join(lines) + "\n")
    return tmp / "manifest.tsv"


def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HALFSEC_DB": str(db), "COLUMNS": "300"}
    return subprocess.run(
        [sys.executable, "-m", "halfsec.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


async def test_a_killed_bench_keeps_every_finished_turn(
    tmp_path: Path, rows: list[dict[str, str]], speech_dir: Path
) -> None:
    n = 5
    manifest = _corpus(rows, speech_dir, tmp_path, n)
    db = tmp_path / "lab.db"
    log = tmp_path / "bench.stderr"
    server = ServerProcess(overrides=LIGHT)
    await server.start()
    try:
        with log.open("w") as err:
            bench = await asyncio.create_subprocess_exec(
                *[sys.executable, "-m", "halfsec.cli.main", "bench"],
                *["--server", server.url, "--corpus", str(manifest)],
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "HALFSEC_DB": str(db), "COLUMNS": "300"},
            )
            try:
                deadline = time.monotonic() + 180
                while not (db.exists() and list_runs(db) and list_runs(db)[0]["n_turns"] >= 2):
                    assert bench.returncode is None, log.read_text()[-3000:]
                    assert time.monotonic() < deadline, "no second turn stored in 180 s"
                    await asyncio.sleep(0.05)
                os.kill(bench.pid, signal.SIGKILL)
            finally:
                if bench.returncode is None:
                    bench.kill()
                await asyncio.wait_for(bench.wait(), 30)
        assert bench.returncode == -signal.SIGKILL
    finally:
        await server.stop()

    # The file is sound, with no one left holding it.
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    (run,) = list_runs(db)
    assert run["complete"] is False
    stored = load_run(run["id"], db)
    assert stored["meta"]["incomplete"] is True
    files = [Path(t["file"]).name for t in stored["turns"]]
    assert 2 <= len(files) < n, files  # killed mid-run: the last recordings never played
    expected = [ln.split("\t")[0] for ln in manifest.read_text().splitlines()[1:]]
    assert files == expected[: len(files)], (files, expected)
    for t in stored["turns"]:
        assert set(RECORD_KEYS) <= set(t)
        assert t["ok"] and t["v2v_ms"] is not None, t.get("error")
    # Every turn the bench reported as finished before it died is in the store (it
    # stores a turn before it prints it; at most one stored turn was not yet printed).
    printed = re.findall(r"^(\S+\.wav): ", log.read_text(), flags=re.MULTILINE)
    assert printed == files[: len(printed)] and len(files) - len(printed) <= 1, (printed, files)

    p = _cli(db, "runs")
    assert p.returncode == 0, p.stderr
    assert f"{len(files)} incomplete" in p.stdout, p.stdout
    p = _cli(db, "report", "latest")
    assert p.returncode == 0 and f"{len(files)} finished turn(s)" in p.stderr, p.stderr
    # The next run saves beside it.
    save_run(build_report(stored["turns"], default_meta("after")), db)
    assert [r["complete"] for r in list_runs(db)] == [True, False]
