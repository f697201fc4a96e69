"""Finding one file in an initramfs, as the kernel unpacks it: newc cpio archives, compressed or not.

The ramdisk of a FIT is a cpio archive (``070701``, or ``070702`` with
checksums), usually compressed whole; the kernel reads archive after archive,
skipping zero padding between them, and a later entry of a name replaces an
earlier one. This reader does the same in one pass over the decompressed
stream, gzip (every member) or zstd by their magic, or none, and keeps the
last regular file of the name asked for. Not read: archives in another
compression (xz, lz4, bzip2, lzma) and an uncompressed archive followed by a
compressed one (early microcode); the error says so.

Memory: the decompression buffer (1 MiB) and the file asked for, at most
``limit`` bytes. The decompressed stream is bounded too (:data:`MAX_UNPACKED`),
so a small ramdisk cannot make the walk run for hours.
"""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Iterable, Iterator

from . import cpio
from .decompress import GZIP_MAGIC, ZSTD_MAGIC, gunzip, peek, unzstd
from .errors import BundleError

#: The kernel unpacks an initramfs into RAM: a device boots nothing near this size.
MAX_UNPACKED = 1 << 30
MAX_PATH = 4096  # PATH_MAX: the kernel refuses longer names
TRAILER = "TRAILER!!!"


class InitramfsError(BundleError):
    """An initramfs cannot be read (compression, cpio structure, the file asked for)."""


class _Stream:
    """Exact reads and skips over chunks of decompressed bytes, counting the offset.

    Holds one chunk and an index into it: a small read does not copy the rest of the chunk."""

    def __init__(self, chunks: Iterator[bytes], what: str) -> None:
        self.chunks = chunks
        self.what = what
        self.buffer = b""
        self.pos = 0
        self.offset = 0  # of buffer[pos] in the decompressed stream
        self.total = 0

    def _fill(self) -> bool:
        chunk = next(self.chunks, None)
        if chunk is None:
            return False
        self.total += len(chunk)
        if self.total > MAX_UNPACKED:
            raise InitramfsError(f"{self.what}: over {MAX_UNPACKED >> 20} MiB decompressed: "
                                 "not an initramfs a device boots")
        self.buffer = self.buffer[self.pos:] + chunk
        self.pos = 0
        return True

    def at_end(self) -> bool:
        """After skipping zero bytes (padding between archives): whether the stream is over."""
        while True:
            rest = self.buffer[self.pos:]
            stripped = rest.lstrip(b"\0")
            self.offset += len(rest) - len(stripped)
            self.buffer, self.pos = stripped, 0
            if stripped:
                return False
            if not self._fill():
                return True

    def read(self, size: int, why: str) -> bytes:
        while len(self.buffer) - self.pos < size:
            if not self._fill():
                raise InitramfsError(f"{self.what}: truncated: it ends at {self.offset + len(self.buffer) - self.pos} "
                                     f"inside {why}")
        data = self.buffer[self.pos:self.pos + size]
        self.pos += size
        self.offset += size
        return data

    def skip(self, size: int, why: str) -> None:
        while True:
            step = min(size, len(self.buffer) - self.pos)
            self.pos += step
            self.offset += step
            size -= step
            if not size:
                return
            if not self._fill():
                raise InitramfsError(f"{self.what}: truncated: it ends at {self.offset} inside {why}")


def _decompressed(chunks: Iterable[bytes], what: str) -> Iterator[bytes]:
    """The ramdisk's cpio bytes, whatever of gzip, zstd or nothing it is compressed with (by its magic)."""
    head, rest = peek(chunks, 6)
    if head.startswith(GZIP_MAGIC):
        return gunzip(rest, what, every_member=True)
    if head.startswith(ZSTD_MAGIC):
        return unzstd(rest, what)
    if head in (cpio.MAGIC_NEWC, cpio.MAGIC_CRC):
        return rest
    raise InitramfsError(f"{what}: neither a gzip or zstd compressed nor a plain newc cpio archive "
                         f"(starts {head.hex() or 'empty'}); xz, lz4, bzip2 and lzma ramdisks are not read")


def _normal(name: str) -> str:
    """The path the kernel creates for ``name`` (relative to /): "./usr/x", "/usr/x" and "usr//x" are "usr/x"."""
    return posixpath.normpath("/" + name).lstrip("/")


def find_file(chunks: Iterable[bytes], path: str, what: str, limit: int = 64 << 10) -> bytes | None:
    """The bytes of regular file ``path`` (relative, "usr/...") in the initramfs ``chunks``, or None."""
    wanted = _normal(path)
    stream = _Stream(_decompressed(chunks, what), what)
    found: bytes | None = None
    in_archive = False
    archives = 0
    while True:
        if not in_archive:
            # Between archives the kernel skips zero bytes; a header starts on a 4-byte boundary.
            if stream.at_end():
                break
            if stream.offset % 4:
                raise InitramfsError(f"{what}: an archive starts at {stream.offset}, not on a 4-byte boundary")
            in_archive = True
            archives += 1
        at = stream.offset
        head = stream.read(cpio.HEADER_LEN, "a cpio header")
        try:
            fields = cpio.header_fields(head, at)
        except BundleError as exc:
            raise InitramfsError(f"{what}: {exc}") from exc
        namesize, size, mode = fields[cpio.NAME_SIZE], fields[cpio.FILE_SIZE], fields[cpio.MODE]
        if namesize < 1 or namesize > MAX_PATH:
            raise InitramfsError(f"{what}: cpio entry at {at}: name size {namesize} out of range")
        raw = stream.read(namesize, "a cpio name")
        if raw[-1:] != b"\0" or b"\0" in raw[:-1]:
            raise InitramfsError(f"{what}: cpio entry at {at}: the name is not one NUL-terminated string")
        stream.skip(cpio.pad(cpio.HEADER_LEN + namesize), "a cpio name's padding")
        name = raw[:-1].decode("utf-8", "surrogateescape")
        if name == TRAILER:
            in_archive = False
            continue
        if _normal(name) == wanted:
            if not stat.S_ISREG(mode):
                raise InitramfsError(f"{what}: {name!r} is not a regular file (mode {mode:o})")
            if size == 0 and fields[cpio.NLINK] > 1:
                raise InitramfsError(f"{what}: {name!r} is a hard link without its data (newc puts it with "
                                     "another name of the file), which this reader does not follow")
            if size > limit:
                raise InitramfsError(f"{what}: {name!r} is {size} bytes; at most {limit} are read")
            found = stream.read(size, repr(name))
        else:
            stream.skip(size, repr(name))
        stream.skip(cpio.pad(size), f"the padding after {name!r}")
    if not archives:
        raise InitramfsError(f"{what}: empty: no cpio archive in it")
    return found
