"""dm-verity images as the kernel checks them: recompute the hash tree of an image
and hold it to its root hash.

The format is the one ``veritysetup format`` writes (libcryptsetup, hash type 1)
and meta-security's ``dm-verity-img`` class appends to a file system image: the
data, then at ``hash offset`` a superblock of one hash block, then the tree,
its top level first. A hash is SHA-256 over ``salt || block``; a hash block
holds ``hash_block_size / 32`` of them, zero-padded; level ``i`` (0 above the
data) has ``ceil(data_blocks / per_block ** (i + 1))`` blocks; the root hash is
the hash of the single top block (or of the single data block when there is
only one).

It streams: one pass over the data, one hash block per level in memory, each
stored tree block compared as soon as it is computed. Memory: the read buffer
(:data:`CHUNK`) plus one hash block per level (at most 8 levels).
"""

from __future__ import annotations

import hashlib
import re
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from .errors import PyvorinError, VerificationError
from .region import Region

SIGNATURE = b"verity\0\0"
#: struct verity_sb (libcryptsetup lib/verity/verity.c), little endian, 512 bytes.
_SUPERBLOCK = struct.Struct("<8sII16s32sIIQH6s256s168s")
DIGEST_SIZE = 32
CHUNK = 1 << 20


class VerityError(VerificationError):
    """A verity image does not hold: its superblock, a tree block or the root hash is wrong."""


class VerityParamsError(PyvorinError):
    """What the image is checked against (root hash, parameters file) is malformed."""


@dataclass(frozen=True)
class Superblock:
    """What the superblock says about the data and its tree."""

    uuid: str
    algorithm: str
    data_block_size: int
    hash_block_size: int
    data_blocks: int
    salt: bytes


@dataclass(frozen=True)
class Checked:
    """A verity image whose data and stored tree hash to ``root_hash``."""

    root_hash: str
    superblock: Superblock
    levels: int
    tree_blocks: int


def _power_of_two(value: int) -> bool:
    return value >= 512 and value & (value - 1) == 0


def read_superblock(region: Region, hash_offset: int) -> Superblock:
    """The superblock at ``hash_offset``; raises VerityError naming what is wrong with it."""
    if hash_offset < 0 or hash_offset + _SUPERBLOCK.size > region.size:
        raise VerityError(f"no verity superblock at offset {hash_offset}: the image ends there")
    raw = region.read(hash_offset, _SUPERBLOCK.size)
    (signature, version, hash_type, raw_uuid, raw_algorithm, data_block_size, hash_block_size, data_blocks,
     salt_size, _pad, salt, _pad2) = _SUPERBLOCK.unpack(raw)
    if signature != SIGNATURE:
        raise VerityError(f"no verity superblock at offset {hash_offset} (signature {signature!r})")
    if version != 1 or hash_type != 1:
        raise VerityError(f"verity superblock version {version}, hash type {hash_type}: only 1 and 1 are supported")
    algorithm = raw_algorithm.rstrip(b"\0").decode("ascii", "replace")
    if algorithm != "sha256":
        raise VerityError(f"verity hash algorithm {algorithm!r}: only sha256 is supported")
    if not (_power_of_two(data_block_size) and _power_of_two(hash_block_size)) or max(
            data_block_size, hash_block_size) > 1 << 20:
        raise VerityError(f"verity block sizes {data_block_size}/{hash_block_size}: not powers of two of 512 B to 1 MiB")
    if salt_size > len(salt) or data_blocks == 0:
        raise VerityError(f"verity superblock: salt size {salt_size}, {data_blocks} data blocks")
    if data_blocks * data_block_size > hash_offset:
        raise VerityError(f"verity superblock: {data_blocks} data blocks of {data_block_size} B end past the "
                          f"superblock at {hash_offset}")
    return Superblock(str(uuid.UUID(bytes=raw_uuid)), algorithm, data_block_size, hash_block_size, data_blocks,
                      salt[:salt_size])


