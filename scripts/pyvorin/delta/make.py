"""Building a windowed delta: classify blocks, then diff only changed windows.

One pass indexes the old image's blocks (8-byte BLAKE2b per 4 KiB block) and
hashes it; a second pass walks the new image block by block against that
index: a block equal to the old one at the same offset, or to any old block,
becomes a COPY; an all-zero block a ZERO; the rest gather into windows of at
most ``window`` bytes, each diffed by the delta's codec (codec.py) against a short list of old
extents where its content most likely came from (the same offset, and where
its neighbours were found), with long zero runs cut out of that source (the
suffix sort of bsdiff degrades badly on them).  Windows are diffed by worker
processes, as many as the memory budget allows, while results are written in
order.
"""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing
import os
import sys
import tempfile
from array import array
from bisect import bisect_left
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import PyvorinError
from ..fsutil import atomic_output
from . import codec
from .container import MAX_WINDOW, MAX_WINDOW_SOURCE, Copy, DeltaWriter, Header, Op, Patch, Zero

BLOCK = 4096
WINDOW = MAX_WINDOW  # new bytes per bsdiff window (the format's cap)
# Old bytes around the same offset taken as a source, at most and at least.
# Wider margins cost suffix-sort time for nothing: on the benchmark pair
# 1 MiB/256 KiB gave the same delta (to 0.02 %) in 2.4x the time.
PAD = 256 << 10
MIN_PAD = 64 << 10
GAP = 256 << 10  # unchanged bytes between changed runs that still join one window
MAX_SOURCE = MAX_WINDOW_SOURCE  # old bytes per window at most (bsdiff memory is 17x this)
ZERO_RUN = 64 << 10  # zero runs this long are cut out of a source
# bsdiff4 needs 16 bytes of suffix array per source byte, the source, the
# target and two target-sized buffers; plus the interpreter.
WORKER_BYTES = 17 * MAX_SOURCE + 3 * WINDOW + (24 << 20)
DIGEST_BITS = 40
BLOCK_NUMBER_BITS = 24
MAX_OLD = BLOCK << BLOCK_NUMBER_BITS  # 64 GiB
# The main interpreter, op list and buffers, and multiprocessing's resource
# tracker; plus 8 bytes per old block for the index.
MAIN_BYTES = 64 << 20
CHUNK = 1 << 20
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
_ZERO_BLOCK = bytes(BLOCK)


@dataclass(frozen=True)
class DeltaReport:
    old_size: int
    new_size: int
    delta_size: int
    copy_bytes: int
    zero_bytes: int
    patched_bytes: int
    windows: int
    workers: int


@dataclass(frozen=True)
class _Window:
    """A changed range of the new image and the old extents to diff it against."""

    new_off: int
    length: int
    extents: tuple[tuple[int, int], ...] = ()
    hints: tuple[int, ...] = ()  # old offsets where neighbouring content was found


def _digest(block: bytes | memoryview) -> int:
    return int.from_bytes(hashlib.blake2b(block, digest_size=8).digest(), "big")


class BlockIndex:
    """Where each distinct non-zero 4 KiB block of the old image first occurs.

    8 bytes per block (2 MiB per GiB of old image) instead of the ~100 of a
    dict: a 40-bit digest above a 24-bit block number, in 256 sorted arrays
    chosen by the digest's top byte, so sorting never holds more than 1/256
    of the keys as Python objects.  A digest collision only costs a lookup:
    every hit is compared byte for byte before it is used.
    """

    _SHIFT = 64 - DIGEST_BITS

    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(256)]

    def add(self, digest: int, offset: int) -> None:
        key = digest >> self._SHIFT
        self._buckets[key >> (DIGEST_BITS - 8)].append(key << BLOCK_NUMBER_BITS | offset // BLOCK)

    def freeze(self) -> None:
        for i, bucket in enumerate(self._buckets):
            self._buckets[i] = array("Q", sorted(bucket))

    def find(self, digest: int) -> int | None:
        """Old offset of the first block with this digest, or None."""
        key = digest >> self._SHIFT
        bucket = self._buckets[key >> (DIGEST_BITS - 8)]
        at = bisect_left(bucket, key << BLOCK_NUMBER_BITS)
        if at < len(bucket) and bucket[at] >> BLOCK_NUMBER_BITS == key:
            return (bucket[at] & (1 << BLOCK_NUMBER_BITS) - 1) * BLOCK
        return None

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets)


