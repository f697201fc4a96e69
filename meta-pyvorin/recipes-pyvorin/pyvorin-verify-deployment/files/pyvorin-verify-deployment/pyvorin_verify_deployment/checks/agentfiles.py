"""Checks on the agent's files under /etc and /data.  Databases are judged from
their headers and ownership, never opened read-write: run as root, opening
one could create a -wal or -shm file the agent's user then cannot write."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sqlite3
import stat
from pathlib import Path

from pyvorin_verify_deployment.context import Context
from pyvorin_verify_deployment.mounts import mount_of, read_mounts
from pyvorin_verify_deployment.result import Result, failed, passed

DATABASES = ("edge_store.db", "sync_queue.db")
SQLITE_MAGIC = b"SQLite format 3\0"
BACKUP_NAME = re.compile(r"^(\d{8}T\d{6})\.(\d{6})Z$")


def config_readable(ctx: Context) -> Result:
    name = "config-readable"
    settings, error = ctx.load_config()
    if error:
        return failed(name, error)
    mode = ctx.path(ctx.config_path).stat().st_mode
    if mode & stat.S_IWOTH:
        return failed(name, f"{ctx.config_path} is world-writable (mode {stat.filemode(mode)})")
    return passed(name, f"{ctx.config_path} parses; data_dir {settings.data_dir}, port {settings.port}")


def _agent_uid(ctx: Context) -> int | None:
    try:
        for line in ctx.path("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] == ctx.expect.user and fields[2].isdigit():
                return int(fields[2])
    except OSError:
        return None
    return None


def databases_writable(ctx: Context) -> Result:
    name = "databases-writable"
    data_dir = ctx.settings.data_dir
    uid = _agent_uid(ctx)
    if uid is None:
        return failed(name, f"user {ctx.expect.user} is not in /etc/passwd")
    problems: list[str] = []

    def owned_writable(device_path: str, path: Path) -> None:
        st = path.stat()
        if st.st_uid != uid:
            problems.append(f"{device_path} is owned by uid {st.st_uid}, not {ctx.expect.user} ({uid})")
        elif not st.st_mode & stat.S_IWUSR:
            problems.append(f"{device_path} is not writable by its owner")

    try:
        owned_writable(str(data_dir), ctx.path(data_dir))
        for filename in DATABASES:
            device_path = data_dir / filename
            path = ctx.path(device_path)
            with open(path, "rb") as handle:
                header = handle.read(100)
            if not header.startswith(SQLITE_MAGIC):
                problems.append(f"{device_path} is not an SQLite database")
                continue
            # Bytes 18 and 19 are the write/read format versions: 2 means WAL.
            if header[18:20] != b"\x02\x02":
                problems.append(f"{device_path} is not in WAL mode")
            owned_writable(str(device_path), path)
            for suffix in ("-wal", "-shm"):
                side = path.with_name(path.name + suffix)
                if side.exists():
                    owned_writable(f"{device_path}{suffix}", side)
    except OSError as exc:
        problems.append(f"{exc.filename or data_dir}: {exc.strerror}")
    try:
        mount = mount_of(read_mounts(ctx.path("/proc/self/mounts")), data_dir)
        if mount is None or "rw" not in mount.options:
            problems.append(f"{data_dir} is not on a read-write mount")
    except OSError as exc:
        problems.append(f"/proc/self/mounts: {exc.strerror}")
    if problems:
        return failed(name, "; ".join(problems))
    return passed(name, f"{', '.join(DATABASES)} in {data_dir}: WAL, owned and writable by {ctx.expect.user}")


def backups_present(ctx: Context) -> Result:
    """The newest set is young enough and intact (hashes as recorded, integrity_check ok)."""
    name = "backups-present"
    backup_dir = ctx.settings.backups
    directory = ctx.path(backup_dir)
    try:
        sets = sorted(p for p in directory.iterdir() if p.is_dir() and BACKUP_NAME.match(p.name))
    except OSError as exc:
        return failed(name, f"{backup_dir}: {exc.strerror} (is pyvorin-edge-backup.timer enabled?)")
    if not sets:
        return failed(name, f"no backup sets in {backup_dir} (systemctl start pyvorin-edge-backup.service)")
    newest = sets[-1]
    match = BACKUP_NAME.match(newest.name)
    assert match is not None
    created = dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC).timestamp()
    age_hours = (ctx.now - created) / 3600
    if age_hours > ctx.expect.backup_max_age_hours:
        return failed(name, f"newest backup {newest.name} is {age_hours:.1f} h old "
                            f"(limit {ctx.expect.backup_max_age_hours:g} h)")
    problems = _verify_set(newest)
    if problems:
        return failed(name, f"newest backup {newest.name} is damaged: {'; '.join(problems)}")
    return passed(name, f"{len(sets)} set(s); newest {newest.name} ({age_hours:.1f} h old) is intact")


def _verify_set(directory: Path) -> list[str]:
    try:
        entries = json.loads((directory / "manifest.json").read_text())["databases"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"manifest.json unreadable ({exc})"]
    problems = []
    for filename in DATABASES:
        path = directory / filename
        entry = entries.get(filename) if isinstance(entries, dict) else None
        if not isinstance(entry, dict) or not path.is_file():
            problems.append(f"{filename} missing")
            continue
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry.get("sha256"):
            problems.append(f"{filename} SHA-256 differs from the manifest")
            continue
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
            try:
                rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            finally:
                conn.close()
        except sqlite3.Error as exc:
            rows = [str(exc)]
        if rows != ["ok"]:
            problems.append(f"{filename} integrity_check: {rows[0]}")
    return problems
