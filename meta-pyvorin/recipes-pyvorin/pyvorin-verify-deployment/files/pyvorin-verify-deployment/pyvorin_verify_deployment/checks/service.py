"""Checks on the running agent: its unit, its health answer, its confinement."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from http.client import HTTPException

from pyvorin_verify_deployment.context import Context
from pyvorin_verify_deployment.result import Result, failed, passed


def service_active(ctx: Context) -> Result:
    name = "service-active"
    unit = ctx.expect.unit
    result = ctx.run("systemctl", "is-active", unit)
    state = result.stdout.strip() or result.stderr.strip()
    if result.returncode == 0 and state == "active":
        return passed(name, f"{unit} is active")
    return failed(name, f"{unit} is {state or 'unknown'} (systemctl status {unit})")


def health_url(ctx: Context) -> str:
    if ctx.health_url:
        return ctx.health_url
    settings = ctx.settings
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}/health"


def health(ctx: Context) -> Result:
    name = "health"
    url = health_url(ctx)
    try:
        # The agent answers 503 with the same JSON when unhealthy: read the body either way.
        with urllib.request.urlopen(url, timeout=ctx.timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except (OSError, HTTPException) as exc:
        return failed(name, f"{url}: no answer ({exc})")
    try:
        document = json.loads(body)
        status = document["status"]
    except (ValueError, KeyError, TypeError):
        return failed(name, f"{url}: answer is not the agent's health JSON")
    if status == "healthy":
        return passed(name, f"{url}: healthy")
    alerts = document.get("alerts") if isinstance(document, dict) else None
    return failed(name, f"{url}: {status}" + (f" ({', '.join(map(str, alerts))})" if alerts else ""))


def apparmor_agent(ctx: Context) -> Result:
    """The profile is loaded in enforce mode, and the agent's main process runs under it:
    a loaded profile that the process escaped (started before it loaded) protects nothing."""
    name = "apparmor-agent"
    profile = ctx.expect.apparmor_profile
    enabled = ctx.path("/sys/module/apparmor/parameters/enabled")
    try:
        if enabled.read_text().strip() != "Y":
            return failed(name, "AppArmor is disabled in the kernel (apparmor=1 security=apparmor, CONFIG_LSM)")
        loaded = ctx.path("/sys/kernel/security/apparmor/profiles").read_text().splitlines()
    except OSError as exc:
        return failed(name, f"AppArmor state unreadable: {exc.strerror} (is the kernel built with AppArmor?)")
    modes = {line.rsplit(" (", 1)[0]: line.rsplit(" (", 1)[-1].rstrip(")") for line in loaded if " (" in line}
    if modes.get(profile) != "enforce":
        return failed(name, f"profile {profile} is {modes.get(profile, 'not loaded')}, not enforce")
    shown = ctx.run("systemctl", "show", "--property=MainPID", "--value", ctx.expect.unit)
    pid = shown.stdout.strip()
    if shown.returncode != 0 or not pid.isdigit() or pid == "0":
        return failed(name, f"profile {profile} is enforced, but {ctx.expect.unit} has no main process")
    label = ""
    for attr in (f"/proc/{pid}/attr/apparmor/current", f"/proc/{pid}/attr/current"):
        try:
            label = ctx.path(attr).read_text().strip().rstrip("\0")
            break
        except OSError:
            continue
    if label == f"{profile} (enforce)":
        return passed(name, f"main process {pid} runs under {profile} (enforce)")
    return failed(name, f"main process {pid} runs as {label or 'unknown'!r}, not {profile} (enforce): "
                        "restart the service after the profile is loaded")
