"""pyvorin verify BUNDLE.swu"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cms import PURPOSES
from ..signers import Scheme
from ..verify import VerifyOptions, verify_bundle
from .common import SCHEMES

HELP = "check a bundle's signature and every sha256"
DESCRIPTION = """\
Verify a bundle as SWUpdate will before installing it: the signature of
sw-description (CMS: chain to --cert, certificate purpose, validity), then
each member's cpio checksum and sha256 against sw-description.  Then, for
verified boot, an image a copy writes to a device from offset 0 is held to
the root hash in the FIT it writes to the same device at an offset (the
FIT's ramdisk carries usr/share/misc/dm-verity.env): the image's dm-verity
tree is recomputed, one line per pair.  Exits 1 naming the first problem.

  pyvorin verify release.swu --cert keys/swupdate/ca.crt
  pyvorin verify release.swu --scheme rsa-pss --key signer-public.pem
"""


def setup_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("verify", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, metavar="BUNDLE.swu")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--cert", type=Path, help="CA certificate(s) to trust (cms), as swupdate -k")
    trust.add_argument("--key", type=Path, help="public key or certificate (rsa, rsa-pss)")
    parser.add_argument("--scheme", choices=SCHEMES, default=Scheme.CMS.value)
    parser.add_argument("--cert-purpose", choices=sorted(PURPOSES), default="emailProtection",
                        help="required certificate purpose, as swupdate --cert-purpose")
    parser.add_argument("--allow-unsigned", action="store_true", help="check hashes of an unsigned bundle")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = VerifyOptions(
        trust=args.cert or args.key,
        scheme=Scheme(args.scheme),
        purpose=args.cert_purpose,
        allow_unsigned=args.allow_unsigned,
    )
    report = verify_bundle(args.bundle, options)
    print(f"{args.bundle}: OK, version {report.version}, signed by {report.signer}")
    for member in report.members:
        print(f"  {member.name:<32} {member.size:>12}  sha256:{member.sha256}")
    for check in report.verity:
        print(check.line())
    return 0
