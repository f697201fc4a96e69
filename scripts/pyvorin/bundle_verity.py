"""Holding a bundle's dm-verity image to the root hash in the bundle's FIT (verified boot).

A root slot holds a dm-verity image from its first byte and a signed FIT in a
window at its end; the FIT's initramfs carries the image's root hash in
``usr/share/misc/dm-verity.env`` (docs/verified-boot.md). One copy of a
bundle writes both to the slot, the FIT with an ``offset``. If the two
disagree the bundle installs, and then every boot of the slot is restarted by
dm-verity until the boot counter rolls it back: so ``pyvorin verify`` checks
it before it ships. For each device a copy writes an image to from offset 0
and another to at an offset that turns out to be a FIT (device tree magic)
whose ramdisk carries the file, the image's tree is recomputed and held to
that root hash and hash offset (``DATA_SIZE``) with :mod:`pyvorin.verity`;
each pair of artifacts once, however many copies name it.

Not checked, with a line saying so: a ``pyvdelta`` at offset 0 (it rebuilds
the image from the device's old one, which the bundle does not hold), an
encrypted image or FIT (verify has no AES key), a compression this tool does
not read.

Memory stays bounded whatever the image size: an uncompressed image is read
in place in the bundle; a compressed one (zlib, zstd) is decompressed in a
stream (1 MiB pieces) into an unnamed file in a private temporary directory,
at most as many bytes as fit before the next image on its device, because the
checker reads the tree where it lies. The FIT likewise (at most 64 MiB). Then
the verity check's own bound: a 1 MiB read buffer and one hash block per tree
level. Disk: the decompressed image, for the time of its check.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

from . import verity
from .archive import OpenBundle
from .decompress import decompressed, peek
from .errors import BundleError, PyvorinError, VerificationError
from .fit import MAX_FIT, FitError, is_fdt, read_fit
from .initramfs import find_file
from .region import Region

#: Where meta-security's initramfs, and ours, keep dm-verity-img's parameters file.
ENV_PATH = "usr/share/misc/dm-verity.env"
#: What sw-description's ``compressed`` may say that this tool reads (``true`` is the old spelling of zlib).
_COMPRESSIONS = {"zlib", "zstd", "none"}
#: SWUpdate reads ``offset`` with ustrtoull(): strtoull base 0, then an optional K, M or G (binary).
_OFFSET = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)([kKMG]?)")
_UNITS = {"": 1, "k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


@dataclass(frozen=True)
class Placed:
    """An image a copy writes to a device's bytes (raw or pyvdelta), as sw-description states it."""

    name: str
    type: str
    device: str
    offset: int
    compressed: str
    encrypted: bool


@dataclass(frozen=True)
class RootHash:
    """The parameters a FIT's ramdisk carries: what the initramfs opens the root with."""

    ramdisk: str
    root_hash: str
    data_size: int


@dataclass(frozen=True)
class VerityCheck:
    """One pair of artifacts: the image at offset 0 and the FIT; ``reason`` says why it was not checked."""

    image: str
    fit: str
    root_hash: str
    reason: str = ""

    def line(self) -> str:
        if self.reason:
            where = f" ({self.root_hash})" if self.root_hash else ""
            return f"verity: {self.image} not checked against the root hash in {self.fit}{where}: {self.reason}"
        return f"verity: {self.image} matches the root hash in {self.fit} ({self.root_hash})"


