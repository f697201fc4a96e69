"""The test device: a disk with the layer's boot script on the boot
partition, root A installed, root B empty, and a data partition through which
the test hands the guest an update bundle."""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qemu import guest, host, layer, uboot, vm
from qemu.disk import BOOT, DATA, ROOT_A, ROOT_B, Disk, Layout, make_ext4, make_fat
from qemu.errors import HarnessError
from qemu.host import run

#: A run (boot .. power-off, with its reboots) never legitimately takes this long.
RUN_TIMEOUT = 420.0


@dataclass(frozen=True)
class Firmware:
    uboot: uboot.UBoot
    kernel: guest.Kernel


def firmware(*, verity: bool = False) -> Firmware:
    """U-Boot, kernel and initramfs, built or taken from the cache; ``verity``: U-Boot with the
    layer's verified-boot fragment."""
    built = uboot.build(verity=verity)
    if built.env_size != layer.env_size():
        raise HarnessError(f"CONFIG_ENV_SIZE {built.env_size:#x} != fw_env.config size {layer.env_size():#x}")
    return Firmware(built, guest.kernel())


def firmware_for(what: str, *, verity: bool = False) -> Firmware:
    """:func:`firmware` for a test module; ``what`` needs QEMU: without the host tools it is
    unavailable (a failure under CI, where scripts/test.sh installs them)."""
    from helpers import unavailable  # noqa: PLC0415 - tests/ is on the path only for the tests

    missing = host.missing_tools()
    if missing:
        unavailable(f"{what} need {', '.join(missing)}; scripts/test.sh installs them when run as root")
    started = time.monotonic()
    built = firmware(verity=verity)
    print(f"firmware ready in {time.monotonic() - started:.0f}s")
    return built


class Device:
    def __init__(self, work: Path, parts: Firmware, layout: Layout | None = None, dtb: Path | None = None) -> None:
        self.work = work
        self.parts = parts
        #: U-Boot's control device tree instead of QEMU's (verified boot: the boot logic and FIT key).
        self.dtb = dtb
        self.disk = Disk(work / "disk.img", layout or Layout())
        self.runs = 0

    def build(self, root_a: Path, bootargs: str | None = None, data_files: Mapping[str, str] | None = None) -> None:
        """Fresh disk: boot partition (no environment yet: U-Boot starts on its defaults), root A,
        /data empty but for ``data_files`` (path -> text: what a factory puts there).

        The boot partition holds the boot script; with verified boot (``dtb``) nothing: the boot
        logic is in the device tree."""
        files: dict[str, Path] = {}
        if self.dtb is None:
            script = self.work / "boot.cmd"
            script.write_text(layer.boot_script(bootargs))
            run(["mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-n", "pyvorin A/B", "-d", script,
                 self.work / "boot.scr"])
            files["boot.scr"] = self.work / "boot.scr"
        # Only the boot script: kernel and initramfs live in /boot of each slot (or its FIT).
        fat = make_fat(self.work / "boot.vfat", self.disk.layout.size(BOOT), files)
        self.disk.create()
        self.disk.write_partition(BOOT, fat)
        self.disk.write_partition(ROOT_A, root_a)
        self.set_data(None, files=data_files)
        fat.unlink()

    def set_data(self, bundle: Path | None, command: str = "install", files: Mapping[str, str] | None = None) -> None:
        """The data partition, empty or holding ``bundle`` as update.swu and the command for the guest,
        and ``files``."""
        tree = self.work / "data-tree"
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir()
        for name, text in (files or {}).items():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            (tree / name).write_text(text)
        if bundle is not None:
            shutil.copy2(bundle, tree / "update.swu")
            (tree / "command").write_text(command + "\n")
        image = make_ext4(self.work / "data.ext4", self.disk.layout.size(DATA), tree, "data")
        self.disk.write_partition(DATA, image)
        image.unlink()
        shutil.rmtree(tree)

    def destroy_root_b(self) -> None:
        self.disk.wipe(ROOT_B)

    def machine(self) -> vm.Machine:
        self.runs += 1
        return vm.Machine(self.parts.uboot.binary, self.disk.path, self.work / f"serial-{self.runs}.log", dtb=self.dtb)

    def boot(self, timeout: float = RUN_TIMEOUT) -> vm.RunResult:
        machine = self.machine()
        machine.start()
        return machine.wait(timeout)

    def env(self) -> dict[str, str]:
        return self.disk.env(layer.env_files(), layer.env_size())

    def set_env(self, values: Mapping[str, str]) -> None:
        self.disk.set_env(layer.env_files(), layer.env_size(), values)

