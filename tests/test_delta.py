"""Deltas: Debian's bspatch and our windowed applier must rebuild NEW exactly."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvorin.delta.apply import apply_delta, check_delta
from pyvorin.delta.codec import DEFAULT
from pyvorin.delta.container import DeltaError
from pyvorin.delta.make import WORKER_BYTES, BlockIndex, main_bytes, make_delta, workers_for

from helpers import require, require_module

require_module("bsdiff4")


def _roundtrip(tmp: Path, old: bytes, new: bytes, slot_fill: bytes = b"\x5a", codec_name: str = DEFAULT) -> Path:
    (tmp / "old").write_bytes(old)
    (tmp / "new").write_bytes(new)
    report = make_delta(tmp / "old", tmp / "new", tmp / "d.pyvd", codec_name=codec_name)
    assert report.new_size == len(new)
    target = tmp / "slot"
    target.write_bytes(slot_fill * (len(new) + 8192))  # a slot is larger than the image
    apply_delta(tmp / "d.pyvd", tmp / "old", target)
    assert target.read_bytes()[: len(new)] == new
    return tmp / "d.pyvd"


def _mutate(data: bytes, rng: random.Random, edits: int) -> bytes:
    out = bytearray(data)
    for _ in range(edits):
        kind = rng.random()
        at = rng.randrange(0, len(out) + 1)
        if kind < 0.5 and out:
            length = rng.randrange(1, 300)
            out[at : at + length] = rng.randbytes(min(length, len(out) - at))
        elif kind < 0.75:
            out[at:at] = rng.randbytes(rng.randrange(1, 5000))
        else:
            del out[at : at + rng.randrange(1, 5000)]
    return bytes(out)


@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 300_000), edits=st.integers(0, 20),
       zero_share=st.floats(0, 0.9))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_windowed_delta_reproduces_new(tmp_path_factory: pytest.TempPathFactory, seed: int, size: int,
                                       edits: int, zero_share: float) -> None:
    rng = random.Random(seed)
    blocks = [bytes(4096) if rng.random() < zero_share else rng.randbytes(4096) for _ in range(size // 4096 + 1)]
    old = b"".join(blocks)[:size]
    _roundtrip(tmp_path_factory.mktemp("d"), old, _mutate(old, rng, edits))


@pytest.mark.parametrize("old,new", [
    (b"", b""),
    (b"", os.urandom(10000)),
    (os.urandom(10000), b""),
    (b"same" * 5000, b"same" * 5000),
    (bytes(1 << 20), bytes(1 << 20) + b"x"),
    (os.urandom(1 << 20), os.urandom(1 << 20)),
], ids=["both-empty", "old-empty", "new-empty", "identical", "zeros-plus-one", "unrelated"])
def test_edge_cases(tmp_path: Path, old: bytes, new: bytes) -> None:
    _roundtrip(tmp_path, old, new)


def test_unchanged_zero_and_moved_blocks_cost_almost_nothing(tmp_path: Path) -> None:
    rng = random.Random(5)
    old = b"".join(rng.randbytes(4096) if i % 3 else bytes(4096) for i in range(2048))  # 8 MiB
    new = bytearray(old)
    new[4 << 20 : 5 << 20] = old[1 << 20 : 2 << 20]  # a file moved
    delta = _roundtrip(tmp_path, old, bytes(new))
    assert delta.stat().st_size < 4096, "copies and zeros must not be diffed"


def test_block_index_finds_the_first_copy_of_every_block() -> None:
    index = BlockIndex()
    rng = random.Random(3)
    digests = [rng.getrandbits(64) for _ in range(5000)]
    for block, digest in enumerate(digests):
        index.add(digest, block * 4096)
    index.add(digests[10], 9000 * 4096)  # a later duplicate does not replace the first
    index.freeze()
    assert len(index) == 5001
    assert all(index.find(digest) == block * 4096 for block, digest in enumerate(digests))
    assert index.find(rng.getrandbits(64)) is None


def test_memory_budget_sets_the_worker_count(tmp_path: Path) -> None:
    """256 MiB holds the main process, its index and one bsdiff worker, for a 1 GiB image."""
    gib = 1 << 30
    assert main_bytes(gib) + WORKER_BYTES <= 256 << 20
    assert workers_for(256 << 20, gib) == 1
    assert workers_for(1 << 30, gib) == min(os.cpu_count() or 1, 5)  # (1024 - 66) // 172
    rng = random.Random(4)
    old = rng.randbytes(3 << 20)
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(_mutate(old, rng, 30))
    report = make_delta(tmp_path / "old", tmp_path / "new", tmp_path / "d", memory=256 << 20)
    assert report.workers == 1
    target = tmp_path / "t"
    target.touch()  # a slot exists; the applier never creates one
    apply_delta(tmp_path / "d", tmp_path / "old", target)
    assert target.read_bytes() == (tmp_path / "new").read_bytes()


def test_ext4_images(tmp_path: Path) -> None:
    """Two real root file systems a release apart: a few files change, one is added."""
    require("mkfs.ext4")
    rng = random.Random(9)
    tree = tmp_path / "tree"
    (tree / "usr/lib").mkdir(parents=True)
    for i in range(60):
        (tree / "usr/lib" / f"lib{i}.so").write_bytes(rng.randbytes(rng.randrange(10_000, 200_000)))
    images = []
    for version in (1, 2):
        if version == 2:
            for i in range(0, 60, 10):
                path = tree / "usr/lib" / f"lib{i}.so"
                data = bytearray(path.read_bytes())
                data[100:200] = rng.randbytes(100)
                path.write_bytes(bytes(data))
            (tree / "usr/lib/new.so").write_bytes(rng.randbytes(300_000))
        image = tmp_path / f"v{version}.ext4"
        subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-d", str(tree), "-U", "clear",
                        "-E", "hash_seed=6a1d3b1e-0d7c-4c43-9a55-3c2f8f1e7a10", str(image), "32M"],
                       check=True, env={**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"})
        images.append(image.read_bytes())
    delta = _roundtrip(tmp_path, images[0], images[1])
    # The new file and six edits: well under the 300 kB of new content plus overhead.
    assert delta.stat().st_size < 400_000


def test_plain_bsdiff_is_applied_by_debian_bspatch(cli, tmp_path: Path) -> None:
    require("bspatch")
    rng = random.Random(3)
    old = rng.randbytes(200_000)
    new = _mutate(old, rng, 10)
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    cli("delta", tmp_path / "old", tmp_path / "new", "-o", tmp_path / "p", "--format", "bsdiff", "--no-report",
        check=True)
    assert (tmp_path / "p").read_bytes().startswith(b"BSDIFF40")
    subprocess.run(["bspatch", tmp_path / "old", tmp_path / "out", tmp_path / "p"], check=True)
    assert (tmp_path / "out").read_bytes() == new


def test_wrong_source_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    rng = random.Random(4)
    old = rng.randbytes(100_000)
    _roundtrip(tmp_path, old, _mutate(old, rng, 5))
    (tmp_path / "other").write_bytes(_mutate(old, rng, 1))
    target = tmp_path / "fresh-slot"
    target.write_bytes(b"\x5a" * 200_000)
    with pytest.raises(DeltaError, match="does not hold the delta's source image"):
        apply_delta(tmp_path / "d.pyvd", tmp_path / "other", target)
    assert target.read_bytes() == b"\x5a" * 200_000


@pytest.mark.parametrize("where", [20, "middle", -40, -1])
def test_tampered_delta_is_refused_before_anything_is_written(tmp_path: Path, where: int | str) -> None:
    rng = random.Random(6)
    old = rng.randbytes(100_000)
    delta = _roundtrip(tmp_path, old, _mutate(old, rng, 5))
    data = bytearray(delta.read_bytes())
    index = len(data) // 2 if where == "middle" else int(where)
    data[index] ^= 0x01
    delta.write_bytes(bytes(data))
    with pytest.raises(DeltaError):
        check_delta(delta)
    target = tmp_path / "fresh-slot"
    target.write_bytes(b"\x5a" * 200_000)
    with pytest.raises(DeltaError):
        apply_delta(delta, tmp_path / "old", target)
    assert target.read_bytes() == b"\x5a" * 200_000


def test_cli_errors(cli, tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    for args, message in (
        (["delta", tmp_path / "a", tmp_path / "missing", "-o", tmp_path / "d"], "not found"),
        (["delta", tmp_path / "a", tmp_path / "a", "-o", tmp_path / "d", "--memory", "64M"], "too small"),
        (["delta-apply", tmp_path / "a", "--source", tmp_path / "a", "--target", tmp_path / "t"], "bad magic"),
    ):
        result = cli(*args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "d").exists() and not (tmp_path / "t").exists()


def test_size_report_counts_what_zstd_writes(cli, tmp_path: Path) -> None:
    require("zstd")
    rng = random.Random(11)
    old = b"".join(rng.randbytes(2048) + bytes(2048) for _ in range(256))
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(_mutate(old, rng, 10))
    result = cli("delta", tmp_path / "old", tmp_path / "new", "-o", tmp_path / "d.pyvd")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "new", "rb") as source:  # from a pipe, as the tool feeds it
        reference = subprocess.run(["zstd", "-3", "--single-thread", "-q", "-c"], stdin=source,
                                   capture_output=True, check=True).stdout
    assert f"full image with zstd -3: {len(reference)} bytes" in result.stdout, result.stdout
    delta = (tmp_path / "d.pyvd").stat().st_size
    assert f"delta {delta} bytes for a {len((tmp_path / 'new').read_bytes())}-byte image" in result.stdout


def test_applier_refuses_a_missing_or_mismatched_slot(tmp_path: Path) -> None:
    """A missing target became a plain file and was reported verified (issue 12, A4)."""
    rng = random.Random(7)
    old = rng.randbytes(1 << 20)
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(_mutate(old, rng, 5))
    make_delta(tmp_path / "old", tmp_path / "new", tmp_path / "d.pyvd")
    with pytest.raises(DeltaError, match="does not exist"):
        apply_delta(tmp_path / "d.pyvd", tmp_path / "old", tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(DeltaError, match="neither a block device nor a regular file"):
        apply_delta(tmp_path / "d.pyvd", tmp_path / "old", tmp_path)
    block = next((d for d in sorted(Path("/dev").iterdir()) if d.is_block_device()), None)
    if block is not None:  # only stat()ed: the kinds differ, so nothing is opened
        with pytest.raises(DeltaError, match="is a block device but target slot"):
            apply_delta(tmp_path / "d.pyvd", block, tmp_path / "new")


@pytest.mark.parametrize("field, value, message", [
    ("length", 5 << 20, "window of"),
    ("source", 9 << 20, "source bytes"),
    ("patch", 10 << 20, "exceeds"),
])
def test_reader_enforces_the_window_caps(field: str, value: int, message: str) -> None:
    """A 65 KB delta made a 64 MiB scratch window: the reader refuses what the format caps."""
    import io
    import struct

    from pyvorin.delta import container

    new_size = 8 << 20
    header = container.Header(block_size=4096, old_size=16 << 20, new_size=new_size, old_sha256="0" * 64,
                              new_sha256="0" * 64, op_count=1)
    length = value if field == "length" else 1 << 20
    extents = [(0, value)] if field == "source" else [(0, 1 << 20)]
    patch = value if field == "patch" else 16
    body = struct.pack(">BQQI", container.PATCH, 0, length, len(extents))
    body += b"".join(struct.pack(">QQ", off, ln) for off, ln in extents) + struct.pack(">Q", patch)
    buffer = io.BytesIO(header.to_bytes() + body + bytes(64))
    buffer.seek(0)
    _, ops = container.read_delta(buffer)
    with pytest.raises(DeltaError, match=message):
        next(ops)


def _hand_made_delta(path: Path, old: bytes, new: bytes, codec_name: str) -> None:
    """One COPY of the first block and one PATCH window whose patch is the new bytes themselves."""
    import hashlib

    from pyvorin.delta import container

    header = container.Header(block_size=4096, old_size=len(old), new_size=len(new),
                              old_sha256=hashlib.sha256(old).hexdigest(), new_sha256=hashlib.sha256(new).hexdigest(),
                              op_count=2, codec=codec_name)
    with open(path, "wb") as out:
        writer = container.DeltaWriter(out, header)
        writer.add(container.Copy(0, 4096, 0))
        writer.add(container.Patch(4096, len(new) - 4096, ((4096, len(old) - 4096),), new[4096:]))
        writer.finish()


def test_a_bsdiff_delta_names_no_codec_so_older_appliers_read_it(tmp_path: Path) -> None:
    """The applier is the running slot's, possibly older than the tool: bsdiff headers stay as they were."""
    import json
    import struct

    old = os.urandom(64 << 10)
    delta = _roundtrip(tmp_path, old, old[:32768] + os.urandom(32768), codec_name="bsdiff")
    blob = delta.read_bytes()
    (size,) = struct.unpack(">I", blob[8:12])
    assert set(json.loads(blob[12:12 + size])) == {"block_size", "old_size", "new_size", "old_sha256",
                                                   "new_sha256", "op_count"}
    assert check_delta(delta).codec == "bsdiff"


