"""The rollout server as a user runs it, ``pyvorin fleet serve``: a real
goosebit behind Debian's nginx doing mutual TLS with the fleet CA and its
CRL, on loopback. The client is
curl (libcurl is what SWUpdate's suricatta speaks through), with device
certificates from ``pyvorin fleet sign`` for requests made the way
pyvorin-identity makes them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet import server as fleet_server
from fleet.goosebit import Admin
from fleet.server import FleetServer
from pyvorin import rollout
from pyvorin.archive import open_bundle
from pyvorin.cpio import CpioWriter
from pyvorin.hashing import byte_sum
from test_fleet_ca import device_request

from helpers import require, unavailable


@dataclass(frozen=True)
class Device:
    id: str
    key: Path
    cert: Path


@dataclass(frozen=True)
class Fleet:
    keys: Path
    server: FleetServer
    admin: Admin
    work: Path

    def device(self, cli, device_id: str, keys: Path | None = None) -> Device:
        key, csr = device_request(self.work, device_id)
        cert = self.work / f"{device_id}-{(keys or self.keys).name}.crt"
        cli("fleet", "sign", keys or self.keys, csr, "-o", cert, check=True)
        return Device(device_id, key, cert)

    def curl(self, device: Device | None, path: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """GET through the proxy as ``device`` (None: no client certificate)."""
        args = ["curl", "-q", "-sS", "--max-time", "20", "--cacert", str(self.keys / "fleet/ca.crt"),
                "-w", "\n%{http_code}"]
        if device is not None:
            args += ["--cert", str(device.cert), "--key", str(device.key)]
        return subprocess.run([*args, *extra, self.server.url + path], capture_output=True, text=True, timeout=60)


def _code(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.rsplit("\n", 1)[-1]


@pytest.fixture
def fleet(cli, tmp_path: Path) -> Iterator[Fleet]:
    reason = fleet_server.missing()
    if reason:
        unavailable(reason)
    require("curl")
    keys = tmp_path / "keys"
    cli("keys", "init", keys, "--only", "fleet", check=True)
    cli("fleet", "server-cert", keys, "--name", "127.0.0.1", "--name", "localhost", "-o", tmp_path / "data/server",
        check=True)
    server = FleetServer(keys, tmp_path / "data")
    try:
        admin = server.start()
        yield Fleet(keys, server, admin, tmp_path)
    finally:
        server.stop()


def test_a_device_polls_its_own_controller_only(cli, fleet: Fleet) -> None:
    device = fleet.device(cli, "rpi-10000000aaaa0001")
    polled = fleet.curl(device, "/DEFAULT/controller/v1/rpi-10000000aaaa0001")
    assert _code(polled) == "200", polled.stdout + polled.stderr + fleet.server.log_tail()
    answer = json.loads(polled.stdout.rsplit("\n", 1)[0])
    assert "polling" in answer["config"]
    assert "rpi-10000000aaaa0001" in fleet.admin.devices()
    # Its certificate does not make it another device, nor an administrator.
    assert _code(fleet.curl(device, "/DEFAULT/controller/v1/rpi-10000000aaaa0002")) == "403"
    assert _code(fleet.curl(device, "/api/v1/devices")) == "404"
    assert "rpi-10000000aaaa0002" not in fleet.admin.devices()


def test_no_foreign_or_revoked_certificate_gets_through(cli, fleet: Fleet, tmp_path: Path) -> None:
    anonymous = fleet.curl(None, "/DEFAULT/controller/v1/rpi-1")
    assert _code(anonymous) == "400", anonymous.stdout  # nginx: "No required SSL certificate was sent"
    other = tmp_path / "other-ca"
    cli("keys", "init", other, "--only", "fleet", check=True)
    foreign = fleet.device(cli, "rpi-2", keys=other)
    assert _code(fleet.curl(foreign, "/DEFAULT/controller/v1/rpi-2")) == "400"
    device = fleet.device(cli, "rpi-3")
    assert _code(fleet.curl(device, "/DEFAULT/controller/v1/rpi-3")) == "200"
    cli("fleet", "revoke", fleet.keys, "rpi-3", "--reason", "key-compromise", check=True)
    fleet.server.reload()
    revoked = fleet.curl(device, "/DEFAULT/controller/v1/rpi-3")
    assert _code(revoked) == "400", revoked.stdout
    assert "certificate revoked" in fleet.server.log_tail()


def test_an_assigned_release_downloads_through_the_proxy_resumably(cli, fleet: Fleet, keys, make_spec,
                                                                    tmp_path: Path) -> None:
    """A pyvorin bundle as goosebit takes it (sw-description read from it); the device's
    deploymentBase names an https link through the proxy, and a Range request resumes it."""
    swu = tmp_path / "release.swu"
    cli("bundle", make_spec(image_size=300_000), "-o", swu, *keys.signing_args(), check=True)
    software = fleet.admin.upload(swu)
    device = fleet.device(cli, "rpi-4")
    path = "/DEFAULT/controller/v1/rpi-4"
    assert _code(fleet.curl(device, path)) == "200"
    # What suricatta sends from its --identify values: the board and revision goosebit matches releases to.
    identify = {"mode": "merge", "data": {"hw_boardname": "raspberrypi4-64", "hw_revision": "1.0",
                                          "sw_version": "2026.10.0"}}
    sent = fleet.curl(device, path + "/configData", "-X", "PUT", "-H", "Content-Type: application/json",
                      "-d", json.dumps(identify))
    assert _code(sent) == "200", sent.stdout
    fleet.admin.assign(["rpi-4"], software)
    polled = fleet.curl(device, path)
    base = json.loads(polled.stdout.rsplit("\n", 1)[0])["_links"]
    assert "deploymentBase" in base, polled.stdout
    deployment = fleet.curl(device, base["deploymentBase"]["href"].split(str(fleet.server.port), 1)[1])
    document = json.loads(deployment.stdout.rsplit("\n", 1)[0])
    artifact = document["deployment"]["chunks"][0]["artifacts"][0]
    href = artifact["_links"]["download"]["href"]
    assert href.startswith(fleet.server.url), href
    whole = tmp_path / "whole.swu"
    first = fleet.curl(device, href.removeprefix(fleet.server.url), "-o", str(whole), "-r", "0-99999")
    assert _code(first) == "206"
    rest = fleet.curl(device, href.removeprefix(fleet.server.url), "-o", str(whole), "-C", "100000")
    assert _code(rest) == "206"
    assert whole.read_bytes() == swu.read_bytes()


def _description_only(path: Path, text: str) -> Path:
    """A bundle of just a sw-description, as other tools may make one (goosebit reads nothing else)."""
    with open(path, "wb") as handle:
        writer = CpioWriter(handle, mtime=0)
        writer.add_bytes("sw-description", text.encode(), byte_sum(text.encode()))
        writer.finish()
    return path


def test_the_rollout_tool_reads_a_releases_hardware_as_goosebit_does(cli, fleet: Fleet, keys, tmp_path: Path) -> None:
    """What ``pyvorin fleet rollout`` checks canaries against is what the server offers releases by."""
    (tmp_path / "rootfs.img").write_bytes(b"\0" * 4096)
    (tmp_path / "two.yml").write_text(
        'version: "2026.12.1"\nartifacts:\n  rootfs.img: {file: rootfs.img, type: raw}\nmachines:\n'
        + "".join(f'  {board}:\n    hardware-compatibility: {revisions}\n'
                  f'    copy1: {{install: {{rootfs.img: /dev/mmcblk0p3}}}}\n'
                  f'    copy2: {{install: {{rootfs.img: /dev/mmcblk0p2}}}}\n'
                  for board, revisions in (("raspberrypi4-64", '["1.0", "1.1"]'), ("raspberrypi5", '["1.0"]'))))
    releases = [tmp_path / "two.swu",
                _description_only(tmp_path / "top.swu", 'software = { version = "2026.12.2"; '
                                  'hardware-compatibility = [ "2.0" ]; };'),
                _description_only(tmp_path / "none.swu", 'software = { version = "2026.12.3"; };')]
    cli("bundle", tmp_path / "two.yml", "-o", releases[0], *keys.signing_args(), check=True)
    for release in releases:
        software = fleet.admin.upload(release)
        served = {(hw["model"], hw["revision"]) for hw in fleet.admin.software()[software]["compatibility"]}
        with open_bundle(release) as bundle:
            assert rollout.release_hardware(bundle.description()) == served, release.name


def test_serve_keeps_its_data_across_a_restart_and_stops_on_sigterm(cli, fleet: Fleet) -> None:
    device = fleet.device(cli, "rpi-5")
    assert _code(fleet.curl(device, "/DEFAULT/controller/v1/rpi-5")) == "200"
    password = (fleet.server.data / "admin-password").read_text()
    assert oct((fleet.server.data / "admin-password").stat().st_mode & 0o777) == "0o600"
    assert oct(fleet.server.data.stat().st_mode & 0o777) == "0o700"
    out = fleet.server.stop()
    assert fleet.server.process is not None and fleet.server.process.returncode == 0, out
    assert "stopping" in out
    again = FleetServer(fleet.keys, fleet.server.data, port=fleet.server.port, admin_port=fleet.server.admin_port)
    try:
        admin = again.start()
        assert "rpi-5" in admin.devices(), "the database was not kept"
        assert (fleet.server.data / "admin-password").read_text() == password
        assert _code(fleet.curl(device, "/DEFAULT/controller/v1/rpi-5")) == "200"
    finally:
        again.stop()


def test_serve_names_what_is_missing_in_one_line(cli, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    cli("keys", "init", keys, "--only", "fleet", check=True)
    result = cli("fleet", "serve", keys, "--data", tmp_path / "data", "--listen", "127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"pyvorin: error: {tmp_path / 'data/server/server.crt'}: missing: the server certificate "
        f"(pyvorin fleet server-cert KEYS --name HOST -o DATA/server)"], result.stderr
    cli("fleet", "server-cert", keys, "--name", "127.0.0.1", "-o", tmp_path / "data/server", check=True)
    result = cli("fleet", "serve", keys, "--data", tmp_path / "data", "--listen", "nowhere")
    assert result.returncode == 2 and "HOST:PORT" in result.stderr and len(result.stderr.strip().splitlines()) == 1
