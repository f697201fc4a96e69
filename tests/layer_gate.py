"""The BitBake layer gate, run by the tests from the pinned layers in ../shared/upstream.

``scripts/layer-gate.py MACHINE`` parses meta-pyvorin with the six pinned
scarthgap layers through kas, checks the image's configuration (``bitbake -e``),
dry-runs both images (``bitbake -n``) and records what ``pyvorin-image``
installs (``bitbake -g`` and scripts/layer-gate-closure.py). This module gives it
the layers, unpacked once from ``layers-scarthgap.tar``, and keeps the results.

BitBake refuses to run as root: the gate runs it as an unprivileged user
(``builder``, made by scripts/test.sh), who cannot enter root's home. Its files
therefore live under ``$PYVORIN_TEST_CACHE/layer-gate`` when that is set, else
``/var/cache/pyvorin-tests/layer-gate``:

- ``layers-<tar hash>/``: non-bare clones of the snapshot's repositories;
- ``build/``: the gate's work directory, kept between runs so BitBake's parse
  cache (``build-<machine>/cache``) and kas's checkouts are reused;
- ``result-<machine>-<inputs>/``: a passing run's log and image content, keyed
  by everything the run reads (the layer, kas files, gate scripts, snapshot,
  kas version), so unchanged inputs never parse again.

When a pin moves and the snapshot does not follow, :func:`stale_pins` says so
and the gate refuses to run: it must never test the old commits silently.
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

from pyvorin_devsim import cache
from pyvorin_devsim.device_swupdate import LAYERS_TAR, UPSTREAM

ROOT = Path(__file__).resolve().parents[1]
GATE = ROOT / "scripts" / "layer-gate.py"


def _gate_module() -> types.ModuleType:
    """scripts/layer-gate.py, whose kas reader says which machines and pinned repositories there are."""
    spec = importlib.util.spec_from_file_location("pyvorin_layer_gate", GATE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gate = _gate_module()
#: The machines CI gates (raspberrypi5 shares the Pi's metadata; scripts/layer-gate.py runs it by hand).
MACHINES = ("raspberrypi4-64", "jetson-orin-nano-devkit")
#: Every repository a machine builds with, by its kas name (the snapshot holds each).
LAYERS = tuple(sorted({repo.name for machine in gate.machines().values() for repo in machine.repos}))
CONTENTS = ROOT / "tests" / "image-contents"
USER = os.environ.get("PYVORIN_GATE_USER", "builder")
KAS = os.environ.get("KAS", "/opt/kas-venv/bin/kas")
#: Everything a gate run reads from this tree.
INPUT_DIRS = ("meta-pyvorin", "kas")
INPUT_FILES = ("scripts/layer-gate.py", "scripts/layer-gate-checks.sh", "scripts/layer-gate-closure.py",
               "scripts/layer-gate-install.py", "scripts/layer-gate-bundle.py", "scripts/layer-gate-verity.sh")
TIMEOUT = 3600


class GateError(RuntimeError):
    """The gate could not be set up or run."""


@dataclass(frozen=True)
class GateRun:
    machine: str
    log: str
    #: The gate's own summary lines ("gate: ...").
    lines: tuple[str, ...]
    #: Recipes ``bitbake -g pyvorin-image`` builds.
    recipes: frozenset[str]
    #: Packages the image's rootfs step installs, each with its recipe.
    packages: dict[str, str]
    #: The recipes' install code and the image's rootfs steps (scripts/layer-gate-install.py), for
    #: the machines whose runtime the booted-device test boots; else None.
    install: Path | None = None
    #: The release spec pyvorin_bundle.bbclass writes for this machine (PYVORIN_BUNDLE_SPEC).
    bundle_spec: dict | None = None  # type: ignore[type-arg]
    #: The slot map and release variables as the update image sees them (name -> value).
    slot_map: dict[str, str] | None = None
    #: pyvorin-update-image's do_deploy and its prefunc's output (scripts/layer-gate-bundle.py).
    bundle: Path | None = None
    #: ``kas dump --resolve-refs --resolve-local`` of the build: what it used, commit by commit.
    kas_record: Path | None = None
    #: The summary of the same machine with kas/opt/verity.yml (scripts/layer-gate-verity.sh).
    verity_lines: tuple[str, ...] = ()
    #: pyvorin-update-image's do_deploy with kas/opt/verity.yml, where verified boot is built.
    verity_bundle: Path | None = None


def base() -> Path:
    configured = os.environ.get("PYVORIN_TEST_CACHE")
    path = Path(configured) if configured else Path("/var/cache/pyvorin-tests")
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(path.stat().st_mode | 0o755)
    return path


def snapshot() -> Path:
    path = UPSTREAM / LAYERS_TAR
    if not path.is_file():
        raise GateError(f"{path} is missing: the pinned layers live in ../shared/upstream/ (or PYVORIN_UPSTREAM)")
    return path


def pins() -> dict[str, str]:
    """Repository name -> the commit the kas files pin it to (as the gate reads them)."""
    found: dict[str, str] = {}
    for machine in gate.machines().values():
        for repo in machine.repos:
            if found.setdefault(repo.name, repo.commit) != repo.commit:
                raise GateError(f"{repo.name} is pinned to two commits ({found[repo.name]}, {repo.commit})")
    return found


def _git(*argv: str, cwd: Path = ROOT) -> str:
    # Every call names its directory: the gate runs in a thread beside tests
    # that change the process's working directory.
    return subprocess.run(["git", "-c", "safe.directory=*", *argv], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def _unpack(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(snapshot()) as tar:
        tar.extractall(tmp, filter="data")
        for name in LAYERS:
            _git("clone", "-q", "--branch", "scarthgap", f"{tmp}/{name}.git", str(out / name))


@functools.cache
def snapshot_digest() -> str:
    return cache.file_key(snapshot())


@functools.cache
def layers() -> Path:
    """Clones of the snapshot's repositories, each on the commit its ``scarthgap`` holds."""
    return cache.entry("layers", snapshot_digest(), _unpack, area="layer-gate", base=base())


