"""Signing with a key in a PKCS#11 token (SoftHSM2), checked with real tools.

Every token lives in an isolated SoftHSM2 store under pytest's tmp dir (see
``softhsm.py``); the system token directory is never touched.  ``pyvorin``
runs as a subprocess, as users run it, and each signature is checked with
``cpio`` + ``openssl`` rather than with pyvorin's own verifier alone.

The token holds, in token ``pyvorin-ci``:
  swu-signer (id 5a01)  the RSA-2048 signer key written by ``pyvorin keys init``
  ec-signer  (id 0ec0)  an EC P-256 key, certified by the same CA (ec-signer.crt)
  other-rsa  (id 0102)  an unrelated RSA key (for key/certificate mismatch)
and, in a second token ``pyvorin-ci-2`` of the same store, another RSA key also
labelled ``swu-signer`` (to check that serial= and slot-id= select the token).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

try:
    from softhsm import SoftHsmToken, create_token, softhsm_available
except ImportError:  # tests/ is a package, or pytest runs with --import-mode=importlib
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from softhsm import SoftHsmToken, create_token, softhsm_available

from pyvorin import pkcs11uri
from pyvorin.errors import KeyError_

from helpers import unavailable

ROOT = Path(__file__).resolve().parents[1]
SKIP_REASON = softhsm_available()


@pytest.fixture
def softhsm_ready() -> None:
    if SKIP_REASON is not None:
        unavailable(SKIP_REASON)


needs_softhsm = pytest.mark.usefixtures("softhsm_ready")

SIGNER_ID = bytes.fromhex("5a01")
EC_ID = bytes.fromhex("0ec0")
OTHER_ID = bytes.fromhex("0102")
SPEC = """\
version: "2026.11.1"
description: pkcs11 test release
artifacts:
  rootfs.img:
    file: rootfs.img
    type: raw
machines:
  testboard:
    hardware-compatibility: ["1.0"]
    copy1:
      install:
        rootfs.img: /dev/mmcblk0p3
    copy2:
      install:
        rootfs.img: /dev/mmcblk0p2
