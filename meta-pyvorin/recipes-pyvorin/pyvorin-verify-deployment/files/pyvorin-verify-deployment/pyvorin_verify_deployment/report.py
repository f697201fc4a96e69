"""Rendering results for a person (one line per check) or a program (JSON)."""

from __future__ import annotations

import json

from pyvorin_verify_deployment import __version__
from pyvorin_verify_deployment.result import Result


def human(results: list[Result]) -> str:
    width = max((len(r.name) for r in results), default=0)
    lines = [f"{'PASS' if r.ok else 'FAIL'}  {r.name:<{width}}  {r.detail}" for r in results]
    failed = sum(not r.ok for r in results)
    verdict = "deployment verified" if not failed else "deployment NOT verified"
    lines.append(f"{verdict}: {len(results) - failed} of {len(results)} checks pass")
    return "\n".join(lines)


def as_json(results: list[Result]) -> str:
    return json.dumps({
        "ok": all(r.ok for r in results),
        "version": __version__,
        "checks": [{"name": r.name, "ok": r.ok, "detail": r.detail} for r in results],
    }, indent=2)
