"""Signers: a private key behind one small interface.

A key reference is either a PEM file path or an RFC 7512 ``pkcs11:`` URI, so a
CI signing host can keep the key in an HSM and nothing else changes.  A signer
only ever signs a SHA-256 digest; the CMS and raw-RSA formats are built around
it elsewhere.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from . import pkcs11uri
from .errors import KeyError_, SigningError
from .fsutil import check_private_file, read_bytes

SHA256 = hashes.SHA256()
# DER DigestInfo prefix for SHA-256 (RFC 8017 9.2 note 1), for raw RSA tokens.
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


class Scheme(enum.Enum):
    """How a signature is made; the names are what ``--scheme`` takes."""

    CMS = "cms"  # PKCS#1 v1.5 inside CMS, what SWUpdate's CMS mode verifies
    RSA = "rsa"  # bare PKCS#1 v1.5, as `openssl dgst -sha256 -sign`
    RSA_PSS = "rsa-pss"  # bare RSASSA-PSS, as `openssl dgst ... -sigopt rsa_padding_mode:pss`


PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class Signer(Protocol):
    """Signs SHA-256 digests; ``describe`` names the key without secrets."""

    @property
    def is_rsa(self) -> bool: ...

    def describe(self) -> str: ...

    def sign_digest(self, digest: bytes, *, pss: bool = False) -> bytes: ...


def pss_padding_for_signing() -> padding.PSS:
    # Maximum salt, like `openssl dgst -sigopt rsa_pss_saltlen:-2` (meta-swupdate).
    return padding.PSS(mgf=padding.MGF1(SHA256), salt_length=padding.PSS.MAX_LENGTH)


def verify_digest(public_key: PublicKey, signature: bytes, digest: bytes, *, pss: bool = False) -> None:
    """Raise InvalidSignature unless ``signature`` is over ``digest``."""
    prehashed = utils.Prehashed(SHA256)
    if isinstance(public_key, rsa.RSAPublicKey):
        pad = padding.PSS(padding.MGF1(SHA256), padding.PSS.AUTO) if pss else padding.PKCS1v15()
        public_key.verify(signature, digest, pad, prehashed)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if pss:
            raise InvalidSignature("RSA-PSS needs an RSA key")
        public_key.verify(signature, digest, ec.ECDSA(prehashed))
    else:  # pragma: no cover - guarded by loaders
        raise InvalidSignature("unsupported public key type")


@dataclass(frozen=True)
class FileSigner:
    """A private key held in a PEM (or DER) file, optionally passphrase-protected."""

    path: Path
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    @property
    def is_rsa(self) -> bool:
        return isinstance(self.key, rsa.RSAPrivateKey)

    def describe(self) -> str:
        return str(self.path)

    def public_key(self) -> PublicKey:
        return self.key.public_key()

    def sign_digest(self, digest: bytes, *, pss: bool = False) -> bytes:
        prehashed = utils.Prehashed(SHA256)
        if isinstance(self.key, rsa.RSAPrivateKey):
            pad = pss_padding_for_signing() if pss else padding.PKCS1v15()
            return self.key.sign(digest, pad, prehashed)
        if pss:
            raise KeyError_(f"{self.path}: RSA-PSS needs an RSA key, this is an EC key")
        return self.key.sign(digest, ec.ECDSA(prehashed))


def load_private_key(path: Path, passphrase: bytes | None) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """Load a PEM/DER private key with a clear error for each way it can fail."""
    data = read_bytes(path, "private key")
    check_private_file(path)
    loaders = (serialization.load_pem_private_key, serialization.load_der_private_key)
    if b"-----BEGIN" not in data:
        loaders = loaders[::-1]
    last: Exception | None = None
    for loader in loaders:
        try:
            key = loader(data, password=passphrase)
            break
        except TypeError as exc:
            text = str(exc)
            if "encrypted" in text and passphrase is None:
                raise KeyError_(f"{path}: key is passphrase-protected; pass --passphrase-file") from exc
            if "not encrypted" in text:
                raise KeyError_(f"{path}: key is not encrypted but a passphrase was given") from exc
            last = exc
        except (ValueError, UnsupportedAlgorithm) as exc:
            last = exc
    else:
        if passphrase is not None and b"ENCRYPTED" in data:
            raise KeyError_(f"{path}: wrong passphrase for this key") from last
        raise KeyError_(f"{path}: not a private key in PEM or DER form ({last})") from last
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise KeyError_(f"{path}: {type(key).__name__.lstrip('_')} keys cannot sign SWUpdate bundles; use RSA or EC")
    return key


class Pkcs11Signer:
    """A private key in a PKCS#11 token (HSM, smart card, SoftHSM in tests).

    The session stays open for the signer's lifetime; call :meth:`close`.
    """

    def __init__(self, uri: pkcs11uri.Pkcs11Uri) -> None:
        try:
            import pkcs11
        except ImportError as exc:
            raise KeyError_(
                "PKCS#11 keys need the python-pkcs11 package: pip install 'pyvorin[pkcs11]'"
            ) from exc
        self._pkcs11 = pkcs11
        self.uri = uri
        module = uri.query.get("module-path") or os.environ.get("PYVORIN_PKCS11_MODULE")
        if not module:
            raise KeyError_(
                f"{uri.redacted()}: no PKCS#11 module; add ?module-path=... or set PYVORIN_PKCS11_MODULE"
            )
        pin = self._pin()
        session = None
        try:
            lib = pkcs11.lib(module)
            token = self._select_token(lib, module)
            session = token.open(user_pin=pin)  # type: ignore[attr-defined]
            attrs: dict[str, object] = {"object_class": pkcs11.ObjectClass.PRIVATE_KEY}
            if uri.label is not None:
                attrs["label"] = uri.label
            if uri.object_id is not None:
                attrs["id"] = uri.object_id
            self._key = session.get_key(**attrs)
            self.is_rsa = self._key.key_type == pkcs11.KeyType.RSA
            if not self.is_rsa and self._key.key_type != pkcs11.KeyType.EC:
                raise KeyError_(f"{uri.redacted()}: key type {self._key.key_type.name} cannot sign; use RSA or EC")
        except BaseException as exc:
            if session is not None:
                session.close()
            if isinstance(exc, pkcs11.NoSuchKey):
                hint = "" if pin is not None else (
                    " (no PIN given, and private keys are only visible after login: "
                    "add pin-source=... or set PYVORIN_PKCS11_PIN)"
                )
                raise KeyError_(f"{uri.redacted()}: no private key matches the URI{hint}") from exc
            if isinstance(exc, pkcs11.MultipleObjectsReturned):
                raise KeyError_(f"{uri.redacted()}: several keys match; add object= or id=") from exc
            if isinstance(exc, pkcs11.PinIncorrect):
                raise KeyError_(f"{uri.redacted()}: the token rejected the PIN") from exc
            if isinstance(exc, (pkcs11.PKCS11Error, RuntimeError, OSError)):
                raise KeyError_(f"{uri.redacted()}: {type(exc).__name__} {exc}".rstrip()) from exc
            raise
        self._session = session

    # RFC 7512 attributes naming a slot or token, and where python-pkcs11 reports each.
    _SLOT_ATTRS = (("slot-description", "slot_description"), ("slot-manufacturer", "manufacturer_id"))
    _TOKEN_ATTRS = (("token", "label"), ("manufacturer", "manufacturer_id"), ("model", "model"))
    _LIBRARY_ATTRS = (("library-manufacturer", "manufacturer_id"), ("library-description", "library_description"))

    def _select_token(self, lib: object, module: str) -> object:
        """The one initialised token matching every slot/token/library attribute of the URI."""
        pkcs11 = self._pkcs11
        path = self.uri.path
        redacted = self.uri.redacted()
        for attr, field_name in self._LIBRARY_ATTRS:
            if attr in path and getattr(lib, field_name) != path[attr]:
                raise KeyError_(f"{redacted}: {module} is not {attr} {path[attr]!r}")
        if "library-version" in path:
            major, _, minor = path["library-version"].partition(".")
            try:
                wanted = (int(major), int(minor or 0))
            except ValueError as exc:
                raise KeyError_(f"{redacted}: library-version must be M or M.N") from exc
            if tuple(lib.library_version) != wanted:  # type: ignore[attr-defined]
                raise KeyError_(f"{redacted}: {module} is not library-version {path['library-version']}")
        slot_id: int | None = None
        if "slot-id" in path:
            try:
                slot_id = int(path["slot-id"], 10)
            except ValueError as exc:
                raise KeyError_(f"{redacted}: slot-id must be a decimal number") from exc
        matches = []
        for slot in lib.get_slots(token_present=True):  # type: ignore[attr-defined]
            if slot_id is not None and slot.slot_id != slot_id:
                continue
            if any(attr in path and getattr(slot, f) != path[attr] for attr, f in self._SLOT_ATTRS):
                continue
            try:
                token = slot.get_token()
            except (pkcs11.TokenNotPresent, pkcs11.TokenNotRecognised):
                continue
            if not token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED:
                continue
            if any(attr in path and getattr(token, f) != path[attr] for attr, f in self._TOKEN_ATTRS):
                continue
            if "serial" in path and token.serial.decode(errors="replace") != path["serial"]:
                continue
            matches.append(token)
        if not matches:
            if self.uri.token is not None and path.keys() <= {"token", "object", "type"}:
                raise KeyError_(f"{redacted}: no token labelled {self.uri.token!r}")
            raise KeyError_(f"{redacted}: no initialised token in {module} matches the URI")
        if len(matches) > 1:
            raise KeyError_(f"{redacted}: {len(matches)} tokens match; add token= or serial=")
        return matches[0]

    def _pin(self) -> str | None:
        if "pin-value" in self.uri.query:
            return self.uri.query["pin-value"]
        if "pin-source" in self.uri.query:
            source = self.uri.query["pin-source"].removeprefix("file:")
            return read_bytes(Path(source), "PIN file").decode().strip()
        return os.environ.get("PYVORIN_PKCS11_PIN")

    def describe(self) -> str:
        return self.uri.redacted()

    def sign_digest(self, digest: bytes, *, pss: bool = False) -> bytes:
        pkcs11 = self._pkcs11
        try:
            if not self.is_rsa:
                if pss:
                    raise KeyError_(f"{self.describe()}: RSA-PSS needs an RSA key, this is an EC key")
                raw = self._key.sign(digest, mechanism=pkcs11.Mechanism.ECDSA)
                half = len(raw) // 2
                return utils.encode_dss_signature(
                    int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
                )
            if pss:
                em_len = (self._key.key_length - 1 + 7) // 8
                params = (pkcs11.Mechanism.SHA256, pkcs11.MGF.SHA256, em_len - len(digest) - 2)
                return bytes(self._key.sign(digest, mechanism=pkcs11.Mechanism.RSA_PKCS_PSS, mechanism_param=params))
            return bytes(self._key.sign(_SHA256_DIGEST_INFO + digest, mechanism=pkcs11.Mechanism.RSA_PKCS))
        except pkcs11.PKCS11Error as exc:
            raise SigningError(f"{self.describe()}: token refused to sign: {type(exc).__name__}") from exc

    def close(self) -> None:
        self._session.close()


def open_signer(ref: str, passphrase_file: Path | None = None) -> FileSigner | Pkcs11Signer:
    """Open the key named by ``ref``: a file path or a ``pkcs11:`` URI."""
    if pkcs11uri.is_pkcs11_uri(ref):
        if passphrase_file is not None:
            raise KeyError_("--passphrase-file does not apply to PKCS#11 keys; put the PIN in the URI's pin-source")
        return Pkcs11Signer(pkcs11uri.parse(ref))
    passphrase = None
    if passphrase_file is not None:
        passphrase = read_passphrase(passphrase_file)
    path = Path(ref)
    return FileSigner(path, load_private_key(path, passphrase))


def read_passphrase(path: Path) -> bytes:
    """A passphrase file holds one line; the trailing newline is not part of it."""
    data = read_bytes(path, "passphrase file").rstrip(b"\r\n")
    if not data:
        raise KeyError_(f"{path}: passphrase file is empty")
    return data


def check_signature_matches(signer: Signer, public_key: PublicKey, *, pss: bool = False) -> None:
    """Sign a probe digest and verify it, so a key/certificate mismatch fails early."""
    probe = hashes.Hash(SHA256)
    probe.update(b"pyvorin key/certificate match probe")
    digest = probe.finalize()
    try:
        verify_digest(public_key, signer.sign_digest(digest, pss=pss), digest, pss=pss)
    except InvalidSignature as exc:
        raise KeyError_(f"{signer.describe()}: the key does not match the certificate") from exc
