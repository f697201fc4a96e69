"""goosebit's admin API (the hawkBit DDI server docs/fleet.md recommends), as
the tests read the server's view of the fleet: devices, their state and
release, rollouts and their counts. scripts/test.sh installs goosebit into
its own venv (its dependencies are not the release tool's)."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where scripts/test.sh installs goosebit (pinned there).
VENV = Path(os.environ.get("PYVORIN_GOOSEBIT_VENV", "/opt/goosebit-venv"))


class ServerError(RuntimeError):
    """The server did not start, or its API answered unexpectedly."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Admin:
    url: str
    token: str

    @classmethod
    def login(cls, url: str, user: str, password: str) -> Admin:
        form = urllib.parse.urlencode({"username": user, "password": password}).encode()
        request = urllib.request.Request(url + "/login", data=form, method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return cls(url, str(json.loads(response.read())["access_token"]))

    def request(self, method: str, path: str, body: Any = None, files: dict[str, Path] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        data: bytes | None = None
        if files is not None:
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

    def upload(self, bundle: Path) -> int:
        """A release: goosebit reads sw-description (version, board, revisions) from the bundle."""
        return int(self.request("PUT", "/api/v1/software", files={"file": bundle})["id"])

    def devices(self) -> dict[str, dict[str, Any]]:
        return {device["id"]: device for device in self.request("GET", "/api/v1/devices")["devices"]}

    def assign(self, devices: list[str], software_id: int) -> None:
        self.request("PATCH", "/api/v1/devices", {"devices": devices, "software": str(software_id)})

    def rollouts(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/v1/rollouts")["rollouts"])
