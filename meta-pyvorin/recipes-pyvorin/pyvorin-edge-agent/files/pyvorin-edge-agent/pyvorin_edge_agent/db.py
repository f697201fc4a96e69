"""Opening the agent's SQLite databases the one safe way.

journal_mode=WAL: readers (the backup job, the HTTP thread) never block the
writer, and a commit appends to one file instead of rewriting pages in place.

synchronous=FULL: in WAL mode, NORMAL fsyncs only at checkpoints, so the last
transactions before a power cut can roll back although COMMIT returned; FULL
fsyncs the WAL on every commit, so a COMMIT that returned is on the medium.
That costs one fsync per transaction: the agent commits a handful of rows per
sample interval, far below what an SD card sustains.  (EXTRA would also fsync
the directory on DELETE-mode journal unlinks: irrelevant in WAL mode.)"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyvorin_edge_agent.errors import StorageError

BUSY_TIMEOUT_MS = 5000


def connect(path: Path, *, create: bool = True) -> sqlite3.Connection:
    """A connection in WAL mode with synchronous=FULL, or StorageError."""
    if not create and not path.exists():
        raise StorageError(f"{path}: database does not exist")
    existed = path.exists()
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (see transaction()),
        # so no statement ever runs in an implicit, forgotten transaction.
        conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            conn.close()
            raise StorageError(f"{path}: cannot switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: cannot open database: {exc}") from exc
    if not existed:
        # A new file's directory entry is only durable once the directory is synced.
        fsync_dir(path.parent)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT: takes the write lock up front, so a transaction
    never fails half-way on a busy database; anything raised rolls it back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """The rows of PRAGMA integrity_check other than the single "ok"."""
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    return [] if rows == ["ok"] else rows


def quick_problems(conn: sqlite3.Connection) -> list[str]:
    """PRAGMA quick_check: the structural half of integrity_check, fast enough for every start."""
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as exc:  # damage bad enough that the check itself stops
        return [str(exc)]
    return [] if rows == ["ok"] else rows


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_with_schema(path: Path, schema: str, version: int) -> sqlite3.Connection:
    """Connect and apply ``schema`` (idempotent CREATE ... IF NOT EXISTS statements) in one transaction."""
    conn = connect(path)
    with transaction(conn):
        for statement in filter(str.strip, schema.split(";")):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={version}")
    return conn

