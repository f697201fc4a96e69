"""edge_store.db: sensor readings and events, the device's local history."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pyvorin_edge_agent import db

FILENAME = "edge_store.db"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    sensor TEXT NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
"""


class EdgeStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILENAME
        self.conn = db.open_with_schema(self.path, SCHEMA, SCHEMA_VERSION)

    def add_readings(self, readings: dict[str, float], ts: float | None = None) -> list[int]:
        """Store one sample's readings in one transaction; returns their ids once committed."""
        now = time.time() if ts is None else ts
        ids: list[int] = []
        with db.transaction(self.conn):
            for sensor, value in readings.items():
                cur = self.conn.execute("INSERT INTO readings (ts, sensor, value) VALUES (?, ?, ?)",
                                        (now, sensor, value))
                ids.append(int(cur.lastrowid or 0))
        return ids

    def add_event(self, kind: str, detail: dict[str, Any], ts: float | None = None) -> int:
        with db.transaction(self.conn):
            cur = self.conn.execute("INSERT INTO events (ts, kind, detail) VALUES (?, ?, ?)",
                                    (time.time() if ts is None else ts, kind, json.dumps(detail, sort_keys=True)))
        return int(cur.lastrowid or 0)

    def prune(self, older_than: float) -> int:
        """Drop readings and events older than ``older_than`` (a UNIX time): an SD card is finite."""
        with db.transaction(self.conn):
            count = self.conn.execute("DELETE FROM readings WHERE ts < ?", (older_than,)).rowcount
            count += self.conn.execute("DELETE FROM events WHERE ts < ?", (older_than,)).rowcount
        return count

    def count(self, table: str) -> int:
        if table not in ("readings", "events"):
            raise ValueError(table)
        row = self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0])

    def close(self) -> None:
        self.conn.close()

