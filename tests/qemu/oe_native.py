"""oe-core's native Python, as the stand-in's recipes call it (``nativepython3``).

A recipe that inherits ``python_setuptools_build_meta`` builds a wheel in
do_compile (``nativepython3 -m build --no-isolation --wheel``) and installs it
in do_install (``nativepython3 -m installer --destdir=${D}``). In a BitBake
build that interpreter is python3-native with the target's sysconfig
(python3targetconfig), so the wheel lands in ``PYTHON_SITEPACKAGES_DIR`` and
``bindir``. Here the recipes' exported tasks run in the arm64 Debian tree,
whose python3 is 3.11 with Debian's install schemes. So the stand-in:

* puts the build tools at scarthgap's versions (tests/oe-native-python.txt,
  which scripts/test.sh installs into ``.venv/oe-native``) on that python's
  path, and drops the target sysconfig name the class exports (its file is in
  a recipe sysroot that does not exist here);
* runs ``-m installer`` with the recipe's scheme as BitBake expanded it
  (``python_scheme`` in recipe.json, scripts/layer-gate-install.py) and with
  ``--interpreter``, which oe-core patches into installer 0.7.0.

Nothing of the recipe is transcribed: its do_compile and do_install run as exported.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

from helpers import ROOT, unavailable

REQUIREMENTS = ROOT / "tests" / "oe-native-python.txt"


def site() -> Path:
    """The build tools scripts/test.sh installed, checked against tests/oe-native-python.txt."""
    where = Path(sys.prefix) / "oe-native"
    wanted = [line.split("==") for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")]
    missing = [f"{name}=={version}" for name, version in wanted
               if not (where / f"{name.replace('-', '_')}-{version}.dist-info").is_dir()]
    if missing:
        unavailable(f"needs {', '.join(missing)} in {where} (scripts/test.sh installs tests/oe-native-python.txt)")
    return where


_NATIVEPYTHON3 = """#!/bin/sh
# nativepython3 for the stand-in (tests/qemu/oe_native.py): the target python3 with
# scarthgap's build tools; python3targetconfig's sysconfig name points into a sysroot
# that does not exist here.
unset _PYTHON_SYSCONFIGDATA_NAME
PYTHONPATH={site}
export PYTHONPATH
if [ "$1" = -m ] && [ "$2" = installer ]; then
    shift 2
    exec python3 {installer} "$@"
fi
exec python3 "$@"
"""

_INSTALLER = """\"\"\"python -m installer as oe-core's python3-installer-native runs it: with its
--interpreter option, into the recipe's scheme ($PYVORIN_OE_SCHEME, as BitBake expanded it).\"\"\"
import json
import os
import sys

import installer.__main__ as cli

argv = sys.argv[1:]
for index, arg in enumerate(argv):
    if arg == "--interpreter" or arg.startswith("--interpreter="):
        value = arg.partition("=")[2] if "=" in arg else argv[index + 1]
        del argv[index:index + (1 if "=" in arg else 2)]
        sys.executable = value
        break
scheme = json.loads(os.environ["PYVORIN_OE_SCHEME"])
cli._get_scheme_dict = lambda distribution_name, prefix=None: dict(scheme)
cli._main(argv, "python -m installer")
"""


def stage(tree: Path, workdir: str) -> str:
    """Puts nativepython3 and its tools under ``workdir`` in ``tree``, once per tree; returns the
    bin directory to put on PATH."""
    home = tree / workdir.lstrip("/") / ".oe-native"
    inside = f"{workdir}/.oe-native"
    if (home / "bin" / "nativepython3").exists():
        return f"{inside}/bin"
    shutil.copytree(site(), home / "site", ignore=shutil.ignore_patterns("bin", "__pycache__"))
    (home / "run-installer.py").write_text(_INSTALLER)
    (home / "bin").mkdir()
    launcher = home / "bin" / "nativepython3"
    launcher.write_text(_NATIVEPYTHON3.format(site=f"{inside}/site", installer=f"{inside}/run-installer.py"))
    launcher.chmod(0o755)
    return f"{inside}/bin"


def environment(scheme: dict[str, str] | None) -> list[str]:
    """Shell lines that give a recipe's tasks the installer scheme BitBake expanded for it."""
    return [] if scheme is None else [f"export PYVORIN_OE_SCHEME={shlex.quote(json.dumps(scheme))}"]


def inputs() -> list[bytes]:
    """What the stand-in's native Python depends on, for cache keys."""
    return [Path(__file__).read_bytes(), REQUIREMENTS.read_bytes()]
