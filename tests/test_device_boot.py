"""The whole device, booted: U-Boot with the layer's boot script, the Debian
arm64 kernel, systemd as PID 1, the root read-only and /etc an overlay on /data
(oe-core's overlayfs-etc preinit), AppArmor enforcing, and the layer's runtime
content installed by its recipes' own install code (tests/qemu/system.py).

First boot, checked from inside (the administrator's SSH and sudo) and from
the host, ends with a full update of that device; a second device takes a
delta update. Each is pushed to the running daemon through its IPC socket,
installed by the daemon under its hardened unit and profile, booted by U-Boot
and confirmed by pyvorin-confirm only once the real agent is ready. Seconds
from power-on to a ready agent and for each update end to end are printed
(docs/device-test.md has the measured numbers).

A failure explains itself: the serial console's tail and the failed units'
journal are in the assertion message.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet import server as fleet_server
from fleet.goosebit import Admin
from fleet.server import FleetServer
from qemu import booted, bundles, images, system
from qemu.booted import Booted, DeviceKeys, Slots
from qemu.device import Firmware, firmware_for
from qemu.errors import HarnessError

import layer_gate
from helpers import require, unavailable, wait_until

OLD = "2026.11.100"
NEW = "2026.11.101"
#: Cold TCG boots of systemd with Python services take a while; a hung boot must not hang CI.
BOOT_TIMEOUT = 420.0
#: Units and the state the layer designs them to be in after a healthy first boot.
DESIGNED = {
    "pyvorin-edge-agent.service": "active",
    "pyvorin-confirm.service": "active",      # oneshot, RemainAfterExit: not on trial, nothing to confirm
    "pyvorin-firewall.service": "active",
    "pyvorin-journal-storage.service": "active",
    "pyvorin-identity.service": "active",
    "pyvorin-edge-backup.timer": "active",
    "swupdate.socket": "active",
    "swupdate.service": "active",
    "apparmor.service": "active",
    "auditd.service": "active",
    "systemd-networkd.service": "active",
    "tmp.mount": "active",
    "var-volatile.mount": "active",
    # Debian's openssh-server stands in for openssh-sshd: its sshd runs as ssh.service
    # (oe-core's as sshd.socket); the configuration is the layer's drop-in either way.
    "ssh.service": "active",
}
#: The layer's confining profiles, by name, as /sys/kernel/security/apparmor/profiles lists them.
PROFILES = ("swupdate (enforce)", "pyvorin-confirm (enforce)", "pyv-edge-agent (enforce)")
#: AppArmor denials of this boot, from the kernel and the audit daemon only (the journal also holds
#: sudo's record of this very command line).
DENIALS = ("journalctl -b --no-pager -o cat _TRANSPORT=kernel _TRANSPORT=audit | grep -F 'apparmor=\"DENIED\"'; "
           "grep -h '^type=AVC.*apparmor=\"DENIED\"' /var/log/audit/audit.log; true")

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def parts() -> Firmware:
    problem = system.binfmt_problem()
    if problem:
        unavailable(problem)
    return firmware_for("the booted device's tests")


@pytest.fixture(scope="module")
def exported() -> Path:
    missing = layer_gate.missing_prerequisites()
    if missing:
        unavailable(f"the booted device installs what the layer gate exports; it needs {', '.join(missing)}")
    run = layer_gate.result("raspberrypi4-64")
    if run.install is None:
        pytest.fail("the layer gate exported no install for raspberrypi4-64 (scripts/layer-gate-checks.sh)")
    return run.install


@pytest.fixture(scope="module")
def device_keys() -> DeviceKeys:
    return booted.device_keys()


@pytest.fixture(scope="module")
def slots(exported: Path, device_keys: DeviceKeys, parts: Firmware) -> Slots:
    made = booted.slot_images(exported, device_keys, parts.kernel, OLD, NEW)
    built = f"built in {made.build_seconds:.0f}s" if made.build_seconds else "cached"
    print(f"slot images: {built}")
    return made


@pytest.fixture(scope="module")
def first_boot(tmp_path_factory: pytest.TempPathFactory, parts: Firmware, slots: Slots) -> Iterator[Booted]:
    """One fresh device for the first-boot checks (each boot costs half a minute of TCG)."""
    with booted.booted(tmp_path_factory.mktemp("first-boot"), parts, slots.old, layer_gate.admin_key()) as running:
        login = _up(running)
        _configure_board(running)
        ready = _agent_ready_seconds(running)
        print(f"first boot: power-on to SSH login {login:.0f}s; agent ready {ready:.0f}s after power-on")
        yield running


@pytest.fixture
def device(tmp_path: Path, parts: Firmware, slots: Slots) -> Iterator[Booted]:
    with booted.booted(tmp_path, parts, slots.old, layer_gate.admin_key()) as running:
        _up(running)
        _configure_board(running)
        yield running


#: The QEMU board has no thermal sensor: its agent configuration says so, as an integrator's
#: would for such a board, written through the /etc overlay (it persists on /data).
NO_THERMAL_ZONE = ("sed -i 's|^thermal_zone = .*|thermal_zone = \"\"|' /etc/pyvorin-edge/config.toml && "
                   "systemctl restart pyvorin-edge-agent.service")


def _up(dev: Booted) -> float:
    """Seconds from power-on to an administrator login; then waits for the boot to settle."""
    seconds = dev.wait_for_ssh(BOOT_TIMEOUT)
    dev.ssh("systemctl is-system-running --wait", timeout=BOOT_TIMEOUT)
    return seconds


def _configure_board(dev: Booted) -> None:
    dev.sudo(NO_THERMAL_ZONE)


def _agent_ready_seconds(dev: Booted) -> float:
    """Seconds from power-on until the agent's /ready answered 200 inside the guest."""
    assert dev.machine is not None
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        code = dev.ssh("curl -q -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/ready", timeout=30).stdout
        if code.strip() == "200":
            return dev.machine.elapsed()
        time.sleep(1)
    raise AssertionError(f"the agent never became ready\n{dev.explain()}")


