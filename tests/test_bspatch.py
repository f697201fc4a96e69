"""The device's bspatch: bsdiff 4.3 with the layer's hardening patch, against hostile patches.

The recipe fetches the pristine bsdiff-4.3 tarball; Debian ships the same file
as its orig tarball, so the test takes it with ``apt-get source``, checks it
against the recipe's ``SRC_URI[sha256sum]``, applies the layer's patch and
compiles ``bspatch`` as ``do_compile`` does, with AddressSanitizer and
UBSan on: a hostile patch must end in "Corrupt patch", never in undefined
behaviour. The unpatched tool is built the same way to show the cases bite.
"""

from __future__ import annotations

import bz2
import hashlib
import re
import shutil
import struct
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from pyvorin_devsim import cache

from helpers import ROOT, require, unavailable

RECIPE = ROOT / "meta-pyvorin/recipes-support/bsdiff/bsdiff_4.3.bb"
PATCH = RECIPE.parent / "bsdiff/0001-bspatch-validate-every-control-value-before-use.patch"
SANITIZE = ["-O1", "-g", "-fsanitize=undefined,address", "-fno-sanitize-recover=all"]


def _source_sha256() -> str:
    match = re.search(r'^SRC_URI\[sha256sum\] = "([0-9a-f]{64})"$', RECIPE.read_text(), re.M)
    assert match is not None
    return match.group(1)


def _build(patched: bool) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        download = out / "download"
        download.mkdir()
        fetched = subprocess.run(["apt-get", "source", "--download-only", "-qq", "bsdiff"], cwd=download,
                                 capture_output=True, text=True, check=False)
        orig = next(download.glob("bsdiff_4.3.orig.tar.gz"), None)
        if orig is None:
            raise RuntimeError(f"apt-get source bsdiff gave no orig tarball: {fetched.stderr.strip()}")
        digest = hashlib.sha256(orig.read_bytes()).hexdigest()
        if digest != _source_sha256():
            raise RuntimeError(f"{orig.name} is not the tarball the recipe fetches (sha256 {digest})")
        with tarfile.open(orig) as tar:
            tar.extractall(out, filter="data")
        src = out / "bsdiff-4.3"
        if patched:
            subprocess.run(["patch", "-p1", "-i", str(PATCH)], cwd=src, check=True, capture_output=True)
        # do_compile: ${CC} ${CFLAGS} ${LDFLAGS} -o bspatch ${S}/bspatch.c -lbz2
        subprocess.run(["gcc", *SANITIZE, "-o", str(out / "bspatch"), str(src / "bspatch.c"), "-lbz2"], check=True,
                       capture_output=True)
        shutil.rmtree(download)

    return build


@pytest.fixture(scope="module")
def bspatch() -> dict[str, Path]:
    require("apt-get", "gcc", "patch")
    inputs = cache.key(_source_sha256(), PATCH.read_bytes(), " ".join(SANITIZE))
    try:
        return {"hardened": cache.entry("bspatch-hardened", inputs, _build(True), area="bsdiff") / "bspatch",
                "pristine": cache.entry("bspatch-pristine", inputs, _build(False), area="bsdiff") / "bspatch"}
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        unavailable(f"cannot build bspatch from Debian's bsdiff source (scripts/test.sh adds deb-src): {exc}")
        raise


def _offt(value: int) -> bytes:
    """bsdiff's offtout: little-endian magnitude, sign in the top bit."""
    magnitude = abs(value)
    data = bytearray(struct.pack("<Q", magnitude & ((1 << 63) - 1)))
    if value < 0:
        data[7] |= 0x80
    return bytes(data)


def _patch(ctrl: list[tuple[int, int, int]], diff: bytes, extra: bytes, new_size: int,
           ctrl_len: int | None = None, data_len: int | None = None) -> bytes:
    bz_ctrl = bz2.compress(b"".join(_offt(a) + _offt(b) + _offt(c) for a, b, c in ctrl))
    bz_diff, bz_extra = bz2.compress(diff), bz2.compress(extra)
    header = (b"BSDIFF40" + _offt(len(bz_ctrl) if ctrl_len is None else ctrl_len)
              + _offt(len(bz_diff) if data_len is None else data_len) + _offt(new_size))
    return header + bz_ctrl + bz_diff + bz_extra


def _run(tool: Path, tmp: Path, patch: bytes, old: bytes = b"A" * 64) -> subprocess.CompletedProcess[str]:
    (tmp / "old").write_bytes(old)
    (tmp / "p").write_bytes(patch)
    (tmp / "new").unlink(missing_ok=True)
    return subprocess.run([str(tool), str(tmp / "old"), str(tmp / "new"), str(tmp / "p")], capture_output=True,
                          text=True, timeout=30, check=False)


def _clean_refusal(result: subprocess.CompletedProcess[str]) -> bool:
    return (result.returncode == 1 and "Corrupt patch" in result.stderr
            and "runtime error" not in result.stderr and "Sanitizer" not in result.stderr)


def test_a_valid_patch_applies(bspatch: dict[str, Path], tmp_path: Path) -> None:
    old = b"A" * 64
    new = b"A" * 32 + b"B" * 16 + b"C" * 8
    # 48 bytes from old (diff: 32 zeros, then 'B'-'A' x 16), then 8 extra bytes
    diff = bytes(32) + bytes([1]) * 16
    result = _run(bspatch["hardened"], tmp_path, _patch([(48, 8, 0)], diff, b"C" * 8, len(new)), old)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "new").read_bytes() == new


HOSTILE = {
    # The header's lengths: 32+bzctrllen and newsize+1 overflow (issue 12, A6).
    "huge ctrl length": dict(ctrl=[(0, 0, 0)], new_size=0, ctrl_len=(1 << 63) - 1),
    "huge data length": dict(ctrl=[(0, 0, 0)], new_size=0, data_len=(1 << 63) - 40),
    "huge new size": dict(ctrl=[(0, 0, 0)], new_size=(1 << 63) - 1),
    # The control stream (CVE-2014-9862, CVE-2020-14315).
    "negative diff length": dict(ctrl=[(-8, 0, 0)], new_size=16),
    "negative extra length": dict(ctrl=[(0, -8, 0)], new_size=16),
    "extra past the end": dict(ctrl=[(8, 1 << 40, 0)], new_size=16),
    "seek overflow": dict(ctrl=[(8, 0, (1 << 63) - 1), (8, 0, (1 << 63) - 1)], new_size=16),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_patches_are_refused_cleanly(bspatch: dict[str, Path], tmp_path: Path, case: str) -> None:
    spec = dict(HOSTILE[case])
    patch = _patch(spec.pop("ctrl"), bytes(16), bytes(16), **spec)  # type: ignore[arg-type]
    result = _run(bspatch["hardened"], tmp_path, patch)
    assert _clean_refusal(result), result.stderr


def test_the_unpatched_tool_fails_these_cases(bspatch: dict[str, Path], tmp_path: Path) -> None:
    """The sanitizers see what the patch prevents: the cases are not vacuous."""
    bad = 0
    for spec in HOSTILE.values():
        spec = dict(spec)
        result = _run(bspatch["pristine"], tmp_path, _patch(spec.pop("ctrl"), bytes(16), bytes(16), **spec))  # type: ignore[arg-type]
        bad += not _clean_refusal(result)
    assert bad >= 3, "the pristine bspatch refused every hostile case cleanly: the cases test nothing"
