"""The ``pyvorin`` command line: one entry point, one module per subcommand.

:func:`pyvorin` is the testable entry (it raises); :func:`main` alone maps
errors to exit codes: 1 a verification failed, 2 bad input or usage,
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__
from .commands import bundle, delta, fleet, inspect, keys, sbom, sign, swdesc, verify, verity
from .errors import PyvorinError, UsageParser, VerificationError, describe_os_error, one_line

COMMANDS = (keys, swdesc, bundle, sign, verify, inspect, sbom, delta, fleet, verity)

DESCRIPTION = """\
Release tooling for Pyvorin Edge devices running SWUpdate.

A release, end to end:
  pyvorin keys init keys/                        # dev keys + manifest
  pyvorin swdesc release.yaml                    # preview sw-description
  pyvorin bundle release.yaml -o release.swu \\
      --key keys/swupdate/signer.key --cert keys/swupdate/signer.crt
  pyvorin verify release.swu --cert keys/swupdate/ca.crt
  # on the device: swupdate -i release.swu -k ca.crt -e stable,copy1
  pyvorin sbom diff previous.swu release.swu     # what changed, from the SBOMs

The fleet (device certificates for the rollout server and the broker):
  pyvorin fleet sign keys/ device.csr -o device.crt

Run 'pyvorin COMMAND --help' for each command.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="pyvorin", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pyvorin {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.setup_parser(subparsers)
    return parser


def pyvorin(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


def main() -> None:
    try:
        code = pyvorin()
    except VerificationError as exc:
        print(f"pyvorin: verification failed: {one_line(exc)}", file=sys.stderr)
        code = 1
    except PyvorinError as exc:
        print(f"pyvorin: error: {one_line(exc)}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("pyvorin: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        # The reader went away (`pyvorin inspect --json | head`): nothing to
        # say, and nothing more to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    except OSError as exc:
        print(f"pyvorin: error: {one_line(describe_os_error(exc))}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
