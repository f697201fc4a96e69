"""Boot real systemd (Debian 12, systemd 252) as PID 1 in a container, for tests.

Why: the layer ships systemd units (``swupdate.service`` is ``Type=notify``,
``swupdate.socket`` has two ``ListenStream=`` sockets, plus drop-ins).  Only a
real service manager shows whether they start, which argv the daemon gets, which
modes the sockets get and what ``systemd-analyze verify`` says; the host cannot
be used because its PID 1 is not systemd (a Firecracker VM whose init is
``process_api``), and it must not be changed anyway.

How (what was found to work on this host: kernel 6.18, root, Debian 12, no
systemd on the host, cgroup "hybrid" layout = tmpfs on ``/sys/fs/cgroup`` with
the v1 controllers, a v1 ``name=systemd`` hierarchy and cgroup2 on
``/sys/fs/cgroup/unified``):

* **Root file system**: ``mmdebstrap --variant=minbase`` of bookworm with
  ``systemd systemd-sysv dbus`` and the caller's packages, about 30 s cold.  It
  is cached under ``${PYVORIN_TEST_CACHE:-${XDG_CACHE_HOME:-~/.cache}/pyvorin-tests}/systemd-container/<name>-<hash>/rootfs``,
  keyed by the complete mmdebstrap command line and :data:`ROOTFS_VERSION`
  (:func:`pyvorin_devsim.cache.entry`: built under a temporary name and renamed when
  complete, under a file lock).  mmdebstrap runs in a private mount
  namespace with a private ``/run``, so its mounts and libmount's
  ``/run/mount/utab`` never reach the host.  ``/etc/hostname`` and
  ``/etc/resolv.conf``, which mmdebstrap copies from the host, are removed.
* **Every boot** uses an overlayfs: the cached tree is the read-only lower
  layer, the upper layer lives in the caller's work directory (a pytest
  ``tmp_path``), so the cache is never modified.  Files added before the boot
  are written into the upper layer, with paths resolved *inside* the rootfs
  (``/lib`` is a symlink to ``usr/lib`` in bookworm: writing ``upper/lib/...``
  naively would hide it and break the container).
* **Boot**: ``systemd-nspawn --boot --register=no --keep-unit`` works without
  a host systemd or machined (no D-Bus needed): ``--register=no`` skips
  machined, ``--keep-unit`` skips asking the host manager for a scope.  nspawn
  then uses the cgroup it was started in and creates ``payload/`` (the
  container) and ``supervisor/`` (itself) below it, in both the cgroup2 and the
  ``name=systemd`` hierarchy, and gives the container a cgroup namespace; the
  container's systemd detects the hybrid layout and runs normally (its only
  complaints are harmless "Failed to create symlink /sys/fs/cgroup/net_prio"
  lines because the host mounts ``cpu`` and ``cpuacct`` separately and has no
  ``net_cls``).  Started from the root cgroup, nspawn would put every container
  into the same ``/payload`` and leave it behind, so the launcher first moves
  itself into a fresh ``pyvorin-sc.<owner-pid>.<random>`` cgroup in every
  systemd-relevant hierarchy, under the *same* name in each (in the hybrid
  layout nspawn takes its path from cgroup2 and mirrors it into
  ``name=systemd``: a differently named v1 group would be left behind); it is
  removed (``cgroup.kill`` first if anything is left) on shutdown, and cgroups
  of dead owners are reaped by later runs.
  This is the only host state the helper touches, and only because the host
  has no cgroup manager that could hand out one.
* nspawn writes ``/run/systemd/nspawn/{locks,propagate}`` on the host and
  ``mount`` writes ``/run/mount/utab``; the launcher therefore runs in a
  private mount namespace (``unshare --mount``) with a tmpfs over ``/run``, and
  the overlay is mounted only there: every mount disappears with that
  namespace, whatever happens to the test.  nspawn runs with
  ``--settings=no --link-journal=no --resolv-conf=off --timezone=off`` (reads
  and writes nothing of the host's) and by default ``--private-network`` (only
  ``lo``, which the container's systemd brings up).  Host paths to bind into
  the container therefore must not be under ``/run``.
* **Console**: ``--console=read-only`` (a pty whose output nspawn copies to a
  log file in the work directory) with ``systemd.show_status=yes`` and no
  colours, so the boot and shutdown status lines are available for error
  messages.  (``--console=pipe`` gives no ``/dev/console``: nothing is logged.)
* **Commands inside**: ``nsenter --target <container PID 1> --all --root --wd``
  with a clean environment; ``systemctl`` talks to the container's manager via
  ``/run/systemd/private``.  The host reaches container files (e.g. sockets,
  to ``connect()`` to them) through ``/proc/<pid>/root`` (:meth:`SystemdContainer.path`).
* **Shutdown**: ``SIGRTMIN+4`` to the container's PID 1 (what ``systemctl
  poweroff`` does); nspawn exits 0 when the container powered off.  After the
  timeout the container's PID 1 gets SIGKILL (ending its PID namespace; nspawn
  reaps it and exits), then whatever is left in the cgroup is killed, so a test
  never hangs.  The host's init (``process_api``) does not reap orphans
  promptly, so nothing may be orphaned to it: a zombie inside the container's
  PID namespace stalls the container's ``systemd-shutdown`` for its 90 s
  timeout (see :meth:`SystemdContainer._exec`).

The by-hand route (``unshare --pid --fork`` + ``pivot_root`` + exec systemd)
was not needed: nspawn works here, and it sets up ``/dev``, ``/proc``, ``/sys``
read-only parts, the cgroup namespace and the console correctly.

Measured on this host (2 vCPUs, Debian mirror on the network): cold rootfs
build 23-28 s (~175 MB with python3-minimal), boot to ``running`` 0.33-0.40 s
(``systemd-analyze``: ~0.26 s userspace), poweroff 0.15-0.22 s.

Host quirks seen in the container, all harmless and none failing a unit: the
bounding set lacks ``CAP_SYS_RESOURCE`` because the host's does ("Some
capabilities will not be set" from nspawn; dbus-daemon warns "Failed to set fd
limit to 65536"); the cgroup symlink errors above.  A minbase container needs
no masked unit to reach ``running``; :meth:`SystemdContainer.mask` exists for
units needing hardware and insists on a reason.

Typical use::

    require()                                   # skip, or fail under CI=true
    rootfs = build_rootfs(RootfsSpec("swupdate", packages=("python3-minimal",)))
    with SystemdContainer(rootfs.path, tmp_path / "container") as container:
        container.add_unit("demo.service", text)
        container.add_dropin("demo.service", "10-args.conf", dropin)
        container.copy_binary(Path("/usr/bin/swupdate"))     # with its shared libraries
        container.enable("demo.service")
        report = container.boot()                # BootReport: state, seconds, failed units
        container.wait_active("demo.service")
        pid = container.main_pid("demo.service")
        argv = container.cmdline(pid)
        log = container.journal("demo.service")
    assert container.leftovers() == []
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType

import pytest

from pyvorin_devsim import cache

import layer_gate
from helpers import unavailable as unavailable_here

#: Bump to rebuild every cached root file system (changes to how it is built
#: that the mmdebstrap command line does not show).
ROOTFS_VERSION = "1"
#: Always installed: the service manager, ``/sbin/init`` and the system bus.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus")
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
#: Documentation, manual pages and translations are not needed to run units and
#: make the tree (and every overlay lookup) smaller.
_DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
#: Host tools and the Debian packages that provide them (scripts/test.sh installs these).
TOOLS = {
    "systemd-nspawn": "systemd-container",
    "mmdebstrap": "mmdebstrap",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "mount": "mount",
    "ldd": "libc-bin",
}
#: The environment of commands run in the container: no host variables leak in,
#: no pager, no colours, no ellipsized lines.
_EXEC_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    "TERM=dumb",
    "COLUMNS=250",
    "SYSTEMD_PAGER=cat",
    "PAGER=cat",
    "SYSTEMD_COLORS=0",
)
_CGROUP_PREFIX = "pyvorin-sc."
_ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]|[@-Z\\-_])")
#: ``is-system-running`` answers after which there is nothing more to wait for.
_FINAL_STATES = ("running", "degraded", "maintenance", "stopping")


class ContainerError(RuntimeError):
    """The container failed to build, boot, run a command or stop.

    The message ends with what is needed to see why without re-running: the
    tail of the console and ``systemctl --failed`` (both also as attributes).
    """

    def __init__(self, message: str, *, console: str = "", failed: str = "") -> None:
        self.console = console
        self.failed = failed
        parts = [message]
        if failed:
            parts.append(f"--- failed units, pending jobs, warnings ---\n{failed}")
        if console:
            parts.append(f"--- console (tail) ---\n{console}")
        super().__init__("\n".join(parts))


@dataclass(frozen=True)
class Unavailable:
    """Why containers cannot run here; ``installable`` if scripts/test.sh would have fixed it."""

    reason: str
    installable: bool


@dataclass(frozen=True)
class RootfsSpec:
    """What goes into a cached root file system; equal specs share one cache entry."""

    name: str
    packages: tuple[str, ...] = ()
    suite: str = DEFAULT_SUITE
    mirrors: tuple[str, ...] = DEFAULT_MIRRORS

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", self.name):
            raise ValueError(f"cache entry name must be [a-z0-9.-]: {self.name!r}")

    def command(self, target: Path) -> list[str]:
        """The mmdebstrap command line that builds this tree into ``target``."""
        packages = sorted(set(BASE_PACKAGES) | set(self.packages))
        hooks = [
            # Host-specific files mmdebstrap copies in: keep them out of the cache.
            'rm -f "$1/etc/hostname" "$1/etc/resolv.conf"',
            # Versions next to the tree, for error messages and reports.
            "chroot \"$1\" dpkg-query -W -f '${Package} ${Version}\\n' > \"$1/../packages.txt\"",
        ]
        return [
            "mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory", "--architectures=amd64",
            f"--include={','.join(packages)}",
            *(f"--dpkgopt={option}" for option in _DPKG_EXCLUDES),
            *(f"--customize-hook={hook}" for hook in hooks),
            self.suite, str(target), *self.mirrors,
        ]

    def key(self) -> str:
        """The cache key: everything that decides the tree's content."""
        return cache.key(ROOTFS_VERSION, *self.command(Path("TARGET")))


