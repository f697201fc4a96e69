"""A fleet, end to end, with every part real: goosebit behind nginx doing
mutual TLS (tests/fleet/), five devices each running the device's swupdate in
suricatta mode as the layer starts it (swupdate.sh, 50-pyvorin,
60-pyvorin-fleet, its swupdate.cfg), each with its own file-backed slots,
U-Boot environment and identity (pyvorin-identity, pyvorin fleet sign).

``pyvorin fleet rollout`` gives a release to a canary group of two first:
they download it through the proxy, install it into their other slot, ask
for the reboot; "booted" into the new slot, the layer's pyvorin-confirm
confirms it (ustate 2) and the daemon's next start reports the success,
which the server records. Only then does the release go to the rest of the
fleet, which had not moved. A release signed by another CA is refused by the
canaries, the server records their failure, and the rollout stops there."""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleet import server as fleet_server
from fleet.device import SLOT_A, SLOT_B, FleetDevice
from fleet.goosebit import Admin
from fleet.server import FleetServer
from pyvorin_devsim.swupdate_sandbox import swupdate_available

from helpers import require, unavailable, wait_until

pytestmark = [pytest.mark.swupdate, pytest.mark.usefixtures("device_swupdate")]

OLD, NEW = "2026.11.3000000", "2026.11.3000001"
FLEET_SIZE = 5
CANARIES = 2


class _Ready(http.server.BaseHTTPRequestHandler):
    """The edge agent's /ready, healthy: what pyvorin-confirm waits for."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ready": true}')

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
        pass


@dataclass(frozen=True)
class Stack:
    server: FleetServer
    admin: Admin
    ready_url: str


@pytest.fixture
def stack(cli, keys, tmp_path: Path) -> Iterator[Stack]:
    for reason in (fleet_server.missing(), swupdate_available()):
        if reason:
            unavailable(reason)
    require("openssl", "mkenvimage")
    cli("fleet", "server-cert", keys.directory, "--name", "127.0.0.1", "-o", tmp_path / "data/server", "--force",
        check=True)
    server = FleetServer(keys.directory, tmp_path / "data")
    ready = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    threading.Thread(target=ready.serve_forever, daemon=True).start()
    try:
        admin = server.start()
        yield Stack(server, admin, f"http://127.0.0.1:{ready.server_address[1]}/ready")
    finally:
        server.stop()
        ready.shutdown()
        ready.server_close()


def _wait(what: str, check: Callable[[], bool], explain: Callable[[], str], timeout: float = 120) -> None:
    wait_until(what, check, explain, timeout)


def _explain(stack: Stack, devices: list[FleetDevice]) -> Callable[[], str]:
    def text() -> str:
        parts = [f"--- server devices: {stack.admin.devices()}", stack.server.log_tail()]
        parts += [f"--- {d.device_id} env {d.env()}\n{d.log()[-3000:]}" for d in devices]
        return "\n".join(parts)
    return text


def _state(stack: Stack, device: FleetDevice) -> dict[str, Any]:
    return stack.admin.devices().get(device.device_id, {})


def _boot_the_new_slot(stack: Stack, device: FleetDevice) -> None:
    """The reboot the daemon asked for: U-Boot boots slot B on trial, pyvorin-confirm confirms it,
    the daemon starts again on slot B and reports the outcome."""
    device.power_off()
    env = device.env()
    assert (env.get("rootpart"), env.get("upgrade_available"), env.get("ustate")) == ("3", "1", "1"), env
    confirmed = device.confirm(stack.ready_url)
    assert confirmed.returncode == 0, confirmed.stderr
    env = device.env()
    assert (env.get("upgrade_available"), env.get("ustate")) == ("0", "2"), env
    device.boot("b", NEW)


def _fleet(stack: Stack, keys, tmp_path: Path, prefix: str) -> list[FleetDevice]:
    """Devices named per test: the session's fleet CA signs each ID once (its ledger refuses twice)."""
    return [FleetDevice(f"{prefix}{n:04d}", tmp_path / f"dev{n}", keys.ca, keys.directory / "fleet/ca.crt",
                        stack.server.url) for n in range(FLEET_SIZE)]