def _index_old(path: Path, size: int) -> tuple[BlockIndex, str]:
    if size > MAX_OLD:
        raise PyvorinError(f"{path}: {size} bytes; the block index covers images up to {MAX_OLD >> 30} GiB")
    index = BlockIndex()
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        offset = 0
        while data := handle.read(CHUNK):
            sha.update(data)
            view = memoryview(data)
            for start in range(0, len(data) - BLOCK + 1, BLOCK):
                block = view[start : start + BLOCK]
                if block != _ZERO_BLOCK:
                    index.add(_digest(block), offset + start)
            offset += len(data)
    if offset != size:
        raise PyvorinError(f"{path}: changed size while it was read")
    index.freeze()
    return index, sha.hexdigest()


def _zero_free(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """Extents of [start, end) of the old image without zero runs of ZERO_RUN or more."""
    extents: list[tuple[int, int]] = []
    run_start = start
    zero_from: int | None = None
    position = start
    while position < end:
        block = os.pread(fd, min(BLOCK, end - position), position)
        if not block:
            break
        if block == _ZERO_BLOCK[: len(block)]:
            zero_from = position if zero_from is None else zero_from
        else:
            if zero_from is not None and position - zero_from >= ZERO_RUN:
                if zero_from > run_start:
                    extents.append((run_start, zero_from - run_start))
                run_start = position
            zero_from = None
        position += len(block)
    stop = zero_from if zero_from is not None and position - zero_from >= ZERO_RUN else position
    if stop > run_start:
        extents.append((run_start, stop - run_start))
    return extents


def _source_for(fd: int, old_size: int, new_off: int, length: int, hints: list[int]) -> tuple[tuple[int, int], ...]:
    """Old extents to diff new[new_off:+length] against, at most MAX_SOURCE bytes.

    The budget goes to the likeliest origins first: the same offset (in-place
    edits), then where the neighbouring blocks were found, in that order; the
    chosen extents are then laid out by old offset.
    """
    # A small window needs little context: in-place edits stay in place.
    pad = min(PAD, max(MIN_PAD, length))
    taken: list[tuple[int, int]] = []
    total = 0
    for centre in dict.fromkeys([new_off, *hints]):
        start = max(0, min(centre, old_size) - pad)
        end = min(old_size, centre + length + pad)
        for lo, hi in _subtract((start, end), taken):
            for off, ln in _zero_free(fd, lo, hi):
                take = min(ln, MAX_SOURCE - total)
                if take <= 0:
                    return tuple(_merge_extents(taken))
                taken.append((off, off + take))
                total += take
    return tuple(_merge_extents(taken))


def _subtract(span: tuple[int, int], taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Parts of ``span`` not covered by any range in ``taken``."""
    parts = [span]
    for t_start, t_end in taken:
        parts = [piece for lo, hi in parts
                 for piece in ((lo, min(hi, t_start)), (max(lo, t_end), hi)) if piece[1] > piece[0]]
    return parts


def _merge_extents(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, end) ranges -> sorted, joined (offset, length) extents."""
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end - start) for start, end in merged if end > start]


def _worker_init() -> None:
    """Make a worker hand freed bsdiff buffers straight back to the system.

    glibc raises its mmap threshold after each large free, up to 32 MiB, so
    the next windows' buffers come from a heap that fragments: measured 223
    MiB peak for a worker instead of the 172 MiB the buffers need.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator decides


def _diff_window(old_path: str, new_path: str, window: _Window, codec_name: str) -> bytes:
    """Runs in a worker: diff the window against its concatenated old extents with the delta's codec."""
    with open(old_path, "rb") as old, open(new_path, "rb") as new:
        source = b"".join(os.pread(old.fileno(), ln, off) for off, ln in window.extents)
        target = os.pread(new.fileno(), window.length, window.new_off)
    return codec.get(codec_name).diff(source, target)


