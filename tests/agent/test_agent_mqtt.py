"""Telemetry over MQTT with TLS on 8883, the device's identity as its name:
the agent (its own process, as systemd starts it) drains its sync queue into
a real mosquitto (Debian) that requires a fleet certificate, maps it to its
common name and lets each device write only its own topics; a consumer with
its own fleet certificate reads everything.

The broker is stopped and started again in the middle of the stream: no
record the broker acknowledged is lost, duplicates come only from resends
(the consumer drops them by device and queue id), and while the broker is
away the agent backs off instead of spinning. A device that writes another
device's topic is refused by the broker, and keeps its messages."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from agent_support import AgentStarter, scrubbed_env, write_config

from helpers import ROOT, free_port, require, unavailable

IDENTITY = ROOT / "meta-pyvorin/recipes-pyvorin/pyvorin-identity/files/pyvorin-identity"
MOSQUITTO = "/usr/sbin/mosquitto"
PREFILLED = 600
DEVICE = "rpi-telemetry01"


@dataclass
class Broker:
    work: Path
    keys: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def configure(self) -> None:
        (self.work / "data").mkdir(parents=True, exist_ok=True)
        (self.work / "acl").write_text("user telemetry-consumer\ntopic read pyvorin/#\n\n"
                                       "pattern write pyvorin/%u/#\n")
        # user root: the test's keys and files are root's own (0700 directories); a broker of a
        # fleet runs as its user with its certificate readable to it.
        (self.work / "mosquitto.conf").write_text(f"""\
user root
per_listener_settings false
listener {self.port} 127.0.0.1
cafile {self.keys / 'fleet/ca.crt'}
crlfile {self.keys / 'fleet/crl.pem'}
certfile {self.work / 'srv/server.crt'}
keyfile {self.work / 'srv/server.key'}
require_certificate true
use_identity_as_username true
allow_anonymous false
acl_file {self.work / 'acl'}
persistence true
persistence_location {self.work / 'data'}/
log_dest file {self.work / 'mosquitto.log'}
log_type all
""")

    def start(self) -> None:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.work / "mosquitto.conf")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"mosquitto did not listen:\n{self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # as systemd stops it: mosquitto saves its persistence
            self.process.wait(20)

    def log(self) -> str:
        path = self.work / "mosquitto.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


class Consumer:
    """The telemetry backend: one fleet certificate, a persistent session, QoS 1."""

    def __init__(self, broker: Broker, cert: Path, key: Path) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.received: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="telemetry-consumer",
                             protocol=mqtt.MQTTv5)
        client.tls_set(ca_certs=str(broker.keys / "fleet/ca.crt"), certfile=str(cert), keyfile=str(key))
        client.reconnect_delay_set(0.2, 1)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600  # the broker keeps our QoS 1 messages while we or it restart

        def on_connect(client, userdata, flags, reason, props) -> None:  # type: ignore[no-untyped-def]
            client.subscribe("pyvorin/#", qos=1)

        def on_message(client, userdata, message) -> None:  # type: ignore[no-untyped-def]
            record = json.loads(message.payload)
            with self.lock:
                self.received.append((record["device_id"], int(record["id"])))

        client.on_connect = on_connect
        client.on_message = on_message
        client.connect("127.0.0.1", broker.port, clean_start=False, properties=properties)
        client.loop_start()
        self.client = client

    def ids(self, device: str) -> list[int]:
        with self.lock:
            return [i for d, i in self.received if d == device]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _identity(cli, keys: Path, directory: Path, device: str) -> None:
    env = {"PATH": os.environ["PATH"], "PYVORIN_IDENTITY_DIR": str(directory), "PYVORIN_DEVICE_ID": device,
           "PYVORIN_FLEET_CA": str(keys / "fleet/ca.crt")}
    assert subprocess.run([str(IDENTITY), "ensure"], env=env, capture_output=True).returncode == 0
    cli("fleet", "sign", keys, directory / "device.csr", "-o", directory.parent / f"{device}.crt", check=True)
    done = subprocess.run([str(IDENTITY), "install", str(directory.parent / f"{device}.crt")], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def broker(cli, tmp_path: Path) -> Iterator[Broker]:
    if not Path(MOSQUITTO).exists():
        unavailable(f"{MOSQUITTO} is missing (scripts/test.sh installs Debian's mosquitto)")
    require("openssl")
    try:
        import paho.mqtt.client  # noqa: F401, PLC0415 - the agent's own MQTT dependency
    except ImportError:
        unavailable("paho-mqtt is not installed (scripts/test.sh installs the test extra)")
    keys = tmp_path / "keys"
    cli("keys", "init", keys, "--only", "fleet", check=True)
    made = Broker(tmp_path / "broker", keys)
    cli("fleet", "server-cert", keys, "--name", "127.0.0.1", "-o", made.work / "srv", check=True)
    made.configure()
    made.start()
    yield made
    made.stop()


def _consumer(cli, broker: Broker, tmp_path: Path) -> Consumer:
    _identity(cli, broker.keys, tmp_path / "consumer-id", "telemetry-consumer")
    return Consumer(broker, tmp_path / "consumer-id/device.crt", tmp_path / "consumer-id/device.key")


def _agent_config(tmp_path: Path, broker: Broker, identity: Path) -> Path:
    return write_config(tmp_path / "config.toml", tmp_path / "data", None, interval=5.0, extra=f"""
