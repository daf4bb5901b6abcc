"""SQLite store for lab runs: every report, its turns and its spans, on one file.

Why SQLite in WAL mode: a bench writes while someone browses ``halfsec runs`` or renders
an old report; WAL lets readers proceed during a write.  The report document is stored
whole (minus turns, which get their own rows so they can be queried), so ``load_run``
returns exactly what ``build_report`` produced.  ``PRAGMA user_version`` versions the
schema; opening a newer database with older code fails loudly instead of misreading it.

A bench saves as it goes (``RunWriter``): the run row first, marked incomplete, then each
finished turn in its own transaction, then the whole report.  A ``kill -9`` mid-run
leaves an incomplete run holding every finished turn (SQLite's journal makes each
committed turn durable and rolls back the one being written).  Every SQLite failure
becomes a ``StoreError`` that says what happened and what to do (locked, damaged,
read-only, disk full), and one malformed span or turn is skipped and counted, never the
reason a whole run is lost.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from halfsec.errors import HalfsecError
from halfsec.lab.report.store_errors import ELSEWHERE, StoreError, store_error

__all__ = [
    "SCHEMA_VERSION",
    "RunWriter",
    "StoreError",
    "default_db_path",
    "list_runs",
    "load_run",
    "load_spans",
    "resolve_run_id",
    "save_run",
]

SCHEMA_VERSION = 2
"""v2: ``runs.complete`` (0 while a bench is still saving, or was killed while it was)."""

BUSY_TIMEOUT_S = 10.0
"""How long a write waits for another writer before the store reports the lock."""

log = logging.getLogger("halfsec.lab.store")

_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at  TEXT NOT NULL,
    command     TEXT,
    server_url  TEXT,
    hostname    TEXT,
    n_turns     INTEGER NOT NULL,
    n_failed    INTEGER NOT NULL,
    v2v_p50     REAL,
    v2v_p95     REAL,
    budget_ok   INTEGER,
    report      TEXT NOT NULL,
    complete    INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS turns (
    run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    idx             INTEGER NOT NULL,
    file            TEXT,
    ok              INTEGER NOT NULL,
    v2v_ms          REAL,
    dominant_stage  TEXT,
    trace_id        TEXT,
    record          TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS spans (
    run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    trace_id        TEXT NOT NULL,
    span_id         TEXT NOT NULL,
    parent_span_id  TEXT,
    name            TEXT NOT NULL,
    start_ns        INTEGER,
    end_ns          INTEGER,
    span            TEXT NOT NULL,
    PRIMARY KEY (run_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_trace ON spans(trace_id);
CREATE INDEX IF NOT EXISTS turns_trace ON turns(trace_id);
"""


def default_db_path() -> Path:
    """``$HALFSEC_DB`` if set, else ``~/.local/share/halfsec/lab.db`` (XDG data dir)."""
    env = os.environ.get("HALFSEC_DB")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "halfsec" / "lab.db"


@contextmanager
def _connect(db_path: Path | str | None) -> Iterator[sqlite3.Connection]:
    """An open, migrated connection; any SQLite failure inside leaves as a ``StoreError``."""
    path = Path(db_path) if db_path is not None else default_db_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(
            f"cannot create the folder of lab database {path} ({e.strerror or e}); {ELSEWHERE}"
        ) from e
    try:
        con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as e:
        raise store_error(path, e, BUSY_TIMEOUT_S) from e
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA foreign_keys=ON")
        _migrate(con, path)
        yield con
    except sqlite3.Error as e:
        raise store_error(path, e, BUSY_TIMEOUT_S) from e
    finally:
        con.close()