def _power_on(cli, keys, stack: Stack, devices: list[FleetDevice], explain: Callable[[], str]) -> None:
    for device in devices:
        device.enrol(cli, keys.directory)
        device.boot("a", OLD)
    # Each registers with its board, revision and release (suricatta's configData).
    _wait("every device registered with its hardware", lambda: all(
        _state(stack, d).get("hardware", {}).get("model") == d.board and _state(stack, d).get("sw_version") == OLD
        for d in devices), explain)


@contextlib.contextmanager
def _powered_fleet(cli, keys, stack: Stack, tmp_path: Path, prefix: str, size: int = FLEET_SIZE
                   ) -> Iterator[tuple[list[FleetDevice], list[FleetDevice], Callable[[], str]]]:
    """Enrolled devices running slot A, registered with the server: (canaries, the rest, explain)."""
    devices = _fleet(stack, keys, tmp_path, prefix)[:size]
    explain = _explain(stack, devices)
    try:
        _power_on(cli, keys, stack, devices, explain)
        yield devices[:CANARIES], devices[CANARIES:], explain
    finally:
        for device in devices:
            device.power_off()


def _release(cli, signer, make_spec, tmp_path: Path) -> tuple[Path, bytes]:
    spec = make_spec(slot_a=SLOT_A, slot_b=SLOT_B, version=NEW, image_size=256 * 1024, seed=7)
    release = tmp_path / f"pyvorin-{NEW}.swu"
    cli("bundle", spec, "-o", release, *signer.signing_args(), check=True)
    return release, (spec.parent / "rootfs.img").read_bytes()


