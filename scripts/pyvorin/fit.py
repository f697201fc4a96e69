"""Reading a U-Boot FIT image far enough to find each image in it and its data.

A FIT is a flattened device tree (devicetree specification, version 17): a
header of ten big-endian 32-bit words (magic ``0xd00dfeed``, ``totalsize``,
the offsets of the structure and strings blocks and of the memory reservation
map, ``version``, ``last_comp_version``, ``boot_cpuid_phys``, the sizes of the
strings and structure blocks); the structure block, a sequence of 32-bit
tokens (``BEGIN_NODE`` and the node's name, NUL-terminated and padded to 4
bytes; ``PROP``, the value's length, the offset of its name in the strings
block and the value, padded to 4; ``END_NODE``; ``NOP``; ``END`` last); the
strings block, the NUL-terminated property names.

The images are the nodes under ``/images``, each with a ``type`` ("kernel",
"ramdisk", ...) and its data: a ``data`` property inside the tree, or, as
``mkimage -E`` writes them, outside it, ``data-size`` bytes from
``data-position`` (from the FIT's first byte) or from ``data-offset`` (from the
end of the tree rounded up to 4 bytes). ``data-position`` wins over
``data-offset``, as in U-Boot's ``fit_image_get_data_and_size()``.

The input is hostile (a bundle member): every size and offset is checked
against the blob before it is used, a name must end inside its block, nesting
is limited to :data:`MAX_DEPTH`, the tokens to :data:`MAX_TOKENS`, and a FIT
to :data:`MAX_FIT` bytes (a slot's FIT window, docs/verified-boot.md). Nothing
is read whole: the structure block is walked in small reads, an image's data
is skipped over and handed out as a :class:`~pyvorin.region.Region`. Memory:
the strings block (at most :data:`MAX_STRINGS`) and the few short property
values read (at most :data:`MAX_VALUE` each).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import BundleError
from .region import Region

MAGIC = 0xD00DFEED
_HEADER = struct.Struct(">10I")
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9
#: A slot's FIT window is 64 MiB (docs/verified-boot.md): U-Boot never reads a larger FIT from a slot.
MAX_FIT = 64 << 20
#: / is depth 1, /images/<image>/hash-1 depth 4: mkimage's FITs nest no deeper than that.
MAX_DEPTH = 8
#: Nodes, properties and NOPs together. A FIT has tens of them; the bound keeps a hostile block of
#: millions of NOPs from costing minutes.
MAX_TOKENS = 1 << 16
MAX_NAME = 256
MAX_STRINGS = 64 << 10
MAX_VALUE = 4 << 10
#: The properties of an image node that are read; the rest (and every ``data``) are only located.
_READ = frozenset({"type", "compression", "data-offset", "data-position", "data-size"})


class FitError(BundleError):
    """A FIT (or a device tree claiming to be one) is malformed; the message says where."""


@dataclass(frozen=True)
class FitImage:
    """One node under /images: its ``type``, U-Boot's ``compression`` of it, and where its data lies."""

    name: str
    type: str
    compression: str
    data: Region
    external: bool


@dataclass(frozen=True)
class Fit:
    totalsize: int
    images: tuple[FitImage, ...]

    def of_type(self, kind: str) -> tuple[FitImage, ...]:
        return tuple(image for image in self.images if image.type == kind)


