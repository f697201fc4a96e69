"""pyvorin-identity on the host: the layer's script with the openssl command
line the device runs, a device tree's serial-number file as the firmware
writes it, and the fleet CA from ``pyvorin keys init``; its unit judged by
systemd-analyze like the other hardened units. The booted device
(test_device_boot.py) runs the same script under its unit at first boot."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from test_hardening_systemd import Root, exposure, verify

from helpers import ROOT, require

FILES = ROOT / "meta-pyvorin/recipes-pyvorin/pyvorin-identity/files"
SCRIPT = FILES / "pyvorin-identity"
IDENTITY_THRESHOLD = 20
SERIAL = "10000000c0ffee42"


@pytest.fixture
def board(tmp_path: Path) -> dict[str, str]:
    """A Raspberry Pi's environment for the script: /data and the device tree under tmp_path."""
    require("openssl")
    serial = tmp_path / "serial-number"
    serial.write_bytes(SERIAL.encode() + b"\0")  # the device tree's string, NUL-terminated
    return {"PATH": os.environ["PATH"], "PYVORIN_IDENTITY_DIR": str(tmp_path / "data/identity"),
            "PYVORIN_IDENTITY_SERIAL_FILE": str(serial), "PYVORIN_IDENTITY_PREFIX": "rpi-",
            "PYVORIN_FLEET_CA": str(tmp_path / "keys/fleet/ca.crt")}


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_boot_makes_a_private_key_and_a_request_named_by_the_serial(board: dict[str, str]) -> None:
    done = _run(board, "ensure")
    assert done.returncode == 0, done.stderr
    directory = Path(board["PYVORIN_IDENTITY_DIR"])
    assert _mode(directory) == 0o755 and _mode(directory / "device.key") == 0o600
    assert (directory / "device-id").read_text().strip() == f"rpi-{SERIAL}"
    csr = x509.load_pem_x509_csr((directory / "device.csr").read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"rpi-{SERIAL}"
    assert "not enrolled yet" in done.stdout
    # The next boot keeps the key and the request as they are.
    key, request = (directory / "device.key").read_bytes(), (directory / "device.csr").read_bytes()
    again = _run(board, "ensure")
    assert again.returncode == 0, again.stderr
    assert (directory / "device.key").read_bytes() == key and (directory / "device.csr").read_bytes() == request
    assert not list(directory.glob("*.??????")), "a temporary file was left behind"


def test_enrolment_end_to_end_with_the_release_tool(board: dict[str, str], cli, tmp_path: Path) -> None:
    cli("keys", "init", tmp_path / "keys", "--only", "fleet", check=True)
    assert _run(board, "ensure").returncode == 0
    directory = Path(board["PYVORIN_IDENTITY_DIR"])
    cli("fleet", "sign", tmp_path / "keys", directory / "device.csr", "-o", tmp_path / "device.crt", check=True)
    installed = _run(board, "install", str(tmp_path / "device.crt"))
    assert installed.returncode == 0, installed.stderr
    assert _run(board, "ensure").stdout.count("enrolled (notAfter=") == 1
    shown = _run(board, "show").stdout
    assert f"device: rpi-{SERIAL}" in shown and "certificate: " in shown and "serial=" in shown


def _service_manager(tmp_path: Path, board: dict[str, str], restart_exit: int = 0) -> Path:
    """systemctl as the device's systemd answers it (the host runs none): swupdate is active, a
    restart exits ``restart_exit``; each call is recorded. The booted device runs the real one."""
    stub = tmp_path / "bin/systemctl"
    stub.parent.mkdir()
    calls = tmp_path / "systemctl-calls"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n'
                    f'case $1 in is-active) exit 0 ;; restart) exit {restart_exit} ;; esac\nexit 1\n')
    stub.chmod(0o755)
    board["PATH"] = f"{stub.parent}:{board['PATH']}"
    fleet_conf = tmp_path / "60-pyvorin-fleet"
    fleet_conf.write_text("# as the swupdate bbappend installs it with PYVORIN_FLEET_URL\n")
    board["PYVORIN_FLEET_CONF"] = str(fleet_conf)
    return calls


