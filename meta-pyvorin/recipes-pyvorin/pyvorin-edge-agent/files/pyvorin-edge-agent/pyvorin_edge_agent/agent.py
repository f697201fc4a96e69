"""The running agent: wires config, databases, sampler, HTTP endpoint, uploader
and systemd notifications together, and owns the main loop.

The main thread samples and pings the watchdog; the HTTP endpoint and the
uploader run in their own threads.  WATCHDOG=1 is sent only while every
thread is alive and the loop itself keeps turning, so systemd restarts an
agent that is stuck anywhere."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from pyvorin_edge_agent import __version__, db, health
from pyvorin_edge_agent.config import Config
from pyvorin_edge_agent.errors import StorageError
from pyvorin_edge_agent.health import CloudState, Snapshot
from pyvorin_edge_agent.jsonlog import JsonLog
from pyvorin_edge_agent.lock import DataDirLock
from pyvorin_edge_agent.metrics import Sampler
from pyvorin_edge_agent.sdnotify import Notifier
from pyvorin_edge_agent.server import HttpEndpoint
from pyvorin_edge_agent.store import EdgeStore
from pyvorin_edge_agent.syncqueue import SyncQueue
from pyvorin_edge_agent.uploader import Uploader, UploadStatus, transport

PRUNE_EVERY = 3600.0


def prepare_data_dir(path: Path) -> None:
    """Create the data directory if needed and prove it takes a durable write now,
    rather than failing on the first sample with a less obvious error."""
    probe = path / ".write-probe"
    try:
        path.mkdir(mode=0o750, parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StorageError(f"data directory {path} is not writable: {exc.strerror or exc}") from exc


class Agent:
    def __init__(self, config: Config, log: JsonLog, notifier: Notifier) -> None:
        self._config = config
        self._log = log
        self._notifier = notifier
        self._stop = threading.Event()
        self._started = time.time()
        self._snapshot: Snapshot | None = None
        self._alerts: frozenset[str] = frozenset()
        self._last_prune = 0.0
        self._components = health.Components()
        self._uploader: Uploader | None = None

    def health_document(self) -> dict[str, Any]:
        interval = self._config.agent.sample_interval
        return health.document(self._snapshot, self._config.thresholds, time.time(), self._started,
                               stale_after=3 * interval + 5)

    def ready_document(self) -> dict[str, Any]:
        interval = self._config.agent.sample_interval
        uploader = self._uploader
        components = dataclasses.replace(self._components,
                                         uploader_alive=None if uploader is None else uploader.alive())
        return health.readiness(self._snapshot, components, time.time(), stale_after=3 * interval + 5)

    def request_stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self._stop.set()

    def run(self) -> int:
        config = self._config
        prepare_data_dir(config.data_dir)
        lock = DataDirLock(config.data_dir, "start the agent")
        edge_store = EdgeStore(config.data_dir)
        queue = SyncQueue(config.data_dir)
        queue.release_all()
        # A release whose migration broke the databases must not be confirmed.
        self._components = health.Components(
            storage_problems=tuple(db.quick_problems(edge_store.conn) + db.quick_problems(queue.conn)))
        if self._components.storage_problems:
            self._log.error("storage_check_failed", problems=list(self._components.storage_problems[:5]))
        uploader: Uploader | None = None
        try:
            sampler = Sampler(config.metrics.proc_stat, config.metrics.proc_meminfo, config.thermal_zone,
                              config.disk_path)
            endpoint = HttpEndpoint(config.http.host, config.http.port, self.health_document, self._log,
                                    ready=self.ready_document)
            if config.cloud.url:
                uploader = Uploader(config.data_dir, transport(config), config.cloud.batch_size,
                                    config.cloud.interval, config.cloud.lease_seconds, config.cloud.timeout,
                                    self._log, config.cloud.max_backoff)
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self.request_stop)
            self._store_event(edge_store, "started", {"version": __version__, "pid": os.getpid()})
            # One sample before READY=1: /health has real numbers the moment systemd says we are up.
            self._sample(sampler, edge_store, queue, uploader)
            endpoint.start()
            if uploader is not None:
                uploader.start()
                self._uploader = uploader
            host, port = endpoint.address
            self._log.info("listening", host=host, port=port, version=__version__, data_dir=str(config.data_dir),
                           cloud=bool(config.cloud.url), watchdog_interval=self._notifier.watchdog_interval)
            self._notifier.notify("READY=1", f"STATUS=serving /health on {host}:{port}")
            self._loop(sampler, edge_store, queue, uploader, endpoint)
            self._notifier.notify("STOPPING=1")
            endpoint.stop()
        finally:
            if uploader is not None:
                uploader.stop()
            edge_store.close()
            queue.close()
            lock.release()
        self._log.info("stopped")
        return 0

    def _loop(self, sampler: Sampler, edge_store: EdgeStore, queue: SyncQueue, uploader: Uploader | None,
              endpoint: HttpEndpoint) -> None:
        interval = self._config.agent.sample_interval
        ping_every = self._notifier.watchdog_interval
        next_sample = time.monotonic() + interval
        next_ping = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_sample:
                self._sample(sampler, edge_store, queue, uploader)
                # After a long stall (suspend, slow card) resume the rhythm instead of catching up in a burst.
                next_sample = max(next_sample + interval, now)
            if ping_every is not None and now >= next_ping:
                if endpoint.alive() and (uploader is None or uploader.alive()):
                    self._notifier.notify("WATCHDOG=1")
                else:
                    self._log.error("thread_died", http=endpoint.alive(),
                                    uploader=None if uploader is None else uploader.alive())
                next_ping = now + ping_every
            wake = next_sample if ping_every is None else min(next_sample, next_ping)
            self._stop.wait(max(wake - time.monotonic(), 0.0))

    def _sample(self, sampler: Sampler, edge_store: EdgeStore, queue: SyncQueue, uploader: Uploader | None) -> None:
        metrics = sampler.sample()
        now = time.time()
        readings = {name: value for name, value in (
            ("cpu_percent", metrics.cpu_percent), ("memory_percent", metrics.memory_percent),
            ("disk_percent", metrics.disk_percent), ("thermal_celsius", metrics.thermal_celsius))
            if value is not None}
        errors: list[str] = []
        try:
            if uploader is not None:
                # Queue first: a crash between the two writes then loses local history, never telemetry.
                queue.enqueue("telemetry", {"ts": now, **readings}, now=now)
            edge_store.add_readings(readings, ts=now)
            self._housekeeping(edge_store, queue, now)
            stats = queue.stats(now)
        except (sqlite3.Error, StorageError) as exc:
            self._log.error("storage_error", error=str(exc))
            errors.append("storage_error")
            stats = self._snapshot.cloud.queue if self._snapshot else queue.stats(now)
        status = uploader.status if uploader is not None else UploadStatus()
        cloud = CloudState(enabled=uploader is not None, queue=stats, last_success=status.last_success,
                           last_error=status.last_error)
        snapshot = Snapshot(taken_at=now, metrics=metrics, cloud=cloud, errors=tuple(errors))
        self._snapshot = snapshot
        self._record_transitions(snapshot, edge_store)

    def _housekeeping(self, edge_store: EdgeStore, queue: SyncQueue, now: float) -> None:
        if now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            removed = edge_store.prune(now - self._config.store.retention_days * 86400)
            if removed:
                self._log.info("pruned", rows=removed)
        dropped = queue.trim(self._config.cloud.max_queue)
        if dropped:
            self._log.warning("queue_trimmed", dropped=dropped, max_queue=self._config.cloud.max_queue)
            edge_store.add_event("queue_trimmed", {"dropped": dropped})

    def _record_transitions(self, snapshot: Snapshot, edge_store: EdgeStore) -> None:
        """Log and store an event when an alert starts or ends, not on every sample."""
        current = frozenset(health.alerts(snapshot, self._config.thresholds))
        for name in sorted(current - self._alerts):
            self._log.warning("alert_raised", alert=name)
            self._store_event(edge_store, "alert_raised", {"alert": name})
        for name in sorted(self._alerts - current):
            self._log.info("alert_cleared", alert=name)
            self._store_event(edge_store, "alert_cleared", {"alert": name})
        self._alerts = current

    def _store_event(self, edge_store: EdgeStore, kind: str, detail: dict[str, Any]) -> None:
        try:
            edge_store.add_event(kind, detail)
        except (sqlite3.Error, StorageError) as exc:
            self._log.error("storage_error", error=str(exc))
