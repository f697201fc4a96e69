"""The booted device: slot images of the whole root file system
(tests/qemu/system.py), a disk laid out like the Pi's SD card, U-Boot with the
layer's boot script, and a way in (SSH as the image's administrator, through
QEMU's port forwarding on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyvorin_devsim import cache, device_swupdate
from qemu import guest, oe_native, system, vm
from qemu.device import Device, Firmware
from qemu.disk import Layout, make_ext4
from qemu.errors import HarnessError

from helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
#: The administrator the layer gate configures (PYVORIN_ADMIN_USER in scripts/layer-gate.py).
ADMIN = "edgeadmin"
#: Root slots hold the Debian stand-in (~340 MiB); /data the /etc overlay, journal and agent state.
LAYOUT = Layout(boot=64, root=448, data=192)
#: The Pi's MACHINE and PYVORIN_HW_REVISION: pyvorin-hwrevision writes them, bundles must name them.
BOARD = "raspberrypi4-64"
#: The kernel command line: systemd's status and journald's warnings on the serial console, so a
#: boot that never lets SSH in still explains itself in the console's tail.
BOOTARGS = ("console=ttyAMA0 systemd.show_status=error systemd.journald.forward_to_console=1 "
            "systemd.journald.max_level_console=info")
HW_REVISION = "1.0"
#: The rollout server the QEMU board's image is built for (PYVORIN_FLEET_URL in
#: scripts/layer-gate-checks.sh), and the address the guest finds it at: the
#: host's loopback, through QEMU (the site's DNS would name it; the test's
#: /etc/hosts does).
FLEET_HOST = "fleet.pyvorin.test"
FLEET_ADDRESS = "10.0.2.100"


def _tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        digest.update(str(item.relative_to(path)).encode() + b"\0")
        if item.is_symlink():
            digest.update(b"L" + str(item.readlink()).encode())
        elif item.is_file():
            digest.update(b"F" + item.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class DeviceKeys:
    """The update keys the device trusts (``pyvorin keys init``), kept in the cache: the slot images
    carry the CA, so fresh keys per run would rebuild them."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "swupdate/ca.crt"

    @property
    def aes(self) -> Path:
        return self.directory / "swupdate/aes.key"

    @property
    def fleet_ca(self) -> Path:
        return self.directory / "fleet/ca.crt"

    def signing_args(self) -> list[str]:
        return ["--key", str(self.directory / "swupdate/signer.key"),
                "--cert", str(self.directory / "swupdate/signer.crt")]