def _rollout(cli, stack: Stack, release: Path, canaries: list[FleetDevice]) -> subprocess.Popen[str]:
    """``pyvorin fleet rollout`` as an operator runs it, against goosebit's admin API."""
    return subprocess.Popen(
        [sys.executable, "-m", "pyvorin", "fleet", "rollout", str(release), "--server", stack.admin.url,
         "--user", "admin", "--password-file", str(stack.server.data / "admin-password"),
         "--canary", ",".join(d.device_id for d in canaries), "--poll", "1", "--timeout", "120", "--watch"],
        env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_canary_rollout_reaches_the_fleet_over_mutual_tls(cli, keys, make_spec, stack: Stack,
                                                              tmp_path: Path) -> None:
    with _powered_fleet(cli, keys, stack, tmp_path, "rpi-good") as (canaries, rest, explain):
        release, image = _release(cli, keys, make_spec, tmp_path)
        tool = _rollout(cli, stack, release, canaries)
        _wait("the canaries installed the release and asked for a reboot",
              lambda: all(d.reboots() == 1 for d in canaries), explain)
        for device in canaries:
            assert device.sandbox.slot_bytes(device.sandbox.slot_b)[: len(image)] == image
            assert device.sandbox.untouched(device.sandbox.slot_a)
            # The rest of the fleet has not moved while the canaries are tried.
            assert all(d.reboots() == 0 and d.env().get("rootpart") == "2" for d in rest)
            _boot_the_new_slot(stack, device)
        _wait("the canaries reported success", lambda: all(
            _state(stack, d).get("last_state") == "Finished" and _state(stack, d).get("sw_version") == NEW
            for d in canaries), explain)
        _wait("suricatta cleared ustate after reporting", lambda: all(d.env().get("ustate") == "0" for d in canaries),
              explain)
        _wait("the rest installed the release", lambda: all(d.reboots() == 1 for d in rest), explain)
        for device in rest:
            _boot_the_new_slot(stack, device)
        out, err = tool.communicate(timeout=180)
        assert tool.returncode == 0, out + err + explain()
        assert f"canaries: {CANARIES} of {CANARIES} succeeded" in out, out
        assert f"fleet: {FLEET_SIZE - CANARIES} of {FLEET_SIZE - CANARIES} succeeded" in out, out
        assert all(_state(stack, d).get("sw_version") == NEW for d in canaries + rest)


def test_canaries_refuse_a_foreign_release_and_the_rollout_stops(cli, keys, foreign_keys, make_spec, stack: Stack,
                                                                  tmp_path: Path) -> None:
    with _powered_fleet(cli, keys, stack, tmp_path, "rpi-foreign") as (canaries, rest, explain):
        release, _ = _release(cli, foreign_keys, make_spec, tmp_path)
        tool = _rollout(cli, stack, release, canaries)
        out, err = tool.communicate(timeout=180)
        assert tool.returncode == 1, out + err + explain()
        # The first failure is past the threshold (none allowed): the rollout is paused at once.
        assert "canaries: 0 succeeded" in err and "the fleet left as it is" in err, err
        failed = [d for d in canaries if _state(stack, d).get("last_state") == "Error"]
        assert failed, explain()
        for device in failed:
            assert "Signature verification failed" in device.log(), device.log()[-3000:]
        for device in canaries:
            assert device.reboots() == 0 and device.sandbox.untouched(device.sandbox.slot_b)
            assert device.env().get("rootpart") == "2"
        # The fleet never got it.
        time.sleep(5)
        for device in rest:
            assert device.reboots() == 0 and device.sandbox.untouched(device.sandbox.slot_b)
            assert _state(stack, device).get("last_state") != "Error"
        assert not [r for r in stack.admin.rollouts() if r["feed"] == "default"]


def test_a_canary_that_rolls_back_is_reported_as_a_failure_and_stops_the_rollout(
        cli, keys, make_spec, stack: Stack, tmp_path: Path) -> None:
    """The release installs, but the new slot never gets ready: U-Boot's boot counter returns to
    slot A and the boot script sets ustate 3 (the values tests/test_rollback.py sees the real boot
    script write); the daemon, back on the old release, reports the failure."""
    with _powered_fleet(cli, keys, stack, tmp_path, "rpi-rollback", CANARIES + 1) as (canaries, rest, explain):
        release, _ = _release(cli, keys, make_spec, tmp_path)
        tool = _rollout(cli, stack, release, canaries)
        _wait("the canaries installed the release", lambda: all(d.reboots() == 1 for d in canaries), explain)
        first = canaries[0]
        first.power_off()
        assert first.env().get("ustate") == "1"
        # Slot B on trial never confirmed: after bootlimit boots, altbootcmd -> the boot script.
        for name, value in (("rootpart", "2"), ("upgrade_available", "0"), ("bootcount", "0"), ("ustate", "3")):
            first.sandbox.setenv(name, value)
        first.boot("a", OLD)
        out, err = tool.communicate(timeout=180)
        assert tool.returncode == 1 and "canaries: 0 succeeded, 1 failed" in err, out + err + explain()
        assert _state(stack, first).get("last_state") == "Error", explain()
        assert _state(stack, first).get("sw_version") == OLD
        _wait("suricatta cleared ustate after reporting the failure", lambda: first.env().get("ustate") == "0",
              explain)
        for device in rest:
            assert device.reboots() == 0 and device.sandbox.untouched(device.sandbox.slot_b)


def test_a_release_for_other_hardware_is_refused_before_the_server_gets_it(cli, keys, make_spec, stack: Stack,
                                                                            tmp_path: Path) -> None:
    """The server would offer a Pi 5 release to no Pi 4 (goosebit matches the board and revision
    each device reports, as the device's SWUpdate matches them against /etc/hwrevision): the
    rollout tool says so before uploading, instead of waiting for canaries that never answer."""
    with _powered_fleet(cli, keys, stack, tmp_path, "rpi-other", CANARIES) as (canaries, _, explain):
        spec = make_spec(slot_a=SLOT_A, slot_b=SLOT_B, version=NEW, machine="raspberrypi5", seed=9)
        release = tmp_path / "pi5.swu"
        cli("bundle", spec, "-o", release, *keys.signing_args(), check=True)
        tool = _rollout(cli, stack, release, canaries)
        out, err = tool.communicate(timeout=120)
        assert tool.returncode == 2, out + err + explain()
        assert err.strip().splitlines()[-1].endswith(
            f"canary {canaries[0].device_id} is raspberrypi4-64 1.0, the release is for raspberrypi5 1.0: "
            "nothing uploaded"), err
        assert not stack.admin.rollouts()
        for device in canaries:
            assert device.reboots() == 0 and device.sandbox.untouched(device.sandbox.slot_b)