def test_the_first_enrolment_starts_polling_and_a_renewal_leaves_the_daemon_alone(
        board: dict[str, str], cli, tmp_path: Path) -> None:
    calls = _service_manager(tmp_path, board)
    cli("keys", "init", tmp_path / "keys", "--only", "fleet", check=True)
    assert _run(board, "ensure").returncode == 0
    directory = Path(board["PYVORIN_IDENTITY_DIR"])
    cli("fleet", "sign", tmp_path / "keys", directory / "device.csr", "-o", tmp_path / "device.crt", check=True)
    first = _run(board, "install", str(tmp_path / "device.crt"))
    assert first.returncode == 0 and "it polls the rollout server from now on" in first.stdout, first.stderr
    assert calls.read_text().splitlines() == ["is-active --quiet swupdate.service", "restart swupdate.service"]
    # A renewed certificate is read at the next connection: an install in progress goes on.
    cli("fleet", "sign", tmp_path / "keys", directory / "device.csr", "-o", tmp_path / "renewed.crt", "--replace",
        check=True)
    calls.unlink()
    renewed = _run(board, "install", str(tmp_path / "renewed.crt"))
    assert renewed.returncode == 0, renewed.stderr
    assert not calls.exists() and "restarted" not in renewed.stdout
    assert (directory / "device.crt").read_bytes() == (tmp_path / "renewed.crt").read_bytes()


@pytest.mark.parametrize("fleet", [True, False], ids=["restart-fails", "no-fleet-url"])
def test_enrolment_without_a_daemon_to_restart_still_installs(board: dict[str, str], cli, tmp_path: Path,
                                                              fleet: bool) -> None:
    calls = _service_manager(tmp_path, board, restart_exit=1)
    if not fleet:
        Path(board["PYVORIN_FLEET_CONF"]).unlink()
    cli("keys", "init", tmp_path / "keys", "--only", "fleet", check=True)
    assert _run(board, "ensure").returncode == 0
    directory = Path(board["PYVORIN_IDENTITY_DIR"])
    cli("fleet", "sign", tmp_path / "keys", directory / "device.csr", "-o", tmp_path / "device.crt", check=True)
    done = _run(board, "install", str(tmp_path / "device.crt"))
    assert done.returncode == 0 and (directory / "device.crt").exists(), done.stderr
    if fleet:
        assert done.stderr.strip() == ("pyvorin-identity: swupdate did not restart: it polls the rollout server "
                                       "after the next boot")
    else:
        assert not calls.exists() and not done.stderr


def test_certificates_for_other_keys_devices_or_cas_are_refused(board: dict[str, str], cli, tmp_path: Path) -> None:
    cli("keys", "init", tmp_path / "keys", "--only", "fleet", check=True)
    cli("keys", "init", tmp_path / "other", "--only", "fleet", check=True)
    assert _run(board, "ensure").returncode == 0
    directory = Path(board["PYVORIN_IDENTITY_DIR"])
    # Another board's request (its own key), signed by our CA: not this device's key.
    other_board = {**board, "PYVORIN_IDENTITY_DIR": str(tmp_path / "other-board"), "PYVORIN_DEVICE_ID": "rpi-1"}
    assert _run(other_board, "ensure").returncode == 0
    cli("fleet", "sign", tmp_path / "keys", tmp_path / "other-board/device.csr", "-o", tmp_path / "theirs.crt",
        check=True)
    refused = _run(board, "install", str(tmp_path / "theirs.crt"))
    assert refused.returncode == 1 and "not signed for this device's key" in refused.stderr
    # This device's request, signed by another fleet CA.
    cli("fleet", "sign", tmp_path / "other", directory / "device.csr", "-o", tmp_path / "foreign.crt", check=True)
    refused = _run(board, "install", str(tmp_path / "foreign.crt"))
    assert refused.returncode == 1 and "does not verify against the fleet CA" in refused.stderr
    # Not a certificate at all.
    (tmp_path / "junk.crt").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    refused = _run(board, "install", str(tmp_path / "junk.crt"))
    assert refused.returncode == 1 and "is not a PEM certificate" in refused.stderr
    assert not (directory / "device.crt").exists()


