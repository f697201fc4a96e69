"""Atomic, permission-aware file output.

Everything pyvorin writes goes through :func:`atomic_output`: the data lands in
a temporary file beside the destination and is renamed over it only once it is
complete, so an error or an interrupt never leaves a partial bundle, key or
sw-description behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import KeyError_, PyvorinError

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
PUBLIC_FILE_MODE = 0o644


def _describe_os_error(path: Path, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{path}: {reason}"


@contextlib.contextmanager
def atomic_output(
    path: Path, *, mode: int = PUBLIC_FILE_MODE, overwrite: bool = True
) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``path`` only if the block succeeds.

    With ``overwrite=False`` an existing ``path`` is never replaced, not even by
    a race: the finished file is hard-linked into place, which fails if the name
    exists.  The file is created with ``mode`` from the start (not chmod-ed
    later), so a private key is never readable by others, even briefly.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not overwrite and path.exists():
        raise PyvorinError(f"{path}: already exists (refusing to overwrite; use --force)")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise PyvorinError(f"cannot write to {directory}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise PyvorinError(
                    f"{path}: already exists (refusing to overwrite; use --force)"
                ) from exc
            tmp.unlink()
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_atomic(path: Path, data: bytes, *, mode: int = PUBLIC_FILE_MODE, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, mode=mode, overwrite=overwrite) as handle:
        handle.write(data)


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` as a 0700 directory, or tighten an existing one we own."""
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        if stat.S_IMODE(path.stat().st_mode) != PRIVATE_DIR_MODE:
            os.chmod(path, PRIVATE_DIR_MODE)
    except OSError as exc:
        raise PyvorinError(f"cannot create key directory {_describe_os_error(path, exc)}") from exc


def check_private_file(path: Path) -> None:
    """Refuse a private key that group or others may read (as ssh and mkosi do)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise PyvorinError(_describe_os_error(path, exc)) from exc
    if st.st_mode & 0o077:
        raise KeyError_(
            f"{path}: private key is accessible by group/others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )


def read_bytes(path: Path, what: str = "file") -> bytes:
    """Read a small file (a key, a certificate, a spec) with a clear error."""
    try:
        return Path(path).read_bytes()
    except IsADirectoryError as exc:
        raise PyvorinError(f"{path}: is a directory, expected a {what}") from exc
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise PyvorinError(f"{path}: {what} not found") from exc
        raise PyvorinError(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc
