"""sync_queue.db: messages for the cloud, delivered at least once.

A message is deleted only after the cloud acknowledged it (ack).  A consumer
first *leases* a batch (claim): leased messages are invisible to other claims
until the lease expires, so a consumer that dies mid-upload, or an agent that
is killed, simply lets the lease run out and the batch is sent again.  The
receiver therefore sees each message at least once and deduplicates by id,
which AUTOINCREMENT keeps unique forever (ids are never reused after a delete).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyvorin_edge_agent import db

FILENAME = "sync_queue.db"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_lease ON queue (lease_until, id);
"""


@dataclass(frozen=True)
class Message:
    id: int
    topic: str
    payload: dict[str, Any]
    enqueued_at: float
    attempts: int


@dataclass(frozen=True)
class QueueStats:
    depth: int
    oldest_age_seconds: float | None


class SyncQueue:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILENAME
        self.conn = db.open_with_schema(self.path, SCHEMA, SCHEMA_VERSION)

    def enqueue(self, topic: str, payload: dict[str, Any], now: float | None = None) -> int:
        """Append one message; its id is returned only once the commit is durable."""
        with db.transaction(self.conn):
            cur = self.conn.execute("INSERT INTO queue (topic, payload, enqueued_at) VALUES (?, ?, ?)",
                                    (topic, json.dumps(payload, sort_keys=True), time.time() if now is None else now))
        return int(cur.lastrowid or 0)

    def claim(self, limit: int, lease_seconds: float, now: float | None = None) -> list[Message]:
        """Lease up to ``limit`` of the oldest messages not leased by someone else."""
        now = time.time() if now is None else now
        with db.transaction(self.conn):
            rows = self.conn.execute(
                "SELECT id, topic, payload, enqueued_at, attempts FROM queue WHERE lease_until <= ? "
                "ORDER BY id LIMIT ?", (now, limit)).fetchall()
            self.conn.executemany("UPDATE queue SET lease_until = ?, attempts = attempts + 1 WHERE id = ?",
                                  [(now + lease_seconds, row[0]) for row in rows])
        return [Message(id=r[0], topic=r[1], payload=json.loads(r[2]), enqueued_at=r[3], attempts=r[4] + 1)
                for r in rows]

    def ack(self, ids: list[int]) -> int:
        """Delivered: forget these messages."""
        with db.transaction(self.conn):
            return sum(self.conn.execute("DELETE FROM queue WHERE id = ?", (i,)).rowcount for i in ids)

    def release(self, ids: list[int]) -> None:
        """Not delivered: make these messages claimable again at once instead of at lease expiry."""
        with db.transaction(self.conn):
            self.conn.executemany("UPDATE queue SET lease_until = 0 WHERE id = ?", [(i,) for i in ids])

    def release_all(self) -> None:
        """At start-up no lease can be alive: the process that held it is gone."""
        with db.transaction(self.conn):
            self.conn.execute("UPDATE queue SET lease_until = 0 WHERE lease_until > 0")

    def trim(self, max_depth: int) -> int:
        """Drop the oldest messages beyond ``max_depth``: a full /data would stop everything else too."""
        with db.transaction(self.conn):
            return self.conn.execute(
                "DELETE FROM queue WHERE id IN (SELECT id FROM queue ORDER BY id DESC LIMIT -1 OFFSET ?)",
                (max_depth,)).rowcount

    def stats(self, now: float | None = None) -> QueueStats:
        depth, oldest = self.conn.execute("SELECT count(*), min(enqueued_at) FROM queue").fetchone()
        now = time.time() if now is None else now
        return QueueStats(depth=int(depth), oldest_age_seconds=None if oldest is None else round(now - oldest, 3))

    def close(self) -> None:
        self.conn.close()