def test_a_storage_moved_to_another_board_is_refused_and_kept(board: dict[str, str], tmp_path: Path) -> None:
    assert _run(board, "ensure").returncode == 0
    directory = Path(board["PYVORIN_IDENTITY_DIR"])
    key = (directory / "device.key").read_bytes()
    Path(board["PYVORIN_IDENTITY_SERIAL_FILE"]).write_bytes(b"10000000deadbeef\0")
    moved = _run(board, "ensure")
    assert moved.returncode == 1
    assert f"belongs to device 'rpi-{SERIAL}', this board is 'rpi-10000000deadbeef'" in moved.stderr
    assert (directory / "device.key").read_bytes() == key


@pytest.mark.parametrize(("serial", "device_id", "expected"), [
    (None, "", "no serial number at"),
    (b"\0", "", "is empty"),
    (b"ab/../c\0", "", "may hold only"),
    (None, "-rf", "must start with a letter or a digit"),
    (None, "x" * 65, "longer than 64"),
    (None, "rpi 1", "may hold only"),
])
def test_hostile_or_missing_serials_fail_with_one_line(board: dict[str, str], serial: bytes | None,
                                                       device_id: str, expected: str) -> None:
    serial_file = Path(board["PYVORIN_IDENTITY_SERIAL_FILE"])
    if serial is None:
        serial_file.unlink()
    else:
        serial_file.write_bytes(serial)
    env = {**board, "PYVORIN_DEVICE_ID": device_id} if device_id else board
    failed = _run(env, "ensure")
    assert failed.returncode == 1 and expected in failed.stderr, failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    assert not Path(board["PYVORIN_IDENTITY_DIR"]).exists()


def test_a_damaged_key_is_named_not_replaced(board: dict[str, str]) -> None:
    assert _run(board, "ensure").returncode == 0
    key = Path(board["PYVORIN_IDENTITY_DIR"]) / "device.key"
    key.write_text("not a key\n")
    failed = _run(board, "ensure")
    assert failed.returncode == 1 and "is not a private key" in failed.stderr
    assert key.read_text() == "not a key\n"


def test_usage_is_one_line(board: dict[str, str]) -> None:
    for args in ((), ("frobnicate",), ("install",)):
        failed = _run(board, *args)
        assert failed.returncode == 1 and failed.stderr.startswith("pyvorin-identity: "), failed.stderr


def test_unit_verifies_and_scores_under_budget(tmp_path: Path) -> None:
    require("systemd-analyze")
    root = Root(tmp_path / "root")
    for target in ("local-fs", "multi-user", "sysinit", "basic", "shutdown"):
        root.unit(f"{target}.target", f"[Unit]\nDescription=stub {target}\n")
    for unit in ("swupdate.service", "pyvorin-edge-agent.service", "systemd-tmpfiles-setup.service"):
        root.unit(unit, "[Service]\nExecStart=/usr/bin/true\n")
    binary = root.path / "usr/bin/pyvorin-identity"
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    (root.path / "data/identity").mkdir(parents=True)
    text = (FILES / "pyvorin-identity.service").read_text()
    text = text.replace("@BINDIR@", "/usr/bin").replace("@IDENTITY_DIR@", "/data/identity")
    root.unit("pyvorin-identity.service", text)
    verify(root, "pyvorin-identity.service")
    exposure(root, "pyvorin-identity.service", IDENTITY_THRESHOLD)