def test_first_boot_runs_every_unit_as_designed(first_boot: Booted) -> None:
    state = first_boot.ssh("systemctl is-system-running").stdout.strip()
    failed = first_boot.ssh("systemctl --failed --no-legend --plain").stdout.strip()
    assert state == "running" and not failed, f"state {state}, failed:\n{failed}\n{first_boot.explain()}"
    wrong = {unit: actual for unit, designed in DESIGNED.items()
             if (actual := first_boot.ssh(f"systemctl is-active {unit}").stdout.strip()) != designed}
    assert not wrong, f"units not in their designed state: {wrong}\n{first_boot.explain()}"


def test_apparmor_enforces_the_layer_profiles_and_denies_nothing(first_boot: Booted) -> None:
    assert first_boot.sudo("cat /sys/module/apparmor/parameters/enabled").strip() == "Y"
    profiles = first_boot.sudo("cat /sys/kernel/security/apparmor/profiles")
    assert all(profile in profiles for profile in PROFILES), profiles
    confined = first_boot.sudo("cat /proc/$(systemctl show -P MainPID pyvorin-edge-agent)/attr/current")
    assert confined.strip() == "pyv-edge-agent (enforce)"
    denied = first_boot.sudo(DENIALS)
    assert not denied.strip(), f"AppArmor denials:\n{denied}"


def test_root_is_read_only_and_etc_an_overlay_on_data(first_boot: Booted) -> None:
    options = first_boot.ssh("findmnt -n -o OPTIONS /").stdout.strip()
    assert re.search(r"(^|,)ro(,|$)", options), options
    assert first_boot.ssh("sudo -n touch /usr/pyvorin-probe").returncode != 0
    assert first_boot.ssh("findmnt -n -o FSTYPE,SOURCE /etc").stdout.split() == ["overlay", "/data/overlay-etc/upper"]
    assert first_boot.ssh("findmnt -n -o SOURCE /boot").stdout.strip() == "/dev/vda1"
    assert first_boot.ssh("findmnt -n -o FSTYPE /tmp").stdout.strip() == "tmpfs"


