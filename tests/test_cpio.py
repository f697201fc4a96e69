"""Our cpio writer and reader against GNU cpio, the reference implementation."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvorin import cpio
from pyvorin.errors import BundleError
from pyvorin.hashing import byte_sum

from helpers import require


def _archive(members: list[tuple[str, bytes]], mtime: int = 0) -> bytes:
    out = io.BytesIO()
    writer = cpio.CpioWriter(out, mtime=mtime)
    for name, data in members:
        writer.add_bytes(name, data, byte_sum(data))
    writer.finish()
    return out.getvalue()


def test_gnu_cpio_extracts_our_archive_and_checks_crc(tmp_path: Path) -> None:
    require("cpio")
    members = [("sw-description", b"software = {};\n"), ("a.img", os.urandom(5000)), ("b", b"")]
    (tmp_path / "x.cpio").write_bytes(_archive(members))
    out = tmp_path / "out"
    out.mkdir()
    with open(tmp_path / "x.cpio", "rb") as handle:
        # GNU cpio verifies the 070702 checksum on extraction and fails loudly on mismatch.
        result = subprocess.run(["cpio", "-idv"], stdin=handle, cwd=out, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "checksum error" not in result.stderr
    for name, data in members:
        assert (out / name).read_bytes() == data
    with open(tmp_path / "x.cpio", "rb") as handle:
        listing = subprocess.run(["cpio", "-itv"], stdin=handle, capture_output=True, text=True)
    assert [line.split()[-1] for line in listing.stdout.splitlines()] == [n for n, _ in members]
    assert all(" root " in line for line in listing.stdout.splitlines())


def test_gnu_cpio_detects_a_wrong_checksum(tmp_path: Path) -> None:
    require("cpio")
    archive = bytearray(_archive([("a", b"hello world")]))
    data_at = archive.index(b"hello world")
    archive[data_at] ^= 0x01
    (tmp_path / "bad.cpio").write_bytes(archive)
    with open(tmp_path / "bad.cpio", "rb") as handle:
        result = subprocess.run(["cpio", "-id"], stdin=handle, cwd=tmp_path, capture_output=True, text=True)
    assert "checksum error" in result.stderr


def test_we_read_what_gnu_cpio_writes(tmp_path: Path) -> None:
    require("cpio")
    src = tmp_path / "src"
    src.mkdir()
    (src / "sw-description").write_bytes(b"x" * 7)
    (src / "rootfs.img").write_bytes(os.urandom(70001))
    result = subprocess.run(["cpio", "-o", "-H", "crc"], input=b"sw-description\nrootfs.img\n", cwd=src,
                            capture_output=True, check=True)
    data = result.stdout
    members = list(cpio.iter_members(io.BytesIO(data), len(data)))
    assert [m.name for m in members] == ["sw-description", "rootfs.img"]
    for member in members:
        content = (src / member.name).read_bytes()
        assert member.size == len(content)
        assert member.crc and member.checksum == sum(content) & 0xFFFFFFFF
        assert cpio.read_member(io.BytesIO(data), member, limit=1 << 20) == content


@given(st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9._-]{0,20}", fullmatch=True), st.binary(max_size=3000)),
                max_size=6, unique_by=lambda m: m[0]))
@settings(max_examples=50, deadline=None)
def test_roundtrip(members: list[tuple[str, bytes]]) -> None:
    data = _archive(members)
    assert len(data) % 512 == 0
    parsed = list(cpio.iter_members(io.BytesIO(data), len(data)))
    assert [(m.name, cpio.read_member(io.BytesIO(data), m)) for m in parsed] == members


def test_same_input_same_bytes() -> None:
    members = [("sw-description", b"abc"), ("img", b"\x00" * 1000)]
    assert _archive(members) == _archive(members)
    assert _archive(members, mtime=1700000000) != _archive(members)


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "..", "/abs", "-rf", "a\\b", "bell\x07"])
def test_hostile_member_names_are_refused(name: str) -> None:
    head = cpio.header(1, cpio.REG_FILE, 3, name, byte_sum(b"abc"))
    data = head + b"abc\x00" + cpio.header(0, 0, 0, cpio.TRAILER, 0)
    with pytest.raises(BundleError, match="hostile member name"):
        list(cpio.iter_members(io.BytesIO(data), len(data)))


def test_truncated_and_garbage_archives() -> None:
    data = _archive([("a", b"x" * 100)])
    with pytest.raises(BundleError, match="truncated"):
        list(cpio.iter_members(io.BytesIO(data[:150]), 150))
    with pytest.raises(BundleError, match="magic"):
        list(cpio.iter_members(io.BytesIO(b"PK\x03\x04" + b"\x00" * 200), 204))
    bad_size = bytearray(data)
    bad_size[6 + 8 * 6 : 6 + 8 * 7] = b"7FFFFFFF"  # a size that runs past the end
    with pytest.raises(BundleError, match="past the end"):
        list(cpio.iter_members(io.BytesIO(bytes(bad_size)), len(bad_size)))


def test_member_over_4_gib_is_refused() -> None:
    writer = cpio.CpioWriter(io.BytesIO())
    with pytest.raises(BundleError, match="4 GiB"):
        writer.add_chunks("big.img", 1 << 32, 0, iter(()))


@pytest.mark.parametrize("field", [b"-0000080", b"+00_0010", b" 0000010", b"0x000010", b"0000001g"])
def test_header_fields_must_be_eight_hex_digits(field: bytes) -> None:
    """int(x, 16) took these; a negative size made the reader loop on one header (issue 12, A1)."""
    data = bytearray(_archive([("a", b"x" * 100)]))
    data[6 + 8 * 6 : 6 + 8 * 7] = field
    with pytest.raises(BundleError, match="bad file size"):
        list(cpio.iter_members(io.BytesIO(bytes(data)), len(data)))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_any_header_mutation_ends(data: st.DataObject) -> None:
    """Whatever bytes a header holds, reading ends: members or one BundleError, no loop, no other exception."""
    archive = bytearray(_archive([("a", b"x" * 100), ("b", b"y" * 7)]))
    for _ in range(data.draw(st.integers(1, 8))):
        where = data.draw(st.integers(0, cpio.HEADER_LEN - 1))
        archive[where] = data.draw(st.sampled_from(b"0123456789abcdefABCDEF-+_ x\x00\xff"))
    seen = 0
    try:
        for _member in cpio.iter_members(io.BytesIO(bytes(archive)), len(archive)):
            seen += 1
            assert seen <= 2
    except BundleError:
        pass
