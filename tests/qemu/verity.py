"""Verified boot on the QEMU board (issue 16, docs/verified-boot.md): the
control device tree U-Boot checks FITs against, the slots' signed FITs and
their dm-verity root file systems.

The pieces stand in for what the build makes on a Raspberry Pi, each with
the tool the build uses:

* **Control device tree**: QEMU's own (``-machine dumpdtb``), the stand-in
  for the firmware DTB in the signed ``boot.img``, made by the layer's
  ``pyvorin-control-dtb`` script as the build makes the Pi's: the boot logic
  as ``/config/bootcmd`` and the FIT key's public half as a ``required`` key,
  the slot FIT checked against it; QEMU hands it to U-Boot with ``-dtb``.
* **Root file system**: ext4 with its hash tree appended by ``veritysetup
  format``, with the arguments and the parameter file meta-security's
  ``dm-verity-img`` class writes (``<image>.verity.env``).
* **FIT**: the Debian kernel, the test initramfs with the layer's
  initramfs module and that parameter file (so the root hash is inside what
  is signed), QEMU's device tree; one configuration signed with the key from
  ``pyvorin keys init`` (``rpi/fit/pyvorin-fit.key``) by ``mkimage -k``.
* **Slot**: the verity image from offset 0 and the FIT in the last
  :data:`WINDOW` bytes of the partition, where the boot logic reads it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from qemu import guest, layer
from qemu.disk import MIB, make_ext4
from qemu.errors import HarnessError
from qemu.host import run

#: The FIT window at the end of each slot partition (PYVORIN_FIT_WINDOW_BLOCKS × 512).
WINDOW = int(layer.QEMU_VERITY_WORDS["PYVORIN_FIT_WINDOW_BLOCKS"], 16) * 512
#: The root file system without a kernel in /boot (64 MiB of busybox, swupdate, libraries); with its
#: hash tree it fits before the FIT window of the 144 MiB slot.
FS_SIZE = 76 * MIB
#: ext4's block size; the layer sets DM_VERITY_IMAGE_DATA_BLOCK_SIZE to it (meta-security's default is 1024).
DATA_BLOCK = 4096
HASH_BLOCK = 4096
#: Where bootm puts the (uncompressed) kernel: 2 MiB aligned, below the FIT at PYVORIN_FIT_ADDR.
KERNEL_LOAD = 0x40400000
FIT_KEY_NAME = "pyvorin-fit"
#: The test FIT's one configuration, which the boot logic boots (PYVORIN_FIT_CONF).
CONF = layer.QEMU_VERITY_WORDS["PYVORIN_FIT_CONF"]


@dataclass(frozen=True)
class Verity:
    image: Path        # ext4 followed by the hash tree
    params: Path       # KEY=VALUE, as dm-verity-img's process_verity() writes them
    root_hash: str


def verity_format(fs: Path, dest: Path) -> Verity:
    """``fs`` with its hash tree appended (``dest``), as dm-verity-img's verity_setup() makes it."""
    size = fs.stat().st_size
    if size % DATA_BLOCK:
        raise HarnessError(f"{fs}: {size} bytes is not a multiple of {DATA_BLOCK}")
    shutil.copyfile(fs, dest)
    output = run(["veritysetup", f"--data-block-size={DATA_BLOCK}", f"--hash-block-size={HASH_BLOCK}",
                  f"--hash-offset={size}", "format", dest, dest]).decode()
    # process_verity(): drop the first line, "Key name: value" -> KEY_NAME=value, then DATA_SIZE.
    params: dict[str, str] = {}
    for line in output.splitlines()[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            params[key.strip().upper().replace(" ", "_")] = "".join(value.split())
    params.update(DATA_SIZE=str(size), SEPARATE_HASH="0")
    if not params.get("ROOT_HASH"):
        raise HarnessError(f"veritysetup format printed no root hash:\n{output}")
    env = dest.with_name(dest.name + ".env")
    env.write_text("".join(f"{k}={v}\n" for k, v in params.items()))
    return Verity(dest, env, params["ROOT_HASH"])


def root_image(tree: Path, work: Path, name: str) -> Verity:
    fs = make_ext4(work / f"{name}.ext4", FS_SIZE, tree, name[:16])
    verity = verity_format(fs, work / f"{name}.verity")
    fs.unlink()
    return verity


def _its(kernel: Path, initrd: Path, fdt: Path, signed: bool, algo: str) -> str:
    def image(name: str, path: Path, kind: str, extra: str = "") -> str:
        return (f'\t\t{name} {{\n\t\t\tdata = /incbin/("{path}");\n\t\t\ttype = "{kind}";\n'
                f'\t\t\tarch = "arm64";\n\t\t\tos = "linux";\n\t\t\tcompression = "none";\n{extra}'
                f'\t\t\thash-1 {{ algo = "sha256"; }};\n\t\t}};\n')

    load = f"\t\t\tload = <{KERNEL_LOAD:#x}>;\n\t\t\tentry = <{KERNEL_LOAD:#x}>;\n"
    signature = (f'\t\t\tsignature-1 {{\n\t\t\t\talgo = "{algo}";\n\t\t\t\tkey-name-hint = "{FIT_KEY_NAME}";\n'
                 f'\t\t\t\tsign-images = "kernel", "ramdisk", "fdt";\n\t\t\t}};\n') if signed else ""
    return ("/dts-v1/;\n\n/ {\n\tdescription = \"pyvorin slot (kernel, initramfs with the root hash, DT)\";\n"
            "\t#address-cells = <1>;\n\n\timages {\n"
            + image("kernel-1", kernel, "kernel", load) + image("ramdisk-1", initrd, "ramdisk")
            + image("fdt-1", fdt, "flat_dt")
            + "\t};\n\n\tconfigurations {\n\t\tdefault = \"conf-1\";\n\t\tconf-1 {\n"
              "\t\t\tkernel = \"kernel-1\";\n\t\t\tramdisk = \"ramdisk-1\";\n\t\t\tfdt = \"fdt-1\";\n"
            + signature + "\t\t};\n\t};\n};\n")


def key_algo(key_dir: Path) -> str:
    """mkimage's algo for the RSA key in ``key_dir`` (its size decides)."""
    key = serialization.load_pem_private_key((key_dir / f"{FIT_KEY_NAME}.key").read_bytes(), None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise HarnessError(f"{key_dir / FIT_KEY_NAME}.key is not an RSA key")
    return f"sha256,rsa{key.key_size}"


def make_fit(dest: Path, kernel: Path, initrd: Path, fdt: Path, key_dir: Path | None) -> Path:
    """A FIT of ``kernel``, ``initrd`` and ``fdt``; signed with the key in ``key_dir`` (unsigned
    without)."""
    its = dest.with_suffix(".its")
    its.write_text(_its(kernel, initrd, fdt, key_dir is not None, key_algo(key_dir) if key_dir else ""))
    argv: list[str | Path] = ["mkimage", "-f", its]
    if key_dir is not None:
        argv += ["-k", key_dir]
    run([*argv, dest])
    its.unlink()
    return dest


def control_dtb(plain: Path, dest: Path, boot_command: str, fit: Path, key_dir: Path, tools: Path) -> Path:
    """QEMU's device tree made U-Boot's control device tree by the layer's own script, as the
    pyvorin-control-dtb recipe makes the Pi's: the boot logic U-Boot runs instead of
    bootcmd/altbootcmd, the FIT key as required, ``fit`` checked against it (``tools``: where
    fit_check_sign is)."""
    command = dest.with_suffix(".bootcmd")
    command.write_text(boot_command)
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"}
    run(["sh", layer.CONTROL_DTB_SCRIPT, plain, command, fit, key_dir, CONF, dest], env=env)
    return dest


def slot_image(verity: Verity, fit: Path, partition_size: int, dest: Path) -> Path:
    """The whole slot partition: the verity image from 0, the FIT at ``partition_size - WINDOW``."""
    if verity.image.stat().st_size > partition_size - WINDOW:
        raise HarnessError(f"{verity.image.name} does not fit before the FIT window")
    if fit.stat().st_size > WINDOW:
        raise HarnessError(f"{fit.name}: {fit.stat().st_size} bytes do not fit the {WINDOW}-byte FIT window")
    with open(dest, "wb") as out:
        out.truncate(partition_size)
        with open(verity.image, "rb") as source:
            shutil.copyfileobj(source, out, MIB)
        out.seek(partition_size - WINDOW)
        with open(fit, "rb") as source:
            shutil.copyfileobj(source, out, MIB)
    return dest


def initrd(kernel: guest.Kernel, build: str, verity: Verity, dest: Path) -> Path:
    """The slot's initramfs: the test initramfs with the layer's verity module and this root's hash."""
    return guest.verity_initrd(kernel.initrd, build, verity.params, layer.VERITY_INITRAMFS_MODULE, dest)
