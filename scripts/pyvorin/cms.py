"""CMS (PKCS#7) detached signatures, as SWUpdate's CMS mode verifies them.

:func:`sign` produces what ``openssl cms -sign -binary -outform DER -nosmimecap``
produces: SignedData over ``id-data`` with no embedded content, the signer
certificate (and any intermediates) included, signed attributes contentType,
messageDigest and - only when SOURCE_DATE_EPOCH pins it - signingTime, so that
the same inputs give the same bytes.  :func:`verify` checks such a signature
the way OpenSSL's ``CMS_verify`` does with an S/MIME purpose.
"""

from __future__ import annotations

import datetime
import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from . import der
from .errors import VerificationError
from .signers import Signer

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
OID_RSA = "1.2.840.113549.1.1.1"
OID_RSA_PSS = "1.2.840.113549.1.1.10"
OID_MGF1 = "1.2.840.113549.1.1.8"
OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
_HASHES = {
    "2.16.840.1.101.3.4.2.1": hashes.SHA256(),
    "2.16.840.1.101.3.4.2.2": hashes.SHA384(),
    "2.16.840.1.101.3.4.2.3": hashes.SHA512(),
}
_SIG_WITH_HASH = {  # sha*WithRSAEncryption: some signers name the hash in the OID
    "1.2.840.113549.1.1.11": "rsa",
    "1.2.840.113549.1.1.12": "rsa",
    "1.2.840.113549.1.1.13": "rsa",
    OID_ECDSA_SHA256: "ec",
    "1.2.840.10045.4.3.3": "ec",
    "1.2.840.10045.4.3.4": "ec",
}
OID_SHA256 = "2.16.840.1.101.3.4.2.1"

PURPOSES = {
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
}


def _attribute(oid: str, value: bytes) -> bytes:
    return der.sequence(der.oid(oid), der.set_of(value))


def sign(
    content: bytes,
    signer: Signer,
    certificate: x509.Certificate,
    extra_certificates: Sequence[x509.Certificate] = (),
    signing_time: datetime.datetime | None = None,
) -> bytes:
    """A DER CMS SignedData with a detached signature over ``content``."""
    from cryptography.hazmat.primitives.serialization import Encoding

    digest = hashlib.sha256(content).digest()
    attributes = [
        _attribute(OID_CONTENT_TYPE, der.oid(OID_DATA)),
        _attribute(OID_MESSAGE_DIGEST, der.octet_string(digest)),
    ]
    if signing_time is not None:
        attributes.append(_attribute(OID_SIGNING_TIME, der.utc_time(signing_time)))
    attrs_body = b"".join(sorted(attributes))  # DER SET OF order
    # The signature covers the attributes encoded with the SET tag (RFC 5652 5.4).
    to_sign = hashlib.sha256(der.tlv(der.SET, attrs_body)).digest()
    public_key = certificate.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        signature_algorithm = der.sequence(der.oid(OID_RSA), der.null())
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        signature_algorithm = der.sequence(der.oid(OID_ECDSA_SHA256))
    else:
        raise VerificationError("the signing certificate must hold an RSA or EC key")
    signature = signer.sign_digest(to_sign)
    sha256_alg = der.sequence(der.oid(OID_SHA256))
    issuer_and_serial = der.sequence(certificate.issuer.public_bytes(), der.integer(certificate.serial_number))
    signer_info = der.sequence(
        der.integer(1),
        issuer_and_serial,
        sha256_alg,
        der.context(0, attrs_body),
        signature_algorithm,
        der.octet_string(signature),
    )
    certs = b"".join(c.public_bytes(Encoding.DER) for c in (certificate, *extra_certificates))
    signed_data = der.sequence(
        der.integer(1),
        der.set_of(sha256_alg),
        der.sequence(der.oid(OID_DATA)),
        der.context(0, certs),
        der.set_of(signer_info),
    )
    return der.sequence(der.oid(OID_SIGNED_DATA), der.context(0, signed_data))


@dataclass(frozen=True)
class SignerResult:
    """Who signed: the signer certificate and the chain up to the trust anchor."""

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()


@dataclass(frozen=True)
class _SignerInfo:
    issuer: bytes
    serial: int
    digest_oid: str
    signed_attrs: der.Element | None
    signature_algorithm: der.Element
    signature: bytes


