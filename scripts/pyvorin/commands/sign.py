"""pyvorin sign UNSIGNED.swu"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..bundle import sign_bundle
from .common import add_signing, signing_options

HELP = "sign an unsigned .swu (two-step CI)"
DESCRIPTION = """\
Sign a bundle made with 'pyvorin bundle --unsigned' on another host.  Only
sw-description is read into memory; the images are copied through member by
member and never unpacked.

  pyvorin sign unsigned.swu -o release.swu --key 'pkcs11:token=ci;object=swu?pin-source=/run/pin' \\
      --cert signer.crt
"""


def setup_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("sign", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, metavar="UNSIGNED.swu")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT.swu",
                        help="where to write the signed bundle (default: replace the input atomically)")
    parser.add_argument("--replace", action="store_true", help="re-sign a bundle that is already signed")
    add_signing(parser, required=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    output = args.output or args.bundle
    sign_bundle(args.bundle, output, signing_options(args), replace=args.replace)
    print(f"wrote {output}: signed ({args.scheme})")
    return 0