def test_a_second_codec_plugs_in_without_touching_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An 'identity' codec (the patch is the window itself), registered the way a real one would be:
    the container, the window caps, the hashes and the slot checks are the same code."""
    from dataclasses import dataclass

    from pyvorin.delta import codec

    @dataclass(frozen=True)
    class Identity:
        name: str = "identity"

        def diff(self, source: bytes, target: bytes) -> bytes:
            return target

        def patch(self, source: Path, patch: Path, output: Path) -> None:
            output.write_bytes(patch.read_bytes())

        @property
        def tools(self) -> tuple[str, ...]:
            return ()

        def check_host(self) -> None:
            pass

    monkeypatch.setitem(codec.CODECS, "identity", Identity())
    old = os.urandom(64 << 10)
    new = old[:4096] + os.urandom(60 << 10)
    (tmp_path / "old").write_bytes(old)
    _hand_made_delta(tmp_path / "d.pyvd", old, new, "identity")
    target = tmp_path / "slot"
    target.write_bytes(bytes(len(new)))
    header = apply_delta(tmp_path / "d.pyvd", tmp_path / "old", target)
    assert header.codec == "identity" and target.read_bytes() == new


def test_an_unknown_codec_is_refused_before_the_slot_is_touched(tmp_path: Path) -> None:
    old = os.urandom(64 << 10)
    new = old[:4096] + os.urandom(60 << 10)
    (tmp_path / "old").write_bytes(old)
    _hand_made_delta(tmp_path / "d.pyvd", old, new, "zstd-patch-from")
    target = tmp_path / "slot"
    target.write_bytes(b"\x5a" * len(new))
    with pytest.raises(DeltaError, match="unknown delta codec 'zstd-patch-from'"):
        apply_delta(tmp_path / "d.pyvd", tmp_path / "old", target)
    assert target.read_bytes() == b"\x5a" * len(new)


def _relinked(rng: random.Random, size: int) -> tuple[bytes, bytes]:
    """Bytes and their relinked version: every 16th byte moved by one, as addresses shift when code
    moves. zstd finds only matches shorter than 16 bytes there (its patch is ~6 % of the window);
    bsdiff's approximate matches take it almost whole."""
    old = rng.randbytes(size)
    new = bytearray(old)
    for at in range(0, len(new), 16):
        new[at] = (new[at] + 1) % 256
    return old, bytes(new)


