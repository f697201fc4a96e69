"""Verified boot (issue 16), proven by booting: QEMU arm64 with U-Boot built
with the layer's verity fragment (pyvorin-verity.cfg), the layer's boot logic
in the control device tree with the FIT key from ``pyvorin keys init``, a
signed FIT per slot in the window at the end of the slot, and the layer's
initramfs module opening the slot's root through dm-verity
(tests/qemu/verity.py has how each piece stands in for the Raspberry Pi's).

The rollback test's machinery (tests/test_rollback.py) runs it: a fresh disk
per scenario, the guest's own swupdate installs the bundles, verdicts come
from the serial console and from the U-Boot environment read back with
libubootenv. Times per scenario are in docs/verified-boot.md.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from qemu import bundles, images, layer, verity
from qemu.device import Device, Firmware, firmware_for
from qemu.disk import ROOT_A, ROOT_B, Layout
from qemu.errors import HarnessError
from qemu.host import run
from qemu.images import BOARD, HW_REVISION, SLOT_A, SLOT_B
from qemu.verdicts import confirmed, fell_back, kernel_builds
from qemu.vm import RunResult

OLD = "2026.11.0"      # installed in slot A
NEW = "2026.11.1"      # the update
SLOT_SIZE = Layout().size(ROOT_A)
FIT_OFFSET = SLOT_SIZE - verity.WINDOW
VERIFIED = "sha256,rsa2048:pyvorin-fit+ OK"
ROOT_OPENED = "pyvorin-verity: /dev/vda{part} opened as /dev/mapper/pyvorin-root"

Cli = Callable[..., subprocess.CompletedProcess[str]]


class KeySet(Protocol):
    @property
    def directory(self) -> Path: ...

    @property
    def ca(self) -> Path: ...

    def signing_args(self) -> list[str]: ...


@pytest.fixture(scope="module")
def parts() -> Firmware:
    return firmware_for("QEMU verified-boot tests", verity=True)


class Slots:
    """Verity images, FITs, slot images and bundles, built once per module."""

    def __init__(self, work: Path, cli: Cli, keys: KeySet, parts: Firmware) -> None:
        self.work = work
        self.cli = cli
        self.keys = keys
        self.parts = parts
        self.fit_keys = keys.directory / "rpi/fit"
        self._verity: dict[tuple[str, str], verity.Verity] = {}
        self._fits: dict[tuple[str, str, str], Path] = {}
        # QEMU's device tree (the kernel's, inside each FIT) and the control device tree: that
        # one plus the boot logic, plus the FIT key once the first FIT is signed.
        scratch = Device(work / "dtb", parts)
        scratch.work.mkdir()
        scratch.disk.create()
        self.plain_dtb = scratch.machine().dump_dtb(work / "qemu.dtb")
        if parts.uboot.tools is None:
            raise AssertionError("the verity U-Boot build has no fit_check_sign")
        self.control_dtb = verity.control_dtb(self.plain_dtb, work / "control.dtb", layer.verity_boot_command(),
                                              self.fit("good", OLD), self.fit_keys, parts.uboot.tools)

    def root(self, role: str, version: str) -> verity.Verity:
        if (role, version) not in self._verity:
            tree = images.rootfs_tree(self.work / f"tree-{role}-{version}", role, version, self.keys.ca, None)
            self._verity[role, version] = verity.root_image(tree, self.work, f"root-{role}-{version}")
            shutil.rmtree(tree)
        return self._verity[role, version]

    def fit(self, role: str, version: str, signer: str = "ours") -> Path:
        """The slot's FIT; ``signer``: "ours", "none" (unsigned) or "other" (another FIT key)."""
        key = (role, version, signer)
        if key not in self._fits:
            root = self.root(role, version)
            initrd = verity.initrd(self.parts.kernel, version, root, self.work / f"initrd-{role}-{version}")
            keys = {"ours": self.fit_keys, "none": None, "other": self._other_keys()}[signer]
            self._fits[key] = verity.make_fit(self.work / f"{role}-{version}-{signer}.fit", self.parts.kernel.image,
                                              initrd, self.plain_dtb, keys)
        return self._fits[key]

    def _other_keys(self) -> Path:
        other = self.work / "other-keys"
        if not other.exists():
            self.cli("keys", "init", other, "--only", "rpi", "--key-size", "2048", "--organization", "Mallory",
                     check=True)
        return other / "rpi/fit"

    def slot_image(self, role: str, version: str) -> Path:
        dest = self.work / f"slot-{role}-{version}.img"
        if not dest.exists():
            verity.slot_image(self.root(role, version), self.fit(role, version), SLOT_SIZE, dest)
        return dest

    def bundle(self, role: str, version: str, *, delta_from: str | None = None, signer: str = "ours",
               devices: tuple[str, str] = (SLOT_A, SLOT_B)) -> Path:
        """A release writing the verity image from offset 0 and the FIT into the window of the other
        slot; ``delta_from``: the verity image as a ``pyvorin delta`` from that version's;
        ``devices``: slot A's and slot B's."""
        slots = "-".join(Path(device).name for device in devices)
        out = self.work / f"update-{role}-{version}-{delta_from or 'full'}-{signer}-{slots}.swu"
        if out.exists():
            return out
        directory = self.work / out.stem
        directory.mkdir()
        root = self.root(role, version)
        if delta_from is None:
            image = images.gzip_file(root.image, directory / "rootfs.verity.gz")
        else:
            image = directory / "rootfs.verity.pyvd"
            self.cli("delta", self.root("good", delta_from).image, root.image, "-o", image, check=True)
        fit = images.gzip_file(self.fit(role, version, signer), directory / "slot.fit.gz")
        spec = bundles.spec(directory, version, image, fit=(fit, FIT_OFFSET), devices=devices)
        self.cli("bundle", spec, "-o", out, *self.keys.signing_args(), check=True)
        return out


