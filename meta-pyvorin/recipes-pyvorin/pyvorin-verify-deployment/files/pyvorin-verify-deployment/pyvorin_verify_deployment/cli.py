"""``pyvorin-verify-deployment``: run the checklist; exit 0 only if every check passes.

Exit codes: 0 all pass, 1 a check failed, 2 usage error.  A check that
raises is reported as failed with the exception, never as a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from pyvorin_verify_deployment import __version__, report
from pyvorin_verify_deployment.checks import CHECKS
from pyvorin_verify_deployment.context import Context, Expectations
from pyvorin_verify_deployment.result import Result, failed

PROG = "pyvorin-verify-deployment"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Verify a Pyvorin Edge device before go-live.",
                                     epilog="checks: " + ", ".join(CHECKS))
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--only", action="append", choices=list(CHECKS), metavar="CHECK",
                        help="run only this check (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="read device files below this directory (default /)")
    parser.add_argument("--config", default="/etc/pyvorin-edge/config.toml",
                        help="the agent's config.toml, as a path on the device")
    parser.add_argument("--health-url", help="health endpoint (default: from config.toml)")
    parser.add_argument("--sshd-config", help="sshd_config to test (default: sshd's own)")
    parser.add_argument("--unit", default=Expectations.unit, help="the agent's systemd unit")
    parser.add_argument("--backup-max-age", type=float, default=Expectations.backup_max_age_hours, metavar="HOURS",
                        help="the newest backup may be at most this old (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per command or request")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def run_checks(ctx: Context, names: Sequence[str]) -> list[Result]:
    results = []
    for name in names:
        check = CHECKS[name][1]
        try:
            results.append(check(ctx))
        except Exception as exc:  # one broken check must not hide the verdict of the others
            results.append(failed(name, f"check crashed: {type(exc).__name__}: {exc}"))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for name, (description, _) in CHECKS.items():
            print(f"{name:<20} {description}")
        return 0
    ctx = Context(root=args.root, config_path=PurePosixPath(args.config), health_url=args.health_url,
                  sshd_config=args.sshd_config, timeout=args.timeout,
                  expect=Expectations(unit=args.unit, backup_max_age_hours=args.backup_max_age))
    results = run_checks(ctx, args.only or list(CHECKS))
    print(report.as_json(results) if args.json else report.human(results))
    sys.stdout.flush()
    return 0 if all(r.ok for r in results) else 1
