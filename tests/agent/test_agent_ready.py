"""/ready against /health: the weather never decides whether a slot is kept.

A device under every environmental alert at once (hot, busy, disk above its
limit, a metric source gone) is unhealthy for monitoring and still ready for
an update's confirmation; an agent whose sampler hangs or whose database is
damaged is not ready, whatever the weather."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from agent_support import AgentStarter, Sources, write_config


def ready(agent) -> tuple[int, dict]:  # type: ignore[no-untyped-def, type-arg]
    status, content_type, body = agent.get("/ready")
    assert content_type == "application/json"
    return status, json.loads(body)


def test_every_environmental_alert_leaves_the_agent_ready(tmp_path: Path, sources: Sources,
                                                          start_agent: AgentStarter) -> None:
    # The uplink is down (nothing listens on the discard port): telemetry backs up
    # past a queue limit of 1, the uploader keeps trying.
    config = write_config(tmp_path / "config.toml", tmp_path / "data", sources,
                          extra="\n[thresholds]\ndisk_percent = 0.001\nqueue_depth = 1\n"
                                "\n[cloud]\nurl = \"http://127.0.0.1:9/ingest\"\ninterval = 0.5\ntimeout = 0.5\n")
    agent = start_agent(config)
    sources.write(busy=100 + 950, idle=900 + 50, millicelsius=96000)  # 95 % busy, 96 °C
    everything = {"cpu_percent", "thermal_celsius", "disk_percent", "queue_depth"}
    doc = agent.wait_health(lambda d: everything <= set(d["alerts"]))
    assert doc["status"] == "unhealthy" and agent.get("/health")[0] == 503
    status, body = ready(agent)
    assert status == 200 and body["ready"] is True, body
    assert body["checks"] == {"config": "ok", "http": "ok", "storage": "ok", "sampler": "ok", "uploader": "ok"}

    sources.thermal.unlink()  # the thermal driver is gone on this kernel: monitoring's problem
    agent.wait_health(lambda d: "thermal_celsius_unavailable" in d["alerts"])
    assert ready(agent)[0] == 200


def test_a_hung_sampler_is_not_ready(tmp_path: Path, sources: Sources, start_agent: AgentStarter) -> None:
    agent = start_agent(write_config(tmp_path / "config.toml", tmp_path / "data", sources))
    assert ready(agent)[0] == 200
    # /proc/stat replaced by a FIFO nobody writes: the next sample blocks in open().
    sources.stat.unlink()
    os.mkfifo(sources.stat)
    deadline = time.monotonic() + 20
    status, body = ready(agent)
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        status, body = ready(agent)
    assert status == 503 and body["ready"] is False, body
    assert body["checks"]["sampler"].startswith("last sample"), body
    # Unblock the sampler so the agent can stop.
    with open(sources.stat, "w") as fifo:
        fifo.write("cpu  100 0 0 900 0 0 0 0 0 0\n")


def test_a_damaged_database_is_not_ready(tmp_path: Path, sources: Sources, start_agent: AgentStarter) -> None:
    """As after a release whose migration wrote garbage: the agent starts, serves, and is not ready."""
    data = tmp_path / "data"
    agent = start_agent(write_config(tmp_path / "config.toml", data, sources))
    agent.wait_health(lambda d: d["metrics"] is not None)
    assert agent.stop() == 0
    databases = sorted(p for p in data.iterdir() if p.suffix == ".db")
    assert databases, list(data.iterdir())
    target = databases[0]
    with sqlite3.connect(target) as conn:  # grow it past a few pages, so damage lands off the header
        conn.execute("CREATE TABLE IF NOT EXISTS filler (x BLOB)")
        conn.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(3000),) for _ in range(40)])
    conn.close()
    page = 4096
    with open(target, "r+b") as handle:
        handle.seek(3 * page)
        handle.write(b"\xa5" * page)
    agent = start_agent(write_config(tmp_path / "config.toml", data, sources))
    status, body = ready(agent)
    assert status == 503 and body["checks"]["storage"].startswith("quick_check"), body
    agent.wait_event("storage_check_failed")


def test_the_real_agent_under_alerts_gets_its_slot_confirmed(tmp_path: Path, sources: Sources,
                                                             start_agent: AgentStarter) -> None:
    """pyvorin-confirm against the running agent: hot and busy, the slot on trial is kept."""
    from test_confirm import ON_TRIAL, confirm, make_env

    from helpers import require

    require("mkenvimage", "curl")
    agent = start_agent(write_config(tmp_path / "config.toml", tmp_path / "data", sources))
    sources.write(busy=100 + 950, idle=900 + 50, millicelsius=96000)
    agent.wait_health(lambda d: {"cpu_percent", "thermal_celsius"} <= set(d["alerts"]))
    env = make_env(tmp_path, ON_TRIAL)
    result = confirm(tmp_path, env, f"http://127.0.0.1:{agent.port}/ready")
    assert result.returncode == 0, result.stderr
    assert env.read()["upgrade_available"] == "0" and env.read()["bootcount"] == "0"


def test_the_real_agent_with_a_hung_sampler_is_not_confirmed(tmp_path: Path, sources: Sources,
                                                             start_agent: AgentStarter) -> None:
    from test_confirm import ON_TRIAL, confirm, make_env

    from helpers import require

    require("mkenvimage", "curl")
    agent = start_agent(write_config(tmp_path / "config.toml", tmp_path / "data", sources))
    sources.stat.unlink()
    os.mkfifo(sources.stat)
    deadline = time.monotonic() + 20
    while ready(agent)[0] == 200 and time.monotonic() < deadline:  # the last sample goes stale
        time.sleep(0.2)
    env = make_env(tmp_path, ON_TRIAL)
    result = confirm(tmp_path, env, f"http://127.0.0.1:{agent.port}/ready", timeout=3)
    assert result.returncode == 1 and "slot left unconfirmed" in result.stderr, result.stderr
    assert env.read() == ON_TRIAL
    with open(sources.stat, "w") as fifo:
        fifo.write("cpu  100 0 0 900 0 0 0 0 0 0\n")
