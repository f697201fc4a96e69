"""Root file system images of the test device: the Debian arm64 programs,
the layer's A/B files and the test init, one role per image."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from qemu import guest, layer
from qemu.disk import make_ext4

SLOT_A = "/dev/vda2"
SLOT_B = "/dev/vda3"
BOARD = "qemu-arm64"
HW_REVISION = "1.0"
ROLES = ("good", "unhealthy", "panic", "hang")
#: Test values for the layer's confirm settings: a failing health check gives up quickly.
CONFIRM_TIMEOUT = 8


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def rootfs_tree(dest: Path, role: str, version: str, ca_cert: Path, kernel: guest.Kernel | None,
                padding: int = 0) -> Path:
    """A root file system tree; ``padding`` bytes of incompressible data make installs take longer.

    /boot holds the kernel and an initramfs stamped with ``version``: U-Boot
    boots them from the slot, as it boots the Raspberry Pi's kernel-image.
    Without ``kernel`` /boot stays empty: with verified boot they are in the slot's FIT."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role}")
    guest.base_tree(dest)
    if kernel is not None:
        # As oe-core's kernel-image package lays it out: the versioned file and a
        # symlink with the name the boot script loads (U-Boot's ext4 follows it).
        shutil.copy2(kernel.image, dest / f"boot/vmlinuz-{kernel.version}")
        (dest / "boot/vmlinuz").symlink_to(f"vmlinuz-{kernel.version}")
        guest.stamped_initrd(kernel.initrd, version, dest / "boot/initrd.img")
    for name, (text, mode) in layer.rootfs_files(SLOT_A, SLOT_B).items():
        _write(dest / name, text, mode)
    with open(dest / "etc/default/pyvorin-confirm", "a") as handle:
        handle.write(f"PYVORIN_CONFIRM_TIMEOUT={CONFIRM_TIMEOUT}\nPYVORIN_CONFIRM_INTERVAL=1\n")
    _write(dest / "sbin/init", (guest.FILES / "init").read_text(), 0o755)
    # Where the device keeps them: on the read-only root (pyvorin-image stamps
    # IMAGE_VERSION, pyvorin-hwrevision and the swupdate package install the rest).
    _write(dest / "usr/lib/os-release",
           f'ID=pyvorin\nNAME="Pyvorin Edge OS"\nVERSION_ID="{version}"\nIMAGE_VERSION={version}\n')
    (dest / "etc/os-release").unlink(missing_ok=True)
    (dest / "etc/os-release").symlink_to("../usr/lib/os-release")
    _write(dest / "usr/share/swupdate/hwrevision", f"{BOARD} {HW_REVISION}\n")
    _write(dest / "etc/pyvorin-test/role", role + "\n")
    _write(dest / "etc/pyvorin-test/watchdog-sec", f"{layer.watchdog_seconds()}\n")
    (dest / "usr/share/swupdate").mkdir(parents=True, exist_ok=True)
    shutil.copy2(ca_cert, dest / "usr/share/swupdate/ca.crt")
    if padding:
        (dest / "padding.bin").write_bytes(_noise(padding))
    return dest


def _noise(size: int) -> bytes:
    import random

    return random.Random(size).randbytes(size)


def rootfs_image(work: Path, role: str, version: str, ca_cert: Path, kernel: guest.Kernel, size: int,
                 padding: int = 0) -> Path:
    """An ext4 image of a role's tree, ``size`` bytes."""
    tree = rootfs_tree(work / f"tree-{role}-{version}", role, version, ca_cert, kernel, padding)
    image = make_ext4(work / f"rootfs-{role}-{version}.ext4", size, tree, f"root-{role}")
    shutil.rmtree(tree)
    return image


def gzip_file(source: Path, dest: Path) -> Path:
    with open(source, "rb") as src, open(dest, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as out:
        shutil.copyfileobj(src, out, 1 << 20)
    return dest
