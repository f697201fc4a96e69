"""The arm64 guest from Debian packages: kernel, an initramfs that loads the
few modules a virtio root needs, and root file system trees.

``mmdebstrap --variant=extract`` unpacks arm64 packages without running
anything, so no qemu-user is needed. The trees keep only the programs the
scenarios run and the shared libraries they need (found with readelf)."""

from __future__ import annotations

import gzip
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pyvorin_devsim import cache, device_swupdate
from qemu.errors import HarnessError
from qemu.host import run

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
#: The kernel, busybox, the tools the scenarios run, and the runtime libraries of
#: the device's swupdate build (device_swupdate.build(ARM64)), which replaces
#: Debian's swupdate and libubootenv.
PACKAGES = ("linux-image-arm64", "busybox-static", "util-linux", "curl", "libconfig9", "libjson-c5", "liblua5.4-0",
            "libarchive13", "libzstd1", "libssl3", "libsystemd0", "libyaml-0-2", "zlib1g", "cryptsetup-bin")
#: Loaded in this order by the initramfs (dependencies are added before each).
MODULES = ("virtio_mmio", "virtio_blk", "crc32c_generic", "ext4", "vfat", "nls_cp437", "nls_ascii", "i6300esb")
#: What the verified-boot initramfs adds (device-mapper's verity target and veritysetup, which
#: the layer's initramfs module runs): modules loaded after MODULES, programs by their path.
VERITY_MODULES = ("dm_mod", "dm_verity")
VERITY_PROGRAMS = ("sbin/veritysetup",)
#: Dynamically linked programs copied into every root file system, by their path in the extracted tree.
# curl: the static busybox's wget crashes in glibc's resolver (static NSS).
PROGRAMS = ("bin/findmnt", "usr/bin/curl")
#: The device's own programs, from the arm64 build of swupdate 2026.05.1 and libubootenv 0.3.5.
DEVICE_PROGRAMS = ("usr/bin/swupdate", "usr/bin/fw_printenv", "usr/bin/fw_setenv")
#: busybox applets linked into /bin (the root is read-only: no --install at boot).
APPLETS = ("sh", "mount", "umount", "mkdir", "cat", "echo", "sleep", "date", "wget", "httpd", "watchdog", "kill",
           "reboot", "poweroff", "sync", "ip", "rm", "mv", "ls", "sed", "grep", "readlink", "true", "false", "head",
           "tr", "cut", "insmod", "switch_root", "uname", "dd", "env", "printf", "test", "[", "ps", "pidof", "seq")
_LIB_DIRS = ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu")
_LOADER = "lib/ld-linux-aarch64.so.1"
FILES = Path(__file__).with_name("files")


@dataclass(frozen=True)
class Kernel:
    image: Path      # vmlinuz (an uncompressed-header arm64 Image, gzip inside; booti takes it)
    initrd: Path     # newc cpio, gzip
    version: str


def _extract(out: Path) -> None:
    run(["mmdebstrap", "--quiet", "--variant=extract", "--arch=arm64", f"--include={','.join(PACKAGES)}",
         SUITE, out / "tree", MIRROR], timeout=1800)


def tree() -> Path:
    """The extracted arm64 packages (cached)."""
    return cache.entry("debian-arm64", cache.key(SUITE, *PACKAGES), _extract) / "tree"


def _kernel_version(root: Path) -> str:
    versions = sorted(p.name for p in (root / "lib/modules").iterdir())
    if len(versions) != 1:
        raise HarnessError(f"expected one kernel in {root}/lib/modules, found {versions}")
    return versions[0]


def _module_index(moddir: Path) -> dict[str, Path]:
    return {p.name[:-3].replace("-", "_"): p for p in moddir.rglob("*.ko")}


def _depends(module: Path) -> list[str]:
    match = re.search(rb"(?:^|\0)depends=([^\0]*)", module.read_bytes())
    return [d.replace("-", "_") for d in match.group(1).decode().split(",") if d] if match else []


def _load_order(index: Mapping[str, Path], wanted: Iterable[str]) -> list[str]:
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name not in index:
            raise HarnessError(f"kernel module {name} not found")
        for dep in _depends(index[name]):
            visit(dep)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def _cpio_bytes(staging: Path) -> bytes:
    names = sorted(str(p.relative_to(staging)) for p in staging.rglob("*"))
    return run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=staging,
               input_bytes=("\n".join(names) + "\n").encode())


def _cpio(staging: Path, out: Path) -> None:
    out.write_bytes(gzip.compress(_cpio_bytes(staging), 6, mtime=0))