def level_sizes(data_blocks: int, hash_block_size: int) -> list[int]:
    """Blocks per tree level, level 0 (the one above the data) first, as libcryptsetup lays them out."""
    bits = (hash_block_size // DIGEST_SIZE).bit_length() - 1
    levels = 0
    while bits * levels < 64 and (data_blocks - 1) >> (bits * levels):
        levels += 1
    return [(data_blocks + (1 << ((i + 1) * bits)) - 1) >> ((i + 1) * bits) for i in range(levels)]


def check(path: Path, root_hash: str, hash_offset: int) -> Checked:
    """Recompute the tree of the verity image at ``path`` (data from 0, superblock and tree at
    ``hash_offset``) and compare every stored tree block and the root with it."""
    with open(path, "rb") as stream:
        try:
            return check_region(Region.whole(stream, path), root_hash, hash_offset)
        except VerityError as exc:
            raise VerityError(f"{path}: {exc}") from exc


def check_region(region: Region, root_hash: str, hash_offset: int) -> Checked:
    """:func:`check` of an image that is a region of a file (a bundle member, in place); offsets in
    errors count from the region's start, and its name is left to the caller to add."""
    expected = root_hash.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise VerityParamsError(f"root hash {root_hash!r}: not 64 hex digits (sha256)")
    superblock = read_superblock(region, hash_offset)
    sizes = level_sizes(superblock.data_blocks, superblock.hash_block_size)
    # Stored top level first, after the superblock's own hash block.
    starts: list[int] = [0] * len(sizes)
    position = hash_offset + superblock.hash_block_size
    for level in reversed(range(len(sizes))):
        starts[level] = position
        position += sizes[level] * superblock.hash_block_size
    if region.size < position:
        raise VerityError(f"the hash tree ends at {position}, the image at {region.size}")
    computed = _Tree(region, superblock, sizes, starts).run()
    if computed != expected:
        raise VerityError(f"root hash {computed}, expected {expected}")
    return Checked(computed, superblock, len(sizes), sum(sizes))


class _Tree:
    """One pass over the data, building each level's blocks and holding them to the stored ones."""

    def __init__(self, region: Region, superblock: Superblock, sizes: list[int], starts: list[int]) -> None:
        self.region = region
        self.sb = superblock
        self.sizes = sizes
        self.starts = starts
        self.pending: list[list[bytes]] = [[] for _ in sizes]
        self.written = [0] * len(sizes)
        self.per_block = superblock.hash_block_size // DIGEST_SIZE
        self.salted = hashlib.sha256(superblock.salt)
        self.root = ""

    def _digest(self, block: bytes) -> bytes:
        sha = self.salted.copy()
        sha.update(block)
        return sha.digest()

    def _push(self, level: int, digest: bytes) -> None:
        if level == len(self.sizes):
            self.root = digest.hex()
            return
        self.pending[level].append(digest)
        if len(self.pending[level]) == self.per_block:
            self._emit(level)

    def _emit(self, level: int) -> None:
        block = b"".join(self.pending[level]).ljust(self.sb.hash_block_size, b"\0")
        self.pending[level] = []
        index = self.written[level]
        self.written[level] += 1
        # The tree lies inside the region: check_region measured it before the first read.
        offset = self.starts[level] + index * self.sb.hash_block_size
        if self.region.read(offset, self.sb.hash_block_size) != block:
            raise VerityError(f"hash block {index} of tree level {level} does not match the data "
                              f"below it (offset {offset})")
        self._push(level + 1, self._digest(block))

    def run(self) -> str:
        size = self.sb.data_block_size
        remaining = self.sb.data_blocks
        position = 0
        while remaining:
            count = min(remaining, max(1, CHUNK // size))
            # The data ends before the superblock (read_superblock), which lies inside the region.
            chunk = self.region.read(position, count * size)
            position += len(chunk)
            for offset in range(0, len(chunk), size):
                digest = self._digest(chunk[offset:offset + size])
                if not self.sizes:     # one data block: its hash is the root
                    self.root = digest.hex()
                else:
                    self._push(0, digest)
            remaining -= count
        # The last block of each level, zero-padded, bottom up.
        for level in range(len(self.sizes)):
            if self.pending[level]:
                self._emit(level)
        if self.written != self.sizes:
            raise VerityError(f"tree levels of {self.written} blocks, expected {self.sizes}")
        return self.root


def read_params(path: Path) -> tuple[str, int]:
    """ROOT_HASH and the hash offset (DATA_SIZE) from the parameters file meta-security's
    dm-verity-img class writes beside the image (KEY=VALUE lines)."""
    try:
        text = path.read_bytes().decode()
    except UnicodeDecodeError as exc:
        raise VerityParamsError(f"{path}: not a parameters file (not UTF-8 text)") from exc
    return parse_params(text, str(path))


def parse_params(text: str, source: str) -> tuple[str, int]:
    """:func:`read_params` of the file's text (``source`` names it in errors): the same file rides in
    a FIT's initramfs as /usr/share/misc/dm-verity.env."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise VerityParamsError(f"{source}:{number}: not KEY=VALUE: {line[:60]!r}")
        values[key.strip()] = value.strip()
    missing = [key for key in ("ROOT_HASH", "DATA_SIZE") if key not in values]
    if missing:
        raise VerityParamsError(f"{source}: no {' or '.join(missing)} (a dm-verity-img parameters file has both)")
    # isdecimal, not isdigit: int() refuses superscripts, which isdigit accepts.
    if not values["DATA_SIZE"].isdecimal() or len(values["DATA_SIZE"]) > 20:
        raise VerityParamsError(f"{source}: DATA_SIZE {values['DATA_SIZE'][:40]!r} is not a byte count")
    return values["ROOT_HASH"], int(values["DATA_SIZE"])
