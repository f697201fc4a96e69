#!/usr/bin/env python3
"""Benchmark ``pyvorin verity check`` side by side with ``veritysetup verify``
(cryptsetup) on the same dm-verity image.

    python3 bench/bench_verity.py                  # 1 GiB of data, 3 runs each
    python3 bench/bench_verity.py --size 256M --runs 1

The image is bench_bundle.py's (zero, random and text-like extents); its
superblock and tree come from ``veritysetup format`` (4 KiB blocks, as a
release would use). Both tools then check data and tree against the root hash.
Each run is measured as bench_bundle.py measures one (its probe: wall clock,
CPU and peak RSS of that command only, not of this script); runs alternate
between the tools after one untimed read (warm page cache), and the median
counts. Prints a table with ratios to veritysetup and one PASS/MISS line for
the memory bound pyvorin states (64 MiB).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_bundle import GiB, MiB, check_run, choose_probe, make_image, measure, parse_size

GOAL_RSS_MIB = 64.0
ROOT = Path(__file__).resolve().parents[1]


def verity_format(image: Path) -> tuple[str, int]:
    """Append superblock and tree to ``image``; its root hash and hash offset."""
    size = image.stat().st_size
    out = subprocess.run(["veritysetup", "format", f"--hash-offset={size}", str(image), str(image)],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"^Root hash:\s+([0-9a-f]{64})$", out, re.M)
    if not match:
        raise SystemExit(f"veritysetup format printed no root hash:\n{out}")
    return match.group(1), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=GiB, help="data size (default 1G)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rss-probe", choices=["auto", "time", "python"], default="auto")
    args = parser.parse_args()
    if args.size % 4096:
        parser.error("--size must be a multiple of 4 KiB (the data block size)")
    probe = choose_probe(args.rss_probe)
    with tempfile.TemporaryDirectory(prefix="bench-verity-", dir="/var/tmp") as tmp:
        image = Path(tmp) / "rootfs.ext4.verity"
        make_image(image, args.size, seed=1)
        root, offset = verity_format(image)
        tools = {
            "veritysetup verify": ["veritysetup", "verify", f"--hash-offset={offset}", str(image), str(image), root],
            "pyvorin verity check": [sys.executable, "-m", "pyvorin", "verity", "check", str(image),
                                     "--root-hash", root, "--hash-offset", str(offset)],
        }
        subprocess.run(["cat", str(image)], stdout=subprocess.DEVNULL, check=True)
        runs: dict[str, list] = {name: [] for name in tools}  # type: ignore[type-arg]
        for number in range(args.runs):
            for name, argv in tools.items():
                run = measure(argv, probe=probe, logs=Path(tmp), tag=f"{name.split()[0]}-{number}", cwd=ROOT / "scripts")
                check_run(name, run)
                runs[name].append(run)
    reference = statistics.median(r.wall for r in runs["veritysetup verify"])
    print(f"{args.size / MiB:.0f} MiB of data, 4 KiB blocks, median of {args.runs} runs, peak RSS by {probe.name}")
    print("| tool | wall s | x veritysetup | CPU s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for name, measured in runs.items():
        wall = statistics.median(r.wall for r in measured)
        cpu = statistics.median(r.user + r.sys for r in measured)
        print(f"| {name} | {wall:.2f} | {wall / reference:.2f} | {cpu:.2f} | "
              f"{max(r.maxrss_kib for r in measured) / 1024:.0f} |")
    rss = max(r.maxrss_kib for r in runs["pyvorin verity check"]) / 1024
    print(f"{'PASS' if rss <= GOAL_RSS_MIB else 'MISS'}: pyvorin peak RSS {rss:.0f} MiB <= {GOAL_RSS_MIB:.0f} MiB")
    return 0 if rss <= GOAL_RSS_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
