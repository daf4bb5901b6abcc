"""The lab store under failure: clear messages for SQLite's errors, bad rows skipped,
runs saved turn by turn, old databases migrated.  (The kill -9 of a real bench is in
test_bench_kill.py; the happy path round trip in test_lab_reports.py.)"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lab_synth import synthetic_turns

from halfsec.lab.report import store
from halfsec.lab.report.json import build_report, default_meta
from halfsec.lab.report.store import (
    SCHEMA_VERSION,
    RunWriter,
    StoreError,
    list_runs,
    load_run,
    load_spans,
    save_run,
)


def _report(n: int = 3) -> dict[str, Any]:
    return build_report(synthetic_turns(n, seed=3), default_meta("test"))


def _span(name: str, start: Any = 1, span_id: str = "cd" * 8) -> dict[str, Any]:
    return {
        "traceId": "ab" * 16,
        "spanId": span_id,
        "parentSpanId": "",
        "name": name,
        "startTimeUnixNano": start,
        "endTimeUnixNano": 2,
    }


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "halfsec.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"},
    )


# -- one bad row never costs the run -----------------------------------------------------
def test_bad_spans_and_turns_are_skipped_counted_and_said(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    report = _report(3)
    report["turns"].insert(1, "not a turn")  # type: ignore[arg-type]
    circular: dict[str, Any] = _span("circular", span_id="03" * 8)
    circular["self"] = circular
    spans = [
        _span("good", span_id="01" * 8),
        _span("not a number", start="soon", span_id="02" * 8),
        circular,
        _span("past int64", start=2**70, span_id="04" * 8),
        None,
        _span("also good", span_id="05" * 8),
    ]
    said: list[str] = []
    rid = save_run(report, db, spans=spans, warn=said.append)  # type: ignore[arg-type]
    assert [s["name"] for s in load_spans(rid, db)] == ["good", "also good"]
    back = load_run(rid, db)
    assert len(back["turns"]) == 3 and back["summary"] == report["summary"]
    (message,) = said
    assert "without 1 turn(s) and 4 span(s)" in message and "turn 1" in message


# -- turn by turn ------------------------------------------------------------------------
def test_a_run_saved_turn_by_turn_is_incomplete_until_finished(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    turns = synthetic_turns(2, seed=5, failed=1)  # two good turns, then a failed one
    assert len(turns) == 3
    writer = RunWriter.begin(default_meta("halfsec bench"), db)
    for t in turns[:2]:
        writer.add_turn(t)
    (row,) = list_runs(db)
    assert row["complete"] is False and row["n_turns"] == 2 and row["id"] == writer.run_id
    partial = load_run(writer.run_id, db)
    assert partial["meta"]["incomplete"] is True and partial["turns"] == turns[:2]
    assert "summary" not in partial

    report = build_report(turns, default_meta("halfsec bench"))
    assert writer.finish(report, [_span("client.turn")]) == writer.run_id
    (row,) = list_runs(db)
    assert row["complete"] is True and row["n_turns"] == 3 and row["n_failed"] == 1
    whole = load_run(writer.run_id, db)
    assert "incomplete" not in whole["meta"] and whole["turns"] == report["turns"]
    assert len(load_spans(writer.run_id, db)) == 1


def test_runs_and_report_show_an_incomplete_run(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    writer = RunWriter.begin(default_meta("halfsec bench"), db)
    for t in synthetic_turns(2, seed=8):
        writer.add_turn(t)
    p = _cli("runs", "--db", str(db))
    assert p.returncode == 0, p.stderr
    assert "2 incomplete" in p.stdout and "bench stopped mid-run" in p.stdout
    p = _cli("report", "latest", "--db", str(db))
    assert p.returncode == 0, p.stderr
    assert "incomplete" in p.stderr and "2 finished turn(s)" in p.stderr


# -- SQLite's errors, said plainly --------------------------------------------------------
def test_a_damaged_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    db.write_bytes(b"this was never a database" * 200)
    with pytest.raises(StoreError, match="damaged or not a halfsec database.*mv .*broken"):
        list_runs(db)
    p = _cli("runs", "--db", str(db))
    assert p.returncode == 2 and "damaged" in p.stderr and "Traceback" not in p.stderr


def test_a_lock_held_too_long_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "lab.db"
    save_run(_report(), db)
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(db)
    holder.execute("BEGIN EXCLUSIVE")  # a writer that never lets go
    try:
        with pytest.raises(StoreError, match="is locked: another process.*--db or HALFSEC_DB"):
            save_run(_report(), db)
    finally:
        holder.rollback()
        holder.close()
    assert len(list_runs(db)) == 1  # nothing half-written


def _connect_with(
    monkeypatch: pytest.MonkeyPatch, prepare: Callable[[sqlite3.Connection], None]
) -> None:
    """Make the store's connections behave like a read-only or full disk would (the
    tests run as root, for whom file modes do not stop a write)."""
    real = sqlite3.connect

    def connect(path: Any, *args: Any, **kw: Any) -> sqlite3.Connection:
        con = real(path, *args, **kw)
        prepare(con)
        return con

    monkeypatch.setattr(store.sqlite3, "connect", connect)


def test_a_read_only_database_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "lab.db"
    save_run(_report(), db)
    _connect_with(monkeypatch, lambda con: con.execute("PRAGMA query_only=ON"))
    assert len(list_runs(db)) == 1  # reading still works
    with pytest.raises(StoreError, match="read-only for this user.*writable"):
        save_run(_report(), db)


def test_a_full_disk_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "lab.db"
    save_run(_report(), db)
    pages = sqlite3.connect(db).execute("PRAGMA page_count").fetchone()[0]
    _connect_with(monkeypatch, lambda con: con.execute(f"PRAGMA max_page_count={pages}"))
    big = _report(400)
    with pytest.raises(StoreError, match="is full: nothing more was saved. Free some space"):
        save_run(big, db)
    monkeypatch.undo()
    assert len(list_runs(db)) == 1


def test_a_folder_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create the folder"):
        list_runs(tmp_path / "file" / "lab.db")


# -- versions -----------------------------------------------------------------------------
def test_a_v1_database_is_migrated_and_its_runs_are_complete(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    con = sqlite3.connect(db)
    v1 = store._DDL.replace(",\n    complete    INTEGER NOT NULL DEFAULT 1", "")
    assert "complete" not in v1
    con.executescript(v1)
    con.execute(
        "INSERT INTO runs (created_at, command, n_turns, n_failed, report)"
        " VALUES ('2026-01-01', 'halfsec bench', 0, 0, ?)",
        (json.dumps({"meta": {"command": "halfsec bench"}}),),
    )
    con.execute("PRAGMA user_version=1")
    con.commit()
    con.close()
    (old,) = list_runs(db)
    assert old["complete"] is True and "incomplete" not in load_run(old["id"], db)["meta"]
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    save_run(_report(), db)
    assert len(list_runs(db)) == 2


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "lab.db"
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StoreError, match="newer than this halfsec"):
        list_runs(db)
