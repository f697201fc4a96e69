"""The fleet CA: device requests made the way the device makes them (the
openssl command line), certificates checked by OpenSSL's own verifier and by a
real mutual-TLS handshake with a revocation list, and hostile requests."""

from __future__ import annotations

import json
import socket
import ssl
import stat
import subprocess
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from helpers import one_error_line, require


@pytest.fixture
def fleet_keys(cli, tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    cli("keys", "init", directory, "--only", "fleet", check=True)
    return directory


def device_request(work: Path, device_id: str) -> tuple[Path, Path]:
    """Key and CSR as pyvorin-identity makes them on the device (openssl, EC P-256)."""
    require("openssl")
    key, csr = work / f"{device_id}.key", work / f"{device_id}.csr"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", key], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-new", "-key", key, "-subj", f"/CN={device_id}", "-out", csr],
                   check=True, capture_output=True)
    return key, csr


def test_keys_init_makes_the_fleet_ca_private_and_an_empty_crl(fleet_keys: Path) -> None:
    assert stat.S_IMODE((fleet_keys / "fleet/ca.key").stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((fleet_keys / "fleet/ca.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    crl = x509.load_pem_x509_crl((fleet_keys / "fleet/crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key()) and len(crl) == 0
    files = {e["file"] for e in json.loads((fleet_keys / "manifest.json").read_text())["entries"]}
    assert files == {"fleet/ca.key", "fleet/ca.crt", "fleet/crl.pem"}


def test_a_device_request_becomes_a_client_certificate_openssl_verifies(cli, fleet_keys: Path,
                                                                        tmp_path: Path) -> None:
    _, csr = device_request(tmp_path, "rpi-10000000c0ffee01")
    out = tmp_path / "device.crt"
    result = cli("fleet", "sign", fleet_keys, csr, "-o", out)
    assert result.returncode == 0, result.stderr
    verify = subprocess.run(["openssl", "verify", "-CAfile", fleet_keys / "fleet/ca.crt", "-purpose", "sslclient",
                             out], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # A device certificate authenticates a client and nothing else: never a server, never code.
    as_server = subprocess.run(["openssl", "verify", "-CAfile", fleet_keys / "fleet/ca.crt", "-purpose",
                                "sslserver", out], capture_output=True, text=True)
    assert as_server.returncode != 0
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "rpi-10000000c0ffee01"
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    listed = cli("fleet", "list", fleet_keys, check=True).stdout
    assert "rpi-10000000c0ffee01" in listed and format(cert.serial_number, "x") in listed


def _tls_server(ca: Path, crl: Path, server_dir: Path) -> tuple[socket.socket, ssl.SSLContext]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_dir / "server.crt", server_dir / "server.key")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=ca)
    context.load_verify_locations(cafile=crl)
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    return listener, context


def _handshake(ca: Path, crl: Path, server_dir: Path, key: Path, cert: Path) -> str:
    """A mutual-TLS handshake on loopback: '' if both sides accepted, else the server's reason."""
    listener, server_context = _tls_server(ca, crl, server_dir)
    outcome: list[str] = []

    def serve() -> None:
        try:
            connection, _ = listener.accept()
            with server_context.wrap_socket(connection, server_side=True) as tls:
                tls.sendall(b"ok")
            outcome.append("")
        except (ssl.SSLError, OSError) as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=serve)
    thread.start()
    client_context = ssl.create_default_context(cafile=str(ca))
    client_context.load_cert_chain(cert, key)
    try:
        with socket.create_connection(listener.getsockname(), timeout=20) as raw, \
                client_context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.recv(2)
    except (ssl.SSLError, OSError):
        pass
    thread.join(30)
    listener.close()
    return outcome[0] if outcome else "no handshake"


