"""Release specs for the QEMU devices' update bundles, shaped like the layer's
rpi sw-description: copy1 writes slot B and switches rootpart to 3, copy2 the
reverse, both put the new slot on trial (upgrade_available=1, bootcount=0).

A full release carries the slot image gzip-compressed and streamed into the
slot (with verified boot, the slot's FIT too, at its window's offset); a delta release (``pyvorin delta``, ``.pyvd``) names the running slot as
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
         hw_revision: str = HW_REVISION, fit: tuple[Path, int] | None = None,
         devices: tuple[str, str] = (SLOT_A, SLOT_B)) -> Path:
    """A release of ``artifact`` (a ``.gz`` slot image or a ``.pyvd`` delta) next to it; ``fit``: a
    (gzip) FIT and the byte offset in the slot it goes to (verified boot); ``devices``: slot A and B."""
    kind = "delta" if artifact.suffix == ".pyvd" else "full"
    name = artifact.name
    slot_a, slot_b = devices
    artifacts = f"  {name}: {_ARTIFACT[kind].format(name=name)}\n"
    if fit:
        artifacts += f"  {fit[0].name}: {_ARTIFACT['full'].format(name=fit[0].name)}\n"

    def install(slot: str, running: str) -> str:
        target = f"{{device: {slot}, source: {running}}}" if kind == "delta" else slot
        lines = f"        {name}: {target}\n"
        if fit:
            lines += f"        {fit[0].name}: {{device: {slot}, offset: {fit[1]}}}\n"
        return lines

    text = f"""\
version: "{version}"
description: test release {version} ({kind})
artifacts:
{artifacts}machines:
  {board}:
    hardware-compatibility: ["{hw_revision}"]
    bootenv: {{upgrade_available: "1", bootcount: "0"}}
    copy1:
      install:
{install(slot_b, slot_a)}      bootenv: {{rootpart: "3"}}
    copy2:
      install:
{install(slot_a, slot_b)}      bootenv: {{rootpart: "2"}}
"""
    path = directory / f"release-{version}.yaml"
    path.write_text(text)
    return path
