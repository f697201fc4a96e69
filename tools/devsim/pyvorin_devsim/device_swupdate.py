"""The device's SWUpdate, built here from the pinned sources.

The device does not run Debian's swupdate. The pinned meta-swupdate (scarthgap)
builds **swupdate 2026.05.1** (``swupdate_2026.05.1.bb``) against oe-core's
**libubootenv 0.3.5**, configured by meta-swupdate's own ``defconfig`` merged
with the layer's fragment (``pyvorin.cfg``) and the embedded Lua handler. This
module repeats that build from ``../shared/upstream/`` (the pinned sources this
machine cannot download), exactly as ``swupdate.inc`` configures it:

1. ``.config`` = ``CONFIG_EXTRA_CFLAGS``/``CONFIG_EXTRA_LDFLAGS`` + ``defconfig``;
2. ``merge_config.sh -m .config <fragments>``: for every symbol a fragment names,
   the base lines mentioning it are deleted, then the fragment is appended;
3. ``yes '' | make oldconfig`` (``cml1_do_configure``), which drops what
   Kconfig does not allow;
4. the layer's check: every fragment line must survive (:func:`dropped_lines`),
   as ``pyvorin_swupdate_config_check`` does in the bbappend;
5. ``make``, with the handler copied into the source tree first (the
   bbappend's ``do_configure:prepend``).

The result is kept in the tests' cache (``$PYVORIN_TEST_CACHE/swupdate/``) under
a hash of every input: the two source tarballs, the defconfig, the fragments,
the Lua handler and this file. A cold build takes ~15 s on two cores.

The snapshot must match the pins: :func:`check_pins` compares the commit the
swupdate tarball was archived from with ``SRCREV`` of the pinned
meta-swupdate recipe, and that meta-swupdate commit with ``kas/pyvorin.yml``, so
a moved pin fails loudly instead of testing an old build.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import cache

# Not from helpers: scripts/run-example.sh imports this (through
# swupdate_sandbox) in a venv without pytest.
ROOT = Path(__file__).resolve().parents[3]

LAYER = ROOT / "meta-pyvorin"
SWUPDATE_FILES = LAYER / "dynamic-layers/swupdate/recipes-support/swupdate/files"
#: The layer's configuration fragments, in SRC_URI order (find_cfgs).
FRAGMENTS = (SWUPDATE_FILES / "pyvorin.cfg",)
LUA_HANDLER = SWUPDATE_FILES / "swupdate_handlers.lua"
INC = SWUPDATE_FILES.parent / "swupdate_pyvorin.inc"

UPSTREAM = Path(os.environ.get("PYVORIN_UPSTREAM") or ROOT.parent / "shared" / "upstream")
SWUPDATE_TARBALL = "swupdate-2026.05.1.tar.gz"
LIBUBOOTENV_TARBALL = "libubootenv-0.3.5.tar.gz"
LAYERS_TAR = "layers-scarthgap.tar"
#: The recipe meta-swupdate scarthgap prefers (highest PV; swupdate_git.bb has
#: DEFAULT_PREFERENCE = "-1").
RECIPE = "recipes-support/swupdate/swupdate_2026.05.1.bb"
#: meta-swupdate files the tests read (the daemon's start path and units).
META_SWUPDATE_FILES = (
    RECIPE,
    "recipes-support/swupdate/swupdate.inc",
    "recipes-support/swupdate/swupdate/defconfig",
    "recipes-support/swupdate/swupdate/swupdate.sh",
    "recipes-support/swupdate/swupdate/swupdate.service",
    "recipes-support/swupdate/swupdate/swupdate.socket.tmpl",
    "recipes-support/swupdate/swupdate/tmpfiles-swupdate.conf",
)

#: Build dependencies, Debian package names (scripts/test.sh installs them).
APT_BUILD_DEPS = ("cmake", "pkg-config", "libconfig-dev", "libjson-c-dev", "liblua5.4-dev", "libarchive-dev",
                  "libsystemd-dev", "libyaml-dev", "libzstd-dev", "zlib1g-dev", "libssl-dev", "make", "gcc",
                  "libcurl4-openssl-dev")

_SYMBOL_LINE = re.compile(r"^(?:(CONFIG_[A-Za-z0-9_]+)=.*|# (CONFIG_[A-Za-z0-9_]+) is not set)$")


class BuildError(RuntimeError):
    """The pinned sources are missing or stale, or the build failed."""


# -- the pinned snapshot --------------------------------------------------------------


def upstream(name: str) -> Path:
    path = UPSTREAM / name
    if not path.is_file():
        raise BuildError(f"{path} is missing: the pinned upstream sources live in ../shared/upstream/ "
                         "(or PYVORIN_UPSTREAM)")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def kas_pin(repo: str) -> str:
    """The ``commit:`` kas/pyvorin.yml pins *repo* to."""
    import yaml

    data = yaml.safe_load((ROOT / "kas/pyvorin.yml").read_text())
    commit = data["repos"][repo]["commit"]
    assert isinstance(commit, str)
    return commit


def _extract_meta_swupdate(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(upstream(LAYERS_TAR)) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("meta-swupdate.git")]
            tar.extractall(tmp, members=members, filter="data")
        git = ["git", "--git-dir", str(Path(tmp) / "meta-swupdate.git")]
        commit = subprocess.run([*git, "rev-parse", "scarthgap"], capture_output=True, text=True,
                                check=True).stdout.strip()
        (out / "COMMIT").write_text(commit + "\n")
        for name in META_SWUPDATE_FILES:
            blob = subprocess.run([*git, "show", f"scarthgap:{name}"], capture_output=True, check=True).stdout
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)


@functools.cache
def meta_swupdate() -> Path:
    """A directory with the pinned meta-swupdate's files (:data:`META_SWUPDATE_FILES`) and ``COMMIT``."""
    inputs = cache.key(_sha256(upstream(LAYERS_TAR)), *META_SWUPDATE_FILES)
    return cache.entry("meta-swupdate", inputs, _extract_meta_swupdate, area="swupdate")


