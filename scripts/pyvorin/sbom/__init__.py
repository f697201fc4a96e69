"""The software bill of materials a release carries.

A release spec's ``sbom`` names what oe-core's create-spdx deployed for the
image (``<image>.spdx.tar.zst``) or one SPDX JSON document. ``pyvorin
bundle`` ships it as one self-contained SPDX document (:mod:`.merge`),
member ``sbom.spdx.json``, named with its sha256 in sw-description
(``software.sbom``): signed with the rest and never installed, since no image
names it and SWUpdate skips such members. :func:`load` reads it back from a
bundle (checking that sha256) or from a file; :func:`diff` compares two.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..archive import OpenBundle, image_hashes, open_bundle
from ..cpio import MAGIC_CRC, MAGIC_NEWC, member_chunks
from ..errors import VerificationError
from ..hashing import file_chunks
from ..spec import SBOM_MEMBER
from .merge import merge
from .stream import SbomError, documents

__all__ = ["MEMBER", "SWDESC_KEY", "Diff", "Package", "Sbom", "SbomError", "diff", "from_bundle", "load", "read",
           "render"]

#: The bundle member, and sw-description's group naming it (``software.sbom``).
MEMBER = SBOM_MEMBER
SWDESC_KEY = "sbom"


@dataclass(frozen=True, order=True)
class Package:
    name: str
    version: str


@dataclass(frozen=True)
class Sbom:
    """A release's SPDX document (``spdx``) and what it says: the image and what that contains."""

    name: str
    spdx_version: str
    created: str
    creators: tuple[str, ...]
    image: Package
    packages: tuple[Package, ...]  # sorted by name, then version
    spdx: Mapping[str, Any]


@dataclass(frozen=True)
class Diff:
    added: tuple[Package, ...]
    removed: tuple[Package, ...]
    changed: tuple[tuple[Package, Package], ...]  # (old, new)


def _package(entry: Mapping[str, Any]) -> Package:
    return Package(str(entry.get("name", "")), str(entry.get("versionInfo", "")))


def read_chunks(chunks: Iterable[bytes]) -> Sbom:
    """The release document of the SBOM in ``chunks`` (a file's bytes, in order)."""
    merged = merge(documents(chunks), f"pyvorin-{__version__}")
    creators = merged.creation.get("creators")
    return Sbom(merged.name, str(merged.document.get("spdxVersion", "")), str(merged.creation.get("created", "")),
                tuple(c for c in creators if isinstance(c, str)) if isinstance(creators, list) else (),
                _package(merged.image), tuple(sorted(_package(p) for p in merged.contained)), merged.document)


def render(found: Sbom) -> bytes:
    """The release document as the bundle carries it."""
    return json.dumps(found.spdx, indent=1, sort_keys=True).encode() + b"\n"


def read(path: Path) -> Sbom:
    """The SBOM in the file ``path``: an SPDX JSON document or create-spdx's archive."""
    try:
        return read_chunks(file_chunks(path))
    except OSError as exc:
        raise SbomError(f"{path}: {exc.strerror or exc}") from exc
    except SbomError as exc:
        raise SbomError(f"{path}: {exc}") from exc


def member_name(description: Mapping[str, object]) -> str | None:
    """The SBOM's member as a bundle's sw-description names it."""
    software = description.get("software")
    entry = software.get(SWDESC_KEY) if isinstance(software, Mapping) else None
    name = entry.get("filename") if isinstance(entry, Mapping) else None
    return name if isinstance(name, str) else None


def from_bundle(bundle: OpenBundle) -> Sbom | None:
    """The SBOM a bundle carries (None if it has none), checked against its sha256 in sw-description."""
    description = bundle.description()
    name = member_name(description)
    if name is None:
        return None
    member = next((m for m in bundle.payloads if m.name == name), None)
    if member is None:
        raise SbomError(f"{bundle.path}: sw-description names the SBOM {name!r}, which the bundle lacks")
    digest = hashlib.sha256()

    def chunks() -> Iterator[bytes]:
        for chunk in member_chunks(bundle.handle, member):
            digest.update(chunk)
            yield chunk

    try:
        found = read_chunks(chunks())
    except SbomError as exc:
        raise SbomError(f"{bundle.path}: {name}: {exc}") from exc
    if image_hashes(description).get(name) != {digest.hexdigest()}:
        raise VerificationError(f"{bundle.path}: {name} does not match its sha256 in sw-description")
    return found


def load(path: Path) -> Sbom:
    """The SBOM of ``path``: a bundle's (.swu) or an SBOM file's."""
    with open(path, "rb") as handle:
        head = handle.read(len(MAGIC_CRC))
    if head not in (MAGIC_CRC, MAGIC_NEWC):
        return read(path)
    with open_bundle(path) as bundle:
        found = from_bundle(bundle)
    if found is None:
        raise SbomError(f"{path}: the bundle carries no SBOM (its release spec has no 'sbom')")
    return found


def diff(old: Sbom, new: Sbom) -> Diff:
    """Packages by name: added, removed, and those whose version changed."""
    before = {p.name: p for p in old.packages}
    after = {p.name: p for p in new.packages}
    return Diff(
        added=tuple(after[n] for n in sorted(after.keys() - before.keys())),
        removed=tuple(before[n] for n in sorted(before.keys() - after.keys())),
        changed=tuple((before[n], after[n]) for n in sorted(before.keys() & after.keys())
                      if before[n].version != after[n].version),
    )
