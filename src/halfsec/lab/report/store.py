"""SQLite store for lab runs: every report, its turns and its spans, on one file.

Why SQLite in WAL mode: a bench writes while someone browses ``halfsec runs`` or renders
an old report; WAL lets readers proceed during a write.  The report document is stored
whole (minus turns, which get their own rows so they can be queried), so ``load_run``
returns exactly what ``build_report`` produced.  ``PRAGMA user_version`` versions the
schema; opening a newer database with older code fails loudly instead of misreading it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from halfsec.errors import HalfsecError

__all__ = [
    "SCHEMA_VERSION",
    "default_db_path",
    "list_runs",
    "load_run",
    "load_spans",
    "resolve_run_id",
    "save_run",
]

SCHEMA_VERSION = 1

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
    report      TEXT NOT NULL
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
    path = Path(db_path) if db_path is not None else default_db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=10.0)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA foreign_keys=ON")
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HalfsecError(
                f"{path}: lab database schema v{version} is newer than this halfsec "
                f"(v{SCHEMA_VERSION}); upgrade halfsec or use another --db"
            )
        if version < SCHEMA_VERSION:
            con.executescript(_DDL)
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            con.commit()
        yield con
    finally:
        con.close()


def _f(x: Any) -> float | None:
    return None if x is None else float(x)


def save_run(
    report: Mapping[str, Any],
    db_path: Path | str | None = None,
    spans: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Persist a report (and optionally its spans, in the JSON-lines exporter's shape);
    returns the new run id.  One transaction: a run is stored whole or not at all."""
    body = {k: v for k, v in report.items() if k != "turns"}
    summary = report.get("summary") or {}
    v2v = summary.get("v2v_ms") or {}
    meta = report.get("meta") or {}
    machine = meta.get("machine") or {}
    with _connect(db_path) as con, con:
        cur = con.execute(
            "INSERT INTO runs (created_at, command, server_url, hostname, n_turns, n_failed,"
            " v2v_p50, v2v_p95, budget_ok, report) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                str(meta.get("date") or ""),
                meta.get("command"),
                meta.get("server_url"),
                machine.get("hostname") if isinstance(machine, Mapping) else str(machine),
                int(summary.get("n_turns") or len(report.get("turns") or [])),
                int(summary.get("n_failed") or 0),
                _f(v2v.get("p50")),
                _f(v2v.get("p95")),
                None
                if report.get("budget") is None
                else int(bool((report.get("budget") or {}).get("ok"))),
                json.dumps(body, default=str),
            ),
        )
        run_id = int(cur.lastrowid or 0)
        con.executemany(
            "INSERT INTO turns (run_id, idx, file, ok, v2v_ms, dominant_stage, trace_id, record)"
            " VALUES (?,?,?,?,?,?,?,?)",
            [
                (
                    run_id,
                    i,
                    t.get("file"),
                    int(bool(t.get("ok", True))),
                    _f(t.get("v2v_ms")),
                    t.get("dominant_stage"),
                    t.get("trace_id"),
                    json.dumps(t, default=str),
                )
                for i, t in enumerate(report.get("turns") or [])
            ],
        )
        if spans:
            con.executemany(
                "INSERT OR REPLACE INTO spans (run_id, trace_id, span_id, parent_span_id, name,"
                " start_ns, end_ns, span) VALUES (?,?,?,?,?,?,?,?)",
                [
                    (
                        run_id,
                        str(s.get("traceId")),
                        str(s.get("spanId")),
                        s.get("parentSpanId") or None,
                        str(s.get("name")),
                        int(s.get("startTimeUnixNano") or 0),
                        int(s.get("endTimeUnixNano") or 0),
                        json.dumps(s, default=str),
                    )
                    for s in spans
                ],
            )
    return run_id


def list_runs(db_path: Path | str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Newest first: id, date, command, server, turns, failures, v2v p50/p95, budget."""
    with _connect(db_path) as con:
        rows = con.execute(
            "SELECT id, created_at, command, server_url, hostname, n_turns, n_failed,"
            " v2v_p50, v2v_p95, budget_ok FROM runs ORDER BY id DESC LIMIT ?",
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
    )
    out = [dict(zip(keys, r, strict=True)) for r in rows]
    for r in out:
        r["budget_ok"] = None if r["budget_ok"] is None else bool(r["budget_ok"])
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


def load_run(run_id: int | str, db_path: Path | str | None = None) -> dict[str, Any]:
    """The report exactly as saved, turns included."""
    rid = resolve_run_id(run_id, db_path)
    with _connect(db_path) as con:
        row = con.execute("SELECT report FROM runs WHERE id=?", (rid,)).fetchone()
        if row is None:
            raise HalfsecError(f"no run {rid} in the lab database (see `halfsec runs`)")
        turns = con.execute(
            "SELECT record FROM turns WHERE run_id=? ORDER BY idx", (rid,)
        ).fetchall()
    report: dict[str, Any] = json.loads(row[0])
    report["turns"] = [json.loads(t[0]) for t in turns]
    report.setdefault("meta", {})["run_id"] = rid
    return report


def load_spans(run_id: int | str, db_path: Path | str | None = None) -> list[dict[str, Any]]:
    """Spans saved with a run, ordered by start time."""
    rid = resolve_run_id(run_id, db_path)
    with _connect(db_path) as con:
        rows = con.execute(
            "SELECT span FROM spans WHERE run_id=? ORDER BY start_ns", (rid,)
        ).fetchall()
    return [json.loads(r[0]) for r in rows]


def journal_mode(db_path: Path | str | None = None) -> str:
    """The database's journal mode (``wal`` once the store has opened it)."""
    with _connect(db_path) as con:
        return str(con.execute("PRAGMA journal_mode").fetchone()[0])
