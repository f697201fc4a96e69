"""Device entry point: python3 -m pyvorin.delta DELTA --source DEV --target DEV

Only the standard library and pyvorin.delta are imported, so the device needs
neither PyYAML nor cryptography; SWUpdate's pyvdelta Lua handler runs this.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import PyvorinError, UsageParser, describe_os_error, one_line
from .apply import apply_delta


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(prog="pyvorin-delta-apply",
                                     description="Apply a windowed delta from the active slot to the inactive one.")
    parser.add_argument("delta", type=Path)
    parser.add_argument("--source", type=Path, required=True, help="active slot (read only)")
    parser.add_argument("--target", type=Path, required=True, help="inactive slot (written)")
    parser.add_argument("--workdir", type=Path, help="scratch directory for one window")
    args = parser.parse_args(argv)
    try:
        header = apply_delta(args.delta, args.source, args.target, args.workdir)
    except PyvorinError as exc:
        print(f"pyvorin-delta-apply: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"pyvorin-delta-apply: error: {one_line(describe_os_error(exc))}", file=sys.stderr)
        return 2
    print(f"pyvorin-delta-apply: {args.target}: {header.new_size} bytes, sha256 {header.new_sha256} verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