def _plan(old_path: Path, new_path: Path, index: BlockIndex, old_size: int,
          new_size: int) -> tuple[list[Copy | Zero | _Window], str]:
    """Walk the new image; return ops (windows still to diff) and its SHA-256."""
    plan: list[Copy | Zero | _Window] = []
    sha = hashlib.sha256()
    changed_start: int | None = None

    def flush_changed(end: int) -> None:
        nonlocal changed_start
        if changed_start is None:
            return
        before = plan[-1] if plan else None
        hints = []
        if isinstance(before, Copy) and before.old_off != before.new_off:
            hints.append(before.old_off + before.length)
        for start in range(changed_start, end, WINDOW):
            plan.append(_Window(start, min(WINDOW, end - start), hints=tuple(hints)))
        changed_start = None

    def add(op: Copy | Zero) -> None:
        last = plan[-1] if plan else None
        if isinstance(op, Zero) and isinstance(last, Zero):
            plan[-1] = Zero(last.new_off, last.length + op.length)
        elif isinstance(op, Copy) and isinstance(last, Copy) and last.old_off + last.length == op.old_off:
            plan[-1] = Copy(last.new_off, last.length + op.length, last.old_off)
        else:
            plan.append(op)

    with open(old_path, "rb") as old, open(new_path, "rb") as new:
        old_fd = old.fileno()
        offset = 0
        while data := new.read(CHUNK):
            sha.update(data)
            view = memoryview(data)
            for start in range(0, len(data), BLOCK):
                block = view[start : start + BLOCK]
                position = offset + start
                op: Copy | Zero | None = None
                last = plan[-1] if plan and changed_start is None else None
                # Prefer continuing the previous copy, then the same offset:
                # long contiguous copies keep the op list (and the delta) short.
                follow = last.old_off + last.length if isinstance(last, Copy) else -1
                if 0 <= follow and follow + len(block) <= old_size and os.pread(old_fd, len(block), follow) == block:
                    op = Copy(position, len(block), follow)
                elif position + len(block) <= old_size and os.pread(old_fd, len(block), position) == block:
                    op = Copy(position, len(block), position)
                elif block == _ZERO_BLOCK[: len(block)]:
                    op = Zero(position, len(block))
                elif len(block) == BLOCK:
                    found = index.find(_digest(block))
                    if found is not None and os.pread(old_fd, BLOCK, found) == block:
                        op = Copy(position, BLOCK, found)
                if op is None:
                    if changed_start is None:
                        changed_start = position
                    continue
                flush_changed(position)
                add(op)
            offset += len(data)
        flush_changed(offset)
        if offset != new_size:
            raise PyvorinError(f"{new_path}: changed size while it was read")
        plan = _coalesce(plan)
        # Now that every neighbour is known, pick each window's old source.
        for i, item in enumerate(plan):
            if isinstance(item, _Window):
                hints = list(item.hints)
                after = plan[i + 1] if i + 1 < len(plan) else None
                if isinstance(after, Copy) and after.old_off != after.new_off:
                    hints.append(max(0, after.old_off - item.length))
                extents = _source_for(old_fd, old_size, item.new_off, item.length, hints)
                plan[i] = _Window(item.new_off, item.length, extents)
    return plan, sha.hexdigest()


def _coalesce(plan: list[Copy | Zero | _Window]) -> list[Copy | Zero | _Window]:
    """Join changed runs separated by short unchanged stretches into one window.

    Many tiny windows cost a bsdiff start-up and a source each; one window of
    up to WINDOW bytes with a few unchanged blocks inside costs less, and
    bsdiff encodes the unchanged blocks almost for free.
    """
    out: list[Copy | Zero | _Window] = []
    i = 0
    while i < len(plan):
        item = plan[i]
        if not isinstance(item, _Window):
            out.append(item)
            i += 1
            continue
        start, end, hints = item.new_off, item.new_off + item.length, list(item.hints)
        j = i + 1
        while j < len(plan):
            gap_end = j
            gap = 0
            while gap_end < len(plan) and not isinstance(plan[gap_end], _Window):
                gap += plan[gap_end].length
                gap_end += 1
            if gap_end >= len(plan) or gap > GAP:
                break
            following = plan[gap_end]
            if following.new_off + following.length - start > WINDOW:
                break
            end = following.new_off + following.length
            hints.extend(following.hints)  # type: ignore[union-attr]
            j = gap_end + 1
        out.append(_Window(start, end - start, hints=tuple(dict.fromkeys(hints))))
        i = j
    return out


