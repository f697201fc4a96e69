"""The fast cpio byte sum must equal the naive one, whatever the data."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from pyvorin.hashing import byte_sum, digest_chunks


@given(st.binary(max_size=300_000))
@settings(max_examples=60, deadline=None)
def test_byte_sum_matches_naive_sum(data: bytes) -> None:
    assert byte_sum(data) == sum(data)


def test_byte_sum_worst_case_slices() -> None:
    # All-0xFF data maximises each slice's sum: the CRT bound must still hold.
    for size in (65519, 65520, 65521, 3 * 65520 + 7):
        data = b"\xff" * size
        assert byte_sum(data) == 255 * size


@given(st.lists(st.binary(max_size=70_000), max_size=8))
@settings(max_examples=40, deadline=None)
def test_digest_chunks_equals_whole(chunks: list[bytes]) -> None:
    whole = b"".join(chunks)
    digest = digest_chunks(iter(chunks))
    assert digest.size == len(whole)
    assert digest.sha256 == hashlib.sha256(whole).hexdigest()
    assert digest.cpio_sum == sum(whole) & 0xFFFFFFFF


def test_cpio_sum_wraps_at_32_bits() -> None:
    # 17 MiB of 0xFF sums past 2**32: SWUpdate keeps a uint32_t, so must we.
    chunk = b"\xff" * (1 << 20)
    digest = digest_chunks(chunk for _ in range(17))
    assert digest.cpio_sum == (255 * 17 * (1 << 20)) & 0xFFFFFFFF
    assert digest.cpio_sum != 255 * 17 * (1 << 20)


def test_parallel_file_digest_equals_streamed(tmp_path) -> None:
    from pyvorin.hashing import PARALLEL_MIN_SIZE, digest_file, file_chunks

    path = tmp_path / "big.img"
    with open(path, "wb") as handle:  # 0xFF-heavy data wraps the 32-bit sum several times over
        handle.write(b"\xff" * PARALLEL_MIN_SIZE)
        handle.write(bytes(range(256)) * 4099)
    streamed = digest_chunks(file_chunks(path))
    for workers in (2, 3, 7):
        assert digest_file(path, workers=workers) == streamed
    assert streamed.cpio_sum == (255 * PARALLEL_MIN_SIZE + sum(range(256)) * 4099) & 0xFFFFFFFF
