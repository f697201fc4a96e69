"""Backups: SQLite's backup API, integrity_check on the copy, the newest 14
kept, damage detected, restore round-trips; through the CLI the timer runs."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from agent_support import AgentStarter, Sources, run_agent_cli, write_config
from pyvorin_edge_agent import backup, db
from pyvorin_edge_agent.errors import BackupError
from pyvorin_edge_agent.store import EdgeStore
from pyvorin_edge_agent.syncqueue import SyncQueue


def populate(data: Path, samples: int, start: int = 0) -> None:
    store, queue = EdgeStore(data), SyncQueue(data)
    for n in range(start, start + samples):
        store.add_readings({"cpu_percent": float(n)}, ts=float(n))
        queue.enqueue("telemetry", {"n": n})
    store.close()
    queue.close()


def contents(data: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    store, queue = EdgeStore(data), SyncQueue(data)
    try:
        return (store.conn.execute("SELECT id, ts, sensor, value FROM readings ORDER BY id").fetchall(),
                queue.conn.execute("SELECT id, topic, payload FROM queue ORDER BY id").fetchall())
    finally:
        store.close()
        queue.close()


@pytest.fixture
def configured(tmp_path: Path, sources: Sources) -> tuple[Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    populate(data, 50)
    return write_config(tmp_path / "config.toml", data, sources), data


def test_backup_copies_are_complete_single_files_with_manifest(tmp_path: Path) -> None:
    populate(tmp_path, 20)
    created, pruned = backup.create(tmp_path, tmp_path / "backups", keep=14)
    assert pruned == []
    manifest = json.loads((created.path / "manifest.json").read_text())
    assert set(manifest["databases"]) == {"edge_store.db", "sync_queue.db"}
    for name in manifest["databases"]:
        copy = created.path / name
        # journal_mode=DELETE in the copy: header bytes 18/19 are 1, and no -wal belongs to it.
        assert copy.read_bytes()[18:20] == b"\x01\x01"
        conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        assert db.integrity_problems(conn) == []
        conn.close()
    assert backup.verify(created).ok
    assert not any(p.name.startswith(".partial-") for p in (tmp_path / "backups").iterdir())


def test_retention_keeps_the_newest_14(tmp_path: Path) -> None:
    populate(tmp_path, 3)
    start = dt.datetime(2026, 11, 1, 3, 15, tzinfo=dt.UTC)
    names = []
    for night in range(20):
        created, pruned = backup.create(tmp_path, tmp_path / "backups", keep=14,
                                        now=start + dt.timedelta(days=night))
        names.append(created.name)
        assert len(pruned) == (1 if night >= 14 else 0)
    kept = [s.name for s in backup.list_sets(tmp_path / "backups")]
    assert kept == names[-14:]
    assert kept[0].startswith("20261107T031500")


def test_a_crashed_backup_leaves_no_set_and_is_cleaned_up(tmp_path: Path) -> None:
    populate(tmp_path, 3)
    (tmp_path / "backups" / ".partial-20260101T000000.000000Z").mkdir(parents=True)
    backup.create(tmp_path, tmp_path / "backups", keep=14)
    assert [p.name for p in (tmp_path / "backups").iterdir() if p.name.startswith(".")] == []


def test_backup_without_databases_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="database does not exist"):
        backup.create(tmp_path, tmp_path / "backups", keep=14)
    assert backup.list_sets(tmp_path / "backups") == []


def test_corrupted_backups_are_detected(tmp_path: Path) -> None:
    populate(tmp_path, 300)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    flipped, torn, rehashed, intact = (backup.create(tmp_path, tmp_path / "backups", keep=14,
                                                     now=start + dt.timedelta(hours=h))[0] for h in range(4))
    # One byte inside a row: only the hash can see it.
    path = flipped.path / "edge_store.db"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    # A torn file (power cut while copying it elsewhere).
    path = torn.path / "sync_queue.db"
    path.write_bytes(path.read_bytes()[: 4096 + 100])
    # Structural damage with a matching hash (someone "fixed" the manifest): integrity_check sees it.
    path = rehashed.path / "edge_store.db"
    data = bytearray(path.read_bytes())
    data[4096 * 2: 4096 * 2 + 64] = bytes(64)
    path.write_bytes(bytes(data))
    manifest = json.loads((rehashed.path / "manifest.json").read_text())
    manifest["databases"]["edge_store.db"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (rehashed.path / "manifest.json").write_text(json.dumps(manifest))

    verdicts = {v.name: v for v in map(backup.verify, backup.list_sets(tmp_path / "backups"))}
    assert "SHA-256 differs" in " ".join(verdicts[flipped.name].problems)
    assert not verdicts[torn.name].ok
    assert not verdicts[rehashed.name].ok
    assert any("edge_store.db" in p and "SHA" not in p for p in verdicts[rehashed.name].problems)
    assert verdicts[intact.name].ok


def test_cli_backup_check_restore_round_trip(configured: tuple[Path, Path]) -> None:
    config, data = configured
    before = contents(data)
    result = run_agent_cli("--config", config, "backup")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.splitlines()[-1])
    assert record["event"] == "backup_created"
    populate(data, 25, start=1000)  # changes after the backup...
    assert contents(data) != before
    result = run_agent_cli("--config", config, "restore")
    assert result.returncode == 0, result.stderr
    assert contents(data) == before  # ...are gone: the backup's state is back
    store = EdgeStore(data)
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    checked = run_agent_cli("--config", config, "check-backups", "--json")
    assert checked.returncode == 0 and json.loads(checked.stdout)["ok"] is True


def test_cli_restore_refuses_a_damaged_backup(configured: tuple[Path, Path]) -> None:
    config, data = configured
    assert run_agent_cli("--config", config, "backup").returncode == 0
    (newest,) = backup.list_sets(data / "backups")
    target = newest.path / "sync_queue.db"
    target.write_bytes(target.read_bytes()[:-1] + b"\x01")
    before = contents(data)
    result = run_agent_cli("--config", config, "restore")
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert "is damaged" in result.stderr and "Traceback" not in result.stderr
    assert contents(data) == before
    checked = run_agent_cli("--config", config, "check-backups")
    assert checked.returncode == 1 and checked.stdout.startswith("DAMAGED")


def test_restore_refuses_while_the_agent_runs(configured: tuple[Path, Path], start_agent: AgentStarter) -> None:
    config, data = configured
    assert run_agent_cli("--config", config, "backup").returncode == 0
    start_agent(config)
    result = run_agent_cli("--config", config, "restore")
    assert result.returncode == 1 and "stop pyvorin-edge-agent.service first" in result.stderr


def test_online_backup_while_the_agent_writes(configured: tuple[Path, Path], start_agent: AgentStarter) -> None:
    config, data = configured
    agent = start_agent(config)
    for _ in range(3):
        result = run_agent_cli("--config", config, "backup")
        assert result.returncode == 0, result.stderr
    assert all(v.ok for v in map(backup.verify, backup.list_sets(data / "backups")))
    assert agent.health()["status"] in ("healthy", "unhealthy")  # still serving
