"""From a sample to a verdict: which thresholds are exceeded, and the /health
document.  Pure functions on frozen data, shared by the HTTP thread and the
main loop without locks."""

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