@pytest.fixture(scope="module")
def slots(tmp_path_factory: pytest.TempPathFactory, cli: Cli, keys: KeySet, parts: Firmware) -> Slots:
    return Slots(tmp_path_factory.mktemp("verity-slots"), cli, keys, parts)


@pytest.fixture
def device(tmp_path: Path, parts: Firmware, slots: Slots) -> Iterator[Callable[[], Device]]:
    """A fresh device with slot A (healthy, OLD) installed; prints the scenario's wall time."""
    started = time.monotonic()

    def make() -> Device:
        dev = Device(tmp_path, parts, dtb=slots.control_dtb)
        dev.build(slots.slot_image("good", OLD))
        return dev

    yield make
    print(f"scenario wall time {time.monotonic() - started:.1f}s")


def installed(dev: Device, bundle: Path) -> RunResult:
    """Slot A installs ``bundle`` into slot B and powers off before booting it."""
    dev.set_data(bundle, command="install-then-poweroff")
    run = dev.boot()
    assert "PYVTEST swupdate status=0" in run.lines(), run.log
    assert dev.env()["rootpart"] == "3"
    return run


def flip_byte_of_file(dev: Device, part: int, image: Path, path: str) -> None:
    """Change one byte of ``path``'s first data block in the ext4 at the start of partition ``part``,
    which holds ``image`` (debugfs reads where the block lies from the image, not from the disk):
    what someone who can write the card, or a root exploit, does to a binary."""
    blocks = run(["debugfs", "-R", f"blocks {path}", image]).decode().split()
    assert blocks and blocks[0].isdigit(), blocks
    offset = dev.disk.layout.offset(part) + int(blocks[0]) * verity.DATA_BLOCK + 100
    with open(dev.disk.path, "r+b") as disk:
        disk.seek(offset)
        byte = disk.read(1)
        disk.seek(offset)
        disk.write(bytes([byte[0] ^ 0xFF]))


def test_a_signed_fit_boots_a_verity_root(device: Callable[[], Device]) -> None:
    dev = device()
    run = dev.boot()
    assert run.boots() == ["2"], run.log
    assert VERIFIED in run.log, run.log                    # U-Boot checked the configuration's signature
    assert kernel_builds(run) == [OLD], run.log            # the kernel and initramfs of slot A's FIT
    assert ROOT_OPENED.format(part=2) in run.log, run.log
    assert f"PYVTEST booted root=/dev/mapper/pyvorin-root role=good version={OLD}" in run.lines(), run.log
    assert "PYVTEST confirm status=0" in run.lines(), run.log
    # No boot script and no kernel on the FAT partition: only the environment the boot logic wrote.
    assert dev.disk.boot_files() == ["uboot-redund.env", "uboot.env"]
    assert dev.env()["rootpart"] == "2"