def main_bytes(old_size: int) -> int:
    """Memory of the main process: fixed, plus the block index."""
    return MAIN_BYTES + 8 * (old_size // BLOCK)


def workers_for(memory: int, old_size: int = 0) -> int:
    """Worker processes that fit the budget beside the main process."""
    needed = main_bytes(old_size) + WORKER_BYTES
    if memory < needed:
        raise PyvorinError(f"--memory {memory >> 20} MiB is too small: at least {-(-needed >> 20)} MiB")
    return max(1, min(os.cpu_count() or 1, (memory - main_bytes(old_size)) // WORKER_BYTES))


def _size(path: Path) -> int:
    # st_size is 0 for a block device: ask the file itself.
    with open(path, "rb") as handle:
        return handle.seek(0, os.SEEK_END)


def make_delta(old: Path, new: Path, output: Path, memory: int = 1 << 30,
               progress: Callable[[int, int], None] | None = None, codec_name: str = codec.DEFAULT) -> DeltaReport:
    """Write a windowed delta turning ``old`` into ``new``; memory stays under ``memory``."""
    codec.get(codec_name).check_host()
    for path in (old, new):
        if not path.is_file() and not path.is_block_device():
            raise PyvorinError(f"{path}: not found or not a file")
    if not output.parent.is_dir():
        raise PyvorinError(f"{output}: its directory {output.parent} does not exist")
    old_size, new_size = _size(old), _size(new)
    workers = workers_for(memory, old_size)
    # Spawned, not forked: a worker starts as a fresh interpreter instead of
    # a copy of this process's pages, so its memory is the codec's alone.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
        try:
            # The workers start (an interpreter each, importing the codec)
            # while this process indexes and plans.
            warm = [pool.submit(_warm_up, codec_name) for _ in range(workers)]
            index, old_sha = _index_old(old, old_size)
            plan, new_sha = _plan(old, new, index, old_size, new_size)
            del index
            for future in warm:
                future.result()
            windows = [p for p in plan if isinstance(p, _Window)]
            header = Header(BLOCK, old_size, new_size, old_sha, new_sha, len(plan), codec_name)
            with tempfile.TemporaryFile(prefix=".pyvorin-delta-", dir=output.parent) as spool:
                spans = _diff_all(pool, old, new, windows, codec_name, spool, progress)
                with atomic_output(output) as handle:
                    writer = DeltaWriter(handle, header)
                    at = iter(spans)
                    for item in plan:
                        if isinstance(item, _Window):
                            offset, length = next(at)
                            spool.seek(offset)
                            op: Op = Patch(item.new_off, item.length, item.extents, spool.read(length))
                        else:
                            op = item
                        writer.add(op)
                    writer.finish()
        except BaseException:
            # Queued windows are not worth waiting for once one has failed.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return DeltaReport(old_size, new_size, output.stat().st_size, sum(p.length for p in plan if isinstance(p, Copy)),
                       sum(p.length for p in plan if isinstance(p, Zero)), sum(w.length for w in windows),
                       len(windows), workers)


def _warm_up(codec_name: str) -> None:
    """Runs in a worker: import what the codec needs before the first window."""
    codec.get(codec_name).check_host()


def _diff_all(pool: ProcessPoolExecutor, old: Path, new: Path, windows: list[_Window], codec_name: str,
              spool: BinaryIO, progress: Callable[[int, int], None] | None) -> list[tuple[int, int]]:
    """Diff every window; return where each one's patch lies in *spool*, in window order.

    The costliest windows go first, so the last to finish is a short one and
    no worker idles while another finishes a big window; each patch goes to
    the spool file as it arrives, so this process holds one at a time however
    the results come back (writing them in order from memory held up to all
    of them)."""
    order = sorted(range(len(windows)), key=lambda i: -(windows[i].length + sum(n for _, n in windows[i].extents)))
    futures = {pool.submit(_diff_window, str(old), str(new), windows[i], codec_name): i for i in order}
    spans = [(0, 0)] * len(windows)
    for done, future in enumerate(as_completed(futures), 1):
        patch = future.result()
        spans[futures[future]] = (spool.seek(0, os.SEEK_END), len(patch))
        spool.write(patch)
        del patch
        if progress:
            progress(done, len(windows))
    return spans


def terminal_progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        width = 30
        filled = width * done // max(total, 1)
        sys.stderr.write(f"\r  diffing windows [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