def _parse(signature_der: bytes) -> tuple[list[x509.Certificate], list[_SignerInfo]]:
    content_info = der.decode_one(signature_der).expect(der.SEQUENCE, "ContentInfo")
    parts = content_info.children()
    if len(parts) != 2 or parts[0].tag != der.OID or parts[0].as_oid() != OID_SIGNED_DATA or parts[1].tag != 0xA0:
        raise VerificationError("signature is not a CMS SignedData")
    signed_data = parts[1].fields("[0] content", 1, 1)[0].expect(der.SEQUENCE, "SignedData").children()
    if len(signed_data) < 4:
        raise VerificationError("CMS SignedData is incomplete")
    # OpenSSL (and so the device's swupdate) sets up a digest for every
    # algorithm SignedData lists and refuses one it does not know.
    for algorithm in signed_data[1].expect(der.SET, "digestAlgorithms").children():
        oid = algorithm.expect(der.SEQUENCE, "DigestAlgorithmIdentifier").fields("DigestAlgorithmIdentifier", 1)[0]
        if oid.as_oid() not in _HASHES:
            raise VerificationError(f"CMS SignedData lists an unknown digest algorithm {oid.as_oid()}")
    encap = signed_data[2].expect(der.SEQUENCE, "EncapsulatedContentInfo").fields("EncapsulatedContentInfo", 1)
    if encap[0].as_oid() != OID_DATA:
        raise VerificationError("CMS signature does not cover plain data")
    if len(encap) > 1:
        raise VerificationError("CMS signature embeds its content; SWUpdate needs a detached signature")
    certificates: list[x509.Certificate] = []
    infos_element = signed_data[-1].expect(der.SET, "SignerInfos")
    for element in signed_data[3:-1]:
        if element.tag == 0xA0:
            for cert in element.children():
                try:
                    # cryptography parses names and extensions on first use,
                    # and only warns about some bounds (RFC 5280 upper bounds):
                    # parse all now, warnings as errors, so a malformed
                    # certificate is refused here and not deep in the chain.
                    with warnings.catch_warnings():
                        warnings.simplefilter("error")
                        loaded = x509.load_der_x509_certificate(cert.raw)
                        loaded.issuer.public_bytes(), loaded.subject.public_bytes(), loaded.extensions
                        loaded.public_key()
                    certificates.append(loaded)
                except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion, Warning) as exc:
                    raise VerificationError(f"CMS signature holds a malformed certificate: {exc}") from exc
    infos = []
    for info in infos_element.children():
        fields = info.expect(der.SEQUENCE, "SignerInfo").children()
        if len(fields) < 5:
            raise VerificationError("CMS SignerInfo is incomplete")
        sid = fields[1]
        if sid.tag != der.SEQUENCE:
            raise VerificationError("CMS signer identified by key id; expected issuer and serial number")
        issuer, serial = sid.fields("IssuerAndSerialNumber", 2, 2)
        issuer.expect(der.SEQUENCE, "issuer Name")
        digest_oid = fields[2].expect(der.SEQUENCE, "DigestAlgorithmIdentifier").fields(
            "DigestAlgorithmIdentifier", 1)[0].as_oid()
        index = 3
        signed_attrs = None
        if fields[index].tag == 0xA0:
            signed_attrs = fields[index]
            index += 1
        if len(fields) < index + 2:
            raise VerificationError("CMS SignerInfo is incomplete")
        infos.append(
            _SignerInfo(
                issuer=issuer.raw,
                serial=serial.as_int(),
                digest_oid=digest_oid,
                signed_attrs=signed_attrs,
                signature_algorithm=fields[index].expect(der.SEQUENCE, "signatureAlgorithm"),
                signature=fields[index + 1].expect(der.OCTET_STRING, "signature").content,
            )
        )
    if not infos:
        raise VerificationError("CMS signature has no signer")
    return certificates, infos


def _check_attributes(attrs: der.Element, content_digest: bytes) -> None:
    seen: dict[str, bytes] = {}
    for attribute in attrs.children():
        oid_element, values = attribute.expect(der.SEQUENCE, "Attribute").fields("Attribute", 2, 2)
        value = values.expect(der.SET, "AttributeValues").fields("AttributeValues", 1)[0]
        seen[oid_element.as_oid()] = value.raw
    if OID_CONTENT_TYPE not in seen or der.decode_one(seen[OID_CONTENT_TYPE]).as_oid() != OID_DATA:
        raise VerificationError("CMS signed attributes lack contentType id-data")
    if OID_MESSAGE_DIGEST not in seen:
        raise VerificationError("CMS signed attributes lack messageDigest")
    digest = der.decode_one(seen[OID_MESSAGE_DIGEST]).expect(der.OCTET_STRING, "messageDigest")
    if digest.content != content_digest:
        raise VerificationError("sw-description does not match its signature (message digest differs)")


