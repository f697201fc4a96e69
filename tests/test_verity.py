"""pyvorin verity check against the reference: images laid out by ``veritysetup format``
(cryptsetup, the tool meta-security's dm-verity-img class runs) with their root hash
pass; a changed data byte, tree byte or superblock, a wrong root hash, a short image
and malformed parameters are refused with one line; memory stays bounded."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from helpers import pyvorin_peak_rss, require, write_image


def _format(image: Path, data_block_size: int = 4096, salt: str | None = None) -> tuple[str, int]:
    """Append a verity superblock and tree to ``image`` with veritysetup; its root hash and hash offset."""
    require("veritysetup")
    offset = image.stat().st_size
    argv = ["veritysetup", "format", f"--data-block-size={data_block_size}", "--hash-block-size=4096",
            f"--hash-offset={offset}", str(image), str(image)]
    if salt is not None:
        argv.insert(2, f"--salt={salt}")
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    match = re.search(r"^Root hash:\s+([0-9a-f]{64})$", result.stdout, re.M)
    assert match, result.stdout
    return match.group(1), offset


@pytest.mark.parametrize(("blocks", "block_size", "salt"), [
    (1, 4096, None), (2, 4096, None), (128, 4096, None), (129, 4096, "-"), (3000, 1024, None),
    (16385, 4096, "00112233"),
])
def test_images_veritysetup_formats_check(cli, tmp_path: Path, blocks: int, block_size: int, salt: str | None) -> None:
    image = write_image(tmp_path / "rootfs.ext4.verity", blocks * block_size, seed=blocks)
    root, offset = _format(image, block_size, salt)
    result = cli("verity", "check", image, "--root-hash", root, "--hash-offset", offset, check=True)
    assert f"root hash {root} ok: {blocks} data blocks of {block_size} B" in result.stdout
    # The reference agrees on the same image (no tampering in the fixture itself).
    assert subprocess.run(["veritysetup", "verify", f"--hash-offset={offset}", image, image, root],
                          capture_output=True).returncode == 0


def _one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_tampering_is_named(cli, tmp_path: Path) -> None:
    image = write_image(tmp_path / "rootfs.ext4.verity", 600 * 4096, seed=3)
    root, offset = _format(image)
    params = tmp_path / "rootfs.env"
    params.write_text(f"VERSION=1\nROOT_HASH={root}\nDATA_SIZE={offset}\nSEPARATE_HASH=0\n")
    assert cli("verity", "check", image, "--params", params).returncode == 0
    pristine = image.read_bytes()

    def flipped(position: int) -> Path:
        data = bytearray(pristine)
        data[position] ^= 0x01
        image.write_bytes(bytes(data))
        return image

    line = _one_line(cli("verity", "check", flipped(4096 * 599 + 7), "--params", params), 1)
    assert "hash block 4 of tree level 0 does not match" in line
    tree = offset + 4096        # the top level, right after the superblock
    line = _one_line(cli("verity", "check", flipped(tree + 5), "--params", params), 1)
    assert "tree level 1 does not match" in line
    line = _one_line(cli("verity", "check", flipped(offset), "--params", params), 1)
    assert "no verity superblock" in line
    image.write_bytes(pristine)
    wrong = "0" * 64
    line = _one_line(cli("verity", "check", image, "--root-hash", wrong, "--hash-offset", offset), 1)
    assert f"root hash {root}, expected {wrong}" in line
    image.write_bytes(pristine[:-4096])
    line = _one_line(cli("verity", "check", image, "--params", params), 1)
    assert "the hash tree ends at" in line


@pytest.mark.parametrize(("text", "args", "message"), [
    ("ROOT_HASH=ab\n", [], "no DATA_SIZE"),
    ("garbage line\n", [], "not KEY=VALUE"),
    ("ROOT_HASH=zz\nDATA_SIZE=4096\n", [], "not 64 hex digits"),
    ("ROOT_HASH=" + "a" * 64 + "\nDATA_SIZE=-1\n", [], "not a byte count"),
    ("ROOT_HASH=" + "a" * 64 + "\nDATA_SIZE=4096\n", ["--root-hash", "a" * 64], "not both"),
])
def test_bad_parameters_are_one_line(cli, tmp_path: Path, text: str, args: list[str], message: str) -> None:
    image = write_image(tmp_path / "img", 8 * 4096)
    _format(image)
    params = tmp_path / "params.env"
    params.write_text(text)
    line = _one_line(cli("verity", "check", image, "--params", params, *args), 2)
    assert line.startswith("pyvorin: error: ") and message in line
    missing = _one_line(cli("verity", "check", tmp_path / "absent", "--root-hash", "a" * 64, "--hash-offset", "4096"), 2)
    assert "absent" in missing
    assert "give --params" in _one_line(cli("verity", "check", image), 2)


def test_memory_stays_bounded(cli, tmp_path: Path) -> None:
    """256 MiB of data: peak RSS (VmHWM of the checking process) stays under 64 MiB."""
    image = write_image(tmp_path / "big.verity", 256 << 20, seed=9)
    root, offset = _format(image)
    result, peak_kib = pyvorin_peak_rss(cli.env, "verity", "check", image, "--root-hash", root,
                                        "--hash-offset", offset)
    assert result.returncode == 0, result.stderr
    assert peak_kib < 64 * 1024


@pytest.mark.parametrize(("field", "value", "message"), [
    ("data_blocks", 1 << 40, "end past the superblock"),
    ("data_block_size", 3000, "not powers of two"),
    ("hash_block_size", 1 << 24, "not powers of two"),
    ("salt_size", 999, "salt size 999"),
    ("version", 2, "version 2"),
    ("algorithm", b"md5", "only sha256"),
])
def test_hostile_superblocks_are_refused(cli, tmp_path: Path, field: str, value: object, message: str) -> None:
    """A superblock is input like any other: each field out of range is one line, exit 1, no traceback."""
    from pyvorin import verity

    image = write_image(tmp_path / "img", 64 * 4096, seed=5)
    root, offset = _format(image)
    data = bytearray(image.read_bytes())
    fields = list(verity._SUPERBLOCK.unpack_from(data, offset))
    names = ["signature", "version", "hash_type", "uuid", "algorithm", "data_block_size", "hash_block_size",
             "data_blocks", "salt_size", "pad", "salt", "pad2"]
    fields[names.index(field)] = value
    verity._SUPERBLOCK.pack_into(data, offset, *fields)
    image.write_bytes(bytes(data))
    line = _one_line(cli("verity", "check", image, "--root-hash", root, "--hash-offset", offset), 1)
    assert message in line