@dataclass(frozen=True)
class Rootfs:
    """A cached root file system; ``build_seconds`` is ``None`` if it came from the cache."""

    path: Path
    #: Installed package -> version (``dpkg-query`` at build time).
    packages: dict[str, str] = field(hash=False)
    build_seconds: float | None = None


@dataclass(frozen=True)
class BootReport:
    """How a boot ended: the ``is-system-running`` state, how long it took, what failed."""

    state: str
    seconds: float
    failed_units: tuple[str, ...]
    failed_text: str
    startup: str


@dataclass(frozen=True)
class ShutdownReport:
    """How the container stopped; ``forced`` if it had to be killed after the timeout."""

    seconds: float
    forced: bool
    exit_code: int | None


def unavailable() -> Unavailable | None:
    """``None`` if containers can run here, else why not (cheap: no boot)."""
    if not sys.platform.startswith("linux"):
        return Unavailable("systemd containers need Linux", installable=False)
    if os.geteuid() != 0:
        return Unavailable("systemd containers need root (namespaces, overlayfs, cgroups)", installable=False)
    missing = sorted(tool for tool in TOOLS if shutil.which(tool) is None)
    if missing:
        packages = " ".join(sorted({TOOLS[tool] for tool in missing}))
        return Unavailable(f"missing {', '.join(missing)} (apt-get install {packages}; "
                           "scripts/test.sh installs them when run as root)", installable=True)
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError as exc:
        return Unavailable(f"cannot read /proc/filesystems: {exc}", installable=False)
    if not re.search(r"\soverlay$", filesystems, re.MULTILINE):
        return Unavailable("the kernel has no overlayfs", installable=False)
    if not _cgroup_hierarchies():
        return Unavailable("no cgroup2 or name=systemd hierarchy under /sys/fs/cgroup", installable=False)
    return None