def test_b_full_update_of_a_verity_slot_boots_and_confirms(device: Callable[[], Device], slots: Slots, cli: Cli,
                                                          keys: KeySet) -> None:
    bundle = slots.bundle("good", NEW)
    # Release side first: the image in the bundle matches the root hash its FIT's initramfs carries.
    verified = cli("verify", bundle, "--cert", keys.ca)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "verity: rootfs.verity.gz matches the root hash in slot.fit.gz " \
           f"({slots.root('good', NEW).root_hash})" in verified.stdout, verified.stdout
    dev = device()
    dev.set_data(bundle)
    run = dev.boot()
    assert run.boots() == ["2", "3"], run.log
    assert run.log.count(VERIFIED) >= 2, run.log
    assert kernel_builds(run) == [OLD, NEW], run.log       # B booted the FIT the update wrote
    assert ROOT_OPENED.format(part=3) in run.log, run.log
    assert f"PYVTEST booted root=/dev/mapper/pyvorin-root role=good version={NEW}" in run.lines(), run.log
    lines = run.lines()
    assert lines[-3:] == ["PYVTEST confirm status=0", lines[-2], "PYVTEST poweroff"], run.log   # B confirmed
    assert confirmed(dev.env(), "3"), dev.env()


def test_c_changed_byte_in_the_updated_root_rolls_back(device: Callable[[], Device], slots: Slots) -> None:
    dev = device()
    installed(dev, slots.bundle("good", NEW))
    flip_byte_of_file(dev, ROOT_B, slots.root("good", NEW).image, "/bin/busybox")         # /sbin/init's shell: read on every boot
    run = dev.boot()
    # Each boot of B: FIT verified, root opened, then the first read of the changed block
    # restarts the machine (restart_on_corruption); U-Boot counts it; after bootlimit, A.
    assert run.boots() == ["3", "3", "3", "2"], run.log
    assert run.log.count("reboot: Restarting system with command 'dm-verity device corrupted'") == 3, run.log
    assert f"version={NEW}" not in run.log, run.log
    assert f"PYVTEST booted root=/dev/mapper/pyvorin-root role=good version={OLD}" in run.lines(), run.log
    fell_back(dev, run.log)


@pytest.mark.slow
@pytest.mark.parametrize("signer", ["none", "other", "changed"])
def test_d_fit_not_signed_by_our_key_is_refused(device: Callable[[], Device], slots: Slots, signer: str) -> None:
    """An unsigned FIT, one signed with another key (same key name) and ours with one byte of the
    kernel changed: U-Boot refuses each, which is a failed boot, and the device rolls back."""
    dev = device()
    if signer == "changed":
        installed(dev, slots.bundle("good", NEW))
        with open(dev.disk.path, "r+b") as disk:
            disk.seek(dev.disk.layout.offset(ROOT_B) + FIT_OFFSET + 64 * 1024)   # inside kernel-1's data
            byte = disk.read(1)
            disk.seek(-1, 1)
            disk.write(bytes([byte[0] ^ 0x01]))
    else:
        installed(dev, slots.bundle("good", NEW, signer=signer))
    run = dev.boot()
    assert run.boots() == ["3", "3", "3", "2"], run.log
    assert run.log.count("pyvorin: cannot start the kernel of slot 3") == 3, run.log
    assert kernel_builds(run) == [OLD], run.log            # no kernel of B ever started
    fell_back(dev, run.log)


@pytest.mark.slow
@pytest.mark.swupdate
@pytest.mark.usefixtures("device_swupdate")
def test_e_delta_update_of_a_verity_slot_boots_and_confirms(device: Callable[[], Device], slots: Slots,
                                                           tmp_path: Path, delta_env, keys: KeySet,
                                                           cli: Cli) -> None:  # type: ignore[no-untyped-def]
    """A delta of the verity image (the hash tree is more blocks) plus the FIT, installed by the
    device's swupdate and delta applier into file-backed slots (the busybox guest has no Python
    for the applier), then booted: the rebuilt slot opens with the new root hash and confirms."""
    from pyvorin_devsim.swupdate_sandbox import SUCCESS_MARKER, SwupdateSandbox

    sandbox = SwupdateSandbox(tmp_path / "sandbox", BOARD, HW_REVISION, SLOT_SIZE,
                              initial_env={"rootpart": "2", "bootcount": "0", "upgrade_available": "0"})
    delta_env(sandbox)
    shutil.copyfile(slots.slot_image("good", OLD), sandbox.slot_a)
    bundle = slots.bundle("good", NEW, delta_from=OLD, devices=(str(sandbox.slot_a), str(sandbox.slot_b)))
    result = sandbox.install(bundle, keys.ca, "stable,copy1")
    assert result.returncode == 0 and SUCCESS_MARKER in result.output, result.output
    new = slots.root("good", NEW)
    # Release side: the rebuilt slot holds the new image and its tree, which match its root hash.
    check = cli("verity", "check", sandbox.slot_b, "--params", new.params)
    assert check.returncode == 0, check.stdout + check.stderr

    dev = device()
    assert dev.boot().boots() == ["2"]                   # the first boot writes the environment
    dev.disk.write_partition(ROOT_B, sandbox.slot_b)
    dev.set_env({"rootpart": "3", "upgrade_available": "1", "bootcount": "0"})
    booted = dev.boot()
    assert booted.boots() == ["3"], booted.log
    assert kernel_builds(booted) == [NEW], booted.log
    assert ROOT_OPENED.format(part=3) in booted.log, booted.log
    assert f"PYVTEST booted root=/dev/mapper/pyvorin-root role=good version={NEW}" in booted.lines(), booted.log
    assert confirmed(dev.env(), "3"), dev.env()


