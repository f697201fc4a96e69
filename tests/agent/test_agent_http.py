"""The running agent: /health and /metrics on a random loopback port, the
alert thresholds against fixture sources, JSON logs, sd_notify."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from agent_support import AgentStarter, Sources, needs_mount_namespace, write_config
from pyvorin_edge_agent.syncqueue import SyncQueue

from helpers import require_module

CHECKS = ("cpu_percent", "disk_percent", "thermal_celsius", "queue_depth")


def test_health_and_metrics_report_the_fixture_values(tmp_path: Path, sources: Sources,
                                                      start_agent: AgentStarter) -> None:
    parser = require_module("prometheus_client.parser")
    agent = start_agent(write_config(tmp_path / "config.toml", tmp_path / "data", sources))
    sources.write(busy=300, idle=1700)  # +200 busy of +1000 ticks: 20 %
    doc = agent.wait_health(lambda d: d["metrics"]["cpu_percent"] is not None)

    assert doc["status"] == "healthy" and doc["alerts"] == []
    assert doc["metrics"]["cpu_percent"] == 20.0
    assert doc["metrics"]["thermal_celsius"] == 45.0
    assert doc["metrics"]["memory_percent"] == 40.0
    assert 0 <= doc["metrics"]["disk_percent"] <= 100
    assert doc["cloud"]["queue_depth"] == 0 and doc["cloud"]["enabled"] is False
    assert doc["thresholds"] == {"cpu_percent": 85.0, "disk_percent": 90.0, "thermal_celsius": 75.0,
                                 "queue_depth": 5000}

    status, content_type, text = agent.get("/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    value = {name: families[f"pyvorin_edge_{name}"].samples[0].value
             for name in ("cpu_percent", "thermal_celsius", "memory_percent", "sync_queue_depth", "healthy")}
    assert value == {"cpu_percent": 20.0, "thermal_celsius": 45.0, "memory_percent": 40.0,
                     "sync_queue_depth": 0.0, "healthy": 1.0}
    assert {s.labels["check"]: s.value for s in families["pyvorin_edge_threshold"].samples} == {
        "cpu_percent": 85.0, "disk_percent": 90.0, "thermal_celsius": 75.0, "queue_depth": 5000.0}
    assert all(f.type == "gauge" for f in families.values())
    assert agent.get("/nothing")[0] == 404


def test_cpu_above_85_percent_is_unhealthy_and_recovers(tmp_path: Path, sources: Sources,
                                                        start_agent: AgentStarter) -> None:
    agent = start_agent(write_config(tmp_path / "config.toml", tmp_path / "data", sources))
    sources.write(busy=100 + 900, idle=900 + 100)  # 90 % busy
    doc = agent.wait_health(lambda d: d["metrics"]["cpu_percent"] is not None)
    assert doc["metrics"]["cpu_percent"] == 90.0
    assert doc["status"] == "unhealthy" and doc["alerts"] == ["cpu_percent"]
    assert agent.get("/health")[0] == 503
    sources.write(busy=1000 + 100, idle=1000 + 900)  # 10 % busy
    doc = agent.wait_health(lambda d: d["status"] == "healthy")
    assert doc["metrics"]["cpu_percent"] == 10.0
    raised = agent.wait_event("alert_raised")
    assert raised["alert"] == "cpu_percent" and raised["level"] == "warning"
    assert agent.wait_event("alert_cleared")["alert"] == "cpu_percent"


@pytest.mark.parametrize(("millicelsius", "status"), [(75000, "healthy"), (75500, "unhealthy")])
def test_thermal_limit_is_75_celsius(tmp_path: Path, sources: Sources, start_agent: AgentStarter,
                                     millicelsius: int, status: str) -> None:
    sources.write(millicelsius=millicelsius)
    agent = start_agent(write_config(tmp_path / "config.toml", tmp_path / "data", sources))
    doc = agent.health()
    assert doc["metrics"]["thermal_celsius"] == millicelsius / 1000
    assert doc["status"] == status
    assert doc["alerts"] == ([] if status == "healthy" else ["thermal_celsius"])


def test_unreadable_thermal_zone_is_unhealthy(tmp_path: Path, sources: Sources, start_agent: AgentStarter) -> None:
    sources.thermal.unlink()
    agent = start_agent(write_config(tmp_path / "config.toml", tmp_path / "data", sources))
    doc = agent.health()
    assert doc["metrics"]["thermal_celsius"] is None
    assert doc["alerts"] == ["thermal_celsius_unavailable"]


@pytest.mark.parametrize(("depth", "status"), [(5000, "healthy"), (5001, "unhealthy")])
def test_queue_depth_limit_is_5000(tmp_path: Path, sources: Sources, start_agent: AgentStarter,
                                   depth: int, status: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    queue = SyncQueue(data)
    with queue.conn:
        queue.conn.execute("BEGIN")
        queue.conn.executemany("INSERT INTO queue (topic, payload, enqueued_at) VALUES ('t', '{}', ?)",
                               [(time.time(),)] * depth)
    queue.close()
    agent = start_agent(write_config(tmp_path / "config.toml", data, sources))
    doc = agent.health()
    assert doc["cloud"]["queue_depth"] == depth
    assert doc["status"] == status
    assert ("queue_depth" in doc["alerts"]) is (status == "unhealthy")


@needs_mount_namespace
@pytest.mark.parametrize(("fill_kib", "status"), [(512, "healthy"), (1000, "unhealthy")])
def test_disk_limit_is_90_percent(tmp_path: Path, sources: Sources, start_agent: AgentStarter,
                                  fill_kib: int, status: str) -> None:
    """A 1 MiB tmpfs, in the agent's own mount namespace, filled to about 50 % or 98 %."""
    disk = tmp_path / "disk"
    disk.mkdir()
    config = write_config(tmp_path / "config.toml", tmp_path / "data", sources,
                          extra=f'disk_path = "{disk}"\n')
    script = (f'mount -t tmpfs -o size=1m none {disk} && head -c {fill_kib * 1024} /dev/zero > {disk}/fill; '
              'exec "$@"')
    agent = start_agent(config, wrap=["unshare", "-m", "sh", "-c", script, "sh"])
    doc = agent.health()
    assert (doc["metrics"]["disk_percent"] > 90) is (status == "unhealthy")
    assert doc["status"] == status