def stale_pins() -> list[str]:
    """One line per repository whose snapshot commit is not the pinned one."""
    directory = layers()
    stale = []
    for name, commit in sorted(pins().items()):
        if name not in LAYERS:
            continue
        head = _git("rev-parse", "HEAD", cwd=directory / name)
        if head != commit:
            stale.append(f"{name}: the kas files pin {commit}, {LAYERS_TAR} has {head}")
    return stale


def _tree_files() -> list[str]:
    listed = subprocess.run(["git", "-c", f"safe.directory={ROOT}", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard", "--", *INPUT_DIRS, *INPUT_FILES],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    return sorted(f for f in listed if f and (ROOT / f).is_file())


def admin_key() -> Path:
    """The private half of the SSH key the gate gives the images' administrator ("edgeadmin").

    Made once, kept beside the gate's results (root's, mode 0600): the booted
    device test logs in with it, as an operator would with theirs."""
    directory = cache.root("layer-gate", base()) / "admin-key"
    key = directory / "id_ed25519"
    if not key.with_suffix(".pub").exists():
        directory.mkdir(mode=0o755, exist_ok=True)
        key.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pyvorin-gate-edgeadmin", "-f", str(key)],
                       check=True, capture_output=True)
    return key


def inputs(machine: str) -> str:
    """A hash of everything a gate run of *machine* reads."""
    parts: list[str | bytes] = [machine, snapshot_digest(), admin_key().with_suffix(".pub").read_bytes()]
    kas_version = subprocess.run([KAS, "--version"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    parts.append(kas_version)
    for name in _tree_files():
        parts += [name, (ROOT / name).read_bytes()]
    return cache.key(*parts)


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run the gate (scripts/test.sh provides all of it)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the gate runs bitbake as an unprivileged user)")
    try:
        import pwd

        pwd.getpwnam(USER)
    except KeyError:
        missing.append(f"the user {USER}")
    if not os.access(KAS, os.X_OK):
        missing.append(f"kas at {KAS}")
    for tool in ("chrpath", "diffstat", "gawk", "lz4c", "file", "wget", "rpcgen", "zstd", "git", "runuser"):
        if shutil.which(tool) is None:
            missing.append(tool)
    locales = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.lower()
    if "en_us.utf8" not in locales:
        missing.append("the en_US.UTF-8 locale")
    if not (UPSTREAM / LAYERS_TAR).is_file():
        missing.append(str(UPSTREAM / LAYERS_TAR))
    return missing


def _read(out: Path, machine: str) -> GateRun:
    log = (out / "gate.log").read_text()
    packages = {}
    for line in (out / "packages.txt").read_text().splitlines():
        package, recipe, _reason = line.split()
        packages[package] = recipe
    return GateRun(machine=machine, log=log,
                   lines=tuple(line.strip() for line in log.splitlines() if line.strip().startswith("gate:")),
                   verity_lines=tuple(line.strip() for line in (out / "gate-verity.log").read_text().splitlines()
                                      if line.strip().startswith("gate: verity:")),
                   recipes=frozenset((out / "pn-buildlist").read_text().split()), packages=packages,
                   install=out / "install" if (out / "install").is_dir() else None,
                   bundle_spec=json.loads((out / "bundle-spec.json").read_text()),
                   slot_map=dict(line.split("=", 1) for line in (out / "slot-map.txt").read_text().splitlines()),
                   bundle=out / "bundle", kas_record=out / "kas-record.yml",
                   verity_bundle=out / "verity-bundle" if (out / "verity-bundle").is_dir() else None)


_background: dict[str, concurrent.futures.Future[GateRun]] = {}


def start_in_background(machines: tuple[str, ...] = MACHINES) -> None:
    """Start the gate for *machines*, one after the other, while the rest of the suite runs.

    BitBake spends minutes in single-threaded dry runs: overlapping them with
    the other tests shortens a cold CI run. :func:`result` collects them."""
    if _background:
        return
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="layer-gate")
    for machine in machines:
        _background[machine] = pool.submit(run, machine)
    pool.shutdown(wait=False)


def wait_for_background() -> None:
    """Block until a background gate run is over (its outcome is collected by :func:`result`)."""
    for future in _background.values():
        concurrent.futures.wait([future])


def result(machine: str) -> GateRun:
    """The verdict for *machine*, one per session: the background run's if one was
    started, else a run now. A failure is raised again, never re-run."""
    future = _background.get(machine)
    if future is None:
        future = concurrent.futures.Future()
        try:
            future.set_result(run(machine))
        except GateError as exc:
            future.set_exception(exc)
        _background[machine] = future
    return future.result()


def run(machine: str) -> GateRun:
    """The gate's verdict for *machine*: a kept passing run for the same inputs, else a fresh run.

    Raises :class:`GateError` with the log's tail when the gate fails."""
    stale = stale_pins()
    if stale:
        raise GateError("the snapshot in ../shared/upstream is stale; move it with the pins:\n" + "\n".join(stale))
    root = cache.root("layer-gate", base())
    final = root / f"result-{machine}-{inputs(machine)}"
    if (final / ".complete").exists():
        return _read(final, machine)
    build = root / "build"
    env = {**os.environ, "PYVORIN_LAYERS": str(layers()), "PYVORIN_GATE_BUILD": str(build),
           "PYVORIN_GATE_SKIP_CHECK_LAYER": "1", "PYVORIN_GATE_USER": USER, "KAS": KAS,
           "PYVORIN_GATE_ADMIN_KEY": str(admin_key().with_suffix(".pub"))}
    result = subprocess.run([sys.executable, str(GATE), machine], env=env, capture_output=True, text=True,
                            timeout=TIMEOUT, cwd=ROOT)
    log_path = build / f"{machine}.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    if result.returncode != 0 or "LAYER GATE SKIPPED" in result.stdout:
        raise GateError(f"scripts/layer-gate.py {machine} failed ({result.returncode}):\n{result.stdout}"
                        f"{result.stderr}")
    work = root / f".result-{machine}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    (work / "gate.log").write_text(log)
    shutil.copy(build / f"{machine}-verity.log", work / "gate-verity.log")
    for name in ("packages.txt", "pn-buildlist", "bundle-spec.json", "slot-map.txt", "kas-record.yml"):
        shutil.copy(build / f"build-{machine}" / "gate-out" / name, work / name)
    exported = build / f"build-{machine}" / "gate-out" / "install"
    if exported.is_dir():
        shutil.copytree(exported, work / "install", symlinks=True)
    shutil.copytree(build / f"build-{machine}" / "gate-out" / "bundle", work / "bundle", symlinks=True)
    verity_bundle = build / f"build-{machine}-verity" / "gate-out" / "bundle"
    if verity_bundle.is_dir():
        shutil.copytree(verity_bundle, work / "verity-bundle", symlinks=True)
    (work / ".complete").touch()
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)
    for old in root.glob(f"result-{machine}-*"):  # one kept run per machine: the latest
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return _read(final, machine)


@dataclass(frozen=True)
class Expected:
    package: str
    why: str
    source: str


def expected(machine: str) -> list[Expected]:
    """What *machine*'s image must install: image-contents/pyvorin.txt (every machine) and <machine>.txt.

    One package per line, then ``#`` and why it must be there; blank and
    comment-only lines are ignored."""
    wanted = []
    for path in (CONTENTS / "pyvorin.txt", CONTENTS / f"{machine}.txt"):
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            line, _, why = raw.partition("#")
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 1:
                raise GateError(f"{path.name}:{number}: one package per line, then '# why': {raw!r}")
            wanted.append(Expected(fields[0], why.strip(), f"{path.name}:{number}"))
    return wanted


def missing(run: GateRun, machine: str) -> list[str]:
    """Each expected package the image does not install, with where it is listed and why."""
    return [f"{item.package} ({item.source}: {item.why})" for item in expected(machine)
            if item.package not in run.packages]