"""


# --------------------------------------------------------------------------- helpers


def run(args: list[str | Path], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def pyvorin(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "pyvorin", *args], env)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def extract(swu: Path, into: Path) -> Path:
    """Unpack a bundle with GNU cpio (a reader pyvorin did not write)."""
    into.mkdir(parents=True)
    with open(swu, "rb") as handle:
        subprocess.run(["cpio", "-id", "--quiet"], stdin=handle, cwd=into, check=True, timeout=60)
    return into


def members(swu: Path) -> list[str]:
    with open(swu, "rb") as handle:
        listing = subprocess.run(["cpio", "-it", "--quiet"], stdin=handle, capture_output=True, text=True,
                                 check=True, timeout=60)
    return listing.stdout.split()


def openssl_cms_verify(directory: Path, ca: Path, content: str = "sw-description") -> subprocess.CompletedProcess[str]:
    return run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", "sw-description.sig",
         "-content", content, "-CAfile", ca, "-purpose", "smimesign", "-out", os.devnull],
        env=dict(os.environ), cwd=directory,
    )


def openssl_dgst_verify(directory: Path, public_key: Path, *sigopts: str,
                        content: str = "sw-description") -> subprocess.CompletedProcess[str]:
    options: list[str | Path] = []
    for opt in sigopts:
        options += ["-sigopt", opt]
    return run(
        ["openssl", "dgst", "-sha256", "-verify", public_key, *options, "-signature", "sw-description.sig", content],
        env=dict(os.environ), cwd=directory,
    )


PSS = ("rsa_padding_mode:pss", "rsa_pss_saltlen:-2")


def write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def pem_private(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem_public(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    signer_key: Path  # PEM, the same key as swu-signer in the token
    signer_cert: Path
    signer_pub: Path
    ec_cert: Path
    ec_pub: Path
    other_pub: Path  # public half of the second token's swu-signer


@dataclass(frozen=True)
class Hsm:
    token: SoftHsmToken
    second: SoftHsmToken  # same store, another token with its own "swu-signer"
    env: dict[str, str]  # for pyvorin: isolated SOFTHSM2_CONF, no PYVORIN_*/SOURCE_DATE_EPOCH
    pin_file: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("p11-pki")
    env = _base_env()
    ok(pyvorin("keys", "init", base / "keys", "--only", "swupdate", "--key-size", "2048", env=env))
    sw = base / "keys" / "swupdate"
    signer_cert = x509.load_pem_x509_certificate((sw / "signer.crt").read_bytes())
    (base / "signer.pub").write_bytes(pem_public(signer_cert.public_key()))  # type: ignore[arg-type]

    # An EC P-256 signer certified by the same CA, as SWUpdate's CMS mode needs it.
    ca_cert = x509.load_pem_x509_certificate((sw / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((sw / "ca.key").read_bytes(), password=None)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ec_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pyvorin"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, "Pyvorin EC signer")]))
        .issuer_name(ca_cert.subject)
        .public_key(ec_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ec_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),  # type: ignore[arg-type]
                       critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    (base / "ec-signer.crt").write_bytes(ec_cert.public_bytes(serialization.Encoding.PEM))
    (base / "ec-signer.pub").write_bytes(pem_public(ec_key.public_key()))
    write_private(base / "ec-signer.key", pem_private(ec_key))

    other = rsa.generate_private_key(65537, 2048)
    write_private(base / "other.key", pem_private(other))
    second = rsa.generate_private_key(65537, 2048)
    write_private(base / "second.key", pem_private(second))
    (base / "second.pub").write_bytes(pem_public(second.public_key()))
    return Pki(ca_cert=sw / "ca.crt", signer_key=sw / "signer.key", signer_cert=sw / "signer.crt",
               signer_pub=base / "signer.pub", ec_cert=base / "ec-signer.crt", ec_pub=base / "ec-signer.pub",
               other_pub=base / "second.pub")


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYVORIN_", "SOURCE_DATE_EPOCH"))}
    env["PYTHONPATH"] = str(ROOT / "scripts")
    env["LC_ALL"] = "C.UTF-8"
    return env


@pytest.fixture(scope="module")
def hsm(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Hsm:
    if SKIP_REASON is not None:
        unavailable(SKIP_REASON)
    store = tmp_path_factory.mktemp("p11-softhsm")
    token = create_token(store, label="pyvorin-ci", pin="735129", so_pin="86420135")
    token.import_key(pki.signer_key, "swu-signer", SIGNER_ID)
    token.import_key(pki.ec_cert.with_name("ec-signer.key"), "ec-signer", EC_ID)
    token.import_key(pki.ec_cert.with_name("other.key"), "other-rsa", OTHER_ID)
    second = create_token(store, label="pyvorin-ci-2", pin="246810", so_pin="86420135")
    second.import_key(pki.ec_cert.with_name("second.key"), "swu-signer", SIGNER_ID)
    env = {**_base_env(), "SOFTHSM2_CONF": token.env["SOFTHSM2_CONF"]}
    pin_file = write_private(store / "pin", (token.pin + "\n").encode())
    # The store is the isolated one: nothing under the system token directory was used.
    assert Path(env["SOFTHSM2_CONF"]).is_relative_to(store.resolve())
    assert len(list((store / "tokens").iterdir())) == 2
    return Hsm(token=token, second=second, env=env, pin_file=pin_file)


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("p11-spec")
    (base / "rootfs.img").write_bytes(os.urandom(96 * 1024 + 123))
    (base / "release.yaml").write_text(SPEC)
    return base / "release.yaml"


@pytest.fixture(scope="module")
def token_bundles(hsm: Hsm, pki: Pki, spec: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One bundle per scheme, signed through the token (key chosen by label)."""
    out = tmp_path_factory.mktemp("p11-bundles")
    bundles = {}
    for scheme in ("cms", "rsa", "rsa-pss"):
        swu = out / f"{scheme}.swu"
        result = ok(pyvorin("bundle", spec, "-o", swu, "--key", hsm.token.uri("swu-signer"),
                            "--cert", pki.signer_cert, "--scheme", scheme, env=hsm.env))
        assert f"signed ({scheme})" in result.stdout
        assert hsm.token.pin not in result.stdout + result.stderr
        bundles[scheme] = swu
    return bundles


