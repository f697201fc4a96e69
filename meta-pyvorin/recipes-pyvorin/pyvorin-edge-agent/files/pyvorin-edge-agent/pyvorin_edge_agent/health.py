"""From a sample to a verdict: which thresholds are exceeded and the /health
document (monitoring), and whether this agent works at all, the /ready
document (what an update is confirmed on).  Pure functions on frozen data,
shared by the HTTP thread and the main loop without locks.

The two answer different questions. /health says whether the device is
inside its operating limits: a hot enclosure, a full /data or a backlog after
a day offline make it unhealthy, and a fleet should see that. /ready says
whether this software works on this slot: configuration loaded, databases
open and structurally sound, the sampler producing fresh samples, the HTTP
endpoint serving and, with a cloud URL, the uploader running. Only a broken
release is not ready; the weather never decides whether a slot is kept."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pyvorin_edge_agent import __version__
from pyvorin_edge_agent.config import Thresholds
from pyvorin_edge_agent.metrics import SystemMetrics
from pyvorin_edge_agent.syncqueue import QueueStats

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class CloudState:
    enabled: bool
    queue: QueueStats
    last_success: float | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    metrics: SystemMetrics
    cloud: CloudState
    # Failures of the sample itself, e.g. "storage_error" when a commit failed.
    errors: tuple[str, ...] = ()


def alerts(snapshot: Snapshot, limits: Thresholds) -> list[str]:
    """Names of the exceeded limits ("above" is strictly greater) and of unreadable sources."""
    values: dict[str, float | None] = {
        "cpu_percent": snapshot.metrics.cpu_percent,
        "disk_percent": snapshot.metrics.disk_percent,
        "thermal_celsius": snapshot.metrics.thermal_celsius,
        "queue_depth": snapshot.cloud.queue.depth,
    }
    found = [name for name, value in values.items() if value is not None and value > getattr(limits, name)]
    return found + [f"{name}_unavailable" for name in snapshot.metrics.unavailable] + list(snapshot.errors)


def document(snapshot: Snapshot | None, limits: Thresholds, now: float, started: float,
             stale_after: float) -> dict[str, Any]:
    """The /health JSON.  No sample yet, or one older than ``stale_after``, is unhealthy:
    a sampler that hangs must not keep reporting its last good numbers."""
    if snapshot is None:
        return {"status": UNHEALTHY, "alerts": ["no_sample"], "version": __version__,
                "uptime_seconds": round(now - started, 3), "metrics": None, "cloud": None,
                "thresholds": asdict(limits)}
    found = alerts(snapshot, limits)
    age = now - snapshot.taken_at
    if age > stale_after:
        found.append("stale_sample")
    metrics = asdict(snapshot.metrics)
    del metrics["unavailable"]
    return {
        "status": HEALTHY if not found else UNHEALTHY,
        "alerts": found,
        "version": __version__,
        "uptime_seconds": round(now - started, 3),
        "sample_age_seconds": round(age, 3),
        "metrics": metrics,
        "cloud": {
            "enabled": snapshot.cloud.enabled,
            "queue_depth": snapshot.cloud.queue.depth,
            "oldest_age_seconds": snapshot.cloud.queue.oldest_age_seconds,
            "last_success": snapshot.cloud.last_success,
            "last_error": snapshot.cloud.last_error,
        },
        "thresholds": asdict(limits),
    }


@dataclass(frozen=True)
class Components:
    """What the running agent knows about its own machinery."""

    #: Problems PRAGMA quick_check reported for the databases at start.
    storage_problems: tuple[str, ...] = ()
    #: None when no cloud URL is configured.
    uploader_alive: bool | None = None


def readiness(snapshot: Snapshot | None, components: Components, now: float, stale_after: float) -> dict[str, Any]:
    """The /ready JSON: every check "ok" or the reason it is not. Environmental
    alerts (thresholds, unreadable metric sources) are not checks."""
    checks: dict[str, str] = {"config": "ok", "http": "ok"}  # loaded before start; serving this answer
    if components.storage_problems:
        checks["storage"] = f"quick_check: {components.storage_problems[0]}"
    elif snapshot is not None and "storage_error" in snapshot.errors:
        checks["storage"] = "the last sample could not be committed"
    else:
        checks["storage"] = "ok"
    if snapshot is None:
        checks["sampler"] = "no sample yet"
    elif now - snapshot.taken_at > stale_after:
        checks["sampler"] = f"last sample {round(now - snapshot.taken_at, 1)} s old"
    else:
        checks["sampler"] = "ok"
    if components.uploader_alive is not None:
        checks["uploader"] = "ok" if components.uploader_alive else "the uploader thread is not running"
    return {"ready": all(value == "ok" for value in checks.values()), "checks": checks, "version": __version__}
