"""The rollout server as a user runs it: a real goosebit behind Debian's nginx
doing mutual TLS with the fleet CA and its CRL, on loopback. The client is
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

from fleet import goosebit, proxy
from fleet.goosebit import Goosebit
from fleet.proxy import MtlsProxy

from helpers import require, unavailable


@dataclass(frozen=True)
class Device:
    id: str
    key: Path
    cert: Path


@dataclass(frozen=True)
class Fleet:
    keys: Path
    server: Goosebit
    proxy: MtlsProxy
    work: Path

    def device(self, cli, device_id: str, keys: Path | None = None) -> Device:
        key, csr = self.work / f"{device_id}.key", self.work / f"{device_id}.csr"
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-out", key], check=True, capture_output=True)
        subprocess.run(["openssl", "req", "-new", "-key", key, "-subj", f"/CN={device_id}", "-out", csr],
                       check=True, capture_output=True)
        cert = self.work / f"{device_id}-{(keys or self.keys).name}.crt"
        cli("fleet", "sign", keys or self.keys, csr, "-o", cert, check=True)
        return Device(device_id, key, cert)

    def curl(self, device: Device | None, path: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """GET through the proxy as ``device`` (None: no client certificate)."""
        args = ["curl", "-q", "-sS", "--max-time", "20", "--cacert", str(self.keys / "fleet/ca.crt"),
                "-w", "\n%{http_code}"]
        if device is not None:
            args += ["--cert", str(device.cert), "--key", str(device.key)]
        return subprocess.run([*args, *extra, self.proxy.url + path], capture_output=True, text=True, timeout=60)


def _code(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.rsplit("\n", 1)[-1]


@pytest.fixture
def fleet(cli, tmp_path: Path) -> Iterator[Fleet]:
    for reason in (goosebit.missing(), proxy.missing()):
        if reason:
            unavailable(reason)
    require("curl")
    keys = tmp_path / "keys"
    cli("keys", "init", keys, "--only", "fleet", check=True)
    cli("fleet", "server-cert", keys, "--name", "127.0.0.1", "--name", "localhost", "-o", tmp_path / "srv",
        check=True)
    server = Goosebit(tmp_path / "goosebit")
    server.start()
    front = MtlsProxy(tmp_path / "nginx", f"127.0.0.1:{server.port}", keys, tmp_path / "srv", tmp_path / "crl.pem")
    (tmp_path / "crl.pem").write_bytes((keys / "fleet/crl.pem").read_bytes())
    try:
        front.start()
        yield Fleet(keys, server, front, tmp_path)
    finally:
        front.stop()
        server.stop()


def test_a_device_polls_its_own_controller_only(cli, fleet: Fleet) -> None:
    device = fleet.device(cli, "rpi-10000000aaaa0001")
    polled = fleet.curl(device, "/DEFAULT/controller/v1/rpi-10000000aaaa0001")
    assert _code(polled) == "200", polled.stdout + polled.stderr + fleet.proxy.error_tail()
    answer = json.loads(polled.stdout.rsplit("\n", 1)[0])
    assert "polling" in answer["config"]
    assert "rpi-10000000aaaa0001" in fleet.server.devices()
    # Its certificate does not make it another device, nor an administrator.
    assert _code(fleet.curl(device, "/DEFAULT/controller/v1/rpi-10000000aaaa0002")) == "403"
    assert _code(fleet.curl(device, "/api/v1/devices")) == "404"
    assert "rpi-10000000aaaa0002" not in fleet.server.devices()


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
    fleet.proxy.reload_crl(fleet.keys / "fleet/crl.pem")
    revoked = fleet.curl(device, "/DEFAULT/controller/v1/rpi-3")
    assert _code(revoked) == "400", revoked.stdout
    assert "certificate revoked" in fleet.proxy.error_tail()


def test_an_assigned_release_downloads_through_the_proxy_resumably(cli, fleet: Fleet, keys, make_spec,
                                                                    tmp_path: Path) -> None:
    """A pyvorin bundle as goosebit takes it (sw-description read from it); the device's
    deploymentBase names an https link through the proxy, and a Range request resumes it."""
    swu = tmp_path / "release.swu"
    cli("bundle", make_spec(image_size=300_000), "-o", swu, *keys.signing_args(), check=True)
    software = fleet.server.upload(swu)
    device = fleet.device(cli, "rpi-4")
    path = "/DEFAULT/controller/v1/rpi-4"
    assert _code(fleet.curl(device, path)) == "200"
    # What suricatta sends from its --identify values: the board and revision goosebit matches releases to.
    identify = {"mode": "merge", "data": {"hw_boardname": "raspberrypi4-64", "hw_revision": "1.0",
                                          "sw_version": "2026.10.0"}}
    sent = fleet.curl(device, path + "/configData", "-X", "PUT", "-H", "Content-Type: application/json",
                      "-d", json.dumps(identify))
    assert _code(sent) == "200", sent.stdout
    fleet.server._request("PATCH", "/api/v1/devices", {"devices": ["rpi-4"], "software": str(software)})
    polled = fleet.curl(device, path)
    base = json.loads(polled.stdout.rsplit("\n", 1)[0])["_links"]
    assert "deploymentBase" in base, polled.stdout
    deployment = fleet.curl(device, base["deploymentBase"]["href"].split(str(fleet.proxy.port), 1)[1])
    document = json.loads(deployment.stdout.rsplit("\n", 1)[0])
    artifact = document["deployment"]["chunks"][0]["artifacts"][0]
    href = artifact["_links"]["download"]["href"]
    assert href.startswith(fleet.proxy.url), href
    whole = tmp_path / "whole.swu"
    first = fleet.curl(device, href.removeprefix(fleet.proxy.url), "-o", str(whole), "-r", "0-99999")
    assert _code(first) == "206"
    rest = fleet.curl(device, href.removeprefix(fleet.proxy.url), "-o", str(whole), "-C", "100000")
    assert _code(rest) == "206"
    assert whole.read_bytes() == swu.read_bytes()
