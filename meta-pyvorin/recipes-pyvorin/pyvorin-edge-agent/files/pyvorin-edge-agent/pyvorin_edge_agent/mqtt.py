"""The sync queue's MQTT transport: TLS on 8883 with the device's identity.

Each message is published with QoS 1 to ``<prefix>/<device>/<topic>`` and
counts as sent only when the broker acknowledged it with a success code
(MQTT 5: a broker that refuses a publish, say for its ACL, says so in the
PUBACK; MQTT 3.1.1 would acknowledge it and drop it). A batch is acked in the
queue only when every message of it was: anything else leaves it to be sent
again, so a record is delivered at least once; the payload carries the
queue's id and enqueue time, which a consumer uses to drop the duplicates a
resend can make. The device ID is the one in the device's certificate
(pyvorin-identity writes it beside the key): the broker maps the
certificate to that name and allows it only its own topics.

paho-mqtt (meta-python's python3-paho-mqtt, 2.x) is imported only when an
``mqtts://`` URL is configured.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyvorin_edge_agent.syncqueue import Message

TOPIC_PREFIX = "pyvorin"


class MqttError(OSError):
    """The broker could not be reached, refused us, or did not acknowledge a batch."""


@dataclass(frozen=True)
class MqttSettings:
    url: str  # mqtts://host:port
    ca: Path
    cert: Path
    key: Path
    identity_dir: Path
    timeout: float

    def device_id(self) -> str:
        try:
            return (self.identity_dir / "device-id").read_text().strip()
        except OSError as exc:
            raise MqttError(f"no device identity in {self.identity_dir} ({exc.strerror or exc}): "
                            "pyvorin-identity makes it at boot") from exc


def payload(device_id: str, message: Message) -> bytes:
    """What the consumer gets: the record and the keys that make a resend recognisable."""
    return json.dumps({"device_id": device_id, "id": message.id, "enqueued_at": message.enqueued_at,
                       "attempt": message.attempts, "topic": message.topic, "payload": message.payload},
                      separators=(",", ":"), sort_keys=True).encode()


class MqttTransport:
    """One connection, kept between batches and made again after a failure."""

    def __init__(self, settings: MqttSettings) -> None:
        import paho.mqtt.client as mqtt  # noqa: PLC0415 - only devices that use MQTT need paho

        self._mqtt = mqtt
        self._settings = settings
        parts = urllib.parse.urlsplit(settings.url)
        if parts.scheme != "mqtts" or not parts.hostname:
            raise MqttError(f"{settings.url}: an mqtts://HOST[:PORT] URL")
        self._host, self._port = parts.hostname, parts.port or 8883
        self._client: Any = None
        self._device = ""
        self._lock = threading.Lock()
        self._acks: dict[int, Any] = {}
        self._connected = threading.Event()
        self._refused = ""

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
        else:
            self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected.clear()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            self._acks[mid] = reason

    def _connect(self) -> None:
        if self._client is not None and self._connected.is_set():
            return
        self.close()
        mqtt = self._mqtt
        settings = self._settings
        self._device = settings.device_id()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self._device, protocol=mqtt.MQTTv5)
        context = ssl.create_default_context(cafile=str(settings.ca))
        try:
            context.load_cert_chain(str(settings.cert), str(settings.key))
        except (OSError, ssl.SSLError) as exc:
            raise MqttError(f"the device certificate {settings.cert} or key {settings.key}: {exc}") from exc
        client.tls_set_context(context)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._refused = ""
        self._connected.clear()
        self._client = client
        try:
            client.connect(self._host, self._port, keepalive=60)
        except (OSError, ssl.SSLError) as exc:
            self.close()
            raise MqttError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        client.loop_start()
        if not self._connected.wait(self._settings.timeout):
            refused = self._refused
            self.close()
            raise MqttError(f"{self._host}:{self._port} refused the connection: {refused}" if refused
                            else f"{self._host}:{self._port}: no CONNACK within {self._settings.timeout:.0f}s")

    def send(self, batch: list[Message]) -> None:
        """Publish ``batch``; returns only when the broker acknowledged every message of it."""
        self._connect()
        client = self._client
        pending: dict[int, int] = {}
        with self._lock:
            self._acks.clear()
        for message in batch:
            info = client.publish(f"{TOPIC_PREFIX}/{self._device}/{message.topic}", payload(self._device, message),
                                  qos=1)
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                self.close()
                raise MqttError(f"publish of message {message.id} failed: {self._mqtt.error_string(info.rc)}")
            pending[info.mid] = message.id
        deadline = time.monotonic() + self._settings.timeout
        while time.monotonic() < deadline:
            with self._lock:
                done = all(mid in self._acks for mid in pending)
            if done or not self._connected.is_set():
                break
            time.sleep(0.02)
        with self._lock:
            missing = [pending[mid] for mid in pending if mid not in self._acks]
            refused = [(pending[mid], str(self._acks[mid])) for mid in pending
                       if mid in self._acks and self._acks[mid].is_failure]
        if missing or refused:
            self.close()
            if refused:
                raise MqttError(f"the broker refused message {refused[0][0]}: {refused[0][1]}")
            raise MqttError(f"{len(missing)} of {len(batch)} messages not acknowledged "
                            f"within {self._settings.timeout:.0f}s")

    def close(self) -> None:
        client, self._client = self._client, None
        self._connected.clear()
        if client is not None:
            client.disconnect()
            client.loop_stop()
