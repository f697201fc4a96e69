"""The test disk: an MBR with boot (FAT), root A, root B and data, laid out
as meta-pyvorin's wic file lays out the SD card of a Raspberry Pi, and the
U-Boot environment read back from it with the device's fw_printenv (libubootenv 0.3.5)."""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyvorin_devsim import device_swupdate
from qemu.errors import HarnessError
from qemu.host import run

SECTOR = 512
MIB = 1024 * 1024
BOOT, ROOT_A, ROOT_B, DATA = 1, 2, 3, 4


@dataclass(frozen=True)
class Layout:
    """Partition sizes in MiB; partition 1 starts at 1 MiB."""

    boot: int = 64
    root: int = 144
    data: int = 96

    def sizes(self) -> list[int]:
        return [self.boot, self.root, self.root, self.data]

    def offset(self, number: int) -> int:
        return (1 + sum(self.sizes()[: number - 1])) * MIB

    def size(self, number: int) -> int:
        return self.sizes()[number - 1] * MIB

    def total(self) -> int:
        return (1 + sum(self.sizes())) * MIB


def _mbr(layout: Layout) -> bytes:
    table = bytearray(SECTOR)
    types = {BOOT: 0x0C, ROOT_A: 0x83, ROOT_B: 0x83, DATA: 0x83}
    for number in (BOOT, ROOT_A, ROOT_B, DATA):
        # CHS fields at their "use LBA" maximum; only the LBA fields count.
        entry = struct.pack("<B3sB3sII", 0x80 if number == BOOT else 0, b"\xfe\xff\xff", types[number],
                            b"\xfe\xff\xff", layout.offset(number) // SECTOR, layout.size(number) // SECTOR)
        table[446 + 16 * (number - 1): 462 + 16 * (number - 1)] = entry
    table[510:512] = b"\x55\xaa"
    return bytes(table)


def make_fat(path: Path, size: int, files: Mapping[str, Path]) -> Path:
    run(["mkfs.vfat", "-n", "BOOT", "-C", path, str(size // 1024)])
    for name, source in files.items():
        run(["mcopy", "-i", path, source, f"::{name}"])
    return path


def make_ext4(path: Path, size: int, tree: Path | None, label: str, options: Sequence[str] = ()) -> Path:
    """ext4 of ``size`` bytes filled from ``tree``; 4 KiB blocks (small images get 1 KiB otherwise).

    ``options``: more mke2fs options, e.g. the image's EXTRA_IMAGECMD:ext4."""
    path.unlink(missing_ok=True)
    argv: list[str | Path] = ["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", label,
                              "-E", "root_owner=0:0", *options]
    if tree is not None:
        argv += ["-d", tree]
    run([*argv, path, str(size // 1024) + "k"], env={"E2FSPROGS_FAKE_TIME": "1700000000"})
    return path


class Disk:
    """A raw disk image file with the four partitions."""

    def __init__(self, path: Path, layout: Layout = Layout()) -> None:
        self.path = path
        self.layout = layout

    def create(self) -> None:
        with open(self.path, "wb") as handle:
            handle.truncate(self.layout.total())
            handle.write(_mbr(self.layout))

    def write_partition(self, number: int, image: Path) -> None:
        data_size = image.stat().st_size
        if data_size > self.layout.size(number):
            raise HarnessError(f"{image.name}: {data_size} bytes do not fit partition {number}")
        with open(self.path, "r+b") as disk, open(image, "rb") as source:
            disk.seek(self.layout.offset(number))
            while chunk := source.read(MIB):
                disk.write(chunk)

    def wipe(self, number: int, length: int = 4 * MIB) -> None:
        """Zero the start of a partition: its superblock and first group descriptors."""
        with open(self.path, "r+b") as disk:
            disk.seek(self.layout.offset(number))
            disk.write(bytes(length))

    def boot_files(self) -> list[str]:
        listing = run(["mdir", "-b", "-i", f"{self.path}@@{self.layout.offset(BOOT)}", "::"]).decode()
        return sorted(line.rsplit("/", 1)[-1] for line in listing.split())

    def read_boot_file(self, name: str, dest: Path) -> Path:
        run(["mcopy", "-n", "-i", f"{self.path}@@{self.layout.offset(BOOT)}", f"::{name}", dest])
        return dest

    def set_env(self, names: list[str], size: int, values: Mapping[str, str]) -> None:
        """Write ``values`` into the U-Boot environment with the device's fw_setenv, as anyone who
        can write the card can: both copies must exist (the first boot writes them)."""
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "fw_env.config"
            copies = [self.read_boot_file(name, Path(tmp) / name) for name in names]
            config.write_text("".join(f"{copy} 0x0 {size:#x}\n" for copy in copies))
            script = Path(tmp) / "script"
            script.write_text("".join(f"{name}={value}\n" for name, value in values.items()))  # 0.3.5: name=value
            device = device_swupdate.build()
            run([device.tool("fw_setenv"), "-c", config, "-s", script], env=device.env)
            for name, copy in zip(names, copies, strict=True):
                run(["mcopy", "-o", "-i", f"{self.path}@@{self.layout.offset(BOOT)}", copy, f"::{name}"])
        # fw_setenv exits 0 on a script line it cannot use: check what the next reader sees.
        written = self.env(names, size)
        if any(written.get(name) != value for name, value in values.items()):
            raise HarnessError(f"fw_setenv did not write {dict(values)}; the environment has {written}")

    def env(self, names: list[str], size: int) -> dict[str, str]:
        """The U-Boot environment as libubootenv reads it from the boot partition's copies."""
        present = set(self.boot_files())
        missing = [n for n in names if n not in present]
        if len(missing) == len(names):
            raise HarnessError(f"no U-Boot environment on the boot partition (files: {sorted(present)})")
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "fw_env.config"
            lines = []
            for name in names:
                copy = Path(tmp) / name
                if name in present:
                    self.read_boot_file(name, copy)
                else:
                    copy.write_bytes(b"\xff" * size)   # an unreadable copy: libubootenv uses the other
                lines.append(f"{copy} 0x0 {size:#x}")
            config.write_text("\n".join(lines) + "\n")
            device = device_swupdate.build()  # libubootenv 0.3.5, as on the device
            text = run([device.tool("fw_printenv"), "-c", config], env=device.env).decode()
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
