"""keys init / show: formats the consumers accept, modes, no clobbering."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from pyvorin import aes
from verity_parts import fit_source

from helpers import require


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_layout_and_permissions(keys) -> None:
    d = keys.directory
    assert _mode(d) == 0o700
    manifest = json.loads((d / "manifest.json").read_text())
    files = {e["file"]: e for e in manifest["entries"]}
    for name, entry in files.items():
        path = d / name
        assert path.is_file(), name
        assert _mode(path.parent) == 0o700
        assert _mode(path) == (0o600 if entry["private"] else 0o644), name
        assert entry["dev"] is True
        assert entry["consumer"]
    # Nothing secret leaks into the manifest.
    text = (d / "manifest.json").read_text()
    assert aes.load(keys.aes).key.hex() not in text
    assert "PRIVATE" not in text


def test_swupdate_chain_is_accepted_by_openssl_for_smime_signing(keys) -> None:
    require("openssl")
    result = subprocess.run(["openssl", "verify", "-purpose", "smimesign", "-CAfile", keys.ca, keys.cert],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate(keys.cert.read_bytes())
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca = x509.load_pem_x509_certificate(keys.ca.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = serialization.load_pem_private_key(keys.key.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048


def test_default_signer_is_rsa_4096(cli, tmp_path: Path) -> None:
    cli("keys", "init", tmp_path / "k", "--only", "swupdate", "--self-signed", check=True)
    key = serialization.load_pem_private_key((tmp_path / "k/swupdate/signer.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 4096
    assert not (tmp_path / "k/swupdate/ca.key").exists()
    cert = x509.load_pem_x509_certificate((tmp_path / "k/swupdate/signer.crt").read_bytes())
    assert cert.issuer == cert.subject


def test_aes_key_is_in_swupdate_format(keys) -> None:
    line = keys.aes.read_text()
    key_hex, iv_hex = line.split()
    assert len(key_hex) == 64 and len(iv_hex) == 32 and line.endswith("\n")
    assert aes.load(keys.aes).key == bytes.fromhex(key_hex)


def test_jetson_and_rpi_key_formats(keys) -> None:
    d = keys.directory
    pkc = (d / "tegra/rsa_priv.pem").read_bytes()
    assert pkc.startswith(b"-----BEGIN RSA PRIVATE KEY-----")  # tegrasign wants the traditional form
    assert serialization.load_pem_private_key(pkc, None).key_size == 3072  # type: ignore[union-attr]
    words = (d / "tegra/sbk.key").read_text().split()
    assert len(words) == 8 and all(w.startswith("0x") and len(w) == 10 for w in words)
    int("".join(w[2:] for w in words), 16)
    for name, size in (("oem_k1.key", 32), ("sym2_t234.key", 16), ("auth_t234.key", 16)):
        assert len(bytes.fromhex((d / "tegra" / name).read_text().strip())) == size
    rpi = serialization.load_pem_private_key((d / "rpi/private.pem").read_bytes(), None)
    assert rpi.key_size == 2048  # type: ignore[union-attr]
    require("openssl")
    for pem in ("tegra/rsa_priv.pem", "rpi/private.pem", "tegra/uefi_db.key"):
        assert subprocess.run(["openssl", "rsa", "-check", "-noout", "-in", d / pem], capture_output=True).returncode == 0


def test_fit_key_signs_a_fit_configuration_as_uboot_sign_does(cli, keys, tmp_path: Path) -> None:
    """The FIT key works where oe-core's uboot-sign.bbclass uses it: mkimage signs a FIT
    configuration with <keydir>/pyvorin-fit.key and writes the public half, from the
    certificate beside it, into a control device tree as a key U-Boot requires."""
    require("mkimage", "dtc", "fdtget")
    fit = keys.directory / "rpi/fit"
    key = serialization.load_pem_private_key((fit / "pyvorin-fit.key").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((fit / "pyvorin-fit.crt").read_bytes())
    assert isinstance(key, rsa.RSAPrivateKey) and cert.public_key() == key.public_key()
    assert _mode(fit / "pyvorin-fit.key") == 0o600 and _mode(fit) == 0o700
    # A dev key is marked where a production build looks: the certificate and the manifest.
    assert cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "pyvorin-dev"
    refused = cli("keys", "check", "--production", fit / "pyvorin-fit.crt")
    assert refused.returncode != 0 and "development" in refused.stderr
    control = tmp_path / "control.dtb"
    subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", control, "-"], input=b"/dts-v1/;\n/ { };\n", check=True)
    (tmp_path / "kernel").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "fit.its").write_text(fit_source(tmp_path / "kernel", algo=f"sha256,rsa{key.key_size}"))
    signed = subprocess.run(["mkimage", "-f", tmp_path / "fit.its", "-k", fit, "-K", control, "-r", tmp_path / "fit.itb"],
                            capture_output=True, text=True)
    assert signed.returncode == 0, signed.stdout + signed.stderr
    assert "Signature written" in signed.stdout and "Public key written" in signed.stdout

    def get(dtb: Path, node: str, prop: str) -> str:
        return subprocess.run(["fdtget", dtb, node, prop], capture_output=True, text=True, check=True).stdout.strip()

    assert get(control, "/signature/key-pyvorin-fit", "required") == "conf"
    assert get(control, "/signature/key-pyvorin-fit", "rsa,num-bits") == str(key.key_size)
    assert get(tmp_path / "fit.itb", "/configurations/conf-1/signature-1", "key-name-hint") == "pyvorin-fit"


def test_never_overwrites_without_force(cli, tmp_path: Path) -> None:
    d = tmp_path / "k"
    cli("keys", "init", d, "--only", "swupdate", "--key-size", "2048", check=True)
    before = (d / "swupdate/signer.key").read_bytes()
    again = cli("keys", "init", d, "--only", "swupdate", "--key-size", "2048")
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "already exists" in again.stderr and "--force" in again.stderr
    assert (d / "swupdate/signer.key").read_bytes() == before
    forced = cli("keys", "init", d, "--only", "swupdate", "--key-size", "2048", "--force")
    assert forced.returncode == 0
    assert (d / "swupdate/signer.key").read_bytes() != before
    assert _mode(d / "swupdate/signer.key") == 0o600
    assert not list(d.rglob("*.tmp"))


def test_show_prints_fingerprints_and_catches_loose_modes(cli, keys, tmp_path: Path) -> None:
    shown = cli("keys", "show", keys.directory, check=True).stdout
    manifest = json.loads((keys.directory / "manifest.json").read_text())
    for entry in manifest["entries"]:
        assert entry["file"] in shown and entry["fingerprint"] in shown
    d = tmp_path / "k"
    cli("keys", "init", d, "--only", "rpi", check=True)
    (d / "rpi/private.pem").chmod(0o644)
    result = cli("keys", "show", d)
    assert result.returncode == 2 and "chmod 600" in result.stderr


def test_production_bundle_refuses_dev_keys(cli, keys, make_spec, tmp_path: Path) -> None:
    spec = make_spec()
    out = tmp_path / "r.swu"
    refused = cli("bundle", spec, "-o", out, *keys.signing_args(), "--production")
    assert refused.returncode == 2
    assert "development certificate" in refused.stderr or "marked dev" in refused.stderr
    assert not out.exists()
    prod = tmp_path / "prod"
    cli("keys", "init", prod, "--only", "swupdate", "--key-size", "2048", "--production", check=True)
    ok = cli("bundle", spec, "-o", out, "--key", prod / "swupdate/signer.key", "--cert", prod / "swupdate/signer.crt",
             "--production")
    assert ok.returncode == 0, ok.stderr
    # A production certificate whose key the manifest marks dev is refused too.
    manifest = json.loads((prod / "manifest.json").read_text())
    for entry in manifest["entries"]:
        entry["dev"] = True
    (prod / "manifest.json").write_text(json.dumps(manifest))
    marked = cli("bundle", spec, "-o", tmp_path / "x.swu", "--key", prod / "swupdate/signer.key",
                 "--cert", prod / "swupdate/signer.crt", "--production")
    assert marked.returncode == 2 and "marked dev" in marked.stderr


@pytest.mark.parametrize("args,message", [
    (["--only", "nosuch"], "unknown key group"),
    (["--key-size", "1024"], "--key-size"),
])
def test_bad_options(cli, tmp_path: Path, args: list[str], message: str) -> None:
    result = cli("keys", "init", tmp_path / "k", *args)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "k").exists()