def check_pins() -> None:
    """Fail when the snapshot in ../shared/upstream no longer matches what the project pins."""
    layer_commit = (meta_swupdate() / "COMMIT").read_text().strip()
    pinned = kas_pin("meta-swupdate")
    if layer_commit != pinned:
        raise BuildError(f"stale snapshot: {LAYERS_TAR} has meta-swupdate {layer_commit}, kas/pyvorin.yml pins "
                         f"{pinned}; update ../shared/upstream with the pin")
    srcrev = re.search(r'^SRCREV = "([0-9a-f]{40})"', (meta_swupdate() / RECIPE).read_text(), re.M)
    if srcrev is None:
        raise BuildError(f"{RECIPE}: no SRCREV")
    with tarfile.open(upstream(SWUPDATE_TARBALL)) as tar:
        archived = tar.pax_headers.get("comment", "")
    if archived != srcrev.group(1):
        raise BuildError(f"stale snapshot: {SWUPDATE_TARBALL} was archived from {archived or 'an unknown commit'}, "
                         f"the pinned meta-swupdate builds {srcrev.group(1)}")


# -- the configuration, merged as meta-swupdate merges it ------------------------------


def fragment_symbols(fragment: str) -> list[str]:
    """Symbols a fragment sets (``CONFIG_X=...``) or clears (``# CONFIG_X is not set``)."""
    return [m.group(1) or m.group(2) for line in fragment.splitlines() if (m := _SYMBOL_LINE.match(line))]


def merge_fragments(base: str, fragments: Iterable[str]) -> str:
    """``merge_config.sh -m``: drop the base lines naming a fragment's symbols, append the fragment."""
    merged = base if base.endswith("\n") or not base else base + "\n"
    for fragment in fragments:
        for symbol in fragment_symbols(fragment):
            pattern = re.compile(rf"{symbol}[ =]")
            merged = "".join(line for line in merged.splitlines(keepends=True) if not pattern.search(line))
        merged += fragment if fragment.endswith("\n") else fragment + "\n"
    return merged


def config_values(config: str) -> dict[str, str]:
    """``CONFIG_X`` -> its value as written (``y``, ``"string"``), or ``n`` for ``is not set``."""
    values: dict[str, str] = {}
    for line in config.splitlines():
        if match := _SYMBOL_LINE.match(line):
            if match.group(1):
                values[match.group(1)] = line.split("=", 1)[1]
            else:
                values[match.group(2)] = "n"
    return values


def dropped_lines(fragment: str, config: str) -> list[str]:
    """Fragment lines the final ``.config`` does not honour.

    A ``CONFIG_X=v`` line must appear as written. A ``# CONFIG_X is not set``
    line is honoured when X is not set or not visible at all (Kconfig omits
    symbols whose dependencies are off).
    """
    values = config_values(config)
    dropped = []
    for line in fragment.splitlines():
        if not (match := _SYMBOL_LINE.match(line)):
            continue
        if match.group(1):
            if values.get(match.group(1)) != line.split("=", 1)[1]:
                dropped.append(line)
        elif values.get(match.group(2), "n") != "n":
            dropped.append(line)
    return dropped