def _migrate(con: sqlite3.Connection, path: Path) -> None:
    version = int(con.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: lab database schema v{version} is newer than this halfsec "
            f"(v{SCHEMA_VERSION}); upgrade halfsec or {ELSEWHERE}"
        )
    if version == SCHEMA_VERSION:
        return
    # One writer migrates; another process opening the file meanwhile waits, then finds
    # the new version and does nothing.
    con.execute("BEGIN IMMEDIATE")
    try:
        if int(con.execute("PRAGMA user_version").fetchone()[0]) < SCHEMA_VERSION:
            for statement in _DDL.split(";"):
                if statement.strip():
                    con.execute(statement)
            columns = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
            if "complete" not in columns:  # a v1 file: every run in it was saved whole
                con.execute("ALTER TABLE runs ADD COLUMN complete INTEGER NOT NULL DEFAULT 1")
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        con.commit()
    except BaseException:
        con.rollback()
        raise


def _f(x: Any) -> float | None:
    """A number for a REAL column; a value that is not one is stored as NULL."""
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def _run_row(report: Mapping[str, Any]) -> tuple[Any, ...]:
    """``runs`` columns created_at .. report of a finished report."""
    summary = report.get("summary") or {}
    v2v = summary.get("v2v_ms") or {}
    meta = report.get("meta") or {}
    machine = meta.get("machine") or {}
    budget = report.get("budget")
    return (
        str(meta.get("date") or ""),
        meta.get("command"),
        meta.get("server_url"),
        machine.get("hostname") if isinstance(machine, Mapping) else str(machine),
        int(summary.get("n_turns") or len(report.get("turns") or [])),
        int(summary.get("n_failed") or 0),
        _f(v2v.get("p50")),
        _f(v2v.get("p95")),
        None if budget is None else int(bool((budget or {}).get("ok"))),
        json.dumps({k: v for k, v in report.items() if k != "turns"}, default=str),
    )


_RUN_COLUMNS = (
    "created_at, command, server_url, hostname, n_turns, n_failed, v2v_p50, v2v_p95,"
    " budget_ok, report"
)

Skippable = (
    ValueError,
    TypeError,
    OverflowError,
    AttributeError,
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
)
"""What one malformed turn or span raises (not a number, not JSON, out of SQLite's
64-bit range, not a mapping at all): skip that row.  Anything else (locked, disk full)
is the database's problem and fails the save."""


def _put_turn(con: sqlite3.Connection, run_id: int, idx: int, t: Mapping[str, Any]) -> None:
    con.execute(
        "INSERT OR REPLACE INTO turns (run_id, idx, file, ok, v2v_ms, dominant_stage,"
        " trace_id, record) VALUES (?,?,?,?,?,?,?,?)",
        (
            run_id,
            idx,
            None if t.get("file") is None else str(t.get("file")),
            int(bool(t.get("ok", True))),
            _f(t.get("v2v_ms")),
            None if t.get("dominant_stage") is None else str(t.get("dominant_stage")),
            None if t.get("trace_id") is None else str(t.get("trace_id")),
            json.dumps(t, default=str),
        ),
    )


def _put_span(con: sqlite3.Connection, run_id: int, s: Mapping[str, Any]) -> None:
    con.execute(
        "INSERT OR REPLACE INTO spans (run_id, trace_id, span_id, parent_span_id, name,"
        " start_ns, end_ns, span) VALUES (?,?,?,?,?,?,?,?)",
        (
            run_id,
            str(s.get("traceId")),
            str(s.get("spanId")),
            str(s.get("parentSpanId")) if s.get("parentSpanId") else None,
            str(s.get("name")),
            int(s.get("startTimeUnixNano") or 0),
            int(s.get("endTimeUnixNano") or 0),
            json.dumps(s, default=str),
        ),
    )


