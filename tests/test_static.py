"""The release tool and the device's Python stay mypy --strict clean, and everything ruff clean."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT, require

#: The device's Python, held to the release tool's settings (pyproject.toml: strict).
DEVICE_PACKAGES = ("meta-pyvorin/recipes-pyvorin/pyvorin-edge-agent/files/pyvorin_edge_agent",
                   "meta-pyvorin/recipes-pyvorin/pyvorin-verify-deployment/files/pyvorin_verify_deployment")


@pytest.mark.parametrize("package", ["scripts/pyvorin", *DEVICE_PACKAGES], ids=lambda p: p.rsplit("/", 1)[-1])
def test_mypy_strict(package: str) -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", package], cwd=ROOT, capture_output=True, text=True,
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
