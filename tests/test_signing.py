"""Signatures are judged by OpenSSL, the library SWUpdate itself uses."""

from __future__ import annotations

import datetime
import hashlib
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyvorin import cms
from pyvorin.errors import KeyError_, PyvorinError, VerificationError
from pyvorin.signers import Scheme, open_signer
from pyvorin.signing import SigningOptions, load_certificates, sign_content

from helpers import require

CONTENT = b'software = { version = "1.0"; };\n'


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    require("openssl")
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)


def _cms_verify(tmp: Path, sig: bytes, content: bytes, ca: Path, purpose: str = "smimesign") -> subprocess.CompletedProcess[str]:
    (tmp / "c").write_bytes(content)
    (tmp / "s").write_bytes(sig)
    return _openssl("cms", "-verify", "-binary", "-inform", "DER", "-in", tmp / "s", "-content", tmp / "c",
                    "-CAfile", ca, "-purpose", purpose, "-out", "/dev/null")


def test_cms_signature_verifies_with_openssl(keys, tmp_path: Path, no_source_date_epoch) -> None:
    sig = sign_content(CONTENT, SigningOptions(str(keys.key), keys.cert))
    result = _cms_verify(tmp_path, sig, CONTENT, keys.ca)
    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr
    # Deterministic: same key, same content, same bytes (PKCS#1 v1.5, no signingTime).
    assert sign_content(CONTENT, SigningOptions(str(keys.key), keys.cert)) == sig


def test_cms_signing_time_only_from_source_date_epoch(keys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    sig = sign_content(CONTENT, SigningOptions(str(keys.key), keys.cert))
    (tmp_path / "s").write_bytes(sig)
    printed = _openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", tmp_path / "s").stdout
    assert "signingTime" in printed and "Nov 14 22:13:20 2023" in printed
    assert _cms_verify(tmp_path, sig, CONTENT, keys.ca).returncode == 0


def test_openssl_cms_is_verified_by_us(keys, tmp_path: Path) -> None:
    (tmp_path / "c").write_bytes(CONTENT)
    result = _openssl("cms", "-sign", "-binary", "-outform", "DER", "-nosmimecap", "-in", tmp_path / "c",
                      "-signer", keys.cert, "-inkey", keys.key, "-out", tmp_path / "s")
    assert result.returncode == 0, result.stderr
    signer = cms.verify((tmp_path / "s").read_bytes(), CONTENT, load_certificates(keys.ca))
    assert "Pyvorin SWUpdate signer" in signer.subject
    assert len(signer.chain) == 2
    with pytest.raises(VerificationError, match="message digest"):
        cms.verify((tmp_path / "s").read_bytes(), CONTENT + b" ", load_certificates(keys.ca))


def test_cms_rejections_agree_with_openssl(keys, foreign_keys, tmp_path: Path, no_source_date_epoch) -> None:
    sig = sign_content(CONTENT, SigningOptions(str(keys.key), keys.cert))
    anchors = load_certificates(keys.ca)
    # Altered content.
    assert _cms_verify(tmp_path, sig, CONTENT.replace(b"1.0", b"9.0"), keys.ca).returncode != 0
    with pytest.raises(VerificationError):
        cms.verify(sig, CONTENT.replace(b"1.0", b"9.0"), anchors)
    # A flipped byte in the signature value (the last bytes are the RSA signature).
    bad = bytearray(sig)
    bad[-5] ^= 0x01
    assert _cms_verify(tmp_path, bytes(bad), CONTENT, keys.ca).returncode != 0
    with pytest.raises(VerificationError, match="invalid"):
        cms.verify(bytes(bad), CONTENT, anchors)
    # A valid signature by a key of another CA.
    foreign = sign_content(CONTENT, SigningOptions(str(foreign_keys.key), foreign_keys.cert))
    assert _cms_verify(tmp_path, foreign, CONTENT, keys.ca).returncode != 0
    with pytest.raises(VerificationError, match="does not chain"):
        cms.verify(foreign, CONTENT, anchors)
    # Garbage.
    with pytest.raises(VerificationError):
        cms.verify(b"\x30\x03\x02\x01\x01", CONTENT, anchors)


def test_purpose_is_enforced_like_swupdate(cli, tmp_path: Path, no_source_date_epoch) -> None:
    code = tmp_path / "code"
    cli("keys", "init", code, "--only", "swupdate", "--key-size", "2048", "--purpose", "codeSigning", check=True)
    key, cert, ca = (code / "swupdate" / n for n in ("signer.key", "signer.crt", "ca.crt"))
    sig = sign_content(CONTENT, SigningOptions(str(key), cert))
    assert _cms_verify(tmp_path, sig, CONTENT, ca, purpose="smimesign").returncode != 0
    # OpenSSL 3.0 has no codesign purpose (SWUpdate registers its own): check the rest with "any".
    assert _cms_verify(tmp_path, sig, CONTENT, ca, purpose="any").returncode == 0
    with pytest.raises(VerificationError, match="emailProtection"):
        cms.verify(sig, CONTENT, load_certificates(ca), purpose="emailProtection")
    assert cms.verify(sig, CONTENT, load_certificates(ca), purpose="codeSigning")


def test_expired_certificate_is_refused(keys, no_source_date_epoch) -> None:
    sig = sign_content(CONTENT, SigningOptions(str(keys.key), keys.cert))
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=4000)
    with pytest.raises(VerificationError, match="not valid now"):
        cms.verify(sig, CONTENT, load_certificates(keys.ca), now=later)


