"""The whole device's root file system, for the booted-device test
(tests/test_device_boot.py): Debian 12 arm64 packages standing in for the
image's oe-core packages, and the layer's runtime content installed by the
recipes' own install code.

No BitBake build is possible here (nothing upstream can be fetched), so:

* **Debian stand-ins** (:data:`DEBIAN_PACKAGES`): systemd, udev, dbus,
  apparmor, openssh-server, nftables, auditd, python3, curl, sudo and the
  runtime libraries of the device's swupdate, from ``mmdebstrap`` with
  qemu-user running the maintainer scripts (binfmt_misc), cached by input hash
  (about 3 minutes cold).
* **The layer, as the recipes install it**: the layer gate exports, for the
  machine, each recipe's ``do_compile``/``do_install`` as BitBake expands them,
  its local sources as BitBake unpacks them, and per package its FILES,
  SYSTEMD_SERVICE and useradd parameters (scripts/layer-gate-install.py).
  Here each recipe's useradd runs, then its do_compile and do_install run in
  the arm64 tree (chroot, qemu-user); the files each installed package's FILES
  claims are copied in, in PACKAGES order as package.bbclass splits them; its
  services are enabled as systemd.bbclass's postinst does. Nothing is
  transcribed from a recipe, so this cannot drift from the layer.
  C code is the exception: swupdate and libubootenv are the device's own
  build (pyvorin_devsim.device_swupdate, arm64), bspatch is cross-compiled
  from the recipe's source with its patch; their do_install still runs.
* **The image's rootfs steps**: oe-core's ``read_only_rootfs_hook``,
  ``set_systemd_default_target`` and ``empty_var_volatile`` as exported, then
  ``create_overlayfs_etc_preinit``'s template filled with the image's values.
  The gate expands everything with the QEMU board's disk names (/dev/vda for
  the Pi's /dev/mmcblk0): slot devices and the /data device.
* oe-core's read-only layout that Debian lacks: base-files' fstab and the
  ``/var/log``, ``/var/tmp`` links to ``/var/volatile``, volatile-binds and
  systemd-conf through the same recipe export.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from pyvorin_devsim import cache, device_swupdate
from qemu import guest, oe_native
from qemu.errors import HarnessError
from qemu.host import run

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
#: Debian packages standing in for what tests/image-contents/pyvorin.txt lists
#: (systemd, openssh-sshd, apparmor, nftables, auditd, python3-*, curl, sudo for
#: pyvorin-admin, openssl-bin for pyvorin-identity, zstd for the delta applier) plus the runtime libraries of the device's swupdate build.
DEBIAN_PACKAGES = ("systemd", "systemd-sysv", "dbus", "udev", "kmod", "iproute2", "apparmor", "openssh-server",
                   "nftables", "auditd", "python3", "curl", "sudo", "libconfig9", "libjson-c5", "liblua5.4-0",
                   "libarchive13", "libzstd1", "libssl3", "libsystemd0", "libyaml-0-2", "zlib1g", "libbz2-1.0",
                   "openssl", "zstd")
_DPKG_EXCLUDES = ("path-exclude=/usr/share/man/*", "path-exclude=/usr/share/doc/*",
                  "path-exclude=/usr/share/locale/*", "path-exclude=/usr/share/info/*")
#: Compiled code comes from builds made here, not from the recipe's do_compile (a cross toolchain of its own).
PREBUILT = ("swupdate", "bsdiff")
#: base-files would replace Debian's /etc basics; only oe-core's read-only layout is taken from it.
BASE_FILES_TAKEN = ("/etc/fstab", "/etc/hosts", "/etc/hostname", "/var/log", "/var/tmp", "/var/volatile")
TARGET_WORKDIR = "/tmp/pyvorin-install"
#: oe-core and meta-oe packaging that a read-only root relies on and Debian's packages lack:
#: (recipe, its source file, where its do_install puts it). The recipes come as RECIPE:sources;
#: each line is checked against the recipe's exported do_install.
OE_PACKAGING = (
    ("systemd", "00-create-volatile.conf", "/usr/lib/tmpfiles.d/00-create-volatile.conf"),
    ("audit", "audit-volatile.conf", "/etc/tmpfiles.d/audit.conf"),
    # With systemd_preset_all below: enable only what a preset or a package's postinst enables.
    ("systemd", "99-default.preset", "/usr/lib/systemd/system-preset/99-default.preset"),
)

#: Kernel modules the image's kernel has (or builds in) beyond the initramfs's: /etc overlay, firewall,
#: network, watchdog, autofs for systemd; their dependencies are added.
MODULE_DIRS = ("kernel/fs/overlayfs", "kernel/fs/autofs", "kernel/fs/binfmt_misc.ko", "kernel/net/netfilter", "kernel/net/ipv4/netfilter",
               "kernel/net/ipv6/netfilter", "kernel/drivers/net/virtio_net.ko", "kernel/drivers/watchdog/i6300esb.ko",
               "kernel/drivers/char/hw_random/virtio-rng.ko")


def _in_chroot(tree: Path, script: str, timeout: float = 900) -> str:
    """Run ``script`` with bash inside the arm64 tree (qemu-user via binfmt_misc)."""
    result = subprocess.run(["chroot", str(tree), "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                             "LC_ALL=C", "/bin/bash", "-c", script], capture_output=True, text=True,
                            timeout=timeout, check=False)
    if result.returncode != 0:
        raise HarnessError(f"in the arm64 root (exit {result.returncode}):\n{script}\n"
                           f"{(result.stdout + result.stderr)[-4000:]}")
    return result.stdout


def binfmt_problem() -> str | None:
    """Why arm64 programs cannot run here, or None."""
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not entry.exists():
        return ("no binfmt_misc entry for arm64 (apt-get install qemu-user-static binfmt-support; "
                "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-aarch64)")
    if "enabled" not in entry.read_text():
        return "binfmt_misc has qemu-aarch64 but it is disabled (update-binfmts --enable qemu-aarch64)"
    return None


# -- Debian ------------------------------------------------------------------------------------


def _debian_command(target: Path) -> list[str]:
    return ["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", "--arch=arm64",
            f"--include={','.join(DEBIAN_PACKAGES)}", *(f"--dpkgopt={o}" for o in _DPKG_EXCLUDES),
            # Host files mmdebstrap copies in; apt's lists are not the device's.
            '--customize-hook=rm -f "$1/etc/hostname" "$1/etc/resolv.conf"; rm -rf "$1"/var/lib/apt/lists/*',
            SUITE, str(target), MIRROR]


def _build_debian(out: Path) -> None:
    problem = binfmt_problem()
    if problem:
        raise HarnessError(problem)
    # A private mount namespace with its own /run: mmdebstrap's mounts never reach the host.
    run(["unshare", "--mount", "--propagation=private", "--", "sh", "-c",
         'mount -n -t tmpfs -o mode=0755 pyvorin-run /run && exec "$@"', "sh", *_debian_command(out / "tree")],
        timeout=1800)


def debian_root() -> Path:
    """The cached Debian arm64 tree (read it, never change it)."""
    return cache.entry("device-debian", cache.key(*_debian_command(Path("TARGET"))), _build_debian) / "tree"


# -- recipes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    name: str
    installed: bool
    files: tuple[str, ...]
    systemd_services: tuple[str, ...]
    systemd_auto_enable: str
    useradd: tuple[str, ...]
    groupadd: tuple[str, ...]


@dataclass(frozen=True)
class Recipe:
    """One recipe as the gate exported it (scripts/layer-gate-install.py)."""

    path: Path
    name: str
    sources_only: bool
    source_dir: str
    build_dir: str
    image_dir: str
    install_dir: str
    compile_dir: str
    packages: tuple[Package, ...]
    #: The installer scheme of a python_pep517 recipe (where its wheel goes), else None.
    python_scheme: dict[str, str] | None = None

    @classmethod
    def load(cls, path: Path) -> Recipe:
        info = json.loads((path / "recipe.json").read_text())
        packages = tuple(Package(p["name"], p["installed"], tuple(p["files"]), tuple(p["systemd_services"]),
                                 p["systemd_auto_enable"] or "", tuple(p["useradd"]), tuple(p["groupadd"]))
                         for p in info["packages"])
        return cls(path, info["recipe"], info.get("sources_only", False), info["S"], info["B"], info["D"],
                   info["install_dir"].split()[-1],
                   info["compile_dir"].split()[-1], packages, info.get("python_scheme"))

    def installed(self) -> list[Package]:
        return [p for p in self.packages if p.installed]


def split(image: Path, packages: Iterable[Package]) -> dict[str, list[str]]:
    """Paths under ``image`` (as "/usr/bin/x") per package, as package.bbclass's populate_packages
    hands them out: in PACKAGES order, each FILES glob claims what it matches (a directory with
    everything below it) unless an earlier package claimed it."""
    every = sorted("/" + str(p.relative_to(image)) for p in image.rglob("*"))
    claimed: dict[str, str] = {}
    result: dict[str, list[str]] = {}
    for package in packages:
        mine = result.setdefault(package.name, [])
        for entry in package.files:
            pattern = entry.rstrip("/") or "/"     # "dir/" is the directory; "/" is everything
            for path in every:
                if path in claimed:
                    continue
                if pattern == "/" or fnmatch.fnmatchcase(path, pattern) or any(
                        fnmatch.fnmatchcase(parent, pattern) and (image / parent.lstrip("/")).is_dir()
                        and not (image / parent.lstrip("/")).is_symlink()
                        for parent in _parents(path)):
                    claimed[path] = package.name
                    mine.append(path)
    return result


_UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/usr/lib/systemd/user")


def with_units(image: Path, package: Package) -> Package:
    """``package`` with the unit files systemd.bbclass adds to its FILES: each SYSTEMD_SERVICE unit
    (a socket brings its service, a service its template) and what their Also= names."""
    found: list[str] = []

    def add(directory: str, unit: str) -> None:
        path = f"{directory}/{unit}"
        if path in found or not (image / path.lstrip("/")).exists():
            return
        found.append(path)
        if unit.endswith(".service"):
            add(directory, unit.replace(".service", "@.service"))
        if unit.endswith(".socket"):
            add(directory, unit.replace(".socket", ".service"))
            add(directory, unit.replace(".socket", "@.service"))
        for line in (image / path.lstrip("/")).read_text().splitlines():
            if line.startswith("Also="):
                for also in line[len("Also="):].replace(",", " ").split():
                    add(directory, also)

    for unit in package.systemd_services:
        directory = next((d for d in _UNIT_DIRS if (image / d.lstrip("/") / unit).exists()), None)
        if directory is None:
            raise HarnessError(f"{package.name}: SYSTEMD_SERVICE names {unit}, which do_install did not install")
        add(directory, unit)
    return replace(package, files=package.files + tuple(found))


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]


def _copy_paths(src: Path, dest: Path, paths: Iterable[str]) -> None:
    """``paths`` (files, links, directories themselves) from ``src`` to ``dest``, owners and modes kept.

    One tar piped into another: the archive is never held in memory."""
    names = [p.lstrip("/") for p in paths]
    if not names:
        return
    with subprocess.Popen(["tar", "-C", str(src), "--no-recursion", "--numeric-owner", "--null", "-cf", "-",
                           "-T", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as packer, \
            subprocess.Popen(["tar", "-C", str(dest), "--numeric-owner", "--keep-directory-symlink", "-xpf", "-"],
                             stdin=packer.stdout, stderr=subprocess.PIPE) as unpacker:
        assert packer.stdin and packer.stdout and packer.stderr and unpacker.stderr
        packer.stdout.close()           # the unpacker holds the read end
        packer.stdin.write(b"\0".join(n.encode() for n in names) + b"\0")
        packer.stdin.close()
        packed_errors = packer.stderr.read()
        unpacked_errors = unpacker.stderr.read()
        packer.wait()
        unpacker.wait()
    if packer.returncode != 0:
        raise HarnessError(f"tar of {src}: {packed_errors.decode(errors='replace')}")
    if unpacker.returncode != 0:
        raise HarnessError(f"untar into {dest}: {unpacked_errors.decode(errors='replace')}")


@dataclass(frozen=True)
class Keys:
    """What the device trusts: the CA its swupdate verifies bundles against, the AES key, if any,
    and the fleet CA its identity's certificate must chain to."""

    ca_cert: Path
    aes_key: Path | None
    fleet_ca: Path

    def staged(self) -> dict[str, Path]:
        """The names scripts/layer-gate-install.py sets PYVORIN_SWUPDATE_CA_CERT,
        PYVORIN_SWUPDATE_AES_KEY and PYVORIN_FLEET_CA_CERT to, in ${WORKDIR}."""
        named = {"pyvorin-ca.crt": self.ca_cert, "pyvorin-fleet-ca.crt": self.fleet_ca}
        if self.aes_key is not None:
            named["pyvorin-aes.key"] = self.aes_key
        return named


