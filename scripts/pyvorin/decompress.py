"""Decompressing a payload in a stream, as the device will: gzip (SWUpdate's ``zlib``) and zstd.

Every function takes the compressed bytes as chunks and yields the
decompressed bytes in pieces of at most :data:`CHUNK`, never more at once
(zlib's ``max_length``; zstd runs as ``zstd -dcq`` in a pipe), so a highly
compressible input never expands in memory. How much a caller takes is its
own bound: it stops reading, and the generator's cleanup stops the work.
"""

from __future__ import annotations

import subprocess
import threading
import zlib
from collections.abc import Generator, Iterable, Iterator
from typing import IO

from .errors import BundleError
from .hashing import CHUNK

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class DecompressError(BundleError):
    """A compressed payload does not decompress (not that format, truncated, corrupt)."""


def gunzip(chunks: Iterable[bytes], what: str, *, every_member: bool = False) -> Generator[bytes, None, None]:
    """The first gzip member, as SWUpdate's zlib step writes it (it stops at that member's end); with
    ``every_member`` all of them, zero padding between them skipped, as the kernel reads an initramfs."""
    inflater: zlib._Decompress | None = zlib.decompressobj(_GZIP_WBITS)
    try:
        for chunk in chunks:
            data = chunk
            while data:
                if inflater is None:
                    data = data.lstrip(b"\0")
                    if not data:
                        break
                    inflater = zlib.decompressobj(_GZIP_WBITS)
                out = inflater.decompress(data, CHUNK)
                if out:
                    yield out
                if inflater.eof:
                    if not every_member:
                        return
                    data, inflater = inflater.unused_data, None
                else:
                    data = inflater.unconsumed_tail
        if inflater is not None:
            if tail := inflater.flush():
                yield tail
            if not inflater.eof:
                raise DecompressError(f"{what}: the gzip stream is truncated (it ends inside a member)")
    except zlib.error as exc:
        raise DecompressError(f"{what}: not a valid gzip stream ({exc})") from exc


def feed(chunks: Iterable[bytes], sink: IO[bytes], failures: list[BaseException]) -> None:
    """Write ``chunks`` into a child process's stdin from a thread, then close it; an exception
    goes to ``failures`` for the reading thread to raise."""
    try:
        for chunk in chunks:
            sink.write(chunk)
    except BrokenPipeError:
        pass  # zstd stopped reading: its exit status says why, or the reader stopped it
    except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
        failures.append(exc)
    finally:
        try:
            sink.close()
        except BrokenPipeError:
            pass


def unzstd(chunks: Iterable[bytes], what: str) -> Generator[bytes, None, None]:
    """Every zstd frame, decompressed by ``zstd -dcq`` (as SWUpdate's zstd step writes them all)."""
    try:
        zstd = subprocess.Popen(["zstd", "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except FileNotFoundError as exc:
        raise DecompressError(f"{what}: zstd is not installed (apt install zstd): it decompresses the image") from exc
    assert zstd.stdin is not None and zstd.stdout is not None and zstd.stderr is not None
    failures: list[BaseException] = []
    # A thread feeds zstd while this one reads it: either alone could block on a full pipe.
    feeder = threading.Thread(target=feed, args=(chunks, zstd.stdin, failures), daemon=True)
    feeder.start()
    finished = False
    try:
        while data := zstd.stdout.read(CHUNK):
            yield data
        finished = True
    finally:
        if not finished:
            zstd.kill()  # an error, or a reader that took what it needed: nothing more is wanted
        status = zstd.wait()
        zstd.stdout.close()
        feeder.join()
        # -q: zstd says one line at most, so its stderr cannot have filled the pipe meanwhile.
        reason = zstd.stderr.read().decode(errors="replace").strip().splitlines()
        zstd.stderr.close()
    if failures:
        raise failures[0]
    if status:
        raise DecompressError(f"{what}: zstd cannot decompress it: {reason[-1] if reason else f'exit {status}'}")


def peek(chunks: Iterable[bytes], size: int) -> tuple[bytes, Generator[bytes, None, None]]:
    """The first ``size`` bytes of ``chunks`` (fewer if it is shorter), and the whole stream again,
    those bytes included: for telling a format by its magic before reading it."""
    source = iter(chunks)
    head = b""
    while len(head) < size and (chunk := next(source, None)) is not None:
        head += chunk
    return head[:size], _prepend(head, source)


def _prepend(head: bytes, rest: Iterator[bytes]) -> Generator[bytes, None, None]:
    if head:
        yield head
    yield from rest


def _plain(chunks: Iterable[bytes]) -> Generator[bytes, None, None]:
    yield from chunks


def decompressed(chunks: Iterable[bytes], compression: str, what: str) -> Generator[bytes, None, None]:
    """``chunks`` as the device writes them: ``compression`` is sw-description's (none, zlib, zstd).
    A generator: closing it stops the decompressor (``zstd`` is killed)."""
    if compression == "zlib":
        return gunzip(chunks, what)
    if compression == "zstd":
        return unzstd(chunks, what)
    if compression == "none":
        return _plain(chunks)
    raise DecompressError(f"{what}: compression {compression!r} is not one this tool reads (zlib, zstd)")
