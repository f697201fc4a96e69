"""How one PATCH window is encoded and decoded: the delta's only codec seam.

A windowed delta records its codec by name in the header; the maker diffs each
window through ``Codec.diff`` (on the host, in a worker process) and the
applier rebuilds it through ``Codec.patch`` (on the device, one window at a
time, within the window caps of container.py). Everything else, planning,
COPY/ZERO operations, the container and its hashes, is the same for every
codec, so another one is a class here and a line in :data:`CODECS`, measured
by bench/ without touching the rest.

Three codecs: ``bsdiff`` (BSDIFF40, the smallest patches where new bytes are
old ones slightly changed, as relinked binaries are, but its suffix sort makes
it slow), ``zstd`` (zstd ``--patch-from`` with the window's source as the
reference: an order of magnitude faster, larger where bsdiff's approximate
matches count) and the default ``bsdiff+zstd``: every window in zstd, and in
bsdiff too only where bsdiff can win, the smaller kept (bench/DELTA.md has the
numbers that chose the bounds). Each patch starts with its format's magic, so
the applier needs no table of which window is which.

Only the standard library at import: the device imports this module, and
bsdiff4 (host only) is imported by ``diff`` when it runs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
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

    @property
    def tools(self) -> tuple[str, ...]:
        """The programs ``patch`` runs: the applier finds them all before it touches a slot."""

    def check_host(self) -> None:
        """Raise CodecError when ``diff`` cannot run here (a module or program missing)."""


BSDIFF_MAGIC = b"BSDIFF40"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: zstd's decoder may use this much for one window: the source (at most 8 MiB)
#: and the window (4 MiB) are its reference and output (container.py's caps).
ZSTD_DECODE_MEMORY = "32MB"


def _run(argv: list[str], what: str) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise CodecError(f"{argv[0]} cannot run: {exc.strerror or exc}") from exc
    if result.returncode != 0:
        raise CodecError(f"{what} failed: {result.stderr.strip()}")


@dataclass(frozen=True)
class Bsdiff:
    """BSDIFF40 windows: bsdiff4 on the host, the device's bspatch (recipes-support/bsdiff)."""

    bspatch: str = "bspatch"
    name: str = "bsdiff"

    def diff(self, source: bytes, target: bytes) -> bytes:
        import bsdiff4

        return bytes(bsdiff4.diff(source, target))

    def patch(self, source: Path, patch: Path, output: Path) -> None:
        _run([self.bspatch, str(source), str(output), str(patch)], "bspatch")

    @property
    def tools(self) -> tuple[str, ...]:
        return (self.bspatch,)

    def check_host(self) -> None:
        try:
            import bsdiff4  # noqa: F401
        except ImportError as exc:
            raise CodecError("bsdiff needs the bsdiff4 package: pip install 'pyvorin[delta]'") from exc


@dataclass(frozen=True)
class Zstd:
    """zstd frames compressed with the window's source as reference (``zstd --patch-from``).

    Level 12: on the benchmark pair every window together takes 5 s of CPU
    (bsdiff: 47 s) for 19 % more bytes; level 19 takes as long as bsdiff."""

    zstd: str = "zstd"
    level: int = 12
    name: str = "zstd"

    def diff(self, source: bytes, target: bytes) -> bytes:
        with tempfile.TemporaryDirectory(prefix="pyvorin-zstd-") as tmp:
            old, new, out = (Path(tmp) / name for name in ("source", "target", "patch"))
            old.write_bytes(source)
            new.write_bytes(target)
            # One thread: the workers are the parallelism, and the bytes are the same every run.
            _run([self.zstd, "-q", "-f", "--no-progress", "--single-thread", f"-{self.level}",
                  f"--patch-from={old}", str(new), "-o", str(out)], "zstd")
            return out.read_bytes()

    def patch(self, source: Path, patch: Path, output: Path) -> None:
        _run([self.zstd, "-q", "-f", "-d", "--no-progress", f"--memory={ZSTD_DECODE_MEMORY}",
              f"--patch-from={source}", str(patch), "-o", str(output)], "zstd")

    @property
    def tools(self) -> tuple[str, ...]:
        return (self.zstd,)

    def check_host(self) -> None:
        if shutil.which(self.zstd) is None:
            raise CodecError(f"zstd windows need {self.zstd} (apt-get install zstd)")


@dataclass(frozen=True)
class Smallest:
    """Each window as the smaller of its zstd and bsdiff patches; bsdiff only where it can win.

    zstd runs first. Where its patch is under ``low`` of the window the window
    is nearly its source, and bsdiff would save a few hundred bytes for most
    of its time; over ``high`` the bytes are new (compressed files, fresh
    tables), and neither finds much. In between, where bsdiff's approximate
    matches pay (code moved by a relink), both run and the smaller is kept.
    On the benchmark pair, by zstd's share of the window: under 5 % bsdiff
    saved 275 KB (5 %) for 33 s of CPU, 5-30 % it saved 725 KB for 13 s,
    over 30 % nothing; so the delta is within 3 % of bsdiff alone for a
    third of its CPU time (bench/DELTA.md)."""

    bsdiff: Bsdiff = field(default_factory=Bsdiff)
    zstd: Zstd = field(default_factory=Zstd)
    low: float = 0.05
    high: float = 0.30
    name: str = "bsdiff+zstd"

    def diff(self, source: bytes, target: bytes) -> bytes:
        patch = self.zstd.diff(source, target)
        if self.low * len(target) <= len(patch) <= self.high * len(target):
            other = self.bsdiff.diff(source, target)
            if len(other) < len(patch):
                return other
        return patch

    def patch(self, source: Path, patch: Path, output: Path) -> None:
        with open(patch, "rb") as handle:
            magic = handle.read(len(BSDIFF_MAGIC))
        if magic == BSDIFF_MAGIC:
            self.bsdiff.patch(source, patch, output)
        elif magic.startswith(ZSTD_MAGIC):
            self.zstd.patch(source, patch, output)
        else:
            raise CodecError("the window's patch is neither BSDIFF40 nor a zstd frame")

    @property
    def tools(self) -> tuple[str, ...]:
        return (*self.bsdiff.tools, *self.zstd.tools)

    def check_host(self) -> None:
        self.bsdiff.check_host()
        self.zstd.check_host()


#: Codec name -> the codec that reads and writes it.
CODECS: dict[str, Codec] = {"bsdiff": Bsdiff(), "zstd": Zstd(), "bsdiff+zstd": Smallest()}
DEFAULT = "bsdiff+zstd"


def get(name: str, *, bspatch: str | None = None) -> Codec:
    """The codec called *name*; a delta naming another is refused before anything is written."""
    codec = CODECS.get(name)
    if codec is None:
        raise CodecError(f"unknown delta codec {name!r} (this applier knows: {', '.join(sorted(CODECS))})")
    if bspatch is not None and isinstance(codec, Bsdiff):
        return replace(codec, bspatch=bspatch)
    if bspatch is not None and isinstance(codec, Smallest):
        return replace(codec, bsdiff=replace(codec.bsdiff, bspatch=bspatch))
    return codec
