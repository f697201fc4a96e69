"""The windowed delta file format (version 1), streamed in both directions.

Layout, all integers big-endian::

    "PYVDLT01"                       magic
    u32 n, n bytes of UTF-8 JSON     header: block_size, old_size, new_size,
                                     old_sha256, new_sha256, op_count and
                                     codec (only when not "bsdiff": codec.py)
    op_count operations, in increasing new offset, covering [0, new_size):
      u8 1 COPY   u64 new_off u64 length u64 old_off
      u8 2 ZERO   u64 new_off u64 length
      u8 3 PATCH  u64 new_off u64 length u32 k (u64 old_off u64 len)*k
                  u64 p, p bytes of the codec's patch (BSDIFF40 for
                  "bsdiff") turning the k old extents, concatenated,
                  into the new range
    "PYVDEND1"                       trailer magic
    32 bytes                         SHA-256 of every byte before the trailer
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import BundleError

MAGIC = b"PYVDLT01"
TRAILER = b"PYVDEND1"
COPY, ZERO, PATCH = 1, 2, 3
MAX_HEADER = 1 << 16
# What one PATCH window may ask of the device, enforced when reading: the new
# bytes it produces, the old bytes it reads, and its BSDIFF40 patch (a
# window's patch is at most the window plus bzip2's and the control block's
# overhead). The applier holds one window at a time, so these bound its memory
# and its scratch space whatever the delta claims.
MAX_WINDOW = 4 << 20
MAX_WINDOW_SOURCE = 8 << 20
MAX_EXTENTS = 1 << 12
MAX_PATCH = 2 * MAX_WINDOW + (1 << 20)


@dataclass(frozen=True)
class Header:
    block_size: int
    old_size: int
    new_size: int
    old_sha256: str
    new_sha256: str
    op_count: int
    codec: str = "bsdiff"

    def to_bytes(self) -> bytes:
        fields = dict(self.__dict__)
        # The applier that reads a delta is the one on the device's running
        # slot, possibly older than this tool: bsdiff deltas stay exactly as
        # they were before codecs had names, so every applier reads them.
        if fields["codec"] == "bsdiff":
            del fields["codec"]
        data = json.dumps(fields, sort_keys=True).encode()
        return MAGIC + struct.pack(">I", len(data)) + data


@dataclass(frozen=True)
class Copy:
    new_off: int
    length: int
    old_off: int


@dataclass(frozen=True)
class Zero:
    new_off: int
    length: int


@dataclass(frozen=True)
class Patch:
    new_off: int
    length: int
    extents: tuple[tuple[int, int], ...]
    patch: bytes

    @property
    def source_size(self) -> int:
        return sum(length for _, length in self.extents)


Op = Copy | Zero | Patch


def encode_op(op: Op) -> bytes:
    if isinstance(op, Copy):
        return struct.pack(">BQQQ", COPY, op.new_off, op.length, op.old_off)
    if isinstance(op, Zero):
        return struct.pack(">BQQ", ZERO, op.new_off, op.length)
    head = struct.pack(">BQQI", PATCH, op.new_off, op.length, len(op.extents))
    extents = b"".join(struct.pack(">QQ", off, length) for off, length in op.extents)
    return head + extents + struct.pack(">Q", len(op.patch)) + op.patch


class DeltaWriter:
    """Writes a delta and its self-hash; ops must arrive in new-offset order."""

    def __init__(self, out: BinaryIO, header: Header) -> None:
        self._out = out
        self._sha = hashlib.sha256()
        self._next = 0
        self._count = 0
        self._header = header
        self._write(header.to_bytes())

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._sha.update(data)

    def add(self, op: Op) -> None:
        if op.new_off != self._next or op.length <= 0:
            raise ValueError(f"delta ops must be contiguous: expected offset {self._next}, got {op.new_off}")
        self._write(encode_op(op))
        self._next += op.length
        self._count += 1

    def finish(self) -> bytes:
        if self._next != self._header.new_size or self._count != self._header.op_count:
            raise ValueError("delta ops do not cover the new image")
        digest = self._sha.digest()
        self._out.write(TRAILER + digest)
        return digest


class DeltaError(BundleError):
    """A delta file is malformed, truncated or altered."""


class _HashingReader:
    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.sha = hashlib.sha256()

    def read(self, size: int) -> bytes:
        data = self._handle.read(size)
        if len(data) != size:
            raise DeltaError("delta is truncated")
        self.sha.update(data)
        return data


def read_header(reader: _HashingReader) -> Header:
    try:
        magic = reader.read(8)
    except DeltaError:
        magic = b""
    if magic != MAGIC:
        raise DeltaError("not a pyvorin windowed delta (bad magic)")
    (size,) = struct.unpack(">I", reader.read(4))
    if size > MAX_HEADER:
        raise DeltaError("delta header is too large")
    try:
        fields = json.loads(reader.read(size))
        header = Header(**fields)
    except (ValueError, TypeError, RecursionError) as exc:
        raise DeltaError(f"delta header is malformed: {exc}") from exc
    for name, kind in (("block_size", int), ("old_size", int), ("new_size", int), ("op_count", int),
                       ("old_sha256", str), ("new_sha256", str), ("codec", str)):
        value = getattr(header, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DeltaError(f"delta header field {name} is {type(value).__name__}, not {kind.__name__}")
    if min(header.block_size, header.old_size + 1, header.new_size + 1, header.op_count + 1) <= 0:
        raise DeltaError("delta header has impossible sizes")
    return header


def read_delta(handle: BinaryIO) -> tuple[Header, Iterator[Op]]:
    """Parse a delta lazily; the iterator checks the self-hash after the last op.

    A PATCH op's bytes are bounded by the format (not by the file), so a
    caller applies each op before reading the next and memory stays bounded.
    """
    reader = _HashingReader(handle)
    header = read_header(reader)

    def ops() -> Iterator[Op]:
        position = 0
        for _ in range(header.op_count):
            (kind,) = reader.read(1)
            if kind == COPY:
                new_off, length, old_off = struct.unpack(">QQQ", reader.read(24))
                if old_off + length > header.old_size:
                    raise DeltaError("delta copies past the end of the old image")
                op: Op = Copy(new_off, length, old_off)
            elif kind == ZERO:
                new_off, length = struct.unpack(">QQ", reader.read(16))
                op = Zero(new_off, length)
            elif kind == PATCH:
                new_off, length, count = struct.unpack(">QQI", reader.read(20))
                if length > MAX_WINDOW:
                    raise DeltaError(f"delta patch window of {length} bytes exceeds {MAX_WINDOW}")
                if count > MAX_EXTENTS:
                    raise DeltaError("delta patch lists too many source extents")
                extents = tuple(struct.unpack(">QQ", reader.read(16)) for _ in range(count))
                if any(off + ln > header.old_size for off, ln in extents):
                    raise DeltaError("delta patch reads past the end of the old image")
                if sum(ln for _, ln in extents) > MAX_WINDOW_SOURCE:
                    raise DeltaError(f"delta patch reads more than {MAX_WINDOW_SOURCE} source bytes")
                (size,) = struct.unpack(">Q", reader.read(8))
                if size > MAX_PATCH:
                    raise DeltaError(f"delta patch of {size} bytes exceeds {MAX_PATCH}")
                op = Patch(new_off, length, extents, reader.read(size))
            else:
                raise DeltaError(f"unknown delta operation {kind}")
            if op.new_off != position or op.length <= 0 or position + op.length > header.new_size:
                raise DeltaError("delta operations do not tile the new image")
            position += op.length
            yield op
        if position != header.new_size:
            raise DeltaError("delta operations do not cover the new image")
        expected = reader.sha.digest()
        trailer = handle.read(8 + 32)
        if trailer[:8] != TRAILER or len(trailer) != 40:
            raise DeltaError("delta is truncated (no trailer)")
        if trailer[8:] != expected:
            raise DeltaError("delta is corrupted: its SHA-256 does not match its trailer")
        if handle.read(1):
            raise DeltaError("delta has trailing bytes")

    return header, ops()