def test_mutual_tls_takes_a_signed_device_and_refuses_it_once_revoked(cli, fleet_keys: Path, tmp_path: Path) -> None:
    cli("fleet", "server-cert", fleet_keys, "--name", "localhost", "--name", "127.0.0.1", "-o", tmp_path / "srv",
        check=True)
    assert stat.S_IMODE((tmp_path / "srv/server.key").stat().st_mode) == 0o600
    key, csr = device_request(tmp_path, "rpi-1000000012345678")
    cli("fleet", "sign", fleet_keys, csr, "-o", tmp_path / "device.crt", check=True)
    ca, crl = fleet_keys / "fleet/ca.crt", fleet_keys / "fleet/crl.pem"
    assert _handshake(ca, crl, tmp_path / "srv", key, tmp_path / "device.crt") == ""
    # A device whose certificate another CA signed is refused.
    other = tmp_path / "other"
    cli("keys", "init", other, "--only", "fleet", check=True)
    cli("fleet", "sign", other, csr, "-o", tmp_path / "foreign.crt", check=True)
    assert "certificate" in _handshake(ca, crl, tmp_path / "srv", key, tmp_path / "foreign.crt")
    # Revoked: the same certificate is refused with the new CRL.
    result = cli("fleet", "revoke", fleet_keys, "rpi-1000000012345678", "--reason", "key-compromise")
    assert result.returncode == 0, result.stderr
    assert "revoked" in _handshake(ca, crl, tmp_path / "srv", key, tmp_path / "device.crt")
    listed = cli("fleet", "list", fleet_keys, check=True).stdout
    assert "key-compromise" in listed