@pytest.fixture(scope="module")
def unsigned_bundle(hsm: Hsm, spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    swu = tmp_path_factory.mktemp("p11-unsigned") / "unsigned.swu"
    ok(pyvorin("bundle", spec, "-o", swu, "--unsigned", env=hsm.env))
    assert members(swu) == ["sw-description", "rootfs.img"]
    return swu


# --------------------------------------------------------------------------- URI parsing (in-process)


def test_uri_percent_encoded_attributes() -> None:
    uri = pkcs11uri.parse(
        "pkcs11:token=CI%20signing;object=swu%2dsigner;id=%5A%01%ff;type=private"
        "?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=s3cr%65t%26x"
    )
    assert uri.token == "CI signing"
    assert uri.label == "swu-signer"
    assert uri.object_id == b"\x5a\x01\xff"
    assert uri.query == {"module-path": "/usr/lib/softhsm/libsofthsm2.so", "pin-value": "s3cret&x"}


def test_uri_id_only_and_non_ascii_id() -> None:
    uri = pkcs11uri.parse("pkcs11:id=%00%80%FE%ff")
    assert uri.object_id == b"\x00\x80\xfe\xff"
    assert uri.label is None and uri.token is None
    assert uri.redacted() == "pkcs11:id=%00%80%FE%FF"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pkcs11:token=ci;colour=blue", "unknown path attribute 'colour'"),
        ("pkcs11:token=ci;object", "unknown path attribute 'object'"),  # no '='
        ("pkcs11:token=ci?pin=1234", "unknown query attribute 'pin'"),
        ("pkcs11:token=ci;token=other", "given twice"),
        ("pkcs11:id=%01;id=%02", "given twice"),
        ("pkcs11:token=ci;type=cert", "type=cert cannot sign"),
        ("pkcs12:token=ci", "must start with 'pkcs11:'"),
    ],
)
def test_uri_rejects(text: str, message: str) -> None:
    with pytest.raises(KeyError_, match=message.replace("?", r"\?")):
        pkcs11uri.parse(text)


def test_uri_rejection_message_does_not_echo_the_pin() -> None:
    with pytest.raises(KeyError_) as info:
        pkcs11uri.parse("pkcs11:token=ci;bogus=1?pin-value=735129")
    assert "735129" not in str(info.value)


def test_uri_redacted_drops_pin_value_only() -> None:
    text = ("pkcs11:token=CI%20signing;object=swu-signer;id=%5A%01"
            "?module-path=/opt/hsm/lib%20p11.so&pin-value=s3cret&pin-source=/run/secrets/pin")
    uri = pkcs11uri.parse(text)
    redacted = uri.redacted()
    assert "s3cret" not in redacted and "pin-value" not in redacted
    assert "pin-source=/run/secrets/pin" in redacted
    again = pkcs11uri.parse(redacted)  # a redacted URI is still a valid URI for the same key
    assert again.path == uri.path and again.object_id == uri.object_id
    assert again.query == {"module-path": "/opt/hsm/lib p11.so", "pin-source": "/run/secrets/pin"}


# --------------------------------------------------------------------------- signing through the token


@needs_softhsm
def test_token_holds_the_expected_objects(hsm: Hsm) -> None:
    listing = hsm.token.list_objects()
    for label, object_id in (("swu-signer", SIGNER_ID), ("ec-signer", EC_ID), ("other-rsa", OTHER_ID)):
        assert f"label:      {label}\n  ID:         {object_id.hex()}" in listing


@needs_softhsm
def test_cms_bundle_verifies_with_openssl_and_pyvorin(token_bundles: dict[str, Path], pki: Pki, hsm: Hsm,
                                                       tmp_path: Path) -> None:
    swu = token_bundles["cms"]
    assert members(swu) == ["sw-description", "sw-description.sig", "rootfs.img"]
    unpacked = extract(swu, tmp_path / "x")
    result = openssl_cms_verify(unpacked, pki.ca_cert)
    assert result.returncode == 0 and "Verification successful" in result.stderr, result.stderr
    # Control: the same check fails for content the token did not sign.
    (unpacked / "tampered").write_bytes((unpacked / "sw-description").read_bytes() + b"\n")
    assert openssl_cms_verify(unpacked, pki.ca_cert, content="tampered").returncode != 0

    verified = ok(pyvorin("verify", swu, "--cert", pki.ca_cert, env=hsm.env))
    assert "OK, version 2026.11.1" in verified.stdout
    assert "CN=Pyvorin SWUpdate signer" in verified.stdout


