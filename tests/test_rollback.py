"""A/B updates that cannot brick, proven by booting: QEMU arm64 with a U-Boot
that has the real boot counter, the layer's boot script, environment layout,
pyvorin-confirm, 50-pyvorin and pyvorin-swupdate-select, and bundles signed by
``pyvorin bundle`` installed by the real (Debian arm64) swupdate.

Every scenario starts from a fresh disk; verdicts come from the serial
console and from the U-Boot environment read back on the host with
fw_printenv. The first run builds U-Boot, the kernel and the initramfs
(several minutes) into the cache; later runs take seconds per boot.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from qemu import bundles, images, layer
from qemu.device import Device, Firmware, firmware_for
from qemu.disk import Layout
from qemu.guest import Kernel
from qemu.verdicts import confirmed, fell_back, kernel_builds
from qemu.vm import RunResult

OLD = "2026.11.0"      # installed in slot A
NEW = "2026.11.1"      # the update
#: The Debian arm64 kernel (32 MiB, an uncompressed Image) and initramfs are in every slot's /boot.
ROOTFS_SIZE = 136 * 1024 * 1024
#: Incompressible bytes that make the power-cut install last long enough to be cut.
PADDING = 8 * 1024 * 1024
assert ROOTFS_SIZE <= Layout().root * 1024 * 1024


@pytest.fixture(scope="module")
def parts() -> Firmware:
    return firmware_for("QEMU rollback tests")


# The conftest fixtures, by shape: "conftest" is not importable by name once
# tests/agent/conftest.py is collected too.
Cli = Callable[..., subprocess.CompletedProcess[str]]


class KeySet(Protocol):
    @property
    def ca(self) -> Path: ...

    def signing_args(self) -> list[str]: ...


class Images:
    """Root file system images and bundles, built once per session."""

    def __init__(self, work: Path, cli: Cli, keys: KeySet, kernel: Kernel) -> None:
        self.work = work
        self.cli = cli
        self.keys = keys
        self.kernel = kernel
        self._made: dict[tuple[str, str, int], Path] = {}

    def rootfs(self, role: str, version: str, padding: int = 0) -> Path:
        key = (role, version, padding)
        if key not in self._made:
            self._made[key] = images.rootfs_image(self.work, role, version, self.keys.ca, self.kernel,
                                                      ROOTFS_SIZE, padding)
        return self._made[key]

    def bundle(self, role: str, version: str, padding: int = 0) -> Path:
        out = self.work / f"update-{role}-{version}-{padding}.swu"
        if not out.exists():
            directory = self.work / f"bundle-{role}-{version}-{padding}"
            directory.mkdir()
            gz = images.gzip_file(self.rootfs(role, version, padding), directory / "rootfs.ext4.gz")
            spec = bundles.spec(directory, version, gz)
            self.cli("bundle", spec, "-o", out, *self.keys.signing_args(), check=True)
        return out


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, cli: Cli, keys: KeySet, parts: Firmware) -> Images:
    return Images(tmp_path_factory.mktemp("qemu-images"), cli, keys, parts.kernel)


@pytest.fixture
def device(tmp_path: Path, parts: Firmware, made: Images) -> Iterator[Callable[[], Device]]:
    """A fresh device with root A (healthy, OLD) installed; prints the scenario's wall time."""
    started = time.monotonic()

    def make() -> Device:
        dev = Device(tmp_path, parts)
        dev.build(made.rootfs("good", OLD))
        return dev

    yield make
    print(f"scenario wall time {time.monotonic() - started:.1f}s")


def test_a_plain_boot_of_slot_a(device: Callable[[], Device]) -> None:
    dev = device()
    run = dev.boot()
    assert run.boots() == ["2"], run.log
    assert kernel_builds(run) == [OLD], run.log      # the kernel came from slot A's /boot
    assert f"PYVTEST booted root=/dev/vda2 role=good version={OLD}" in run.lines(), run.log
    assert dev.disk.boot_files() == ["boot.scr", "uboot-redund.env", "uboot.env"]  # no kernel on the FAT
    assert "PYVTEST confirm status=0" in run.lines(), run.log
    assert "slot not on trial" in run.log
    env = dev.env()
    # The boot script completed U-Boot's default environment and wrote both copies.
    assert env["rootpart"] == "2"
    assert env["bootlimit"] == "3"
    assert env["altbootcmd"] == "setenv pyvorin_rollback 1; run bootcmd"
    assert env.get("upgrade_available", "0") == "0"
    assert {"uboot.env", "uboot-redund.env"} <= set(dev.disk.boot_files())


