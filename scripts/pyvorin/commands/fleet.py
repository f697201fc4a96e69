"""pyvorin fleet sign|server-cert|revoke|crl|list"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import fleet, fleetproxy, fleetserve, rollout
from ..archive import open_bundle
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

The rollout server in one command (goosebit behind nginx, both in the foreground):
  pyvorin fleet server-cert KEYS --name updates.example.com -o /var/lib/pyvorin-fleet/server
  pyvorin fleet serve KEYS --data /var/lib/pyvorin-fleet --listen 0.0.0.0:8443

Or the pieces, for a server of your own:
  pyvorin fleet server-cert KEYS --name updates.example.com -o server/
  # server/server.key, server/server.crt; trust KEYS/fleet/ca.crt, check KEYS/fleet/crl.pem
  pyvorin fleet proxy-config KEYS --server-dir server/ --listen 0.0.0.0:8443 \
      --upstream 127.0.0.1:60053 --state-dir /var/lib/pyvorin-proxy -o nginx.conf

A release, canaries first (goosebit's admin API, on the operators' network);
canaries must be the hardware the release names (refused before uploading):
  pyvorin fleet rollout release.swu --server http://127.0.0.1:60053 --user admin \
      --password-file pw --canary rpi-10000000c0ffee01,rpi-10000000c0ffee02 --watch

A lost or re-provisioned device:
  pyvorin fleet revoke KEYS rpi-10000000c0ffee --reason key-compromise
  pyvorin fleet crl KEYS          # re-make the CRL before it expires (30 days)
  pyvorin fleet list KEYS
"""


def setup_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("fleet", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="fleet_command", metavar="{sign,server-cert,revoke,crl,list,rollout}",
                                required=True)

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

    proxy = sub.add_parser("proxy-config", help="nginx in front of goosebit: mutual TLS for the devices",
                           description="Write the nginx configuration of the devices' endpoint: it requires a "
                                       "certificate of the fleet CA not on its CRL, lets a device reach only its "
                                       "own controller path and nothing of the admin API, and streams downloads "
                                       "with Range. Run it as: nginx -c OUT -g 'daemon off;'.")
    proxy.add_argument("keys", type=Path, metavar="KEYS", help="the key directory (fleet/ca.crt, fleet/crl.pem)")
    proxy.add_argument("--server-dir", type=Path, required=True, metavar="DIR",
                       help="server.crt and server.key from 'fleet server-cert'")
    proxy.add_argument("--listen", default="0.0.0.0:8443", metavar="HOST:PORT")
    proxy.add_argument("--upstream", default="127.0.0.1:60053", metavar="HOST:PORT", help="goosebit, on loopback")
    proxy.add_argument("--crl", type=Path, metavar="FILE", help="the CRL nginx reads (default KEYS/fleet/crl.pem)")
    proxy.add_argument("--state-dir", type=Path, required=True, metavar="DIR", help="pid, logs, temporary files")
    proxy.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    proxy.add_argument("--force", action="store_true", help="overwrite FILE")
    proxy.set_defaults(func=run_proxy_config)

    srv = sub.add_parser("serve", help="run the rollout server: goosebit behind the mutual-TLS nginx",
                         description="Run goosebit (hawkBit DDI) on loopback and nginx in front of it for the "
                                     "devices, in the foreground, keeping everything in --data. The first start "
                                     "makes goosebit's schema, token key and administrator (password in "
                                     "DATA/admin-password). Needs DATA/server/server.{crt,key} from "
                                     "'fleet server-cert'.")
    srv.add_argument("keys", type=Path, metavar="KEYS", help="the key directory (fleet/ca.crt, fleet/crl.pem)")
    srv.add_argument("--data", type=Path, required=True, metavar="DIR")
    srv.add_argument("--listen", default="0.0.0.0:8443", metavar="HOST:PORT", help="for the devices")
    srv.add_argument("--admin-port", type=int, default=60053, metavar="PORT",
                     help="goosebit's own port, on 127.0.0.1 only (admin API and UI)")
    srv.add_argument("--goosebit-venv", type=Path, default=Path("/opt/goosebit-venv"), metavar="DIR")
    srv.add_argument("--nginx", type=Path, default=Path("/usr/sbin/nginx"), metavar="PATH")
    srv.add_argument("--tenant", default="DEFAULT")
    srv.add_argument("--poll-time", default="00:05:00", metavar="HH:MM:SS", help="how often devices poll")
    srv.set_defaults(func=run_serve)

    roll = sub.add_parser("rollout", help="roll a release out to canaries, then to the fleet",
                          description="Upload RELEASE.swu to the goosebit server, give it to the --canary "
                                      "devices (moved to --canary-feed) and wait for their reports; more than "
                                      "--max-failures failures, or no verdict within --timeout, pauses it and "
                                      "exits 1 with the fleet untouched. Otherwise roll it out to --feed (and "
                                      "with --watch follow it the same way).")
    roll.add_argument("release", type=Path, metavar="RELEASE.swu")
    roll.add_argument("--server", required=True, metavar="URL", help="goosebit's admin URL (not the devices' proxy)")
    roll.add_argument("--user", required=True)
    roll.add_argument("--password-file", type=Path, required=True, metavar="FILE")
    roll.add_argument("--canary", required=True, metavar="IDS", help="comma-separated device IDs")
    roll.add_argument("--canary-feed", default="canary")
    roll.add_argument("--feed", default="default", help="the fleet's feed (default: goosebit's 'default')")
    roll.add_argument("--max-failures", type=int, default=0, metavar="N",
                      help="failures a stage may have before it is paused (default 0)")
    roll.add_argument("--timeout", type=float, default=3600, metavar="SECONDS",
                      help="how long a stage may take to report (default 3600)")
    roll.add_argument("--poll", type=float, default=10, metavar="SECONDS", help="between two looks (default 10)")
    roll.add_argument("--watch", action="store_true", help="follow the fleet stage too")
    roll.set_defaults(func=run_rollout)


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


