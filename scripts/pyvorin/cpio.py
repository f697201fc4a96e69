"""The cpio "new ASCII with CRC" (070702) format as SWUpdate reads it.

Writing is streaming and deterministic: inode numbers count from 1, owner is
0:0, mode 0644, and the mtime is fixed (SOURCE_DATE_EPOCH or 0), so the same
payloads always give the same bytes.  Reading never trusts a member name or
size: names must be plain file names and sizes must fit in the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .errors import BundleError

MAGIC_CRC = b"070702"
MAGIC_NEWC = b"070701"
HEADER_LEN = 110
TRAILER = "TRAILER!!!"
MAX_SIZE = 0xFFFFFFFF  # 8 hex digits
MAX_NAME = 255  # SWUpdate's own limit on member names
REG_FILE = 0o100644
BLOCK = 512  # GNU cpio pads the archive to whole blocks; so do we


def pad(offset: int) -> int:
    """Bytes of padding after ``offset`` bytes to the next multiple of 4 (newc aligns headers and data)."""
    return (4 - offset % 4) % 4


def header(ino: int, mode: int, size: int, name: str, checksum: int, mtime: int = 0, nlink: int = 1) -> bytes:
    encoded = name.encode() + b"\x00"
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, 0, 0, len(encoded), checksum)
    head = MAGIC_CRC + b"".join(b"%08X" % f for f in fields)
    return head + encoded + b"\x00" * pad(HEADER_LEN + len(encoded))


class CpioWriter:
    """Appends members to a binary stream; call :meth:`finish` once at the end."""

    def __init__(self, out: BinaryIO, mtime: int = 0) -> None:
        self._out = out
        self._mtime = mtime
        self._ino = 0
        self.offset = 0

    def _write(self, data: bytes | memoryview) -> None:
        self._out.write(data)
        self.offset += len(data)

    def _begin(self, name: str, size: int, checksum: int) -> None:
        if size > MAX_SIZE:
            raise BundleError(
                f"{name}: {size} bytes is over the cpio limit of 4 GiB - 1 that SWUpdate reads; "
                "compress the image or split it into several images"
            )
        self._ino += 1
        self._write(header(self._ino, REG_FILE, size, name, checksum & 0xFFFFFFFF, self._mtime))

    def _end(self, size: int) -> None:
        self._write(b"\x00" * pad(size))

    def add_bytes(self, name: str, data: bytes, checksum: int) -> None:
        self._begin(name, len(data), checksum)
        self._write(data)
        self._end(len(data))

    def add_chunks(self, name: str, size: int, checksum: int, chunks: Iterable[bytes]) -> None:
        """Stream a member whose size and checksum were computed beforehand."""
        self._begin(name, size, checksum)
        written = 0
        for chunk in chunks:
            written += len(chunk)
            if written > size:
                break
            self._write(chunk)
        if written != size:
            raise BundleError(f"{name}: changed while the bundle was written ({written} bytes, expected {size})")
        self._end(size)

    def add_from_fd(self, name: str, size: int, checksum: int, fd: int, offset: int = 0) -> None:
        """Copy ``size`` bytes from ``fd`` at ``offset`` in the kernel where possible."""
        self._begin(name, size, checksum)
        self._out.flush()
        out_fd = self._out.fileno()
        remaining = size
        position = offset
        try:
            while remaining:
                done = os.copy_file_range(fd, out_fd, min(remaining, 1 << 30), position)
                if done == 0:
                    break
                position += done
                remaining -= done
        except OSError:
            pass  # e.g. EXDEV on old kernels, or a pipe: fall back to read/write
        self.offset += size - remaining
        if self._out.seekable():
            # copy_file_range moved the fd's position under the buffered writer.
            self._out.seek(0, os.SEEK_END)
        while remaining:
            data = os.pread(fd, min(remaining, 1 << 20), position)
            if not data:
                raise BundleError(f"{name}: source ended {remaining} bytes early")
            self._write(data)
            position += len(data)
            remaining -= len(data)
        self._end(size)

    def finish(self) -> None:
        self._write(header(0, 0, 0, TRAILER, 0, 0))
        self._write(b"\x00" * ((BLOCK - self.offset % BLOCK) % BLOCK))
        self._out.flush()


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    checksum: int
    data_offset: int
    crc: bool  # 070702 (checksummed) rather than 070701


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def _hex(field: bytes, what: str, offset: int) -> int:
    # Exactly eight hex digits: int(x, 16) would also take "-0000080" or
    # "+00_0010", and a negative size steps the reader back onto the same
    # header forever.
    if len(field) != 8 or not _HEX_DIGITS.issuperset(field):
        raise BundleError(f"not a cpio archive: bad {what} {field!r} in the header at offset {offset}")
    return int(field, 16)


_FIELD_NAMES = ("inode", "mode", "uid", "gid", "link count", "mtime", "file size", "device major", "device minor",
                "rdev major", "rdev minor", "name size", "checksum")
#: Indices into :func:`header_fields`.
MODE, NLINK, FILE_SIZE, NAME_SIZE, CHECKSUM = 1, 4, 6, 11, 12


def header_fields(head: bytes, offset: int) -> list[int]:
    """The thirteen numbers of a newc or crc header (``HEADER_LEN`` bytes at ``offset``), validated."""
    if head[:6] not in (MAGIC_CRC, MAGIC_NEWC):
        raise BundleError(f"not a cpio newc/crc archive: bad magic at offset {offset}")
    return [_hex(head[6 + 8 * i : 14 + 8 * i], _FIELD_NAMES[i], offset) for i in range(13)]


def iter_members(handle: BinaryIO, file_size: int) -> Iterator[Member]:
    """Yield members in order, ending at the trailer; validate everything."""
    offset = 0
    while True:
        handle.seek(offset)
        head = handle.read(HEADER_LEN)
        if len(head) < HEADER_LEN:
            raise BundleError(f"truncated bundle: no cpio trailer (archive ends at offset {offset})")
        magic = head[:6]
        fields = header_fields(head, offset)
        size, namesize, checksum = fields[FILE_SIZE], fields[NAME_SIZE], fields[CHECKSUM]
        if namesize < 2 or namesize > MAX_NAME + 1:
            raise BundleError(f"cpio member at offset {offset}: name size {namesize} out of range")
        raw_name = handle.read(namesize)
        if len(raw_name) != namesize or raw_name[-1:] != b"\x00" or b"\x00" in raw_name[:-1]:
            raise BundleError(f"cpio member at offset {offset}: malformed name")
        try:
            name = raw_name[:-1].decode()
        except UnicodeDecodeError as exc:
            raise BundleError(f"cpio member at offset {offset}: name is not UTF-8") from exc
        data_offset = offset + HEADER_LEN + namesize + pad(HEADER_LEN + namesize)
        if name == TRAILER:
            return
        if "/" in name or "\\" in name or name in {".", ".."} or name.startswith("-") or not name.isprintable():
            raise BundleError(f"hostile member name {name!r} at offset {offset}: bundle members must be plain file names")
        if data_offset + size > file_size:
            raise BundleError(f"truncated bundle: member {name!r} needs {size} bytes past the end of the file")
        yield Member(name, size, checksum, data_offset, magic == MAGIC_CRC)
        offset = data_offset + size + pad(size)


def member_chunks(handle: BinaryIO, member: Member, chunk: int = 1 << 20) -> Iterator[bytes]:
    handle.seek(member.data_offset)
    remaining = member.size
    while remaining:
        data = handle.read(min(chunk, remaining))
        if not data:
            raise BundleError(f"truncated bundle: member {member.name!r} ends early")
        remaining -= len(data)
        yield data


def read_member(handle: BinaryIO, member: Member, limit: int = 1 << 20) -> bytes:
    if member.size > limit:
        raise BundleError(f"member {member.name!r} is {member.size} bytes; expected at most {limit}")
    return b"".join(member_chunks(handle, member))
