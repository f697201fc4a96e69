"""pyvorin inspect BUNDLE.swu"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import sbom
from ..archive import open_bundle
from ..errors import PyvorinError, one_line

HELP = "print a bundle's members and parsed sw-description"
DESCRIPTION = """\
List a bundle's members and print its sw-description, parsed, without
verifying anything (use 'pyvorin verify' for that).

  pyvorin inspect release.swu           # members + description as text (+ SBOM summary)
  pyvorin inspect release.swu --json    # machine-readable
"""


def setup_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("inspect", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, metavar="BUNDLE.swu")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with open_bundle(args.bundle) as bundle:
        members = [{"name": m.name, "size": m.size, "checksum": f"{m.checksum:08x}"} for m in bundle.members]
        description = bundle.description()
        raw = bundle.sw_description.decode("utf-8", "replace")
        # Nothing here verifies: an SBOM that does not read is reported, not fatal.
        try:
            found, problem = sbom.from_bundle(bundle), ""
        except PyvorinError as exc:
            found, problem = None, one_line(exc)
    summary: dict[str, object] | None = {"error": problem} if problem else None
    if found is not None:
        summary = {"image": found.image.name, "version": found.image.version, "packages": len(found.packages),
                   "spdx_version": found.spdx_version, "created": found.created}
    if args.json:
        print(json.dumps({"members": members, "sw-description": description, "sbom": summary}, indent=2))
        return 0
    for member in members:
        print(f"{member['name']:<32} {member['size']:>12}  crc {member['checksum']}")
    print()
    print(raw, end="")
    if found is not None:
        print(f"\nsbom: {found.image.name} {found.image.version}, {len(found.packages)} packages "
              f"({found.spdx_version}, created {found.created or 'unknown'}); 'pyvorin sbom show' lists them")
    elif problem:
        print(f"\nsbom: unreadable: {problem}")
    return 0
