"""Options shared by several subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import aes
from ..signers import Scheme
from ..signing import SigningOptions

SCHEMES = [s.value for s in Scheme]


def add_signing(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_argument_group(
        "signing",
        "The key is a PEM file or an RFC 7512 PKCS#11 URI, e.g. "
        "'pkcs11:token=ci;object=swu-signer?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/pin'.",
    )
    group.add_argument("--key", required=required, metavar="KEY",
                       help="signing key: PEM file or pkcs11: URI (keys init writes swupdate/signer.key)")
    group.add_argument("--cert", type=Path, metavar="CERT",
                       help="signer certificate, optionally followed by intermediates (needed for cms)")
    group.add_argument("--scheme", choices=SCHEMES, default=Scheme.CMS.value,
                       help="cms (default; SWUpdate CONFIG_SIGALG_CMS), rsa (PKCS#1 v1.5) or rsa-pss, "
                            "as 'openssl dgst -sha256 -sign' makes them")
    group.add_argument("--passphrase-file", type=Path, metavar="FILE",
                       help="file holding the passphrase of an encrypted PEM key")
    group.add_argument("--production", action="store_true",
                       help="refuse keys marked dev (by keys init without --production)")


def signing_options(args: argparse.Namespace) -> SigningOptions:
    return SigningOptions(
        key=args.key,
        cert=args.cert,
        scheme=Scheme(args.scheme),
        passphrase_file=args.passphrase_file,
        production=args.production,
    )


def add_aes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--aes-key", type=Path, metavar="FILE",
                        help="AES-256 key file (swupdate -K format) for artifacts marked encrypted")


def load_aes(args: argparse.Namespace) -> aes.AesKey | None:
    return aes.load(args.aes_key) if args.aes_key else None