def test_the_agent_is_healthy_on_loopback_and_unreachable_from_outside(first_boot: Booted) -> None:
    health = first_boot.ssh("curl -q -s -w ' %{http_code}' http://127.0.0.1:8080/health").stdout
    assert health.rstrip().endswith("200") and '"status": "healthy"' in health, health
    # The host's forwarded port reaches the guest's NIC address, where nothing of the agent listens.
    with pytest.raises((urllib.error.URLError, ConnectionError, TimeoutError)):
        urllib.request.urlopen(f"http://127.0.0.1:{first_boot.agent_port}/health", timeout=10)


def test_ssh_takes_keys_only_and_no_root(first_boot: Booted) -> None:
    password = first_boot.ssh("true", options=("-o", "PubkeyAuthentication=no",
                                               "-o", "PreferredAuthentications=password,keyboard-interactive"))
    assert password.returncode == 255 and "Permission denied (publickey)" in password.stderr, password.stderr
    root = first_boot.ssh("true", user="root")
    assert root.returncode == 255 and "Permission denied" in root.stderr, root.stderr


def test_the_go_live_checklist_passes(first_boot: Booted) -> None:
    # A fresh device has no nightly backup yet: take one, as the checklist itself says.
    first_boot.sudo("systemctl start pyvorin-edge-backup.service", timeout=180)
    verify = first_boot.ssh("sudo -n pyvorin-verify-deployment", timeout=180)
    assert verify.returncode == 0, f"{verify.stdout}{verify.stderr}"