def _verify_signature(cert: x509.Certificate, info: _SignerInfo, data: bytes, hash_alg: hashes.HashAlgorithm) -> None:
    key = cert.public_key()
    alg_oid = info.signature_algorithm.fields("signatureAlgorithm", 1)[0].as_oid()
    try:
        if isinstance(key, rsa.RSAPublicKey) and (alg_oid == OID_RSA or _SIG_WITH_HASH.get(alg_oid) == "rsa"):
            key.verify(info.signature, data, padding.PKCS1v15(), hash_alg)
        elif isinstance(key, rsa.RSAPublicKey) and alg_oid == OID_RSA_PSS:
            key.verify(info.signature, data, padding.PSS(padding.MGF1(hash_alg), padding.PSS.AUTO), hash_alg)
        elif isinstance(key, ec.EllipticCurvePublicKey) and _SIG_WITH_HASH.get(alg_oid) == "ec":
            key.verify(info.signature, data, ec.ECDSA(hash_alg))
        else:
            raise VerificationError(f"unsupported CMS signature algorithm {alg_oid} for this key")
    except InvalidSignature as exc:
        raise VerificationError("CMS signature is invalid (signed with another key, or altered)") from exc


def _check_purpose(cert: x509.Certificate, purpose: str) -> None:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not (usage.digital_signature or usage.content_commitment):
            raise VerificationError(f"signer certificate {cert.subject.rfc4514_string()} lacks keyUsage digitalSignature")
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if PURPOSES[purpose] not in eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
        raise VerificationError(
            f"signer certificate {cert.subject.rfc4514_string()} is not valid for {purpose} "
            "(SWUpdate --cert-purpose); check its extendedKeyUsage"
        )


def _may_issue(cert: x509.Certificate) -> bool:
    """CA:TRUE, and keyCertSign when keyUsage is present: what OpenSSL demands of an issuer."""
    try:
        if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    try:
        return bool(cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign)
    except x509.ExtensionNotFound:
        return True


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _within_validity(cert: x509.Certificate, now: datetime.datetime) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise VerificationError(
            f"certificate {cert.subject.rfc4514_string()} is not valid now "
            f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})"
        )


def _build_chain(
    leaf: x509.Certificate, pool: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate],
    now: datetime.datetime,
) -> tuple[x509.Certificate, ...]:
    """The chain from *leaf* to a self-signed trusted certificate, as OpenSSL builds it for SWUpdate.

    SWUpdate sets no partial-chain flag: a chain is trusted only when it ends
    in a self-signed certificate from the trust file, so a leaf or an
    intermediate given as the "CA" does not make its signatures valid.
    """
    chain = [leaf]
    current = leaf
    for _ in range(8):
        _within_validity(current, now)
        if current in anchors and _self_signed(current):
            return tuple(chain)
        for issuer in [*anchors, *pool]:
            if issuer.subject != current.issuer or issuer == current or not _may_issue(issuer):
                continue
            try:
                current.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                continue
            chain.append(issuer)
            current = issuer
            break
        else:
            raise VerificationError(
                f"signer certificate {leaf.subject.rfc4514_string()} does not chain to a self-signed CA "
                "certificate of the given trust file"
            )
    raise VerificationError("certificate chain is too long")


def verify(
    signature_der: bytes,
    content: bytes,
    anchors: Sequence[x509.Certificate],
    purpose: str = "emailProtection",
    now: datetime.datetime | None = None,
) -> SignerResult:
    """Verify a detached CMS signature; raise VerificationError naming the problem."""
    now = now or datetime.datetime.now(datetime.UTC)
    certificates, infos = _parse(signature_der)
    result: SignerResult | None = None
    for info in infos:
        hash_alg = _HASHES.get(info.digest_oid)
        if hash_alg is None:
            raise VerificationError(f"unsupported CMS digest algorithm {info.digest_oid}")
        cert = next(
            (c for c in certificates if c.issuer.public_bytes() == info.issuer and c.serial_number == info.serial),
            None,
        ) or next(
            (c for c in anchors if c.issuer.public_bytes() == info.issuer and c.serial_number == info.serial),
            None,
        )
        if cert is None:
            raise VerificationError("CMS signature does not include the signer's certificate")
        hasher = hashes.Hash(hash_alg)
        hasher.update(content)
        content_digest = hasher.finalize()
        if info.signed_attrs is not None:
            _check_attributes(info.signed_attrs, content_digest)
            data = der.tlv(der.SET, info.signed_attrs.content)
        else:
            data = content
        _verify_signature(cert, info, data, hash_alg)
        _check_purpose(cert, purpose)
        chain = _build_chain(cert, certificates, anchors, now)
        result = result or SignerResult(cert, chain)
    assert result is not None
    return result