def require() -> None:
    """Skip the calling test if containers cannot run here.

    Under ``CI=true`` a missing tool that scripts/test.sh installs fails the test
    instead: CI must not silently skip what it is meant to run.
    """
    problem = unavailable()
    if problem is None:
        return
    if problem.installable:
        unavailable_here(problem.reason)  # fails under CI
    pytest.skip(problem.reason)


def build_rootfs(spec: RootfsSpec, *, timeout: float = 900.0) -> Rootfs:
    """The cached tree for ``spec`` (``pyvorin_devsim.cache`` area ``systemd-container``), built with mmdebstrap if missing."""
    seconds: list[float] = []

    def build(work: Path) -> None:
        started = time.monotonic()
        _mmdebstrap(spec, work, timeout)
        seconds.append(time.monotonic() - started)
        print(f"systemd-container: built rootfs {spec.name}-{spec.key()} in {seconds[0]:.1f}s")

    final = cache.entry(spec.name, spec.key(), build, area="systemd-container")
    lines = (final / "packages.txt").read_text().splitlines()
    packages = {name: version for name, _, version in (line.partition(" ") for line in lines)}
    return Rootfs(final / "rootfs", packages, seconds[0] if seconds else None)


def _mmdebstrap(spec: RootfsSpec, work: Path, timeout: float) -> None:
    """Run mmdebstrap into ``work/rootfs`` in a private mount namespace with its own /run."""
    log = work / "mmdebstrap.log"
    command = ["unshare", "--mount", "--propagation=private", "--", "sh", "-c",
               'mount -n -t tmpfs -o mode=0755 pyvorin-run /run && exec "$@"', "sh",
               *spec.command(work / "rootfs")]
    with open(log, "wb") as output:
        try:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                    timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ContainerError(f"mmdebstrap did not finish within {timeout:.0f}s",
                                 console=_tail(log.read_bytes())) from None
    if result.returncode != 0:
        raise ContainerError(f"mmdebstrap failed ({result.returncode}): {' '.join(command)}",
                             console=_tail(log.read_bytes()))


def _tail(data: bytes, lines: int = 60) -> str:
    """The last lines of console bytes, without colours and carriage returns."""
    text = _ANSI.sub("", data.decode(errors="replace")).replace("\r", "")
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def _mount_table(path: str = "/proc/self/mountinfo") -> dict[str, tuple[str, str]]:
    """Mount point -> (file system type, super options) from a mountinfo file."""
    table: dict[str, tuple[str, str]] = {}
    for line in Path(path).read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            table[point] = (tail[0], tail[2])
    return table


def _cgroup_hierarchies() -> tuple[Path, ...]:
    """The hierarchies systemd uses: cgroup2 (unified or hybrid) and/or v1 ``name=systemd``."""
    table = _mount_table()
    if table.get("/sys/fs/cgroup", ("", ""))[0] == "cgroup2":
        return (Path("/sys/fs/cgroup"),)
    found = []
    if table.get("/sys/fs/cgroup/unified", ("", ""))[0] == "cgroup2":
        found.append(Path("/sys/fs/cgroup/unified"))
    fstype, options = table.get("/sys/fs/cgroup/systemd", ("", ""))
    if fstype == "cgroup" and "name=systemd" in options.split(","):
        found.append(Path("/sys/fs/cgroup/systemd"))
    return tuple(found)


