"""Verifying a bundle the way SWUpdate will: signature first, then every hash; then, for
verified boot, each dm-verity image against the root hash in its FIT (:mod:`pyvorin.bundle_verity`).

The first problem found is raised as VerificationError; nothing is extracted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature

from . import cms
from .archive import OpenBundle, image_hashes, open_bundle
from .bundle_verity import VerityCheck, check_bundle
from .cpio import member_chunks
from .errors import KeyError_, VerificationError
from .hashing import digest_chunks
from .signers import Scheme, verify_digest
from .signing import load_certificates, load_public_key


@dataclass(frozen=True)
class VerifyOptions:
    """``trust`` is a CA certificate (cms) or a public key / certificate (rsa, rsa-pss)."""

    trust: Path | None
    scheme: Scheme = Scheme.CMS
    purpose: str = "emailProtection"
    allow_unsigned: bool = False


@dataclass(frozen=True)
class MemberReport:
    name: str
    size: int
    sha256: str
    #: The newc-crc checksum of the member's bytes (what a 070702 header carries).
    cpio_sum: int = 0


@dataclass(frozen=True)
class Report:
    version: str
    signer: str  # who signed, or "unsigned"
    members: tuple[MemberReport, ...]
    verity: tuple[VerityCheck, ...] = ()


def check_signature(sw_description: bytes, signature: bytes, options: VerifyOptions) -> str:
    """Return a description of the signer, or raise VerificationError."""
    if options.trust is None:
        raise KeyError_("verification needs --cert (CA certificate) or --key (public key for rsa/rsa-pss)")
    if options.scheme is Scheme.CMS:
        anchors = load_certificates(options.trust)
        return "CMS " + cms.verify(signature, sw_description, anchors, options.purpose).subject
    public_key = load_public_key(options.trust)
    digest = hashlib.sha256(sw_description).digest()
    try:
        verify_digest(public_key, signature, digest, pss=options.scheme is Scheme.RSA_PSS)  # type: ignore[arg-type]
    except (InvalidSignature, ValueError) as exc:
        raise VerificationError(
            f"sw-description signature is invalid for {options.trust} ({options.scheme.value})"
        ) from exc
    return f"{options.scheme.value} key {options.trust}"


def verify_bundle(path: Path, options: VerifyOptions) -> Report:
    with open_bundle(path) as bundle:
        if bundle.signature is None:
            if not options.allow_unsigned:
                raise VerificationError(f"{path}: bundle is not signed (no sw-description.sig)")
            signer = "unsigned"
        else:
            signer = check_signature(bundle.sw_description, bundle.signature, options)
        version, reports = check_contents(bundle, path)
        # Only once every member is the one sw-description names: the FIT and image read are the signed ones.
        return Report(version, signer, reports, check_bundle(bundle, bundle.description()))


def check_contents(bundle: OpenBundle, path: Path) -> tuple[str, tuple[MemberReport, ...]]:
    """sw-description parses, and every member is referenced with its sha256 and present: all but the signature."""
    description = bundle.description()
    software = description.get("software")
    if not isinstance(software, dict):
        raise VerificationError(f"{path}: sw-description has no 'software' group")
    expected = image_hashes(description)
    reports = []
    for member in bundle.payloads:
        if member.name not in expected:
            raise VerificationError(f"{path}: member {member.name!r} is not referenced by sw-description")
        digest = digest_chunks(member_chunks(bundle.handle, member))
        if member.crc and digest.cpio_sum != member.checksum:
            raise VerificationError(f"{path}: member {member.name!r} fails its cpio checksum (corrupted)")
        stated = expected[member.name]
        if None in stated:
            raise VerificationError(f"{path}: sw-description gives no sha256 for {member.name!r}")
        if stated != {digest.sha256}:
            raise VerificationError(f"{path}: member {member.name!r} does not match its sha256 in sw-description")
        reports.append(MemberReport(member.name, member.size, digest.sha256, digest.cpio_sum))
    present = {m.name for m in bundle.payloads}
    missing = sorted(set(expected) - present)
    if missing:
        raise VerificationError(f"{path}: sw-description references {missing[0]!r}, which the bundle lacks")
    version = software.get("version")
    return str(version) if version is not None else "", tuple(reports)
