"""Run the device's ``swupdate`` against file-backed A/B slots, in isolation.

The binary is the device's own build (:mod:`device_swupdate`: swupdate
2026.05.1 with meta-swupdate's defconfig merged with the layer's fragment,
linked against libubootenv 0.3.5), not Debian's. It has host paths compiled
in: ``/etc/fw_env.config`` (where libubootenv finds the U-Boot environment),
``/usr/share/swupdate/hwrevision``, ``/usr/lib/swupdate/swupdate.cfg`` and the
IPC sockets ``/run/swupdate/sockinstctrl`` and ``/run/swupdate/swupdateprog``,
so two concurrent runs would collide and a run would write the host's /run.

:class:`SwupdateSandbox` therefore runs every ``swupdate`` invocation in a
private mount namespace (``unshare -m --propagation private``) in which

* ``/etc`` is an overlayfs whose upper layer lives in the sandbox directory;
  ``fw_env.config`` is written into it and the other files swupdate or
  libubootenv would read are hidden (whiteouts), so the host ``/etc`` is read
  but never written;
* ``/tmp`` and ``/run`` are fresh tmpfs (sockets, locks and scratch files
  vanish with the namespace); any path the run needs that lives under the host
  ``/tmp`` (the sandbox itself, the bundle, the CA certificate, the AES key)
  is bind-mounted back at the same absolute path, so ``device =
  "<sandbox.slot_b>"`` in a ``sw-description`` resolves to the sandbox file.

swupdate's ``-i`` mode streams the file to its own installer thread over the
control socket and then polls the status; if the whole ``.swu`` fits into the
socket buffer that poll can come before the installer has left ``IDLE``, and
swupdate exits 1 although the installation succeeds (seen with 2022.12 in
5-30 % of runs with small bundles; it never turns a failure into exit 0).
:meth:`SwupdateSandbox.install` therefore (by default, ``paced=True``) feeds
the bundle through a FIFO and only closes it once swupdate has printed
``Software Update started !``, which makes the exit status reliable.

Typical use (the bundle must be written *after* the sandbox exists, because
``sw-description`` names the slot files by absolute path)::

    sandbox = SwupdateSandbox(tmp_path / "sbx")
    swu = build_bundle(device=sandbox.slot_b, ...)
    result = sandbox.install(swu, ca_cert)
    assert result.returncode == 0, result.output
    assert SUCCESS_MARKER in result.output
    assert sandbox.slot_bytes(sandbox.slot_b).startswith(image)
    assert sandbox.untouched(sandbox.slot_a)
    assert sandbox.printenv()["rootpart"] == "3"

Behaviour of this swupdate build worth knowing when writing assertions:

* U-Boot is the compiled-in default bootloader interface (the sandbox passes
  ``-B uboot`` all the same);
* the hardware identity is ``-H board:rev`` (the device reads
  ``/usr/share/swupdate/hwrevision``, which the host does not have); a revision
  not listed in ``hardware-compatibility`` fails ("SW not compatible with
  hardware"), an unknown board fails ("HW compatibility not found");
* on success it sets ``ustate=1`` (not with ``-m``); on a failed install it
  sets ``recovery_status=failed`` (not with ``-M``) and ``ustate=3`` (not with
  ``-m``); during the install ``recovery_status=in_progress``, removed on success.
  A bundle refused before installing (signature, hash, hardware) leaves the
  environment untouched;
* ``-c`` (check only) verifies signature, hashes and hardware, writes nothing.

Everything needs root (mounts); :func:`swupdate_available` returns a reason
string to skip on otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import device_swupdate

__all__ = [
    "DEFAULT_ENV",
    "DEFAULT_ENV_SIZE",
    "DEFAULT_SLOT_SIZE",
    "FAILURE_MARKER",
    "FILL_BYTE",
    "SETUP_FAILED_EXIT",
    "STARTED_MARKER",
    "SUCCESS_MARKER",
    "SandboxError",
    "SwupdateResult",
    "SwupdateSandbox",
    "swupdate_available",
]

MIB = 1024 * 1024
DEFAULT_SLOT_SIZE = 4 * MIB
DEFAULT_ENV_SIZE = 0x4000
#: Every byte of a fresh slot file; :meth:`SwupdateSandbox.untouched` checks for it.
FILL_BYTE = 0x5A
#: Initial U-Boot environment of a fresh sandbox.
DEFAULT_ENV: Mapping[str, str] = {"rootpart": "2", "bootcount": "0", "upgrade_available": "0"}

#: Printed by the installer itself once every image and the bootenv were written
#: (also after a successful ``-c`` check); the line reads
#: ``[INFO ] : SWUPDATE successful ! SWUPDATE successful !``.
SUCCESS_MARKER = "SWUPDATE successful !"
#: Printed last when a (paced) run fails; ``[ERROR] : ... SWUpdate *failed* !``.
FAILURE_MARKER = "SWUpdate *failed* !"
#: Printed by the installer when it accepts the stream (status IDLE -> RUN).
STARTED_MARKER = b"Software Update started !"

#: Exit status of the in-namespace wrapper when it could not set the sandbox up
#: (never returned to callers: :meth:`SwupdateSandbox.install` raises instead).
SETUP_FAILED_EXIT = 125
_SETUP_FAILED_PREFIX = "swupdate-sandbox: setup failed:"

#: Files under /etc that swupdate or libubootenv read if present; hidden in the
#: sandbox unless the sandbox provides them.
_HIDDEN_ETC_FILES = ("swupdate.cfg", "sw-versions", "u-boot-initial-env", "hwrevision")
_HOST_TOOLS = ("unshare", "mkenvimage")
_LOCK_NAME = "swupdate-sandbox.lock"
_DEFAULT_TIMEOUT = 120.0

# Runs inside the new mount namespace (as ``python3 -I -c _INNER SPEC_JSON``):
# overlay /etc, fresh tmpfs on /tmp, bind needed host-/tmp paths back, exec argv.
# Mounts use mount(2) directly: util-linux mount(8) canonicalises a
# /proc/self/fd/N source path and would resolve it in the *new* /tmp.
_INNER = r"""
import ctypes, json, os, sys

