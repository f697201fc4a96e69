"""How one PATCH window is encoded and decoded: the delta's only codec seam.

A windowed delta records its codec by name in the header; the maker diffs each
window through ``Codec.diff`` (on the host, in a worker process) and the
applier rebuilds it through ``Codec.patch`` (on the device, one window at a
time, within the window caps of container.py). Everything else, planning,
COPY/ZERO operations, the container and its hashes, is the same for every
codec, so a second one (e.g. zstd ``--patch-from`` per window) is a class here
and a line in :data:`CODECS`, measured by bench/ without touching the rest.

Only the standard library at import: the device imports this module, and
bsdiff4 (host only) is imported by ``diff`` when it runs.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .container import DeltaError


class CodecError(DeltaError):
    """A window could not be encoded or decoded, or the codec is unknown."""


class Codec(Protocol):
    @property
    def name(self) -> str:
        """The name the delta header records."""

    def diff(self, source: bytes, target: bytes) -> bytes:
        """A patch turning *source* (the window's old extents, concatenated) into *target*."""

    def patch(self, source: Path, patch: Path, output: Path) -> None:
        """Write the window rebuilt from *source* and *patch* to *output*; raise CodecError on failure."""


@dataclass(frozen=True)
class Bsdiff:
    """BSDIFF40 windows: bsdiff4 on the host, the device's bspatch (recipes-support/bsdiff)."""

    bspatch: str = "bspatch"
    name: str = "bsdiff"

    def diff(self, source: bytes, target: bytes) -> bytes:
        import bsdiff4

        return bytes(bsdiff4.diff(source, target))

    def patch(self, source: Path, patch: Path, output: Path) -> None:
        try:
            result = subprocess.run([self.bspatch, str(source), str(output), str(patch)],
                                    capture_output=True, text=True, check=False)
        except OSError as exc:
            raise CodecError(f"{self.bspatch} cannot run: {exc.strerror or exc}") from exc
        if result.returncode != 0:
            raise CodecError(f"bspatch failed: {result.stderr.strip()}")


#: Codec name -> the codec that reads and writes it.
CODECS: dict[str, Codec] = {"bsdiff": Bsdiff()}
DEFAULT = "bsdiff"


def get(name: str, *, bspatch: str | None = None) -> Codec:
    """The codec called *name*; a delta naming another is refused before anything is written."""
    codec = CODECS.get(name)
    if codec is None:
        raise CodecError(f"unknown delta codec {name!r} (this applier knows: {', '.join(sorted(CODECS))})")
    if bspatch is not None and isinstance(codec, Bsdiff):
        return Bsdiff(bspatch=bspatch)
    return codec