def is_fdt(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts like a flattened device tree, as a FIT does."""
    return len(head) >= 4 and int.from_bytes(head[:4], "big") == MAGIC


def _align(value: int) -> int:
    return (value + 3) & ~3


@dataclass(frozen=True)
class _Header:
    totalsize: int
    off_struct: int
    size_struct: int
    off_strings: int
    size_strings: int


def _header(region: Region, limit: int) -> _Header:
    if region.size > limit:
        raise FitError(f"{region.size} bytes: over the {limit >> 20} MiB a FIT may have here "
                       "(a slot's FIT window; U-Boot reads no more)")
    if region.size < _HEADER.size:
        raise FitError(f"truncated: {region.size} bytes, no room for the {_HEADER.size}-byte device tree header")
    (magic, totalsize, off_struct, off_strings, _off_rsvmap, version, last_comp, _cpu, size_strings,
     size_struct) = _HEADER.unpack(region.read(0, _HEADER.size))
    if magic != MAGIC:
        raise FitError(f"not a device tree (magic {magic:#010x}, expected {MAGIC:#010x})")
    if version < 17 or last_comp > 17:
        raise FitError(f"device tree version {version} (compatible with {last_comp}): only version 17 is read")
    if totalsize < _HEADER.size or totalsize > region.size:
        raise FitError(f"the header's totalsize {totalsize} does not fit the {region.size} bytes there are")
    if off_struct % 4 or off_struct < _HEADER.size or off_struct + size_struct > totalsize:
        raise FitError(f"structure block of {size_struct} bytes at {off_struct}: outside the tree's "
                       f"{totalsize} bytes or misaligned")
    if off_strings < _HEADER.size or off_strings + size_strings > totalsize:
        raise FitError(f"strings block of {size_strings} bytes at {off_strings}: outside the tree's {totalsize} bytes")
    if size_strings > MAX_STRINGS:
        raise FitError(f"strings block of {size_strings} bytes: over the {MAX_STRINGS} a FIT needs")
    return _Header(totalsize, off_struct, size_struct, off_strings, size_strings)


class _Walker:
    """Walks the structure block token by token, in small reads, keeping the /images/<name> properties."""

    def __init__(self, region: Region, header: _Header) -> None:
        self.region = region
        self.pos = header.off_struct
        self.end = header.off_struct + header.size_struct
        self.strings = region.read(header.off_strings, header.size_strings)
        # image name -> property name -> (value offset, value length, the value if in _READ)
        self.images: dict[str, dict[str, tuple[int, int, bytes | None]]] = {}

    def _u32(self) -> int:
        if self.pos + 4 > self.end:
            raise FitError(f"the structure block ends at {self.end} before its FDT_END token")
        value = int.from_bytes(self.region.read(self.pos, 4), "big")
        self.pos += 4
        return value

    def _node_name(self) -> str:
        window = self.region.read(self.pos, min(MAX_NAME + 1, self.end - self.pos))
        length = window.find(b"\0")
        if length < 0:
            raise FitError(f"node name at {self.pos} is not terminated within {MAX_NAME} bytes and its block")
        try:
            name = window[:length].decode("ascii")
        except UnicodeDecodeError as exc:
            raise FitError(f"node name at {self.pos} is not ASCII") from exc
        self.pos += _align(length + 1)
        return name

    def _prop_name(self, offset: int) -> str:
        end = self.strings.find(b"\0", offset) if offset < len(self.strings) else -1
        if end < 0:
            raise FitError(f"property name offset {offset}: not a terminated string in the strings block")
        return self.strings[offset:end].decode("ascii", "replace")

    def walk(self) -> None:
        path: list[str] = []
        tokens = 0
        rooted = False
        while True:
            at = self.pos
            token = self._u32()
            tokens += 1
            if tokens > MAX_TOKENS:
                raise FitError(f"more than {MAX_TOKENS} tokens in the structure block")
            if token == FDT_BEGIN_NODE:
                if rooted and not path:
                    raise FitError(f"a second root node at {at}")
                name = self._node_name()
                path.append(name)
                rooted = True
                if len(path) > MAX_DEPTH:
                    raise FitError(f"nodes nested deeper than {MAX_DEPTH} at {at}")
                if len(path) == 3 and path[1] == "images":
                    if name in self.images:
                        raise FitError(f"two images named {name!r}")
                    self.images[name] = {}
            elif token == FDT_END_NODE:
                if not path:
                    raise FitError(f"FDT_END_NODE at {at} closes no node")
                path.pop()
            elif token == FDT_PROP:
                length, name_offset = self._u32(), self._u32()
                if not path:
                    raise FitError(f"a property outside any node at {at}")
                if length > self.end - self.pos:
                    raise FitError(f"property at {at}: its {length} bytes run past the structure block")
                if len(path) == 3 and path[1] == "images":
                    self._keep(path[2], self._prop_name(name_offset), length)
                self.pos += _align(length)
            elif token == FDT_END:
                if path or not rooted:
                    raise FitError(f"FDT_END at {at} inside a node (or before the root)")
                return
            elif token != FDT_NOP:
                raise FitError(f"unknown token {token:#x} at {at} in the structure block")

    def _keep(self, image: str, prop: str, length: int) -> None:
        value = None
        if prop in _READ:
            if length > MAX_VALUE:
                raise FitError(f"image {image!r}: property {prop!r} of {length} bytes (at most {MAX_VALUE})")
            value = self.region.read(self.pos, length)
        self.images[image][prop] = (self.pos, length, value)


def _string(image: str, props: dict[str, tuple[int, int, bytes | None]], name: str, default: str) -> str:
    if name not in props:
        return default
    value = props[name][2]
    assert value is not None  # _READ holds every name asked for here
    if not value.endswith(b"\0") or b"\0" in value[:-1]:
        raise FitError(f"image {image!r}: {name} is not one NUL-terminated string")
    return value[:-1].decode("ascii", "replace")


def _u32(image: str, props: dict[str, tuple[int, int, bytes | None]], name: str) -> int | None:
    if name not in props:
        return None
    value = props[name][2]
    assert value is not None
    if len(value) != 4:
        raise FitError(f"image {image!r}: {name} is {len(value)} bytes, not one 32-bit cell")
    return int.from_bytes(value, "big")


def _image(region: Region, header: _Header, name: str, props: dict[str, tuple[int, int, bytes | None]]) -> FitImage:
    kind = _string(name, props, "type", "")
    compression = _string(name, props, "compression", "none")
    position = _u32(name, props, "data-position")
    offset = _u32(name, props, "data-offset")
    if position is None and offset is not None:
        position = _align(header.totalsize) + offset
    if position is not None:
        size = _u32(name, props, "data-size")
        if size is None:
            raise FitError(f"image {name!r}: external data without data-size")
        if position + size > region.size:
            raise FitError(f"image {name!r}: {size} bytes of data at {position} lie outside the FIT's "
                           f"{region.size} bytes")
        return FitImage(name, kind, compression, region.sub(position, size, f"{region.name}: {name}"), True)
    if "data" not in props:
        raise FitError(f"image {name!r} has no data (neither data nor data-offset/-position)")
    start, length, _ = props["data"]
    return FitImage(name, kind, compression, region.sub(start, length, f"{region.name}: {name}"), False)


def read_fit(region: Region, limit: int = MAX_FIT) -> Fit:
    """The images of the FIT in ``region`` (its first byte is the tree's); raises FitError."""
    header = _header(region, limit)
    walker = _Walker(region, header)
    walker.walk()
    images = tuple(_image(region, header, name, props) for name, props in walker.images.items())
    return Fit(header.totalsize, images)
