"""Release specs for the QEMU devices' update bundles, shaped like the layer's
rpi sw-description: copy1 writes slot B and switches rootpart to 3, copy2 the
reverse, both put the new slot on trial (upgrade_available=1, bootcount=0).

A full release carries the slot image gzip-compressed and streamed into the
slot; a delta release (``pyvorin delta``, ``.pyvd``) names the running slot as
the source the applier rebuilds the new one from."""

from __future__ import annotations

from pathlib import Path

from qemu.images import BOARD, HW_REVISION, SLOT_A, SLOT_B

#: The spec's artifact entry by kind: what ``pyvorin bundle`` needs to know of the file.
_ARTIFACT = {
    "full": "{{file: {name}, type: raw, compressed: zlib, installed-directly: true}}",
    "delta": "{{file: {name}, type: pyvdelta}}",
}


def spec(directory: Path, version: str, artifact: Path, *, board: str = BOARD,
         hw_revision: str = HW_REVISION) -> Path:
    """A release of ``artifact`` (a ``.gz`` slot image or a ``.pyvd`` delta) next to it."""
    kind = "delta" if artifact.suffix == ".pyvd" else "full"
    name = artifact.name

    def target(slot: str, running: str) -> str:
        return f"{{device: {slot}, source: {running}}}" if kind == "delta" else slot

    text = f"""\
version: "{version}"
description: test release {version} ({kind})
artifacts:
  {name}: {_ARTIFACT[kind].format(name=name)}
machines:
  {board}:
    hardware-compatibility: ["{hw_revision}"]
    bootenv: {{upgrade_available: "1", bootcount: "0"}}
    copy1:
      install:
        {name}: {target(SLOT_B, SLOT_A)}
      bootenv: {{rootpart: "3"}}
    copy2:
      install:
        {name}: {target(SLOT_A, SLOT_B)}
      bootenv: {{rootpart: "2"}}
"""
    path = directory / f"release-{version}.yaml"
    path.write_text(text)
    return path