@needs_softhsm
def test_rsa_bundle_verifies_with_openssl(token_bundles: dict[str, Path], pki: Pki, hsm: Hsm, tmp_path: Path) -> None:
    swu = token_bundles["rsa"]
    unpacked = extract(swu, tmp_path / "x")
    assert len((unpacked / "sw-description.sig").read_bytes()) == 256  # bare RSA-2048, not CMS
    result = openssl_dgst_verify(unpacked, pki.signer_pub)
    assert result.returncode == 0 and "Verified OK" in result.stdout, result.stderr
    assert openssl_dgst_verify(unpacked, pki.signer_pub, *PSS).returncode != 0  # it is PKCS#1 v1.5, not PSS
    ok(pyvorin("verify", swu, "--scheme", "rsa", "--key", pki.signer_pub, env=hsm.env))


@needs_softhsm
def test_rsa_pss_bundle_verifies_with_openssl(token_bundles: dict[str, Path], pki: Pki, hsm: Hsm,
                                              tmp_path: Path) -> None:
    swu = token_bundles["rsa-pss"]
    unpacked = extract(swu, tmp_path / "x")
    result = openssl_dgst_verify(unpacked, pki.signer_pub, *PSS)
    assert result.returncode == 0 and "Verified OK" in result.stdout, result.stderr
    # The salt is the maximum, as `openssl dgst -sigopt rsa_pss_saltlen:-2` signs (meta-swupdate).
    assert openssl_dgst_verify(unpacked, pki.signer_pub, "rsa_padding_mode:pss", "rsa_pss_saltlen:max").returncode == 0
    assert openssl_dgst_verify(unpacked, pki.signer_pub, "rsa_padding_mode:pss", "rsa_pss_saltlen:-1").returncode != 0
    assert openssl_dgst_verify(unpacked, pki.signer_pub).returncode != 0
    ok(pyvorin("verify", swu, "--scheme", "rsa-pss", "--key", pki.signer_pub, env=hsm.env))


@needs_softhsm
@pytest.mark.parametrize("scheme", ["cms", "rsa"])
@pytest.mark.parametrize("select", ["label", "id"])
def test_token_signature_is_byte_identical_to_pem_signature(
    scheme: str, select: str, hsm: Hsm, pki: Pki, spec: Path, tmp_path: Path
) -> None:
    """CMS (without SOURCE_DATE_EPOCH) and PKCS#1 v1.5 are deterministic: same key, same bytes."""
    from_pem = tmp_path / "pem.swu"
    ok(pyvorin("bundle", spec, "-o", from_pem, "--key", pki.signer_key, "--cert", pki.signer_cert,
               "--scheme", scheme, env=hsm.env))
    uri = hsm.token.uri("swu-signer") if select == "label" else hsm.token.uri(None, object_id=SIGNER_ID)
    from_token = tmp_path / "token.swu"
    ok(pyvorin("bundle", spec, "-o", from_token, "--key", uri, "--cert", pki.signer_cert, "--scheme", scheme,
               env=hsm.env))
    pem_sig = (extract(from_pem, tmp_path / "pem") / "sw-description.sig").read_bytes()
    token_sig = (extract(from_token, tmp_path / "token") / "sw-description.sig").read_bytes()
    assert token_sig == pem_sig
    assert from_token.read_bytes() == from_pem.read_bytes()


