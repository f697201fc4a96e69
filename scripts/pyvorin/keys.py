"""Generating and describing the keys a Pyvorin release needs.

``keys init DIR`` writes, under a 0700 directory, one file per key in the form
its consumer expects, plus ``manifest.json`` with public fingerprints.  Nothing
existing is overwritten without ``force``; every file is written atomically,
private ones with mode 0600 from the start.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import aes
from .errors import KeyError_, PyvorinError
from .fsutil import PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, atomic_output, ensure_private_dir, read_bytes, write_atomic

MANIFEST = "manifest.json"
DEV_UNIT = "pyvorin-dev"  # organizationalUnit of development certificates


class Purpose(enum.Enum):
    EMAIL = "emailProtection"
    CODE = "codeSigning"


#: Certificate validity bounds: a day at least; at most 100 years, well inside
#: X.509's GeneralizedTime and what any device clock will reach.
MIN_DAYS, MAX_DAYS = 1, 36500
#: X.509 names allow 64 characters; the longest common name adds 24 to it.
MAX_ORGANIZATION = 40


@dataclass(frozen=True)
class KeyOptions:
    directory: Path
    dev: bool = True
    self_signed: bool = False
    rsa_bits: int = 4096
    purpose: Purpose = Purpose.EMAIL
    passphrase: bytes | None = None
    force: bool = False
    organization: str = "Pyvorin"
    days: int = 3650
    groups: tuple[str, ...] = ("swupdate", "tegra", "rpi", "fleet")

    def __post_init__(self) -> None:
        if not MIN_DAYS <= self.days <= MAX_DAYS:
            raise KeyError_(f"certificate validity of {self.days} days is outside {MIN_DAYS}..{MAX_DAYS}")
        if not 1 <= len(self.organization) <= MAX_ORGANIZATION or not self.organization.isprintable():
            raise KeyError_(f"organization {self.organization!r}: 1 to {MAX_ORGANIZATION} printable characters "
                            "(it becomes part of every certificate's name)")
        twice = sorted({g for g in self.groups if self.groups.count(g) > 1})
        if twice:
            raise KeyError_(f"key group {twice[0]!r} is listed twice")


@dataclass(frozen=True)
class ManifestEntry:
    """One key file as the manifest records it (never any secret)."""

    file: str
    role: str
    algorithm: str
    fingerprint: str  # sha256 of the public key (SPKI DER) or a key check value
    private: bool
    consumer: str  # the kas/BitBake variable or tool that reads the file
    dev: bool = True
    encrypted: bool = False


@dataclass(frozen=True)
class Manifest:
    entries: tuple[ManifestEntry, ...]
    created: str = ""
    tool: str = "pyvorin"
    version: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> bytes:
        data = asdict(self)
        return (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()


def spki_fingerprint(public_key: object) -> str:
    der = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def symmetric_check_value(secret: bytes) -> str:
    # A one-way check value: tells two key files apart without revealing either.
    return "kcv:" + hashlib.sha256(b"pyvorin-kcv\x00" + secret).hexdigest()[:16]


def _name(options: KeyOptions, common_name: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, options.organization)]
    if options.dev:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, DEV_UNIT))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _certificate(
    subject: x509.Name, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    options: KeyOptions, *, ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=options.days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_key is not key:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        usage = ExtendedKeyUsageOID.CODE_SIGNING if options.purpose is Purpose.CODE else ExtendedKeyUsageOID.EMAIL_PROTECTION
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, passphrase: bytes | None, *, traditional: bool = False) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    fmt = serialization.PrivateFormat.TraditionalOpenSSL if traditional else serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pub_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class _Plan:
    """Files to write, gathered first so nothing is written if any exists."""

    files: list[tuple[str, bytes, bool]] = field(default_factory=list)
    entries: list[ManifestEntry] = field(default_factory=list)

    def add(self, name: str, data: bytes, *, private: bool) -> None:
        self.files.append((name, data, private))


def _plan_swupdate(plan: _Plan, options: KeyOptions) -> None:
    passphrase = options.passphrase
    signer_key = rsa.generate_private_key(65537, options.rsa_bits)
    signer_name = _name(options, f"{options.organization} SWUpdate signer")
    if options.self_signed:
        signer = _certificate(signer_name, signer_key, signer_name, signer_key, options, ca=False)
    else:
        ca_key = rsa.generate_private_key(65537, options.rsa_bits)
        ca_name = _name(options, f"{options.organization} SWUpdate CA")
        ca = _certificate(ca_name, ca_key, ca_name, ca_key, options, ca=True)
        signer = _certificate(signer_name, signer_key, ca_name, ca_key, options, ca=False)
        plan.add("swupdate/ca.key", _pem_key(ca_key, passphrase), private=True)
        plan.add("swupdate/ca.crt", _cert_pem(ca), private=False)
        fp = spki_fingerprint(ca_key.public_key())
        plan.entries += [
            ManifestEntry("swupdate/ca.key", "SWUpdate CA private key (keep offline)", f"RSA-{options.rsa_bits}",
                          fp, True, "offline: signs signer certificates", options.dev, bool(passphrase)),
            ManifestEntry("swupdate/ca.crt", "SWUpdate CA certificate: the device trust anchor (swupdate -k)",
                          "X.509", fp, False, "SWUPDATE_CA_CERT (installed on the device)", options.dev),
        ]
    fp = spki_fingerprint(signer_key.public_key())
    plan.add("swupdate/signer.key", _pem_key(signer_key, passphrase), private=True)
    plan.add("swupdate/signer.crt", _cert_pem(signer), private=False)
    plan.entries += [
        ManifestEntry("swupdate/signer.key", "SWUpdate CMS signing key", f"RSA-{options.rsa_bits}", fp, True,
                      "PYVORIN_SIGNING_KEY / pyvorin bundle --key", options.dev, bool(passphrase)),
        ManifestEntry("swupdate/signer.crt", f"SWUpdate CMS signer certificate ({options.purpose.value})", "X.509",
                      fp, False, "PYVORIN_SIGNING_CERT / pyvorin bundle --cert", options.dev),
    ]
    aes_key = aes.generate()
    plan.add("swupdate/aes.key", aes_key.to_swupdate(), private=True)
    plan.entries.append(
        ManifestEntry("swupdate/aes.key", "SWUpdate image encryption key (swupdate -K format: key iv)", "AES-256-CBC",
                      symmetric_check_value(aes_key.key), True, "SWUPDATE_AES_FILE / pyvorin bundle --aes-key",
                      options.dev)
    )


def _sbk_words(secret: bytes) -> bytes:
    # tegraflash reads the SBK as 32-bit big-endian words: "0x01234567 0x89abcdef ...".
    words = [secret[i : i + 4].hex() for i in range(0, len(secret), 4)]
    return (" ".join("0x" + w for w in words) + "\n").encode()


def _plan_tegra(plan: _Plan, options: KeyOptions) -> None:
    pkc = rsa.generate_private_key(65537, 3072)  # Orin PKC: RSA-3072 (RSA-2048 is refused)
    # NVIDIA's tegrasign wants the traditional "RSA PRIVATE KEY" PEM, unencrypted.
    plan.add("tegra/rsa_priv.pem", _pem_key(pkc, None, traditional=True), private=True)
    plan.add("tegra/rsa_pub.pem", _pub_pem(pkc), private=False)
    sbk = os.urandom(32)
    plan.add("tegra/sbk.key", _sbk_words(sbk), private=True)
    ekb = {name: os.urandom(size) for name, size in (("oem_k1.key", 32), ("sym2_t234.key", 16), ("auth_t234.key", 16))}
    for name, secret in ekb.items():
        plan.add(f"tegra/{name}", (secret.hex() + "\n").encode(), private=True)
    uefi_key = rsa.generate_private_key(65537, 2048)
    uefi_name = _name(options, f"{options.organization} UEFI db")
    uefi_cert = _certificate(uefi_name, uefi_key, uefi_name, uefi_key, replace(options, purpose=Purpose.CODE), ca=False)
    plan.add("tegra/uefi_db.key", _pem_key(uefi_key, None, traditional=True), private=True)
    plan.add("tegra/uefi_db.crt", _cert_pem(uefi_cert), private=False)
    pkc_fp = spki_fingerprint(pkc.public_key())
    uefi_fp = spki_fingerprint(uefi_key.public_key())
    plan.entries += [
        ManifestEntry("tegra/rsa_priv.pem", "Jetson Orin PKC boot-chain signing key", "RSA-3072", pkc_fp, True,
                      "TEGRA_SIGNING_PKC (meta-tegra scarthgap; -u in TEGRA_SIGNING_ARGS)", options.dev),
        ManifestEntry("tegra/rsa_pub.pem", "Jetson PKC public key (fuse PublicKeyHash via tegrasign_v3 --pubkeyhash)",
                      "RSA-3072", pkc_fp, False, "fusing tools", options.dev),
        ManifestEntry("tegra/sbk.key", "Jetson secure boot key (8 x 32-bit words)", "AES-256",
                      symmetric_check_value(sbk), True, "TEGRA_SIGNING_SBK (-v in TEGRA_SIGNING_ARGS)", options.dev),
        ManifestEntry("tegra/oem_k1.key", "Jetson OEM_K1 fuse key (EKB root, plain hex)", "AES-256",
                      symmetric_check_value(ekb["oem_k1.key"]), True, "gen_ekb.py -oem_k1_key; fuse OemK1", options.dev),
        ManifestEntry("tegra/sym2_t234.key", "Jetson EKB disk-encryption key (plain hex)", "AES-128",
                      symmetric_check_value(ekb["sym2_t234.key"]), True, "gen_ekb.py -in_sym_key2", options.dev),
        ManifestEntry("tegra/auth_t234.key", "Jetson EKB UEFI variable authentication key (plain hex)", "AES-128",
                      symmetric_check_value(ekb["auth_t234.key"]), True, "gen_ekb.py -in_auth_key", options.dev),
        ManifestEntry("tegra/uefi_db.key", "Jetson UEFI secure boot db signing key", "RSA-2048", uefi_fp, True,
                      "TEGRA_UEFI_DB_KEY", options.dev),
        ManifestEntry("tegra/uefi_db.crt", "Jetson UEFI secure boot db certificate", "X.509", uefi_fp, False,
                      "TEGRA_UEFI_DB_CERT", options.dev),
    ]


#: U-Boot's name for the FIT key: mkimage reads <keydir>/<name>.key and .crt (UBOOT_SIGN_KEYNAME).
FIT_KEY_NAME = "pyvorin-fit"


def _plan_rpi(plan: _Plan, options: KeyOptions) -> None:
    key = rsa.generate_private_key(65537, 2048)  # the boot ROM only verifies RSA-2048
    plan.add("rpi/private.pem", _pem_key(key, None, traditional=True), private=True)
    plan.add("rpi/public.pem", _pub_pem(key), private=False)
    fp = spki_fingerprint(key.public_key())
    # The next link of the chain: U-Boot (inside the signed boot.img) verifies the
    # slot's FIT with this key's public half, which sits in its control device tree.
    # U-Boot verifies RSA up to 4096 bits; mkimage wants the key unencrypted and a
    # certificate beside it (its -K step takes the public key from the certificate).
    fit_bits = min(options.rsa_bits, 4096)
    fit_key = rsa.generate_private_key(65537, fit_bits)
    fit_name = _name(options, f"{options.organization} FIT signer")
    fit_cert = _certificate(fit_name, fit_key, fit_name, fit_key, replace(options, purpose=Purpose.CODE), ca=False)
    plan.add(f"rpi/fit/{FIT_KEY_NAME}.key", _pem_key(fit_key, None, traditional=True), private=True)
    plan.add(f"rpi/fit/{FIT_KEY_NAME}.crt", _cert_pem(fit_cert), private=False)
    fit_fp = spki_fingerprint(fit_key.public_key())
    plan.entries += [
        ManifestEntry("rpi/private.pem", "Raspberry Pi secure boot signing key (boot.sig, EEPROM)", "RSA-2048", fp,
                      True, "RPI_SIGNING_KEY (rpi-eeprom-digest -k, rpi-sign-bootcode)", options.dev),
        ManifestEntry("rpi/public.pem", "Raspberry Pi secure boot public key (OTP via rpi-eeprom-config --pubkey)",
                      "RSA-2048", fp, False, "rpi-eeprom-config --pubkey", options.dev),
        ManifestEntry(f"rpi/fit/{FIT_KEY_NAME}.key", "FIT signing key: U-Boot boots only the slots' FITs it signed",
                      f"RSA-{fit_bits}", fit_fp, True,
                      f"UBOOT_SIGN_KEYDIR=<dir>/rpi/fit, UBOOT_SIGN_KEYNAME={FIT_KEY_NAME} (mkimage -k)", options.dev),
        ManifestEntry(f"rpi/fit/{FIT_KEY_NAME}.crt", "FIT signer certificate; its public key goes into U-Boot's "
                      "control device tree (mkimage -K ... -r: required)", "X.509", fit_fp, False,
                      "mkimage -K (uboot-sign.bbclass)", options.dev),
    ]


def _plan_fleet(plan: _Plan, options: KeyOptions) -> None:
    # EC P-256: every device's TLS handshake verifies this CA's signatures, and
    # curl, OpenSSL, mosquitto and nginx all take it.
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(options, f"{options.organization} fleet CA")
    ca = _certificate(name, key, name, key, options, ca=True)
    # An empty revocation list from the start: servers are set up with it on day one,
    # and `pyvorin fleet revoke` only ever replaces it. (fleet imports this module: a late import.)
    from .fleet import DEFAULT_CRL_DAYS, crl_pem  # noqa: PLC0415

    plan.add("fleet/ca.key", _pem_key(key, options.passphrase), private=True)
    plan.add("fleet/ca.crt", _cert_pem(ca), private=False)
    plan.add("fleet/crl.pem", crl_pem(name, key, (), DEFAULT_CRL_DAYS), private=False)
    fp = spki_fingerprint(key.public_key())
    plan.entries += [
        ManifestEntry("fleet/ca.key", "Fleet CA private key: signs device and server certificates (keep offline)",
                      "EC-P256", fp, True, "pyvorin fleet sign|server-cert|revoke", options.dev,
                      bool(options.passphrase)),
        ManifestEntry("fleet/ca.crt", "Fleet CA certificate: devices trust the server by it, servers the devices",
                      "X.509", fp, False, "PYVORIN_FLEET_CA (device), server ssl_client_certificate / cafile",
                      options.dev),
        ManifestEntry("fleet/crl.pem", "Fleet certificate revocation list (re-made by pyvorin fleet revoke|crl)",
                      "X.509 CRL", fp, False, "server ssl_crl / crlfile", options.dev),
    ]


_GROUPS: dict[str, Callable[[_Plan, KeyOptions], None]] = {
    "swupdate": _plan_swupdate,
    "tegra": _plan_tegra,
    "rpi": _plan_rpi,
    "fleet": _plan_fleet,
}


def init(options: KeyOptions) -> Manifest:
    """Generate every key of ``options.groups`` into ``options.directory``."""
    unknown = [g for g in options.groups if g not in _GROUPS]
    if unknown:
        raise PyvorinError(f"unknown key group {unknown[0]!r} (choose from {', '.join(_GROUPS)})")
    if options.rsa_bits < 2048 or options.rsa_bits > 16384:
        raise PyvorinError(f"--key-size {options.rsa_bits}: use 2048 to 16384 bits (default 4096)")
    directory = options.directory
    targets = [directory / MANIFEST]
    plan = _Plan()
    for group in options.groups:
        _GROUPS[group](plan, options)
    targets += [directory / name for name, _, _ in plan.files]
    if not options.force:
        for target in targets:
            if target.exists():
                raise PyvorinError(f"{target}: already exists (refusing to overwrite keys; use --force)")
    ensure_private_dir(directory)
    for sub in sorted({(directory / name).parent for name, _, _ in plan.files}):
        ensure_private_dir(sub)
    for name, data, private in plan.files:
        write_atomic(directory / name, data, mode=PRIVATE_FILE_MODE if private else PUBLIC_FILE_MODE,
                     overwrite=options.force)
    manifest = Manifest(
        entries=tuple(plan.entries),
        created=datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
        notes=(
            "dev keys: for development and CI only; a --production bundle refuses them"
            if options.dev else "production keys: move private keys offline or into an HSM",
        ),
    )
    with atomic_output(directory / MANIFEST, mode=PUBLIC_FILE_MODE, overwrite=options.force) as handle:
        handle.write(manifest.to_json())
    return manifest


def load_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    raw = read_bytes(path, "key manifest")
    try:
        data = json.loads(raw)
        entries = tuple(ManifestEntry(**entry) for entry in data["entries"])
        manifest = Manifest(entries=entries, created=data.get("created", ""), notes=tuple(data.get("notes", ())))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise KeyError_(f"{path}: not a pyvorin key manifest ({exc})") from exc
    # JSON gives any type anywhere: hold every field to its declared one.
    for entry in manifest.entries:
        for name, kind in ManifestEntry.__annotations__.items():
            value = getattr(entry, name)
            wanted = bool if kind == "bool" else str
            if type(value) is not wanted:
                raise KeyError_(f"{path}: entry {name} is {type(value).__name__}, not {wanted.__name__}")
    if not isinstance(manifest.created, str) or not all(isinstance(note, str) for note in manifest.notes):
        raise KeyError_(f"{path}: created and notes must be text")
    return manifest


def find_manifest(start: Path) -> Path | None:
    """The key directory holding a manifest, looking upwards from a key file."""
    for directory in [start if start.is_dir() else start.parent, *start.resolve().parents]:
        if (directory / MANIFEST).is_file():
            return directory
    return None


def refuse_dev_key(certificate: x509.Certificate, key_ref: str, manifest_dir: Path | None) -> None:
    """For --production: refuse a signer marked dev (by its manifest or its certificate)."""
    units = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if any(u.value == DEV_UNIT for u in units):
        raise KeyError_(f"{key_ref}: certificate is a development certificate (OU={DEV_UNIT}); refusing --production")
    if manifest_dir is None:
        return
    fingerprint = spki_fingerprint(certificate.public_key())
    for entry in load_manifest(manifest_dir).entries:
        if entry.fingerprint == fingerprint and entry.dev:
            raise KeyError_(
                f"{key_ref}: key {entry.file} is marked dev in {manifest_dir / MANIFEST}; refusing --production"
            )


def refuse_dev_certificates(path: Path) -> int:
    """For a production build: refuse a file holding any development certificate; return how many it holds."""
    from .signing import load_certificates

    certificates = load_certificates(path)
    manifest_dir = find_manifest(path)
    for certificate in certificates:
        refuse_dev_key(certificate, str(path), manifest_dir)
    return len(certificates)


def show(directory: Path) -> list[str]:
    """Lines describing each key; raise if a file is missing or readable by others."""
    manifest = load_manifest(directory)
    lines = [f"{'file':<22} {'algorithm':<12} {'dev':<4} fingerprint / consumer"]
    for entry in manifest.entries:
        path = directory / entry.file
        if not path.exists():
            raise KeyError_(f"{path}: listed in the manifest but missing")
        if entry.private and path.stat().st_mode & 0o077:
            raise KeyError_(f"{path}: private key is accessible by group/others; run: chmod 600 {path}")
        lines.append(f"{entry.file:<22} {entry.algorithm:<12} {'yes' if entry.dev else 'no':<4} {entry.fingerprint}")
        lines.append(f"{'':<22} {'':<12} {'':<4} -> {entry.consumer}")
    return lines
