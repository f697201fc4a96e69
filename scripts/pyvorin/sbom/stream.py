"""SPDX documents out of a byte stream: one JSON document, or create-spdx's
archive (``<image>.spdx.tar.zst``: a tar of documents and an ``index.json``).

The archive is decompressed by ``zstd -dc`` (oe-core's HOSTTOOLS have it;
so does every CI runner) and read as a tar stream: no member is written
anywhere, so names in it cannot escape. Each document (32 MiB), the whole
archive (512 MiB decompressed) and the number of documents are bounded, so a
hostile archive cannot exhaust memory or disk.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import tarfile
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from ..decompress import feed
from ..errors import PyvorinError

MAX_DOCUMENT = 32 * 1024 * 1024
MAX_ARCHIVE = 512 * 1024 * 1024
MAX_DOCUMENTS = 100_000
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class SbomError(PyvorinError):
    """The SBOM is not an SPDX document (or create-spdx archive) this can read."""


def kind(head: bytes) -> str:
    """``json``, ``tar.zst`` or ``tar``, from a file's first 512 bytes."""
    if head.startswith(ZSTD_MAGIC):
        return "tar.zst"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head.lstrip()[:1] == b"{":
        return "json"
    raise SbomError("neither an SPDX JSON document nor a create-spdx archive (.spdx.tar.zst)")


def parse(data: bytes, where: str) -> dict[str, Any]:
    """One SPDX 2 document (JSON), or SbomError naming ``where``."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise SbomError(f"{where}: not JSON ({type(exc).__name__})") from exc
    if not isinstance(doc, dict) or not str(doc.get("spdxVersion", "")).startswith("SPDX-2."):
        raise SbomError(f"{where}: not an SPDX 2 document (no spdxVersion SPDX-2.x)")
    if doc.get("SPDXID") != "SPDXRef-DOCUMENT" or not isinstance(doc.get("documentNamespace"), str):
        raise SbomError(f"{where}: an SPDX document needs SPDXID SPDXRef-DOCUMENT and a documentNamespace")
    return doc


class _Bounded:
    """A binary reader that refuses to yield more than ``limit`` bytes in total, saying ``too_large``."""

    def __init__(self, raw: Any, limit: int = MAX_ARCHIVE,
                 too_large: str = f"the archive is larger than {MAX_ARCHIVE >> 20} MiB once decompressed") -> None:
        self.raw, self.left, self.too_large = raw, limit, too_large

    def read(self, size: int = -1) -> bytes:
        want = self.left + 1 if size is None or size < 0 else min(size, self.left + 1)
        data: bytes = self.raw.read(want)
        self.left -= len(data)
        if self.left < 0:
            raise SbomError(self.too_large)
        return data


class _ChunkReader:
    """``read()`` over an iterable of byte chunks, copying each byte once (tarfile reads 10 KiB at a time)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks, self.current, self.at = iter(chunks), b"", 0

    def read(self, size: int = -1) -> bytes:
        pieces = []
        while size != 0:
            if self.at >= len(self.current):
                chunk = next(self.chunks, None)
                if chunk is None:
                    break
                self.current, self.at = chunk, 0
                continue
            end = len(self.current) if size < 0 else min(len(self.current), self.at + size)
            pieces.append(self.current[self.at:end])
            size = size - (end - self.at) if size > 0 else size
            self.at = end
        return b"".join(pieces)


class _Unreadable(SbomError):
    """Not a tar stream: zstd may have a better reason (its input was not zstd)."""


def _drain(raw: Any) -> None:
    rest = _Bounded(raw)
    while rest.read(1 << 20):
        pass


def _tar_documents(stream: Any) -> Iterator[tuple[str, bytes]]:
    count = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if not member.isfile() or member.name == "index.json":
                    continue
                count += 1
                if count > MAX_DOCUMENTS:
                    raise SbomError(f"more than {MAX_DOCUMENTS} documents in the archive")
                if member.size > MAX_DOCUMENT:
                    raise SbomError(f"{member.name!r}: {member.size} bytes, over the "
                                    f"{MAX_DOCUMENT // (1024 * 1024)} MiB a document may have")
                handle = tar.extractfile(member)
                assert handle is not None
                yield member.name, handle.read()
    except tarfile.TarError as exc:
        raise _Unreadable(f"not a readable tar archive ({exc})") from exc


def _zstd_documents(chunks: Iterable[bytes]) -> Iterator[tuple[str, bytes]]:
    try:
        zstd = subprocess.Popen(["zstd", "-dc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except FileNotFoundError as exc:
        raise SbomError("zstd is not installed (apt install zstd): it reads create-spdx's .spdx.tar.zst") from exc
    assert zstd.stdin is not None and zstd.stdout is not None and zstd.stderr is not None
    failures: list[BaseException] = []
    feeder = threading.Thread(target=feed, args=(chunks, zstd.stdin, failures), daemon=True)
    feeder.start()

    def failed() -> SbomError | None:
        """What zstd said, once it has exited non-zero (garbage in: the tar reader sees nothing)."""
        status = zstd.wait(timeout=60)
        if status == 0:
            return None
        error = zstd.stderr.read().decode(errors="replace").strip().splitlines()  # type: ignore[union-attr]
        return SbomError(f"not a zstd stream: {error[-1] if error else f'zstd exited {status}'}")

    try:
        try:
            yield from _tar_documents(_Bounded(zstd.stdout))
        except _Unreadable as exc:
            _drain(zstd.stdout)
            raise failed() or exc from exc
        # The tar's end-of-archive blocks may be followed by padding: drain it within the bound.
        _drain(zstd.stdout)
        problem = failed()
        if problem:
            raise problem
    except BaseException:
        zstd.kill()  # an error, a bound or a reader that stopped early: nothing more is wanted
        zstd.wait()
        raise
    finally:
        zstd.stdout.close()
        feeder.join(timeout=10)
        zstd.stderr.close()
    if failures:
        raise failures[0]


def documents(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Each SPDX document in ``chunks`` (a file's bytes, in order), parsed, one at a time."""
    rest = iter(chunks)
    head = b""
    while len(head) < 512:
        chunk = next(rest, None)
        if chunk is None:
            break
        head += chunk
    form = kind(head)
    stream = itertools.chain([head], rest)
    if form == "json":
        whole = _Bounded(_ChunkReader(stream), MAX_DOCUMENT, f"the document is over {MAX_DOCUMENT >> 20} MiB")
        yield parse(whole.read(), "the document")
        return
    named = _zstd_documents(stream) if form == "tar.zst" else _tar_documents(_Bounded(_ChunkReader(stream)))
    for name, data in named:
        yield parse(data, repr(name))
