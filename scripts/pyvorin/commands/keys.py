"""pyvorin keys init|show|check"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import keys
from ..signers import read_passphrase

HELP = "generate or list release signing keys"
DESCRIPTION = """\
Manage the keys a release needs.

  pyvorin keys init DIR     generate every key, with DIR/manifest.json
  pyvorin keys show DIR     print fingerprints and which build variable reads each file
  pyvorin keys check --production CERT...
                            fail if a certificate is a development one (the build runs
                            this on the devices' trust anchors of a production image)

Files written by 'init' (private keys 0600 in 0700 directories):
  swupdate/ca.key, ca.crt         CA; ca.crt goes on the device (swupdate -k)
  swupdate/signer.key, signer.crt CMS signer (keyUsage digitalSignature, EKU emailProtection)
  swupdate/aes.key                image encryption key (swupdate -K format)
  tegra/rsa_priv.pem, sbk.key     Jetson Orin PKC (RSA-3072) and SBK (8 x 32-bit words)
  tegra/oem_k1.key, sym2_t234.key, auth_t234.key   EKB inputs for gen_ekb.py
  tegra/uefi_db.key, uefi_db.crt  UEFI secure boot db key
  rpi/private.pem, public.pem     Raspberry Pi secure boot (RSA-2048)
  rpi/fit/pyvorin-fit.key, .crt   FIT signer U-Boot verifies the slots' kernels with (RSA, --key-size up to 4096)
  fleet/ca.key, ca.crt, crl.pem   fleet CA (EC P-256): device and server TLS certificates
                                  ('pyvorin fleet'), and its revocation list
"""


def setup_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("keys", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="keys_command", metavar="{init,show,check}", required=True)
    init = sub.add_parser("init", help="generate all keys into DIR",
                          description="Generate every key a release needs into DIR. Keys are marked dev "
                                      "unless --production is given; existing files are never overwritten "
                                      "without --force.")
    init.add_argument("directory", type=Path, metavar="DIR")
    init.add_argument("--production", action="store_true",
                      help="mark the keys production (default: dev, refused by 'bundle --production')")
    init.add_argument("--self-signed", action="store_true",
                      help="a self-signed SWUpdate signer instead of a CA + signer chain")
    init.add_argument("--key-size", type=int, default=4096, metavar="BITS",
                      help="RSA size of the SWUpdate CA and signer (default 4096)")
    init.add_argument("--purpose", choices=[p.value for p in keys.Purpose], default=keys.Purpose.EMAIL.value,
                      help="extendedKeyUsage of the signer; must match swupdate --cert-purpose "
                           "(default emailProtection)")
    init.add_argument("--passphrase-file", type=Path, metavar="FILE",
                      help="encrypt the SWUpdate CA and signer keys and the fleet CA key with this passphrase")
    init.add_argument("--only", default="swupdate,tegra,rpi,fleet", metavar="GROUPS",
                      help="comma-separated key groups: swupdate, tegra, rpi, fleet (default all)")
    init.add_argument("--organization", default="Pyvorin", metavar="NAME",
                      help="organization name in the certificates")
    init.add_argument("--days", type=int, default=3650,
                      help=f"certificate validity in days, {keys.MIN_DAYS}..{keys.MAX_DAYS} (default 3650)")
    init.add_argument("--force", action="store_true", help="overwrite existing key files")
    init.set_defaults(func=run_init)
    show = sub.add_parser("show", help="print fingerprints from DIR/manifest.json",
                          description="Print each key's fingerprint, whether it is dev, and its consumer; "
                                      "fail if a listed file is missing or a private key is readable by others.")
    show.add_argument("directory", type=Path, metavar="DIR")
    show.set_defaults(func=run_show)
    check = sub.add_parser("check", help="refuse development certificates (--production)",
                           description="Read every certificate in each PEM or DER file and fail on the first "
                                       "that is a development one: OU=pyvorin-dev in its subject, or its key "
                                       "marked dev in the manifest.json of the key directory holding the file. "
                                       "A production build checks the trust anchors it installs this way.")
    check.add_argument("certificates", type=Path, nargs="+", metavar="CERT")
    check.add_argument("--production", action="store_true", required=True,
                       help="the only check there is; named so the command says what it guards")
    check.set_defaults(func=run_check)


def run_init(args: argparse.Namespace) -> int:
    options = keys.KeyOptions(
        directory=args.directory,
        dev=not args.production,
        self_signed=args.self_signed,
        rsa_bits=args.key_size,
        purpose=keys.Purpose(args.purpose),
        passphrase=read_passphrase(args.passphrase_file) if args.passphrase_file else None,
        force=args.force,
        organization=args.organization,
        days=args.days,
        groups=tuple(g.strip() for g in args.only.split(",") if g.strip()),
    )
    manifest = keys.init(options)
    kind = "dev" if options.dev else "production"
    print(f"wrote {len(manifest.entries)} {kind} key files and {args.directory / keys.MANIFEST}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    for line in keys.show(args.directory):
        print(line)
    return 0


def run_check(args: argparse.Namespace) -> int:
    for path in args.certificates:
        count = keys.refuse_dev_certificates(path)
        print(f"{path}: {count} production certificate{'s' if count != 1 else ''}")
    return 0
