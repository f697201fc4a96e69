"""SQLite state: WAL with synchronous=FULL, crash safety under SIGKILL, and the
sync queue's at-least-once delivery (in the queue and end to end over HTTP)."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from agent_support import AgentStarter, Sources, scrubbed_env, write_config
from pyvorin_edge_agent import db
from pyvorin_edge_agent.store import EdgeStore
from pyvorin_edge_agent.syncqueue import SyncQueue

SENSORS_PER_SAMPLE = 20

# The child reports a sample only after add_readings/enqueue returned, i.e. after COMMIT.
WRITER = textwrap.dedent(f"""\
    import sys
    from pathlib import Path
    from pyvorin_edge_agent.store import EdgeStore
    from pyvorin_edge_agent.syncqueue import SyncQueue
    data = Path(sys.argv[1])
    store, queue = EdgeStore(data), SyncQueue(data)
    seq = int(sys.argv[2])
    while True:
        ids = store.add_readings({{f"s{{n}}": float(seq) for n in range({SENSORS_PER_SAMPLE})}}, ts=float(seq))
        qid = queue.enqueue("telemetry", {{"seq": seq}})
        print(seq, ids[0], qid, flush=True)
        seq += 1
    """)


def test_databases_are_wal_with_synchronous_full(tmp_path: Path) -> None:
    store, queue = EdgeStore(tmp_path), SyncQueue(tmp_path)
    for conn in (store.conn, queue.conn):
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()
    queue.close()


def test_sigkill_mid_stream_loses_no_committed_row(tmp_path: Path) -> None:
    rng = random.Random(7)
    reported: dict[int, tuple[int, int]] = {}
    seq = 0
    for _ in range(30):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(seq)], stdout=subprocess.PIPE,
                                 text=True, env=scrubbed_env())
        assert child.stdout is not None
        # Kill after a random number of committed samples: mid-stream, often mid-transaction.
        for _ in range(rng.randint(1, 40)):
            line = child.stdout.readline()
            if not line:
                break
            number, reading_id, queue_id = map(int, line.split())
            reported[number] = (reading_id, queue_id)
        child.send_signal(signal.SIGKILL)
        child.wait()
        # Lines the child printed before dying were committed too.
        for line in child.stdout.read().splitlines():
            number, reading_id, queue_id = map(int, line.split())
            reported[number] = (reading_id, queue_id)
        child.stdout.close()
        seq = max(reported) + 1000 if reported else 1000

    store, queue = EdgeStore(tmp_path), SyncQueue(tmp_path)
    try:
        assert db.integrity_problems(store.conn) == [] and db.integrity_problems(queue.conn) == []
        readings = dict(store.conn.execute("SELECT id, value FROM readings").fetchall())
        queued = {row[0]: json.loads(row[1])["seq"] for row in queue.conn.execute("SELECT id, payload FROM queue")}
        for number, (reading_id, queue_id) in reported.items():
            assert readings.get(reading_id) == float(number), f"committed reading of sample {number} lost"
            assert queued.get(queue_id) == number, f"committed queue message of sample {number} lost"
        # A transaction is all or nothing: every sample present has all its sensors.
        counts = store.conn.execute("SELECT ts, count(*) FROM readings GROUP BY ts").fetchall()
        assert all(count == SENSORS_PER_SAMPLE for _, count in counts)
        assert len(reported) >= 30
    finally:
        store.close()
        queue.close()


def test_every_commit_is_fsynced_before_it_is_reported(tmp_path: Path) -> None:
    """What makes a returned COMMIT survive a power cut: with synchronous=FULL in WAL mode
    SQLite syncs the WAL in every commit (NORMAL would sync only at checkpoints)."""
    if shutil.which("strace") is None:
        pytest.skip("needs strace (apt-get install strace)")
    code = textwrap.dedent("""\
        import sys
        from pathlib import Path
        from pyvorin_edge_agent.syncqueue import SyncQueue
        queue = SyncQueue(Path(sys.argv[1]))
        for n in range(25):
            queue.enqueue("t", {"n": n})
        """)
    trace = tmp_path / "trace"
    result = subprocess.run(["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(trace), sys.executable,
                             "-c", code, str(tmp_path)], capture_output=True, text=True, env=scrubbed_env(),
                            check=False)
    if result.returncode != 0 and "ptrace" in result.stderr:
        pytest.skip(f"strace cannot trace here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    syncs = [line for line in trace.read_text().splitlines() if "sync(" in line]
    assert len(syncs) >= 25, f"only {len(syncs)} syncs for 25 commits"


def test_queue_leases_redeliver_until_acknowledged(tmp_path: Path) -> None:
    queue = SyncQueue(tmp_path)
    ids = [queue.enqueue("t", {"n": n}, now=100.0) for n in range(5)]
    first = queue.claim(3, lease_seconds=60, now=100.0)
    assert [m.id for m in first] == ids[:3] and all(m.attempts == 1 for m in first)
    # Leased messages are invisible to another claim while the lease runs...
    assert [m.id for m in queue.claim(10, lease_seconds=60, now=120.0)] == ids[3:]
    assert queue.claim(10, lease_seconds=60, now=150.0) == []
    # ...and come back when it expires without an ack (the consumer died).
    again = queue.claim(10, lease_seconds=60, now=161.0)
    assert [m.id for m in again] == ids[:3] and all(m.attempts == 2 for m in again)
    assert queue.ack(ids[:3]) == 3
    queue.release(ids[3:])
    assert [m.id for m in queue.claim(10, lease_seconds=60, now=170.0)] == ids[3:]
    assert queue.stats(now=200.0).depth == 2
    queue.ack(ids[3:])
    assert queue.stats().depth == 0 and queue.stats().oldest_age_seconds is None
    queue.close()


def test_queue_lease_of_a_killed_consumer_expires(tmp_path: Path) -> None:
    queue = SyncQueue(tmp_path)
    queue.enqueue("t", {"n": 1}, now=100.0)
    code = ("import sys, os; from pathlib import Path; from pyvorin_edge_agent.syncqueue import SyncQueue;"
            "q = SyncQueue(Path(sys.argv[1])); print(len(q.claim(10, 30, now=100.0)), flush=True);"
            "os.kill(os.getpid(), 9)")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                            env=scrubbed_env(), check=False)
    assert result.stdout.strip() == "1" and result.returncode == -signal.SIGKILL
    assert queue.claim(10, 30, now=110.0) == []
    assert len(queue.claim(10, 30, now=131.0)) == 1
    queue.close()


def test_queue_trim_drops_only_the_oldest(tmp_path: Path) -> None:
    queue = SyncQueue(tmp_path)
    ids = [queue.enqueue("t", {"n": n}) for n in range(10)]
    assert queue.trim(4) == 6
    assert [m.id for m in queue.claim(10, 30)] == ids[6:]
    queue.close()


class Sink:
    """A loopback cloud endpoint that fails the first ``failures`` POSTs with 500."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[int] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with sink.lock:
                    sink.received.extend(m["id"] for m in body["messages"])
                    fail = sink.failures > 0
                    sink.failures -= 1
                self.send_response(500 if fail else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/ingest"


@pytest.fixture
def sink() -> Iterator[Sink]:
    result = Sink(failures=1)
    result.thread.start()
    yield result
    result.server.shutdown()
    result.server.server_close()


def test_agent_delivers_at_least_once_through_a_failing_cloud(tmp_path: Path, sources: Sources, sink: Sink,
                                                              start_agent: AgentStarter) -> None:
    data = tmp_path / "data"
    data.mkdir()
    queue = SyncQueue(data)
    backlog = [queue.enqueue("telemetry", {"n": n}) for n in range(30)]
    queue.close()
    extra = f'[cloud]\nurl = "{sink.url}"\ninterval = 0.1\nbatch_size = 10\ntimeout = 2.0\nlease_seconds = 5.0\n'
    agent = start_agent(write_config(tmp_path / "config.toml", data, sources, extra=extra))
    agent.wait_health(lambda d: d["cloud"]["last_success"] is not None and d["cloud"]["queue_depth"] <= 2)
    agent.stop()
    failed_batch = backlog[:10]
    with sink.lock:
        received = list(sink.received)
    # Everything arrived; the batch the cloud refused arrived again (at least once).
    assert set(backlog) <= set(received)
    assert all(received.count(i) == 2 for i in failed_batch)
    assert agent.wait_event("sync_failed")["messages"] == 10
