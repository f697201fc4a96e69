"""The shipped example release: reproducible images, a bundle swupdate installs."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import EXAMPLES, ROOT, require, unavailable


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("mkfs.ext4", "debugfs", "gzip")
    copy = tmp_path_factory.mktemp("example") / "examples"
    shutil.copytree(EXAMPLES, copy, ignore=shutil.ignore_patterns("out"))
    subprocess.run(["sh", copy / "build-images.sh"], check=True, capture_output=True)
    return copy


def test_images_are_reproducible(example: Path) -> None:
    first = hashlib.sha256((example / "out/rootfs.ext4.gz").read_bytes()).hexdigest()
    subprocess.run(["sh", example / "build-images.sh"], check=True, capture_output=True)
    assert hashlib.sha256((example / "out/rootfs.ext4.gz").read_bytes()).hexdigest() == first
    require("e2fsck")
    check = subprocess.run(["e2fsck", "-fn", example / "out/rootfs.ext4"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def test_example_bundle_verifies(cli, keys, example: Path, tmp_path: Path) -> None:
    swu = tmp_path / "release.swu"
    cli("bundle", example / "release.yaml", "-o", swu, *keys.signing_args(), check=True)
    result = cli("verify", swu, "--cert", keys.ca, check=True)
    assert "rootfs.ext4.gz" in result.stdout and "postinstall.sh" in result.stdout


@pytest.mark.swupdate
def test_install_demo_with_real_swupdate(cli, keys, example: Path, tmp_path: Path) -> None:
    from pyvorin_devsim.swupdate_sandbox import swupdate_available

    if swupdate_available():
        unavailable(f"real swupdate unavailable: {swupdate_available()}")
    result = subprocess.run(
        [sys.executable, EXAMPLES / "install_demo.py", example / "release.yaml", keys.directory, tmp_path],
        capture_output=True, text=True, env={**cli.env, "PYTHONPATH": str(ROOT / "scripts")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "swupdate -e stable,copy1: OK" in result.stdout
    assert "swupdate -e stable,copy2: OK" in result.stdout
