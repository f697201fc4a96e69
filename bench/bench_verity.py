#!/usr/bin/env python3
"""Benchmark ``pyvorin verity check`` side by side with ``veritysetup verify``
(cryptsetup) on the same dm-verity image.

    python3 bench/bench_verity.py                  # 1 GiB of data, 3 runs each
    python3 bench/bench_verity.py --size 256M --runs 1

The image (half random, half zero 4 KiB blocks) gets its superblock and tree
from ``veritysetup format`` (4 KiB blocks, as a release would use); both tools
then check data and tree against the root hash. Every run is a child process,
timed by wall clock around fork..wait4, peak RSS from that child's rusage;
runs alternate between the tools after one untimed read (warm page cache), and
the median counts. Prints a table with ratios to veritysetup and one
PASS/MISS line for the memory bound pyvorin states (64 MiB).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_RSS_MIB = 64.0
ROOT = Path(__file__).resolve().parents[1]


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)", text.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"{text}: a size such as 256M or 1G")
    return int(match.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[match.group(2)]


def make_image(path: Path, size: int) -> tuple[str, int]:
    rng = random.Random(1)
    block = rng.randbytes(4096)
    with open(path, "wb") as handle:
        for _ in range(size // 4096):
            handle.write(block if rng.random() < 0.5 else bytes(4096))
    out = subprocess.run(["veritysetup", "format", f"--hash-offset={size}", str(path), str(path)],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"^Root hash:\s+([0-9a-f]{64})$", out, re.M)
    if not match:
        raise SystemExit(f"veritysetup format printed no root hash:\n{out}")
    return match.group(1), size


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one child."""
    started = time.monotonic()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} failed: {child.stderr.read().decode() if child.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="data size (default 1G)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    with tempfile.TemporaryDirectory(prefix="bench-verity-", dir="/var/tmp") as tmp:
        image = Path(tmp) / "rootfs.ext4.verity"
        root, offset = make_image(image, args.size)
        tools = {
            "veritysetup verify": ["veritysetup", "verify", f"--hash-offset={offset}", str(image), str(image), root],
            "pyvorin verity check": [sys.executable, "-m", "pyvorin", "verity", "check", str(image),
                                     "--root-hash", root, "--hash-offset", str(offset)],
        }
        subprocess.run(["cat", str(image)], stdout=subprocess.DEVNULL, check=True)
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in tools}
        for _ in range(args.runs):
            for name, argv in tools.items():
                results[name].append(timed(argv, env))
    reference = statistics.median(r[0] for r in results["veritysetup verify"])
    print(f"{args.size / (1 << 20):.0f} MiB of data, 4 KiB blocks, median of {args.runs} runs")
    print("| tool | wall s | x veritysetup | CPU s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        print(f"| {name} | {wall:.2f} | {wall / reference:.2f} | {statistics.median(r[1] for r in runs):.2f} | "
              f"{max(r[2] for r in runs):.0f} |")
    rss = max(r[2] for r in results["pyvorin verity check"])
    print(f"{'PASS' if rss <= GOAL_RSS_MIB else 'MISS'}: pyvorin peak RSS {rss:.0f} MiB <= {GOAL_RSS_MIB:.0f} MiB")
    return 0 if rss <= GOAL_RSS_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
