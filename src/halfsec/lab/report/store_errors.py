"""What an SQLite failure of the lab store means to the person running halfsec.

``sqlite3`` says "database is locked" or "file is not a database" and nothing about what
to do; a traceback says less.  ``store_error`` turns each failure into a ``StoreError``
that names the file, what happened and the next step, by SQLite's primary result code
(Python 3.11 gives it on the exception) and, where no code comes with it, the text."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from halfsec.errors import HalfsecError

__all__ = ["StoreError", "store_error"]

# SQLite primary result codes (https://www.sqlite.org/rescode.html).
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = (
    3,
    5,
    6,
    8,
    10,
    11,
    13,
    14,
    26,
)

_BY_TEXT = (
    ("locked", _BUSY),
    ("not a database", _NOTADB),
    ("malformed", _CORRUPT),
    ("readonly", _READONLY),
    ("read-only", _READONLY),
    ("disk is full", _FULL),
    ("unable to open", _CANTOPEN),
    ("disk i/o error", _IOERR),
)

ELSEWHERE = "use another database with --db or HALFSEC_DB=/path/lab.db"


class StoreError(HalfsecError):
    """The lab database cannot be read or written; the message says why and what to do."""


def _code(e: sqlite3.Error) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF  # extended codes carry the primary one in the low byte
    text = str(e).lower()
    return next((c for needle, c in _BY_TEXT if needle in text), None)


def store_error(path: Path, e: sqlite3.Error, busy_timeout_s: float = 10.0) -> StoreError:
    """A ``StoreError`` for ``e``, raised while using the database at ``path``."""
    code = _code(e)
    if code in (_BUSY, _LOCKED):
        return StoreError(
            f"lab database {path} is locked: another process (a bench still saving, a "
            f"sqlite3 shell with an open transaction) held it for more than "
            f"{busy_timeout_s:.0f} s. Wait for it to finish and run again, or {ELSEWHERE}"
        )
    if code in (_CORRUPT, _NOTADB):
        return StoreError(
            f"lab database {path} is damaged or not a halfsec database ({e}). Move it aside "
            f"(mv {path} {path}.broken) and run again to start a new one; "
            f"`sqlite3 {path}.broken .recover` may save its runs"
        )
    if code in (_READONLY, _PERM):
        return StoreError(
            f"lab database {path} is read-only for this user ({e}). Make the file and its "
            f"folder writable (the store writes {path.name}-wal beside it), or {ELSEWHERE}"
        )
    if code == _CANTOPEN:
        return StoreError(
            f"cannot open lab database {path} ({e}): its folder is missing or not "
            f"writable. Check the path and its permissions, or {ELSEWHERE}"
        )
    if code == _FULL:
        return StoreError(
            f"the disk holding lab database {path} is full: nothing more was saved. Free "
            f"some space and run again, or {ELSEWHERE} on another disk"
        )
    if code == _IOERR:
        return StoreError(
            f"input/output error on lab database {path} ({e}): the disk or network share "
            f"failed. Check it, or {ELSEWHERE}"
        )
    return StoreError(
        f"lab database {path}: {type(e).__name__}: {e}. Check the file, or {ELSEWHERE}"
    )
