"""A byte range of an open file, read in place.

A bundle member is such a range of the bundle, and an image inside a FIT one of
the FIT: readers take a region instead of a file so that nothing is copied
out before it is checked. Reads are positional (``os.pread``), so regions of
one file can be read in any order without moving anyone's file position.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import BundleError
from .hashing import CHUNK


@dataclass(frozen=True)
class Region:
    """``size`` bytes of ``handle`` from ``start``; ``name`` says what they are, in errors."""

    handle: BinaryIO
    start: int
    size: int
    name: str

    @classmethod
    def whole(cls, handle: BinaryIO, path: Path | str) -> Region:
        return cls(handle, 0, os.fstat(handle.fileno()).st_size, str(path))

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset``; the caller has checked that they lie inside."""
        if offset < 0 or length < 0 or offset + length > self.size:
            # A caller's bug, not input: every reader bounds its offsets against the region first.
            raise ValueError(f"{self.name}: read of {length} bytes at {offset} outside its {self.size} bytes")
        data = os.pread(self.handle.fileno(), length, self.start + offset)
        if len(data) != length:
            raise BundleError(f"{self.name}: the file ends {length - len(data)} bytes early (truncated while read?)")
        return data

    def sub(self, offset: int, length: int, name: str) -> Region:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"{self.name}: {length} bytes at {offset} lie outside its {self.size} bytes")
        return Region(self.handle, self.start + offset, length, name)

    def chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        position = 0
        while position < self.size:
            data = self.read(position, min(chunk, self.size - position))
            position += len(data)
            yield data