def test_the_default_codec_keeps_the_smaller_patch_of_each_window(tmp_path: Path) -> None:
    """bsdiff+zstd: a nearly unchanged window stays zstd (bsdiff is not even run), a relinked one is
    bsdiff; the applier tells them apart by their magic and rebuilds both."""
    from pyvorin.delta import codec, container

    rng = random.Random(7)
    code_old, code_new = _relinked(rng, 256 << 10)
    data = rng.randbytes(512 << 10)
    old = code_old + bytes(1 << 20) + data
    touched = bytearray(data)
    touched[1000:1008] = b"CHANGED!"
    new = code_new + bytes(1 << 20) + bytes(touched)
    delta = _roundtrip(tmp_path, old, new)
    with open(delta, "rb") as handle:
        header, ops = container.read_delta(handle)
        magics = [op.patch[:4] for op in ops if isinstance(op, container.Patch)]
    assert header.codec == codec.DEFAULT == "bsdiff+zstd"
    assert sorted(magics) == sorted([codec.BSDIFF_MAGIC[:4], codec.ZSTD_MAGIC]), magics
    assert delta.stat().st_size < 8 << 10
    # Each codec on its own decodes what it made.
    for name in ("zstd", "bsdiff"):
        _roundtrip(tmp_path, old, new, codec_name=name)