def _bsdiff_build(work: Path, sysroot_tree: Path) -> None:
    """bsdiff-4.3 from Debian's orig tarball (the recipe's SRC_URI file), the layer's patch, cross-compiled
    as do_compile compiles it: ``${CC} ${CFLAGS} ${LDFLAGS} -o bspatch ${S}/bspatch.c -lbz2``."""
    download = work / "download"
    download.mkdir()
    run(["apt-get", "source", "--download-only", "-qq", "bsdiff"], cwd=download)
    orig = next(download.glob("bsdiff_4.3.orig.tar.gz"))
    with tarfile.open(orig) as tar:
        tar.extractall(work, filter="data")
    src = work / "bsdiff-4.3"
    shutil.rmtree(download)
    patches = sorted(work.glob("*.patch"))
    for patch in patches:
        run(["patch", "-p1", "-i", str(patch)], cwd=src)
    # bzlib.h is the same on every architecture; the library is the device's own.
    include = work / "include"
    include.mkdir()
    shutil.copy2("/usr/include/bzlib.h", include)
    libbz2 = sysroot_tree / "usr/lib/aarch64-linux-gnu/libbz2.so.1.0"
    sysroot = device_swupdate.arm64_sysroot() / "sysroot"
    for program in ("bsdiff", "bspatch"):
        run(["aarch64-linux-gnu-gcc", f"--sysroot={sysroot}", "-O2", f"-I{include}", "-o", str(src / program),
             str(src / f"{program}.c"), str(libbz2)])