def _cgroup_pids(group: Path) -> list[int]:
    """All processes in ``group`` and below."""
    pids: list[int] = []
    for procs in sorted(group.rglob("cgroup.procs")) if group.is_dir() else []:
        with contextlib.suppress(OSError):
            pids.extend(int(pid) for pid in procs.read_text().split())
    return pids


def _kill_cgroup(group: Path) -> None:
    """SIGKILL everything in ``group``: ``cgroup.kill`` on cgroup2, one by one on v1."""
    kill = group / "cgroup.kill"
    if kill.exists():
        with contextlib.suppress(OSError):
            kill.write_text("1")
            return
    for pid in _cgroup_pids(group):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _remove_cgroup(group: Path, timeout: float = 5.0) -> bool:
    """Kill what is left in ``group`` and remove it bottom-up; ``False`` if it could not be removed."""
    deadline = time.monotonic() + timeout
    while group.exists():
        if _cgroup_pids(group):
            _kill_cgroup(group)
        directories = sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        try:
            for directory in [*directories, group]:
                directory.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.ENOENT) or time.monotonic() > deadline:
                return not group.exists()
            time.sleep(0.05)
    return True


def _reap_stale_cgroups() -> None:
    """Remove cgroups left by test processes that died without cleaning up (e.g. SIGKILL)."""
    for hierarchy in _cgroup_hierarchies():
        for group in hierarchy.glob(f"{_CGROUP_PREFIX}*"):
            owner = group.name.split(".")[1]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                _remove_cgroup(group)


