"""The device's Python projects as packages: the edge agent and pyvorin-verify-deployment each
build their wheel as their recipe's do_compile does (oe-core's python_pep517 with scarthgap's
build tools), the wheel holds the package and nothing else, one version runs through
``__version__``, the wheel and the recipe's file name, and each is mypy --strict clean with its
own pyproject settings."""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from agent_support import AGENT_SRC, RECIPES, VERIFY_SRC

from qemu import oe_native

from helpers import ROOT, require

#: project (and recipe) name -> (its directory in the layer, its import package)
PROJECTS = {
    "pyvorin-edge-agent": (AGENT_SRC, "pyvorin_edge_agent"),
    "pyvorin-verify-deployment": (VERIFY_SRC, "pyvorin_verify_deployment"),
}


def _version(package_dir: Path) -> str:
    match = re.search(r'^__version__ = "([^"]+)"$', (package_dir / "__init__.py").read_text(), re.M)
    assert match, package_dir
    return match.group(1)


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_wheel_as_the_recipe_builds_it(name: str, tmp_path: Path) -> None:
    project, package = PROJECTS[name]
    # A copy: the build writes build/ and *.egg-info beside the sources, as it does in the recipe's S.
    source = tmp_path / name
    shutil.copytree(project, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(oe_native.site()), "LC_ALL": "C.UTF-8"}
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir",
                             str(tmp_path / "dist"), str(source)], env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        fields = email.parser.Parser().parsestr(archive.read(metadata).decode())
    modules = {n for n in names if ".dist-info/" not in n}
    expected = {str(p.relative_to(project)) for p in (project / package).rglob("*.py")}
    assert modules == expected, "the wheel holds the package's modules and nothing else (no bin/, no tests)"
    version = _version(project / package)
    (recipe,) = (RECIPES / name).glob(f"{name}_*.bb")
    assert fields["Name"] == name and fields["Version"] == version
    assert recipe.name == f"{name}_{version}.bb", "the recipe's PV is the package's __version__"
    assert fields.get_all("Requires-Dist") is None or name == "pyvorin-edge-agent"


@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_mypy_strict_with_its_own_settings(name: str) -> None:
    project, package = PROJECTS[name]
    require("mypy")
    # The project's pyproject.toml ([tool.mypy] strict), not the repository's.
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(ROOT / ".mypy_cache" / name), package],
                            cwd=project, capture_output=True, text=True, check=False)
    assert "strict = true" in (project / "pyproject.toml").read_text()
    assert result.returncode == 0, result.stdout + result.stderr
