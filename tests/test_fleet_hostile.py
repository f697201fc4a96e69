"""The device's update client against a rollout server that misbehaves.

The device is the real thing (tests/fleet/device.py: the device's swupdate in
suricatta mode, started by swupdate.sh with the layer's snippets and its own
identity); the server is a hostile stand-in speaking TLS with the fleet's
server certificate and requiring the device's, on loopback: it is down, it
answers garbage, it cuts every download short. Each time the daemon keeps
running, says what went wrong, retries at its pace (no busy loop), and
changes nothing on the device."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.device import SLOT_A, SLOT_B, FleetDevice
from pyvorin_devsim.swupdate_sandbox import swupdate_available

from helpers import require, unavailable

pytestmark = [pytest.mark.swupdate, pytest.mark.usefixtures("device_swupdate")]

OLD, NEW = "2026.11.3000000", "2026.11.3000001"
WATCH = 20.0
#: Longer than curl's low-speed window, which SWUpdate's hawkBit client leaves at 300 s.
STALL = 420.0


class _Ddi(http.server.BaseHTTPRequestHandler):
    """hawkBit DDI as a hostile server answers it; ``mode`` decides how."""

    mode = "garbage"
    bundle = b""
    log: list[str] = []

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if body[:1] == b"{" else "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.log.append(f"GET {self.path}")
        base = f"https://127.0.0.1:{self.server.server_address[1]}{self.path.split('/deploymentBase')[0]}"
        if self.path.endswith("/download") and self.mode == "whole":
            self._send(200, self.bundle)
        elif self.path.endswith("/download"):
            # Half the bundle, then the connection closes (or, stalling, stays open and silent):
            # every try, ranges or not.
            self._send(200, self.bundle[: len(self.bundle) // 2], length=len(self.bundle))
            if self.mode == "stall":
                self.wfile.flush()
                time.sleep(STALL)
            self.close_connection = True
        elif "/deploymentBase/" in self.path:
            self._send(200, json.dumps({"id": "7", "deployment": {"download": "forced", "update": "forced", "chunks": [
                {"part": "os", "version": NEW, "name": "release.swu", "artifacts": [
                    {"filename": "release.swu", "size": len(self.bundle),
                     "hashes": {"sha1": "0" * 40},
                     "_links": {"download": {"href": f"{base}/download"}}}]}]}}).encode())
        elif self.mode == "garbage":
            self._send(200, b'{"config": {"polling": {"sleep": "00:00:02"}}, "_links": {"deploymentBase": {"hr')
        else:
            self._send(200, json.dumps({"config": {"polling": {"sleep": "00:00:02"}}, "_links": {
                "deploymentBase": {"href": f"{base}/deploymentBase/7"}}}).encode())

    def do_PUT(self) -> None:  # noqa: N802 - the http.server API
        self.log.append(f"PUT {self.path} {self._body()[:200]!r}")
        self._send(200, b"{}")

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.log.append(f"POST {self.path} {self._body()[:400]!r}")
        self._send(200, b"{}")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
        pass


def _tls_server(keys: Path, server_dir: Path, handler: type[_Ddi]) -> http.server.ThreadingHTTPServer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_dir / "server.crt", server_dir / "server.key")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=keys / "fleet/ca.crt")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


@pytest.fixture
def device(cli, keys, tmp_path: Path) -> Iterator[FleetDevice]:
    reason = swupdate_available()
    if reason:
        unavailable(reason)
    require("openssl", "mkenvimage")
    cli("fleet", "server-cert", keys.directory, "--name", "127.0.0.1", "-o", tmp_path / "srv", "--force",
        check=True)
    made = FleetDevice(f"rpi-hostile-{tmp_path.name[-12:].strip('_-')}", tmp_path / "dev", keys.ca,
                       keys.directory / "fleet/ca.crt", "https://127.0.0.1:1")
    made.enrol(cli, keys.directory)
    yield made
    made.power_off()


def _alive_and_unchanged(device: FleetDevice) -> None:
    assert device.thread is not None and device.thread.is_alive(), device.log()[-3000:]
    assert device.reboots() == 0
    env = device.env()
    assert env.get("rootpart") == "2" and env.get("upgrade_available") == "0", env
    assert device.sandbox.untouched(device.sandbox.slot_a)


def test_a_server_that_is_down_is_retried_at_the_polling_pace(device: FleetDevice) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[float] = []

    def refuse() -> None:
        listener.settimeout(0.5)
        deadline = time.monotonic() + WATCH + 30
        while time.monotonic() < deadline:
            try:
                connection, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(time.monotonic())
            connection.close()  # no TLS: the server "is down" mid-handshake

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    device.url = f"https://127.0.0.1:{listener.getsockname()[1]}"
    device.boot("a", OLD)
    time.sleep(WATCH)
    _alive_and_unchanged(device)
    # It kept trying, at its polling and retry pace: a handful, not a busy loop.
    assert 2 <= len(accepted) <= 40, accepted
    assert "ERROR" in device.log() or "error" in device.log().lower(), device.log()[-3000:]
    listener.close()


def test_garbage_from_the_server_is_logged_and_survived(cli, keys, device: FleetDevice, tmp_path: Path) -> None:
    handler = type("Garbage", (_Ddi,), {"mode": "garbage", "log": []})
    server = _tls_server(keys.directory, tmp_path / "srv", handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        device.url = f"https://127.0.0.1:{server.server_address[1]}"
        device.boot("a", OLD)
        time.sleep(WATCH)
        _alive_and_unchanged(device)
        polls = [line for line in handler.log if line.startswith("GET /DEFAULT/controller/v1/")]
        assert 2 <= len(polls) <= 40, handler.log
        assert "JSON" in device.log() or "json" in device.log(), device.log()[-3000:]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _deploying(cli, keys, make_spec, device: FleetDevice, tmp_path: Path, mode: str, seed: int,
               machine: str = "raspberrypi4-64") -> Iterator[type[_Ddi]]:
    """A hostile server offering a real release in ``mode``, the device booted against it; its handler."""
    spec = make_spec(slot_a=SLOT_A, slot_b=SLOT_B, version=NEW, image_size=256 * 1024, seed=seed, machine=machine)
    release = tmp_path / "release.swu"
    cli("bundle", spec, "-o", release, *keys.signing_args(), check=True)
    handler = type(mode.title(), (_Ddi,), {"mode": mode, "bundle": release.read_bytes(), "log": []})
    server = _tls_server(keys.directory, tmp_path / "srv", handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        device.url = f"https://127.0.0.1:{server.server_address[1]}"
        device.boot("a", OLD)
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_download_cut_short_every_time_is_retried_then_reported_and_changes_nothing(
        cli, keys, make_spec, device: FleetDevice, tmp_path: Path) -> None:
    with _deploying(cli, keys, make_spec, device, tmp_path, "deploy", seed=9) as handler:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any("failure" in line for line in handler.log
                                                       if line.startswith("POST")):
            time.sleep(1)
        downloads = [line for line in handler.log if line.endswith("/download")]
        failures = [line for line in handler.log if line.startswith("POST") and "failure" in line]
        assert failures, f"no failure reported:\n{handler.log}\n{device.log()[-4000:]}"
        # Retried (retry = 4 in swupdate.cfg), not forever.
        assert 2 <= len(downloads) <= 12, handler.log
        _alive_and_unchanged(device)
        assert device.env().get("ustate") in (None, "", "0", "3"), device.env()


def test_a_release_for_other_hardware_is_refused_and_reported_by_the_device(
        cli, keys, make_spec, device: FleetDevice, tmp_path: Path) -> None:
    """A server that offers any release to any device (Eclipse hawkBit checks no hardware):
    a Pi 5 release reaches a Pi 4, whose SWUpdate refuses it against its hwrevision, writes
    nothing and reports the failure."""
    with _deploying(cli, keys, make_spec, device, tmp_path, "whole", seed=13, machine="raspberrypi5") as handler:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any("failure" in line for line in handler.log
                                                       if line.startswith("POST")):
            time.sleep(1)
        failures = [line for line in handler.log if line.startswith("POST") and "failure" in line]
        assert failures, f"no failure reported:\n{handler.log}\n{device.log()[-4000:]}"
        # The reason travels in the feedback's details, which the server shows.
        feedback = [line for line in device.log().splitlines() if "/feedback:" in line and '"failure"' in line]
        assert feedback and "HW compatibility not found" in feedback[-1], device.log()[-3000:]
        _alive_and_unchanged(device)
        assert device.sandbox.untouched(device.sandbox.slot_b)


@pytest.mark.slow
def test_a_download_that_stalls_mid_transfer_is_given_up_after_the_low_speed_window(
        cli, keys, make_spec, device: FleetDevice, tmp_path: Path) -> None:
    """Half the release, then nothing on an open connection: curl's low-speed limit (SWUpdate's
    hawkBit client does not expose it: 300 s) ends the try; the daemon lives, nothing changed.
    Over five minutes, so marked slow (pytest -m slow)."""
    with _deploying(cli, keys, make_spec, device, tmp_path, "stall", seed=11) as handler:
        started = time.monotonic()
        while time.monotonic() - started < 380 and "too slow" not in device.log().lower():
            time.sleep(5)
        log = device.log()
        assert "too slow" in log.lower(), f"{handler.log}\n{log[-4000:]}"
        print(f"stalled download given up after {time.monotonic() - started:.0f}s")
        _alive_and_unchanged(device)
        assert len([line for line in handler.log if line.endswith("/download")]) <= 2, handler.log


def test_a_server_that_never_answers_is_given_up_after_the_connection_timeout(device: FleetDevice) -> None:
    """It takes the connection and says nothing (TLS never starts): suricatta gives up after
    swupdate.cfg's connection-timeout (30 s), says so, and tries again at its pace."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def hold() -> None:
        listener.settimeout(0.5)
        deadline = time.monotonic() + 80
        while time.monotonic() < deadline:
            try:
                connection, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            held.append(connection)  # never read, never answered

    threading.Thread(target=hold, daemon=True).start()
    device.url = f"https://127.0.0.1:{listener.getsockname()[1]}"
    device.boot("a", OLD)
    time.sleep(45)
    try:
        _alive_and_unchanged(device)
        log = device.log()
        assert "timed out" in log.lower() or "timeout" in log.lower(), log[-3000:]
        # One connection per try: the first waited out its 30 s, no flood of new ones.
        assert 1 <= len(held) <= 4, len(held)
    finally:
        for connection in held:
            connection.close()
        listener.close()
