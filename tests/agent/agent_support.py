"""Plain helpers for the edge agent and pyvorin-verify-deployment tests (fixtures
live in conftest.py): both programs run from their project's directory in the
layer (the package the recipe builds its wheel from), in a scrubbed environment, against fixture /proc
and /sys files in a temp dir."""


from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT

RECIPES = ROOT / "meta-pyvorin" / "recipes-pyvorin"
#: The device's Python projects (pyproject.toml, the package, bin/ with the device's launcher).
AGENT_SRC = RECIPES / "pyvorin-edge-agent" / "files" / "pyvorin-edge-agent"
VERIFY_SRC = RECIPES / "pyvorin-verify-deployment" / "files" / "pyvorin-verify-deployment"
SERVICE_FILES = RECIPES / "pyvorin-edge-service" / "files"

for _src in (AGENT_SRC, VERIFY_SRC):
    if str(_src) not in sys.path:
        sys.path.insert(0, str(_src))


def scrubbed_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_", "PYTHON", "PYVORIN_"))}
    env.update(PYTHONPATH=os.pathsep.join([str(AGENT_SRC), str(VERIFY_SRC)]), LC_ALL="C.UTF-8", **extra)
    return env


def stat_line(busy: int, idle: int) -> str:
    """A /proc/stat with ``busy`` ticks of user time and ``idle`` idle ticks."""
    return f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\nintr 0\n"


@dataclass(frozen=True)
class Sources:
    """Fixture files standing in for /proc/stat, /proc/meminfo and a thermal zone."""

    directory: Path

    @property
    def stat(self) -> Path:
        return self.directory / "stat"

    @property
    def meminfo(self) -> Path:
        return self.directory / "meminfo"

    @property
    def thermal(self) -> Path:
        return self.directory / "temp"

    def write(self, *, busy: int = 100, idle: int = 900, millicelsius: int = 45000,
              mem_total: int = 1_000_000, mem_available: int = 600_000) -> None:
        # Write-then-rename, as the kernel's files never show a half-written value.
        for path, text in ((self.stat, stat_line(busy, idle)),
                           (self.meminfo, f"MemTotal: {mem_total} kB\nMemFree: 1 kB\nMemAvailable: {mem_available} kB\n"),
                           (self.thermal, f"{millicelsius}\n")):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)


def write_config(path: Path, data_dir: Path, sources: Sources | None, *, port: int = 0, interval: float = 0.1,
                 extra: str = "") -> Path:
    metrics = "" if sources is None else textwrap.dedent(f"""\
        [metrics]
        proc_stat = "{sources.stat}"
        proc_meminfo = "{sources.meminfo}"
        thermal_zone = "{sources.thermal}"
        """)
    path.write_text(textwrap.dedent(f"""\
        [agent]
        data_dir = "{data_dir}"
        sample_interval = {interval}
        log_level = "debug"

        [http]
        host = "127.0.0.1"
        port = {port}
        """) + metrics + extra)
    return path


@dataclass
class AgentProcess:
    """A running ``pyv-edge-agent``; its JSON log lines are collected as they come."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    reader: threading.Thread | None = None
    stderr_text: str = ""

    def start_reader(self) -> None:
        def pump() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.put(line)
        self.reader = threading.Thread(target=pump, daemon=True)
        self.reader.start()

    def wait_event(self, event: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for record in self.seen:
            if record.get("event") == event:
                return record
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            record = json.loads(line)  # every stdout line must be one JSON object
            self.seen.append(record)
            if record.get("event") == event:
                return record
        if self.process.poll() is not None:
            self.stop()
        raise AssertionError(f"no {event!r} log line within {timeout} s; seen {self.seen}; stderr {self.stderr_text}")

    def get(self, path: str) -> tuple[int, str, str]:
        """(status, content type, body) of GET ``path``."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.headers["Content-Type"], response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()

    def health(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/health")[2]))

    def wait_health(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        doc = self.health()
        while not predicate(doc):
            if time.monotonic() > deadline:
                raise AssertionError(f"/health never satisfied the condition; last: {doc}")
            time.sleep(0.05)
            doc = self.health()
        return doc

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; returns the exit status.  Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if self.reader is not None:
            self.reader.join(timeout=5)
        if self.process.stderr is not None and not self.process.stderr.closed:
            self.stderr_text = self.process.stderr.read()
            self.process.stderr.close()
        if self.process.stdout is not None and not self.process.stdout.closed:
            self.process.stdout.close()
        return code


AgentStarter = Callable[..., AgentProcess]


def run_agent_cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyvorin_edge_agent", *map(str, args)], capture_output=True,
                          text=True, env=scrubbed_env(), timeout=timeout, check=False)


def run_verify(*args: str | Path, env: dict[str, str] | None = None,
               wrap: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(wrap or []), sys.executable, "-m", "pyvorin_verify_deployment", *map(str, args)],
                          capture_output=True, text=True, env=scrubbed_env(**(env or {})), timeout=60, check=False)


def can_unshare_mount() -> bool:
    if os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    return probe.returncode == 0


needs_mount_namespace = pytest.mark.skipif(not can_unshare_mount(),
                                           reason="needs root and unshare -m (CI runs as root)")
