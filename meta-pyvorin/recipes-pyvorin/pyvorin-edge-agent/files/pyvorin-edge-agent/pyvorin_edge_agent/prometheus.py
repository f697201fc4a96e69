"""/metrics in the Prometheus text exposition format 0.0.4, written by hand:
a dozen gauges do not justify a client library on the image."""

from __future__ import annotations

import math
from typing import Any

from pyvorin_edge_agent import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "pyvorin_edge_"

GAUGES = (
    ("cpu_percent", "CPU busy share over the last sample interval, percent."),
    ("memory_percent", "Memory in use (1 - MemAvailable/MemTotal), percent."),
    ("disk_percent", "Space used on the data file system, percent."),
    ("thermal_celsius", "Temperature of the configured thermal zone, degrees Celsius."),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def render(health: dict[str, Any]) -> str:
    """The exposition for one /health document (so both endpoints always agree)."""
    lines: list[str] = []

    def gauge(name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {PREFIX}{name} {help_text}")
        lines.append(f"# TYPE {PREFIX}{name} gauge")
        lines.extend(f"{PREFIX}{name}{labels} {_number(value)}" for labels, value in samples)

    metrics = health.get("metrics") or {}
    for name, help_text in GAUGES:
        value = metrics.get(name)
        # An unknown value is left out rather than invented: absent() is how Prometheus alerts on it.
        gauge(name, help_text, [] if value is None else [("", value)])
    cloud = health.get("cloud") or {}
    depth = cloud.get("queue_depth")
    gauge("sync_queue_depth", "Messages waiting for the cloud.", [] if depth is None else [("", depth)])
    oldest = cloud.get("oldest_age_seconds")
    gauge("sync_queue_oldest_age_seconds", "Age of the oldest waiting message, seconds.",
          [] if oldest is None else [("", oldest)])
    gauge("healthy", "1 when /health reports healthy, else 0.", [("", 1.0 if health["status"] == "healthy" else 0.0)])
    limits = health["thresholds"]
    firing = set(health["alerts"])
    gauge("alert", "1 while the named limit is exceeded.",
          [(f'{{check="{_escape(name)}"}}', 1.0 if name in firing else 0.0) for name in limits])
    gauge("threshold", "Configured alert limit.", [(f'{{check="{_escape(name)}"}}', float(v)) for name, v in limits.items()])
    gauge("uptime_seconds", "Seconds since the agent started.", [("", health["uptime_seconds"])])
    gauge("info", "Agent build information.", [(f'{{version="{_escape(__version__)}"}}', 1.0)])
    return "\n".join(lines) + "\n"
