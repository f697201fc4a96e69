"""``pyv-edge-agent``: run the agent, or back up, check and restore its databases.

``main()`` only maps errors to exit codes (an AgentError is one line on stderr:
2 for configuration, 1 for everything else; 130 on Ctrl-C); the commands
below never call sys.exit."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pyvorin_edge_agent import __version__, backup, config
from pyvorin_edge_agent.agent import Agent
from pyvorin_edge_agent.errors import AgentError
from pyvorin_edge_agent.jsonlog import JsonLog
from pyvorin_edge_agent.lock import DataDirLock
from pyvorin_edge_agent.sdnotify import Notifier

PROG = "pyv-edge-agent"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Pyvorin Edge agent (reference implementation).")
    parser.add_argument("-c", "--config", type=Path, default=config.DEFAULT_PATH,
                        help=f"configuration file (default {config.DEFAULT_PATH})")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="serve /health and /metrics, sample, sync (the default)")
    sub.add_parser("backup", help="back up both databases online and prune old backups")
    check = sub.add_parser("check-backups", help="verify every backup set (hashes and integrity_check)")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    restore = sub.add_parser("restore", help="replace the databases with a backup (agent stopped)")
    restore.add_argument("name", nargs="?", help="backup set name (default: the newest)")
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = config.load(args.config)
    log = JsonLog(settings.agent.log_level)
    command = args.command or "run"
    if command == "run":
        return Agent(settings, log, Notifier()).run()
    if command == "backup":
        created, pruned = backup.create(settings.data_dir, settings.backup_dir, settings.backup.keep)
        log.info("backup_created", name=created.name, path=str(created.path), pruned=pruned)
        return 0
    if command == "check-backups":
        return _check_backups(settings.backup_dir, args.json)
    if command == "restore":
        lock = DataDirLock(settings.data_dir, "restore")
        try:
            chosen = backup.select(settings.backup_dir, args.name)
            backup.restore(chosen, settings.data_dir)
        finally:
            lock.release()
        log.info("restored", name=chosen.name, data_dir=str(settings.data_dir))
        return 0
    raise AssertionError(command)


def _check_backups(backup_dir: Path, as_json: bool) -> int:
    verdicts = [backup.verify(s) for s in backup.list_sets(backup_dir)]
    if as_json:
        print(json.dumps({"backup_dir": str(backup_dir), "ok": bool(verdicts) and all(v.ok for v in verdicts),
                          "sets": [{"name": v.name, "ok": v.ok, "problems": list(v.problems)} for v in verdicts]},
                         indent=2))
    else:
        for verdict in verdicts:
            print(f"{'OK     ' if verdict.ok else 'DAMAGED'} {verdict.name}"
                  + (f": {'; '.join(verdict.problems)}" if verdict.problems else ""))
        if not verdicts:
            print(f"no backups in {backup_dir}")
    return 0 if verdicts and all(v.ok for v in verdicts) else 1


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except AgentError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