def device_keys() -> DeviceKeys:
    def make(out: Path) -> None:
        subprocess.run([sys.executable, "-m", "pyvorin", "keys", "init", str(out / "keys"), "--only", "swupdate,fleet",
                        "--key-size", "2048"], check=True, capture_output=True,
                       env={"PYTHONPATH": str(ROOT / "scripts"), "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})

    return DeviceKeys(cache.entry("device-keys", cache.key("swupdate,fleet 2048 v2"), make) / "keys")


@dataclass(frozen=True)
class Slots:
    """ext4 images of the root file system for two releases; only os-release differs."""

    old: Path
    new: Path
    old_version: str
    new_version: str
    build_seconds: float | None
    #: ``new`` whose agent exits at once: a bad release, as pyvorin-confirm sees one.
    broken: Path | None = None


def slot_images(exported: Path, keys: DeviceKeys, kernel: guest.Kernel, old: str, new: str) -> Slots:
    """The slot images for ``old`` and ``new`` (cached by every input)."""
    seconds: list[float] = []

    def build(out: Path) -> None:
        started = time.monotonic()
        tree = out / "tree"
        stamps = {"VERSION_ID": old, "IMAGE_VERSION": old}
        # The image's own mkfs options (EXTRA_IMAGECMD:ext4), as image_types.bbclass passes them.
        options = json.loads((exported / "image/image.json").read_text()).get("ext4_options", "").split()
        system.build_tree(tree, exported, system.Keys(keys.ca, keys.aes if keys.aes.exists() else None, keys.fleet_ca), stamps)
        for version in (old, new):
            release = tree / "usr/lib/os-release"
            text = release.read_text()
            for name in stamps:
                text = text.replace(f"{name}={old}", f"{name}={version}")
            release.write_text(text)
            # The slot's initramfs says which release's /boot U-Boot loaded (guest.stamped_initrd).
            guest.stamped_initrd(kernel.initrd, version, tree / "boot/initrd.img")
            make_ext4(out / f"rootfs-{version}.ext4", LAYOUT.root * 1024 * 1024, tree, "root", options)
        agent = tree / "usr/bin/pyv-edge-agent"
        agent.write_text("#!/bin/sh\necho 'a broken release: the agent exits' >&2\nexit 1\n")
        make_ext4(out / "rootfs-broken.ext4", LAYOUT.root * 1024 * 1024, tree, "root", options)
        shutil.rmtree(tree)
        seconds.append(time.monotonic() - started)

    inputs = cache.key(_tree_digest(exported), *system._debian_command(Path("T")), keys.ca.read_bytes(), keys.fleet_ca.read_bytes(),
                       kernel.initrd.read_bytes(), device_swupdate.build(device_swupdate.ARM64).root.name,
                       (Path(__file__).with_name("system.py")).read_bytes(), *oe_native.inputs(), Path(__file__).read_bytes(), old, new)
    out = cache.entry("device-slots", inputs, build)
    return Slots(out / f"rootfs-{old}.ext4", out / f"rootfs-{new}.ext4", old, new,
                 seconds[0] if seconds else None, out / "rootfs-broken.ext4")


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Booted:
    """A running device and the administrator's SSH into it."""

    def __init__(self, device: Device, admin_key: Path) -> None:
        self.device = device
        self.admin_key = admin_key
        self.ssh_port = free_port()
        self.agent_port = free_port()
        #: Where the host's rollout server listens for this device (FLEET_ADDRESS:443 in the guest).
        self.fleet_port = free_port()
        self.machine: vm.Machine | None = None

    def power_on(self) -> vm.Machine:
        self.device.runs += 1
        network = vm.Network(((self.ssh_port, 22), (self.agent_port, 8080)),
                             outbound=((FLEET_ADDRESS, 443, self.fleet_port),))
        self.machine = vm.Machine(self.device.parts.uboot.binary, self.device.disk.path,
                                  self.device.work / f"serial-{self.device.runs}.log", network=network, cpus=2,
                                  memory_mib=1536)
        self.machine.start()
        return self.machine

    def ssh_argv(self, user: str = ADMIN, *options: str) -> list[str]:
        return ["ssh", "-F", "/dev/null", "-p", str(self.ssh_port), "-i", str(self.admin_key),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
                *options, f"{user}@127.0.0.1"]

    def ssh(self, command: str, *, user: str = ADMIN, options: Sequence[str] = (), timeout: float = 120,
            input_file: Path | None = None) -> Completed:
        argv = [*self.ssh_argv(user, *options), command]
        stdin = open(input_file, "rb") if input_file else subprocess.DEVNULL  # noqa: SIM115 - closed below
        try:
            result = subprocess.run(argv, stdin=stdin, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"ssh {command!r} did not finish within {timeout:.0f}s\n{self.console_tail()}") from exc
        finally:
            if input_file:
                stdin.close()  # type: ignore[union-attr]
        return Completed(tuple(argv), result.returncode, result.stdout.decode(errors="replace"),
                         result.stderr.decode(errors="replace"))

    def sudo(self, command: str, timeout: float = 120) -> str:
        """``command`` as root through the administrator's sudo; its output, or HarnessError."""
        done = self.ssh(f"sudo -n sh -c {_quote(command)}", timeout=timeout)
        if done.returncode != 0:
            raise HarnessError(f"{command!r} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done.stdout

    def answers(self, timeout: float) -> bool:
        """Whether the administrator's login works now (a machine going down may not even refuse)."""
        try:
            return self.ssh("true", timeout=timeout).returncode == 0
        except HarnessError:
            return False

    def wait_for_ssh(self, timeout: float) -> float:
        """Seconds from power-on until the administrator's login works."""
        assert self.machine is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.machine.running():
                raise HarnessError(f"the machine stopped before SSH came up:\n{self.console_tail()}")
            if self.answers(timeout=30):
                return self.machine.elapsed()
            time.sleep(2)
        raise HarnessError(f"no SSH login within {timeout:.0f}s:\n{self.console_tail()}")

    def console_tail(self, lines: int = 80) -> str:
        if self.machine is None:
            return "(not started)"
        return "\n".join(self.machine.text().splitlines()[-lines:])

    def explain(self) -> str:
        """For a failed assertion: the console's tail and, if SSH still works, the failed units' journal."""
        parts = [f"--- serial console (last lines) ---\n{self.console_tail()}"]
        try:
            failed = self.ssh("sudo -n systemctl --failed --no-legend --plain; "
                              "for u in $(sudo -n systemctl --failed --no-legend --plain | cut -d' ' -f1); do "
                              "sudo -n journalctl -b --no-pager -n 40 -u \"$u\"; done", timeout=60)
            parts.append(f"--- failed units ---\n{failed.stdout}{failed.stderr}")
        except HarnessError as exc:
            parts.append(f"(no SSH: {exc})")
        return "\n".join(parts)

    def power_off(self, timeout: float = 120) -> vm.RunResult:
        assert self.machine is not None
        self.ssh("sudo -n systemctl poweroff", timeout=30)
        return self.machine.wait(timeout)

    def reboot(self) -> None:
        """A clean reboot; returns once the old system stopped answering."""
        self.ssh("sudo -n systemctl reboot", timeout=30)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.answers(timeout=15):
            time.sleep(1)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


#: QEMU's virt board has no serial number in its device tree: like an integrator of such a board,
#: the factory gives the device its ID in /etc/default/pyvorin-identity, on the /etc overlay.
DEVICE_ID = "qemu-0000c0ffee"
FACTORY_DATA = {"overlay-etc/upper/default/pyvorin-identity": f"PYVORIN_DEVICE_ID={DEVICE_ID}\n"}


@contextmanager
def booted(work: Path, parts: Firmware, slot_a: Path, admin_key: Path) -> Iterator[Booted]:
    """A fresh device (root A installed, B empty, /data holding only the factory's board settings),
    powered on; cut off at the end."""
    device = Device(work, parts, LAYOUT)
    device.build(slot_a, BOOTARGS, FACTORY_DATA)
    running = Booted(device, admin_key)
    running.power_on()
    try:
        yield running
    finally:
        if running.machine is not None and running.machine.running():
            running.machine.cut_power()