def run_rollout(args: argparse.Namespace) -> int:
    canaries = tuple(c.strip() for c in args.canary.split(",") if c.strip())
    bad = [c for c in canaries if not fleet.DEVICE_ID.fullmatch(c)]
    if bad:
        raise PyvorinError(f"--canary {bad[0]!r} is not a device ID")
    if args.max_failures < 0 or args.timeout <= 0 or args.poll <= 0:
        raise PyvorinError("--max-failures must be 0 or more, --timeout and --poll more than 0")
    if not args.release.is_file():
        raise PyvorinError(f"{args.release}: release not found")
    with open_bundle(args.release) as bundle:
        hardware = rollout.release_hardware(bundle.description())
    password = read_passphrase(args.password_file).decode(errors="replace")
    server = rollout.login(args.server, args.user, password)
    plan = rollout.Plan(args.release, canaries, hardware, args.canary_feed, args.feed, args.max_failures,
                        args.timeout, args.poll, args.watch)
    rollout.run(server, plan, say=lambda line: print(line, flush=True))
    return 0


def run_proxy_config(args: argparse.Namespace) -> int:
    config = fleetproxy.ProxyConfig(
        listen=args.listen, upstream=args.upstream,
        server_cert=(args.server_dir / "server.crt").absolute(), server_key=(args.server_dir / "server.key").absolute(),
        fleet_ca=(args.keys / "fleet/ca.crt").absolute(),
        crl=(args.crl or args.keys / "fleet/crl.pem").absolute(), state_dir=args.state_dir.absolute())
    for path in (config.server_cert, config.server_key, config.fleet_ca, config.crl):
        if not path.is_file():
            raise PyvorinError(f"{path}: not found (fleet server-cert and keys init --only fleet make it)")
    if args.output.exists() and not args.force:
        raise PyvorinError(f"{args.output}: already exists (refusing to overwrite; use --force)")
    write_atomic(args.output, fleetproxy.render(config).encode(), mode=PUBLIC_FILE_MODE, overwrite=True)
    print(f"wrote {args.output}: devices on {args.listen}, goosebit at {args.upstream}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    options = fleetserve.ServeOptions(args.keys, args.data, args.listen, args.admin_port, args.goosebit_venv,
                                      args.nginx, args.tenant, args.poll_time)
    return fleetserve.serve(options, say=lambda line: print(line, flush=True))
