#!/usr/bin/env python3
"""Benchmark ``pyvorin delta`` on a realistic pair of ext4 root file system
images, side by side with Debian ``bsdiff`` 4.3, PyPI ``bsdiff4``,
``xdelta3 -9``, ``zstd --patch-from --long`` and ``zck`` (SWUpdate's native
delta), in one run.

    python3 bench/bench_delta.py                          # 512 MiB images, full run (~25 min on 2 cores)
    python3 bench/bench_delta.py --slice 32M --bsdiff-timeout 60    # quick look on the first 32 MiB
    python3 bench/bench_delta.py --only ours,zstd19 --no-apply       # a subset

The images are built once (mmdebstrap + mkfs.ext4 -d, cached in --workdir):
OLD is Debian bookworm as published (point release 12.N) with package set A,
NEW is the same package set with bookworm-updates, bookworm-security and
bookworm-proposed-updates on top: what the next point release ships.

It prints one table (delta size, wall time, CPU time, peak RSS) for every
tool, the apply side (our device applier with its bspatch and zstd children, plain
bspatch, xdelta3 -d, zstd -d --patch-from), each output checked byte for byte
against NEW, and one PASS/MISS line per goal of issue 3.  See bench/DELTA.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20
GiB = 1 << 30

# --------------------------------------------------------------------------- the image pair

EPOCH = 1767225600  # 2026-01-01T00:00:00Z: file times, mkfs times, mmdebstrap
UUID = "5e1f0c1a-7c1b-4b0a-9d1e-0d5e17a00001"  # the same for both images, as a reproducible build has
HASH_SEED = "5e1f0c1a-7c1b-4b0a-9d1e-0d5e17a00002"
MKFS_OPTS = ("-t", "ext4", "-b", "4096", "-I", "256", "-L", "rootfs", "-U", UUID, "-E", f"hash_seed={HASH_SEED}")
# Package set A: a minbase system plus what an edge device with SWUpdate runs.
PACKAGES = (
    "systemd", "systemd-sysv", "udev", "dbus", "kmod", "iproute2", "iputils-ping",
    "netbase", "openssh-server", "ca-certificates", "curl", "openssl", "python3", "python3-yaml",
    "python3-cryptography", "python3-requests", "nftables", "apparmor", "auditd", "less", "vim-tiny",
    "procps", "psmisc", "rsync", "e2fsprogs", "dosfstools", "fdisk", "zstd", "xz-utils", "bsdiff",
    "swupdate", "libubootenv-tool", "chrony", "sudo", "jq", "tzdata", "wpasupplicant", "iw",
)
SUITES = {
    # 12.N as published: the "bookworm" suite alone.
    "old": ("bookworm",),
    # 12.N+1 as proposed: everything accepted since, from the pockets a point release folds in.
    "new": ("bookworm", "bookworm-updates", "bookworm-proposed-updates", "bookworm-security"),
}
SECURITY = {"bookworm-security"}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (examples: 512M, 1G, 1048576)")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))


def human(size: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(size) >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size:.0f} B"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while data := handle.read(4 * MiB):
            sha.update(data)
    return sha.hexdigest()


def _tree_key(name: str, mirror: str, security: str) -> str:
    spec = {"packages": PACKAGES, "suites": SUITES[name], "epoch": EPOCH, "mirror": mirror,
            "security": security, "variant": "minbase"}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def build_tree(cache: Path, name: str, mirror: str, security: str) -> Path:
    """mmdebstrap a tarball of package set A from SUITES[name]; cached."""
    tar = cache / f"{name}-{_tree_key(name, mirror, security)}.tar"
    if tar.exists():
        return tar
    if shutil.which("mmdebstrap") is None:
        sys.exit("bench_delta: mmdebstrap not found (apt-get install mmdebstrap), or pass --old/--new")
    sources = [f"deb {security if s in SECURITY else mirror} {s} main" for s in SUITES[name]]
    log(f"mmdebstrap {name}: {' + '.join(SUITES[name])} ({len(PACKAGES)} packages + minbase)")
    partial = tar.with_suffix(".partial.tar")
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                    "bookworm", str(partial), *sources], check=True, env=env)
    partial.rename(tar)
    return tar


def dpkg_versions(tar: Path) -> dict[str, str]:
    status = subprocess.run(["tar", "-xOf", str(tar), "./var/lib/dpkg/status"], capture_output=True,
                            text=True, check=True).stdout
    versions = {}
    for para in status.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", para, re.MULTILINE))
        if "Package" in fields and "installed" in fields.get("Status", ""):
            versions[fields["Package"]] = fields["Version"]
    return versions


def build_image(cache: Path, tar: Path, size: int) -> Path:
    """mkfs.ext4 -d of the tarball's tree into a ``size``-byte image; cached."""
    key = hashlib.sha256(json.dumps([tar.name, size, MKFS_OPTS, EPOCH]).encode()).hexdigest()[:12]
    image = cache / f"{tar.stem}-{size >> 20}M-{key}.ext4"
    if image.exists():
        return image
    log(f"mkfs.ext4 -d {tar.name} -> {image.name}")
    with tempfile.TemporaryDirectory(dir=cache, prefix="tree-") as tree:
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", str(tar), "-C", tree],
                       check=True)
        partial = image.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(EPOCH), SOURCE_DATE_EPOCH=str(EPOCH))
        result = subprocess.run(["mkfs.ext4", "-q", "-F", *MKFS_OPTS, "-d", tree, str(partial), f"{size >> 10}k"],
                                env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            sys.exit(f"bench_delta: mkfs.ext4 failed (tree larger than --image-size?): {result.stderr.strip()}")
    subprocess.run(["e2fsck", "-fn", str(partial)], check=True, capture_output=True)
    partial.rename(image)
    return image


def image_pair(args: argparse.Namespace) -> tuple[Path, Path, dict[str, object]]:
    if args.old and args.new:
        return args.old, args.new, {"source": "given on the command line"}
    cache = args.workdir / "images"
    cache.mkdir(parents=True, exist_ok=True)
    tars = {name: build_tree(cache, name, args.mirror, args.security_mirror) for name in ("old", "new")}
    images = {name: build_image(cache, tar, args.image_size) for name, tar in tars.items()}
    manifest_path = images["new"].with_suffix(".manifest.json")
    if not manifest_path.exists():
        old_v, new_v = dpkg_versions(tars["old"]), dpkg_versions(tars["new"])
        changed = {p: [old_v.get(p), new_v.get(p)] for p in sorted(set(old_v) | set(new_v))
                   if old_v.get(p) != new_v.get(p)}
        manifest = {"old_suites": SUITES["old"], "new_suites": SUITES["new"], "packages_requested": PACKAGES,
                    "installed_old": len(old_v), "installed_new": len(new_v), "changed": changed,
                    "old_tar_bytes": tars["old"].stat().st_size, "new_tar_bytes": tars["new"].stat().st_size,
                    "old_sha256": sha256_file(images["old"]), "new_sha256": sha256_file(images["new"])}
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    manifest = json.loads(manifest_path.read_text())
    return images["old"], images["new"], manifest


def sliced(run: Path, old: Path, new: Path, size: int) -> tuple[Path, Path]:
    """The first ``size`` bytes of each image (quick development runs; not file systems any more)."""
    out = []
    for path, name in ((old, "old.slice"), (new, "new.slice")):
        target = run / name
        with open(path, "rb") as src, open(target, "wb") as dst:
            dst.write(src.read(size))
        out.append(target)
    return out[0], out[1]


# --------------------------------------------------------------------------- measuring one command


@dataclass
class ProcPeak:
    pid: int
    ppid: int
    name: str
    depth: int
    hwm: int = 0  # VmHWM, bytes: the kernel's peak RSS of this process


@dataclass
class Result:
    label: str
    cmd: list[str]
    wall: float = 0.0
    rc: int | None = None
    timed_out: bool = False
    user: float = 0.0
    sys: float = 0.0
    maxrss: int = 0  # GNU time: max RSS of the process and the descendants it waited for, bytes
    procs: dict[int, ProcPeak] = field(default_factory=dict)
    tree_rss: int = 0  # sampled peak of the sum of RSS over the process tree
    tree_pss: int = 0  # ... of the sum of PSS (shared pages split between sharers)
    output: Path | None = None
    size: int | None = None
    note: str = ""
    stdout: str = ""

    @property
    def finished(self) -> bool:
        return not self.timed_out and self.rc == 0

    def main_hwm(self) -> int:
        return max((p.hwm for p in self.procs.values() if p.depth == 1), default=0)

    def child_hwm(self) -> tuple[int, str, int]:
        """Largest peak among processes below the command, its name, and how many there were."""
        kids = [p for p in self.procs.values() if p.depth >= 2]
        if not kids:
            return 0, "", 0
        top = max(kids, key=lambda p: p.hwm)
        return top.hwm, top.name, len(kids)


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


class TreeSampler(threading.Thread):
    """Polls /proc for the process tree under ``root``: per-process VmHWM, summed RSS and PSS.

    VmHWM is kept by the kernel, so a process's peak is exact as long as it is
    sampled once shortly before it exits; the summed RSS/PSS are samples.
    New children are found by a full /proc scan every ``scan`` seconds.
    """

    def __init__(self, root: int, interval: float, scan: float) -> None:
        super().__init__(daemon=True)
        self.root, self.interval, self.scan = root, interval, scan
        self.stop = threading.Event()
        self.procs: dict[int, ProcPeak] = {}
        self.tree_rss = self.tree_pss = 0
        self._last_scan = 0.0
        self._tick = 0

    def _discover(self) -> None:
        parents: dict[int, list[tuple[int, str]]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            stat = _read(f"/proc/{entry.name}/stat")
            if not stat:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            parents.setdefault(ppid, []).append((int(entry.name), name))
        todo = [(self.root, 0)]
        while todo:
            pid, depth = todo.pop()
            for child, name in parents.get(pid, []):
                if child not in self.procs:
                    self.procs[child] = ProcPeak(child, pid, name, depth + 1)
                todo.append((child, depth + 1))

    def sample(self) -> None:
        now = time.monotonic()
        if now - self._last_scan >= self.scan:
            self._discover()
            self._last_scan = now
        self._tick += 1
        rss_sum = pss_sum = 0
        with_pss = self._tick % 2 == 0
        for proc in self.procs.values():
            status = _read(f"/proc/{proc.pid}/status")
            if not status:
                continue
            m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
            if m:
                proc.hwm = max(proc.hwm, int(m.group(1)) << 10)
            m = re.search(r"^Name:\s+(.*)$", status, re.MULTILINE)
            if m:
                proc.name = m.group(1)
            m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
            rss_sum += int(m.group(1)) << 10 if m else 0
            if with_pss:
                rollup = _read(f"/proc/{proc.pid}/smaps_rollup") or ""
                m = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
                pss_sum += int(m.group(1)) << 10 if m else 0
        self.tree_rss = max(self.tree_rss, rss_sum)
        if with_pss:
            self.tree_pss = max(self.tree_pss, pss_sum)

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.sample()


def parse_gnu_time(text: str, result: Result) -> None:
    def field_(name: str) -> str | None:
        m = re.search(rf"^\s*{re.escape(name)}: (.*)$", text, re.MULTILINE)
        return m.group(1) if m else None

    result.user = float(field_("User time (seconds)") or 0)
    result.sys = float(field_("System time (seconds)") or 0)
    result.maxrss = int(field_("Maximum resident set size (kbytes)") or 0) << 10
    status = field_("Exit status")
    if status is not None:
        result.rc = int(status)


def measure(label: str, cmd: Sequence[str], logs: Path, timeout: float, interval: float,
            env: dict[str, str] | None = None, output: Path | None = None) -> Result:
    """Run ``cmd`` under GNU time -v, sample its process tree, kill its process group on timeout."""
    result = Result(label, [str(c) for c in cmd], output=output)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")
    time_log, out_log = logs / f"{slug}.time", logs / f"{slug}.out"
    subprocess.run(["sync"], check=False)
    log(f"run {label}: {' '.join(result.cmd)}")
    with open(out_log, "w") as out:
        start = time.monotonic()
        proc = subprocess.Popen(["/usr/bin/time", "-v", "-o", str(time_log), *result.cmd], stdout=out,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        sampler = TreeSampler(proc.pid, interval, scan=max(interval * 4, 0.2))
        sampler.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            result.timed_out = True
            sampler.sample()
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        result.wall = time.monotonic() - start
        sampler.stop.set()
        sampler.join()
    result.procs, result.tree_rss, result.tree_pss = sampler.procs, sampler.tree_rss, sampler.tree_pss
    result.stdout = out_log.read_text(errors="replace")
    if not result.timed_out:
        parse_gnu_time(time_log.read_text(errors="replace"), result)
    if output is not None and output.exists() and result.finished:
        result.size = output.stat().st_size
    state = "did not finish" if result.timed_out else f"rc {result.rc}"
    log(f"  {label}: {state}, {result.wall:.1f} s, max RSS {human(result.maxrss or sampler_max(result))}"
        + (f", {result.size} bytes" if result.size is not None else ""))
    if not result.timed_out and result.rc != 0:
        log(f"  {label} failed; its output:\n{result.stdout[-2000:]}")
    return result


def sampler_max(result: Result) -> int:
    return max((p.hwm for p in result.procs.values()), default=0)


# --------------------------------------------------------------------------- the tools


@dataclass
class Inputs:
    old: Path
    new: Path
    old_size: int
    new_size: int
    new_sha: str
    run: Path
    logs: Path


def xdelta_window(inputs: Inputs) -> int:
    """-B: a source window covering the whole old image (xdelta3 allows at most 2 GiB)."""
    return min(2 * GiB, max(MiB, -(-inputs.old_size // MiB) * MiB))


def make_tools(inputs: Inputs, py: str) -> dict[str, tuple[str, list[str], Path]]:
    """key -> (label, command, delta file)."""
    old, new, run = str(inputs.old), str(inputs.new), inputs.run
    b = str(xdelta_window(inputs))
    tools: dict[str, tuple[str, list[str], Path]] = {}

    def add(key: str, label: str, cmd: list[str], out: Path) -> None:
        tools[key] = (label, cmd, out)

    add("ours", "pyvorin delta (default, --memory 1G)", [py, "-m", "pyvorin", "delta", old, new, "-o",
                                                         str(run / "ours.pyvd")], run / "ours.pyvd")
    add("ours-noreport", "pyvorin delta --no-report", [py, "-m", "pyvorin", "delta", "--no-report", old, new,
                                                       "-o", str(run / "ours-nr.pyvd")], run / "ours-nr.pyvd")
    add("ours-bsdiff", "pyvorin delta --codec bsdiff --no-report (every window bsdiff: the codec before)",
        [py, "-m", "pyvorin", "delta", "--codec", "bsdiff", "--no-report", old, new, "-o",
         str(run / "ours-bsdiff.pyvd")], run / "ours-bsdiff.pyvd")
    add("ours-256m", "pyvorin delta --memory 256M --no-report",
        [py, "-m", "pyvorin", "delta", "--memory", "256M", "--no-report", old, new, "-o", str(run / "ours-256m.pyvd")],
        run / "ours-256m.pyvd")
    add("xdelta3", f"xdelta3 -9 -B {b}", ["xdelta3", "-e", "-9", "-f", "-B", b, "-s", old, new,
                                          str(run / "xd.vcdiff")], run / "xd.vcdiff")
    add("xdelta3-djw", f"xdelta3 -9 -S djw -B {b}", ["xdelta3", "-e", "-9", "-S", "djw", "-f", "-B", b, "-s", old,
                                                     new, str(run / "xd-djw.vcdiff")], run / "xd-djw.vcdiff")
    add("xdelta3-lzma", f"xdelta3 -9 -S lzma -B {b}", ["xdelta3", "-e", "-9", "-S", "lzma", "-f", "-B", b, "-s",
                                                       old, new, str(run / "xd-lzma.vcdiff")], run / "xd-lzma.vcdiff")
    for level in (19, 3):
        out = run / f"zstd{level}.zst"
        add(f"zstd{level}", f"zstd -{level} --long=30 --patch-from",
            ["zstd", "-q", "-f", f"-{level}", "--long=30", f"--patch-from={old}", new, "-o", str(out)], out)
    add("zck", "zck (NEW.zck; delta = zck_delta_size)", ["zck", "-o", str(run / "new.zck"), new], run / "new.zck")
    add("bsdiff4", "bsdiff4 1.x file_diff (whole file)",
        [py, "-c", "import sys, bsdiff4; bsdiff4.file_diff(*sys.argv[1:])", old, new, str(run / "bsdiff4.patch")],
        run / "bsdiff4.patch")
    add("bsdiff", "Debian bsdiff 4.3 (whole file)", ["bsdiff", old, new, str(run / "bsdiff.patch")],
        run / "bsdiff.patch")
    return tools


ORDER = ("ours", "ours-noreport", "ours-bsdiff", "ours-256m", "xdelta3", "xdelta3-djw", "xdelta3-lzma", "zstd19", "zstd3", "zck", "bsdiff4",
         "bsdiff")
WHOLE_FILE = {"bsdiff", "bsdiff4"}
OURS = ("ours", "ours-noreport", "ours-bsdiff", "ours-256m")
BUDGET_MIB = {"ours": 1024, "ours-noreport": 1024, "ours-bsdiff": 1024, "ours-256m": 256}  # their --memory


def run_zck(inputs: Inputs, label: str, cmd: list[str], out: Path, args: argparse.Namespace) -> Result:
    """zck NEW is the timed row; zck OLD (made at the previous release, or on the device from the
    active slot by SWUpdate) and zck_delta_size (header + chunks of NEW.zck not in OLD.zck) follow."""
    res = measure(label, cmd, inputs.logs, args.timeout, args.interval, output=out)
    old_zck = inputs.run / "old.zck"
    old_res = measure("zck OLD", ["zck", "-o", str(old_zck), str(inputs.old)], inputs.logs, args.timeout,
                      args.interval)
    if res.finished and old_res.finished:
        text = subprocess.run(["zck_delta_size", str(old_zck), str(out)], capture_output=True, text=True,
                              check=False).stdout
        m = re.search(r"Would download (\d+) of (\d+) bytes", text)
        chunks = re.search(r"Matched (\d+) of (\d+) chunks", text)
        if m:
            res.note = (f"NEW.zck {int(m.group(2))} B, {chunks.group(0) if chunks else ''}; "
                        f"zck OLD took {old_res.wall:.1f} s").strip()
            res.size = int(m.group(1))
    return res


def inspect_ours(path: Path) -> dict[str, int]:
    """Op counts and the largest window (source + output + patch) of a windowed delta."""
    sys.path.insert(0, str(REPO / "scripts"))
    from pyvorin.delta.container import Copy, Patch, Zero, read_delta

    stats = {"copy": 0, "zero": 0, "patch": 0, "patch_bytes": 0, "patched_new": 0, "max_source": 0,
             "max_window": 0, "max_patch": 0, "max_source_extents": 0}
    with open(path, "rb") as handle:
        _, ops = read_delta(handle)
        for op in ops:
            if isinstance(op, Copy):
                stats["copy"] += 1
            elif isinstance(op, Zero):
                stats["zero"] += 1
            elif isinstance(op, Patch):
                stats["patch"] += 1
                stats["patch_bytes"] += len(op.patch)
                stats["patched_new"] += op.length
                stats["max_source"] = max(stats["max_source"], op.source_size)
                stats["max_patch"] = max(stats["max_patch"], len(op.patch))
                stats["max_window"] = max(stats["max_window"], op.source_size + op.length + len(op.patch))
                stats["max_source_extents"] = max(stats["max_source_extents"], len(op.extents))
    return stats


# --------------------------------------------------------------------------- apply side


PATCH_TOOL_SHIM = """#!/bin/sh
# bench_delta: records the peak RSS of every {name} the applier starts
exec /usr/bin/time -a -o "{log}" -f "%M %e %x" "{tool}" "$@"
"""


def apply_side(inputs: Inputs, results: dict[str, Result], py: str, args: argparse.Namespace
               ) -> tuple[list[tuple[Result, str, str]], list[tuple[int, float]]]:
    """Rows: (result, extra, verified); and our bspatch and zstd children's (peak RSS, seconds)."""
    rows: list[tuple[Result, str, str]] = []
    target = inputs.run / "target.img"
    shim_dir = inputs.run / "shim"
    shim_dir.mkdir(exist_ok=True)
    shim_log = inputs.run / "patch-children.log"
    shim_log.unlink(missing_ok=True)
    # The programs the applier runs for the default codec's windows, as it finds them on PATH.
    sys.path.insert(0, str(REPO / "scripts"))
    from pyvorin.delta import codec

    for name in codec.get(codec.DEFAULT).tools:
        tool = shutil.which(name) or f"/usr/bin/{name}"
        (shim_dir / name).write_text(PATCH_TOOL_SHIM.format(log=shim_log, name=name, tool=tool))
        (shim_dir / name).chmod(0o755)
    b = str(xdelta_window(inputs))

    def check(res: Result) -> str:
        if not res.finished or not target.exists():
            return "failed"
        return "identical" if sha256_file(target) == inputs.new_sha else "DIFFERENT"

    children: list[tuple[int, float]] = []
    ours = results.get("ours") or results.get("ours-noreport")
    if ours and ours.finished and ours.output:
        # The applier writes into a slot that exists, as on a device.
        target.unlink(missing_ok=True)
        with open(target, "wb") as slot:
            slot.truncate(inputs.new.stat().st_size)
        work = inputs.run / "apply-work"
        work.mkdir(exist_ok=True)
        env = dict(os.environ, PATH=f"{shim_dir}:{os.environ.get('PATH', '')}",
                   PYTHONPATH=str(REPO / "scripts"))
        res = measure("python3 -m pyvorin.delta (device applier)",
                      [py, "-m", "pyvorin.delta", str(ours.output), "--source", str(inputs.old), "--target",
                       str(target), "--workdir", str(work)], inputs.logs, args.timeout, args.interval, env=env)
        if shim_log.exists():
            for line in shim_log.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0].isdigit():
                    children.append((int(parts[0]) << 10, float(parts[1])))
        rows.append((res, f"{len(children)} bspatch and zstd runs", check(res)))
    plain: list[tuple[str, str, Callable[[Path], list[str]]]] = [
        ("bsdiff", "bspatch 4.3", lambda p: ["bspatch", str(inputs.old), str(target), str(p)]),
        ("bsdiff4", "bspatch 4.3 (bsdiff4 patch)", lambda p: ["bspatch", str(inputs.old), str(target), str(p)]),
        ("xdelta3", f"xdelta3 -d -B {b}", lambda p: ["xdelta3", "-d", "-f", "-B", b, "-s", str(inputs.old), str(p),
                                                     str(target)]),
        ("xdelta3-djw", "xdelta3 -d (djw patch, default -B)",
         lambda p: ["xdelta3", "-d", "-f", "-s", str(inputs.old), str(p), str(target)]),
        ("zstd19", "zstd -d --long=30 --patch-from",
         lambda p: ["zstd", "-d", "-q", "-f", "--long=30", f"--patch-from={inputs.old}", str(p), "-o", str(target)]),
    ]
    for key, label, make_cmd in plain:
        made = results.get(key)
        if made is None or not made.finished or made.output is None:
            continue
        target.unlink(missing_ok=True)
        res = measure(label, make_cmd(made.output), inputs.logs, args.timeout, args.interval)
        rows.append((res, "", check(res)))
    target.unlink(missing_ok=True)
    return rows, children


# --------------------------------------------------------------------------- reporting


def mib(n: int) -> str:
    return f"{n / MiB:.1f}"


def print_table(inputs: Inputs, results: dict[str, Result], timeouts: dict[str, float]) -> None:
    zstd19 = results.get("zstd19")
    base = zstd19.size if zstd19 and zstd19.size else None
    print("| tool | delta bytes | % of NEW | × zstd -19 | wall s | CPU s | peak RSS MiB (time -v) "
          "| main / largest child MiB | tree peak PSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for key in ORDER:
        r = results.get(key)
        if r is None:
            continue
        kid, kid_name, kids = r.child_hwm()
        split = f"{mib(r.main_hwm())} / " + (f"{mib(kid)} ({kid_name} ×{kids})" if kids else "–")
        if r.timed_out:
            print(f"| {r.label} | did not finish | | | > {timeouts[key]:.0f} (killed) | | ≥ {mib(sampler_max(r))} "
                  f"(when killed) | {split} | ≥ {mib(r.tree_pss)} |")
            continue
        if not r.finished or r.size is None:
            print(f"| {r.label} | failed (rc {r.rc}) | | | {r.wall:.1f} | | | | |")
            continue
        ratio = f"{r.size / base:.3f}" if base else ""
        print(f"| {r.label} | {r.size:,} | {100 * r.size / inputs.new_size:.3f} | {ratio} | {r.wall:.1f} | "
              f"{r.user + r.sys:.1f} | {mib(r.maxrss)} | {split} | {mib(r.tree_pss)} |")


def print_apply(rows: list[tuple[Result, str, str]], children: list[tuple[int, float]]) -> None:
    print("| apply | wall s | CPU s | peak RSS MiB (time -v) | main / largest child MiB | result |")
    print("|---|---:|---:|---:|---|---|")
    for r, extra, verified in rows:
        kid, kid_name, kids = r.child_hwm()
        split = f"{mib(r.main_hwm())} / " + (f"{mib(kid)} ({kid_name})" if kids else "–")
        if children and "pyvorin" in r.label:
            split = f"{mib(r.main_hwm())} / bspatch/zstd {mib(max(c[0] for c in children))} (exact, {extra})"
        wall = f"> {r.wall:.0f} (killed)" if r.timed_out else f"{r.wall:.1f}"
        print(f"| {r.label} | {wall} | {r.user + r.sys:.1f} | {mib(r.maxrss)} | {split} | {verified} |")


def goals(inputs: Inputs, results: dict[str, Result], apply_rows: list[tuple[Result, str, str]],
          children: list[tuple[int, float]], stats: dict[str, int] | None) -> bool:
    ok = True

    def line(name: str, value: float | None, limit: float | None, unit: str, detail: str = "") -> None:
        nonlocal ok
        if value is None or limit is None:
            print(f"SKIP  {name}: not measured {detail}")
            return
        passed = value <= limit
        ok &= passed
        print(f"{'PASS' if passed else 'MISS'}  {name}: {value:,.{3 if unit == 's' else 0}f} {unit} vs limit "
              f"{limit:,.{3 if unit == 's' else 0}f} {unit} ({value / limit:.2f}×) {detail}")

    def size(key: str) -> int | None:
        r = results.get(key)
        return r.size if r and r.finished else None

    def mibf(n: int) -> float:
        return n / MiB

    for key in OURS:
        r = results.get(key)
        if r is None or not r.finished:
            continue
        tag = {"ours": "default", "ours-noreport": "--no-report", "ours-bsdiff": "--codec bsdiff",
               "ours-256m": "--memory 256M"}[key]
        line(f"[{tag}] size ≤ xdelta3 -9", size(key), size("xdelta3"), "B")
        xr = results.get("xdelta3")
        line(f"[{tag}] wall ≤ 2 × xdelta3 -9 (issue 15)", r.wall, 2 * xr.wall if xr and xr.finished else None, "s")
        best = [s for s in (size("xdelta3"), size("xdelta3-djw"), size("xdelta3-lzma")) if s]
        mine = size(key)
        if best and mine:
            print(f"      (best xdelta3 -9 variant: {min(best):,} B; ours is {mine / min(best):.2f}× that)")
        z = size("zstd19")
        line(f"[{tag}] size ≤ 1.10 × zstd -19 --patch-from --long", size(key), 1.10 * z if z else None, "B")
        zr = results.get("zstd19")
        line(f"[{tag}] wall ≤ 2 × zstd -19 --patch-from", r.wall, 2 * zr.wall if zr and zr.finished else None, "s")
        line(f"[{tag}] peak RSS, main process ≤ 256 MiB", mibf(r.main_hwm()), 256, "MiB")
        kid, name, kids = r.child_hwm()
        line(f"[{tag}] peak RSS, largest child process ≤ 256 MiB", mibf(kid), 256, "MiB",
             f"({name}, {kids} children)")
        # The tree holds one bsdiff worker per CPU the budget allows: it must
        # stay inside --memory, and inside 256 MiB when that is the budget.
        budget = BUDGET_MIB[key]
        line(f"[{tag}] peak RSS, whole process tree at once (PSS) ≤ --memory {budget} MiB", mibf(r.tree_pss), budget,
             "MiB", f"(sampled; summed RSS {mib(r.tree_rss)} MiB)")
    applier = next((r for r, _, _ in apply_rows if "pyvorin" in r.label), None)
    if applier and stats:
        window = stats["max_window"]
        bsp = max((c[0] for c in children), default=0)
        total = applier.main_hwm() + bsp
        line("device apply: applier + bspatch/zstd peak ≤ 64 MiB + one window", mibf(total), 64 + mibf(window), "MiB",
             f"(applier {mib(applier.main_hwm())} + bspatch/zstd {mib(bsp)}; largest window = source + output + patch "
             f"= {mib(window)} MiB)")
        verified = next(v for r, _, v in apply_rows if r is applier)
        print(f"{'PASS' if verified == 'identical' else 'MISS'}  device apply reproduces NEW byte for byte: "
              f"{verified}")
        ok &= verified == "identical"
    return ok


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/pyvorin-delta-bench"),
                        help="image cache (images/) and the last run's outputs (run/)")
    parser.add_argument("--image-size", type=parse_size, default=512 * MiB, help="ext4 image size (default 512M)")
    parser.add_argument("--old", type=Path, help="use this OLD image instead of building one")
    parser.add_argument("--new", type=Path, help="use this NEW image instead of building one")
    parser.add_argument("--slice", type=parse_size, help="use only the first SIZE bytes of each image (quick runs)")
    parser.add_argument("--bsdiff-timeout", type=float, default=600, help="seconds for whole-file bsdiff/bsdiff4")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for every other command")
    parser.add_argument("--only", help=f"comma-separated subset of: {','.join(ORDER)}")
    parser.add_argument("--skip", default="", help="comma-separated tools to leave out")
    parser.add_argument("--no-apply", action="store_true", help="skip the apply side")
    parser.add_argument("--interval", type=float, default=0.05, help="process tree sampling interval, seconds")
    parser.add_argument("--mirror", default="http://deb.debian.org/debian")
    parser.add_argument("--security-mirror", default="http://deb.debian.org/debian-security")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)
    if (args.old is None) != (args.new is None):
        parser.error("--old and --new go together")
    for tool in ("/usr/bin/time", "xdelta3", "zstd", "zck", "zck_delta_size", "bsdiff", "bspatch"):
        if shutil.which(tool) is None:
            sys.exit(f"bench_delta: {tool} not found (apt-get install time xdelta3 zstd zchunk bsdiff)")
    py = sys.executable

    args.workdir.mkdir(parents=True, exist_ok=True)
    old, new, manifest = image_pair(args)
    run = args.workdir / "run"
    shutil.rmtree(run, ignore_errors=True)
    (run / "logs").mkdir(parents=True)
    if args.slice:
        old, new = sliced(run, old, new, args.slice)
    log("warming the page cache and hashing NEW")
    sha256_file(old)
    inputs = Inputs(old, new, old.stat().st_size, new.stat().st_size, sha256_file(new), run, run / "logs")

    wanted = args.only.split(",") if args.only else list(ORDER)
    keys = [k for k in ORDER if k in wanted and k not in args.skip.split(",")]
    tools = make_tools(inputs, py)
    timeouts = {k: args.bsdiff_timeout if k in WHOLE_FILE else args.timeout for k in ORDER}
    load_before = os.getloadavg()
    results: dict[str, Result] = {}
    for key in keys:
        label, cmd, out = tools[key]
        if key in WHOLE_FILE and args.bsdiff_timeout <= 0:
            continue
        if key == "zck":
            results[key] = run_zck(inputs, label, cmd, out, args)
        else:
            results[key] = measure(label, cmd, inputs.logs, timeouts[key], args.interval, output=out)
    stats = None
    for key in OURS:
        if key in results and results[key].finished and results[key].output:
            stats = inspect_ours(results[key].output)  # type: ignore[arg-type]
            break
    apply_rows: list[tuple[Result, str, str]] = []
    children: list[tuple[int, float]] = []
    if not args.no_apply:
        apply_rows, children = apply_side(inputs, results, py, args)
    load_after = os.getloadavg()

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "scripts/pyvorin/delta"],
                           capture_output=True, text=True, check=False).stdout.strip()
    print()
    print(f"# pyvorin delta benchmark — {time.strftime('%Y-%m-%d %H:%M')}, pyvorin {commit}"
          f"{' (delta/ modified)' if dirty else ''}, {os.cpu_count()} CPUs, "
          f"load {load_before[0]:.2f} before / {load_after[0]:.2f} after")
    print(f"OLD {inputs.old} ({inputs.old_size:,} B)  NEW {inputs.new} ({inputs.new_size:,} B)")
    changed = manifest.get("changed")
    if isinstance(changed, dict):
        suites = manifest.get("new_suites")
        suite_names = " + ".join(str(x) for x in suites) if isinstance(suites, list) else "?"
        print(f"NEW = OLD's {manifest['installed_old']} packages from {suite_names}: "
              f"{len(changed)} packages differ: "
              + ", ".join(f"{p} {a}→{b}" for p, (a, b) in list(changed.items())[:12])
              + (" …" if len(changed) > 12 else ""))
    if args.slice:
        print(f"(sliced: first {human(args.slice)} of each image only)")
    print()
    print_table(inputs, results, timeouts)
    if "zck" in results and results["zck"].note:
        print(f"\nzck: {results['zck'].note}")
    for key in OURS:
        if key in results and results[key].finished:
            lines = [ln for ln in results[key].stdout.splitlines() if ln.startswith(("windows", "wrote", "  full"))]
            print(f"\n{key}: " + " / ".join(s.strip() for s in lines))
            break
    if stats:
        print(f"ours, ops: {stats['copy']} copy, {stats['zero']} zero, {stats['patch']} patch windows "
              f"({human(stats['patched_new'])} of NEW diffed into {human(stats['patch_bytes'])} of patches); "
              f"largest window: source {human(stats['max_source'])}, patch {human(stats['max_patch'])}, "
              f"source + output + patch {human(stats['max_window'])}")
    if apply_rows:
        print()
        print_apply(apply_rows, children)
        if children:
            print(f"\nour bspatch and zstd children: {len(children)} runs, {sum(c[1] for c in children):.1f} s in all, "
                  f"peak RSS {mib(max(c[0] for c in children))} MiB (GNU time on each, through a PATH shim)")
    print()
    ok = goals(inputs, results, apply_rows, children, stats)
    print("\ncommands:")
    for key in keys:
        if key in results:
            print(f"  {results[key].label}: {' '.join(results[key].cmd)}")
    for r, _, _ in apply_rows:
        print(f"  {r.label}: {' '.join(r.cmd)}")
    return 1 if args.fail_on_miss and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