def _stage_recipe(recipe: Recipe, tree: Path, keys: Keys, device: device_swupdate.DeviceSwupdate) -> Path:
    """The recipe's WORKDIR inside ``tree``, with what its install needs from builds made here."""
    stage = tree / TARGET_WORKDIR.lstrip("/") / recipe.name
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(recipe.path, stage, symlinks=True)
    workdir = stage / "workdir"
    for item in workdir.iterdir():
        item.rename(stage / item.name)
    workdir.rmdir()
    if recipe.name == "swupdate":
        # do_install's `oe_runmake install` installs this build; the www part wants the source's web-app.
        device_swupdate.untar(device_swupdate.upstream(device_swupdate.SWUPDATE_TARBALL), stage).rename(stage / "git")
        shutil.copytree(device.root, stage / "device-root", symlinks=True)
    # Every recipe's WORKDIR gets the keys under the names layer-gate-install.py gives their
    # variables, whichever recipe installs them: no recipe is a special case.
    for name, source in keys.staged().items():
        shutil.copy2(source, stage / name)
    if recipe.name == "bsdiff":
        _bsdiff_build(stage, tree)
    return stage


#: swupdate's `make install` (the device build's swupdate files; libubootenv is its own recipe).
_SWUPDATE_MAKE_INSTALL = """
oe_runmake() {
    [ "$1" = install ] || bbfatal "oe_runmake $*: only install is staged"
    install -d "%(D)s/usr/bin" "%(D)s/usr/lib"
    for tool in swupdate swupdate-client swupdate-ipc swupdate-progress; do
        install -m 0755 %(W)s/device-root/usr/bin/$tool "%(D)s/usr/bin/"
    done
    cp -a %(W)s/device-root/usr/lib/libswupdate.so.* "%(D)s/usr/lib/"
}
"""


