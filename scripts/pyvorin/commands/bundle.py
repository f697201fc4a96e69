"""pyvorin bundle SPEC.yaml -o release.swu"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..bundle import build
from ..errors import PyvorinError
from ..spec import load_spec
from .common import add_aes, add_signing, load_aes, signing_options

HELP = "build a signed .swu from a release spec"
DESCRIPTION = """\
Build an SWUpdate bundle: a cpio (070702, with per-member checksums) holding
sw-description, sw-description.sig and the artifacts, streamed in constant
memory.  The same inputs give the same bytes (set SOURCE_DATE_EPOCH to stamp
a time).

  pyvorin bundle release.yaml -o release.swu \\
      --key keys/swupdate/signer.key --cert keys/swupdate/signer.crt
  pyvorin bundle release.yaml -o unsigned.swu --unsigned   # sign later: pyvorin sign
"""


def setup_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("bundle", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=Path, metavar="SPEC.yaml")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.swu")
    parser.add_argument("--unsigned", action="store_true",
                        help="leave out the signature (for a separate signing host)")
    add_aes(parser)
    add_signing(parser, required=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.unsigned and not args.key:
        raise PyvorinError("bundle: give --key (and --cert), or --unsigned")
    if args.unsigned and args.key:
        raise PyvorinError("bundle: --unsigned and --key exclude each other")
    spec = load_spec(args.spec)
    signing = None if args.unsigned else signing_options(args)
    payloads = build(spec, args.output, signing, load_aes(args))
    total = sum(p.digest.size for p in payloads)
    state = "unsigned" if args.unsigned else f"signed ({args.scheme})"
    print(f"wrote {args.output}: {state}, {len(payloads)} payloads, {total} bytes")
    return 0