def _put_rows(
    con: sqlite3.Connection,
    run_id: int,
    turns: Sequence[Mapping[str, Any]],
    spans: Sequence[Mapping[str, Any]],
) -> list[str]:
    """Insert every turn and span that can be stored; one line per row skipped."""
    skipped: list[str] = []
    for i, t in enumerate(turns):
        try:
            _put_turn(con, run_id, i, t)
        except Skippable as e:
            skipped.append(f"turn {i}: {type(e).__name__}: {e}")
    for s in spans:
        try:
            _put_span(con, run_id, s)
        except Skippable as e:
            name = s.get("name") if isinstance(s, Mapping) else type(s).__name__
            skipped.append(f"span {name!r}: {type(e).__name__}: {e}")
    return skipped


def _report_skipped(run_id: int, skipped: list[str], warn: Callable[[str], None] | None) -> None:
    if not skipped:
        return
    turns = sum(1 for s in skipped if s.startswith("turn "))
    message = (
        f"run {run_id} saved without {turns} turn(s) and {len(skipped) - turns} span(s) "
        f"that could not be stored (first: {skipped[0]})"
    )
    (warn or log.warning)(message)


def save_run(
    report: Mapping[str, Any],
    db_path: Path | str | None = None,
    spans: Sequence[Mapping[str, Any]] | None = None,
    warn: Callable[[str], None] | None = None,
) -> int:
    """Persist a report (and optionally its spans, in the JSON-lines exporter's shape);
    returns the new run id.  One transaction: a run is stored whole or not at all, less
    any malformed turn or span, which is skipped and counted (``warn``, default: the
    ``halfsec.lab.store`` logger)."""
    with _connect(db_path) as con, con:
        cur = con.execute(
            f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", _run_row(report)
        )
        run_id = int(cur.lastrowid or 0)
        skipped = _put_rows(con, run_id, report.get("turns") or [], spans or [])
    _report_skipped(run_id, skipped, warn)
    return run_id