@pytest.fixture(scope="module")
def fleet_keys(device_keys: DeviceKeys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test fleet CA (and its CRL), copied: signing records a ledger, which must not grow in the cache."""
    keys = tmp_path_factory.mktemp("fleet-keys")
    shutil.copytree(device_keys.directory / "fleet", keys / "fleet")
    return keys


def _suricatta_args(dev: Booted) -> str:
    return dev.ssh("ps -o args= -C swupdate").stdout


def test_the_device_makes_its_identity_and_takes_only_its_own_certificate(
        first_boot: Booted, fleet_keys: Path, cli: Cli, tmp_path: Path) -> None:
    listing = first_boot.sudo("stat -c '%a %U %n' /data/identity /data/identity/device.key").split("\n")
    assert listing[:2] == ["755 root /data/identity", "600 root /data/identity/device.key"], listing
    assert first_boot.sudo("cat /data/identity/device-id").strip() == booted.DEVICE_ID
    csr = tmp_path / "device.csr"
    csr.write_text(first_boot.ssh("cat /data/identity/device.csr").stdout)
    # Built for a rollout server, but not enrolled: the daemon takes local updates only.
    assert "-u " not in _suricatta_args(first_boot)
    cli("fleet", "sign", fleet_keys, csr, "-o", tmp_path / "device.crt", check=True)
    # A certificate from another fleet CA, for the very same request, is refused.
    other = tmp_path / "other"
    cli("keys", "init", other, "--only", "fleet", check=True)
    cli("fleet", "sign", other, csr, "-o", tmp_path / "foreign.crt", check=True)
    for name in ("device.crt", "foreign.crt"):
        assert first_boot.ssh(f"cat > /tmp/{name}", input_file=tmp_path / name).returncode == 0
    refused = first_boot.ssh("sudo -n pyvorin-identity install /tmp/foreign.crt")
    assert refused.returncode != 0 and "does not verify against the fleet CA" in refused.stderr, refused.stderr
    installed = first_boot.ssh("sudo -n pyvorin-identity install /tmp/device.crt")
    assert installed.returncode == 0, installed.stderr
    # The first enrolment restarts the daemon, which now polls the server as the device.
    assert "it polls the rollout server from now on" in installed.stdout, installed.stdout + installed.stderr
    polling = _suricatta_args(first_boot)
    assert f"-u https://{booted.FLEET_HOST} -t DEFAULT -i {booted.DEVICE_ID}" in polling, polling
    shown = first_boot.sudo("pyvorin-identity show")
    assert f"device: {booted.DEVICE_ID}" in shown and "certificate: /data/identity/device.crt" in shown, shown
    # The next boot's check accepts what was installed.
    first_boot.sudo("systemctl restart pyvorin-identity.service")
    assert first_boot.ssh("systemctl is-active pyvorin-identity.service").stdout.strip() == "active"


@pytest.fixture
def rollout_server(first_boot: Booted, fleet_keys: Path, cli: Cli, tmp_path: Path) -> Iterator[tuple[FleetServer, Admin]]:
    """``pyvorin fleet serve`` on the host, where the image's PYVORIN_FLEET_URL leads the guest."""
    reason = fleet_server.missing()
    if reason:
        unavailable(reason)
    require("socat")  # QEMU's forward to the server runs one per connection (tests/qemu/vm.py)
    cli("fleet", "server-cert", fleet_keys, "--name", booted.FLEET_HOST, "-o", tmp_path / "data/server", check=True)
    server = FleetServer(fleet_keys, tmp_path / "data", poll_time="00:00:05", port=first_boot.fleet_port)
    try:
        yield server, server.start()
    finally:
        server.stop()


def test_the_rollout_server_updates_the_device_which_keeps_identity_and_journal(
        first_boot: Booted, rollout_server: tuple[FleetServer, Admin], full_bundle: Path, slots: Slots,
        cli: Cli) -> None:
    """Last of the first-boot checks: the enrolled device, polling the rollout server over mutual
    TLS, is given a full update by ``pyvorin fleet rollout``; suricatta downloads and installs it,
    reboots the device into slot B, pyvorin-confirm confirms it and suricatta reports success. The
    new slot boots with the same /data: machine-id (through the /etc overlay), the fleet identity
    and the journal must come along."""
    server, admin = rollout_server
    machine_id = first_boot.ssh("cat /etc/machine-id").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id), machine_id
    assert first_boot.sudo("readlink -f /var/log/journal").strip() == "/data/log/journal"
    identity = first_boot.sudo("pyvorin-identity show")
    assert "certificate: /data/identity/device.crt" in identity, "enrolled by the identity test"

    def explain() -> str:
        return (f"--- server: {admin.devices()}\n{server.log_tail()}\n--- device's swupdate:\n"
                f"{first_boot.ssh('sudo -n journalctl -b -u swupdate --no-pager -n 40 -o cat').stdout}"
                f"\n{first_boot.explain()}")

    # The site's name for the server; the daemon, enrolled before there was one, starts polling anew
    # (the layer's poll interval is five minutes until the server gives its own).
    first_boot.sudo(f"echo '{booted.FLEET_ADDRESS} {booted.FLEET_HOST}' >> /etc/hosts && "
                    "systemctl restart swupdate.service")
    wait_until("the device registered with its board and release", lambda: (
        admin.devices().get(booted.DEVICE_ID, {}).get("hardware", {}).get("model") == booted.BOARD
        and admin.devices()[booted.DEVICE_ID].get("sw_version") == slots.old_version), explain, 180, interval=3)
    assert first_boot.ssh("findmnt -n -o SOURCE /").stdout.strip() == "/dev/vda2"
    started = time.monotonic()
    tool = subprocess.Popen(
        [sys.executable, "-m", "pyvorin", "fleet", "rollout", str(full_bundle), "--server", admin.url, "--user", "admin",
         "--password-file", str(server.data / "admin-password"), "--canary", booted.DEVICE_ID,
         "--poll", "5", "--timeout", "900"],
        env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Download, install, then the daemon's own reboot (-p) into slot B.
        wait_until("the device rebooted into slot B by itself", lambda: _root(first_boot) == "/dev/vda3", explain,
                   900, interval=3)
        installed = time.monotonic() - started
        _up(first_boot)
        out, err = tool.communicate(timeout=300)
    finally:
        if tool.poll() is None:
            tool.kill()
    assert tool.returncode == 0 and "canaries: 1 of 1 succeeded" in out, out + err + explain()
    state = admin.devices()[booted.DEVICE_ID]
    assert (state.get("last_state"), state.get("sw_version")) == ("Finished", slots.new_version), explain()
    print(f"full update from the rollout server ({full_bundle.stat().st_size} bytes): assigned to rebooted "
          f"{installed:.0f}s, to confirmed and reported {time.monotonic() - started:.0f}s")
    _booted_the_new_release(first_boot, slots)
    wait_until("suricatta cleared ustate after reporting", lambda: _env(first_boot).get("ustate") == "0", explain,
               60, interval=3)
    assert first_boot.ssh("cat /etc/machine-id").stdout.strip() == machine_id
    assert first_boot.sudo("pyvorin-identity show") == identity
    previous = first_boot.sudo("journalctl -b -1 -q --no-pager -n 1 -o cat")
    assert previous.strip(), first_boot.sudo("journalctl --list-boots --no-pager; ls -lR /data/log")


def _root(dev: Booted) -> str:
    """The running root's device, or "" while the device does not answer (installing, rebooting)."""
    try:
        answer = dev.ssh("findmnt -n -o SOURCE /", timeout=20)
    except HarnessError:
        return ""
    return answer.stdout.strip() if answer.returncode == 0 else ""


def _release(work: Path, artifact: Path, version: str, keys: DeviceKeys, cli: Cli) -> Path:
    spec = bundles.spec(work, version, artifact, board=booted.BOARD, hw_revision=booted.HW_REVISION)
    cli("bundle", spec, "-o", work / "update.swu", *keys.signing_args(), check=True)
    return work / "update.swu"


def _delta_bundle(work: Path, old: Path, new: Path, version: str, keys: DeviceKeys, cli: Cli) -> Path:
    started = time.monotonic()
    cli("delta", old, new, "-o", work / "rootfs.pyvd", "--no-report", check=True)
    bundle = _release(work, work / "rootfs.pyvd", version, keys, cli)
    print(f"delta bundle {bundle.stat().st_size} bytes, made in {time.monotonic() - started:.0f}s")
    return bundle


@pytest.fixture(scope="module")
def delta_bundle(slots: Slots, device_keys: DeviceKeys, cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _delta_bundle(tmp_path_factory.mktemp("delta"), slots.old, slots.new, slots.new_version, device_keys, cli)


@pytest.fixture(scope="module")
def full_bundle(slots: Slots, device_keys: DeviceKeys, cli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("full")
    started = time.monotonic()
    gz = images.gzip_file(slots.new, work / "rootfs.ext4.gz")
    bundle = _release(work, gz, slots.new_version, device_keys, cli)
    print(f"full bundle {bundle.stat().st_size} bytes, made in {time.monotonic() - started:.0f}s")
    return bundle


def _push(dev: Booted, bundle: Path) -> tuple[int, str]:
    """The bundle into the running daemon's IPC socket with swupdate-client, as an operator does."""
    copied = dev.ssh("cat > /tmp/update.swu", input_file=bundle, timeout=300)
    assert copied.returncode == 0, copied.stderr
    done = dev.ssh("sudo -n swupdate-client /tmp/update.swu; status=$?; rm -f /tmp/update.swu; exit $status",
                   timeout=600)
    return done.returncode, done.stdout + done.stderr


def _env(dev: Booted) -> dict[str, str]:
    text = dev.sudo("fw_printenv")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _update(dev: Booted, bundle: Path, kind: str, slots: Slots) -> None:
    """Slot A to slot B: push, installed by the daemon, reboot, confirmed by the real agent's
    readiness; prints the seconds of each step."""
    assert dev.ssh("findmnt -n -o SOURCE /").stdout.strip() == "/dev/vda2"
    started = time.monotonic()
    code, output = _push(dev, bundle)
    installed = time.monotonic() - started
    assert code == 0, f"swupdate-client exited {code}:\n{output}\n{dev.explain()}"
    env = _env(dev)
    assert (env.get("rootpart"), env.get("upgrade_available")) == ("3", "1"), env
    rebooted = time.monotonic()
    dev.reboot()
    _up(dev)
    print(f"{kind} update ({bundle.stat().st_size} bytes): copy + install {installed:.0f}s, reboot to confirmed "
          f"{time.monotonic() - rebooted:.0f}s, install + reboot + confirm {time.monotonic() - started:.0f}s")
    _booted_the_new_release(dev, slots)


def _booted_the_new_release(dev: Booted, slots: Slots) -> None:
    """Slot B runs the new release, confirmed; nothing was denied on the way."""
    confirmed = dev.ssh("systemctl is-active pyvorin-confirm.service").stdout.strip()
    assert confirmed == "active", dev.explain()
    assert dev.ssh("findmnt -n -o SOURCE /").stdout.strip() == "/dev/vda3"
    assert f"IMAGE_VERSION={slots.new_version}" in dev.ssh("cat /usr/lib/os-release").stdout
    env = _env(dev)
    assert (env.get("rootpart"), env.get("upgrade_available"), env.get("bootcount")) == ("3", "0", "0"), env
    denied = dev.sudo(DENIALS)
    assert not denied.strip(), f"AppArmor denials:\n{denied}"


def test_a_delta_update_through_the_daemon_is_booted_and_confirmed(device: Booted, delta_bundle: Path,
                                                                   slots: Slots, tmp_path: Path) -> None:
    before = _env(device)
    slot_b = device.sudo("sha256sum /dev/vda3").split()[0]
    # First a tampered copy: the daemon refuses it, nothing changes.
    data = bytearray(delta_bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = tmp_path / "tampered.swu"
    tampered.write_bytes(bytes(data))
    code, output = _push(device, tampered)
    assert code != 0, output
    assert _env(device) == before
    assert device.sudo("sha256sum /dev/vda3").split()[0] == slot_b
    # Then the real one.
    _update(device, delta_bundle, "delta", slots)


#: The board's confirm timeout for the rollback scenario, set in /etc/default/pyvorin-confirm on the
#: overlay (the layer's default, 300 s, would make three failed boots take a quarter of an hour).
ROLLBACK_CONFIRM_TIMEOUT = 20


@pytest.mark.slow
def test_a_release_whose_agent_never_gets_ready_rolls_back_within_bootlimit(
        device: Booted, slots: Slots, device_keys: DeviceKeys, cli: Cli, tmp_path: Path) -> None:
    assert slots.broken is not None
    device.sudo(f"sed -i 's/^PYVORIN_CONFIRM_TIMEOUT=.*/PYVORIN_CONFIRM_TIMEOUT={ROLLBACK_CONFIRM_TIMEOUT}/' "
                "/etc/default/pyvorin-confirm")
    bundle = _delta_bundle(tmp_path, slots.old, slots.broken, slots.new_version, device_keys, cli)
    started = time.monotonic()
    code, output = _push(device, bundle)
    assert code == 0, output
    device.reboot()
    # Slot B boots, its agent never gets ready, pyvorin-confirm gives up and reboots; after
    # bootlimit boots U-Boot's altbootcmd goes back to slot A.
    wait_until("back on slot A", lambda: _root(device) == "/dev/vda2", lambda: device.console_tail(120), 900,
               interval=5)
    _up(device)
    print(f"rollback from a release whose agent never gets ready: {time.monotonic() - started:.0f}s")
    assert device.machine is not None
    log = device.machine.text()
    assert "pyvorin: slot 3 failed" in log and "rolling back" in log, device.console_tail(120)
    assert f"IMAGE_VERSION={slots.old_version}" in device.ssh("cat /usr/lib/os-release").stdout
    env = _env(device)
    assert (env.get("rootpart"), env.get("upgrade_available")) == ("2", "0"), env
    assert not device.sudo(DENIALS).strip()
