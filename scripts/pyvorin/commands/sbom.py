"""pyvorin sbom show|diff"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from .. import sbom

HELP = "what a release contains (its SPDX SBOM), and what changed between two"
DESCRIPTION = """\
A release spec with 'sbom: <image>.spdx.tar.zst' (the archive oe-core's
create-spdx deploys next to the image) ships the image's SPDX documents in
the bundle: signed with sw-description (its sha256 is there), never
installed. These read it from a bundle, or from an SBOM file.

  pyvorin sbom show release.swu                  # the image, its packages
  pyvorin sbom show release.swu --json > r.spdx.json   # the SPDX document itself
  pyvorin sbom diff 2026.11.0.swu 2026.12.0.swu  # added, removed, changed
  pyvorin sbom diff old.swu new.swu --json       # for a release note or a CVE check
"""


def setup_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("sbom", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="sbom_command", metavar="{show,diff}", required=True)
    show = sub.add_parser("show", help="the image an SBOM describes and the packages it contains")
    show.add_argument("source", type=Path, metavar="BUNDLE.swu|SBOM")
    show.add_argument("--json", action="store_true", help="print the release's SPDX document (JSON)")
    show.set_defaults(func=run_show)
    diff = sub.add_parser("diff", help="packages added, removed and changed from OLD to NEW")
    diff.add_argument("old", type=Path, metavar="OLD.swu|SBOM")
    diff.add_argument("new", type=Path, metavar="NEW.swu|SBOM")
    diff.add_argument("--json", action="store_true", help="print JSON")
    diff.set_defaults(func=run_diff)


def run_show(args: argparse.Namespace) -> int:
    found = sbom.load(args.source)
    if args.json:
        print(json.dumps(found.spdx, indent=1, sort_keys=True))
        return 0
    print(f"{found.image.name} {found.image.version}: {len(found.packages)} packages "
          f"({found.spdx_version} document {found.name!r}, created {found.created or 'unknown'})")
    for package in found.packages:
        print(f"  {package.name} {package.version}")
    return 0


def run_diff(args: argparse.Namespace) -> int:
    old, new = sbom.load(args.old), sbom.load(args.new)
    change = sbom.diff(old, new)
    if args.json:
        print(json.dumps({"old": asdict(old.image), "new": asdict(new.image),
                          "added": [asdict(p) for p in change.added],
                          "removed": [asdict(p) for p in change.removed],
                          "changed": [{"name": a.name, "old": a.version, "new": b.version} for a, b in change.changed]},
                         indent=2))
        return 0
    print(f"{old.image.name} {old.image.version} -> {new.image.name} {new.image.version}: "
          f"{len(change.added)} added, {len(change.removed)} removed, {len(change.changed)} changed")
    for package in change.added:
        print(f"+ {package.name} {package.version}")
    for package in change.removed:
        print(f"- {package.name} {package.version}")
    for before, after in change.changed:
        print(f"~ {before.name} {before.version} -> {after.version}")
    return 0