@pytest.mark.slow
def test_f_environment_cannot_change_what_boots(device: Callable[[], Device], slots: Slots) -> None:
    """uboot.env is on the writable FAT partition: whatever is written there, U-Boot still runs the
    signed boot logic, checks signatures ("verify=n" is overridden) and boots the signed command line."""
    dev = device()
    installed(dev, slots.bundle("good", NEW, signer="none"))   # slot B: an unsigned FIT, on trial
    dev.set_env({
        "bootcmd": "echo PWNED-bootcmd",
        "altbootcmd": "echo PWNED-altbootcmd",
        "preboot": "echo PWNED-preboot",
        "bootdelay": "5",
        "verify": "n",
        "bootargs": "console=ttyAMA0 init=/bin/sh",
    })
    run = dev.boot()
    assert "PWNED" not in run.log, run.log
    assert run.boots() == ["3", "3", "3", "2"], run.log     # the unsigned FIT is refused all the same
    assert kernel_builds(run) == [OLD], run.log
    assert "PYVTEST confirm status=0" in run.lines(), run.log   # /sbin/init ran, not init=/bin/sh
    fell_back(dev, run.log)


def test_boot_logic_reads_only_the_ab_state_from_the_environment() -> None:
    """Every ${variable} the boot logic expands is the A/B state or one it set itself before."""
    script = layer.verity_boot_command()
    assert layer.environment_reads(script) == {"rootpart", "bootcount", "upgrade_available"}
    # Nothing from the environment can select another kernel or command line.
    assert "${bootargs}" not in script and "run " not in script and "source" not in script


@pytest.mark.parametrize(("signer", "conf", "error"), [
    ("other", verity.CONF, "does not verify against the control device tree: Failed to verify required signature"),
    ("none", verity.CONF, "has no signed configuration: no key went into the control device tree"),
    ("ours", "conf-bcm2711-rpi-4-b.dtb", "is not a FIT with a configuration conf-bcm2711-rpi-4-b.dtb"),
])
def test_control_dtb_refuses_a_fit_it_would_not_boot(slots: Slots, parts: Firmware, tmp_path: Path, signer: str,
                                                     conf: str, error: str) -> None:
    """The build's pyvorin-control-dtb stops on a FIT its control device tree would refuse (signed
    by another key, unsigned) or that lacks the board's configuration, and writes nothing."""
    assert parts.uboot.tools is not None
    out = tmp_path / "control.dtb"
    command = tmp_path / "bootcmd"
    command.write_text(layer.verity_boot_command())
    env = {"PATH": f"{parts.uboot.tools}:/usr/sbin:/usr/bin:/sbin:/bin"}
    with pytest.raises(HarnessError, match=error):
        run(["sh", layer.CONTROL_DTB_SCRIPT, slots.plain_dtb, command, slots.fit("good", OLD, signer),
             slots.fit_keys, conf, out], env=env)
    assert not out.exists()


def test_control_dtb_carries_the_boot_logic_and_the_required_key(slots: Slots) -> None:
    """What U-Boot reads from the control device tree the tests boot with, made by the layer's script."""
    bootcmd = run(["fdtget", "-t", "s", slots.control_dtb, "/config", "bootcmd"]).decode()
    assert bootcmd.strip() == layer.verity_boot_command().strip()
    assert run(["fdtget", "-t", "s", slots.control_dtb, f"/signature/key-{verity.FIT_KEY_NAME}",
                "required"]).decode().strip() == "conf"


def test_verity_uboot_cannot_start_a_kernel_but_through_a_signed_fit(parts: Firmware) -> None:
    config = parts.uboot.config.read_text()
    for option in ("CONFIG_FIT_SIGNATURE=y", "CONFIG_BOOTDELAY=-2"):
        assert option in config.splitlines(), option
    for option in ("LEGACY_IMAGE_FORMAT", "CMD_BOOTI", "CMD_BOOTZ", "CMD_BOOTEFI", "EFI_LOADER", "CMD_SYSBOOT",
                   "CMD_PXE", "CMD_SOURCE", "USE_PREBOOT"):
        assert f"CONFIG_{option}=y" not in config.splitlines(), option     # off, or not even offered