MS_BIND, MS_REC = 4096, 16384
spec = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)

def fail(msg):
    sys.stderr.write("%s %s\n" % (spec["setup_failed_prefix"], msg))
    sys.stderr.flush()
    os._exit(spec["setup_failed_exit"])

def mount(src, target, fstype, flags, data):
    rc = libc.mount(src.encode() if src else None, target.encode(),
                    fstype.encode() if fstype else None, flags,
                    data.encode() if data else None)
    if rc != 0:
        err = ctypes.get_errno()
        fail("mount %s on %s (%s): %s" % (src, target, fstype or "bind", os.strerror(err)))

try:
    mount("overlay", "/etc", "overlay", 0,
          "lowerdir=/etc,upperdir=%s,workdir=%s" % (spec["etc_upper"], spec["etc_work"]))
    if spec["usr_upper"]:
        # The device's read-only root, laid over the host's /usr for this run.
        mount("overlay", "/usr", "overlay", 0,
              "lowerdir=/usr,upperdir=%s,workdir=%s" % (spec["usr_upper"], spec["usr_work"]))
    for name in spec["etc_hide"]:
        path = os.path.join("/etc", name)
        if os.path.lexists(path):
            os.unlink(path)          # whiteout in the upper layer only
    for name, content in spec["etc_files"].items():
        with open(os.path.join("/etc", name), "w") as fh:
            fh.write(content)

    old_tmp = os.open("/tmp", os.O_PATH | os.O_DIRECTORY)
    mount("tmpfs", "/run", "tmpfs", 0, "mode=0755")
    for name in ("swupdate", "lock"):
        os.mkdir(os.path.join("/run", name), 0o755)
    # Files of this run at fixed names in its own /run (slots every device of a
    # fleet knows by the same path), bound before /tmp is replaced.
    for name, src in spec["run_files"].items():
        target = os.path.join("/run", name)
        open(target, "a").close()
        mount(src, target, None, MS_BIND, None)
    mount("tmpfs", "/tmp", "tmpfs", 0, "mode=1777")
    for rel in spec["tmp_binds"]:
        src = "/proc/self/fd/%d/%s" % (old_tmp, rel)
        target = os.path.join("/tmp", rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.isdir(src):
            os.makedirs(target, exist_ok=True)
        else:
            open(target, "a").close()
        mount(src, target, None, MS_BIND | MS_REC, None)
    os.close(old_tmp)
    os.chdir(spec["cwd"])
except OSError as exc:
    fail(repr(exc))

env = dict(os.environ, TMPDIR="/tmp", LC_ALL="C", **spec["env"])
try:
    os.execvpe(spec["argv"][0], spec["argv"], env)
except OSError as exc:
    fail("exec %s: %r" % (spec["argv"][0], exc))
"""


class SandboxError(RuntimeError):
    """The sandbox itself could not be built or used (not a swupdate failure)."""


@dataclass(frozen=True)
class SwupdateResult:
    """Outcome of one ``swupdate`` run inside the sandbox."""

    returncode: int
    output: str  # combined stdout + stderr

    @property
    def succeeded(self) -> bool:
        """Exit status 0 *and* the installer's own success line was printed."""
        return self.returncode == 0 and SUCCESS_MARKER in self.output

    @property
    def errors(self) -> list[str]:
        """The ``[ERROR]`` lines of the output, for assertion messages."""
        return [line for line in self.output.splitlines() if line.startswith("[ERROR]")]


def _run(argv: Sequence[str], timeout: float = 30.0,
         env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        env=None if env is None else {**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )


def _check(argv: Sequence[str]) -> str:
    proc = _run(argv, env=device_swupdate.build().env)
    if proc.returncode != 0:
        raise SandboxError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}")
    return proc.stdout


def _run_streaming(
    cmd: Sequence[str], timeout: float, feed: tuple[Path, Path] | None
) -> tuple[int, str]:
    """Run *cmd* (own process group), collect stdout+stderr, optionally feed a FIFO.

    With *feed* ``(bundle, fifo)``, the bundle is written into the FIFO (which the
    command opens for reading) and the FIFO is closed only once the command has
    printed :data:`STARTED_MARKER`, has exited, or 15 s have passed.
    """
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # own process group: a timeout kills swupdate's children too
    )
    assert proc.stdout is not None
    stdout = proc.stdout
    chunks: list[bytes] = []
    started = threading.Event()
    finished = threading.Event()

    def reader() -> None:
        for line in iter(stdout.readline, b""):
            chunks.append(line)
            if STARTED_MARKER in line:
                started.set()
        finished.set()

    def feeder(bundle: Path, fifo: Path) -> None:
        fd = -1
        try:
            while fd < 0:  # a reader may never come (bad arguments): don't block in open()
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as exc:
                    if exc.errno != errno.ENXIO or finished.is_set():
                        return
                    time.sleep(0.005)
            os.set_blocking(fd, True)
            with open(bundle, "rb") as src:
                while block := src.read(64 * 1024):
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view):]
            deadline = time.monotonic() + 15.0
            while not (started.wait(0.02) or finished.is_set() or time.monotonic() > deadline):
                pass
        except OSError:  # swupdate stopped reading (rejected early, exited, killed)
            pass
        finally:
            if fd >= 0:
                os.close(fd)

    threads = [threading.Thread(target=reader, daemon=True)]
    if feed is not None:
        threads.append(threading.Thread(target=feeder, args=feed, daemon=True))
    for t in threads:
        t.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        threads[0].join(5)
        if not threads[0].is_alive():
            stdout.close()
        raise subprocess.TimeoutExpired(list(cmd), timeout, output=b"".join(chunks)) from None
    threads[0].join(5)  # swupdate's helper processes may hold the pipe a moment longer
    if threads[0].is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # only leftovers: the group leader is gone
    for t in threads:
        t.join(5)
    if not threads[0].is_alive():
        stdout.close()
    return proc.returncode, b"".join(chunks).decode("utf-8", errors="replace")


