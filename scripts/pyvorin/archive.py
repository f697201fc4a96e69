"""Reading a .swu: its members, sw-description and signature, streamed from disk."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import cpio, libconfig
from .errors import BundleError, PyvorinError

SW_DESCRIPTION = "sw-description"
SIGNATURE = "sw-description.sig"
MAX_DESCRIPTION = 4 << 20  # SWUpdate itself refuses larger descriptions


@dataclass(frozen=True)
class OpenBundle:
    path: Path
    handle: BinaryIO
    members: tuple[cpio.Member, ...]
    sw_description: bytes
    signature: bytes | None

    @property
    def payloads(self) -> tuple[cpio.Member, ...]:
        skip = 2 if self.signature is not None else 1
        return self.members[skip:]

    def description(self) -> dict[str, object]:
        try:
            text = self.sw_description.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BundleError(f"{self.path}: sw-description is not UTF-8 text") from exc
        return libconfig.parse(text)


@contextlib.contextmanager
def open_bundle(path: Path) -> Iterator[OpenBundle]:
    """Open and index a bundle; sw-description must come first, as SWUpdate reads it."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError as exc:
        raise PyvorinError(f"{path}: bundle not found") from exc
    except OSError as exc:
        raise PyvorinError(f"{path}: cannot read bundle: {exc.strerror or exc}") from exc
    with handle:
        size = Path(path).stat().st_size
        try:
            members = tuple(cpio.iter_members(handle, size))
        except BundleError as exc:
            raise BundleError(f"{path}: {exc}") from exc
        if not members or members[0].name != SW_DESCRIPTION:
            raise BundleError(f"{path}: first member must be {SW_DESCRIPTION} (SWUpdate reads it first)")
        names = [m.name for m in members]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise BundleError(f"{path}: member {duplicate!r} appears twice")
        if SIGNATURE in names[2:]:
            raise BundleError(f"{path}: {SIGNATURE} must directly follow {SW_DESCRIPTION}")
        sw_description = cpio.read_member(handle, members[0], MAX_DESCRIPTION)
        signature = None
        if len(members) > 1 and members[1].name == SIGNATURE:
            signature = cpio.read_member(handle, members[1], 1 << 20)
        yield OpenBundle(Path(path), handle, members, sw_description, signature)


def image_hashes(description: dict[str, object]) -> dict[str, set[str | None]]:
    """Every filename sw-description references, with the sha256 values it states."""
    found: dict[str, set[str | None]] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            name = node.get("filename")
            if isinstance(name, str):
                sha = node.get("sha256")
                found.setdefault(name, set()).add(sha if isinstance(sha, str) else None)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(description)
    return found
