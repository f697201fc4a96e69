"""The release tool stays mypy --strict clean, and everything ruff clean."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT, require


def test_mypy_strict() -> None:
    """The release tool; the device's projects are checked with their own settings (tests/agent/test_packages.py)."""
    result = subprocess.run([sys.executable, "-m", "mypy", "scripts/pyvorin"], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    if "No module named mypy" in result.stderr:
        require("mypy-not-installed")
    assert result.returncode == 0, result.stdout


def test_ruff() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "scripts", "tests", "tools", "examples", "meta-pyvorin"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    if "No module named ruff" in result.stderr:
        require("ruff-not-installed")
    assert result.returncode == 0, result.stdout


def test_errors_keep_their_cause() -> None:
    """``raise ... from None`` hides why a user-facing error happened from anyone who debugs it;
    main() prints one line either way, so every raise keeps its cause."""
    roots = [ROOT / "scripts/pyvorin", ROOT / "meta-pyvorin"]
    hidden = [f"{path.relative_to(ROOT)}:{number}" for root in roots for path in sorted(root.rglob("*.py"))
              for number, line in enumerate(path.read_text().splitlines(), 1) if line.rstrip().endswith("from None")]
    assert hidden == []