def _staging(dest: Path, build: str) -> Path:
    """An empty directory beside ``dest`` holding ``/pyvorin-build`` = ``build``, which the initramfs prints."""
    staging = dest.with_name(dest.name + ".stamp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "pyvorin-build").write_text(build + "\n")
    return staging


def _appended(base: Path, staging: Path, dest: Path) -> Path:
    """``base`` with ``staging`` appended as a second archive. The kernel reads concatenated cpio
    archives (a later file replaces an earlier one); GNU cpio pads each to 512 bytes, so the second
    one starts aligned."""
    data = gzip.decompress(base.read_bytes()) + _cpio_bytes(staging)
    shutil.rmtree(staging)
    dest.write_bytes(gzip.compress(data, 6, mtime=0))
    return dest


def stamped_initrd(base: Path, build: str, dest: Path) -> Path:
    """``base`` with ``/pyvorin-build`` = ``build`` added.

    Every root slot carries its own copy, so the serial log shows which slot's
    /boot U-Boot loaded."""
    return _appended(base, _staging(dest, build), dest)


def verity_initrd(base: Path, build: str, params: Path, module: Path, dest: Path) -> Path:
    """``base`` (the initramfs of :func:`kernel`) with what verified boot adds to it:
    ``/init.d/85-pyvorin_verity`` (the layer's initramfs-framework ``module``), its
    ``/usr/share/misc/dm-verity.env`` (``params``, the image's dm-verity parameters), veritysetup with its
    libraries, the device-mapper modules, and the build stamp of :func:`stamped_initrd`."""
    root = tree()
    staging = _staging(dest, build)
    for sub in ("init.d", "usr/share/misc", "modules", "lib"):
        (staging / sub).mkdir(parents=True)
    shutil.copy2(module, staging / "init.d/85-pyvorin_verity")
    shutil.copy2(params, staging / "usr/share/misc/dm-verity.env")
    index = _module_index(root / "lib/modules" / _kernel_version(root))
    in_base = set(_load_order(index, MODULES))
    order = _load_order(index, (*MODULES, *VERITY_MODULES))
    for name in order:
        if name not in in_base:
            shutil.copy2(index[name], staging / "modules" / f"{name}.ko")
    # Replaces the base archive's list.
    (staging / "modules/order").write_text("\n".join(order) + "\n")
    device = device_swupdate.build(device_swupdate.ARM64).root
    _install_programs(staging, [(root / p, p) for p in VERITY_PROGRAMS], device)
    (staging / _LOADER).symlink_to("aarch64-linux-gnu/ld-linux-aarch64.so.1")
    return _appended(base, staging, dest)


def _build_kernel(out: Path) -> None:
    root = tree()
    version = _kernel_version(root)
    shutil.copy2(root / f"boot/vmlinuz-{version}", out / "vmlinuz")
    index = _module_index(root / "lib/modules" / version)
    staging = out / "initramfs"
    for sub in ("bin", "dev", "proc", "sys", "newroot", "modules"):
        (staging / sub).mkdir(parents=True)
    shutil.copy2(root / "bin/busybox", staging / "bin/busybox")
    order = _load_order(index, MODULES)
    for name in order:
        shutil.copy2(index[name], staging / "modules" / f"{name}.ko")
    (staging / "modules/order").write_text("\n".join(order) + "\n")
    init = staging / "init"
    shutil.copy2(FILES / "initramfs-init", init)
    init.chmod(0o755)
    _cpio(staging, out / "initrd.img")
    shutil.rmtree(staging)
    (out / "version").write_text(version)


def kernel() -> Kernel:
    """The Debian arm64 kernel and our initramfs (cached)."""
    inputs = cache.key(SUITE, *PACKAGES, *MODULES, (FILES / "initramfs-init").read_bytes(),
                       Path(__file__).read_bytes())
    out = cache.entry("kernel", inputs, _build_kernel)
    return Kernel(image=out / "vmlinuz", initrd=out / "initrd.img", version=(out / "version").read_text())


def _needed(path: Path) -> list[str]:
    dynamic = run(["aarch64-linux-gnu-readelf", "-d", path]).decode()
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)


def _find_lib(root: Path, name: str, device: Path) -> Path:
    if (device / "usr/lib" / name).exists():  # libubootenv 0.3.5, libswupdate
        return device / "usr/lib" / name
    for sub in _LIB_DIRS:
        if (root / sub / name).exists():
            return root / sub / name
    raise HarnessError(f"shared library {name} not found in the arm64 tree")


def _copy_file(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)      # follows symlinks: the soname gets the real file
    dest.chmod(mode)


def base_tree(dest: Path) -> None:
    """busybox, the dynamically linked programs and their libraries, the mount points."""
    root = tree()
    for sub in ("bin", "usr/bin", "usr/libexec", "etc", "proc", "sys", "dev", "run", "tmp", "boot", "data",
                "usr/lib/swupdate/conf.d", "etc/swupdate", "lib/aarch64-linux-gnu"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    _copy_file(root / "bin/busybox", dest / "bin/busybox", 0o755)
    for applet in APPLETS:
        (dest / "bin" / applet).symlink_to("busybox")
    (dest / "sbin").symlink_to("bin")
    (dest / "var").mkdir()
    (dest / "var/lock").symlink_to("/run/lock")
    (dest / "var/tmp").symlink_to("/tmp")
    device = device_swupdate.build(device_swupdate.ARM64).root
    _install_programs(dest, [(root / p, p) for p in PROGRAMS] + [(device / p, p) for p in DEVICE_PROGRAMS], device)
    (dest / _LOADER).symlink_to("aarch64-linux-gnu/ld-linux-aarch64.so.1")


def _install_programs(dest: Path, programs: Iterable[tuple[Path, str]], device: Path) -> None:
    """Each (file, path under dest) with the shared libraries it needs, found with readelf, in
    /lib/aarch64-linux-gnu, and the dynamic loader there."""
    root = tree()
    seen: set[str] = set()
    pending: list[Path] = []
    for source, path in programs:
        _copy_file(source, dest / path, 0o755)
        pending.append(source)
    while pending:
        for name in _needed(pending.pop()):
            if name in seen:
                continue
            seen.add(name)
            lib = _find_lib(root, name, device)
            _copy_file(lib, dest / "lib/aarch64-linux-gnu" / name, 0o755)
            pending.append(lib)
    _copy_file(root / _LOADER, dest / "lib/aarch64-linux-gnu/ld-linux-aarch64.so.1", 0o755)

