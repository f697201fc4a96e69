"""/proc/self/mounts as (mount point, options) entries, later mounts last."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Mount:
    point: PurePosixPath
    fstype: str
    options: frozenset[str]


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def read_mounts(path: Path) -> list[Mount]:
    mounts = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4:
            mounts.append(Mount(PurePosixPath(_unescape(parts[1])), parts[2], frozenset(parts[3].split(","))))
    return mounts


def mount_of(mounts: list[Mount], path: PurePosixPath) -> Mount | None:
    """The mount that holds ``path``: the longest mount point above it, the last one if stacked."""
    best: Mount | None = None
    for mount in mounts:
        if path == mount.point or mount.point in path.parents:
            if best is None or len(mount.point.parts) >= len(best.point.parts):
                best = mount
    return best
