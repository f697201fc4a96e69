"""config.toml: one frozen dataclass per table, and the dataclasses themselves
are the schema.  Unknown tables and keys are refused (a typo must not silently
fall back to a default on a device nobody watches), and so are values of the
wrong type or out of range."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import socket
import tomllib
import typing
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyvorin_edge_agent.errors import ConfigError

DEFAULT_PATH = Path("/etc/pyvorin-edge/config.toml")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class AgentSection:
    data_dir: Path = Path("/data/pyvorin-edge")
    sample_interval: float = 10.0
    log_level: str = "info"
    device_id: str = ""


@dataclass(frozen=True)
class HttpSection:
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True)
class MetricsSection:
    proc_stat: Path = Path("/proc/stat")
    proc_meminfo: Path = Path("/proc/meminfo")
    # A string, not a Path: "" switches the thermal metric off on boards without a zone.
    thermal_zone: str = "/sys/class/thermal/thermal_zone0/temp"
    disk_path: str = ""


@dataclass(frozen=True)
class Thresholds:
    cpu_percent: float = 85.0
    disk_percent: float = 90.0
    thermal_celsius: float = 75.0
    queue_depth: int = 5000


@dataclass(frozen=True)
class StoreSection:
    retention_days: float = 30.0


@dataclass(frozen=True)
class BackupSection:
    dir: str = ""
    keep: int = 14


@dataclass(frozen=True)
class CloudSection:
    url: str = ""
    batch_size: int = 100
    interval: float = 30.0
    lease_seconds: float = 120.0
    timeout: float = 10.0
    max_queue: int = 500_000
    # Doubling waits after failures in a row stop here (seconds).
    max_backoff: float = 300.0
    # mqtts:// only: TLS with the device's identity (pyvorin-identity) and the fleet CA. The key,
    # left empty, is the one systemd hands the service ($CREDENTIALS_DIRECTORY/device.key).
    tls_ca: str = "/usr/share/pyvorin/fleet-ca.crt"
    tls_cert: str = "/data/identity/device.crt"
    tls_key: str = ""
    identity_dir: str = "/data/identity"


@dataclass(frozen=True)
class Config:
    agent: AgentSection = AgentSection()
    http: HttpSection = HttpSection()
    metrics: MetricsSection = MetricsSection()
    thresholds: Thresholds = Thresholds()
    store: StoreSection = StoreSection()
    backup: BackupSection = BackupSection()
    cloud: CloudSection = CloudSection()
    source: Path = DEFAULT_PATH

    @property
    def data_dir(self) -> Path:
        return self.agent.data_dir

    @property
    def disk_path(self) -> Path:
        return Path(self.metrics.disk_path) if self.metrics.disk_path else self.agent.data_dir

    @property
    def backup_dir(self) -> Path:
        return Path(self.backup.dir) if self.backup.dir else self.agent.data_dir / "backups"

    @property
    def thermal_zone(self) -> Path | None:
        return Path(self.metrics.thermal_zone) if self.metrics.thermal_zone else None

    @property
    def device_id(self) -> str:
        return self.agent.device_id or socket.gethostname()


_HINTS = typing.get_type_hints(Config)
SECTIONS: dict[str, type[Any]] = {f.name: _HINTS[f.name] for f in dataclasses.fields(Config) if f.name != "source"}


def load(path: Path) -> Config:
    """Read and validate ``path``; every problem is a ConfigError naming the file."""
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:  # tomllib decodes first and lets this through
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    return parse(raw, path)


def parse(raw: dict[str, Any], path: Path) -> Config:
    sections: dict[str, Any] = {}
    for name, table in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"{path}: unknown table [{name}] (known: {', '.join(SECTIONS)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: '{name}' must be a table ([{name}])")
        sections[name] = _section(SECTIONS[name], name, table, path)
    config = Config(**sections, source=path)
    _validate(config, path)
    return config


def _section(cls: type[Any], name: str, table: dict[str, Any], path: Path) -> Any:
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in hints:
            known = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"{path}: unknown key '{key}' in [{name}] (known: {known})")
        values[key] = _coerce(hints[key], value, f"[{name}] {key}", path)
    return cls(**values)


def _coerce(kind: type[Any], value: Any, where: str, path: Path) -> Any:
    # bool is an int in Python: refuse it explicitly so `port = true` is an error.
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{path}: {where} must be a finite number")
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    if kind is Path and isinstance(value, str) and value:
        return Path(value)
    expected = {int: "an integer", float: "a number", str: "a string", Path: "a non-empty path", bool: "true or false"}
    raise ConfigError(f"{path}: {where} must be {expected.get(kind, kind.__name__)}, not {value!r}")


def _validate(config: Config, path: Path) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"{path}: {message}")

    need(config.agent.data_dir.is_absolute(), "[agent] data_dir must be an absolute path")
    need(config.agent.sample_interval >= 0.05, "[agent] sample_interval must be at least 0.05 seconds")
    need(config.agent.log_level in LOG_LEVELS, f"[agent] log_level must be one of {', '.join(LOG_LEVELS)}")
    need(0 <= config.http.port <= 65535, "[http] port must be 0..65535 (0 picks a free port)")
    try:
        loopback = ipaddress.ip_address(config.http.host).is_loopback
    except ValueError:
        loopback = False
    # The health port must never face the network: the firewall is the second line, not the first.
    need(loopback, f"[http] host must be a loopback address (127.0.0.1 or ::1), not {config.http.host!r}")
    for name in ("cpu_percent", "disk_percent"):
        need(0 < getattr(config.thresholds, name) <= 100, f"[thresholds] {name} must be in (0, 100]")
    need(config.thresholds.queue_depth > 0, "[thresholds] queue_depth must be positive")
    need(config.store.retention_days > 0, "[store] retention_days must be positive")
    need(1 <= config.backup.keep <= 1000, "[backup] keep must be 1..1000")
    if config.backup.dir:
        need(Path(config.backup.dir).is_absolute(), "[backup] dir must be an absolute path")
    if config.cloud.url:
        try:
            parts = urllib.parse.urlsplit(config.cloud.url)
            host, _ = parts.hostname, parts.port
        except ValueError as exc:
            raise ConfigError(f"{path}: [cloud] url {config.cloud.url!r} is not a URL ({exc})") from exc
        need(parts.scheme in ("https", "http", "mqtts"),
             "[cloud] url must be an https:// (or http://) or mqtts:// URL")
        if parts.scheme == "mqtts":
            need(bool(host), "[cloud] url mqtts:// needs a host")
            need(all(getattr(config.cloud, f) for f in ("tls_ca", "tls_cert", "identity_dir")),
                 "[cloud] mqtts:// needs tls_ca, tls_cert and identity_dir")
    need(config.cloud.max_backoff >= config.cloud.interval, "[cloud] max_backoff must be at least the interval")
    need(1 <= config.cloud.batch_size <= 10_000, "[cloud] batch_size must be 1..10000")
    need(config.cloud.interval > 0 and config.cloud.timeout > 0, "[cloud] interval and timeout must be positive")
    need(config.cloud.lease_seconds > config.cloud.timeout, "[cloud] lease_seconds must exceed timeout")
    need(config.cloud.max_queue > config.thresholds.queue_depth, "[cloud] max_queue must exceed the queue alert")