def test_b_signed_update_confirms_and_stays(device: Callable[[], Device], made: Images) -> None:
    dev = device()
    dev.set_data(made.bundle("good", NEW))
    run = dev.boot()
    assert run.boots() == ["2", "3"], run.log
    assert kernel_builds(run) == [OLD, NEW], run.log  # B booted the kernel it was installed with
    lines = run.lines()
    assert "PYVTEST swupdate status=0" in lines, run.log
    assert f"-N {OLD}" in run.log, "50-pyvorin must pass the running version to swupdate -N"
    assert f"PYVTEST booted root=/dev/vda3 role=good version={NEW}" in lines, run.log
    assert lines[-3:] == ["PYVTEST confirm status=0", lines[-2], "PYVTEST poweroff"], run.log  # B confirmed
    env = dev.env()
    assert confirmed(env, "3"), env
    assert env["ustate"] == "0", env          # SWUpdate's INSTALLED (1), confirmed to OK (0)
    assert "recovery_status" not in env

    again = dev.boot()
    assert again.boots() == ["3"], again.log
    assert kernel_builds(again) == [NEW], again.log
    assert "slot not on trial" in again.log
    assert confirmed(dev.env(), "3")

    # Anti-downgrade: the running NEW refuses OLD; nothing switches.
    dev.set_data(made.bundle("good", OLD))
    refused = dev.boot()
    assert "PYVTEST swupdate status=0" not in refused.lines(), refused.log
    assert any(line.startswith("PYVTEST swupdate status=") for line in refused.lines()), refused.log
    assert set(refused.boots()) == {"3"}, refused.log
    assert confirmed(dev.env(), "3")


def failed_trial(device: Callable[[], Device], made: Images, role: str) -> tuple[Device, RunResult]:
    """Install a ``role`` image from A; B must get its bootlimit boots, then A again."""
    dev = device()
    dev.set_data(made.bundle(role, NEW))
    run = dev.boot()
    # 1 boot of A (install), bootlimit=3 counted boots of B, then altbootcmd.
    assert run.boots() == ["2", "3", "3", "3", "2"], run.log
    # B's own kernel on every trial boot; after the rollback A's kernel again.
    assert kernel_builds(run) == [OLD, NEW, NEW, NEW, OLD], run.log
    return dev, run


def test_c_unconfirmed_slot_falls_back_after_bootlimit(device: Callable[[], Device], made: Images) -> None:
    dev, run = failed_trial(device, made, "unhealthy")
    assert run.lines().count("PYVTEST confirm status=1") == 3, run.log
    fell_back(dev, run.log)


@pytest.mark.slow
def test_d_destroyed_slot_falls_back(device: Callable[[], Device], made: Images) -> None:
    dev = device()
    dev.set_data(made.bundle("good", NEW), command="install-then-poweroff")
    installed = dev.boot()
    assert "PYVTEST swupdate status=0" in installed.lines(), installed.log
    assert dev.env()["rootpart"] == "3"
    dev.destroy_root_b()
    run = dev.boot()
    assert run.boots() == ["3", "3", "3", "2"], run.log
    # The kernel lives in the destroyed slot: U-Boot cannot load it and
    # resets, and that boot counts; only A's kernel ever starts.
    assert run.log.count("pyvorin: cannot start the kernel of slot 3") == 3, run.log
    assert kernel_builds(run) == [OLD], run.log
    assert "Kernel panic" not in run.log, run.log
    fell_back(dev, run.log)


@pytest.mark.slow
def test_e_kernel_panic_falls_back(device: Callable[[], Device], made: Images) -> None:
    dev, run = failed_trial(device, made, "panic")
    assert len(re.findall(r"Kernel panic - not syncing: sysrq triggered crash", run.log)) == 3, run.log
    fell_back(dev, run.log)


@pytest.mark.slow
def test_f_userspace_hang_watchdog_falls_back(device: Callable[[], Device], made: Images) -> None:
    dev, run = failed_trial(device, made, "hang")
    # Nothing in the guest rebooted: every B boot ended in a watchdog reset.
    b_boots = run.log.split("pyvorin: booting slot 3")[1:]
    assert all("PYVTEST hanging" in boot and "PYVTEST reboot" not in boot for boot in b_boots), run.log
    fell_back(dev, run.log)


