"""The devices' side of the rollout server: Debian's nginx terminating TLS in
front of goosebit, configured by ``pyvorin fleet proxy-config`` as a user
configures it (scripts/pyvorin/fleetproxy.py says what it enforces)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fleet.goosebit import ServerError, free_port

from helpers import ROOT

NGINX = "/usr/sbin/nginx"


def missing() -> str | None:
    return None if Path(NGINX).exists() else f"{NGINX} is missing (scripts/test.sh installs Debian's nginx)"


@dataclass
class MtlsProxy:
    work: Path
    upstream: str
    keys: Path  # fleet/ca.crt
    server_dir: Path  # server.crt, server.key
    crl: Path  # the copy nginx reads, replaced by reload_crl
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        conf = self.work / "nginx.conf"
        made = subprocess.run(
            [sys.executable, "-m", "pyvorin", "fleet", "proxy-config", str(self.keys), "--server-dir",
             str(self.server_dir), "--listen", f"127.0.0.1:{self.port}", "--upstream", self.upstream,
             "--crl", str(self.crl), "--state-dir", str(self.work), "-o", str(conf), "--force"],
            env={**os.environ, "PYTHONPATH": str(ROOT / "scripts")}, capture_output=True, text=True)
        if made.returncode != 0:
            raise ServerError(f"pyvorin fleet proxy-config: {made.stderr}")
        checked = subprocess.run([NGINX, "-t", "-q", "-p", str(self.work), "-c", str(conf)],
                                 capture_output=True, text=True)
        if checked.returncode != 0:
            raise ServerError(f"nginx -t: {checked.stderr}")
        with open(self.work / "stderr.log", "wb") as stderr:  # the child keeps its own descriptor
            self.process = subprocess.Popen([NGINX, "-p", str(self.work), "-c", str(conf), "-g", "daemon off;"],
                                            stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"nginx exited {self.process.returncode}: {self.error_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise ServerError(f"nginx did not listen within {timeout:.0f}s: {self.error_tail()}")

    def reload_crl(self, crl: Path) -> None:
        """A new CRL, as an operator deploys one: copy it in place, reload nginx."""
        shutil.copy2(crl, self.crl)
        subprocess.run([NGINX, "-p", str(self.work), "-c", str(self.work / "nginx.conf"), "-s", "reload"],
                       check=True, capture_output=True)
        time.sleep(1)

    def error_tail(self, lines: int = 20) -> str:
        path = self.work / "error.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
