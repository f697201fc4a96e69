"""Drains the sync queue to the cloud: lease a batch, send it, delete it only
when the other end took all of it (an HTTPS POST answered 2xx, or every
message acknowledged by the MQTT broker: mqtt.py).  Anything else (timeout,
refused, 5xx, a crash of the whole agent) leaves the messages in the queue
to be sent again: at least once, never at most once.  After a failure the
next try waits longer, doubling up to ``max_backoff`` (with jitter, so a
fleet that lost its broker does not come back in step): no busy loop while
the far end is down.  Runs in its own thread with its own connection so a
slow network never delays sampling or the watchdog."""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pyvorin_edge_agent import __version__
from pyvorin_edge_agent.config import Config
from pyvorin_edge_agent.errors import ConfigError
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


class Transport(Protocol):
    def send(self, batch: list[Message]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class HttpTransport:
    url: str
    device_id: str
    timeout: float

    def send(self, batch: list[Message]) -> None:
        post_batch(self.url, self.device_id, batch, self.timeout)

    def close(self) -> None:
        pass


def _credential(name: str) -> str:
    """A credential systemd loaded for the service (LoadCredential=), by name."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ConfigError(f"[cloud] tls_key is empty and systemd passed no credentials: the unit needs "
                          f"LoadCredential={name}:... (PYVORIN_TELEMETRY_IDENTITY = \"1\")")
    return str(Path(directory) / name)


def transport(config: Config) -> Transport:
    """The transport [cloud] url names: mqtts:// (TLS with the device's identity) or http(s)://."""
    cloud = config.cloud
    if urllib.parse.urlsplit(cloud.url).scheme != "mqtts":
        return HttpTransport(cloud.url, config.device_id, cloud.timeout)
    try:
        from pyvorin_edge_agent.mqtt import MqttSettings, MqttTransport  # noqa: PLC0415 - paho only for MQTT

        key = cloud.tls_key or _credential("device.key")
        return MqttTransport(MqttSettings(cloud.url, Path(cloud.tls_ca), Path(cloud.tls_cert), Path(key),
                                          Path(cloud.identity_dir), cloud.timeout))
    except ImportError as exc:
        raise ConfigError(f"[cloud] url {cloud.url}: mqtts:// needs python3-paho-mqtt ({exc})") from exc


class Uploader:
    def __init__(self, data_dir: Path, transport: Transport, batch_size: int, interval: float,
                 lease_seconds: float, timeout: float, log: JsonLog, max_backoff: float = 300.0) -> None:
        self._data_dir = data_dir
        self._transport = transport
        self._batch_size = batch_size
        self._interval = interval
        self._lease = lease_seconds
        self._timeout = timeout
        self._max_backoff = max(max_backoff, interval)
        self._failures = 0
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

    def backoff(self) -> float:
        """Seconds before the next try: the interval, doubled per failure in a row, capped, jittered."""
        if not self._failures:
            return self._interval
        delay: float = min(self._interval * 2.0 ** min(self._failures, 20), self._max_backoff)
        return delay * random.uniform(0.75, 1.0)

    def _run(self) -> None:
        queue = SyncQueue(self._data_dir)
        try:
            while not self._stop.is_set():
                sent = self.drain_once(queue)
                # A full batch means more is waiting: go on at once, else wait for the next round.
                if sent < self._batch_size:
                    self._stop.wait(self.backoff())
        finally:
            queue.close()
            self._transport.close()

    def drain_once(self, queue: SyncQueue) -> int:
        batch = queue.claim(self._batch_size, self._lease)
        if not batch:
            return 0
        try:
            self._transport.send(batch)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            queue.release([m.id for m in batch])
            self._failures += 1
            self._status = UploadStatus(self._status.last_success, f"{type(exc).__name__}: {exc}")
            self._log.warning("sync_failed", messages=len(batch), error=str(exc), failures=self._failures)
            return 0
        self._failures = 0
        queue.ack([m.id for m in batch])
        self._status = UploadStatus(time.time(), None)
        self._log.debug("sync_sent", messages=len(batch), first_id=batch[0].id, last_id=batch[-1].id)
        return len(batch)
