"""pyvorin fleet sign|server-cert|revoke|crl|list"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import fleet
from ..errors import PyvorinError
from ..fsutil import PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, ensure_private_dir, write_atomic
from ..signers import read_passphrase

HELP = "device and server certificates from the fleet CA; revocation"
DESCRIPTION = """\
The fleet CA ('pyvorin keys init KEYS --only fleet') says which device is
talking: the rollout server and the MQTT broker accept a device only with a
certificate it signed that is not on its revocation list.

Enrol a device (its key never leaves it; pyvorin-identity made the request):
  scp admin@device:/data/identity/device.csr .
  pyvorin fleet sign KEYS device.csr -o device.crt
  scp device.crt admin@device:/tmp/ && ssh admin@device sudo pyvorin-identity install /tmp/device.crt

The servers:
  pyvorin fleet server-cert KEYS --name updates.example.com -o server/
  # server/server.key, server/server.crt; trust KEYS/fleet/ca.crt, check KEYS/fleet/crl.pem

A lost or re-provisioned device:
  pyvorin fleet revoke KEYS rpi-10000000c0ffee --reason key-compromise
  pyvorin fleet crl KEYS          # re-make the CRL before it expires (30 days)
  pyvorin fleet list KEYS
"""


def setup_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("fleet", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="fleet_command", metavar="{sign,server-cert,revoke,crl,list}", required=True)

    sign = sub.add_parser("sign", help="sign a device's certificate request",
                          description="Issue a TLS client certificate for the device that made CSR (its "
                                      "common name is the device ID). A device that already has a valid "
                                      "certificate is refused unless --replace, which revokes the old one.")
    _keys(sign)
    sign.add_argument("csr", type=Path, metavar="CSR", help="the device's request (PEM or DER)")
    sign.add_argument("-o", "--output", type=Path, required=True, metavar="CRT")
    sign.add_argument("--days", type=int, default=3650, help="validity (default 3650; never past the CA's)")
    sign.add_argument("--replace", action="store_true",
                      help="the device was re-provisioned: revoke its current certificate")
    sign.add_argument("--force", action="store_true", help="overwrite an existing CRT file")
    sign.set_defaults(func=run_sign)

    server = sub.add_parser("server-cert", help="a key and certificate for the rollout server or broker",
                            description="Write DIR/server.key (0600) and DIR/server.crt for TLS server "
                                        "authentication under every --name.")
    _keys(server)
    server.add_argument("--name", action="append", required=True, metavar="HOST",
                        help="host name or IP address the devices connect to (repeat for more)")
    server.add_argument("-o", "--output", type=Path, required=True, metavar="DIR")
    server.add_argument("--days", type=int, default=825, help="validity (default 825)")
    server.add_argument("--force", action="store_true", help="overwrite an existing server.key/server.crt")
    server.set_defaults(func=run_server)

    revoke = sub.add_parser("revoke", help="revoke a device's (or one serial's) certificate, re-make the CRL",
                            description="Revoke every valid certificate of DEVICE (or the certificate with "
                                        "that hex serial) and write KEYS/fleet/crl.pem; copy it to the servers.")
    _keys(revoke)
    revoke.add_argument("which", metavar="DEVICE|SERIAL")
    revoke.add_argument("--reason", choices=list(fleet.REASONS), default="unspecified")
    revoke.add_argument("--crl-days", type=int, default=fleet.DEFAULT_CRL_DAYS,
                        help=f"the CRL's validity (default {fleet.DEFAULT_CRL_DAYS})")
    revoke.set_defaults(func=run_revoke)

    crl = sub.add_parser("crl", help="re-make the revocation list",
                         description="Write KEYS/fleet/crl.pem anew from the ledger. Servers refuse every "
                                     "client once their CRL is past its next update: run this from a timer.")
    _keys(crl)
    crl.add_argument("--days", type=int, default=fleet.DEFAULT_CRL_DAYS,
                     help=f"validity (default {fleet.DEFAULT_CRL_DAYS})")
    crl.set_defaults(func=run_crl)

    show = sub.add_parser("list", help="the certificates the fleet CA issued",
                          description="Print the ledger (KEYS/fleet/issued.json): serial, kind, subject, "
                                      "expiry and revocation.")
    show.add_argument("keys", type=Path, metavar="KEYS")
    show.set_defaults(func=run_list)


def _keys(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("keys", type=Path, metavar="KEYS", help="the key directory holding fleet/ca.key")
    parser.add_argument("--passphrase-file", type=Path, metavar="FILE",
                        help="passphrase of an encrypted fleet CA key")


def _ca(args: argparse.Namespace) -> fleet.FleetCa:
    passphrase = read_passphrase(args.passphrase_file) if args.passphrase_file else None
    return fleet.load_ca(args.keys, passphrase)


def run_sign(args: argparse.Namespace) -> int:
    csr = fleet.read_csr(args.csr)
    ca = _ca(args)
    if args.output.exists() and not args.force:
        raise PyvorinError(f"{args.output}: already exists (refusing to overwrite; use --force)")
    certificate, issued = fleet.sign_device(ca, csr, args.days, replace_existing=args.replace)
    write_atomic(args.output, certificate, mode=PUBLIC_FILE_MODE)
    print(f"wrote {args.output}: device {issued.subject}, serial {issued.serial}, valid until {issued.not_after}")
    return 0


def run_server(args: argparse.Namespace) -> int:
    ca = _ca(args)
    key_path, cert_path = args.output / "server.key", args.output / "server.crt"
    if not args.force:
        for path in (key_path, cert_path):
            if path.exists():
                raise PyvorinError(f"{path}: already exists (refusing to overwrite; use --force)")
    key, certificate, issued = fleet.sign_server(ca, tuple(args.name), args.days)
    ensure_private_dir(args.output)
    write_atomic(key_path, key, mode=PRIVATE_FILE_MODE, overwrite=args.force)
    write_atomic(cert_path, certificate, mode=PUBLIC_FILE_MODE, overwrite=args.force)
    print(f"wrote {key_path} and {cert_path}: {', '.join(args.name)}, serial {issued.serial}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    revoked = fleet.revoke(_ca(args), args.which, args.reason, args.crl_days)
    for entry in revoked:
        print(f"revoked {entry.kind} {entry.subject}, serial {entry.serial} ({args.reason})")
    print(f"wrote {args.keys / fleet.CRL}: copy it to the rollout server and the broker")
    return 0


def run_crl(args: argparse.Namespace) -> int:
    path = fleet.make_crl(_ca(args), args.days)
    print(f"wrote {path}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    print(f"{'serial':<40} {'kind':<6} {'subject':<32} {'valid until':<25} revoked")
    for entry in fleet.read_ledger(args.keys):
        state = f"{entry.revoked} ({entry.reason})" if entry.revoked else "-"
        print(f"{entry.serial:<40} {entry.kind:<6} {entry.subject:<32} {entry.not_after:<25} {state}")
    return 0
