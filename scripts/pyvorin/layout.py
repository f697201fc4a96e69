"""Images that share a device: each must end before the next one starts.

With ``offset`` one copy may write two raw images to one device (verified boot:
the dm-verity image from a root slot's first byte, the signed FIT image in a
window at its end).  The spec already refuses two that start at the same
offset; how far each reaches is known only from its file, so it is checked
here, at bundle time: sorted by offset, an image must fit in the gap up to the
next one.  The device's own size is not known here; SWUpdate fails a write
past its end.

What counts is what the device writes: the decompressed bytes of a compressed
image (an encrypted one is decrypted back to the file first).  They are
counted by decompressing in a stream, never held whole: constant memory, time
in proportion to the image, and only for an image that has another one after
it on its device.
"""

from __future__ import annotations

import itertools

from .decompress import decompressed
from .errors import SpecError
from .hashing import file_chunks
from .spec import Artifact, Compression, Copy, ImageType, ReleaseSpec, device_start


def check_layout(spec: ReleaseSpec) -> None:
    """Refuse a copy in which an image on a device reaches the next image's offset."""
    sizes: dict[str, int] = {}  # an artifact installed by several copies is measured once
    for machine in spec.machines:
        for copy in machine.copies:
            for device, placed in _by_device(spec, copy).items():
                for (start, low), (end, high) in itertools.pairwise(placed):
                    if low.name not in sizes:
                        sizes[low.name] = written_size(low)
                    if start + sizes[low.name] > end:
                        what = "decompressed" if low.compressed is not Compression.NONE else "written"
                        raise SpecError(
                            f"{spec.path}: {machine.name}.{copy.mode}: {low.name!r} ({sizes[low.name]} bytes "
                            f"{what}) from offset {start} of {device} reaches past {high.name!r} at offset "
                            f"{end}: it must fit in {end - start} bytes"
                        )


def _by_device(spec: ReleaseSpec, copy: Copy) -> dict[str, list[tuple[int, Artifact]]]:
    """The images ``copy`` writes to each device's bytes, by offset."""
    placed: dict[str, list[tuple[int, Artifact]]] = {}
    for target in copy.targets:
        artifact = spec.artifact(target.artifact)
        start = device_start(target, artifact)
        if start is not None and target.device:
            placed.setdefault(target.device, []).append((start, artifact))
    for images in placed.values():
        images.sort(key=lambda item: item[0])
    return placed


def written_size(artifact: Artifact) -> int:
    """How many bytes installing ``artifact`` writes to its device, from its start: a compressed image
    decompressed in a stream as the device does it (gzip: the first member, where SWUpdate stops)."""
    if artifact.type is ImageType.DELTA:
        from .delta.container import read_delta

        with open(artifact.source, "rb") as handle:
            return read_delta(handle)[0].new_size
    if artifact.compressed is Compression.NONE:
        return artifact.source.stat().st_size
    chunks = decompressed(file_chunks(artifact.source), artifact.compressed.value, str(artifact.source))
    return sum(len(chunk) for chunk in chunks)
