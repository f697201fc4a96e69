"""Build outputs kept between runs, one directory per input hash.

A directory is built under a temporary name and renamed when complete, under
an exclusive lock, so a killed or concurrent run never leaves a half-built
entry that a later run would trust."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

_DONE = ".complete"


def base_dir() -> Path:
    """``$PYVORIN_TEST_CACHE``, by default ``${XDG_CACHE_HOME:-~/.cache}/pyvorin-tests``."""
    return Path(os.environ.get("PYVORIN_TEST_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pyvorin-tests"))


def root(area: str = "qemu", base: Path | None = None) -> Path:
    """``<base>/<area>``, *base* by default :func:`base_dir`."""
    path = (base or base_dir()) / area
    path.mkdir(parents=True, exist_ok=True)
    return path


def key(*parts: str | bytes) -> str:
    """A short hash of the inputs that decide an entry's content."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:16]


def file_key(path: Path) -> str:
    """``key(path.read_bytes())``, read in chunks: inputs such as a layer snapshot are tens of MB."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(os.fstat(handle.fileno()).st_size.to_bytes(8, "big"))
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def entry(name: str, inputs: str, build: Callable[[Path], None], *, area: str = "qemu",
          base: Path | None = None) -> Path:
    """The directory ``area/name-inputs``, built by ``build(directory)`` if missing."""
    base = root(area, base)
    final = base / f"{name}-{inputs}"
    if (final / _DONE).exists():
        return final
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / _DONE).exists():
            return final
        work = base / f".{name}-{inputs}.partial"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        work.mkdir()
        build(work)
        (work / _DONE).touch()
        work.rename(final)
    return final