def _run(argv: list[str], cwd: Path, env: Mapping[str, str] | None = None, stdin: str | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=None if env is None else {**os.environ, **env}, input=stdin,
                          capture_output=True, text=True, errors="replace", check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise BuildError(f"{' '.join(argv)} (in {cwd}) exited {proc.returncode}:\n{tail}")


def untar(tarball: Path, into: Path) -> Path:
    with tarfile.open(tarball) as tar:
        tar.extractall(into, filter="data")
        top = {Path(m.name).parts[0] for m in tar.getmembers()}
    if len(top) != 1:
        raise BuildError(f"{tarball}: expected one top directory, got {sorted(top)}")
    return into / top.pop()


def configure(src: Path, build: Path, extra_cflags: str = "", extra_ldflags: str = "",
              fragments: Iterable[Path] = FRAGMENTS) -> str:
    """Write ``build/.config`` as swupdate.inc's do_configure does; return the final text."""
    defconfig = (meta_swupdate() / "recipes-support/swupdate/swupdate/defconfig").read_text()
    header = f'CONFIG_EXTRA_CFLAGS="{extra_cflags}"\nCONFIG_EXTRA_LDFLAGS="{extra_ldflags}"\n'
    build.mkdir(parents=True, exist_ok=True)
    (build / ".config").write_text(merge_fragments(header + defconfig, (f.read_text() for f in fragments)))
    _run(["make", f"O={build}", "oldconfig"], cwd=src, stdin="\n" * 2000)
    return (build / ".config").read_text()


def merged_config() -> str:
    """The swupdate ``.config`` the device build ends up with (cached with the build)."""
    return (build().root / "swupdate.config").read_text()


# -- the build ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSwupdate:
    """An installed tree: ``usr/bin/{swupdate,swupdate-client,swupdate-ipc,fw_printenv,fw_setenv}``, ``usr/lib``."""

    root: Path

    @property
    def bindir(self) -> Path:
        return self.root / "usr/bin"

    @property
    def libdir(self) -> Path:
        return self.root / "usr/lib"

    @property
    def swupdate(self) -> Path:
        return self.bindir / "swupdate"

    def tool(self, name: str) -> Path:
        return self.bindir / name

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to find this build's libubootenv (the host has none, or 0.3.2)."""
        return {"LD_LIBRARY_PATH": str(self.libdir)}


@dataclass(frozen=True)
class Target:
    """Where the build runs: this host, or arm64 (the QEMU guest) cross-compiled against a Debian sysroot."""

    name: str
    cross: str = ""  # the toolchain prefix, "" for the host

    @property
    def cc(self) -> str:
        return f"{self.cross}gcc"


HOST = Target(platform.machine())
ARM64 = Target("aarch64", "aarch64-linux-gnu-")
#: Debian arm64 packages of the sysroot: libc and the -dev packages of APT_BUILD_DEPS.
SYSROOT_PACKAGES = ("libc6-dev", *(p for p in APT_BUILD_DEPS if p.endswith("-dev")))
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def _make_sysroot(out: Path) -> None:
    # --variant=extract unpacks without running maintainer scripts: no qemu-user.
    _run(["mmdebstrap", "--quiet", "--variant=extract", "--arch=arm64", f"--include={','.join(SYSROOT_PACKAGES)}",
          DEBIAN_SUITE, str(out / "sysroot"), DEBIAN_MIRROR], cwd=out)
    # Debian names the Lua module lua5.4.pc (lua.pc is an alternative the
    # extract does not set up); oe-core's lua installs lua.pc, which
    # CONFIG_LUAPKG="lua" asks for.
    shim = out / "pkgconfig"
    shim.mkdir()
    (shim / "lua.pc").symlink_to("../sysroot/usr/lib/aarch64-linux-gnu/pkgconfig/lua5.4.pc")  # survives the rename


def arm64_sysroot() -> Path:
    """An arm64 sysroot (``sysroot/``) and a pkg-config shim dir (``pkgconfig/``), cached."""
    return cache.entry("sysroot-arm64", cache.key(DEBIAN_SUITE, *SYSROOT_PACKAGES), _make_sysroot, area="swupdate")


def _build(target: Target, out: Path) -> None:
    work = out / "work"
    work.mkdir()
    stage = work / "stage"
    env: dict[str, str] = {}
    cmake_cross: list[str] = []
    make_cross: list[str] = []
    cflags, ldflags = f"-I{stage}/usr/include", f"-L{stage}/usr/lib"
    if target.cross:
        base = arm64_sysroot()
        sysroot = base / "sysroot"
        env = {"PKG_CONFIG_LIBDIR": f"{base}/pkgconfig:{sysroot}/usr/lib/aarch64-linux-gnu/pkgconfig:"
                                    f"{sysroot}/usr/share/pkgconfig",
               "PKG_CONFIG_SYSROOT_DIR": str(sysroot)}
        cmake_cross = ["-DCMAKE_SYSTEM_NAME=Linux", f"-DCMAKE_SYSTEM_PROCESSOR={target.name}",
                       f"-DCMAKE_C_COMPILER={target.cc}", f"-DCMAKE_SYSROOT={sysroot}",
                       f"-DCMAKE_FIND_ROOT_PATH={sysroot}", "-DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY",
                       "-DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY", "-DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=NEVER"]
        # As swupdate.inc calls make: CROSS_COMPILE, ARCH, LD="${CC}", HOSTCC.
        make_cross = [f"CROSS_COMPILE={target.cross}", f"CC={target.cc}", f"LD={target.cc}", "HOSTCC=gcc",
                      "ARCH=arm64"]
        cflags = f"--sysroot={sysroot} {cflags}"
        ldflags = (f"--sysroot={sysroot} {ldflags} -Wl,-rpath-link,{sysroot}/usr/lib/aarch64-linux-gnu "
                   f"-Wl,-rpath-link,{sysroot}/lib/aarch64-linux-gnu")
    # libubootenv 0.3.5, as oe-core builds it (cmake).
    ube_src = untar(upstream(LIBUBOOTENV_TARBALL), work)
    ube_build = work / "libubootenv-build"
    _run(["cmake", "-S", str(ube_src), "-B", str(ube_build), "-DCMAKE_INSTALL_PREFIX=/usr",
          "-DCMAKE_INSTALL_LIBDIR=lib", "-DCMAKE_BUILD_TYPE=Release", *cmake_cross], cwd=work, env=env)
    _run(["make", "-C", str(ube_build), f"-j{os.cpu_count() or 2}"], cwd=work, env=env)
    _run(["make", "-C", str(ube_build), "install", f"DESTDIR={stage}"], cwd=work, env=env)

    src = untar(upstream(SWUPDATE_TARBALL), work)
    shutil.copy(LUA_HANDLER, src / "swupdate_handlers.lua")  # the bbappend's do_configure:prepend
    build_dir = work / "swupdate-build"
    config = configure(src, build_dir, cflags, f"{ldflags} {recipe_ldflags()}")
    for fragment in FRAGMENTS:
        if lost := dropped_lines(fragment.read_text(), config):
            raise BuildError(f"{fragment.name}: lines dropped by the merge: {lost}")
    _run(["make", f"O={build_dir}", f"-j{os.cpu_count() or 2}", *make_cross], cwd=src, env=env)

    bindir, libdir = out / "usr/bin", out / "usr/lib"
    bindir.mkdir(parents=True)
    libdir.mkdir(parents=True)
    shutil.copy2(build_dir / "swupdate", bindir)
    for tool in ("swupdate-client", "swupdate-ipc", "swupdate-progress"):
        shutil.copy2(build_dir / "tools" / tool, bindir)
    shutil.copy2(stage / "usr/bin/fw_printenv", bindir)
    (bindir / "fw_setenv").symlink_to("fw_printenv")  # one binary; argv[0] decides
    for lib in sorted((stage / "usr/lib").glob("libubootenv.so*")):
        shutil.copy2(lib, libdir, follow_symlinks=False)
    shutil.copy2(build_dir / "libswupdate.so.0.1", libdir)  # the IPC library the client tools use
    (out / "swupdate.config").write_text(config)
    shutil.rmtree(work)


def recipe_ldflags() -> str:
    """What the bbappend appends to LDFLAGS (swupdate.inc hands LDFLAGS over as CONFIG_EXTRA_LDFLAGS)."""
    return " ".join(re.findall(r'^LDFLAGS:append = " ?(.*?)"$', INC.read_text(), re.M))


@functools.cache
def _inputs() -> str:
    parts: list[str | bytes] = [_sha256(upstream(SWUPDATE_TARBALL)), _sha256(upstream(LIBUBOOTENV_TARBALL)),
                                (meta_swupdate() / "recipes-support/swupdate/swupdate/defconfig").read_bytes(),
                                LUA_HANDLER.read_bytes(), Path(__file__).read_bytes()]
    parts += [f.read_bytes() for f in FRAGMENTS] + [recipe_ldflags()]
    return cache.key(*parts)


@functools.cache
def build(target: Target = HOST) -> DeviceSwupdate:
    """The device's swupdate for *target* (this host by default), built once per input hash."""
    check_pins()
    inputs = _inputs() if not target.cross else cache.key(_inputs(), target.name, *SYSROOT_PACKAGES)
    return DeviceSwupdate(cache.entry(f"device-{target.name}", inputs, functools.partial(_build, target),
                                      area="swupdate"))


# -- the device's root file system, as the recipes install it --------------------------

#: BitBake's values for the variables the bbappend's sed lines use (oe-core defaults).
BITBAKE = {"${PYVORIN_SOFTWARE_SET}": "stable", "${libexecdir}": "/usr/libexec", "${datadir}": "/usr/share",
           "${nonarch_libdir}": "/usr/lib", "${libdir}": "/usr/lib"}


def render_installed(name: str, extra: Mapping[str, str] | None = None) -> str:
    """files/*name* with the ``-e 's,@X@,${VAR},g'`` substitutions the .inc's do_install applies to it."""
    install = re.search(r"^do_install:append\(\) \{\n(.*?)^\}", INC.read_text(), re.M | re.S)
    assert install is not None
    command = re.search(rf"sed ((?:-e '[^']*' \\?\s*)+)\$\{{WORKDIR\}}/{re.escape(name)} ", install.group(1))
    assert command is not None, f"the .inc does not render {name}"
    text = (SWUPDATE_FILES / name).read_text()
    for marker, variable in re.findall(r"-e 's,(@\w+@),([^,]*),g'", command.group(1)):
        value = {**BITBAKE, **(extra or {})}.get(variable)
        assert value is not None, f"no value for {variable}"
        text = text.replace(marker, value)
    assert not re.search(r"@[A-Z_]+@", text), text
    return text


def installed_swupdate_sh() -> str:
    """meta-swupdate's swupdate.sh as swupdate.inc installs it (sed @LIBDIR@ -> ${libdir})."""
    text = (meta_swupdate() / "recipes-support/swupdate/swupdate/swupdate.sh").read_text()
    assert "sed -i 's#@LIBDIR@#${libdir}#g' ${D}${libdir}/swupdate/swupdate.sh" in (
        meta_swupdate() / "recipes-support/swupdate/swupdate.inc").read_text()
    return text.replace("@LIBDIR@", "/usr/lib")


def usr_files(ca_cert: Path, image_version: str, board: str, slot_a: str, slot_b: str,
              aes_key: Path | None = None) -> dict[str, tuple[bytes, int]]:
    """What the swupdate package, pyvorin-hwrevision and pyvorin-image put under /usr for the daemon.

    Paths are relative to /usr; values are (content, mode). *slot_a* is the
    running root, so the slot selector prints copy1.
    """
    select = render_installed("pyvorin-swupdate-select", {"${PYVORIN_SLOT_A_DEVICE}": slot_a,
                                                           "${PYVORIN_SLOT_B_DEVICE}": slot_b})
    files = {
        "lib/swupdate/swupdate.sh": (installed_swupdate_sh().encode(), 0o755),
        "lib/swupdate/conf.d/50-pyvorin": (render_installed("50-pyvorin").encode(), 0o644),
        "libexec/pyvorin-swupdate-select": (select.encode(), 0o755),
        "share/swupdate/ca.crt": (ca_cert.read_bytes(), 0o644),
        "share/swupdate/hwrevision": (f"{board} 1.0\n".encode(), 0o644),
        "lib/os-release": (f"ID=pyvorin\nVERSION_ID=2026.11\nIMAGE_ID=pyvorin-image\n"
                           f"IMAGE_VERSION={image_version}\n".encode(), 0o644),
    }
    if aes_key is not None:
        files["share/swupdate/aes.key"] = (aes_key.read_bytes(), 0o400)
    return files


def missing_build_tools() -> list[str]:
    return [tool for tool in ("cmake", "make", "gcc", "pkg-config", "git") if shutil.which(tool) is None]
