"""One run of the QEMU arm64 machine: U-Boot as firmware, the test disk, an
i6300esb watchdog that resets the machine, the serial console in a file.

A run lasts until the guest powers off (QEMU exits), across any number of
reboots and watchdog resets, or until the test cuts the power (kill)."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from qemu.errors import HarnessError
from qemu.host import run

import layer_gate


@dataclass(frozen=True)
class RunResult:
    log: str
    seconds: float
    exit_code: int | None   # None: the power was cut

    def boots(self) -> list[str]:
        """Root partitions U-Boot's boot script started, in order."""
        return re.findall(r"pyvorin: booting slot (\d+) \(bootcount", self.log)

    def lines(self, prefix: str = "PYVTEST") -> list[str]:
        return [line.strip() for line in self.log.splitlines() if line.strip().startswith(prefix)]


@dataclass(frozen=True)
class Network:
    """QEMU user networking: the guest's virtio NIC behind NAT, TCP ports forwarded from 127.0.0.1.

    ``forwards`` maps a host port (on 127.0.0.1 only) to a guest port. The guest
    reaches nothing outside (``restrict=on`` drops every packet it sends out)
    but ``outbound``: (address, port, host port), a TCP address on the guest's
    network whose connections reach that port on the host's 127.0.0.1, one
    ``socat`` per connection (QEMU's plain chardev forward takes a single one)."""

    forwards: tuple[tuple[int, int], ...]
    outbound: tuple[tuple[str, int, int], ...] = ()

    def argv(self, *, with_dtb: bool = True) -> list[str]:
        rules = "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}" for host, guest in self.forwards)
        rules += "".join(f",guestfwd=tcp:{address}:{port}-cmd:socat STDIO TCP:127.0.0.1:{host}"
                         for address, port, host in self.outbound)
        return ["-netdev", f"user,id=net0,restrict=on{rules}", "-device", "virtio-net-device,netdev=net0"]


class Machine:
    def __init__(self, firmware: Path, disk: Path, log: Path, *, network: Network | None = None, cpus: int = 1,
                 memory_mib: int = 1024, dtb: Path | None = None) -> None:
        self.firmware = firmware
        #: The device tree QEMU hands the firmware instead of its own (U-Boot's control DT: OF_BOARD).
        self.dtb = dtb
        self.disk = disk
        self.log = log
        self.network = network
        self.cpus = cpus
        self.memory_mib = memory_mib
        self._process: subprocess.Popen[bytes] | None = None
        self._started = 0.0

    def argv(self, *, with_dtb: bool = True) -> list[str]:
        # TCG, one CPU by default: -smp 2 is slower on two host cores for the
        # busybox guests; systemd's parallel start-up gains from two.
        nic = self.network.argv() if self.network else ["-nic", "none"]
        return ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-smp", str(self.cpus),
                "-m", str(self.memory_mib), "-nodefaults", "-display", "none", "-monitor", "none", *nic,
                "-serial", f"file:{self.log}",
                "-bios", str(self.firmware), *(["-dtb", str(self.dtb)] if self.dtb and with_dtb else []),
                "-drive", f"if=none,file={self.disk},format=raw,id=disk0",
                "-device", "virtio-blk-device,drive=disk0",
                "-device", "i6300esb", "-action", "watchdog=reset"]

    def dump_dtb(self, dest: Path) -> Path:
        """The device tree QEMU generates for this machine (what U-Boot gets without ``dtb``); the
        disk must exist."""
        run([*self.argv(with_dtb=False), "-machine", f"dumpdtb={dest}"], timeout=60)
        return dest

    def start(self) -> None:
        # The guest's watchdog and boot counter race the clock: never beside
        # the background layer gate (its image builds may overlap it, this may not).
        layer_gate.wait_for_background()
        self.log.write_bytes(b"")
        self._started = time.monotonic()
        with open(self.log.with_suffix(".qemu.txt"), "wb") as messages:
            self._process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=messages,
                                             stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_bytes().decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> None:
        """Until ``pattern`` (a regex) shows on the console; raises on timeout or exit."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if compiled.search(self.text()):
                return
            if self._process is None or self._process.poll() is not None:
                raise HarnessError(f"QEMU exited before {pattern!r} showed:\n{self.text()[-3000:]}")
            time.sleep(0.2)
        raise HarnessError(f"{pattern!r} did not show within {timeout:.0f}s:\n{self.text()[-3000:]}")

    def wait(self, timeout: float) -> RunResult:
        """Until the guest powers off."""
        if self._process is None:
            raise HarnessError("machine not started")
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.cut_power()
            raise HarnessError(f"guest did not power off within {timeout:.0f}s:\n{self.text()[-4000:]}") from exc
        if self._process.returncode != 0:
            messages = self.log.with_suffix(".qemu.txt").read_text(errors="replace")
            raise HarnessError(f"qemu exited {self._process.returncode}: {messages}")
        return RunResult(self.text(), time.monotonic() - self._started, self._process.returncode)

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def cut_power(self) -> RunResult:
        """SIGKILL: no flush, no shutdown — what pulling the plug does to the guest."""
        if self._process is None:
            raise HarnessError("machine not started")
        self._process.kill()
        self._process.wait()
        return RunResult(self.text(), time.monotonic() - self._started, None)

