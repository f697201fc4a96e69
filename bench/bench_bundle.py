#!/usr/bin/env python3
"""Benchmark ``pyvorin bundle`` on one large raw image, side by side with
``sha256sum`` and swugenerator 0.6 on the very same file.

    python3 bench/bench_bundle.py                      # 2 GiB image, 3 runs per tool
    python3 bench/bench_bundle.py --size 256M          # quick run
    python3 bench/bench_bundle.py --swugenerator /tmp/swugen-venv/bin/swugenerator

It prints a table and one PASS/MISS line per goal:

  (a) bundling rate / sha256sum rate   >= 0.80   (rate = image bytes / wall seconds)
  (b) pyvorin time / swugenerator time <= 0.67   (same spec: one raw image, CMS signed)
  (c) peak RSS of the pyvorin process  <= 100 MiB

Every tool runs as a child process, timed by wall clock around fork..wait4;
user/sys CPU and peak RSS come from the rusage wait4 returns for that one child.
The image is read once before anything is timed (warm page cache) and the runs
are interleaved (sha256sum, pyvorin, swugenerator, then again), the median wall
time counts.  The bundle pyvorin produced is checked with ``pyvorin verify``
and its sha256 compared with sha256sum's, so a fast but wrong bundle fails.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

GOAL_RATE = 0.80  # (a) pyvorin rate / sha256sum rate, at least
GOAL_TIME = 0.67  # (b) pyvorin time / swugenerator time, at most
GOAL_RSS_MIB = 100.0  # (c) peak RSS of `pyvorin bundle`, at most

MiB = 1 << 20
GiB = 1 << 30
CPIO_MAX = 0xFFFFFFFF  # a cpio 070702 member holds at most 4 GiB - 1
ARTIFACT = "rootfs.img"
VERSION = "2026.11.0"
MACHINE = "raspberrypi4-64"
SLOTS = {"copy1": "/dev/mmcblk0p3", "copy2": "/dev/mmcblk0p2"}


# --------------------------------------------------------------------------- helpers


def parse_size(text: str) -> int:
    """'2G', '256M', '1.5GiB', '1000000' -> bytes (K/M/G/T are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (examples: 2G, 256M, 1.5GiB, 1048576)")
    scale = 1024 ** " kmgt".index(m.group(2).lower() or " ")
    size = int(float(m.group(1)) * scale)
    if size < 1:
        raise argparse.ArgumentTypeError("size must be at least 1 byte")
    if size > CPIO_MAX:
        raise argparse.ArgumentTypeError(
            f"{text}: {size} bytes is over the 4 GiB - 1 a cpio member (and SWUpdate) can hold"
        )
    return size


def human(size: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size:.0f} B"


def say(message: str) -> None:
    """Progress goes to stderr; the results go to stdout."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class Run:
    wall: float
    user: float
    sys: float
    maxrss_kib: int
    returncode: int
    stdout: str
    stderr: str


# A fresh, small parent for the measured command.  Peak RSS cannot be taken
# from this script's own wait4(): subprocess spawns with vfork, and at exec
# Linux records the *old* mm's high-water mark in the child's ru_maxrss, so
# every child would report at least this script's peak (~40 MiB after making
# the image).  GNU time (Debian package "time") forks from a ~1 MiB process;
# the Python fallback from a ~7 MiB one.  The floor is measured and printed.
PY_PROBE = r"""
import os, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(out, "w") as f:
    f.write(f"{wall} {ru.ru_utime} {ru.ru_stime} {ru.ru_maxrss}\n")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""
GNU_TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Probe:
    name: str  # "GNU time" or "python helper"

    def wrap(self, cmd: Sequence[str], stats: Path) -> list[str]:
        if self.name == "GNU time":
            return [GNU_TIME, "-o", str(stats), "-f", "%e %U %S %M", *cmd]
        return [sys.executable, "-S", "-I", "-c", PY_PROBE, str(stats), *cmd]


def choose_probe(which: str) -> Probe:
    if which in ("auto", "time") and os.access(GNU_TIME, os.X_OK):
        test = subprocess.run([GNU_TIME, "-f", "%M", "true"], check=False, capture_output=True, text=True)
        if test.returncode == 0 and test.stderr.strip().isdigit():
            return Probe("GNU time")
    if which == "time":
        raise SystemExit(f"error: --rss-probe time: no working {GNU_TIME} (Debian package 'time')")
    return Probe("python helper")


def measure(cmd: Sequence[str], *, probe: Probe, logs: Path, tag: str, cwd: Path | None = None) -> Run:
    """Run ``cmd`` under ``probe``: wall time, CPU and peak RSS of that command only."""
    out_path, err_path, stats_path = logs / f"{tag}.out", logs / f"{tag}.err", logs / f"{tag}.rusage"
    stats_path.unlink(missing_ok=True)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.run(probe.wrap(cmd, stats_path), check=False, cwd=cwd, stdin=subprocess.DEVNULL,
                              stdout=out, stderr=err)
        outer_wall = time.perf_counter() - start
    try:
        # GNU time puts "Command exited with non-zero status N" before the numbers.
        fields = stats_path.read_text().strip().splitlines()[-1].split()
        wall, user, system, rss = float(fields[0]), float(fields[1]), float(fields[2]), int(fields[3])
    except (OSError, IndexError, ValueError):
        wall, user, system, rss = outer_wall, 0.0, 0.0, 0
    if probe.name == "GNU time":
        wall = outer_wall  # %e has 10 ms steps; exec of time itself costs ~1 ms
    return Run(
        wall=wall,
        user=user,
        sys=system,
        maxrss_kib=rss,
        returncode=proc.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


def check_run(what: str, run: Run) -> None:
    if run.returncode != 0:
        tail = (run.stderr or run.stdout).strip().splitlines()[-15:]
        raise SystemExit(f"error: {what} exited {run.returncode}:\n  " + "\n  ".join(tail))


# --------------------------------------------------------------------------- the image


def make_image(path: Path, size: int, seed: int) -> None:
    """Write a deterministic, realistic-ish raw image of exactly ``size`` bytes.

    Extents of 1-32 MiB, each one of: zeros (unused blocks, ~30 %), random data
    (compressed files, ~55 %), text-like data (4 bits/byte and repetitive, ~15 %).
    Every non-zero MiB is stamped with its offset, so no two are identical.
    Random bytes come from a seeded random.Random, so a seed always gives the
    same image (its sha256 is printed with the results).
    """
    rng = random.Random(seed)
    pool = [rng.randbytes(MiB) for _ in range(16)]
    alphabet = b"etaoinshrdlu \n=/"
    text_table = bytes(alphabet[i % len(alphabet)] for i in range(256))
    text_pool = [block[: 64 * 1024].translate(text_table) * 16 for block in pool[:4]]
    zero = bytes(MiB)
    written = 0
    with open(path, "wb", buffering=0) as handle:
        while written < size:
            pick = rng.random()
            kind = "zero" if pick < 0.30 else "random" if pick < 0.85 else "text"
            for _ in range(rng.randint(1, 32)):
                if written >= size:
                    break
                if kind == "zero":
                    block = zero
                else:
                    source = rng.choice(pool if kind == "random" else text_pool)
                    block = written.to_bytes(8, "little") + source[8:]
                n = min(MiB, size - written)
                handle.write(memoryview(block)[:n])
                written += n
        os.fsync(handle.fileno())  # no writeback of the image while tools are timed


def warm_cache(path: Path) -> float:
    """Read the file once (into the page cache); return the read rate in bytes/s."""
    buf = bytearray(8 * MiB)
    total = 0
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buf):
            total += n
    return total / max(time.perf_counter() - start, 1e-9)


# --------------------------------------------------------------------------- inputs for both tools


def write_spec(path: Path, image: Path) -> None:
    """The pyvorin release spec (format of examples/release.yaml)."""
    installs = "".join(
        f"    {mode}:\n      install:\n        {ARTIFACT}: {device}\n" for mode, device in SLOTS.items()
    )
    path.write_text(
        f"version: {VERSION}\n"
        "description: pyvorin bundle benchmark\n"
        "artifacts:\n"
        f"  {ARTIFACT}:\n"
        f"    file: {image}\n"
        "    type: raw\n"
        "machines:\n"
        f"  {MACHINE}:\n"
        '    hardware-compatibility: ["1.0"]\n'
        f"{installs}"
    )


def write_swugen_template(path: Path) -> None:
    """The equivalent sw-description template for swugenerator 0.6.

    swugenerator 0.6 fills in ``sha256`` itself for every entry with a
    ``filename`` (generator.py, process_entry: ``entry["sha256"] =
    new.getsha256()`` unless -y/--no-hash), so the template names the file and
    nothing else; ``$swupdate_get_sha256(file)`` would only add another pass.
    """
    copies = "".join(
        f"""\t\t\t{mode} = {{
\t\t\t\timages = (
\t\t\t\t\t{{
\t\t\t\t\t\tfilename = "{ARTIFACT}";
\t\t\t\t\t\ttype = "raw";
\t\t\t\t\t\tdevice = "{device}";
\t\t\t\t\t}}
\t\t\t\t);
\t\t\t}};
"""
        for mode, device in SLOTS.items()
    )
    path.write_text(
        "software =\n{\n"
        f'\tversion = "{VERSION}";\n'
        '\tdescription = "pyvorin bundle benchmark";\n'
        f"\t{MACHINE} = {{\n"
        '\t\thardware-compatibility = [ "1.0" ];\n'
        "\t\tstable = {\n"
        f"{copies}"
        "\t\t};\n"
        "\t};\n"
        "};\n"
    )


def first_member(bundle: Path) -> tuple[str, bytes]:
    """Name and data of a cpio's first member (sw-description)."""
    with open(bundle, "rb") as handle:
        head = handle.read(110)
        if head[:6] not in (b"070701", b"070702"):
            raise SystemExit(f"error: {bundle} is not a cpio newc/crc archive")
        size, namesize = int(head[54:62], 16), int(head[94:102], 16)
        name = handle.read(namesize)[:-1].decode(errors="replace")
        handle.seek((110 + namesize + 3) & ~3)
        return name, handle.read(size)


def described_sha256(bundle: Path) -> set[str]:
    name, data = first_member(bundle)
    if name != "sw-description":
        raise SystemExit(f"error: {bundle}: first member is {name!r}, not sw-description")
    return set(re.findall(r'sha256\s*=\s*"([0-9a-f]{64})"', data.decode(errors="replace")))


# --------------------------------------------------------------------------- locating the tools


def pyvorin_command() -> list[str]:
    if importlib.util.find_spec("pyvorin") is not None:
        return [sys.executable, "-m", "pyvorin"]
    found = shutil.which("pyvorin")
    if found:
        return [found]
    raise SystemExit("error: pyvorin is neither importable by this Python nor on PATH (pip install -e .)")


def find_swugenerator(option: str | None) -> tuple[str | None, str]:
    """(path or None, version or reason it is missing)."""
    if option:
        path = shutil.which(option) or (option if os.access(option, os.X_OK) else None)
        if path is None:
            raise SystemExit(f"error: --swugenerator {option}: not an executable")
    else:
        path = shutil.which("swugenerator")
        if path is None:
            return None, "not found on PATH and no --swugenerator PATH given"
    probe = subprocess.run([path, "--help"], check=False, capture_output=True, text=True)
    m = re.search(r"SWUpdate\s+(\S+)", probe.stdout)
    return path, (m.group(1) if m else "unknown version")


def fs_type(path: Path) -> str:
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                mount = parts[1].replace("\\040", " ")
                inside = str(path).startswith(mount.rstrip("/") + "/") or str(path) == mount
                if inside and len(mount) > len(best):
                    best, kind = mount, parts[2]
    return kind


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


# --------------------------------------------------------------------------- results


@dataclass
class Tool:
    label: str
    cmd: list[str]
    cwd: Path | None
    output: Path | None  # removed before each run
    runs: list[Run] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(r.wall for r in self.runs)

    @property
    def median_run(self) -> Run:
        return min(self.runs, key=lambda r: abs(r.wall - self.median))

    @property
    def peak_rss_mib(self) -> float:
        return max(r.maxrss_kib for r in self.runs) / 1024


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_results(size: int, tools: list[Tool], swugen_missing: str | None) -> list[bool]:
    width = max(len(t.label) for t in tools)
    max_runs = max(len(t.runs) for t in tools)
    runs_w = max(7 * max_runs, 8)
    print()
    print(f"{'tool':<{width}}  {'wall s per run':<{runs_w}}  {'median s':>8}  {'MiB/s':>7}  "
          f"{'user s':>7}  {'sys s':>6}  {'peak RSS':>9}")
    for tool in tools:
        runs = " ".join(f"{r.wall:6.2f}" for r in tool.runs)
        m = tool.median_run
        print(f"{tool.label:<{width}}  {runs:<{runs_w}}  {tool.median:8.2f}  {size / tool.median / MiB:7.1f}  "
              f"{m.user:7.2f}  {m.sys:6.2f}  {tool.peak_rss_mib:5.1f} MiB")
    print("(user/sys: CPU seconds of the median run; peak RSS: the largest over all runs of that tool)")
    print()

    sha, ours = tools[0], tools[1]
    results = []
    rate_ratio = sha.median / ours.median  # (size/ours) / (size/sha)
    ok = rate_ratio >= GOAL_RATE
    results.append(ok)
    print(f"(a) bundling rate / sha256sum rate = {size / ours.median / MiB:.1f} / {size / sha.median / MiB:.1f} MiB/s "
          f"= {rate_ratio:.2f}  (goal >= {GOAL_RATE:.2f})  {verdict(ok)}")
    if swugen_missing is None:
        swu = tools[2]
        time_ratio = ours.median / swu.median
        ok = time_ratio <= GOAL_TIME
        results.append(ok)
        print(f"(b) pyvorin time / swugenerator time = {ours.median:.2f} / {swu.median:.2f} s "
              f"= {time_ratio:.3f}  (goal <= {GOAL_TIME:.2f})  {verdict(ok)}")
    else:
        print(f"(b) pyvorin time / swugenerator time: SKIP, swugenerator {swugen_missing} "
              "(pip install swugenerator==0.6 into a venv, then --swugenerator VENV/bin/swugenerator)")
    ok = ours.peak_rss_mib <= GOAL_RSS_MIB
    results.append(ok)
    print(f"(c) peak RSS of pyvorin bundle = {ours.peak_rss_mib:.1f} MiB  (goal <= {GOAL_RSS_MIB:.0f} MiB)  {verdict(ok)}")
    return results


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark pyvorin bundle against sha256sum and swugenerator 0.6 on one raw image.",
        epilog="See bench/README.md for what each number means.",
    )
    parser.add_argument("--size", type=parse_size, default=2 * GiB,
                        help="image size, e.g. 256M, 2G (default 2G; at most 4 GiB - 1)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool; the median counts (default 3)")
    parser.add_argument("--swugenerator-repeat", type=int, metavar="N",
                        help="runs of swugenerator if fewer than --repeat are wanted (it is slow)")
    parser.add_argument("--swugenerator", metavar="PATH",
                        help="swugenerator executable (default: the one on PATH; skipped if none)")
    parser.add_argument("--no-swugenerator", action="store_true", help="skip swugenerator even if found")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"),
                        help="a fresh scratch directory is made in here and removed at the end (default /var/tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (image, keys, bundles, logs)")
    parser.add_argument("--seed", type=int, default=20261100, help="seed of the image contents (default 20261100)")
    parser.add_argument("--rss-probe", choices=["auto", "time", "python"], default="auto",
                        help="what runs each command and reports its rusage: GNU time (/usr/bin/time, "
                             "~1 MiB floor) or a small Python helper (~7 MiB floor); auto prefers time")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 if a goal is missed")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.swugenerator_repeat is None:
        args.swugenerator_repeat = args.repeat
    if not 1 <= args.swugenerator_repeat <= args.repeat:
        parser.error("--swugenerator-repeat must be between 1 and --repeat")

    if shutil.which("sha256sum") is None:
        raise SystemExit("error: sha256sum not found (coreutils)")
    pyvorin = pyvorin_command()
    probe = choose_probe(args.rss_probe)
    if args.no_swugenerator:
        swugen: str | None
        swugen, swugen_info = None, "skipped (--no-swugenerator)"
    else:
        swugen, swugen_info = find_swugenerator(args.swugenerator)

    args.workdir.mkdir(parents=True, exist_ok=True)
    copies = 3 if swugen else 2  # the image, our bundle (and swugenerator's)
    need = copies * args.size + 256 * MiB
    free = shutil.disk_usage(args.workdir).free
    if free < need:
        raise SystemExit(f"error: {args.workdir} has {human(free)} free; this run needs about {human(need)}")
    work = Path(tempfile.mkdtemp(prefix="pyvorin-bench-", dir=args.workdir)).resolve()
    try:
        return run_benchmark(args, work, pyvorin, probe, swugen, swugen_info)
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_benchmark(args: argparse.Namespace, work: Path, pyvorin: list[str], probe: Probe,
                  swugen: str | None, swugen_info: str) -> int:
    size: int = args.size
    logs, images = work / "logs", work / "images"
    swugen_cwd = work / "swugen-cwd"  # swugenerator adds its cwd to the artifact search path: keep it empty
    for d in (logs, images, swugen_cwd):
        d.mkdir()
    image = images / ARTIFACT

    say(f"workdir {work}")
    say(f"generating a {human(size)} image (seed {args.seed}) ...")
    start = time.perf_counter()
    make_image(image, size, args.seed)
    say(f"  {time.perf_counter() - start:.1f} s")

    say("generating keys: pyvorin keys init DIR --only swupdate ...")
    keys = work / "keys"
    check_run("pyvorin keys init", measure([*pyvorin, "keys", "init", str(keys), "--only", "swupdate"],
                                           probe=probe, logs=logs, tag="keys"))
    key, cert, ca = keys / "swupdate/signer.key", keys / "swupdate/signer.crt", keys / "swupdate/ca.crt"

    spec = work / "release.yaml"
    write_spec(spec, image)
    template = work / "sw-description.in"
    write_swugen_template(template)
    ours_out, swugen_out = work / "pyvorin.swu", work / "swugenerator.swu"

    sha = Tool("sha256sum", ["sha256sum", str(image)], None, None)
    ours = Tool("pyvorin bundle", [*pyvorin, "bundle", str(spec), "-o", str(ours_out),
                                   "--key", str(key), "--cert", str(cert)], None, ours_out)
    theirs = None
    if swugen:
        theirs = Tool(f"swugenerator {swugen_info}",
                      [swugen, "-s", str(template), "-o", str(swugen_out), "-a", str(images),
                       "-k", f"CMS,{key},{cert}", "create"], swugen_cwd, swugen_out)
    tools = [t for t in (sha, ours, theirs) if t is not None]

    floor = measure(["true"], probe=probe, logs=logs, tag="floor")
    check_run("true", floor)

    say("warming the page cache (reading the image once) ...")
    read_rate = warm_cache(image)
    say(f"  {read_rate / MiB:.0f} MiB/s")

    for i in range(args.repeat):
        for tool in tools:
            if tool is theirs and i >= args.swugenerator_repeat:
                continue
            if tool.output is not None:
                tool.output.unlink(missing_ok=True)  # every run writes a new file, not over an old one
            tag = f"{tool.label.split()[0]}-{i + 1}"
            run = measure(tool.cmd, probe=probe, logs=logs, tag=tag, cwd=tool.cwd)
            check_run(tool.label, run)
            if tool.output is not None and not tool.output.is_file():
                raise SystemExit(f"error: {tool.label} exited 0 but wrote no {tool.output}")
            tool.runs.append(run)
            # Untimed: flush what this run left dirty (swugenerator does not fsync its output),
            # so background writeback does not slow down the next tool's timed run.
            os.sync()
            say(f"run {i + 1}/{args.repeat}  {tool.label:<18} {run.wall:8.2f} s  "
                f"{run.maxrss_kib / 1024:6.1f} MiB peak RSS")

    # Did we time a correct bundle of this very image?
    image_sha = sha.runs[-1].stdout.split()[0]
    say("verifying the bundles ...")
    verify = measure([*pyvorin, "verify", str(ours_out), "--cert", str(ca)], probe=probe, logs=logs,
                     tag="verify-pyvorin")
    check_run(f"pyvorin verify {ours_out} (the benchmarked bundle is NOT valid)", verify)
    if described_sha256(ours_out) != {image_sha}:
        raise SystemExit(f"error: {ours_out}: sw-description states sha256 {sorted(described_sha256(ours_out))}, "
                         f"sha256sum says {image_sha}")
    notes = [f"pyvorin verify {ours_out.name} --cert ca.crt: OK; sw-description sha256 = sha256sum's"]
    if theirs is not None:
        their_sha = described_sha256(swugen_out)
        if their_sha != {image_sha}:
            raise SystemExit(f"error: swugenerator's sw-description states sha256 {sorted(their_sha)}, "
                             f"sha256sum says {image_sha}: the two tools did not bundle the same file")
        other = measure([*pyvorin, "verify", str(swugen_out), "--cert", str(ca)], probe=probe, logs=logs,
                        tag="verify-swugenerator")
        state = "OK" if other.returncode == 0 else "FAILED: " + (other.stderr or other.stdout).strip()
        notes.append(f"pyvorin verify {swugen_out.name} --cert ca.crt: {state}; sw-description sha256 = sha256sum's")

    # ------------------------------------------------------------------ report
    print(f"pyvorin bundle benchmark: {human(size)} raw image ({size} bytes, seed {args.seed}, "
          f"sha256 {image_sha[:16]}...)")
    print(f"host: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"workdir {work} ({fs_type(work)}); warm read {read_rate / MiB:.0f} MiB/s")
    runs = f"{args.repeat} run{'s' if args.repeat > 1 else ''} per tool"
    if theirs is not None and args.swugenerator_repeat != args.repeat:
        runs += f" ({args.swugenerator_repeat} of swugenerator)"
    print(f"{runs}, interleaved, page cache warm; the median wall time counts; "
          f"rusage by {probe.name} (its RSS floor, running `true`: {floor.maxrss_kib / 1024:.1f} MiB)")
    for tool in tools:
        print(f"  $ {shlex.join(tool.cmd)}" + (f"   # in {tool.cwd}" if tool.cwd else ""))
    for note in notes:
        print(f"  {note}")
    results = print_results(size, tools, None if theirs is not None else swugen_info)
    sys.stdout.flush()
    if args.fail_on_miss and not all(results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
