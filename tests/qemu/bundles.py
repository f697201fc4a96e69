"""Signed update bundles of test root file systems, made with ``pyvorin
bundle`` from a release spec shaped like the layer's rpi sw-description:
copy1 writes slot B and switches rootpart to 3, copy2 the reverse, both put
the new slot on trial (upgrade_available=1, bootcount=0)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from qemu.images import BOARD, HW_REVISION, SLOT_A, SLOT_B


def spec(directory: Path, version: str, rootfs_gz: Path) -> Path:
    text = textwrap.dedent(f"""\
        version: "{version}"
        description: rollback test {version}
        artifacts:
          rootfs.ext4.gz:
            file: {rootfs_gz.name}
            type: raw
            compressed: zlib
            installed-directly: true
        machines:
          {BOARD}:
            hardware-compatibility: ["{HW_REVISION}"]
            bootenv:
              upgrade_available: "1"
              bootcount: "0"
            copy1:
              install:
                rootfs.ext4.gz: {SLOT_B}
              bootenv:
                rootpart: "3"
            copy2:
              install:
                rootfs.ext4.gz: {SLOT_A}
              bootenv:
                rootpart: "2"
        """)
    path = directory / f"release-{version}.yaml"
    path.write_text(text)
    return path