def _children(pid: int) -> list[int]:
    """The direct children of host process ``pid``."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children.extend(int(child) for child in task.read_text().split())
    return children


def _needed_libraries(binary: Path) -> list[str]:
    """The shared libraries (host paths, including the loader) ``binary`` needs, from ``ldd``."""
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        if "not a dynamic executable" in result.stdout + result.stderr:
            return []
        raise ContainerError(f"ldd {binary} failed: {result.stdout}{result.stderr}")
    libraries = []
    for line in result.stdout.splitlines():
        if "not found" in line:
            raise ContainerError(f"{binary}: a shared library is missing on the host: {line.strip()}")
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            libraries.append(match.group(1))
    return libraries


class SystemdContainer:
    """One boot of a cached root file system under systemd-nspawn, on an overlay.

    Lifecycle: create, add files (:meth:`write`, :meth:`copy_in`,
    :meth:`copy_binary`, :meth:`add_unit`, :meth:`add_dropin`, :meth:`enable`,
    :meth:`mask`, :meth:`bind`), :meth:`boot`, inspect (:meth:`run`,
    :meth:`systemctl`, :meth:`journal`, ...), :meth:`shutdown` (also done by
    leaving the ``with`` block, on errors too).  Files can still be written while
    it runs (through ``/proc/<pid>/root``), e.g. before a ``daemon-reload``.
    One boot per object.
    """

    def __init__(self, rootfs: Path, workdir: Path, *, name: str | None = None, private_network: bool = True,
                 extra_nspawn_args: Sequence[str] = ()) -> None:
        """Prepare (nothing runs yet): ``workdir`` gets ``upper/``, ``overlay-work/``, ``merged/``, ``console.log``.

        ``private_network=False`` shares the host's network namespace (and its
        abstract Unix sockets) with the container; keep the default unless a
        test needs the host's interfaces.  ``extra_nspawn_args`` go to
        systemd-nspawn before the kernel command line (e.g. ``--setenv=...``).
        """
        if not (rootfs / "usr/lib/systemd/systemd").exists():
            raise ContainerError(f"{rootfs} is not a root file system with systemd")
        for path in (rootfs, workdir):
            if any(c in str(path.resolve()) for c in ",:\\ "):
                raise ContainerError(f"overlayfs and nspawn options cannot take {path} (',', ':', '\\' or space)")
        self.rootfs = rootfs.resolve()
        self.workdir = workdir.resolve()
        self.name = name or f"pyv-{secrets.token_hex(4)}"
        self.private_network = private_network
        self.extra_nspawn_args = tuple(extra_nspawn_args)
        #: Masked units and why (every mask needs a reason that says why it cannot work in a container).
        self.masked: dict[str, str] = {}
        self.boot_report: BootReport | None = None
        self.shutdown_report: ShutdownReport | None = None
        self.upper = self.workdir / "upper"
        self._overlay_work = self.workdir / "overlay-work"
        self.merged = self.workdir / "merged"
        self.console_log = self.workdir / "console.log"
        for directory in (self.upper, self._overlay_work, self.merged):
            directory.mkdir(parents=True, exist_ok=False)
        self._binds: list[str] = []
        self._cgroups: tuple[Path, ...] = ()
        self._launcher: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._stopped = False

    # -- context manager -------------------------------------------------------------------------------------

    def __enter__(self) -> SystemdContainer:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.shutdown()

    # -- files -----------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Booted and not stopped (files then go through ``/proc/<pid>/root``, not the upper layer)."""
        return self._pid is not None and not self._stopped

    @property
    def pid(self) -> int:
        """The container's PID 1 as the host sees it."""
        if self._pid is None or self._stopped:
            raise ContainerError("the container is not running")
        return self._pid

    def _view(self, rel: PurePosixPath) -> Path:
        """Host path of an already resolved container path: the live tree, or upper over lower."""
        if self.running:
            return Path(f"/proc/{self.pid}/root") / rel
        upper = self.upper / rel
        return upper if os.path.lexists(upper) else self.rootfs / rel

    def _resolve(self, path: str, *, follow_last: bool) -> PurePosixPath:
        """``path`` with every symlink resolved inside the container (absolute targets re-rooted)."""
        if not path.startswith("/"):
            raise ValueError(f"container paths are absolute: {path!r}")
        pending = list(PurePosixPath(path).parts[1:])
        done: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            host = self._view(PurePosixPath(*done, part))
            if (pending or follow_last) and host.is_symlink():
                hops += 1
                if hops > 40:
                    raise ContainerError(f"too many symlinks resolving {path} in the container")
                target = os.readlink(host)
                if target.startswith("/"):
                    done = []
                pending = [p for p in PurePosixPath(target).parts if p != "/"] + pending
                continue
            done.append(part)
        return PurePosixPath(*done)

    def _writable(self, path: str) -> Path:
        """The host path to create container ``path`` at, its parents made like the rootfs's."""
        if self._stopped:
            raise ContainerError("the container has been shut down; its files can no longer change")
        rel = self._resolve(path, follow_last=False)
        if not rel.parts:
            raise ValueError(f"cannot write the container's root: {path!r}")
        if self.running:
            target = Path(f"/proc/{self.pid}/root") / rel
            target.parent.mkdir(parents=True, exist_ok=True)
        else:
            for depth in range(1, len(rel.parts)):
                prefix = PurePosixPath(*rel.parts[:depth])
                upper, lower = self.upper / prefix, self.rootfs / prefix
                if upper.is_dir():
                    continue
                if os.path.lexists(upper) or (os.path.lexists(lower) and not lower.is_dir()):
                    raise ContainerError(f"cannot create {path}: /{prefix} is not a directory in the container")
                upper.mkdir()
                if lower.is_dir():
                    # Same owner and mode as the directory it overlays, so the merged view is unchanged.
                    info = lower.stat()
                    os.chown(upper, info.st_uid, info.st_gid)
                    os.chmod(upper, stat.S_IMODE(info.st_mode))
            target = self.upper / rel
        if target.is_symlink() or (os.path.lexists(target) and not target.is_dir()):
            target.unlink()
        return target

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists in the container (symlinks followed inside it)."""
        return os.path.lexists(self._view(self._resolve(path, follow_last=True)))

    def path(self, path: str) -> Path:
        """A host path for container ``path``, to read, ``stat`` or ``connect()`` to it.

        While running it goes through ``/proc/<pid>/root`` (sees ``/run`` etc.);
        before the boot it is the file in the upper or lower layer: read only.
        """
        return self._view(self._resolve(path, follow_last=True))

    def write(self, path: str, content: str | bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        """Create or replace the file ``path`` in the container."""
        target = self._writable(path)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
        os.chown(target, uid, gid)
        os.chmod(target, mode)

    def mkdir(self, path: str, *, mode: int = 0o755) -> None:
        """Create the directory ``path`` (and missing parents) in the container."""
        if os.path.isdir(self._view(self._resolve(path, follow_last=True))):
            return
        target = self._writable(path)
        target.mkdir()
        os.chmod(target, mode)

    def symlink(self, path: str, target: str) -> None:
        """Create or replace the symlink ``path`` -> ``target`` in the container."""
        link = self._writable(path)
        link.symlink_to(target)

    def copy_in(self, source: Path, path: str, *, mode: int | None = None) -> None:
        """Copy a host file or directory tree to ``path`` (owners become root; symlinks are kept)."""
        if source.is_symlink():
            self.symlink(path, os.readlink(source))
        elif source.is_dir():
            self.mkdir(path, mode=mode if mode is not None else stat.S_IMODE(source.stat().st_mode))
            for child in sorted(source.iterdir()):
                self.copy_in(child, f"{path.rstrip('/')}/{child.name}")
        else:
            self.write(path, source.read_bytes(), mode=mode if mode is not None else stat.S_IMODE(source.stat().st_mode))

    def copy_binary(self, source: Path, path: str | None = None) -> tuple[str, ...]:
        """Copy a host executable and the shared libraries it needs that the container lacks.

        Libraries the rootfs already has are kept (they come from the same Debian
        release); returns the library paths that were copied.
        """
        self.copy_in(source.resolve(), path or str(source), mode=0o755)
        copied = []
        for library in _needed_libraries(source):
            if not self.exists(library):
                self.copy_in(Path(library).resolve(), library)
                copied.append(library)
        return tuple(copied)

    def add_unit(self, name: str, text: str) -> None:
        """Write ``/etc/systemd/system/<name>``."""
        self.write(f"/etc/systemd/system/{name}", text)

    def add_dropin(self, unit: str, name: str, text: str) -> None:
        """Write the drop-in ``/etc/systemd/system/<unit>.d/<name>`` (``.conf`` appended if missing)."""
        self.write(f"/etc/systemd/system/{unit}.d/{name if name.endswith('.conf') else name + '.conf'}", text)

    def enable(self, unit: str, wanted_by: str = "multi-user.target") -> None:
        """Start ``unit`` at boot: the ``<wanted_by>.wants/<unit>`` symlink ``systemctl enable`` would make."""
        for directory in ("/etc/systemd/system", "/usr/lib/systemd/system"):
            if self.exists(f"{directory}/{unit}"):
                self.symlink(f"/etc/systemd/system/{wanted_by}.wants/{unit}", f"{directory}/{unit}")
                return
        raise ContainerError(f"cannot enable {unit}: no unit file in /etc/systemd/system or /usr/lib/systemd/system")

    def mask(self, unit: str, reason: str) -> None:
        """Mask ``unit`` (symlink to /dev/null); ``reason`` says why it cannot work in a container."""
        if not reason.strip():
            raise ValueError("masking a unit needs a reason")
        self.symlink(f"/etc/systemd/system/{unit}", "/dev/null")
        self.masked[unit] = reason

    def bind(self, source: Path, path: str, *, read_only: bool = True) -> None:
        """Bind-mount host ``source`` at container ``path`` (before the boot; not from under host /run)."""
        if self._launcher is not None:
            raise ContainerError("bind mounts must be added before the boot")
        resolved = source.resolve()
        if any(c in f"{resolved}{path}" for c in ":,\\") or resolved.is_relative_to("/run"):
            raise ContainerError(f"cannot bind {resolved} to {path} (':', ',', '\\' or under the host /run)")
        self._binds.append(f"--bind{'-ro' if read_only else ''}={resolved}:{path}")

    # -- lifecycle -------------------------------------------------------------------------------------------

    def boot(self, *, timeout: float = 60.0) -> BootReport:
        """Boot, wait for ``systemctl is-system-running --wait`` and report (state printed).

        ``running`` and ``degraded`` are returned (``degraded`` with the failed
        units in the report, never hidden); any other end state, a timeout or a
        dead nspawn raises :class:`ContainerError`.
        """
        # A boot races the clock: never beside the background layer gate.
        layer_gate.wait_for_background()
        if self._launcher is not None:
            raise ContainerError("one boot per SystemdContainer")
        started = time.monotonic()
        deadline = started + timeout
        try:
            self._launch()
            self._pid = self._find_init(deadline)
            state = self._wait_until_up(deadline)
        except BaseException:
            self.shutdown(timeout=10)  # the error already carries the console and failed units
            raise
        seconds = time.monotonic() - started
        failed = self.run("systemctl", "list-units", "--failed", "--plain", "--no-legend", check=False,
                          timeout=10).stdout
        failed_units = tuple(line.split()[0] for line in failed.splitlines() if line.strip())
        startup = self.run("systemd-analyze", "time", check=False, timeout=10).stdout.strip()
        self.boot_report = BootReport(state, seconds, failed_units, self._failed_text() if failed_units else "",
                                      startup)
        listed = f" (failed: {', '.join(failed_units)})" if failed_units else ""
        print(f"systemd-container {self.name}: is-system-running: {state} after {seconds:.1f}s{listed}")
        if state not in ("running", "degraded"):
            error = self._error(f"the container booted into state {state!r}")
            self.shutdown(timeout=10)
            raise error
        return self.boot_report

    def _launch(self) -> None:
        _reap_stale_cgroups()
        # The same name in every hierarchy: in the hybrid layout nspawn takes its cgroup path from
        # cgroup2 and mirrors it into name=systemd, so a different v1 name would be left behind.
        name = f"{_CGROUP_PREFIX}{os.getpid()}.{secrets.token_hex(4)}"
        self._cgroups = tuple(hierarchy / name for hierarchy in _cgroup_hierarchies())
        for group in self._cgroups:
            group.mkdir()
        nspawn = [
            "systemd-nspawn", f"--directory={self.merged}", f"--machine={self.name}", "--boot",
            "--register=no", "--keep-unit", "--settings=no", "--link-journal=no", "--resolv-conf=off",
            "--timezone=off", "--console=read-only",
            *(["--private-network"] if self.private_network else []),
            *self._binds, *self.extra_nspawn_args,
            "systemd.show_status=yes", "systemd.log_color=no", "systemd.status_unit_format=name",
        ]
        # In a private mount namespace: join the cgroups, hide the host /run, mount the overlay, exec nspawn.
        script = ('set -eu\n'
                  'lower=$1 upper=$2 work=$3 merged=$4 n=$5\n'
                  'shift 5\n'
                  'while [ "$n" -gt 0 ]; do echo $$ > "$1"; shift; n=$((n - 1)); done\n'
                  'mount -n -t tmpfs -o mode=0755,size=16m pyvorin-run /run\n'
                  'mount -n -t overlay pyvorin-root -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$merged"\n'
                  'exec "$@"\n')
        command = ["unshare", "--mount", "--propagation=private", "--", "sh", "-c", script, "sh",
                   str(self.rootfs), str(self.upper), str(self._overlay_work), str(self.merged),
                   str(len(self._cgroups)), *(str(group / "cgroup.procs") for group in self._cgroups), *nspawn]
        with open(self.console_log, "wb") as console:
            self._launcher = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=console,
                                              stderr=subprocess.STDOUT, start_new_session=True)

    def _find_init(self, deadline: float) -> int:
        """The host PID of the container's systemd: PID 1 in its own namespace, in our cgroup."""
        assert self._launcher is not None
        while True:
            for pid in _cgroup_pids(self._cgroups[0]) if self._cgroups else []:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
                except OSError:
                    continue
                nspid = re.search(r"^NSpid:\s*(.*)$", status, re.MULTILINE)
                levels = nspid.group(1).split() if nspid else []
                if len(levels) > 1 and levels[-1] == "1" and os.path.basename(argv0) in (b"systemd", b"init"):
                    return pid
            if self._launcher.poll() is not None:
                raise self._error(f"systemd-nspawn exited ({self._launcher.returncode}) before systemd started")
            if time.monotonic() > deadline:
                raise self._error("systemd did not start in the container in time")
            time.sleep(0.05)

    def _wait_until_up(self, deadline: float) -> str:
        """``systemctl is-system-running --wait``, retried until the manager answers."""
        assert self._launcher is not None
        answer = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._error(f"the container did not finish booting in time (last state: {answer or 'none'})")
            if self._launcher.poll() is not None:
                raise self._error(f"systemd-nspawn exited ({self._launcher.returncode}) during the boot")
            try:
                result = self._exec(["systemctl", "is-system-running", "--wait"], timeout=remaining)
            except subprocess.TimeoutExpired:
                answer = "still starting (is-system-running --wait had not returned)"
                continue
            answer = result.stdout.strip() or result.stderr.strip()
            if answer in _FINAL_STATES:
                return answer
            time.sleep(0.1)

    def shutdown(self, *, timeout: float = 30.0) -> ShutdownReport | None:
        """Power off (``SIGRTMIN+4``), kill everything after ``timeout``, remove the cgroups.

        Idempotent; ``None`` if the container was never booted.
        """
        if self._launcher is None:
            for group in self._cgroups:  # _launch failed after creating them
                _remove_cgroup(group)
            return None
        if self.shutdown_report is not None:
            return self.shutdown_report
        started = time.monotonic()
        forced = False
        if self._launcher.poll() is None:
            try:
                if self._pid is not None:
                    os.kill(self._pid, signal.SIGRTMIN + 4)
                else:
                    self._launcher.terminate()  # nspawn asks the container to halt
            except ProcessLookupError:
                pass
            try:
                self._launcher.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                forced = True
                # SIGKILL to the container's PID 1 ends its whole PID namespace and nspawn, its parent,
                # reaps it and exits.  Killing nspawn first would leave PID 1 a zombie of the host's init.
                if self._pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self._pid, signal.SIGKILL)
                try:
                    self._launcher.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    for group in self._cgroups:
                        _kill_cgroup(group)
                    try:
                        self._launcher.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        self._launcher.kill()
                        self._launcher.wait(timeout=10)
        self._stopped = True
        seconds = time.monotonic() - started
        for group in self._cgroups:
            _remove_cgroup(group)
        self.shutdown_report = ShutdownReport(seconds, forced, self._launcher.returncode)
        print(f"systemd-container {self.name}: stopped in {seconds:.1f}s (exit {self._launcher.returncode}"
              f"{', forced' if forced else ''})")
        return self.shutdown_report

    def leftovers(self) -> list[str]:
        """What of this container still exists on the host (should be empty after shutdown)."""
        found = []
        if self._launcher is not None and self._launcher.poll() is None:
            found.append(f"systemd-nspawn launcher {self._launcher.pid} still runs")
        if self._pid is not None and Path(f"/proc/{self._pid}").exists():
            found.append(f"container PID 1 ({self._pid}) still exists")
        for group in self._cgroups:
            if group.exists():
                found.append(f"cgroup {group} (processes: {_cgroup_pids(group)})")
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    points = _mount_table(f"{proc}/mountinfo")
                except OSError:
                    continue
                found.extend(f"mount {point} in the namespace of PID {proc.name}"
                             for point in points if point.startswith(str(self.workdir)))
        return found

    # -- inside ----------------------------------------------------------------------------------------------

    def _exec(self, argv: Sequence[str], *, timeout: float, stdin_text: str | None = None
              ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` via nsenter; on timeout kill it *inside* first, then raise ``TimeoutExpired``.

        nsenter stays in the host's PID namespace and forks the command into the
        container's.  Killing only nsenter (what ``subprocess.run`` does on a
        timeout) orphans the command to the *host's* init, which on this host
        does not reap it: the zombie then stalls the container's
        ``systemd-shutdown`` ("Sending SIGTERM to remaining processes...") for
        up to 90 s.  Killed first, the command is reaped by nsenter.
        """
        command = ["nsenter", f"--target={self.pid}", "--all", "--root", "--wd", "--", "env", "-i", *_EXEC_ENV,
                   *argv]
        with subprocess.Popen(command, stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
            try:
                stdout, stderr = process.communicate(stdin_text, timeout=timeout)
            except subprocess.TimeoutExpired:
                for child in _children(process.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                try:
                    process.communicate(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.communicate()
                raise
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def run(self, *argv: str, timeout: float = 60.0, check: bool = True, stdin_text: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the container (all its namespaces, clean environment) and return its output.

        With ``check`` a non-zero exit raises :class:`ContainerError`; a timeout always does.
        """
        try:
            result = self._exec(argv, timeout=timeout, stdin_text=stdin_text)
        except subprocess.TimeoutExpired:
            raise self._error(f"{' '.join(argv)} did not finish within {timeout:.0f}s in the container") from None
        if check and result.returncode != 0:
            raise self._error(f"{' '.join(argv)} failed ({result.returncode}) in the container:\n"
                              f"{result.stdout}{result.stderr}")
        return result

    def systemctl(self, *args: str, check: bool = False, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``systemctl --no-pager <args>`` in the container (not checked by default: is-active etc. use exit codes)."""
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def status(self, unit: str, *, lines: int = 20) -> str:
        """``systemctl status -l <unit>`` (text contains e.g. ``Active: active (running)``)."""
        return self.systemctl("status", "--full", f"--lines={lines}", unit).stdout

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """``systemctl show`` properties of ``unit`` as a dict."""
        result = self.systemctl("show", *(f"--property={p}" for p in properties), unit, check=True)
        pairs = (line.partition("=") for line in result.stdout.splitlines())
        return {key: value for key, _, value in pairs if key}

    def wait_active(self, unit: str, *, timeout: float = 30.0, sub_state: str | None = None) -> dict[str, str]:
        """Wait until ``unit`` is active (and in ``sub_state`` if given); raise if it fails or times out."""
        deadline = time.monotonic() + timeout
        while True:
            props = self.show(unit, "ActiveState", "SubState", "Result", "MainPID")
            if props.get("ActiveState") == "active" and sub_state in (None, props.get("SubState")):
                return props
            if props.get("ActiveState") == "failed":
                raise self._error(f"{unit} failed ({props}):\n{self.status(unit)}\n{self.journal(unit)}")
            if time.monotonic() > deadline:
                raise self._error(f"{unit} not active after {timeout:.0f}s ({props}):\n{self.status(unit)}")
            time.sleep(0.1)

    def main_pid(self, unit: str) -> int:
        """The unit's main PID in the container's PID namespace (0 if none)."""
        return int(self.show(unit, "MainPID")["MainPID"])

    def cmdline(self, pid: int) -> list[str]:
        """The argv of container process ``pid`` (from its /proc/PID/cmdline)."""
        raw = self.run("cat", f"/proc/{pid}/cmdline").stdout
        return raw.split("\0")[:-1] if raw.endswith("\0") else raw.split("\0")

    def journal(self, unit: str | None = None, *, lines: int | None = None, priority: str | None = None) -> str:
        """This boot's journal (of ``unit`` if given), flushed first so recent lines are there."""
        self.run("journalctl", "--sync", check=False, timeout=10)
        args = ["journalctl", "--no-pager", "--boot", "--output=short-monotonic"]
        args += [f"--unit={unit}"] if unit else []
        args += [f"--lines={lines}"] if lines is not None else []
        args += [f"--priority={priority}"] if priority else []
        return self.run(*args, check=False).stdout

    def verify(self, *paths: str) -> subprocess.CompletedProcess[str]:
        """``systemd-analyze verify <paths>`` in the container (not checked: callers assert on output)."""
        return self.run("systemd-analyze", "verify", *paths, check=False)

    def console(self, lines: int = 60) -> str:
        """The tail of the console (nspawn's and systemd's status output), without colours."""
        try:
            return _tail(self.console_log.read_bytes(), lines)
        except OSError:
            return ""

    def _failed_text(self) -> str:
        """``systemctl --failed`` and the warnings of this boot, best effort (for errors)."""
        if not self.running or not Path(f"/proc/{self.pid}").exists():
            return ""
        sections = []
        for argv in (["systemctl", "--no-pager", "--failed", "--full"],
                     ["systemctl", "--no-pager", "list-jobs", "--full"],
                     ["journalctl", "--no-pager", "--boot", "--priority=warning", "--lines=40",
                      "--output=short-monotonic"]):
            try:
                result = self._exec(argv, timeout=5)
            except (subprocess.SubprocessError, OSError) as exc:
                result = subprocess.CompletedProcess(argv, -1, "", f"({exc})")
            sections.append(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}".strip())
        return "\n".join(sections)

    def _error(self, message: str) -> ContainerError:
        return ContainerError(f"systemd container {self.name}: {message}", console=self.console(),
                              failed=self._failed_text())


__all__ = [
    "BASE_PACKAGES", "ROOTFS_VERSION", "TOOLS", "BootReport", "ContainerError", "Rootfs", "RootfsSpec",
    "ShutdownReport", "SystemdContainer", "Unavailable", "build_rootfs", "require", "unavailable",
]
