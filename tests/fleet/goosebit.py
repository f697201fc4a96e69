"""A real goosebit (the hawkBit DDI server docs/fleet.md recommends), started
as a user starts it, on loopback only, with a throw-away SQLite database.

goosebit neither creates its schema (``aerich upgrade`` with the migrations in
its wheel does) nor its first user (``POST /setup``), and its defaults put the
database and the artifacts inside site-packages and make a new token key per
process: every one of those is set here, as docs/fleet.md tells a user to.
scripts/test.sh installs it into its own venv (its dependencies are not the
release tool's)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where scripts/test.sh installs goosebit (pinned there).
VENV = Path(os.environ.get("PYVORIN_GOOSEBIT_VENV", "/opt/goosebit-venv"))
TENANT = "DEFAULT"


class ServerError(RuntimeError):
    """The server did not start, or its API answered unexpectedly."""


def missing() -> str | None:
    """Why goosebit cannot run here, or None."""
    if not (VENV / "bin/uvicorn").exists() or not (VENV / "bin/aerich").exists():
        return f"goosebit is not installed in {VENV} (scripts/test.sh installs it)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _site_packages() -> Path:
    found = subprocess.run([str(VENV / "bin/python"), "-c",
                            "import goosebit, os; print(os.path.dirname(goosebit.__file__))"],
                           capture_output=True, text=True, check=True)
    return Path(found.stdout.strip())


@dataclass
class Goosebit:
    """One server: ``start()``, the admin API (``put``/``patch``/``get``), ``stop()``."""

    work: Path
    poll_time: str = "00:00:02"
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: uuid.uuid4().hex)
    token: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "artifacts").mkdir(exist_ok=True)
        settings = {
            "tenant": TENANT,
            "poll_time": self.poll_time,
            "db_uri": f"sqlite://{self.work}/db.sqlite3",
            "artifacts_dir": str(self.work / "artifacts"),
            # A fixed key: admin tokens survive a restart (the default is random per process).
            "secret_key": uuid.uuid4().hex,
            "track_device_ip": True,
            # goosebit's own logging setup silences uvicorn's loggers: keep them, for a failing test's log.
            "logging": {"version": 1, "disable_existing_loggers": False,
                        "handlers": {"console": {"class": "logging.StreamHandler"}},
                        "root": {"level": "INFO", "handlers": ["console"]}},
        }
        (self.work / "goosebit.yaml").write_text(json.dumps(settings))  # YAML is a superset of JSON
        (self.work / "pyproject.toml").write_text(
            f'[tool.aerich]\ntortoise_orm = "goosebit.db.config.TORTOISE_CONF"\n'
            f'location = "{_site_packages()}/db/migrations"\nsrc_folder = "./."\n')
        env = {**os.environ, "GOOSEBIT_SETTINGS": str(self.work / "goosebit.yaml")}
        migrated = subprocess.run([str(VENV / "bin/aerich"), "upgrade"], cwd=self.work, env=env,
                                  capture_output=True, text=True, timeout=120)
        if migrated.returncode != 0:
            raise ServerError(f"aerich upgrade failed:\n{migrated.stdout}{migrated.stderr}")
        with open(self.work / "server.log", "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [str(VENV / "bin/uvicorn"), "goosebit:app", "--host", "127.0.0.1", "--port", str(self.port),
                 # Behind the mutual-TLS proxy: trust its X-Forwarded-Proto (links to devices say https).
                 "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"],
                cwd=self.work, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"goosebit exited {self.process.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise ServerError(f"goosebit did not listen within {timeout:.0f}s:\n{self.log_tail()}")
        answer = self._request("POST", "/setup", form={"username": "admin", "password": self.password})
        self.token = str(answer["access_token"])
        (self.work / "admin-password").write_text(self.password + "\n")

    def log_tail(self, lines: int = 40) -> str:
        path = self.work / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def _request(self, method: str, path: str, body: Any = None, form: dict[str, str] | None = None,
                 files: dict[str, Path] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data: bytes | None = None
        if form is not None:
            data = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in form.items()).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif files is not None:
            boundary = uuid.uuid4().hex
            parts = []
            for name, upload in files.items():
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                             f'filename="{upload.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
                             + upload.read_bytes() + b"\r\n")
            data = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise ServerError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')[:500]}") from exc
        return json.loads(text) if text else None

    # The admin API, as docs/fleet.md uses it.
    def upload(self, bundle: Path) -> int:
        """A release: goosebit reads sw-description (version, board, revisions) from the bundle."""
        return int(self._request("PUT", "/api/v1/software", files={"file": bundle})["id"])

    def devices(self) -> dict[str, dict[str, Any]]:
        return {device["id"]: device for device in self._request("GET", "/api/v1/devices")["devices"]}

    def set_feed(self, devices: list[str], feed: str) -> None:
        self._request("PATCH", "/api/v1/devices", {"devices": devices, "feed": feed})

    def rollout(self, name: str, feed: str, software_id: int) -> None:
        self._request("PUT", "/api/v1/rollouts", {"name": name, "feed": feed, "software_id": software_id})

    def rollouts(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/api/v1/rollouts")["rollouts"])