@needs_softhsm
def test_two_step_unsigned_then_sign_with_token(unsigned_bundle: Path, token_bundles: dict[str, Path], hsm: Hsm,
                                                pki: Pki, tmp_path: Path) -> None:
    before = hashlib.sha256(unsigned_bundle.read_bytes()).hexdigest()
    signed = tmp_path / "signed.swu"
    uri = hsm.token.uri("swu-signer", pin_source=hsm.pin_file)  # the PIN from a file, as on a CI host
    result = ok(pyvorin("sign", unsigned_bundle, "-o", signed, "--key", uri, "--cert", pki.signer_cert,
                        env=hsm.env))
    assert "signed (cms)" in result.stdout
    assert hashlib.sha256(unsigned_bundle.read_bytes()).hexdigest() == before  # -o leaves the input alone
    assert members(signed) == ["sw-description", "sw-description.sig", "rootfs.img"]
    unpacked = extract(signed, tmp_path / "x")
    check = openssl_cms_verify(unpacked, pki.ca_cert)
    assert check.returncode == 0, check.stderr
    ok(pyvorin("verify", signed, "--cert", pki.ca_cert, env=hsm.env))
    # Two steps give exactly the bundle one step gives.
    assert signed.read_bytes() == token_bundles["cms"].read_bytes()


@needs_softhsm
def test_pin_and_module_from_environment(hsm: Hsm, pki: Pki, spec: Path, tmp_path: Path) -> None:
    swu = tmp_path / "env.swu"
    env = {**hsm.env, "PYVORIN_PKCS11_PIN": hsm.token.pin, "PYVORIN_PKCS11_MODULE": hsm.token.module}
    uri = hsm.token.uri("swu-signer", module=False, with_pin=False)
    assert "?" not in uri
    ok(pyvorin("bundle", spec, "-o", swu, "--key", uri, "--cert", pki.signer_cert, env=env))
    check = openssl_cms_verify(extract(swu, tmp_path / "x"), pki.ca_cert)
    assert check.returncode == 0, check.stderr


@needs_softhsm
def test_ec_p256_token_key_cms(hsm: Hsm, pki: Pki, spec: Path, tmp_path: Path) -> None:
    swu = tmp_path / "ec.swu"
    ok(pyvorin("bundle", spec, "-o", swu, "--key", hsm.token.uri("ec-signer", object_id=EC_ID),
               "--cert", pki.ec_cert, env=hsm.env))
    unpacked = extract(swu, tmp_path / "x")
    check = openssl_cms_verify(unpacked, pki.ca_cert)
    assert check.returncode == 0 and "Verification successful" in check.stderr, check.stderr
    printed = run(["openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", "sw-description.sig"],
                  env=dict(os.environ), cwd=unpacked)
    assert printed.returncode == 0 and "ecdsa-with-SHA256" in printed.stdout
    ok(pyvorin("verify", swu, "--cert", pki.ca_cert, env=hsm.env))



@needs_softhsm
def test_serial_and_slot_id_select_the_token(hsm: Hsm, pki: Pki, spec: Path, tmp_path: Path) -> None:
    """Two tokens hold a key labelled swu-signer; serial= / slot-id= must pick the right one."""
    def selected(selector: str, token: SoftHsmToken) -> str:
        return f"pkcs11:{selector};object=swu-signer?module-path={token.module}&pin-value={token.pin}"

    cases = {
        "second-by-serial": (selected(f"serial={hsm.second.serial}", hsm.second), pki.other_pub, pki.signer_pub),
        "first-by-serial": (selected(f"serial={hsm.token.serial}", hsm.token), pki.signer_pub, pki.other_pub),
        "second-by-slot": (selected(f"slot-id={hsm.second.slot_id}", hsm.second), pki.other_pub, pki.signer_pub),
        "second-by-label-and-serial": (selected(f"token={hsm.second.label};serial={hsm.second.serial}", hsm.second),
                                       pki.other_pub, pki.signer_pub),
    }
    for name, (uri, right, wrong) in cases.items():
        swu = tmp_path / f"{name}.swu"
        ok(pyvorin("bundle", spec, "-o", swu, "--key", uri, "--scheme", "rsa", env=hsm.env))
        unpacked = extract(swu, tmp_path / name)
        assert openssl_dgst_verify(unpacked, right).returncode == 0, name
        assert openssl_dgst_verify(unpacked, wrong).returncode != 0, name


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Failure:
    """How to make signing fail: the --key (and --cert/--scheme) and a fragment of the message."""

    key: Callable[[Hsm, Path], str]
    message: str
    cert: str = "signer"  # or "ec"
    scheme: str = "cms"


