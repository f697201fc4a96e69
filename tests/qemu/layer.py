"""The layer's own A/B files, filled in for the QEMU board exactly as the
recipes fill them in for a Raspberry Pi (sed of @@NAME@@ / @NAME@ words).
Rendering refuses a word left unfilled or a value the file does not use, so a
template change cannot silently bypass the test."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from pyvorin_devsim import device_swupdate
from qemu.errors import HarnessError

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "meta-pyvorin"
RPI_BSP = LAYER / "dynamic-layers/raspberrypi/recipes-bsp"
BOOT_SCRIPT = RPI_BSP / "rpi-u-boot-scr/files/boot.cmd.in"
FW_ENV_CONFIG = RPI_BSP / "u-boot/files/pyvorin-fw_env.config"
VERITY_BOOT = RPI_BSP / "pyvorin-control-dtb/files/pyvorin-verity-boot.cmd.in"
CONTROL_DTB_SCRIPT = RPI_BSP / "pyvorin-control-dtb/files/pyvorin-control-dtb"
VERITY_INITRAMFS_MODULE = LAYER / "recipes-core/initrdscripts/files/pyvorin-verity"
CONFIRM = LAYER / "recipes-pyvorin/pyvorin-confirm/files"

#: The QEMU board's values for the words of boot.cmd.in. The Raspberry Pi
#: values are in rpi-u-boot-scr_pyvorin.inc; the slot logic is not a word.
QEMU_BOOT_WORDS: Mapping[str, str] = {
    "BOOT_MEDIA": "virtio",
    "PYVORIN_BOOT_DEVPART": "0:1",
    "PYVORIN_BOOT_DEV": "0",
    "PYVORIN_ENV_FILE": "uboot.env",
    "PYVORIN_ENV_FILE_REDUND": "uboot-redund.env",
    "PYVORIN_SLOT_A_PART": "2",
    "PYVORIN_SLOT_B_PART": "3",
    "PYVORIN_BOOTLIMIT": "3",
    "PYVORIN_ROOT_PREFIX": "/dev/vda",
    "PYVORIN_PANIC_TIMEOUT": "1",
    "PYVORIN_BASE_BOOTARGS": "setenv bootargs console=ttyAMA0 quiet",
    "KERNEL_IMAGETYPE": "vmlinuz",
    # The Debian kernel needs an initramfs (virtio, ext4 are modules): it comes
    # from the same slot as the kernel, like the modules it carries.
    "PYVORIN_LOAD_INITRD": "load virtio 0:${rootpart} ${ramdisk_addr_r} /boot/initrd.img && "
                           "setenv pyvorin_initrd ${ramdisk_addr_r}:${filesize}",
    "KERNEL_BOOTCMD": "booti",
    "PYVORIN_FDT_ADDR": "${fdtcontroladdr}",
}


#: The QEMU board's values for the words of pyvorin-verity-boot.cmd.in (verified boot).
QEMU_VERITY_WORDS: Mapping[str, str] = {
    **{k: QEMU_BOOT_WORDS[k] for k in ("BOOT_MEDIA", "PYVORIN_BOOT_DEVPART", "PYVORIN_BOOT_DEV", "PYVORIN_ENV_FILE",
                                       "PYVORIN_ENV_FILE_REDUND", "PYVORIN_SLOT_A_PART", "PYVORIN_SLOT_B_PART",
                                       "PYVORIN_BOOTLIMIT", "PYVORIN_ROOT_PREFIX", "PYVORIN_PANIC_TIMEOUT")},
    "PYVORIN_BOOTARGS": "console=ttyAMA0 quiet",
    # 64 MiB of 512-byte blocks, in hex as U-Boot's read and setexpr take it.
    "PYVORIN_FIT_WINDOW_BLOCKS": "0x20000",
    # RAM is 0x40000000-0x7fffffff: the FIT above the kernel's load address (0x40400000) and its 64 MiB.
    "PYVORIN_FIT_ADDR": "0x48000000",
    # The test's FIT has one configuration (the build's has one per board device tree).
    "PYVORIN_FIT_CONF": "conf-1",
}


def render(path: Path, words: Mapping[str, str], marker: str = "@@") -> str:
    """``path`` with every ``<marker>NAME<marker>`` replaced from ``words``."""
    text = path.read_text()
    pattern = re.compile(re.escape(marker) + r"([A-Z][A-Z0-9_]*)" + re.escape(marker))
    used = set(pattern.findall(text))
    if used != set(words):
        raise HarnessError(f"{path.name}: words in the file {sorted(used)} != words given {sorted(words)}")
    return pattern.sub(lambda m: words[m.group(1)], text)


def boot_script(bootargs: str | None = None) -> str:
    """The boot script for the QEMU board; ``bootargs`` replaces its kernel command line base."""
    words = dict(QEMU_BOOT_WORDS)
    if bootargs is not None:
        words["PYVORIN_BASE_BOOTARGS"] = f"setenv bootargs {bootargs}"
    return render(BOOT_SCRIPT, words)


def verity_boot_command(words: Mapping[str, str] = QEMU_VERITY_WORDS) -> str:
    """The verified-boot logic as the control device tree's /config/bootcmd holds it: filled in,
    comment and blank lines dropped (U-Boot's hush runs the lines as a script)."""
    lines = render(VERITY_BOOT, words).splitlines()
    return "\n".join(line for line in lines if line.strip() and not line.lstrip().startswith("#")) + "\n"


def environment_reads(script: str) -> set[str]:
    """The variables a boot command expands before it sets them itself: what it takes from the
    (unsigned) environment."""
    setters = r"(?:^\s*setenv|\bsetexpr) (\w+)|\bpart size \S+ \S+ \S+ (\w+)"
    first_set: dict[str, int] = {}
    for match in re.finditer(setters, script, re.M):
        first_set.setdefault(match.group(1) or match.group(2), match.start())
    return {match.group(1) for match in re.finditer(r"\$\{(\w+)\}", script)
            if not (match.group(1) in first_set and first_set[match.group(1)] < match.start())}


def env_size() -> int:
    """The size fw_env.config gives both environment copies (they must agree)."""
    sizes = {int(line.split()[2], 0) for line in FW_ENV_CONFIG.read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    if len(sizes) != 1:
        raise HarnessError(f"{FW_ENV_CONFIG.name}: copies of different sizes {sizes}")
    return sizes.pop()


def env_files() -> list[str]:
    """Names of the environment copies on the boot partition, in fw_env.config order."""
    return [Path(line.split()[0]).name for line in FW_ENV_CONFIG.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def watchdog_seconds() -> int:
    text = (CONFIRM / "50-pyvorin-watchdog.conf").read_text()
    match = re.search(r"^RuntimeWatchdogSec=(\d+)s$", text, re.M)
    if not match:
        raise HarnessError("50-pyvorin-watchdog.conf: no RuntimeWatchdogSec=<n>s")
    return int(match.group(1))


def rootfs_files(slot_a: str, slot_b: str) -> dict[str, tuple[str, int]]:
    """Layer files of a root file system: path -> (content, mode)."""
    return {
        "usr/libexec/pyvorin-confirm": ((CONFIRM / "pyvorin-confirm").read_text(), 0o755),
        "etc/default/pyvorin-confirm": (render(CONFIRM / "pyvorin-confirm.default", {"BOOTLOADER": "uboot", "INSTALLED_USTATE": "0"}, "@"),
                                        0o644),
        "etc/fw_env.config": (FW_ENV_CONFIG.read_text(), 0o644),
        # As the swupdate bbappend's do_install renders them.
        "usr/lib/swupdate/conf.d/50-pyvorin": (device_swupdate.render_installed("50-pyvorin"), 0o644),
        "usr/libexec/pyvorin-swupdate-select": (device_swupdate.render_installed(
            "pyvorin-swupdate-select", {"${PYVORIN_SLOT_A_DEVICE}": slot_a, "${PYVORIN_SLOT_B_DEVICE}": slot_b}),
            0o755),
    }
