"""Drains the sync queue to the cloud: lease a batch, POST it as JSON, delete
it only on a 2xx answer.  Anything else (timeout, refused, 5xx, a crash of
the whole agent) leaves the messages in the queue to be sent again: at least
once, never at most once.  Runs in its own thread with its own connection so
a slow network never delays sampling or the watchdog."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pyvorin_edge_agent import __version__
from pyvorin_edge_agent.jsonlog import JsonLog
from pyvorin_edge_agent.syncqueue import Message, SyncQueue


@dataclass(frozen=True)
class UploadStatus:
    last_success: float | None = None
    last_error: str | None = None


def post_batch(url: str, device_id: str, batch: list[Message], timeout: float) -> None:
    """One POST; raises unless the answer is 2xx (urlopen raises HTTPError for any other)."""
    body = json.dumps({
        "device_id": device_id,
        "messages": [{"id": m.id, "topic": m.topic, "enqueued_at": m.enqueued_at, "attempt": m.attempts,
                      "payload": m.payload} for m in batch],
    }, separators=(",", ":")).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": f"pyv-edge-agent/{__version__}"})
    # The scheme is limited to http(s) when the config is loaded.
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


class Uploader:
    def __init__(self, data_dir: Path, url: str, device_id: str, batch_size: int, interval: float,
                 lease_seconds: float, timeout: float, log: JsonLog) -> None:
        self._data_dir = data_dir
        self._url = url
        self._device_id = device_id
        self._batch_size = batch_size
        self._interval = interval
        self._lease = lease_seconds
        self._timeout = timeout
        self._log = log
        self._stop = threading.Event()
        self._status = UploadStatus()
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)

    @property
    def status(self) -> UploadStatus:
        return self._status

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._timeout + 5)

    def _run(self) -> None:
        queue = SyncQueue(self._data_dir)
        try:
            while not self._stop.is_set():
                sent = self.drain_once(queue)
                # A full batch means more is waiting: go on at once, else wait for the next round.
                if sent < self._batch_size:
                    self._stop.wait(self._interval)
        finally:
            queue.close()

    def drain_once(self, queue: SyncQueue) -> int:
        batch = queue.claim(self._batch_size, self._lease)
        if not batch:
            return 0
        try:
            post_batch(self._url, self._device_id, batch, self._timeout)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            queue.release([m.id for m in batch])
            self._status = UploadStatus(self._status.last_success, f"{type(exc).__name__}: {exc}")
            self._log.warning("sync_failed", messages=len(batch), error=str(exc))
            return 0
        queue.ack([m.id for m in batch])
        self._status = UploadStatus(time.time(), None)
        self._log.debug("sync_sent", messages=len(batch), first_id=batch[0].id, last_id=batch[-1].id)
        return len(batch)
