"""A fleet device on the host: the device's swupdate build, started by
meta-swupdate's ``swupdate.sh`` with the layer's ``50-pyvorin`` and
``60-pyvorin-fleet`` (rendered as the bbappend renders them for an image
built with PYVORIN_FLEET_URL), its ``swupdate.cfg``, file-backed A/B slots and
U-Boot environment (:class:`SwupdateSandbox`), and an identity made by the
layer's ``pyvorin-identity`` and signed by ``pyvorin fleet sign``.

Every device runs in its own mount namespace with its own /run, so several
poll the server at once. The slots are bound at ``/run/pyvorin-slot-a`` and
``-b`` in each namespace: one release names them for every device, as one
release names ``/dev/mmcblk0p2`` and ``p3`` for every Raspberry Pi.

A boot of the device is a start of the daemon; the reboot after an install
(``-p``) is a stub that records the request, and the test "boots" the other
slot: the layer's pyvorin-confirm against the slot's environment, then the
daemon again with that slot running (its ``-e`` copy and its release)."""

from __future__ import annotations

import os
import subprocess
import textwrap
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyvorin_devsim import device_swupdate
from pyvorin_devsim.swupdate_sandbox import SwupdateSandbox
from test_swupdate_daemon import device_usr

from helpers import ROOT

IDENTITY = ROOT / "meta-pyvorin/recipes-pyvorin/pyvorin-identity/files/pyvorin-identity"
CONFIRM = ROOT / "meta-pyvorin/recipes-pyvorin/pyvorin-confirm/files/pyvorin-confirm"
SLOT_A, SLOT_B = "/run/pyvorin-slot-a", "/run/pyvorin-slot-b"

Cli = Callable[..., subprocess.CompletedProcess[str]]


# The daemon's life in its namespace: start it the device's way, run until told to stop (or a bound).
_SCRIPT = textwrap.dedent("""\
    /usr/lib/swupdate/swupdate.sh > "$LOG" 2>&1 &
    daemon=$!
    i=0
    while [ ! -e "$STOP" ] && kill -0 $daemon 2>/dev/null && [ $i -lt "$TICKS" ]; do
        sleep 0.2; i=$((i + 1))
    done
    kill $daemon 2>/dev/null
    i=0
    while kill -0 $daemon 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 $daemon 2>/dev/null
    wait
""")


