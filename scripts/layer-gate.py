#!/usr/bin/env python3
"""The layer's parse gate: a real BitBake parse and dry run of pyvorin-image and
pyvorin-update-image for every machine, against the pinned upstream layers
cloned locally (they are never part of this repository).

    scripts/layer-gate.py                       # every machine in kas/machine/
    scripts/layer-gate.py raspberrypi4-64       # one machine

What a machine builds comes from its kas files, read with a YAML parser: the
machines are those of kas/machine/*.yml, each built through its entry file
kas/<machine>.yml; the repositories, their branches and pinned commits are
those the entry file reaches through its includes (kas/pyvorin.yml, the
machine's kas/bsp/ file). Nothing here lists a layer or a machine.

Environment:
  PYVORIN_LAYERS           directory holding a clone of every pinned repository,
                           by its kas name (default: ../layers beside this repository)
  PYVORIN_GATE_BUILD       work directory (default: $PYVORIN_LAYERS/gate)
  PYVORIN_GATE_USER        unprivileged user to run bitbake as when started as
                           root (bitbake refuses root; default: builder)
  KAS                      the kas command (default: /opt/kas-venv/bin/kas, else kas on PATH)
  PYVORIN_GATE_SKIP_CHECK_LAYER=1  leave out yocto-check-layer (~30 min)
  PYVORIN_GATE_ADMIN_KEY   an SSH public key file: the images get the
                           administrator account "edgeadmin" with it
                           (pyvorin-admin), as the booted-device test logs in

Without the layers or kas it prints a loud SKIP and exits 0. A clone that lacks
its pinned commit stops it (exit 1) before kas runs: the gate never tests other
commits than the pinned ones. It writes no git configuration outside its own
work directory.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BANNER = "#" * 74


class GateError(Exception):
    """The gate cannot run as asked; main() prints it as one line and exits 1."""


class Skip(Exception):
    """What the gate needs is not on this machine: a loud skip, exit 0."""


@dataclass(frozen=True)
class Repo:
    """A repository a kas file pins."""

    name: str
    url: str
    branch: str
    commit: str


@dataclass(frozen=True)
class Machine:
    """A machine of kas/machine/, built through its entry file with these repositories."""

    name: str
    entry: Path
    repos: tuple[Repo, ...]

    @property
    def verity_built(self) -> bool:
        """Whether verified boot (kas/opt/verity.yml) is built for this machine: U-Boot's chain
        exists for the Raspberry Pi only; elsewhere the distro refuses the feature."""
        return any(repo.name == "meta-raspberrypi" for repo in self.repos)


def _load(path: Path) -> dict[str, object]:
    import yaml  # noqa: PLC0415 - kas needs PyYAML too; a missing one is named in main()

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise GateError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise GateError(f"{path}: not a kas mapping")
    return data


def kas_files(entry: Path, root: Path = REPO) -> list[Path]:
    """``entry`` and every file its includes reach (paths relative to the repository ``root``), depth first."""
    seen: list[Path] = []

    def visit(path: Path) -> None:
        if path in seen:
            return
        header = _load(path).get("header") or {}
        includes = header.get("includes", []) if isinstance(header, dict) else []
        for include in includes:
            if not isinstance(include, str):
                raise GateError(f"{path}: only includes from this repository are gated: {include}")
            visit(root / include)
        seen.append(path)

    visit(entry)
    return seen


def repos(entry: Path, root: Path = REPO) -> tuple[Repo, ...]:
    """The remote repositories ``entry`` builds with, each pinned once."""
    found: dict[str, Repo] = {}
    for path in kas_files(entry, root):
        listed = _load(path).get("repos") or {}
        if not isinstance(listed, dict):
            raise GateError(f"{path}: repos is not a mapping")
        for name, spec in listed.items():
            if not isinstance(spec, dict) or "url" not in spec:
                continue    # this repository itself
            if not spec.get("commit") or not spec.get("branch"):
                raise GateError(f"{path}: {name} is not pinned to a commit of a branch")
            repo = Repo(name, spec["url"], spec["branch"], spec["commit"])
            if name in found and found[name] != repo:
                raise GateError(f"{name} is pinned twice, differently ({found[name].commit}, {repo.commit})")
            found[name] = repo
    return tuple(found[name] for name in sorted(found))


def machines(root: Path = REPO) -> dict[str, Machine]:
    """Every machine of kas/machine/ under ``root``, with its entry file kas/<machine>.yml."""
    found = {}
    for path in sorted((root / "kas/machine").glob("*.yml")):
        name = _load(path).get("machine")
        if not isinstance(name, str):
            raise GateError(f"{path}: no machine")
        entry = root / "kas" / f"{name}.yml"
        if not entry.is_file():
            raise GateError(f"{path}: no entry file kas/{name}.yml")
        found[name] = Machine(name, entry, repos(entry, root))
    return found


def _git(*argv: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    # safe.directory per call (-c), never written to a configuration file: the
    # clones belong to another user than the one running the gate.
    return subprocess.run(["git", "-c", "safe.directory=*", *argv], cwd=cwd, capture_output=True, text=True,
                          check=check)


def mirror(repo: Repo, layers: Path, build: Path) -> bool:
    """A shallow clone of the local clone that reaches the pinned commit (kas clones whole
    repositories; a snapshot may lack old objects). False if the clone does not hold the pin."""
    target = build / "mirrors" / repo.name
    if not (target / ".git").is_dir():
        shutil.rmtree(target, ignore_errors=True)
        if _git("clone", "-q", "--depth", "1", "--single-branch", "--branch", repo.branch,
                f"file://{layers / repo.name}", str(target), check=False).returncode != 0:
            return False
    for _ in range(40):
        if _git("cat-file", "-e", f"{repo.commit}^{{commit}}", cwd=target, check=False).returncode == 0:
            return True
        if _git("fetch", "-q", "--deepen", "50", "origin", repo.branch, cwd=target, check=False).returncode != 0:
            break
    return False


def freeze(src: Path) -> None:
    """A copy of this tree (tracked and new files, as they are now) for kas to read as a git repository."""
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    listed = _git("-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if not source.exists() and not source.is_symlink():
            continue    # deleted, not yet committed
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
        # BitBake's parse cache trusts a file whose mtime did not change; a fresh
        # clone would re-parse everything. An mtime derived from the content keeps
        # an unchanged file's cache entry across runs and clones, and never a changed one's.
        if not target.is_symlink():
            digest = hashlib.sha256(target.read_bytes()).digest()
            stamp = 1_000_000_000 + int.from_bytes(digest[:4], "big") % 500_000_000
            os.utime(target, (stamp, stamp))
    _git("init", "-q", cwd=src)
    _git("add", "-A", cwd=src)
    _git("-c", "user.name=gate", "-c", "user.email=gate@localhost", "commit", "-q", "-m", "frozen for the layer gate",
         cwd=src)


def override(machine: Machine, src: Path, build: Path, admin: bool) -> Path:
    """The kas fragment that points each repository at its mirror (kas wants every file of a
    concatenation in one repository: it lives in the frozen copy, untracked)."""
    lines = ["header:", "  version: 14", "repos:"]
    for repo in machine.repos:
        lines += [f"  {repo.name}:", f"    url: file://{build / 'mirrors' / repo.name}"]
    lines += ["local_conf_header:", "  pyvorin-gate: |", '    BB_NO_NETWORK = "1"',
              f'    PYVORIN_KEYS_DIR = "{build / "keys"}"']
    if admin:
        lines += ['    PYVORIN_ADMIN_USER = "edgeadmin"', f'    PYVORIN_ADMIN_AUTHORIZED_KEYS = "{build / "keys/admin.pub"}"']
    path = src / ".gate" / f"local-layers-{machine.name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Runner:
    """Runs commands as the build user when the gate runs as root (bitbake refuses root)."""

    user: str | None

    def argv(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        """``argv`` as the build user, with ``env`` added to its environment (after runuser, which resets some)."""
        command = ["env", *(f"{name}={value}" for name, value in (env or {}).items()), *argv]
        if self.user is None:
            return command
        home = pwd.getpwnam(self.user).pw_dir
        return ["runuser", "-u", self.user, "--", "env", f"HOME={home}", "LANG=en_US.UTF-8", "LC_ALL=en_US.UTF-8",
                *command]

    def run(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> bool:
        """Whether ``argv`` succeeds, its output to ``log``."""
        with open(log, "w") as out:
            return subprocess.run(self.argv(argv, env), stdout=out, stderr=subprocess.STDOUT).returncode == 0

    def output(self, argv: list[str], env: dict[str, str] | None = None) -> str:
        """What ``argv`` prints on stdout; a failure raises GateError with its stderr."""
        result = subprocess.run(self.argv(argv, env), capture_output=True, text=True)
        if result.returncode != 0:
            raise GateError(f"{' '.join(argv[:2])} failed ({result.returncode}): "
                            f"{' | '.join(result.stderr.strip().splitlines()[-3:])}")
        return result.stdout


def find_kas(runner: Runner) -> str:
    configured = os.environ.get("KAS")
    candidates = [configured] if configured else ["/opt/kas-venv/bin/kas", shutil.which("kas") or ""]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and subprocess.run(
                runner.argv([candidate, "--version"]), capture_output=True).returncode == 0:
            return candidate
    raise Skip("kas is not installed for the build user "
               "(python3 -m venv /opt/kas-venv && /opt/kas-venv/bin/pip install kas)")


def check_layer_summary(log: Path) -> list[str]:
    """One line per yocto-check-layer test with its verdict (it prints them apart), and its totals."""
    lines, name = [], ""
    for line in log.read_text(errors="replace").splitlines():
        if match := re.match(r"^INFO: (test_[a-z_]+) \(", line):
            name = match.group(1)
        elif name and line.startswith("INFO:  ... "):
            lines.append(f"{name}: {line.removeprefix('INFO:  ... ')}")
            name = ""
        elif re.match(r"^INFO: (Ran |OK|FAILED)|^INFO: .*\.\.\. (PASS|FAIL)", line):
            lines.append(line)
    return lines


def gate(names: list[str]) -> int:
    known = machines()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise GateError(f"no machine {', '.join(unknown)} in kas/machine/ (there: {', '.join(known)})")
    chosen = [known[name] for name in names or known]
    layers = Path(os.environ.get("PYVORIN_LAYERS") or REPO.parent / "layers")
    needed = sorted({repo for machine in chosen for repo in machine.repos}, key=lambda r: r.name)
    for repo in needed:
        if not (layers / repo.name / ".git").exists():
            raise Skip(f"no clone of {repo.name} in {layers} (set PYVORIN_LAYERS)")
    runner = Runner(os.environ.get("PYVORIN_GATE_USER", "builder") if os.geteuid() == 0 else None)
    kas = find_kas(runner)
    build = Path(os.environ.get("PYVORIN_GATE_BUILD") or layers / "gate")
    build.mkdir(parents=True, exist_ok=True)
    stale = [f"{repo.name} ({repo.commit} on {repo.branch})" for repo in needed if not mirror(repo, layers, build)]
    if stale:
        raise GateError(f"the clones in {layers} lack their pinned commits: {', '.join(stale)}; "
                        "the clones (or the ../shared/upstream snapshot) are stale, refresh them to the pins")

    # Dev keys for the bundle recipe (the layer has none and must not); a work
    # directory kept from before the fleet CA gets both anew.
    keys = build / "keys"
    if not (keys / "manifest.json").is_file() or not (keys / "fleet/ca.crt").is_file():
        subprocess.run([sys.executable, "-m", "pyvorin", "keys", "init", str(keys), "--only", "swupdate,fleet",
                        "--key-size", "2048", "--force"], env={**os.environ, "PYTHONPATH": str(REPO / "scripts")},
                       check=True)
    admin = os.environ.get("PYVORIN_GATE_ADMIN_KEY")
    if admin:
        shutil.copy(admin, keys / "admin.pub")

    src = build / "src"
    freeze(src)
    if runner.user is not None:
        subprocess.run(["chown", "-R", runner.user, str(build)], check=True)

    status = 0
    for machine in chosen:
        print(f"== {machine.name}", flush=True)
        log = build / f"{machine.name}.log"
        fragment = override(machine, src, build, bool(admin))
        if runner.user is not None:
            subprocess.run(["chown", "-R", runner.user, str(fragment.parent)], check=True)
        entry = src / machine.entry.relative_to(REPO)
        config = f"{entry}:{src}/kas/opt/dev-keys.yml:{fragment}"
        kas_env = {"KAS_WORK_DIR": str(build / "work"), "KAS_BUILD_DIR": str(build / f"build-{machine.name}")}
        started = int(time.monotonic())
        passed = runner.run([kas, "shell", config, "-c", str(src / "scripts/layer-gate-checks.sh")], log, kas_env)
        text = log.read_text(errors="replace")
        if passed:
            # The record of what the build used, as a release job keeps it
            # (examples/ci/release.yml): every repository at its commit, this one's too.
            record = runner.output([kas, "dump", "--resolve-refs", "--resolve-local", config], kas_env)
            (build / f"build-{machine.name}" / "gate-out" / "kas-record.yml").write_text(record)
            print(f"   PASS ({int(time.monotonic()) - started} s) - log: {log}")
            print("".join(f"   {line}\n" for line in text.splitlines() if line.startswith("gate:")), end="")
            # The same machine with verified boot selected, in a build directory of its own
            # (kas rewrites local.conf: sharing one would reparse both configurations every run).
            print(f"== {machine.name} + kas/opt/verity.yml", flush=True)
            log = build / f"{machine.name}-verity.log"
            started = int(time.monotonic())
            expect = "parses" if machine.verity_built else "refused"
            passed = runner.run([kas, "shell", f"{config}:{src}/kas/opt/verity.yml", "-c",
                                 f"{src / 'scripts/layer-gate-verity.sh'} {expect}"], log,
                                {**kas_env, "KAS_BUILD_DIR": str(build / f"build-{machine.name}-verity")})
            text = log.read_text(errors="replace")
            print(f"   {'PASS' if passed else 'FAIL'} ({int(time.monotonic()) - started} s) - log: {log}")
            shown = [line for line in text.splitlines() if line.startswith("gate:")] if passed \
                else [f"| {line}" for line in text.splitlines()[-30:]]
            print("".join(f"   {line}\n" for line in shown), end="")
            status = status if passed else 1
        else:
            print(f"   FAIL ({int(time.monotonic()) - started} s) - log: {log}")
            print("".join(f"   | {line}\n" for line in text.splitlines()[-30:]), end="")
            status = 1
    if status == 0 and not os.environ.get("PYVORIN_GATE_SKIP_CHECK_LAYER"):
        print("== yocto-check-layer meta-pyvorin", flush=True)
        log = build / "yocto-check-layer.log"
        started = int(time.monotonic())
        passed = runner.run([str(src / "scripts/layer-gate-check-layer.sh"), str(src), str(build / "work"),
                             str(build / "check-layer")], log)
        print(f"   {'PASS' if passed else 'FAIL'} ({int(time.monotonic()) - started} s) - log: {log}")
        print("".join(f"   {line}\n" for line in check_layer_summary(log)), end="")
        status = 0 if passed else 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="layer-gate.py", description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("machines", nargs="*", metavar="MACHINE", help="machines to gate (default: all)")
    args = parser.parse_args(argv)
    try:
        return gate(args.machines)
    except Skip as exc:
        print(f"\n{BANNER}\n## LAYER GATE SKIPPED: {exc}\n"
              f"## The BitBake parse of meta-pyvorin did NOT run. See README, 'Layer gate'.\n{BANNER}\n")
        return 0
    except GateError as exc:
        print(f"layer-gate: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        print(f"layer-gate: {exc}: run it with a Python that has PyYAML (kas needs it too)", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"layer-gate: {' '.join(map(str, exc.cmd))} failed ({exc.returncode}): "
              f"{(exc.stderr or '').strip()}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"layer-gate: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