def _offset(value: object, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _OFFSET.fullmatch(value) if isinstance(value, str) and len(value) < 32 else None
    if not match:
        raise BundleError(f"sw-description: offset {str(value)[:40]!r} of {name!r} is not a number of bytes")
    digits, unit = match.groups()
    if digits[:2].lower() == "0x":
        number = int(digits, 16)
    else:
        number = int(digits, 8 if digits.startswith("0") else 10)
    return number * _UNITS[unit]


def _compression(value: object) -> str:
    if value is None or value is False:
        return "none"
    if value is True:
        return "zlib"
    return str(value)


def _copies(node: object) -> Iterator[list[object]]:
    """Every ``images`` list of sw-description: one per copy (software.<board>.<set>.<mode>, or shorter)."""
    if isinstance(node, dict):
        images = node.get("images")
        if isinstance(images, list):
            yield images
        for value in node.values():
            yield from _copies(value)
    elif isinstance(node, list):
        for value in node:
            yield from _copies(value)


def _placed(images: list[object]) -> list[Placed]:
    placed = []
    for entry in images:
        if not isinstance(entry, dict):
            continue
        name, kind, device = entry.get("filename"), entry.get("type"), entry.get("device")
        if not (isinstance(name, str) and kind in ("raw", "pyvdelta") and isinstance(device, str)):
            continue
        offset = _offset(entry.get("offset"), name) if kind == "raw" else 0
        placed.append(Placed(name, str(kind), device, offset, _compression(entry.get("compressed")),
                             entry.get("encrypted") is True))
    return placed


def pairs(description: dict[str, object]) -> Iterator[tuple[Placed, Placed, int]]:
    """(image at offset 0, a raw image at an offset of the same device, where the first must end): each
    pair of artifact names once, in sw-description's order."""
    seen: set[tuple[str, str]] = set()
    for images in _copies(description.get("software")):
        by_device: dict[str, list[Placed]] = {}
        for item in _placed(images):
            by_device.setdefault(item.device, []).append(item)
        for items in by_device.values():
            bases = [item for item in items if item.offset == 0]
            later = sorted((item for item in items if item.offset > 0), key=lambda item: item.offset)
            # Two images from 0 on one device: the spec refuses that; there is no one image to check.
            if len(bases) != 1 or not later:
                continue
            for fit in later:
                if fit.type == "raw" and (bases[0].name, fit.name) not in seen:
                    seen.add((bases[0].name, fit.name))
                    yield bases[0], fit, later[0].offset


class _Spill:
    """Decompressed artifacts, each in an unnamed file of one private (0700) temporary directory while used."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack
        self.directory: str | None = None

    @contextlib.contextmanager
    def file(self, chunks: Generator[bytes, None, None], name: str, limit: int,
             too_big: Callable[[], PyvorinError]) -> Iterator[Region]:
        """``chunks`` written to a temporary file, refused past ``limit`` bytes (``too_big()`` is raised);
        the file as a region."""
        if self.directory is None:
            self.directory = self.stack.enter_context(tempfile.TemporaryDirectory(prefix="pyvorin-verify-"))
        # Closing the generator stops its decompressor (zstd is killed) when the limit is reached.
        with tempfile.TemporaryFile(dir=self.directory) as handle, contextlib.closing(chunks):
            written = 0
            for chunk in chunks:
                written += len(chunk)
                if written > limit:
                    raise too_big()
                handle.write(chunk)
            handle.flush()
            yield Region(handle, 0, written, f"{name} (decompressed)")


class _Checker:
    def __init__(self, bundle: OpenBundle, spill: _Spill) -> None:
        self.bundle = bundle
        self.spill = spill
        self.members = {member.name: member for member in bundle.payloads}
        self.fits: dict[str, tuple[RootHash, ...]] = {}

    def _member(self, name: str) -> Region:
        member = self.members.get(name)
        if member is None:  # check_contents has already refused a bundle that lacks a referenced member
            raise BundleError(f"{self.bundle.path}: sw-description references {name!r}, which the bundle lacks")
        return Region(self.bundle.handle, member.data_offset, member.size, name)

    def check(self, image: Placed, fit: Placed, room: int) -> list[VerityCheck]:
        if fit.encrypted:
            return [VerityCheck(image.name, fit.name, "",
                                f"{fit.name} is encrypted and verify has no AES key to read the root hash in it")]
        if fit.name not in self.fits:
            self.fits[fit.name] = self._root_hashes(fit)
        results = []
        for params in self.fits[fit.name]:
            reason = _unchecked(image)
            if not reason:
                self._hold(image, fit, params, room)
            results.append(VerityCheck(image.name, fit.name, params.root_hash, reason))
        return results

    def _root_hashes(self, placed: Placed) -> tuple[RootHash, ...]:
        """The dm-verity parameters the ramdisks of ``placed`` carry; () when it is no FIT or carries none."""
        if placed.compressed not in _COMPRESSIONS:
            return ()  # whether it is a FIT at all cannot be told
        region = self._member(placed.name)
        head, chunks = peek(decompressed(region.chunks(), placed.compressed, placed.name), 4)
        with contextlib.closing(chunks):
            if not is_fdt(head):
                return ()
            if placed.compressed == "none":
                return _fit_root_hashes(placed.name, region)

            def too_big() -> PyvorinError:
                return FitError(f"{placed.name}: not a readable FIT: over {MAX_FIT >> 20} MiB decompressed, "
                                "the FIT window of a slot (U-Boot reads no more)")

            with self.spill.file(chunks, placed.name, MAX_FIT, too_big) as spilled:
                return _fit_root_hashes(placed.name, spilled)

    def _hold(self, image: Placed, fit: Placed, params: RootHash, room: int) -> None:
        region = self._member(image.name)

        def too_big(what: str = "decompressed, it") -> PyvorinError:
            # The device would write it over the start of the next image (the FIT): the bundle is wrong.
            return VerificationError(f"verity: {image.name}: {what} reaches past the next image on its device, "
                                     f"at offset {room}")

        if image.compressed == "none":
            if region.size > room:
                raise too_big(f"its {region.size} bytes")
            _hold_region(region, image, fit, params)
            return
        chunks = decompressed(region.chunks(), image.compressed, image.name)
        with self.spill.file(chunks, image.name, room, too_big) as spilled:
            _hold_region(spilled, image, fit, params)


def _hold_region(region: Region, image: Placed, fit: Placed, params: RootHash) -> None:
    try:
        verity.check_region(region, params.root_hash, params.data_size)
    except verity.VerityError as exc:
        raise VerificationError(f"verity: {image.name} does not match the root hash in {fit.name} "
                                f"(ramdisk {params.ramdisk!r}, DATA_SIZE {params.data_size}): {exc}") from exc
    except verity.VerityParamsError as exc:
        raise verity.VerityParamsError(f"{fit.name}: ramdisk {params.ramdisk!r}: {ENV_PATH}: {exc}") from exc


def _fit_root_hashes(name: str, region: Region) -> tuple[RootHash, ...]:
    try:
        fit = read_fit(region)
    except FitError as exc:
        raise FitError(f"{name}: not a readable FIT: {exc}") from exc
    # Every ramdisk that carries the file: U-Boot may boot any configuration, each must hold.
    found: dict[tuple[str, int], RootHash] = {}
    for ramdisk in fit.of_type("ramdisk"):
        what = f"{name}: ramdisk {ramdisk.name!r}"
        env = find_file(ramdisk.data.chunks(), ENV_PATH, what)
        if env is None:
            continue
        try:
            text = env.decode()
        except UnicodeDecodeError as exc:
            raise verity.VerityParamsError(f"{what}: {ENV_PATH} is not UTF-8 text") from exc
        root_hash, data_size = verity.parse_params(text, f"{what}: {ENV_PATH}")
        found.setdefault((root_hash.lower(), data_size), RootHash(ramdisk.name, root_hash.lower(), data_size))
    return tuple(found.values())


def _unchecked(image: Placed) -> str:
    """Why ``image`` cannot be held to a root hash from the bundle alone; "" when it can."""
    if image.type == "pyvdelta":
        return ("a pyvdelta rebuilds the image from the device's old one, which the bundle does not hold "
                "(pyvorin verity check can check the slot it rebuilt)")
    if image.encrypted:
        return "it is encrypted and verify has no AES key to read it"
    if image.compressed not in _COMPRESSIONS:
        return f"it is compressed with {image.compressed!r}, which verify does not read (zlib, zstd)"
    return ""


def check_bundle(bundle: OpenBundle, description: dict[str, object]) -> tuple[VerityCheck, ...]:
    """Every image/FIT pair of the bundle held to its root hash; raises VerificationError on the first
    that does not hold."""
    results: list[VerityCheck] = []
    with contextlib.ExitStack() as stack:
        checker = _Checker(bundle, _Spill(stack))
        for image, fit, room in pairs(description):
            results.extend(checker.check(image, fit, room))
    return tuple(results)