def test_a_reprovisioned_device_needs_replace_which_revokes_the_old_certificate(cli, fleet_keys: Path,
                                                                               tmp_path: Path) -> None:
    _, first = device_request(tmp_path / "", "jetson-1423421002345")
    cli("fleet", "sign", fleet_keys, first, "-o", tmp_path / "a.crt", check=True)
    (tmp_path / "reset").mkdir()
    _, second = device_request(tmp_path / "reset", "jetson-1423421002345")
    line = one_error_line(cli("fleet", "sign", fleet_keys, second, "-o", tmp_path / "b.crt"))
    assert "already has certificate" in line and "--replace" in line
    assert not (tmp_path / "b.crt").exists()
    cli("fleet", "sign", fleet_keys, second, "-o", tmp_path / "b.crt", "--replace", check=True)
    old = x509.load_pem_x509_certificate((tmp_path / "a.crt").read_bytes())
    crl = x509.load_pem_x509_crl((fleet_keys / "fleet/crl.pem").read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(old.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.superseded
    new = x509.load_pem_x509_certificate((tmp_path / "b.crt").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(new.serial_number) is None


def test_concurrent_signers_lose_no_ledger_entry(cli, fleet_keys: Path, tmp_path: Path) -> None:
    requests = [device_request(tmp_path, f"rpi-{n:016x}")[1] for n in range(6)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda csr: cli("fleet", "sign", fleet_keys, csr, "-o", csr.with_suffix(".crt")),
                                requests))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    ledger = json.loads((fleet_keys / "fleet/issued.json").read_text())["issued"]
    assert sorted(e["subject"] for e in ledger) == sorted(f"rpi-{n:016x}" for n in range(6))


def _csr(key: object, names: list[str]) -> bytes:
    """A request with any names, also those X.509 forbids (cryptography only warns of them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, n, _validate=False) for n in names]
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def _ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(("make", "expected"), [
    (lambda: _csr(_ec(), ["../../etc/passwd"]), "is not one device ID"),
    (lambda: _csr(_ec(), ["a", "b"]), "is not one device ID"),
    (lambda: _csr(_ec(), []), "is not one device ID"),
    (lambda: _csr(_ec(), ["x" * 65]), "is not one device ID"),
    (lambda: _csr(_ec(), ["-rf"]), "is not one device ID"),
    (lambda: _csr(_ec(), ["rpi 1\nCN=other"]), "is not one device ID"),
    (lambda: _csr(rsa.generate_private_key(65537, 1024), ["rpi-1"]), "too small"),
    (lambda: _csr(ec.generate_private_key(ec.SECP521R1()), ["rpi-1"]), "EC curve"),
    (lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nnonsense\n-----END CERTIFICATE REQUEST-----\n",
     "not a certificate request"),
    (lambda: b"\x00" * 100, "not a certificate request"),
    (lambda: b"A" * (65 * 1024), "is not a certificate request"),
])
def test_hostile_requests_are_refused_with_one_line_and_nothing_written(cli, fleet_keys: Path, tmp_path: Path,
                                                                        make, expected: str) -> None:
    csr = tmp_path / "hostile.csr"
    csr.write_bytes(make())
    line = one_error_line(cli("fleet", "sign", fleet_keys, csr, "-o", tmp_path / "out.crt"))
    assert expected in line, line
    assert not (tmp_path / "out.crt").exists()
    assert not (fleet_keys / "fleet/issued.json").exists()


def test_a_request_whose_signature_does_not_verify_is_refused(cli, fleet_keys: Path, tmp_path: Path) -> None:
    """Someone else's public key under a device's name: the request is not signed by that key."""
    genuine = x509.load_pem_x509_csr(_csr(_ec(), ["rpi-1"]))
    der = bytearray(genuine.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    (tmp_path / "forged.csr").write_bytes(bytes(der))
    line = one_error_line(cli("fleet", "sign", fleet_keys, tmp_path / "forged.csr", "-o", tmp_path / "o.crt"))
    assert "signature" in line or "not a certificate request" in line, line


def test_missing_ca_open_ca_key_and_clobbering_are_refused(cli, fleet_keys: Path, tmp_path: Path) -> None:
    _, csr = device_request(tmp_path, "rpi-2")
    line = one_error_line(cli("fleet", "sign", tmp_path / "nokeys", csr, "-o", tmp_path / "o.crt"))
    assert "no fleet CA here" in line
    (fleet_keys / "fleet/ca.key").chmod(0o644)
    line = one_error_line(cli("fleet", "sign", fleet_keys, csr, "-o", tmp_path / "o.crt"))
    assert "accessible by group/others" in line
    (fleet_keys / "fleet/ca.key").chmod(0o600)
    (tmp_path / "o.crt").write_text("keep me")
    line = one_error_line(cli("fleet", "sign", fleet_keys, csr, "-o", tmp_path / "o.crt"))
    assert "already exists" in line and (tmp_path / "o.crt").read_text() == "keep me"
    line = one_error_line(cli("fleet", "revoke", fleet_keys, "rpi-unknown"))
    assert "no valid certificate" in line
    line = one_error_line(cli("fleet", "server-cert", fleet_keys, "--name", "bad host!", "-o", tmp_path / "s"))
    assert "neither a host name nor an IP address" in line
    (fleet_keys / "fleet/issued.json").write_text('{"issued": [{"serial": 1}]}')
    line = one_error_line(cli("fleet", "list", fleet_keys))
    assert "not a pyvorin fleet ledger" in line


def test_an_encrypted_fleet_ca_needs_its_passphrase(cli, tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("correct horse\n")
    cli("keys", "init", tmp_path / "k", "--only", "fleet", "--passphrase-file", secret, check=True)
    _, csr = device_request(tmp_path, "rpi-3")
    line = one_error_line(cli("fleet", "sign", tmp_path / "k", csr, "-o", tmp_path / "o.crt"))
    assert "--passphrase-file" in line
    cli("fleet", "sign", tmp_path / "k", csr, "-o", tmp_path / "o.crt", "--passphrase-file", secret, check=True)


def test_the_crl_can_be_remade_with_a_chosen_lifetime(cli, fleet_keys: Path) -> None:
    cli("fleet", "crl", fleet_keys, "--days", "2", check=True)
    crl = x509.load_pem_x509_crl((fleet_keys / "fleet/crl.pem").read_bytes())
    assert crl.next_update_utc is not None and crl.last_update_utc is not None
    assert 1.9 < (crl.next_update_utc - crl.last_update_utc).total_seconds() / 86400 < 2.1
    assert one_error_line(cli("fleet", "crl", fleet_keys, "--days", "0"))