[cloud]
url = "mqtts://127.0.0.1:{broker.port}"
batch_size = 50
interval = 0.2
max_backoff = 2.0
timeout = 5.0
lease_seconds = 10.0
tls_ca = "{broker.keys / 'fleet/ca.crt'}"
tls_cert = "{identity / 'device.crt'}"
identity_dir = "{identity}"
""")


def _credentials(tmp_path: Path, identity: Path) -> dict[str, str]:
    """What LoadCredential=device.key:... gives the service (pyvorin-identity-key.conf): a copy of
    the key in a directory of its own, named by $CREDENTIALS_DIRECTORY."""
    directory = tmp_path / "credentials"
    directory.mkdir(mode=0o700)
    shutil.copy2(identity / "device.key", directory / "device.key")
    return {"CREDENTIALS_DIRECTORY": str(directory)}


def _prefill(data: Path, count: int) -> None:
    from pyvorin_edge_agent.agent import prepare_data_dir
    from pyvorin_edge_agent.syncqueue import SyncQueue

    prepare_data_dir(data)
    queue = SyncQueue(data)
    for n in range(count):
        queue.enqueue("telemetry", {"n": n, "pad": "x" * 200})
    queue.close()


def test_telemetry_survives_a_broker_restart_without_losing_an_acknowledged_record(
        cli, broker: Broker, start_agent: AgentStarter, tmp_path: Path) -> None:
    consumer = _consumer(cli, broker, tmp_path)
    _identity(cli, broker.keys, tmp_path / "identity", DEVICE)
    _prefill(tmp_path / "data", PREFILLED)
    agent = start_agent(_agent_config(tmp_path, broker, tmp_path / "identity"),
                        env=_credentials(tmp_path, tmp_path / "identity"))
    try:
        deadline = time.monotonic() + 60
        while len(set(consumer.ids(DEVICE))) < PREFILLED // 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert consumer.ids(DEVICE), broker.log()
        broker.stop()  # mid-stream
        time.sleep(4)
        broker.start()
        deadline = time.monotonic() + 90
        while not set(range(1, PREFILLED + 1)) <= set(consumer.ids(DEVICE)) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        agent.stop()
        consumer.close()
    ids = consumer.ids(DEVICE)
    missing = sorted(set(range(1, PREFILLED + 1)) - set(ids))
    assert not missing, f"{len(missing)} records lost, first {missing[:10]}\n{broker.log()}"
    duplicates = len(ids) - len(set(ids))
    records = [json.loads(line) for line in "".join(agent.lines.queue).splitlines() if line.strip()]
    records += agent.seen
    failures = [r for r in records if r.get("event") == "sync_failed"]
    assert failures, "the broker's absence went unnoticed"
    # Backing off (0.4, 0.8, 1.6, 2 s ...) over a ~4 s outage: a few tries, not a spin.
    assert len(failures) <= 15, [f.get("error") for f in failures]
    print(f"mqtt: {PREFILLED} records, {duplicates} duplicates after a broker restart, "
          f"{len(failures)} failed tries while it was down")


def test_a_device_writing_another_devices_topic_is_refused_and_keeps_its_messages(
        cli, broker: Broker, start_agent: AgentStarter, tmp_path: Path) -> None:
    _identity(cli, broker.keys, tmp_path / "identity", DEVICE)
    # The identity directory names another device than its certificate does.
    (tmp_path / "identity/device-id").write_text("rpi-someone-else\n")
    _prefill(tmp_path / "data", 10)
    agent = start_agent(_agent_config(tmp_path, broker, tmp_path / "identity"),
                        env=_credentials(tmp_path, tmp_path / "identity"))
    try:
        failure = agent.wait_event("sync_failed", timeout=30)
    finally:
        agent.stop()
    assert "refused" in failure["error"] and "authoriz" in failure["error"].lower(), failure
    from pyvorin_edge_agent.syncqueue import SyncQueue

    queue = SyncQueue(tmp_path / "data")
    try:
        assert queue.stats().depth >= 10
    finally:
        queue.close()
    shutil.rmtree(tmp_path / "broker/data", ignore_errors=True)


def test_without_the_key_credential_an_mqtts_agent_refuses_to_start(cli, broker: Broker, tmp_path: Path) -> None:
    _identity(cli, broker.keys, tmp_path / "identity", DEVICE)
    config = _agent_config(tmp_path, broker, tmp_path / "identity")
    ran = subprocess.run([sys.executable, "-m", "pyvorin_edge_agent", "--config", str(config), "run"],
                         env=scrubbed_env(), capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.strip().splitlines()[-1].startswith("pyv-edge-agent: error: ")
    assert "LoadCredential=device.key" in ran.stderr, ran.stderr
