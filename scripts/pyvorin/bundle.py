"""Building a .swu: digest the payloads, render and sign sw-description, write the cpio.

Memory stays constant whatever the image size: each payload is read twice in
1 MiB chunks (once to digest it, once to copy it, in the kernel when it is not
encrypted) and never held whole.  If a payload changes between the two reads
the build fails instead of shipping a bundle whose hashes lie.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import aes, sbom
from .archive import SIGNATURE, SW_DESCRIPTION, open_bundle
from .cpio import MAX_SIZE, CpioWriter
from .errors import BundleError, PyvorinError, SpecError, VerificationError
from .fsutil import atomic_output
from .hashing import Digest, byte_sum, digest_chunks, digest_file, file_chunks, sha256_file
from .layout import check_layout
from .signing import SigningOptions, sign_content
from .spec import COMPRESSION_MAGIC, Artifact, Compression, ImageType, ReleaseSpec, SbomFile, Script
from .swdesc import PayloadInfo, render_sw_description
from .verify import check_contents


@dataclass(frozen=True)
class Payload:
    """A payload as it will be stored: size, digests and, if encrypted, its IV."""

    name: str
    source: Path
    digest: Digest
    iv: bytes | None
    identity: tuple[int, int, int]  # (size, mtime_ns, inode) of the source at digest time
    data: bytes | None = None  # made here, not copied from ``source`` (the release's SBOM document)

    @property
    def info(self) -> PayloadInfo:
        return PayloadInfo(self.digest.sha256, self.iv.hex() if self.iv else None)


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _check_source(spec: ReleaseSpec, item: Artifact | Script | SbomFile) -> None:
    kind = "artifact" if isinstance(item, Artifact) else "script" if isinstance(item, Script) else "sbom"
    if not item.source.exists():
        raise SpecError(f"{spec.path}: {kind} {item.name!r}: file {item.source} not found")
    if not item.source.is_file():
        raise SpecError(f"{spec.path}: {kind} {item.name!r}: {item.source} is not a regular file")
    if isinstance(item, Artifact) and item.type is ImageType.DELTA:
        from .delta.apply import check_delta

        try:
            check_delta(item.source)
        except PyvorinError as exc:
            raise SpecError(f"{spec.path}: artifact {item.name!r}: {item.source}: {exc}") from exc
    if isinstance(item, Artifact) and item.compressed is not Compression.NONE:
        with open(item.source, "rb") as handle:
            head = handle.read(4)
        if not any(head.startswith(m) for m in COMPRESSION_MAGIC[item.compressed]):
            raise SpecError(
                f"{spec.path}: artifact {item.name!r} is marked compressed: {item.compressed.value} "
                f"but {item.source} is not {item.compressed.value}-compressed"
            )


def prepare(spec: ReleaseSpec, aes_key: aes.AesKey | None) -> list[Payload]:
    """Digest every payload as it will be stored (encrypted ones after encryption)."""
    for item in spec.payloads:
        _check_source(spec, item)
    check_layout(spec)  # before the long part: digesting every image
    payloads = []
    for item in spec.payloads:
        identity = _identity(item.source)
        if isinstance(item, SbomFile):
            try:
                document = sbom.render(sbom.read(item.source))
            except PyvorinError as exc:
                raise SpecError(f"{spec.path}: sbom: {exc}") from exc
            payloads.append(Payload(item.name, item.source, digest_chunks([document]), None, identity, document))
            continue
        encrypted = isinstance(item, Artifact) and item.encrypted
        stored_size = aes.encrypted_size(identity[0]) if encrypted else identity[0]
        if stored_size > MAX_SIZE:
            raise BundleError(
                f"{item.source}: {stored_size} bytes is over the 4 GiB - 1 limit of the cpio format SWUpdate reads; "
                "compress the image or split it into several images"
            )
        iv = None
        if encrypted:
            if aes_key is None:
                raise SpecError(f"{spec.path}: artifact {item.name!r} is encrypted: pass --aes-key")
            iv = aes.derive_iv(aes_key, item.name, sha256_file(item.source))
            digest = digest_chunks(aes.encrypt_chunks(file_chunks(item.source), aes_key, iv))
        else:
            digest = digest_file(item.source)
        payloads.append(Payload(item.name, item.source, digest, iv, identity))
    return payloads


def describe(spec: ReleaseSpec, aes_key: aes.AesKey | None) -> tuple[bytes, list[Payload]]:
    payloads = prepare(spec, aes_key)
    return render_sw_description(spec, {p.name: p.info for p in payloads}), payloads


def cpio_mtime() -> int:
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "0")
    try:
        return max(0, int(epoch))
    except ValueError as exc:
        raise BundleError(f"SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds") from exc


def write_bundle(
    output: Path,
    sw_description: bytes,
    signature: bytes | None,
    payloads: Sequence[Payload],
    aes_key: aes.AesKey | None,
) -> None:
    """Write the cpio atomically: sw-description, its signature, then the payloads."""
    with atomic_output(output) as handle:
        writer = CpioWriter(handle, mtime=cpio_mtime())
        writer.add_bytes(SW_DESCRIPTION, sw_description, byte_sum(sw_description))
        if signature is not None:
            writer.add_bytes(SIGNATURE, signature, byte_sum(signature))
        for payload in payloads:
            if payload.data is not None:
                writer.add_bytes(payload.name, payload.data, payload.digest.cpio_sum)
                continue
            if _identity(payload.source) != payload.identity:
                raise BundleError(f"{payload.source}: changed while the bundle was being built")
            if payload.iv is not None:
                assert aes_key is not None
                chunks = aes.encrypt_chunks(file_chunks(payload.source), aes_key, payload.iv)
                writer.add_chunks(payload.name, payload.digest.size, payload.digest.cpio_sum, chunks)
            else:
                with open(payload.source, "rb") as source:
                    writer.add_from_fd(payload.name, payload.digest.size, payload.digest.cpio_sum, source.fileno())
            if _identity(payload.source) != payload.identity:
                raise BundleError(f"{payload.source}: changed while the bundle was being built")
        writer.finish()


def build(
    spec: ReleaseSpec,
    output: Path,
    signing: SigningOptions | None,
    aes_key: aes.AesKey | None = None,
) -> list[Payload]:
    """Build ``output`` from ``spec``; ``signing=None`` makes an unsigned bundle."""
    sw_description, payloads = describe(spec, aes_key)
    signature = sign_content(sw_description, signing) if signing is not None else None
    write_bundle(output, sw_description, signature, payloads, aes_key)
    return payloads


def sign_bundle(source: Path, output: Path, signing: SigningOptions, *, replace: bool = False) -> None:
    """Sign an unsigned bundle: images are copied member by member, never unpacked."""
    with open_bundle(source) as bundle:
        if bundle.signature is not None and not replace:
            raise BundleError(f"{source}: bundle is already signed (use --replace to sign it again)")
        # Sign only what the device would install: sw-description parses and
        # names every member with its sha256. That reading also gives each
        # member's cpio checksum, which a 070701 input lacks and ours carries.
        try:
            _, reports = check_contents(bundle, source)
        except VerificationError as exc:
            raise BundleError(f"refusing to sign: {exc}") from exc
        signature = sign_content(bundle.sw_description, signing)
        fd = bundle.handle.fileno()
        with atomic_output(output) as handle:
            writer = CpioWriter(handle, mtime=cpio_mtime())
            writer.add_bytes(SW_DESCRIPTION, bundle.sw_description, byte_sum(bundle.sw_description))
            writer.add_bytes(SIGNATURE, signature, byte_sum(signature))
            for member, report in zip(bundle.payloads, reports, strict=True):
                writer.add_from_fd(member.name, member.size, report.cpio_sum, fd, member.data_offset)
            writer.finish()
