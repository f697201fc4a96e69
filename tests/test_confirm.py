"""pyvorin-confirm on the host: the layer's script against a real HTTP server
and a real two-copy U-Boot environment written by the device's fw_setenv
(libubootenv 0.3.5, built by device_swupdate as oe-core builds it),
and its unit judged by systemd-analyze like the other hardened units. The
same script confirms slots in the QEMU boots of test_rollback.py."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvorin_devsim import device_swupdate
from test_hardening_systemd import Root, exposure, verify

from helpers import ROOT, require, unavailable

FILES = ROOT / "meta-pyvorin/recipes-pyvorin/pyvorin-confirm/files"
SCRIPT = FILES / "pyvorin-confirm"
ENV_SIZE = 0x4000
CONFIRM_THRESHOLD = 30


class _Health(http.server.BaseHTTPRequestHandler):
    """The agent's two documents: /ready decides, /health (hot, full, busy) must not."""

    status = 200
    body = b'{"ready": true, "checks": {"config": "ok"}}'
    health_status = 503
    health_body = b'{"status": "unhealthy", "alerts": ["thermal_celsius", "disk_percent"]}'

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        status, body = {"/ready": (self.status, self.body),
                        "/health": (self.health_status, self.health_body)}.get(self.path, (404, b"{}"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
        pass


@pytest.fixture
def agent() -> Iterator[type[_Health]]:
    """A loopback /health whose answer a test sets (class attributes of a fresh handler)."""
    handler = type("Health", (_Health,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}/ready"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


@dataclass(frozen=True)
class Env:
    """Two environment copies in files, as on the boot partition, and their fw_env.config."""

    config: Path

    def read(self) -> dict[str, str]:
        out = subprocess.run(["fw_printenv", "-c", self.config], capture_output=True, text=True, check=True,
                             env=device_tools()).stdout
        return dict(line.split("=", 1) for line in out.splitlines())


def device_tools(path: str | None = None) -> dict[str, str]:
    """PATH (and library path) with the device's fw_printenv/fw_setenv first, as the script finds them on the device."""
    build = device_swupdate.build()
    return {"PATH": f"{build.bindir}:{path or os.environ['PATH']}", **build.env}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    require("mkenvimage", "curl")
    try:
        device_swupdate.build()
    except device_swupdate.BuildError as exc:
        unavailable(f"the device's libubootenv cannot be built here: {exc}")
    yield Env(tmp_path / "fw_env.config")


def make_env(tmp_path: Path, values: Mapping[str, str]) -> Env:
    text = tmp_path / "env.txt"
    text.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    lines = []
    for name in ("uboot.env", "uboot-redund.env"):
        subprocess.run(["mkenvimage", "-r", "-s", str(ENV_SIZE), "-o", tmp_path / name, text], check=True)
        lines.append(f"{tmp_path / name} 0x0 {ENV_SIZE:#x}")
    config = tmp_path / "fw_env.config"
    config.write_text("\n".join(lines) + "\n")
    return Env(config)


def confirm(tmp_path: Path, env: Env, url: str, timeout: int = 3, hooks: Path | None = None,
            hook_timeout: int = 5, installed_ustate: str | None = None) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "run"
    runtime.mkdir(exist_ok=True)
    variables = {**device_tools(), "RUNTIME_DIRECTORY": str(runtime),
                 "PYVORIN_CONFIRM_URL": url, "PYVORIN_CONFIRM_TIMEOUT": str(timeout),
                 "PYVORIN_CONFIRM_INTERVAL": "1", "PYVORIN_CONFIRM_BOOTLOADER": "uboot",
                 "PYVORIN_CONFIRM_FW_ENV_CONFIG": str(env.config),
                 "PYVORIN_CONFIRM_HOOKS": str(hooks or tmp_path / "no-hooks"),
                 "PYVORIN_CONFIRM_HOOK_TIMEOUT": str(hook_timeout)}
    if installed_ustate is not None:
        variables["PYVORIN_CONFIRM_INSTALLED_USTATE"] = installed_ustate
    return subprocess.run(["/bin/sh", SCRIPT], env=variables, capture_output=True, text=True, timeout=60,
                          check=False)


ON_TRIAL = {"rootpart": "3", "upgrade_available": "1", "bootcount": "2", "ustate": "1"}


def test_healthy_agent_confirms_the_slot_on_trial(tmp_path: Path, env: Env, agent: type[_Health]) -> None:
    env = make_env(tmp_path, ON_TRIAL)
    result = confirm(tmp_path, env, agent.url)  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stderr
    assert env.read() == {"rootpart": "3", "upgrade_available": "0", "bootcount": "0", "ustate": "0"}
    # fw_setenv -s got name=value lines (it skips "name value" lines with exit 0).
    assert (tmp_path / "run/confirm.env").read_text().split() == ["upgrade_available=0", "bootcount=0", "ustate=0"]


@pytest.mark.parametrize(("setting", "left"), [("2", "2"), ("0", "0"), ("7", "0"), ("", "0")])
def test_with_a_rollout_server_the_install_is_left_for_suricatta_to_report(
        tmp_path: Path, env: Env, agent: type[_Health], setting: str, left: str) -> None:
    """An image with PYVORIN_FLEET_URL renders 2: suricatta reports 2 as a success, then sets 0.
    Any other value falls back to 0 rather than fail a good slot."""
    env = make_env(tmp_path, ON_TRIAL)
    result = confirm(tmp_path, env, agent.url, installed_ustate=setting)  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stderr
    assert env.read()["ustate"] == left and env.read()["upgrade_available"] == "0"


@pytest.mark.parametrize("status,body", [(503, b'{"ready": false}'), (200, b'{"ready": false}'),
                                         (200, b'{"status": "healthy"}'), (200, b"not json")])
def test_an_agent_not_ready_leaves_the_trial_running(tmp_path: Path, env: Env, agent: type[_Health], status: int,
                                                  body: bytes) -> None:
    agent.status, agent.body = status, body
    env = make_env(tmp_path, ON_TRIAL)
    result = confirm(tmp_path, env, agent.url, timeout=2)  # type: ignore[attr-defined]
    assert result.returncode == 1
    assert "slot left unconfirmed" in result.stderr
    assert env.read() == ON_TRIAL


def test_an_unhealthy_but_ready_agent_confirms(tmp_path: Path, env: Env, agent: type[_Health]) -> None:
    """Hot, full and busy (/health 503): the release works, so the slot is kept."""
    env = make_env(tmp_path, ON_TRIAL)
    result = confirm(tmp_path, env, agent.url)  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stderr
    assert env.read()["upgrade_available"] == "0"


def _hooks(tmp_path: Path, **scripts: str) -> Path:
    directory = tmp_path / "ready.d"
    directory.mkdir()
    for name, body in scripts.items():
        hook = directory / name
        hook.write_text("#!/bin/sh\n" + body + "\n")
        hook.chmod(0o755)
    (directory / "not-executable").write_text("#!/bin/sh\nexit 1\n")
    return directory


def test_passing_hooks_confirm(tmp_path: Path, env: Env, agent: type[_Health]) -> None:
    env = make_env(tmp_path, ON_TRIAL)
    hooks = _hooks(tmp_path, **{"10-app": f"touch {tmp_path}/app-ran", "20-db": "exit 0"})
    result = confirm(tmp_path, env, agent.url, hooks=hooks)  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "app-ran").exists() and env.read()["upgrade_available"] == "0"


@pytest.mark.parametrize("body,reason", [("exit 3", "hook 20-app failed"), ("sleep 30", "ran over 1s")])
def test_a_failing_or_hanging_hook_leaves_the_trial_running(tmp_path: Path, env: Env, agent: type[_Health],
                                                             body: str, reason: str) -> None:
    env = make_env(tmp_path, ON_TRIAL)
    hooks = _hooks(tmp_path, **{"10-ok": "exit 0", "20-app": body})
    started = time.monotonic()
    result = confirm(tmp_path, env, agent.url, timeout=2, hooks=hooks, hook_timeout=1)  # type: ignore[attr-defined]
    assert result.returncode == 1 and reason in result.stderr, result.stderr
    assert time.monotonic() - started < 20, "a hanging hook held the confirmation"
    assert env.read() == ON_TRIAL


def test_no_agent_at_all_leaves_the_trial_running(tmp_path: Path, env: Env) -> None:
    env = make_env(tmp_path, ON_TRIAL)
    result = confirm(tmp_path, env, "http://127.0.0.1:9/health", timeout=2)
    assert result.returncode == 1 and env.read() == ON_TRIAL, result.stderr


def test_stale_install_marker_is_cleared_without_a_trial(tmp_path: Path, env: Env) -> None:
    """After a power cut mid-install: slot A never switched, swupdate's marker left behind."""
    env = make_env(tmp_path, {"rootpart": "2", "recovery_status": "in_progress", "ustate": "7"})
    result = confirm(tmp_path, env, "http://127.0.0.1:9/health", timeout=1)
    assert result.returncode == 0, result.stderr
    assert env.read() == {"rootpart": "2", "ustate": "3"}


def test_confirmed_slot_is_not_rewritten(tmp_path: Path, env: Env) -> None:
    env = make_env(tmp_path, {"rootpart": "2", "upgrade_available": "0", "bootcount": "0"})
    before = [(tmp_path / n).read_bytes() for n in ("uboot.env", "uboot-redund.env")]
    result = confirm(tmp_path, env, "http://127.0.0.1:9/health", timeout=1)
    assert result.returncode == 0 and "nothing to confirm" in result.stderr
    assert [(tmp_path / n).read_bytes() for n in ("uboot.env", "uboot-redund.env")] == before


def test_unreadable_environment_fails(tmp_path: Path, env: Env) -> None:
    env = make_env(tmp_path, ON_TRIAL)
    for name in ("uboot.env", "uboot-redund.env"):
        (tmp_path / name).write_bytes(b"\0" * ENV_SIZE)
    result = confirm(tmp_path, env, "http://127.0.0.1:9/health", timeout=1)
    assert result.returncode == 1 and "cannot read the U-Boot environment" in result.stderr


@pytest.mark.parametrize("name,value", [("PYVORIN_CONFIRM_TIMEOUT", "5m"), ("PYVORIN_CONFIRM_INTERVAL", "0"),
                                        ("PYVORIN_CONFIRM_BOOTLOADER", "grub")])
def test_bad_settings_are_refused(tmp_path: Path, env: Env, name: str, value: str) -> None:
    env = make_env(tmp_path, ON_TRIAL)
    runtime = tmp_path / "run"
    runtime.mkdir()
    variables = {**device_tools(), "RUNTIME_DIRECTORY": str(runtime),
                 "PYVORIN_CONFIRM_FW_ENV_CONFIG": str(env.config), name: value}
    result = subprocess.run(["/bin/sh", SCRIPT], env=variables, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 1 and name in result.stderr
    assert env.read() == ON_TRIAL


def test_unit_verifies_and_scores_under_budget(tmp_path: Path) -> None:
    require("systemd-analyze")
    root = Root(tmp_path / "root")
    for target in ("sysinit", "basic", "shutdown", "local-fs", "multi-user"):
        root.unit(f"{target}.target", f"[Unit]\nDescription=stub {target}\n")
    for unit in ("pyvorin-edge-agent.service", "swupdate.service"):
        root.unit(unit, "[Service]\nExecStart=/usr/bin/true\n")
    for binary in ("usr/libexec/pyvorin-confirm", "usr/bin/true"):
        path = root.path / binary
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    root.unit("pyvorin-confirm.service", (FILES / "pyvorin-confirm.service").read_text()
              .replace("@LIBEXECDIR@", "/usr/libexec"))
    verify(root, "pyvorin-confirm.service")
    exposure(root, "pyvorin-confirm.service", CONFIRM_THRESHOLD)


def test_watchdog_dropin_is_valid_system_conf(tmp_path: Path) -> None:
    require("systemd-analyze")
    dropins = tmp_path / "etc/systemd/system.conf.d"
    dropins.mkdir(parents=True)
    (dropins / "50-pyvorin-watchdog.conf").write_text((FILES / "50-pyvorin-watchdog.conf").read_text())
    shown = subprocess.run(["systemd-analyze", "cat-config", f"--root={tmp_path}", "systemd/system.conf"],
                           capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "RuntimeWatchdogSec=15s" in shown.stdout


def _expand(pattern: str) -> list[str]:
    """AppArmor's {a,b} alternation (one level, as our profiles use it)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    return [x for alt in match.group(1).split(",") for x in _expand(pattern[:match.start()] + alt + pattern[match.end():])]


def test_apparmor_profile_allows_every_program_the_script_runs() -> None:
    """The enforced profile lists each external program; one missing is an EACCES on the device."""
    profiles = ROOT / "meta-pyvorin/recipes-security/pyvorin-apparmor-profiles/files"
    text = "".join(p.read_text() for p in (profiles / "pyvorin-confirm", profiles / "abstractions/pyvorin-ubootenv",
                                           profiles / "abstractions/pyvorin-tegra-bootctrl"))
    executable = {path for line in text.splitlines() if re.search(r"\bm?r?ix,$", line.strip())
                  for path in _expand(line.split()[0])}
    script = SCRIPT.read_text()
    for program in ("fw_printenv", "fw_setenv", "curl", "wget", "date", "sleep", "nvbootctrl"):
        assert re.search(rf"\b{program}\b", script), program
        assert {f"/usr/bin/{program}", f"/usr/sbin/{program}"} & executable, f"{program} not executable under the profile"
    assert "owner /run/pyvorin-confirm/* rw," in text


def test_tegra_mode_waits_for_readiness_before_nvbootctrl(tmp_path: Path, agent: type[_Health]) -> None:
    """No Jetson here: with no nvbootctrl on PATH the call fails, but only after a ready answer."""
    require("curl")
    runtime = tmp_path / "run"
    runtime.mkdir()
    base = {"PATH": "/usr/bin:/bin", "RUNTIME_DIRECTORY": str(runtime), "PYVORIN_CONFIRM_BOOTLOADER": "tegra",
            "PYVORIN_CONFIRM_TIMEOUT": "1", "PYVORIN_CONFIRM_INTERVAL": "1"}
    healthy = subprocess.run(["/bin/sh", SCRIPT], env={**base, "PYVORIN_CONFIRM_URL": agent.url},  # type: ignore[attr-defined]
                             capture_output=True, text=True, timeout=30, check=False)
    assert healthy.returncode == 1 and "nvbootctrl verify failed" in healthy.stderr, healthy.stderr
    absent = subprocess.run(["/bin/sh", SCRIPT], env={**base, "PYVORIN_CONFIRM_URL": "http://127.0.0.1:9/health"},
                            capture_output=True, text=True, timeout=30, check=False)
    assert absent.returncode == 1 and "nvbootctrl" not in absent.stderr, absent.stderr


@pytest.mark.parametrize("script", [SCRIPT, ROOT / "meta-pyvorin/dynamic-layers/swupdate/recipes-core/images/files"
                                    / "tegra/pyvorin-tegra-slot.sh"], ids=lambda p: p.name)
def test_device_scripts_parse_as_posix_sh(script: Path) -> None:
    require("dash")
    result = subprocess.run(["dash", "-n", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


SETTING_VALUES = ["1", "2", "0", "-1", "abc", "", "1e3", "99999999999999999999", " 1", "1;reboot", "$(id)"]
READY_BODIES = [b'{"ready": true}', b'{"ready":true}', b'{"ready": false}', b'{"ready": "true"}', b"",
                b'{"status": "healthy"}', b"\x00\xff", b'{"ready": true' + b" " * 100_000 + b"}",
                b'{"ready": false, "x": "\\"ready\\": true"}']


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(timeout=st.sampled_from([v for v in SETTING_VALUES if v]), interval=st.sampled_from(SETTING_VALUES),
       hook_timeout=st.sampled_from(SETTING_VALUES), status=st.sampled_from([200, 503, 404, 500]),
       body=st.sampled_from(READY_BODIES), bootloader=st.sampled_from(["uboot", "grub", "", "uboot;reboot"]))
def test_hostile_settings_and_answers_end_bounded_and_never_confirm_wrongly(
        tmp_path_factory: pytest.TempPathFactory, env: Env, agent: type[_Health], timeout: str, interval: str,
        hook_timeout: str, status: int, body: bytes, bootloader: str) -> None:
    """Whatever the settings file and the agent say: exit 0 or 1 within the bound, every stderr line
    the script's own, and the trial ends only on a 200 that says ready under valid settings."""
    tmp = tmp_path_factory.mktemp("hostile")
    agent.status, agent.body = status, body
    env = make_env(tmp, ON_TRIAL)
    (tmp / "run").mkdir()
    variables = {**device_tools(), "RUNTIME_DIRECTORY": str(tmp / "run"), "PYVORIN_CONFIRM_URL": agent.url,  # type: ignore[attr-defined]
                 "PYVORIN_CONFIRM_TIMEOUT": timeout, "PYVORIN_CONFIRM_INTERVAL": interval,
                 "PYVORIN_CONFIRM_HOOK_TIMEOUT": hook_timeout, "PYVORIN_CONFIRM_BOOTLOADER": bootloader,
                 "PYVORIN_CONFIRM_FW_ENV_CONFIG": str(env.config), "PYVORIN_CONFIRM_HOOKS": str(tmp / "none")}
    result = subprocess.run(["/bin/sh", SCRIPT], env=variables, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode in (0, 1), result
    assert all(line.startswith("pyvorin-confirm: ") for line in result.stderr.splitlines()), result.stderr
    # An empty setting means its default (interval 5, hook timeout 30; timeout is never empty here).
    interval, hook_timeout = interval or "5", hook_timeout or "30"
    valid = (all(v.isdigit() and len(v) <= 5 for v in (timeout, interval, hook_timeout)) and int(interval) >= 1
             and bootloader in ("uboot", ""))
    says_ready = status == 200 and body in (b'{"ready": true}', b'{"ready":true}') or body.startswith(b'{"ready": true ')
    if result.returncode == 0:
        assert valid and says_ready, result.stderr
        assert env.read()["upgrade_available"] == "0"
    else:
        assert env.read() == ON_TRIAL