@pytest.mark.parametrize("scheme,sigopts", [
    (Scheme.RSA, []),
    (Scheme.RSA_PSS, ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:-2"]),
])
def test_raw_rsa_signatures_verify_with_openssl_dgst(keys, tmp_path: Path, scheme: Scheme, sigopts: list[str]) -> None:
    sig = sign_content(CONTENT, SigningOptions(str(keys.key), keys.cert, scheme=scheme))
    (tmp_path / "c").write_bytes(CONTENT)
    (tmp_path / "s").write_bytes(sig)
    pub = tmp_path / "pub.pem"
    assert _openssl("x509", "-in", keys.cert, "-pubkey", "-noout", "-out", pub).returncode == 0
    ok = _openssl("dgst", "-sha256", "-verify", pub, *sigopts, "-signature", tmp_path / "s", tmp_path / "c")
    assert ok.returncode == 0 and "Verified OK" in ok.stdout
    (tmp_path / "c").write_bytes(CONTENT + b"x")
    bad = _openssl("dgst", "-sha256", "-verify", pub, *sigopts, "-signature", tmp_path / "s", tmp_path / "c")
    assert bad.returncode != 0


def test_openssl_pss_signature_is_accepted(keys, tmp_path: Path) -> None:
    from pyvorin.verify import VerifyOptions, check_signature

    (tmp_path / "c").write_bytes(CONTENT)
    made = _openssl("dgst", "-sha256", "-sign", keys.key, "-sigopt", "rsa_padding_mode:pss",
                    "-sigopt", "rsa_pss_saltlen:-2", "-out", tmp_path / "s", tmp_path / "c")
    assert made.returncode == 0, made.stderr
    options = VerifyOptions(trust=keys.cert, scheme=Scheme.RSA_PSS)
    assert "rsa-pss" in check_signature(CONTENT, (tmp_path / "s").read_bytes(), options)
    with pytest.raises(VerificationError):
        check_signature(CONTENT, (tmp_path / "s").read_bytes(), VerifyOptions(trust=keys.cert, scheme=Scheme.RSA))


def test_passphrase_protected_key(cli, tmp_path: Path) -> None:
    (tmp_path / "pass").write_text("correct horse\n")
    (tmp_path / "wrong").write_text("battery staple\n")
    out = tmp_path / "k"
    cli("keys", "init", out, "--only", "swupdate", "--key-size", "2048", "--passphrase-file", tmp_path / "pass",
        check=True)
    key = out / "swupdate" / "signer.key"
    assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
    # OpenSSL opens it with the same passphrase: the file is standard PKCS#8.
    assert _openssl("pkey", "-in", key, "-passin", f"file:{tmp_path / 'pass'}", "-noout").returncode == 0
    with pytest.raises(KeyError_, match="passphrase-protected"):
        open_signer(str(key))
    with pytest.raises(KeyError_, match="wrong passphrase"):
        open_signer(str(key), tmp_path / "wrong")
    signer = open_signer(str(key), tmp_path / "pass")
    digest = hashlib.sha256(b"x").digest()
    assert signer.sign_digest(digest)


def test_key_file_errors(tmp_path: Path, keys) -> None:
    with pytest.raises(PyvorinError, match="private key not found"):
        open_signer(str(tmp_path / "nope.key"))
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(KeyError_, match="not a private key"):
        open_signer(str(garbage))
    loose = tmp_path / "loose.key"
    loose.write_bytes(keys.key.read_bytes())
    loose.chmod(0o644)
    with pytest.raises(KeyError_, match="accessible by group/others"):
        open_signer(str(loose))
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ec_key.chmod(0o600)
    with pytest.raises(KeyError_, match="needs an RSA key"):
        sign_content(CONTENT, SigningOptions(str(ec_key), None, scheme=Scheme.RSA))
    with pytest.raises(KeyError_, match="does not match the certificate"):
        sign_content(CONTENT, SigningOptions(str(ec_key), keys.cert))
    with pytest.raises(KeyError_, match="needs the signer certificate"):
        sign_content(CONTENT, SigningOptions(str(keys.key), None))


def _ca_chain(tmp: Path, intermediate_can_sign: bool) -> tuple[Path, Path, Path]:
    """root -> intermediate -> signer; returns (signer key, signer+intermediate PEM, root PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def make(name: str, issuer_name: x509.Name | None, issuer_key: rsa.RSAPrivateKey | None, ca: bool,
             cert_sign: bool) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=not ca or not cert_sign, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                                                decipher_only=False), critical=True))
        if not ca:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        return key, builder.sign(issuer_key or key, hashes.SHA256())

    root_key, root = make("root", None, None, True, True)
    mid_key, mid = make("intermediate", root.subject, root_key, True, intermediate_can_sign)
    leaf_key, leaf = make("signer", mid.subject, mid_key, False, False)
    pem = serialization.Encoding.PEM
    (tmp / "signer.key").write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
    (tmp / "signer.key").chmod(0o600)
    (tmp / "chain.pem").write_bytes(leaf.public_bytes(pem) + mid.public_bytes(pem))
    (tmp / "root.pem").write_bytes(root.public_bytes(pem))
    return tmp / "signer.key", tmp / "chain.pem", tmp / "root.pem"


def test_a_leaf_is_no_trust_anchor(keys, tmp_path: Path, no_source_date_epoch) -> None:
    """`verify --cert signer.crt` must fail as `openssl cms -verify -CAfile signer.crt` and swupdate -k do."""
    sig = sign_content(CONTENT, SigningOptions(str(keys.key), keys.cert))
    assert _cms_verify(tmp_path, sig, CONTENT, keys.cert).returncode != 0
    with pytest.raises(VerificationError, match="self-signed CA"):
        cms.verify(sig, CONTENT, load_certificates(keys.cert))
    assert cms.verify(sig, CONTENT, load_certificates(keys.ca))


@pytest.mark.parametrize("can_sign", [True, False])
def test_an_intermediate_needs_key_cert_sign(tmp_path: Path, can_sign: bool, no_source_date_epoch) -> None:
    key, chain, root = _ca_chain(tmp_path, can_sign)
    sig = sign_content(CONTENT, SigningOptions(str(key), chain))
    openssl_ok = _cms_verify(tmp_path, sig, CONTENT, root).returncode == 0
    assert openssl_ok == can_sign
    if can_sign:
        assert len(cms.verify(sig, CONTENT, load_certificates(root)).chain) == 3
    else:
        with pytest.raises(VerificationError, match="does not chain"):
            cms.verify(sig, CONTENT, load_certificates(root))
    # The intermediate alone is no anchor either (no partial chains, as in SWUpdate).
    (tmp_path / "mid.pem").write_bytes(chain.read_bytes().split(b"-----END CERTIFICATE-----\n", 1)[1])
    with pytest.raises(VerificationError):
        cms.verify(sig, CONTENT, load_certificates(tmp_path / "mid.pem"))