@contextlib.contextmanager
def _global_lock() -> Iterator[None]:
    """Serialise sandbox runs across processes (pytest-xdist workers, parallel jobs)."""
    path = Path(tempfile.gettempdir()) / _LOCK_NAME
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _under(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _check_mount_path(path: Path) -> None:
    # overlayfs option parsing treats these specially; keep paths boring.
    bad = set(",:\\\n") & set(str(path))
    if bad:
        raise SandboxError(f"sandbox path {path} contains unsupported characters {sorted(bad)}")


class SwupdateSandbox:
    """File-backed A/B slots plus a U-Boot environment that ``swupdate`` can update.

    Creates in *root* (made if missing, resolved to an absolute path):

    ``slot-a.img``, ``slot-b.img``
        *slot_size* bytes of :data:`FILL_BYTE`.
    ``uboot.env`` (and ``uboot-redund.env`` when *redundant*)
        ``mkenvimage [-r] -s env_size`` of *initial_env* (default :data:`DEFAULT_ENV`).
    ``fw_env.config``
        libubootenv config, one ``<file> 0x0000 <env_size>`` line per copy.
    """

    def __init__(
        self,
        root: Path,
        board: str = "raspberrypi4-64",
        revision: str = "1.0",
        slot_size: int = DEFAULT_SLOT_SIZE,
        *,
        env_size: int = DEFAULT_ENV_SIZE,
        redundant: bool = False,
        initial_env: Mapping[str, str] | None = None,
        bootloader: str | None = "uboot",
    ) -> None:
        """*bootloader* is passed as ``-B``; this build defaults to ``none``."""
        self.root = Path(root).resolve()
        if _under(self.root, Path("/etc")):
            raise SandboxError("the sandbox root must not be under /etc")
        _check_mount_path(self.root)
        self.board = board
        self.revision = revision
        self.slot_size = slot_size
        self.env_size = env_size
        self.redundant = redundant
        self.bootloader = bootloader
        self._runs = 0
        #: A directory on the sandbox's file system laid over /usr for every
        #: run (files of the device's read-only root, e.g. the delta applier).
        self.usr_layer: Path | None = None
        self.root.mkdir(parents=True, exist_ok=True)

        pattern = bytes([FILL_BYTE]) * min(slot_size, MIB)
        for slot in (self.slot_a, self.slot_b):
            with open(slot, "wb") as fh:
                remaining = slot_size
                while remaining:
                    chunk = pattern[: min(remaining, len(pattern))]
                    fh.write(chunk)
                    remaining -= len(chunk)

        env = DEFAULT_ENV if initial_env is None else initial_env
        env_txt = self.root / "uboot-env.txt"
        env_txt.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        mk = ["mkenvimage", *(["-r"] if redundant else []), "-s", hex(env_size)]
        _check([*mk, "-o", str(self.env_file), str(env_txt)])
        lines = [f"{self.env_file} 0x0000 {hex(env_size)}"]
        if redundant:
            # Second copy: identical data, flag byte 0 (< 1 of the first copy), so
            # libubootenv treats the first copy as current and writes the second next.
            data = bytearray(self.env_file.read_bytes())
            data[4] = 0
            self.env_file_redund.write_bytes(bytes(data))
            lines.append(f"{self.env_file_redund} 0x0000 {hex(env_size)}")
        self.fw_env_config.write_text("\n".join(lines) + "\n")

    # -- paths ---------------------------------------------------------------

    @property
    def slot_a(self) -> Path:
        return self.root / "slot-a.img"

    @property
    def slot_b(self) -> Path:
        return self.root / "slot-b.img"

    @property
    def env_file(self) -> Path:
        return self.root / "uboot.env"

    @property
    def env_file_redund(self) -> Path:
        """Second env copy; only exists when ``redundant=True``."""
        return self.root / "uboot-redund.env"

    @property
    def fw_env_config(self) -> Path:
        return self.root / "fw_env.config"

    # -- slots ----------------------------------------------------------------

    def slot_bytes(self, slot: Path) -> bytes:
        """The whole content of a slot file."""
        return Path(slot).read_bytes()

    def untouched(self, slot: Path) -> bool:
        """True when *slot* still has its original size and every byte is :data:`FILL_BYTE`."""
        data = self.slot_bytes(slot)
        return len(data) == self.slot_size and data.count(FILL_BYTE) == len(data)

    # -- U-Boot environment -----------------------------------------------------

    def printenv(self) -> dict[str, str]:
        """The environment as libubootenv sees it (``fw_printenv -c fw_env.config``)."""
        out = _check([str(device_swupdate.build().tool("fw_printenv")), "-c", str(self.fw_env_config)])
        env: dict[str, str] = {}
        for line in out.splitlines():
            name, sep, value = line.partition("=")
            if sep:
                env[name] = value
        return env

    def setenv(self, name: str, value: str | None) -> None:
        """Set (or with ``None`` delete) one variable via ``fw_setenv -c``."""
        _check([str(device_swupdate.build().tool("fw_setenv")), "-c", str(self.fw_env_config), name,
                *([] if value is None else [value])])

    # -- running swupdate -------------------------------------------------------

    def swupdate_argv(
        self,
        swu: Path,
        ca_cert: Path,
        select: str | None = "stable,copy1",
        extra_args: Sequence[str] = (),
        aes_key: Path | None = None,
        check_only: bool = False,
        hwrevision: str | None = None,
    ) -> list[str]:
        """The swupdate command line :meth:`install` runs (for logging and debugging)."""
        board, revision = self._hw(hwrevision)
        argv = [str(device_swupdate.build().swupdate), "-v", "-i", str(swu), "-k", str(ca_cert)]
        if self.bootloader:
            argv += ["-B", self.bootloader]
        if select:
            argv += ["-e", select]
        argv += ["-H", f"{board}:{revision}"]
        if aes_key is not None:
            argv += ["-K", str(aes_key)]
        if check_only:
            argv.append("-c")
        argv += list(extra_args)
        return argv

    def install(
        self,
        swu: Path,
        ca_cert: Path,
        select: str | None = "stable,copy1",
        extra_args: Sequence[str] = (),
        aes_key: Path | None = None,
        check_only: bool = False,
        hwrevision: str | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
        paced: bool = True,
    ) -> SwupdateResult:
        """Run ``swupdate -i swu`` in the isolated namespace and return its result.

        *hwrevision* overrides the hardware identity (``-H``) for this run:
        ``"<board> <rev>"``, ``"<board>:<rev>"`` or just
        ``"<rev>"`` (keeping the sandbox board).  *select* ``None`` omits ``-e``.
        *extra_args* are appended verbatim (e.g. ``["-m", "-M"]``,
        ``["--cert-purpose", "codeSigning"]``).  A failure of swupdate is a
        non-zero :attr:`SwupdateResult.returncode`; a failure to build the sandbox
        raises :class:`SandboxError`; exceeding *timeout* raises
        :class:`subprocess.TimeoutExpired` after killing the run.

        With *paced* (default) swupdate reads the bundle from a FIFO in the
        sandbox (so ``-i`` in the output names ``.ns/run-N/bundle.swu``), which
        avoids swupdate's exit-status race (see the module docstring); with
        ``paced=False`` it reads *swu* directly.
        """
        board, revision = self._hw(hwrevision)
        files = [Path(swu).resolve(), Path(ca_cert).resolve()]
        if aes_key is not None:
            files.append(Path(aes_key).resolve())
        for f in files:
            if not f.is_file():
                raise SandboxError(f"{f} does not exist")
        ns_dir = self.new_run_dir()
        feed: tuple[Path, Path] | None = None
        source = files[0]
        if paced:
            source = ns_dir / "bundle.swu"
            os.mkfifo(source, 0o600)
            feed = (files[0], source)
        argv = self.swupdate_argv(source, files[1], select, extra_args,
                                  files[2] if aes_key is not None else None,
                                  check_only, f"{board}:{revision}")
        return self._run_isolated(
            ns_dir,
            argv,
            etc_files={"fw_env.config": self.fw_env_config.read_text()},
            needed=[self.root, *files],
            timeout=timeout,
            feed=feed,
        )

    def _hw(self, hwrevision: str | None) -> tuple[str, str]:
        if hwrevision is None:
            return self.board, self.revision
        for sep in (":", " "):
            if sep in hwrevision:
                board, _, rev = hwrevision.strip().partition(sep)
                return board.strip(), rev.strip()
        return self.board, hwrevision.strip()

    def new_run_dir(self) -> Path:
        """A fresh ``.ns/run-N`` directory holding this run's /etc layers (and FIFO)."""
        self._runs += 1
        ns_dir = self.root / ".ns" / f"run-{self._runs}"
        if ns_dir.exists():
            shutil.rmtree(ns_dir)
        (ns_dir / "etc-upper").mkdir(parents=True)
        (ns_dir / "etc-work").mkdir()
        return ns_dir

    def run(self, ns_dir: Path, argv: Sequence[str], *, etc_files: Mapping[str, str] | None = None,
            needed: Sequence[Path] = (), timeout: float = _DEFAULT_TIMEOUT, exclusive: bool = True,
            run_files: Mapping[str, Path] | None = None) -> SwupdateResult:
        """Run any command as :meth:`install` runs swupdate: in the sandbox's namespace, with its
        fw_env.config (and *etc_files*) in /etc. *ns_dir* comes from :meth:`new_run_dir`.

        ``exclusive=False`` lets this run overlap other sandboxes' (a fleet of devices, each in
        its own namespace with its own /run); ``run_files`` binds files at ``/run/<name>``."""
        etc = {"fw_env.config": self.fw_env_config.read_text(), **(etc_files or {})}
        return self._run_isolated(ns_dir, argv, etc_files=etc, needed=[self.root, *needed], timeout=timeout,
                                  exclusive=exclusive, run_files=run_files)

    def _run_isolated(
        self,
        ns_dir: Path,
        argv: Sequence[str],
        etc_files: Mapping[str, str],
        needed: Sequence[Path],
        timeout: float,
        feed: tuple[Path, Path] | None = None,
        exclusive: bool = True,
        run_files: Mapping[str, Path] | None = None,
    ) -> SwupdateResult:
        """Run *argv* in a new mount namespace: overlay /etc (+ *etc_files*), fresh /tmp and /run,
        and :attr:`usr_layer` over /usr when set."""
        upper, work = ns_dir / "etc-upper", ns_dir / "etc-work"
        usr_layer = self.usr_layer
        usr_work = ns_dir / "usr-work"
        if usr_layer is not None:
            usr_work.mkdir(exist_ok=True)

        host_tmp = Path("/tmp").resolve()
        binds: list[Path] = []
        needed = [*needed, device_swupdate.build().root]  # the binaries may live under /tmp too
        for path in sorted({Path(p).resolve() for p in needed}, key=lambda p: len(p.parts)):
            if _under(path, host_tmp) and path != host_tmp and not any(_under(path, b) for b in binds):
                binds.append(path)
        spec = {
            "etc_upper": str(upper),
            "etc_work": str(work),
            "etc_hide": [n for n in _HIDDEN_ETC_FILES if n not in etc_files],
            "etc_files": dict(etc_files),
            "usr_upper": str(usr_layer) if usr_layer is not None else "",
            "usr_work": str(usr_work),
            "tmp_binds": [str(p.relative_to(host_tmp)) for p in binds],
            "run_files": {name: str(Path(path).resolve()) for name, path in (run_files or {}).items()},
            "cwd": str(self.root),
            "argv": list(argv),
            "env": device_swupdate.build().env,
            "setup_failed_prefix": _SETUP_FAILED_PREFIX,
            "setup_failed_exit": SETUP_FAILED_EXIT,
        }
        cmd = ["unshare", "-m", "--propagation", "private", "--",
               sys.executable, "-I", "-c", _INNER, json.dumps(spec)]
        with _global_lock() if exclusive else contextlib.nullcontext():
            returncode, output = _run_streaming(cmd, timeout, feed)
        if returncode == SETUP_FAILED_EXIT and _SETUP_FAILED_PREFIX in output:
            raise SandboxError(output.strip())
        if returncode != 0 and not output.strip():
            raise SandboxError(f"unshare/sandbox wrapper exited {returncode} without output")
        return SwupdateResult(returncode, output)


@functools.lru_cache(maxsize=1)
def swupdate_available() -> str | None:
    """``None`` if sandboxed swupdate runs can work here, else why not (for ``pytest.skip``).

    Besides looking for the tools and root, it does one real namespace round trip
    (overlay on /etc, tmpfs on /tmp, bind back, run ``true``); cached per process.
    """
    if not sys.platform.startswith("linux"):
        return "swupdate sandbox needs Linux"
    missing = [t for t in _HOST_TOOLS if shutil.which(t) is None] + device_swupdate.missing_build_tools()
    if missing:
        return f"missing tools: {', '.join(missing)} (scripts/test.sh installs them)"
    if os.geteuid() != 0:
        return "swupdate sandbox needs root (mount namespaces, overlayfs)"
    try:
        device_swupdate.build()
    except (device_swupdate.BuildError, OSError) as exc:
        return f"the device's swupdate could not be built: {exc}"
    try:
        with tempfile.TemporaryDirectory(prefix="swupdate-sandbox-probe-") as tmp:
            sandbox = SwupdateSandbox(Path(tmp), slot_size=4096)
            result = sandbox._run_isolated(
                sandbox.new_run_dir(),
                ["sh", "-c", 'test -s /etc/fw_env.config && test -f "$1" && test ! -e /tmp/sockinstctrl', "sh",
                 str(sandbox.fw_env_config)],
                etc_files={"fw_env.config": sandbox.fw_env_config.read_text()},
                needed=[sandbox.root],
                timeout=30,
            )
            if result.returncode != 0:
                return f"sandbox probe failed ({result.returncode}): {result.output.strip()}"
    except (SandboxError, OSError, subprocess.SubprocessError) as exc:
        return f"sandbox probe failed: {exc}"
    return None