FAILURES = {
    "wrong-pin": Failure(lambda h, d: h.token.uri("swu-signer", pin="000000"), "the token rejected the PIN"),
    "unknown-token": Failure(lambda h, d: h.token.uri("swu-signer", token="no-such-token"),
                             "no token labelled 'no-such-token'"),
    "unknown-object": Failure(lambda h, d: h.token.uri("no-such-key"), "no private key matches the URI"),
    "unknown-id": Failure(lambda h, d: h.token.uri(None, object_id=b"\x99"), "no private key matches the URI"),
    "missing-module-path": Failure(lambda h, d: h.token.uri("swu-signer", module=False),
                                   "no PKCS#11 module; add ?module-path="),
    "module-not-found": Failure(lambda h, d: h.token.uri("swu-signer").replace(h.token.module, str(d / "nolib.so")),
                                "nolib.so"),
    "no-pin": Failure(lambda h, d: h.token.uri("swu-signer", with_pin=False), "no PIN given"),
    "pin-file-missing": Failure(lambda h, d: h.token.uri("swu-signer", pin_source=d / "absent-pin"), "absent-pin"),
    "key-cert-mismatch": Failure(lambda h, d: h.token.uri("other-rsa"), "the key does not match the certificate"),
    "ec-key-rsa-cert": Failure(lambda h, d: h.token.uri("ec-signer"), "the key does not match the certificate"),
    "rsa-key-ec-cert": Failure(lambda h, d: h.token.uri("swu-signer"), "the key does not match the certificate",
                               cert="ec"),
    "ec-key-rsa-scheme": Failure(lambda h, d: h.token.uri("ec-signer"), "--scheme rsa-pss needs an RSA key",
                                 cert="ec", scheme="rsa-pss"),
    "ambiguous-token": Failure(
        lambda h, d: f"pkcs11:object=swu-signer?module-path={h.token.module}&pin-value={h.token.pin}",
        "2 tokens match; add token= or serial="),
    "serial-of-another-token": Failure(
        lambda h, d: h.token.uri("swu-signer").replace(";object=", f";serial={h.second.serial};object="),
        "no initialised token in"),
    "unknown-attribute": Failure(lambda h, d: h.token.uri("swu-signer").replace(";type=", ";colour=blue;type="),
                                 "unknown path attribute 'colour'"),
}


def assert_clean_failure(result: subprocess.CompletedProcess[str], message: str, secrets: tuple[str, ...]) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pyvorin: error: "), result.stderr
    assert message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    for secret in secrets:
        assert secret not in result.stderr, "the PIN leaked into the message"
    assert "pin-value" not in result.stderr


@needs_softhsm
@pytest.mark.parametrize("case", sorted(FAILURES))
def test_bundle_fails_cleanly(case: str, hsm: Hsm, pki: Pki, spec: Path, tmp_path: Path) -> None:
    failure = FAILURES[case]
    out = tmp_path / "out"
    out.mkdir()
    cert = pki.signer_cert if failure.cert == "signer" else pki.ec_cert
    result = pyvorin("bundle", spec, "-o", out / "release.swu", "--key", failure.key(hsm, tmp_path),
                     "--cert", cert, "--scheme", failure.scheme, env=hsm.env)
    assert_clean_failure(result, failure.message, (hsm.token.pin, "000000"))
    assert list(out.iterdir()) == []  # no output, not even a temporary file


@needs_softhsm
@pytest.mark.parametrize("case", ["wrong-pin", "unknown-object", "key-cert-mismatch", "missing-module-path"])
def test_sign_fails_cleanly(case: str, hsm: Hsm, pki: Pki, unsigned_bundle: Path, tmp_path: Path) -> None:
    failure = FAILURES[case]
    before = unsigned_bundle.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    result = pyvorin("sign", unsigned_bundle, "-o", out / "signed.swu", "--key", failure.key(hsm, tmp_path),
                     "--cert", pki.signer_cert, env=hsm.env)
    assert_clean_failure(result, failure.message, (hsm.token.pin, "000000"))
    assert list(out.iterdir()) == []
    assert unsigned_bundle.read_bytes() == before
