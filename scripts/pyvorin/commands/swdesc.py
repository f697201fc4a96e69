"""pyvorin swdesc SPEC.yaml"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..bundle import describe
from ..fsutil import write_atomic
from ..spec import load_spec
from .common import add_aes, load_aes

HELP = "write sw-description from a release spec"
DESCRIPTION = """\
Render SWUpdate's sw-description (libconfig) from a YAML release spec, with
the sha256 of every artifact and script filled in from the files (of the
encrypted bytes for encrypted artifacts, each with its own ivt).

  pyvorin swdesc release.yaml -o sw-description
  pyvorin swdesc release.yaml            # print to stdout

See README.md, "Release spec", for the format.
"""


def setup_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("swdesc", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=Path, metavar="SPEC.yaml")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    add_aes(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    text, _ = describe(spec, load_aes(args))
    if args.output:
        write_atomic(args.output, text)
    else:
        sys.stdout.buffer.write(text)
    return 0
