"""Making the signature of sw-description in any of SWUpdate's three schemes."""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import cms, keys
from .errors import KeyError_
from .fsutil import read_bytes
from .pkcs11uri import is_pkcs11_uri
from .signers import Scheme, check_signature_matches, open_signer


@dataclass(frozen=True)
class SigningOptions:
    """``key`` is a PEM path or a ``pkcs11:`` URI; ``cert`` may hold a chain."""

    key: str
    cert: Path | None = None
    scheme: Scheme = Scheme.CMS
    passphrase_file: Path | None = None
    production: bool = False


def load_certificates(path: Path) -> list[x509.Certificate]:
    data = read_bytes(path, "certificate")
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise KeyError_(f"{path}: not an X.509 certificate (PEM or DER)") from exc
    if not certs:
        raise KeyError_(f"{path}: no certificate found")
    return certs


def load_public_key(path: Path) -> object:
    """A PEM public key, or the key of a PEM certificate (for --scheme rsa/rsa-pss)."""
    data = read_bytes(path, "public key")
    if b"CERTIFICATE" in data:
        return load_certificates(path)[0].public_key()
    try:
        return serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyError_(f"{path}: not a PEM public key or certificate") from exc


def signing_time() -> datetime.datetime | None:
    """signingTime only when reproducible: pinned by SOURCE_DATE_EPOCH."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return None
    try:
        return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    except ValueError as exc:
        raise KeyError_(f"SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds") from exc


def sign_content(content: bytes, options: SigningOptions) -> bytes:
    """The sw-description.sig bytes for ``content``."""
    certs: list[x509.Certificate] = []
    if options.cert is not None:
        certs = load_certificates(options.cert)
    if options.scheme is Scheme.CMS and not certs:
        raise KeyError_("CMS signing needs the signer certificate: pass --cert")
    if options.production:
        if not certs:
            raise KeyError_("--production needs --cert to check the key is not a development key")
        manifest_dir = None if is_pkcs11_uri(options.key) else keys.find_manifest(Path(options.key))
        if manifest_dir is None and options.cert is not None:
            manifest_dir = keys.find_manifest(options.cert)
        keys.refuse_dev_key(certs[0], options.key, manifest_dir)
    signer = open_signer(options.key, options.passphrase_file)
    try:
        pss = options.scheme is Scheme.RSA_PSS
        if options.scheme is not Scheme.CMS and not signer.is_rsa:
            raise KeyError_(f"{signer.describe()}: --scheme {options.scheme.value} needs an RSA key")
        if certs:
            check_signature_matches(signer, certs[0].public_key(), pss=pss)  # type: ignore[arg-type]
        if options.scheme is Scheme.CMS:
            return cms.sign(content, signer, certs[0], certs[1:], signing_time())
        return signer.sign_digest(hashlib.sha256(content).digest(), pss=pss)
    finally:
        close = getattr(signer, "close", None)
        if close is not None:
            close()