@dataclass
class FleetDevice:
    device_id: str
    root: Path
    ca_cert: Path
    fleet_ca: Path
    url: str
    board: str = "raspberrypi4-64"
    retry_wait: int = 2
    sandbox: SwupdateSandbox = field(init=False)
    thread: threading.Thread | None = None
    boots: int = 0

    def __post_init__(self) -> None:
        self.sandbox = SwupdateSandbox(self.root / "sbx", board=self.board,
                                       initial_env={"rootpart": "2", "bootcount": "0", "upgrade_available": "0"})

    @property
    def identity(self) -> Path:
        return self.root / "identity"

    def _identity_env(self) -> dict[str, str]:
        return {"PATH": os.environ["PATH"], "PYVORIN_IDENTITY_DIR": str(self.identity),
                "PYVORIN_DEVICE_ID": self.device_id, "PYVORIN_FLEET_CA": str(self.fleet_ca)}

    def enrol(self, cli: Cli, fleet_keys: Path) -> None:
        """First boot's identity, signed by the fleet CA, installed: as docs/fleet.md enrols a device."""
        made = subprocess.run([str(IDENTITY), "ensure"], env=self._identity_env(), capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        cert = self.root / "device.crt"
        cli("fleet", "sign", fleet_keys, self.identity / "device.csr", "-o", cert, check=True)
        done = subprocess.run([str(IDENTITY), "install", str(cert)], env=self._identity_env(), capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr

    def _usr(self, running: str, version: str) -> Path:
        """The read-only root of the slot ``running`` ("a" or "b") holding release ``version``."""
        layer = device_usr(self.root / f"usr-{self.boots}", self.ca_cert, version, self.board, running=running)
        files: dict[str, tuple[bytes, int]] = {}
        fleet = {"${PYVORIN_IDENTITY_DIR}": str(self.identity), "${PYVORIN_FLEET_URL}": self.url,
                 "${PYVORIN_FLEET_TENANT}": "DEFAULT", "${PYVORIN_FLEET_POLL}": "2",
                 "${base_sbindir}": "/usr/sbin", "${PYVORIN_FLEET_CA_PATH}": str(self.fleet_ca),
                 # The layer's default is 30 s; a test cannot wait for four of those.
                 "${PYVORIN_FLEET_RETRY_WAIT}": str(self.retry_wait)}
        files["lib/swupdate/conf.d/60-pyvorin-fleet"] = (
            device_swupdate.render_installed("60-pyvorin-fleet", fleet).encode(), 0o644)
        files["lib/swupdate/swupdate.cfg"] = (
            device_swupdate.render_installed("pyvorin-suricatta.cfg", fleet).encode(), 0o644)
        # The device's reboot, which the host must not take: record the request.
        files["sbin/reboot"] = (f"#!/bin/sh\necho \"$@\" >> {self.root}/reboots\n".encode(), 0o755)
        for name, (content, mode) in files.items():
            (layer / name).parent.mkdir(parents=True, exist_ok=True)
            (layer / name).write_bytes(content)
            (layer / name).chmod(mode)
        return layer

    def boot(self, running: str, version: str, bound: float = 600) -> None:
        """Power on with slot ``running`` holding ``version``: the daemon runs until :meth:`power_off`."""
        assert self.thread is None, "already running"
        self.boots += 1
        self.sandbox.usr_layer = self._usr(running, version)
        (self.root / "stop").unlink(missing_ok=True)
        ns_dir = self.sandbox.new_run_dir()
        script = ns_dir / "run.sh"
        script.write_text(_SCRIPT)
        log = self.root / f"daemon-{self.boots}.log"
        command = ["sh", "-c", f'LOG={log}; STOP={self.root}/stop; TICKS={int(bound * 5)}; . {script}']

        def run() -> None:
            self.sandbox.run(ns_dir, command, needed=[self.root, self.ca_cert, self.fleet_ca],
                             timeout=bound + 30, exclusive=False,
                             run_files={"pyvorin-slot-a": self.sandbox.slot_a, "pyvorin-slot-b": self.sandbox.slot_b})

        self.thread = threading.Thread(target=run, name=self.device_id)
        self.thread.start()

    def power_off(self) -> None:
        if self.thread is None:
            return
        (self.root / "stop").touch()
        self.thread.join(60)
        assert not self.thread.is_alive(), f"{self.device_id}: the daemon did not stop"
        self.thread = None

    def log(self) -> str:
        path = self.root / f"daemon-{self.boots}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def reboots(self) -> int:
        path = self.root / "reboots"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def env(self) -> dict[str, str]:
        return self.sandbox.printenv()

    def confirm(self, ready_url: str) -> subprocess.CompletedProcess[str]:
        """The layer's pyvorin-confirm on this boot, as an image with a fleet configures it."""
        runtime = self.root / f"confirm-{self.boots}"
        runtime.mkdir(exist_ok=True)
        build = device_swupdate.build()
        variables = {"PATH": f"{build.bindir}:{os.environ['PATH']}", **build.env,
                     "RUNTIME_DIRECTORY": str(runtime), "PYVORIN_CONFIRM_URL": ready_url,
                     "PYVORIN_CONFIRM_TIMEOUT": "10", "PYVORIN_CONFIRM_INTERVAL": "1",
                     "PYVORIN_CONFIRM_BOOTLOADER": "uboot",
                     "PYVORIN_CONFIRM_FW_ENV_CONFIG": str(self.sandbox.fw_env_config),
                     "PYVORIN_CONFIRM_HOOKS": str(runtime / "no-hooks"),
                     "PYVORIN_CONFIRM_INSTALLED_USTATE": "2"}
        return subprocess.run(["/bin/sh", str(CONFIRM)], env=variables, capture_output=True, text=True,
                              timeout=60, check=False)
