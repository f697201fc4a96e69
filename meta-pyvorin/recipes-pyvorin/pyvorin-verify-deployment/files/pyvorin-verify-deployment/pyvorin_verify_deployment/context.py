"""What a check may look at: files below ``root``, commands through ``run``,
the agent's settings from its config.toml, and the expected values."""

from __future__ import annotations

import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class AgentSettings:
    """The keys of the agent's config.toml the checks rely on (the agent's interface
    contract, so they hold for a swapped-in agent too); defaults as the agent's."""

    data_dir: PurePosixPath = PurePosixPath("/data/pyvorin-edge")
    host: str = "127.0.0.1"
    port: int = 8080
    thermal_zone: str = "/sys/class/thermal/thermal_zone0/temp"
    thermal_celsius: float = 75.0
    disk_percent: float = 90.0
    backup_dir: str = ""

    @property
    def backups(self) -> PurePosixPath:
        return PurePosixPath(self.backup_dir) if self.backup_dir else self.data_dir / "backups"


def settings_from(raw: dict[str, Any]) -> AgentSettings:
    def get(table: str, key: str, default: Any) -> Any:
        value = raw.get(table, {}).get(key, default) if isinstance(raw.get(table), dict) else default
        return value if isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int)) \
            else default

    base = AgentSettings()
    return AgentSettings(
        data_dir=PurePosixPath(get("agent", "data_dir", str(base.data_dir))),
        host=get("http", "host", base.host),
        port=get("http", "port", base.port),
        thermal_zone=get("metrics", "thermal_zone", base.thermal_zone),
        thermal_celsius=float(get("thresholds", "thermal_celsius", base.thermal_celsius)),
        disk_percent=float(get("thresholds", "disk_percent", base.disk_percent)),
        backup_dir=get("backup", "dir", base.backup_dir),
    )


@dataclass(frozen=True)
class Expectations:
    unit: str = "pyvorin-edge-agent.service"
    user: str = "pyvorin-edge"
    apparmor_profile: str = "pyv-edge-agent"
    ssh_port: int = 22
    backup_max_age_hours: float = 48.0
    journald_max_use: int = 256 << 20
    journald_max_file_size: int = 32 << 20


@dataclass(frozen=True)
class Context:
    root: Path = Path("/")
    config_path: PurePosixPath = PurePosixPath("/etc/pyvorin-edge/config.toml")
    health_url: str | None = None
    sshd_config: str | None = None
    expect: Expectations = Expectations()
    timeout: float = 10.0
    now: float = field(default_factory=time.time)

    def path(self, device_path: str | PurePosixPath) -> Path:
        """A path on the device, seen from where we run (below ``root``)."""
        return self.root / str(device_path).lstrip("/")

    def run(self, *argv: str) -> Completed:
        """Run a device command; a missing program is exit 127, as in a shell."""
        try:
            result = subprocess.run(list(argv), capture_output=True, text=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            return Completed(127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired:
            return Completed(124, "", f"{argv[0]}: timed out after {self.timeout:g} s")
        return Completed(result.returncode, result.stdout, result.stderr)

    def load_config(self) -> tuple[AgentSettings, str | None]:
        """The agent's settings and, if config.toml is unusable, why (defaults are used then)."""
        path = self.path(self.config_path)
        try:
            with open(path, "rb") as handle:
                return settings_from(tomllib.load(handle)), None
        except OSError as exc:
            return AgentSettings(), f"{self.config_path}: {exc.strerror}"
        except tomllib.TOMLDecodeError as exc:
            return AgentSettings(), f"{self.config_path}: invalid TOML: {exc}"

    @property
    def settings(self) -> AgentSettings:
        return self.load_config()[0]
