"""The fleet CA: client certificates for devices, a server certificate for the
rollout server and the MQTT broker, and the revocation list both check.

The fleet CA (``keys init --only fleet``: ``fleet/ca.key``, ``fleet/ca.crt``)
is a different key from the SWUpdate CA on purpose: one says *which device is
talking*, the other *which release may be installed*, and losing one must not
give away the other.

Every certificate the CA issues is recorded in ``fleet/issued.json`` (serial,
subject, expiry, revocation): the CRL is made from it, ``fleet list`` reads it,
and a second certificate for a device that already has a valid one is refused
unless the caller says it replaces it (which revokes the old one). The ledger
is updated under a lock and written atomically, so two release jobs signing at
once cannot lose an entry.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import KeyError_
from .fsutil import (
    PRIVATE_FILE_MODE,
    PUBLIC_FILE_MODE,
    check_private_file,
    ensure_private_dir,
    read_bytes,
    write_atomic,
)
from .keys import MAX_DAYS, MIN_DAYS, spki_fingerprint

CA_KEY = "fleet/ca.key"
CA_CERT = "fleet/ca.crt"
LEDGER = "fleet/issued.json"
CRL = "fleet/crl.pem"
#: A device ID: the board's serial with a prefix, as pyvorin-identity makes it. It is the
#: certificate's common name, the hawkBit controller ID and the MQTT client ID, so it must be
#: safe in a URL path, a topic and a file name.
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: A CSR is a few hundred bytes; anything much larger is not one.
MAX_CSR_BYTES = 64 * 1024
REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
}

CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Issued:
    """One certificate the fleet CA issued, as the ledger records it."""

    serial: str  # hex
    subject: str  # the device ID, or the server's first name
    kind: str  # "device" or "server"
    not_after: str  # ISO 8601, UTC
    fingerprint: str  # sha256 of the certificate (DER)
    revoked: str = ""  # ISO 8601 time of revocation, "" while valid
    reason: str = ""

    def valid_at(self, now: datetime.datetime) -> bool:
        return not self.revoked and datetime.datetime.fromisoformat(self.not_after) > now


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _check_days(days: int) -> None:
    if not MIN_DAYS <= days <= MAX_DAYS:
        raise KeyError_(f"validity of {days} days is outside {MIN_DAYS}..{MAX_DAYS}")


@dataclass(frozen=True)
class FleetCa:
    directory: Path
    key: CaKey
    certificate: x509.Certificate


def load_ca(directory: Path, passphrase: bytes | None = None) -> FleetCa:
    """The fleet CA of a key directory made by ``keys init`` (group ``fleet``)."""
    key_path, cert_path = directory / CA_KEY, directory / CA_CERT
    if not key_path.exists():
        raise KeyError_(f"{key_path}: no fleet CA here (make one: pyvorin keys init {directory} --only fleet)")
    check_private_file(key_path)
    try:
        key = serialization.load_pem_private_key(read_bytes(key_path, "fleet CA key"), passphrase)
    except TypeError as exc:
        raise KeyError_(f"{key_path}: the key is encrypted: give --passphrase-file") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyError_(f"{key_path}: not a PEM private key, or the passphrase is wrong ({exc})") from exc
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise KeyError_(f"{key_path}: the fleet CA key must be EC or RSA")
    try:
        certificate = x509.load_pem_x509_certificate(read_bytes(cert_path, "fleet CA certificate"))
    except ValueError as exc:
        raise KeyError_(f"{cert_path}: not a PEM certificate ({exc})") from exc
    if spki_fingerprint(certificate.public_key()) != spki_fingerprint(key.public_key()):
        raise KeyError_(f"{cert_path} does not belong to {key_path}")
    return FleetCa(directory, key, certificate)


def _organization(ca: FleetCa) -> list[x509.NameAttribute[str]]:
    # Devices and servers carry the CA's organization (and its dev marking), never their own.
    keep = (NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME)
    return [x509.NameAttribute(attr.oid, str(attr.value)) for attr in ca.certificate.subject if attr.oid in keep]


def _builder(ca: FleetCa, common_name: str, public_key: object, days: int) -> x509.CertificateBuilder:
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca.certificate.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([*_organization(ca), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )


def _check_public_key(public_key: object, what: str) -> None:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.name not in ("secp256r1", "secp384r1"):
            raise KeyError_(f"{what}: EC curve {public_key.curve.name} (use P-256 or P-384)")
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            raise KeyError_(f"{what}: RSA-{public_key.key_size} is too small (2048 bits at least)")
    else:
        raise KeyError_(f"{what}: {type(public_key).__name__} keys are not supported (EC P-256/P-384 or RSA)")


def read_csr(path: Path) -> x509.CertificateSigningRequest:
    """A device's CSR, checked: self-signature, one common name that is a device ID, a usable key."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if size > MAX_CSR_BYTES:
        raise KeyError_(f"{path}: {size} bytes is not a certificate request (at most {MAX_CSR_BYTES})")
    data = read_bytes(path, "certificate request")
    try:
        csr = (x509.load_pem_x509_csr(data) if b"-----BEGIN" in data else x509.load_der_x509_csr(data))
    except ValueError as exc:
        raise KeyError_(f"{path}: not a certificate request ({exc})") from exc
    try:
        # cryptography warns of names X.509 forbids as it reads them; they are refused below.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        signed = csr.is_signature_valid
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyError_(f"{path}: unusable certificate request ({exc})") from exc
    if not signed:
        raise KeyError_(f"{path}: the request's signature does not verify (not made with its own key)")
    if len(names) != 1 or not isinstance(names[0].value, str) or not DEVICE_ID.fullmatch(names[0].value):
        shown = [str(n.value)[:80] for n in names[:3]]
        raise KeyError_(f"{path}: common name {shown!r} is not one device ID "
                        f"(letters, digits, '.', '_', '-'; at most 64, starting with a letter or digit)")
    _check_public_key(public_key, str(path))
    return csr


