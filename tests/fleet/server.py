"""The rollout server as a user starts it: ``pyvorin fleet serve`` (goosebit
on loopback, Debian's nginx in front of it for the devices), on loopback
ports, with the admin API client the tests and docs/fleet.md use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fleet.goosebit import VENV, Admin, ServerError
from pyvorin.fleetserve import listening

from helpers import ROOT, free_port

NGINX = "/usr/sbin/nginx"


def missing() -> str | None:
    if not (VENV / "bin/uvicorn").exists():
        return f"goosebit is not installed in {VENV} (scripts/test.sh installs it)"
    if not Path(NGINX).exists():
        return f"{NGINX} is missing (scripts/test.sh installs Debian's nginx)"
    return None


@dataclass
class FleetServer:
    """``pyvorin fleet serve KEYS --data DATA``; DATA/server holds the server certificate."""

    keys: Path
    data: Path
    poll_time: str = "00:00:02"
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        """The devices' endpoint."""
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> Admin:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pyvorin", "fleet", "serve", str(self.keys), "--data", str(self.data),
             "--listen", f"127.0.0.1:{self.port}", "--admin-port", str(self.admin_port),
             "--goosebit-venv", str(VENV), "--nginx", NGINX, "--poll-time", self.poll_time],
            env={**os.environ, "PYTHONPATH": str(ROOT / "scripts")}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        while not (listening(self.port) and (self.data / "admin-password").exists()):
            if self.process.poll() is not None:
                raise ServerError(f"pyvorin fleet serve exited {self.process.returncode}:\n"
                                  f"{self.process.stdout.read() if self.process.stdout else ''}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServerError(f"pyvorin fleet serve did not come up in {timeout:.0f}s\n{self.log_tail()}")
            time.sleep(0.3)
        password = (self.data / "admin-password").read_text().strip()
        return Admin.login(f"http://127.0.0.1:{self.admin_port}", "admin", password)

    def reload(self) -> None:
        """What an operator does after `pyvorin fleet revoke`: nginx reads the CRL anew."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        time.sleep(1.5)

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for name in ("goosebit.log", "nginx/error.log"):
            path = self.data / name
            if path.exists():
                out.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def stop(self) -> str:
        """Stops it as a service manager does (SIGTERM); its output."""
        if self.process is None:
            return ""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate(timeout=10)
        return out
