"""Applying a windowed delta from the active slot to the inactive one.

This is what runs on the device (SWUpdate calls it through its Lua handler),
so memory stays small: COPY and ZERO stream in 1 MiB chunks, and a PATCH
writes its old extents and patch to a work directory and runs the C
``bspatch`` on that one window.  Before writing anything the delta's own
SHA-256 and the source slot's SHA-256 are checked; after writing, the target
is read back and must hash to the new image's SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from . import codec
from .container import Copy, DeltaError, Header, Patch, Zero, read_delta

CHUNK = 1 << 20


def _hash_range(fd: int, size: int) -> str:
    sha = hashlib.sha256()
    position = 0
    while position < size:
        data = os.pread(fd, min(CHUNK, size - position), position)
        if not data:
            break
        sha.update(data)
        position += len(data)
    if position != size:
        raise DeltaError(f"device is smaller than the image ({position} of {size} bytes)")
    return sha.hexdigest()


def check_delta(path: Path) -> Header:
    """Read the whole delta once: structure and self-hash, before touching any slot."""
    with open(path, "rb") as handle:
        header, ops = read_delta(handle)
        for _ in ops:
            pass
    return header


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def apply_delta(delta: Path, source: Path, target: Path, workdir: Path | None = None,
                bspatch: str = "bspatch") -> Header:
    """Rebuild the new image on ``target`` from ``source`` (never written to)."""
    header = check_delta(delta)
    if workdir is not None and not workdir.is_dir():
        raise DeltaError(f"work directory {workdir} is not a directory")
    window_codec = codec.get(header.codec, bspatch=bspatch)
    for tool in window_codec.tools:
        if shutil.which(tool) is None:
            raise DeltaError(f"{tool} not found: it applies the delta's {window_codec.name} windows")
    _check_slots(source, target)
    src_fd = os.open(source, os.O_RDONLY)
    try:
        if _hash_range(src_fd, header.old_size) != header.old_sha256:
            raise DeltaError(
                f"{source} does not hold the delta's source image (sha256 differs): refusing to patch"
            )
        if os.path.realpath(source) == os.path.realpath(target):
            raise DeltaError("source and target are the same device")
        dst_fd = os.open(target, os.O_RDWR)  # never create or truncate a slot
        try:
            with open(delta, "rb") as handle, tempfile.TemporaryDirectory(dir=workdir, prefix="pyvdelta-") as tmp:
                _, ops = read_delta(handle)
                for op in ops:
                    if isinstance(op, Copy):
                        done = 0
                        while done < op.length:
                            data = os.pread(src_fd, min(CHUNK, op.length - done), op.old_off + done)
                            _write_all(dst_fd, data, op.new_off + done)
                            done += len(data)
                    elif isinstance(op, Zero):
                        zeros = bytes(min(CHUNK, op.length))
                        for done in range(0, op.length, CHUNK):
                            _write_all(dst_fd, zeros[: min(CHUNK, op.length - done)], op.new_off + done)
                    else:
                        _write_all(dst_fd, _patch_window(src_fd, op, Path(tmp), window_codec), op.new_off)
            os.fsync(dst_fd)
            if _hash_range(dst_fd, header.new_size) != header.new_sha256:
                raise DeltaError(f"{target}: the patched image does not match the delta's result sha256")
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    return header


def _check_slots(source: Path, target: Path) -> None:
    """Both slots exist and are the same kind of file.

    On a device both are block devices; in a file-backed test both are regular
    files. A target that does not exist (a typo, a missing partition) is
    refused rather than created, and a regular file is never taken for a slot
    next to a block device.
    """
    kinds = []
    for role, path in (("source", source), ("target", target)):
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError as exc:
            raise DeltaError(f"{role} slot {path} does not exist") from exc
        if stat.S_ISBLK(mode):
            kinds.append("block device")
        elif stat.S_ISREG(mode):
            kinds.append("regular file")
        else:
            raise DeltaError(f"{role} slot {path} is neither a block device nor a regular file")
    if kinds[0] != kinds[1]:
        raise DeltaError(f"source slot {source} is a {kinds[0]} but target slot {target} is a {kinds[1]}")


def _patch_window(src_fd: int, op: Patch, tmp: Path, window_codec: codec.Codec) -> bytes:
    old_file, new_file, patch_file = tmp / "old", tmp / "new", tmp / "patch"
    with open(old_file, "wb") as out:
        for offset, length in op.extents:
            out.write(os.pread(src_fd, length, offset))
    patch_file.write_bytes(op.patch)
    new_file.unlink(missing_ok=True)
    try:
        window_codec.patch(old_file, patch_file, new_file)
    except codec.CodecError as exc:
        raise DeltaError(f"the window at {op.new_off}: {exc}") from exc
    data = new_file.read_bytes()
    if len(data) != op.length:
        raise DeltaError(f"{window_codec.name} produced {len(data)} bytes for a {op.length}-byte window")
    return data