# --- the ledger ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """The ledger's lock: one signer or revoker at a time per key directory."""
    ensure_private_dir(directory / "fleet")
    fd = os.open(directory / "fleet/.lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_ledger(directory: Path) -> tuple[Issued, ...]:
    path = directory / LEDGER
    if not path.exists():
        return ()
    try:
        data = json.loads(read_bytes(path, "fleet ledger"))
        entries = tuple(Issued(**entry) for entry in data["issued"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise KeyError_(f"{path}: not a pyvorin fleet ledger ({exc})") from exc
    for entry in entries:
        if not all(isinstance(value, str) for value in asdict(entry).values()):
            raise KeyError_(f"{path}: entry {entry.serial!r}: every field must be text")
        try:
            datetime.datetime.fromisoformat(entry.not_after)
        except ValueError as exc:
            raise KeyError_(f"{path}: entry {entry.serial}: not_after {entry.not_after!r} is not a time") from exc
    return entries


def _write_ledger(directory: Path, entries: tuple[Issued, ...]) -> None:
    text = json.dumps({"version": 1, "issued": [asdict(entry) for entry in entries]}, indent=2) + "\n"
    write_atomic(directory / LEDGER, text.encode(), mode=PUBLIC_FILE_MODE)


def _record(certificate: x509.Certificate, subject: str, kind: str) -> Issued:
    return Issued(
        serial=format(certificate.serial_number, "x"),
        subject=subject,
        kind=kind,
        not_after=certificate.not_valid_after_utc.isoformat(),
        fingerprint="sha256:" + certificate.fingerprint(hashes.SHA256()).hex(),
    )


def _revoke(entry: Issued, reason: str) -> Issued:
    return replace(entry, revoked=_now().isoformat(), reason=reason)


# --- issuing ------------------------------------------------------------------------------------


def sign_device(ca: FleetCa, csr: x509.CertificateSigningRequest, days: int, *,
                replace_existing: bool = False) -> tuple[bytes, Issued]:
    """A client certificate for the device that made ``csr`` (TLS client authentication only).

    Refuses a device that already holds a valid certificate unless
    ``replace_existing`` (a factory reset made a new key): the old one is then
    revoked as superseded, in the same ledger update."""
    _check_days(days)
    device = str(csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    public_key = csr.public_key()
    certificate = (
        _builder(ca, device, public_key, days)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    issued = _record(certificate, device, "device")
    with _locked(ca.directory):
        entries = read_ledger(ca.directory)
        now = _now()
        holding = [e for e in entries if e.kind == "device" and e.subject == device and e.valid_at(now)]
        if holding and not replace_existing:
            raise KeyError_(f"device {device} already has certificate {holding[0].serial} "
                            "(a re-provisioned device: sign with --replace, which revokes it)")
        entries = tuple(_revoke(e, "superseded") if e in holding else e for e in entries) + (issued,)
        _write_ledger(ca.directory, entries)
        if holding:
            _write_crl(ca, entries, DEFAULT_CRL_DAYS)
    return certificate.public_bytes(serialization.Encoding.PEM), issued


def _server_names(names: tuple[str, ...]) -> list[x509.GeneralName]:
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass  # not an address: a host name, then
        if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.-]{0,252})", name) or ".." in name:
            raise KeyError_(f"server name {name!r} is neither a host name nor an IP address")
        general.append(x509.DNSName(name))
    return general


def sign_server(ca: FleetCa, names: tuple[str, ...], days: int) -> tuple[bytes, bytes, Issued]:
    """A key and a certificate for the rollout server or the broker: TLS server authentication
    for ``names`` (host names or IP addresses; devices check them against the URL they use)."""
    _check_days(days)
    if not names:
        raise KeyError_("a server certificate needs at least one --name (host name or IP address)")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        _builder(ca, names[0], key.public_key(), days)
        .add_extension(x509.SubjectAlternativeName(_server_names(names)), critical=False)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    issued = _record(certificate, names[0], "server")
    with _locked(ca.directory):
        _write_ledger(ca.directory, read_ledger(ca.directory) + (issued,))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM), issued


# --- revocation ---------------------------------------------------------------------------------

#: How long a CRL stays current: servers refuse every client once it has expired, so it is
#: re-made (``fleet crl``) well before; a month leaves room for a missed job.
DEFAULT_CRL_DAYS = 30


def revoke(ca: FleetCa, subject_or_serial: str, reason: str, crl_days: int = DEFAULT_CRL_DAYS) -> list[Issued]:
    """Revoke every valid certificate of a device (or the one with that serial); re-make the CRL."""
    if reason not in REASONS:
        raise KeyError_(f"reason {reason!r}: choose from {', '.join(REASONS)}")
    with _locked(ca.directory):
        entries = read_ledger(ca.directory)
        wanted = subject_or_serial.lower().removeprefix("0x")
        hit = [e for e in entries if not e.revoked and (e.subject == subject_or_serial or e.serial == wanted)]
        if not hit:
            raise KeyError_(f"{subject_or_serial}: no valid certificate of that device or serial in "
                            f"{ca.directory / LEDGER}")
        entries = tuple(_revoke(e, reason) if e in hit else e for e in entries)
        _write_ledger(ca.directory, entries)
        _write_crl(ca, entries, crl_days)
    return hit


def crl_pem(issuer: x509.Name, key: CaKey, entries: tuple[Issued, ...], days: int) -> bytes:
    """A CRL of ``issuer`` listing the revoked ``entries``, current for ``days``."""
    _check_days(days)
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=days))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
    )
    for entry in entries:
        if not entry.revoked:
            continue
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(entry.serial, 16))
            .revocation_date(datetime.datetime.fromisoformat(entry.revoked))
            .add_extension(x509.CRLReason(REASONS.get(entry.reason, x509.ReasonFlags.unspecified)), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(revoked)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _write_crl(ca: FleetCa, entries: tuple[Issued, ...], days: int) -> Path:
    path = ca.directory / CRL
    write_atomic(path, crl_pem(ca.certificate.subject, ca.key, entries, days), mode=PUBLIC_FILE_MODE)
    return path


def make_crl(ca: FleetCa, days: int = DEFAULT_CRL_DAYS) -> Path:
    """Re-make ``fleet/crl.pem`` from the ledger (before the current one's next update)."""
    with _locked(ca.directory):
        return _write_crl(ca, read_ledger(ca.directory), days)
