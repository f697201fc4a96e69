"""goosebit's admin API (the hawkBit DDI server docs/fleet.md recommends), as
the tests read the server's view of the fleet: devices, their state and
release, rollouts and their counts. scripts/test.sh installs goosebit into
its own venv (its dependencies are not the release tool's)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyvorin import rollout

#: Where scripts/test.sh installs goosebit (pinned there).
VENV = Path(os.environ.get("PYVORIN_GOOSEBIT_VENV", "/opt/goosebit-venv"))


class ServerError(RuntimeError):
    """The server did not start, or its API answered unexpectedly."""


@dataclass(frozen=True)
class Admin:
    """The server's view, through the release tool's own goosebit client (pyvorin.rollout)."""

    server: rollout.Server

    @classmethod
    def login(cls, url: str, user: str, password: str) -> Admin:
        return cls(rollout.login(url, user, password))

    @property
    def url(self) -> str:
        return self.server.url

    def upload(self, bundle: Path) -> int:
        """A release: goosebit reads sw-description (version, board, revisions) from the bundle."""
        return int(self.server.request("PUT", "/api/v1/software", upload=bundle)["id"])

    def software(self) -> dict[int, dict[str, Any]]:
        """Uploaded releases by id, each with the ``compatibility`` goosebit read from it."""
        return {int(entry["id"]): entry for entry in self.server.request("GET", "/api/v1/software")["software"]}

    def devices(self) -> dict[str, dict[str, Any]]:
        return {device["id"]: device for device in self.server.request("GET", "/api/v1/devices")["devices"]}

    def assign(self, devices: list[str], software_id: int) -> None:
        self.server.request("PATCH", "/api/v1/devices", {"devices": devices, "software": str(software_id)})

    def rollouts(self) -> list[dict[str, Any]]:
        return list(self.server.request("GET", "/api/v1/rollouts")["rollouts"])
