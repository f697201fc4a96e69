"""System metrics from the kernel's own files: CPU from /proc/stat deltas,
memory from /proc/meminfo, temperature from a thermal zone, disk from
statvfs.  Every source path is configurable so tests can point at fixtures.
A source that cannot be read yields None, never an exception: a health
endpoint that crashes is worse than one that says "unknown"."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# All CPUs' ticks together; at USER_HZ=100 on four cores that is an eighth of a second.
MIN_WINDOW_TICKS = 50


@dataclass(frozen=True)
class CpuTimes:
    busy: int
    total: int


@dataclass(frozen=True)
class SystemMetrics:
    cpu_percent: float | None
    memory_percent: float | None
    disk_percent: float | None
    thermal_celsius: float | None
    # Sources configured but unreadable.  A None CPU share right after start is
    # not listed: it only means no tick has elapsed since the first sample yet.
    unavailable: tuple[str, ...] = ()


def read_cpu_times(path: Path) -> CpuTimes | None:
    """The aggregate "cpu" line of /proc/stat, in clock ticks."""
    try:
        with open(path, encoding="ascii") as handle:
            first = handle.readline().split()
        if not first or first[0] != "cpu":
            return None
        values = [int(v) for v in first[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is
    # already counted in user/nice, so only the first eight fields make the total.
    fields = (values + [0] * 8)[:8]
    idle = fields[3] + fields[4]
    total = sum(fields)
    return CpuTimes(busy=total - idle, total=total)


def cpu_percent(previous: CpuTimes, current: CpuTimes) -> float | None:
    """Busy share between two samples; None when no tick elapsed (no information)."""
    total = current.total - previous.total
    if total <= 0:
        return None
    busy = min(max(current.busy - previous.busy, 0), total)
    return round(100.0 * busy / total, 2)


def read_memory_percent(path: Path) -> float | None:
    """Used memory as the kernel sees it: 1 - MemAvailable / MemTotal."""
    values: dict[str, int] = {}
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    total, available = values.get("MemTotal"), values.get("MemAvailable")
    if not total or available is None:
        return None
    return round(100.0 * (1 - available / total), 2)


def read_thermal_celsius(path: Path | None) -> float | None:
    """A sysfs thermal zone holds millidegrees Celsius as one integer."""
    if path is None:
        return None
    try:
        return round(int(path.read_text(encoding="ascii").strip()) / 1000.0, 2)
    except (OSError, ValueError):
        return None


def read_disk_percent(path: Path) -> float | None:
    """Used share as df(1) computes it: blocks reserved for root count as not available."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    used = st.f_blocks - st.f_bfree
    usable = used + st.f_bavail
    if usable <= 0:
        return None
    return round(100.0 * used / usable, 2)


class Sampler:
    """Keeps the previous /proc/stat sample so each call reports the CPU share since the last one."""

    def __init__(self, proc_stat: Path, proc_meminfo: Path, thermal_zone: Path | None, disk_path: Path) -> None:
        self._proc_stat = proc_stat
        self._proc_meminfo = proc_meminfo
        self._thermal_zone = thermal_zone
        self._disk_path = disk_path
        self._previous = read_cpu_times(proc_stat)
        self._last_cpu: float | None = None

    def sample(self) -> SystemMetrics:
        current = read_cpu_times(self._proc_stat)
        if current is None:
            self._last_cpu = None
            self._previous = None
        elif self._previous is None:
            self._previous = current
        elif current.total - self._previous.total >= MIN_WINDOW_TICKS:
            self._last_cpu = cpu_percent(self._previous, current)
            self._previous = current
        # else: too few ticks for a meaningful share (e.g. the sample right after start,
        # which would measure our own start-up): keep the baseline and the last share.
        memory = read_memory_percent(self._proc_meminfo)
        disk = read_disk_percent(self._disk_path)
        thermal = read_thermal_celsius(self._thermal_zone)
        missing = {"cpu_percent": current is None, "memory_percent": memory is None, "disk_percent": disk is None,
                   "thermal_celsius": self._thermal_zone is not None and thermal is None}
        return SystemMetrics(cpu_percent=self._last_cpu, memory_percent=memory, disk_percent=disk,
                             thermal_celsius=thermal, unavailable=tuple(k for k, v in missing.items() if v))