def test_logs_are_json_lines_and_sigterm_stops_cleanly(tmp_path: Path, sources: Sources,
                                                      start_agent: AgentStarter) -> None:
    agent = start_agent(write_config(tmp_path / "config.toml", tmp_path / "data", sources))
    listening = agent.wait_event("listening")
    assert listening["level"] == "info" and listening["host"] == "127.0.0.1" and listening["ts"].endswith("Z")
    assert agent.stop() == 0
    agent.wait_event("stopped")
    assert agent.stderr_text == ""


def test_sd_notify_ready_then_watchdog(tmp_path: Path, sources: Sources, start_agent: AgentStarter) -> None:
    """A fake systemd: a unix datagram socket in NOTIFY_SOCKET, WatchdogSec=0.4 s."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        agent = start_agent(write_config(tmp_path / "config.toml", tmp_path / "data", sources, interval=5),
                            env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
        messages = [sock.recv(4096).decode() for _ in range(4)]
        assert messages[0].splitlines()[0] == "READY=1" and "STATUS=serving /health" in messages[0]
        assert messages[1:] == ["WATCHDOG=1"] * 3
        # The ping comes every WatchdogSec/2 although sampling is every 5 s.
        start = time.monotonic()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert time.monotonic() - start < 0.5
        agent.stop()
        assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_notify_socket(tmp_path: Path, sources: Sources, start_agent: AgentStarter) -> None:
    name = f"pyvorin-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        start_agent(write_config(tmp_path / "config.toml", tmp_path / "data", sources),
                    env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096).startswith(b"READY=1")


def test_health_port_is_not_reachable_from_outside_loopback(tmp_path: Path, sources: Sources,
                                                             start_agent: AgentStarter) -> None:
    agent = start_agent(write_config(tmp_path / "config.toml", tmp_path / "data", sources))
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{agent.port}"], capture_output=True, text=True,
                               check=False)
    if listening.returncode != 0:
        pytest.skip("ss (iproute2) unavailable")
    assert listening.stdout.split()[3] == f"127.0.0.1:{agent.port}"
