"""``pyvorin fleet rollout`` against servers that misbehave: each ends with one
error line and a non-zero exit, and never hangs. (Against the real goosebit
and real devices: tests/test_fleet_devices.py.)"""

from __future__ import annotations

import dataclasses
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvorin import rollout

from helpers import one_error_line


class _Hostile(http.server.BaseHTTPRequestHandler):
    """Answers a good login, then what the test sets for everything else."""

    status = 200
    body = b"{}"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == "/login":
            status, body = 200, b'{"access_token": "t", "token_type": "bearer"}'
        else:
            status, body = self.status, self.body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_PATCH = _answer  # noqa: N815 - the http.server API

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
        pass


@pytest.fixture
def hostile() -> Iterator[tuple[str, type[_Hostile]]]:
    handler = type("Handler", (_Hostile,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def release(cli, keys, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A signed release for raspberrypi4-64 revision 1.0 (the server is never sent it here)."""
    work = tmp_path_factory.mktemp("release")
    (work / "rootfs.img").write_bytes(b"\0" * 4096)
    (work / "release.yml").write_text(
        'version: "2026.11.1"\nartifacts:\n  rootfs.img:\n    file: rootfs.img\n    type: raw\n'
        'machines:\n  raspberrypi4-64:\n    hardware-compatibility: ["1.0"]\n    copy1:\n      install:\n'
        '        rootfs.img: /dev/mmcblk0p3\n    copy2:\n      install:\n        rootfs.img: /dev/mmcblk0p2\n')
    cli("bundle", work / "release.yml", "-o", work / "r.swu", *keys.signing_args(), check=True)
    return work / "r.swu"


def _run(cli, url: str, tmp_path: Path, release: Path, *extra: str):
    (tmp_path / "pw").write_text("secret\n")
    return cli("fleet", "rollout", release, "--server", url, "--user", "admin",
               "--password-file", tmp_path / "pw", "--canary", "rpi-1", "--poll", "0.1", "--timeout", "2", *extra)


@pytest.mark.parametrize(("status", "body", "expected"), [
    (200, b"not json", "not JSON"),
    (500, b"Internal Server Error", "answered 500"),
    (200, b'{"devices": "many"}', "no device list"),
    (200, b'[1, 2]', "no device list"),
    (200, b'{"devices": [{"id": "rpi-2"}]}', "does not know: rpi-1"),
    (200, b'{"devices": [{"id": "rpi-1", "hardware": null}]}', "rpi-1 has not reported its hardware yet"),
    (200, b'{"devices": [{"id": "rpi-1", "hardware": {"model": "raspberrypi5", "revision": "1.0"}}]}',
     "canary rpi-1 is raspberrypi5 1.0, the release is for raspberrypi4-64 1.0: nothing uploaded"),
    (200, b"[" * 100_000 + b"]" * 100_000, "not JSON"),
])
def test_a_malformed_server_answer_isone_error_line(cli, hostile, release: Path, tmp_path: Path, status: int,
                                                     body: bytes, expected: str) -> None:
    url, handler = hostile
    handler.status, handler.body = status, body
    line = one_error_line(_run(cli, url, tmp_path, release))
    assert expected in line, line


def test_an_unreachable_server_isone_error_line(cli, release: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    line = one_error_line(_run(cli, f"http://127.0.0.1:{port}", tmp_path, release))
    assert "cannot reach" in line or "login at" in line, line


def test_bad_arguments_are_refused_before_any_request(cli, release: Path, tmp_path: Path) -> None:
    line = one_error_line(_run(cli, "http://127.0.0.1:9", tmp_path, release, "--canary", "../etc"))
    assert "is not a device ID" in line
    line = one_error_line(_run(cli, "http://127.0.0.1:9", tmp_path, release, "--timeout", "0"))
    assert "--timeout" in line
    (tmp_path / "not.swu").write_bytes(b"070701")
    line = one_error_line(_run(cli, "http://127.0.0.1:9", tmp_path, tmp_path / "not.swu"))
    assert "not.swu" in line, line


def test_the_hardware_a_release_is_for_is_each_boards_revisions() -> None:
    description = {"software": {"version": "1", "description": "d",
                                "raspberrypi4-64": {"hardware-compatibility": ["1.0", "1.1"], "stable": {}},
                                "raspberrypi5": {"hardware-compatibility": ["1.0"], "stable": {}}}}
    assert rollout.release_hardware(description) == {("raspberrypi4-64", "1.0"), ("raspberrypi4-64", "1.1"),
                                                     ("raspberrypi5", "1.0")}
    # As goosebit reads them: top-level revisions are board "default", a set's are its board's,
    # and a release naming none is for "default default".
    assert rollout.release_hardware({"software": {"version": "1", "hardware-compatibility": ["2.0"],
                                                  "rpi": {"stable": {"hardware-compatibility": ["3"]}}}}) \
        == {("default", "2.0"), ("rpi", "3")}
    assert rollout.release_hardware({"software": {"version": "1", "rpi": {"stable": {}}}}) == {("default", "default")}
    for hostile in ({}, {"software": []}):
        with pytest.raises(rollout.RolloutError):
            rollout.release_hardware(hostile)


class _Server:
    """goosebit's rollout counts as the stage sees them, scripted."""

    def __init__(self, counts: list[tuple[int, int]]) -> None:
        self.counts = counts
        self.paused: list[int] = []

    def request(self, method: str, path: str, body=None, **_: object):
        if method == "PATCH":
            self.paused += body["ids"]
            return None
        successes, failures = self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]
        return {"rollouts": [{"id": 7, "feed": "canary", "success_count": successes, "failure_count": failures}]}


def test_a_stage_pauses_past_the_threshold_or_the_deadline_and_never_busy_loops() -> None:
    stage = rollout.Stage("canary", 7, expected=3, max_failures=1)
    sleeps: list[float] = []
    server = _Server([(0, 0), (1, 1), (1, 2)])
    verdict = rollout.await_stage(server, stage, timeout=60, poll=5, clock=lambda: 0.0,  # type: ignore[arg-type]
                                  sleep=sleeps.append)
    assert verdict == rollout.Verdict(1, 2, finished=False, stopped=True) and server.paused == [7]
    assert sleeps == [5, 5]
    # No verdict before the deadline: paused as well.
    now = iter([0.0, 10.0, 20.0, 31.0, 40.0])
    server = _Server([(1, 0)])
    verdict = rollout.await_stage(server, stage, timeout=30, poll=10, clock=lambda: next(now),  # type: ignore[arg-type]
                                  sleep=lambda _: None)
    assert verdict.stopped and server.paused == [7]
    # Within the threshold and complete: finished.
    server = _Server([(2, 1)])
    verdict = rollout.await_stage(server, stage, timeout=30, poll=10, sleep=lambda _: None)  # type: ignore[arg-type]
    assert verdict == rollout.Verdict(2, 1, finished=True, stopped=False) and server.paused == []


def test_the_release_is_checked_before_the_server_is_asked(cli, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x\n")
    result = cli("fleet", "rollout", tmp_path / "missing.swu", "--server", "http://127.0.0.1:9", "--user", "a",
                 "--password-file", tmp_path / "pw", "--canary", "rpi-1")
    assert "release not found" in one_error_line(result)


class _Fleet:
    """goosebit's admin API as ``rollout.run`` uses it, scripted: every canary succeeds at once."""

    def __init__(self, devices: list[dict[str, object]]) -> None:
        self.devices = devices
        self.rollouts: list[dict[str, object]] = []
        self.requests: list[tuple[str, str]] = []

    def request(self, method: str, path: str, body=None, **_: object):
        self.requests.append((method, path))
        if (method, path) == ("GET", "/api/v1/devices"):
            return {"devices": self.devices}
        if (method, path) == ("PUT", "/api/v1/software"):
            return {"id": 3}
        if (method, path) == ("PATCH", "/api/v1/devices"):
            for device in self.devices:
                if device["id"] in body["devices"]:
                    device["feed"] = body["feed"]
            return None
        if (method, path) == ("PUT", "/api/v1/rollouts"):
            members = [d for d in self.devices if d.get("feed") == body["feed"]]
            fitting = sum(1 for d in members if d.get("hardware") == {"model": "raspberrypi4-64", "revision": "1.0"})
            self.rollouts.append({"id": len(self.rollouts) + 1, "feed": body["feed"], "name": body["name"],
                                  "success_count": fitting, "failure_count": 0})
            return None
        if (method, path) == ("GET", "/api/v1/rollouts"):
            return {"rollouts": self.rollouts}
        raise AssertionError(f"unexpected {method} {path}")


def _device(name: str, model: str, feed: str = "default") -> dict[str, object]:
    return {"id": name, "feed": feed, "hardware": {"model": model, "revision": "1.0"}}


def test_the_fleet_stage_counts_only_the_hardware_the_release_is_for(tmp_path: Path) -> None:
    """The server offers a release only to the hardware it is for: a Pi 5 in the fleet's feed
    never reports on a Pi 4 release, and must not hold the stage until its deadline."""
    server = _Fleet([_device("rpi-1", "raspberrypi4-64"), _device("rpi-2", "raspberrypi4-64"),
                     _device("rpi-3", "raspberrypi5")])
    plan = rollout.Plan(tmp_path / "r.swu", ("rpi-1",), frozenset({("raspberrypi4-64", "1.0")}), watch=True,
                        timeout=5, poll=1)
    said: list[str] = []
    verdict = rollout.run(server, plan, say=said.append)  # type: ignore[arg-type]
    assert verdict == rollout.Verdict(1, 0, finished=True, stopped=False), said
    assert "fleet: 1 of 2 devices are other hardware (or have not reported theirs): the release is not for them" \
        in said and said[-1] == "fleet: 1 of 1 succeeded", said
    # A canary of other hardware is refused before anything is uploaded.
    server = _Fleet([_device("rpi-3", "raspberrypi5")])
    with pytest.raises(rollout.RolloutError, match="canary rpi-3 is raspberrypi5 1.0, the release is for "
                                                   "raspberrypi4-64 1.0: nothing uploaded"):
        rollout.run(server, dataclasses.replace(plan, canaries=("rpi-3",)))  # type: ignore[arg-type]
    assert server.requests == [("GET", "/api/v1/devices")]