def test_a_device_without_a_codecs_tool_refuses_before_the_slot_is_touched(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    old = os.urandom(64 << 10)
    new = old[:32768] + os.urandom(32768)
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    make_delta(tmp_path / "old", tmp_path / "new", tmp_path / "d.pyvd")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "bspatch").symlink_to(shutil.which("bspatch") or "/usr/bin/bspatch")
    monkeypatch.setenv("PATH", str(bindir))
    target = tmp_path / "slot"
    target.write_bytes(b"\x5a" * len(new))
    with pytest.raises(DeltaError, match="zstd not found: it applies the delta's bsdiff\\+zstd windows"):
        apply_delta(tmp_path / "d.pyvd", tmp_path / "old", target)
    assert target.read_bytes() == b"\x5a" * len(new)


def test_a_window_of_neither_format_is_refused(tmp_path: Path) -> None:
    old = os.urandom(64 << 10)
    new = old[:4096] + os.urandom(60 << 10)
    (tmp_path / "old").write_bytes(old)
    _hand_made_delta(tmp_path / "d.pyvd", old, new, "bsdiff+zstd")  # its patch is the raw new bytes
    target = tmp_path / "slot"
    target.write_bytes(bytes(len(new)))
    with pytest.raises(DeltaError, match="neither BSDIFF40 nor a zstd frame"):
        apply_delta(tmp_path / "d.pyvd", tmp_path / "old", target)


def test_an_output_in_a_missing_directory_is_named_before_any_work(tmp_path: Path) -> None:
    old = os.urandom(64 << 10)
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(old[:32768] + os.urandom(32768))
    from pyvorin.errors import PyvorinError

    with pytest.raises(PyvorinError, match=r"d\.pyvd: its directory .*/missing does not exist"):
        make_delta(tmp_path / "old", tmp_path / "new", tmp_path / "missing" / "d.pyvd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"]