@pytest.mark.slow
def test_g_power_cut_during_install_then_retry(device: Callable[[], Device], made: Images) -> None:
    dev = device()
    bundle = made.bundle("good", NEW, PADDING)
    dev.set_data(bundle)
    machine = dev.machine()
    machine.start()
    machine.wait_for(r"Found installer for stream rootfs\.ext4\.gz", timeout=300)
    time.sleep(1)
    cut = machine.cut_power()
    assert "END INSTALLING STREAMING" not in cut.log, "the install finished before the power cut"
    env = dev.env()
    assert env["rootpart"] == "2", env                  # never switched to the half-written slot
    assert env.get("recovery_status") == "in_progress", env

    dev.set_data(None)
    after = dev.boot()
    assert after.boots() == ["2"], after.log
    assert "clearing recovery_status=in_progress" in after.log
    env = dev.env()
    assert "recovery_status" not in env and env["rootpart"] == "2", env

    dev.set_data(bundle)
    retry = dev.boot()
    assert retry.boots() == ["2", "3"], retry.log
    assert kernel_builds(retry) == [OLD, NEW], retry.log
    assert "PYVTEST swupdate status=0" in retry.lines(), retry.log
    assert confirmed(dev.env(), "3")


def test_rpi_recipe_fills_the_same_words_as_the_qemu_board() -> None:
    """rpi-u-boot-scr_pyvorin.inc seds every word of boot.cmd.in (else its bbfatal fires)."""
    inc = (layer.RPI_BSP / "rpi-u-boot-scr/rpi-u-boot-scr_pyvorin.inc").read_text()
    filled = set(re.findall(r"-e 's(.)@@([A-Z_]+)@@\1", inc))
    template = set(re.findall(r"@@([A-Z_]+)@@", layer.BOOT_SCRIPT.read_text()))
    assert {word for _, word in filled} == template == set(layer.QEMU_BOOT_WORDS)


def test_environment_size_agrees_between_uboot_and_libubootenv() -> None:
    """A mismatch makes U-Boot reject the file and silently boot its default environment."""
    fragment = (layer.RPI_BSP / "u-boot/files/pyvorin-ab.cfg").read_text()
    size = re.search(r"^CONFIG_ENV_SIZE=(\S+)$", fragment, re.M)
    assert size and int(size.group(1), 0) == layer.env_size()
    assert layer.env_files() == ["uboot.env", "uboot-redund.env"]
    for name, option in (("uboot.env", "CONFIG_ENV_FAT_FILE"), ("uboot-redund.env", "CONFIG_ENV_FAT_FILE_REDUND")):
        assert f'{option}="{name}"' in fragment


def test_kernel_comes_from_the_booted_slot() -> None:
    """Kernel and modules update and roll back together only if the kernel is read from ${rootpart}."""
    script = layer.BOOT_SCRIPT.read_text()
    assert "fatload" not in script
    assert re.search(r"^if load @@BOOT_MEDIA@@ @@PYVORIN_BOOT_DEV@@:\$\{rootpart\} \$\{kernel_addr_r\} "
                     r"/boot/@@KERNEL_IMAGETYPE@@ ", script, re.M)
    assert "${rootpart}" in layer.QEMU_BOOT_WORDS["PYVORIN_LOAD_INITRD"]
    fragment = (layer.RPI_BSP / "u-boot/files/pyvorin-ab.cfg").read_text()
    assert {"CONFIG_CMD_FS_GENERIC=y", "CONFIG_FS_EXT4=y", "CONFIG_CMD_EXT4=y"} <= set(fragment.splitlines())
    image = (layer.LAYER / "recipes-core/images/pyvorin-image.bb").read_text()
    # The Raspberry Pi image puts the kernel into the slot and no longer onto the FAT partition
    # (with verified boot it is in the slot's FIT instead; the layer gate checks both on the parsed image).
    assert "IMAGE_INSTALL:append:rpi = \"${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-update', '' if " \
           "'pyvorin-verity' in d.getVar('DISTRO_FEATURES').split() else ' kernel-image', '', d)}\"" in image
    assert "IMAGE_BOOT_FILES:remove:rpi = \"${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-update', " \
           "'${KERNEL_IMAGETYPE}', '', d)} \\\n" in image
