"""Online backups of both databases with SQLite's backup API, verified, kept
by count, and restored the same way.

A backup set is a directory named by its UTC creation time holding a copy of
each database plus manifest.json (SHA-256 and size of each copy).  The copy is
written under a hidden ".partial-" name, checked with PRAGMA integrity_check,
fsynced and only then renamed into place: a set that exists is complete.
integrity_check finds structural damage; the SHA-256 also finds a flipped
byte inside a row, which no structural check can."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyvorin_edge_agent import __version__, db, store, syncqueue
from pyvorin_edge_agent.errors import BackupError, StorageError

DATABASES = (store.FILENAME, syncqueue.FILENAME)
MANIFEST = "manifest.json"
PARTIAL_PREFIX = ".partial-"
NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")


@dataclass(frozen=True)
class BackupSet:
    name: str
    path: Path


@dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool
    problems: tuple[str, ...]


def list_sets(backup_dir: Path) -> list[BackupSet]:
    """Complete sets, oldest first (names sort by time)."""
    if not backup_dir.is_dir():
        return []
    return [BackupSet(p.name, p) for p in sorted(backup_dir.iterdir()) if p.is_dir() and NAME.match(p.name)]


def create(data_dir: Path, backup_dir: Path, keep: int, now: dt.datetime | None = None) -> tuple[BackupSet, list[str]]:
    """Back up every database, then prune to the newest ``keep`` sets; returns the set and the pruned names."""
    moment = now or dt.datetime.now(dt.UTC)
    name = moment.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    try:
        backup_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        _remove_partials(backup_dir)
        final = backup_dir / name
        if final.exists():
            raise BackupError(f"backup {final} already exists")
        partial = backup_dir / (PARTIAL_PREFIX + name)
        partial.mkdir(mode=0o750)
    except OSError as exc:
        raise BackupError(f"cannot write backup in {backup_dir}: {exc}") from exc
    try:
        entries = {filename: _copy_database(data_dir / filename, partial / filename) for filename in DATABASES}
        manifest = {"format": 1, "created": moment.isoformat(), "agent_version": __version__, "databases": entries}
        _write_synced(partial / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
        db.fsync_dir(partial)
        os.rename(partial, final)
        db.fsync_dir(backup_dir)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise BackupError(f"cannot write backup in {backup_dir}: {exc}") from exc
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return BackupSet(name, final), prune(backup_dir, keep)


def _copy_database(source: Path, target: Path) -> dict[str, Any]:
    if not source.exists():
        raise BackupError(f"{source}: database does not exist (has the agent ever run?)")
    try:
        src = db.connect(source, create=False)
    except StorageError as exc:
        raise BackupError(str(exc)) from exc
    try:
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            # pages=-1 (the default): the whole database in one step, under one read
            # transaction, so the copy is a consistent snapshot while the agent keeps writing.
            src.backup(dst)
            # The copy is a single self-contained file: no -wal beside it to lose or mismatch.
            dst.execute("PRAGMA journal_mode=DELETE")
            problems = db.integrity_problems(dst)
            user_version = int(dst.execute("PRAGMA user_version").fetchone()[0])
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"backup of {source} failed: {exc}") from exc
    finally:
        src.close()
    if problems:
        raise BackupError(f"backup of {source} fails integrity_check: {'; '.join(problems[:3])}")
    os.chmod(target, 0o640)
    _fsync_file(target)
    return {"sha256": _sha256(target), "bytes": target.stat().st_size, "user_version": user_version}


def prune(backup_dir: Path, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` sets."""
    sets = list_sets(backup_dir)
    doomed = sets[:-keep] if len(sets) > keep else []
    for old in doomed:
        shutil.rmtree(old.path)
    if doomed:
        db.fsync_dir(backup_dir)
    return [s.name for s in doomed]


def verify(backup: BackupSet) -> Verdict:
    """Is this set restorable: manifest readable, every copy present, hashes equal, integrity ok."""
    problems: list[str] = []
    try:
        manifest = json.loads((backup.path / MANIFEST).read_text())
        entries = manifest["databases"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Verdict(backup.name, False, (f"{MANIFEST} unreadable: {exc}",))
    for filename in DATABASES:
        path = backup.path / filename
        entry = entries.get(filename) if isinstance(entries, dict) else None
        if not isinstance(entry, dict) or not path.is_file():
            problems.append(f"{filename}: missing")
            continue
        if _sha256(path) != entry.get("sha256"):
            problems.append(f"{filename}: SHA-256 differs from the manifest (file changed or damaged)")
        problems.extend(f"{filename}: {p}" for p in _integrity_of_file(path))
    return Verdict(backup.name, not problems, tuple(problems))


def _integrity_of_file(path: Path) -> list[str]:
    try:
        # immutable=1: a finished set never changes, and it keeps SQLite from creating
        # journal or lock files next to a copy that may be on a read-only medium.
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, isolation_level=None)
        try:
            return db.integrity_problems(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [f"integrity_check failed: {exc}"]


def select(backup_dir: Path, name: str | None) -> BackupSet:
    sets = list_sets(backup_dir)
    if not sets:
        raise BackupError(f"no backups in {backup_dir}")
    if name is None:
        return sets[-1]
    for candidate in sets:
        if candidate.name == name:
            return candidate
    raise BackupError(f"no backup named {name!r} in {backup_dir} (have: {', '.join(s.name for s in sets[-5:])}, …)")


def restore(backup: BackupSet, data_dir: Path) -> None:
    """Copy a verified set over the live databases.  The caller holds the data-dir lock,
    so no agent runs; each database is replaced in one transaction (the backup API
    writes the target under a single write lock), so a crash mid-restore leaves the
    old or the new content of each file, never a mix."""
    verdict = verify(backup)
    if not verdict.ok:
        raise BackupError(f"backup {backup.name} is damaged: {'; '.join(verdict.problems)} "
                          "(pick an older one: pyv-edge-agent check-backups)")
    for filename in DATABASES:
        target = db.connect(data_dir / filename)
        try:
            source = sqlite3.connect(f"file:{backup.path / filename}?mode=ro&immutable=1", uri=True)
            try:
                source.backup(target)
            finally:
                source.close()
            target.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            problems = db.integrity_problems(target)
        except sqlite3.Error as exc:
            raise BackupError(f"restore of {filename} failed: {exc}") from exc
        finally:
            target.close()
        if problems:
            raise BackupError(f"restored {filename} fails integrity_check: {'; '.join(problems[:3])}")


def _remove_partials(backup_dir: Path) -> None:
    """A set left half-written by a crash or power cut is garbage, never a backup."""
    for entry in backup_dir.iterdir():
        if entry.name.startswith(PARTIAL_PREFIX) and entry.is_dir():
            shutil.rmtree(entry)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