def install_sources(recipe: Recipe, tree: Path) -> list[str]:
    """The OE_PACKAGING files of a recipe Debian stands in for, where its do_install puts them."""
    script = (recipe.path / "do_install.sh").read_text()
    paths = []
    for name, source, dest in OE_PACKAGING:
        if name != recipe.name:
            continue
        directory = dest.rsplit("/", 1)[0]
        if f"{recipe.image_dir.rsplit('/image', 1)[0]}/{source} {recipe.image_dir}{directory}" not in script:
            raise HarnessError(f"{name}'s do_install no longer installs {source} into {directory}")
        target = tree / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(recipe.path / "workdir" / source, target)
        target.chmod(0o644)
        if name == "systemd" and 'if "true"; then\n\t\t# base-files recipe provides /var/log' in script:
            with open(target, "a") as handle:
                handle.write("L\t\t/var/log\t\t-\t-\t-\t-\t/var/volatile/log\n")
        paths.append(dest)
    return paths


def install_recipe(recipe: Recipe, tree: Path, keys: Keys, device: device_swupdate.DeviceSwupdate) -> list[str]:
    """Run the recipe's useradd, do_compile and do_install in ``tree``, copy in what its installed
    packages' FILES claim, enable their services. Returns the paths installed."""
    if recipe.sources_only:
        return install_sources(recipe, tree)
    stage = _stage_recipe(recipe, tree, keys, device)
    inside = f"{TARGET_WORKDIR}/{recipe.name}"
    for package in recipe.installed():
        for params in package.groupadd:
            _in_chroot(tree, f"groupadd {params}")
        for params in package.useradd:
            _in_chroot(tree, f"useradd {params}")
    if (stage / "image").is_dir():
        image = stage / "image"        # a Python do_install, run by the gate
    else:
        image = tree / recipe.image_dir.lstrip("/")
        path = "export PATH=/usr/sbin:/usr/bin:/sbin:/bin"
        if recipe.python_scheme is not None:    # python_pep517: nativepython3 builds and installs the wheel
            path = f"export PATH={oe_native.stage(tree, TARGET_WORKDIR)}:/usr/sbin:/usr/bin:/sbin:/bin"
        steps = ["set -e"]
        if (stage / "do_compile.sh").exists() and recipe.name not in PREBUILT:
            steps += [f". {inside}/do_compile.sh", path, *oe_native.environment(recipe.python_scheme),
                      f"mkdir -p {recipe.compile_dir}", f"cd {recipe.compile_dir}", "do_compile"]
        steps += [f". {inside}/do_install.sh", path, *oe_native.environment(recipe.python_scheme)]
        if recipe.name == "swupdate":
            steps.append(_SWUPDATE_MAKE_INSTALL % {"D": recipe.image_dir, "W": inside})
        steps += [f"rm -rf {recipe.image_dir}", f"mkdir -p {recipe.image_dir} {recipe.install_dir}",
                  f"cd {recipe.install_dir}", "do_install"]
        _in_chroot(tree, "\n".join(steps))
    claimed = split(image, [with_units(image, p) for p in recipe.packages])
    paths: list[str] = []
    for package in recipe.installed():
        taken = claimed.get(package.name, [])
        if recipe.name == "base-files":
            taken = [p for p in taken if p in BASE_FILES_TAKEN]
            for path in taken:     # Debian's directories give way to oe-core's links
                target = tree / path.lstrip("/")
                if target.is_dir() and not target.is_symlink() and (image / path.lstrip("/")).is_symlink():
                    shutil.rmtree(target)
        _copy_paths(image, tree, taken)
        paths += taken
        if package.systemd_auto_enable == "enable":
            services = [s for s in package.systemd_services if "@." not in s]
            if services:
                run(["systemctl", f"--root={tree}", "enable", *services])
    shutil.rmtree(stage)
    return paths