class RunWriter:
    """A run saved while it runs, so that a killed bench loses only the turn in flight.

    ``begin`` stores the run, marked incomplete; ``add_turn`` stores one finished turn in
    its own short transaction (other processes read and write between them); ``finish``
    replaces it all with the final report and marks it complete, in one transaction."""

    def __init__(self, run_id: int, db_path: Path | str | None) -> None:
        self.run_id = run_id
        self.db_path = db_path
        self.n_turns = 0

    @classmethod
    def begin(cls, meta: Mapping[str, Any], db_path: Path | str | None = None) -> RunWriter:
        head = {"meta": dict(meta), "turns": []}
        with _connect(db_path) as con, con:
            cur = con.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}, complete) VALUES (?,?,?,?,?,?,?,?,?,?,0)",
                _run_row(head),
            )
        return cls(int(cur.lastrowid or 0), db_path)

    def add_turn(self, record: Mapping[str, Any]) -> None:
        """Store the next finished turn; a malformed one is skipped and logged."""
        idx, self.n_turns = self.n_turns, self.n_turns + 1
        with _connect(self.db_path) as con, con:
            try:
                _put_turn(con, self.run_id, idx, record)
            except Skippable as e:
                log.warning(
                    "run %d: turn %d not stored: %s: %s", self.run_id, idx, type(e).__name__, e
                )
                return
            con.execute(
                "UPDATE runs SET n_turns=(SELECT count(*) FROM turns WHERE run_id=?),"
                " n_failed=(SELECT count(*) FROM turns WHERE run_id=? AND ok=0) WHERE id=?",
                (self.run_id, self.run_id, self.run_id),
            )

    def finish(
        self,
        report: Mapping[str, Any],
        spans: Sequence[Mapping[str, Any]] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> int:
        """The final report, its turns and spans in place of what was saved so far."""
        with _connect(self.db_path) as con, con:
            con.execute(
                "UPDATE runs SET (" + _RUN_COLUMNS + ", complete) = (?,?,?,?,?,?,?,?,?,?,1)"
                " WHERE id=?",
                (*_run_row(report), self.run_id),
            )
            con.execute("DELETE FROM turns WHERE run_id=?", (self.run_id,))
            skipped = _put_rows(con, self.run_id, report.get("turns") or [], spans or [])
        _report_skipped(self.run_id, skipped, warn)
        return self.run_id


def list_runs(db_path: Path | str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Newest first: id, date, command, server, turns, failures, v2v p50/p95, budget,
    and whether the run was saved whole (``complete``)."""
    with _connect(db_path) as con:
        rows = con.execute(
            "SELECT id, created_at, command, server_url, hostname, n_turns, n_failed,"
            " v2v_p50, v2v_p95, budget_ok, complete FROM runs ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
    keys = (
        "id",
        "date",
        "command",
        "server_url",
        "hostname",
        "n_turns",
        "n_failed",
        "v2v_p50",
        "v2v_p95",
        "budget_ok",
        "complete",
    )
    out = [dict(zip(keys, r, strict=True)) for r in rows]
    for r in out:
        r["budget_ok"] = None if r["budget_ok"] is None else bool(r["budget_ok"])
        r["complete"] = bool(r["complete"])
    return out


def resolve_run_id(ref: str | int, db_path: Path | str | None = None) -> int:
    """A run id from what a user types: ``12``, ``latest``, or ``-1``/``-2`` (newest first)."""
    s = str(ref).strip()
    if s in ("latest", "last"):
        s = "-1"
    try:
        n = int(s)
    except ValueError as e:
        raise HalfsecError(f"not a run id: {ref!r} (use a number, 'latest' or -N)") from e
    if n > 0:
        return n
    if n == 0:
        raise HalfsecError("run ids start at 1")
    with _connect(db_path) as con:
        row = con.execute(
            "SELECT id FROM runs ORDER BY id DESC LIMIT 1 OFFSET ?", (-n - 1,)
        ).fetchone()
    if row is None:
        raise HalfsecError(f"no run {ref!r} in the lab database")
    return int(row[0])


def _loads(rows: list[Any], what: str, rid: int) -> list[Any]:
    """Each row's JSON; a damaged one is left out (and logged) rather than the run."""
    out = []
    for (text,) in rows:
        try:
            out.append(json.loads(text))
        except (TypeError, ValueError) as e:
            log.warning("run %d: a stored %s is not valid JSON (%s); left out", rid, what, e)
    return out


def load_run(run_id: int | str, db_path: Path | str | None = None) -> dict[str, Any]:
    """The report exactly as saved, turns included.  A run that was never finished (its
    bench was killed) has only ``meta``, with ``meta.incomplete`` true, and the turns
    that were stored."""
    rid = resolve_run_id(run_id, db_path)
    with _connect(db_path) as con:
        row = con.execute("SELECT report, complete FROM runs WHERE id=?", (rid,)).fetchone()
        if row is None:
            raise HalfsecError(f"no run {rid} in the lab database (see `halfsec runs`)")
        turns = con.execute(
            "SELECT record FROM turns WHERE run_id=? ORDER BY idx", (rid,)
        ).fetchall()
    try:
        report: dict[str, Any] = json.loads(row[0])
    except ValueError as e:
        raise StoreError(f"run {rid}'s stored report is not valid JSON ({e})") from e
    report["turns"] = _loads(turns, "turn", rid)
    report.setdefault("meta", {})["run_id"] = rid
    if not row[1]:
        report["meta"]["incomplete"] = True
    return report


def load_spans(run_id: int | str, db_path: Path | str | None = None) -> list[dict[str, Any]]:
    """Spans saved with a run, ordered by start time."""
    rid = resolve_run_id(run_id, db_path)
    with _connect(db_path) as con:
        rows = con.execute(
            "SELECT span FROM spans WHERE run_id=? ORDER BY start_ns", (rid,)
        ).fetchall()
    return _loads(rows, "span", rid)


def journal_mode(db_path: Path | str | None = None) -> str:
    """The database's journal mode (``wal`` once the store has opened it)."""
    with _connect(db_path) as con:
        return str(con.execute("PRAGMA journal_mode").fetchone()[0])
