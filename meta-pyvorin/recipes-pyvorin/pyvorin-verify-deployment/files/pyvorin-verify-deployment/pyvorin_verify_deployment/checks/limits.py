"""The device's own readings against the agent's alert limits, measured here
independently of the agent (a stuck agent must not vouch for itself)."""

from __future__ import annotations

import os

from pyvorin_verify_deployment.context import Context
from pyvorin_verify_deployment.result import Result, failed, passed


def thermal(ctx: Context) -> Result:
    name = "thermal"
    limit = ctx.settings.thermal_celsius
    zones = sorted(ctx.path("/sys/class/thermal").glob("thermal_zone*/temp"))
    readings: dict[str, float] = {}
    for zone in zones:
        try:
            readings[zone.parent.name] = int(zone.read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    if not readings:
        if not ctx.settings.thermal_zone:
            # The board has no sensor and the agent's config says so (thermal_zone = "").
            return passed(name, "no thermal zone; the agent's thermal metric is off (metrics.thermal_zone = \"\")")
        return failed(name, "no readable thermal zone in /sys/class/thermal")
    hot = {z: t for z, t in readings.items() if t > limit}
    shown = ", ".join(f"{z} {t:.1f} °C" for z, t in sorted(readings.items()))
    if hot:
        return failed(name, f"above {limit:g} °C: {', '.join(f'{z} {t:.1f} °C' for z, t in sorted(hot.items()))}")
    return passed(name, f"{shown} (limit {limit:g} °C)")


def disk(ctx: Context) -> Result:
    name = "disk"
    settings = ctx.settings
    limit = settings.disk_percent
    try:
        st = os.statvfs(ctx.path(settings.data_dir))
    except OSError as exc:
        return failed(name, f"{settings.data_dir}: {exc.strerror}")
    used = st.f_blocks - st.f_bfree
    usable = used + st.f_bavail
    percent = 100.0 * used / usable if usable else 100.0
    if percent > limit:
        return failed(name, f"{settings.data_dir} is {percent:.1f} % full (limit {limit:g} %)")
    return passed(name, f"{settings.data_dir} is {percent:.1f} % full (limit {limit:g} %)")