# -- the image --------------------------------------------------------------------------------------


def image_steps(tree: Path, exported: Path) -> None:
    """The image's rootfs steps: oe-core's shell ones as exported, then overlayfs-etc's preinit."""
    info = json.loads((exported / "image.json").read_text())
    script = "\n".join(["set -e", f". {exported}/rootfs-postprocess.sh", "export PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                        *info["postprocess"]])
    run(["bash", "-c", script], env={"PYVORIN_ROOTFS": str(tree)})
    if "overlayfs-etc" not in info["features"]:
        return
    # create_overlayfs_etc_preinit (oe-core overlayfs-etc.bbclass).
    values = info["overlayfs"]
    boolean = {"1": True, "yes": True, "true": True, "0": False, "no": False, "false": False, "": False}
    use_orig = boolean[(values["OVERLAYFS_ETC_USE_ORIG_INIT_NAME"] or "").lower()]
    init = values["base_sbindir"].rstrip("/") + "/init"
    args = {
        "OVERLAYFS_ETC_MOUNT_POINT": values["OVERLAYFS_ETC_MOUNT_POINT"],
        "OVERLAYFS_ETC_MOUNT_OPTIONS": values["OVERLAYFS_ETC_MOUNT_OPTIONS"],
        "OVERLAYFS_ETC_FSTYPE": values["OVERLAYFS_ETC_FSTYPE"],
        "OVERLAYFS_ETC_DEVICE": values["OVERLAYFS_ETC_DEVICE"],
        "SBIN_INIT_NAME": init + ".orig" if use_orig else init,
        "OVERLAYFS_ETC_EXPOSE_LOWER": "true" if boolean[(values["OVERLAYFS_ETC_EXPOSE_LOWER"] or "0").lower()]
        else "false",
        "CREATE_MOUNT_DIRS": "true" if boolean[(values["OVERLAYFS_ETC_CREATE_MOUNT_DIRS"] or "1").lower()]
        else "false",
    }
    text = (exported / "overlayfs-etc-preinit.sh.in").read_text().format(**args)
    preinit = tree / init.lstrip("/")
    if not use_orig:
        preinit = preinit.with_name("preinit")
    else:
        os.rename(preinit, preinit.with_name("init.orig"))
    preinit.write_text(text)
    preinit.chmod(0o755)


def kernel_modules(tree: Path) -> str:
    """The kernel's modules the root needs (overlay, netfilter, virtio-net, watchdog), with depmod."""
    source = guest.tree()
    version = guest._kernel_version(source)
    moddir = source / "lib/modules" / version
    index = guest._module_index(moddir)
    wanted = [name for name, path in index.items()
              if any(str(path.relative_to(moddir)).startswith(d) for d in MODULE_DIRS)]
    dest = tree / "usr/lib/modules" / version
    for name in guest._load_order(index, wanted):
        target = dest / index[name].relative_to(moddir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(index[name], target)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (moddir / name).exists():
            shutil.copy2(moddir / name, dest / name)
    _in_chroot(tree, f"depmod -a {version}")
    shutil.copy2(source / f"boot/vmlinuz-{version}", tree / f"boot/vmlinuz-{version}")
    (tree / "boot/vmlinuz").unlink(missing_ok=True)
    (tree / "boot/vmlinuz").symlink_to(f"vmlinuz-{version}")
    return version


def systemd_like_oe(tree: Path) -> None:
    """What upstream systemd installs, and so oe-core's, that Debian leaves out: /tmp on a tmpfs
    (tmp.mount in local-fs.target.wants). On a read-only root /tmp must not be the root's."""
    unit = tree / "usr/lib/systemd/system/tmp.mount"
    if not unit.exists():
        shutil.copy2(tree / "usr/share/systemd/tmp.mount", unit)
    wants = tree / "usr/lib/systemd/system/local-fs.target.wants"
    wants.mkdir(exist_ok=True)
    if not (wants / "tmp.mount").is_symlink():
        (wants / "tmp.mount").symlink_to("../tmp.mount")


def python_path(tree: Path) -> None:
    """Debian's python3 (3.11) reads /usr/lib/python3/dist-packages; the recipes install into
    oe-core's PYTHON_SITEPACKAGES_DIR (python3.12/site-packages). A .pth file joins them; the
    bytecode the recipes compiled in the tree is 3.11's."""
    # Debian's site adds /usr/local/lib/python3.X/dist-packages, which oe-core's python has not:
    # an empty one would only be listed (and denied by the confining profiles).
    for local in (tree / "usr/local/lib").glob("python3*"):
        if not any(p.is_file() for p in local.rglob("*")):
            shutil.rmtree(local)
    dirs = sorted({str(p.parent.relative_to(tree)) for p in (tree / "usr/lib").glob("python3.*/site-packages/*")
                   if (tree / "usr/lib/python3/dist-packages").is_dir()})
    if dirs:
        (tree / "usr/lib/python3/dist-packages/pyvorin-oe-site-packages.pth").write_text(
            "".join(f"/{d}\n" for d in dirs))


def libubootenv(tree: Path, device: device_swupdate.DeviceSwupdate) -> None:
    """libubootenv and libubootenv-bin (oe-core's cmake recipe), from the device's build."""
    for lib in sorted(device.libdir.glob("libubootenv.so.*")):
        shutil.copy2(lib, tree / "usr/lib" / lib.name, follow_symlinks=False)
    shutil.copy2(device.tool("fw_printenv"), tree / "usr/bin/fw_printenv")
    (tree / "usr/bin/fw_setenv").unlink(missing_ok=True)
    (tree / "usr/bin/fw_setenv").symlink_to("fw_printenv")


def exported_recipes(exported: Path) -> list[Recipe]:
    """The recipes the gate exported: those scripts/layer-gate-checks.sh names, then the layer's own."""
    return [Recipe.load(exported / name) for name in (exported / "recipes").read_text().split()]


def build_tree(dest: Path, exported: Path, keys: Keys, stamps: Mapping[str, str]) -> Path:
    """The device's root tree at ``dest``: Debian, the layer's recipes, the image's steps.

    ``stamps``: os-release fields the image stamps (IMAGE_VERSION, VERSION_ID)."""
    shutil.rmtree(dest, ignore_errors=True)
    run(["cp", "-a", str(debian_root()), str(dest)])
    device = device_swupdate.build(device_swupdate.ARM64)
    libubootenv(dest, device)
    for recipe in exported_recipes(exported):
        install_recipe(recipe, dest, keys, device)
    kernel_modules(dest)
    python_path(dest)
    systemd_like_oe(dest)
    release = dest / "usr/lib/os-release"
    lines = [line for line in release.read_text().splitlines() if line.split("=", 1)[0] not in stamps]
    release.unlink()   # Debian's is a link to a file of base-files
    release.write_text("\n".join(lines + [f"{k}={v}" for k, v in stamps.items()]) + "\n")
    image_steps(dest, exported / "image")
    # image.bbclass's IMAGE_PREPROCESS_COMMAND for systemd distros (systemd_preset_all).
    run(["systemctl", f"--root={dest}", "--preset-mode=enable-only", "preset-all"])
    shutil.rmtree(dest / TARGET_WORKDIR.lstrip("/"), ignore_errors=True)
    return dest
