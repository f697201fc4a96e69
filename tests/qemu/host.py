"""Host tools the harness drives, and running them with errors that show why."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from qemu.errors import HarnessError

#: Program -> the Debian package that provides it (scripts/test.sh installs them).
TOOLS: Mapping[str, str] = {
    "qemu-system-aarch64": "qemu-system-arm",
    "mmdebstrap": "mmdebstrap",
    "mcopy": "mtools",
    "mkfs.vfat": "dosfstools",
    "mke2fs": "e2fsprogs",
    "mkimage": "u-boot-tools",
    "mkenvimage": "u-boot-tools",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "aarch64-linux-gnu-readelf": "binutils-aarch64-linux-gnu",
    "dpkg-source": "dpkg-dev",
    "apt-get": "apt",
    "make": "make",
    "bison": "bison",
    "flex": "flex",
    "bc": "bc",
    "cpio": "cpio",
    "gzip": "gzip",
    # Verified boot: the hash tree, and the control device tree's boot logic.
    "veritysetup": "cryptsetup-bin",
    "debugfs": "e2fsprogs",
    "fdtput": "device-tree-compiler",
}


def missing_tools() -> list[str]:
    """``program (package)`` for every tool not on PATH."""
    return [f"{tool} ({package})" for tool, package in TOOLS.items() if shutil.which(tool) is None]


def run(argv: Sequence[str | Path], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
        timeout: float = 1800, input_bytes: bytes | None = None) -> bytes:
    """Run a program; its stdout, or :class:`HarnessError` with the tail of its output."""
    merged = {**os.environ, "LC_ALL": "C", **(env or {})}
    try:
        result = subprocess.run([str(a) for a in argv], cwd=cwd, env=merged, input=input_bytes,
                                capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{argv[0]} timed out after {timeout:.0f}s") from exc
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).decode(errors="replace")[-4000:]
        raise HarnessError(f"{' '.join(map(str, argv))} exited {result.returncode}:\n{tail}")
    return result.stdout
