"""The recipes' device files judged by their real consumers: systemd-analyze
(verify, security), systemd-tmpfiles, apparmor_parser; the launchers and the
recipes' RDEPENDS against what the Python code imports."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from agent_support import AGENT_SRC, RECIPES, SERVICE_FILES, VERIFY_SRC

from helpers import require

UNITS = ("pyvorin-edge-agent.service", "pyvorin-edge-backup.service", "pyvorin-edge-backup.timer")
PROFILE = SERVICE_FILES / "usr.bin.pyv-edge-agent"
FEATURES = Path("/usr/share/apparmor-features/features")
EXPOSURE_LIMIT = {"pyvorin-edge-agent.service": 1.2, "pyvorin-edge-backup.service": 1.2}


def systemd_root(tmp_path: Path) -> Path:
    """A root with the host's own system units (for sysinit.target & co.), our units in
    /etc/systemd/system and stub binaries where ExecStart= points."""
    root = tmp_path / "root"
    host_units = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir()), None)
    if host_units is None:
        pytest.skip("no systemd unit directory on this host")
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(SERVICE_FILES / unit, root / "etc/systemd/system" / unit)
    stub = root / "usr/bin/pyv-edge-agent"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    return root


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    require("systemd-analyze")
    root = systemd_root(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                             *(f"/etc/systemd/system/{u}" for u in UNITS)], capture_output=True, text=True,
                            check=False)
    # verify exits 0 on unknown keys and only warns: any output at all is a failure.
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr


def test_the_identity_key_drop_in_verifies_and_hands_over_the_key(tmp_path: Path) -> None:
    """PYVORIN_TELEMETRY_IDENTITY's drop-in: the agent gets the device key by LoadCredential, after
    pyvorin-identity made it."""
    require("systemd-analyze")
    root = systemd_root(tmp_path)
    dropin = root / "etc/systemd/system/pyvorin-edge-agent.service.d/pyvorin-identity-key.conf"
    dropin.parent.mkdir()
    shutil.copy(SERVICE_FILES / "pyvorin-identity-key.conf", dropin)
    (root / "etc/systemd/system/pyvorin-identity.service").write_text("[Service]\nType=oneshot\nExecStart=/usr/bin/true\n")
    result = subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                             "/etc/systemd/system/pyvorin-edge-agent.service"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    shown = dropin.read_text()
    assert "LoadCredential=device.key:/data/identity/device.key" in shown
    assert "After=pyvorin-identity.service" in shown


def test_units_fail_verify_when_broken(tmp_path: Path) -> None:
    """The gate above can fail: a misspelt key is reported."""
    require("systemd-analyze")
    root = systemd_root(tmp_path)
    unit = root / "etc/systemd/system/pyvorin-edge-agent.service"
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    result = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "/etc/systemd/system/" + unit.name],
                            capture_output=True, text=True, check=False)
    assert "ProtectSytem" in result.stderr


@pytest.mark.parametrize("unit", sorted(EXPOSURE_LIMIT))
def test_exposure_score(unit: str, capsys: pytest.CaptureFixture[str]) -> None:
    require("systemd-analyze")
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                             str(SERVICE_FILES / unit)], capture_output=True, text=True, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    with capsys.disabled():
        print(f"\n{unit}: systemd-analyze security exposure {score} (limit {EXPOSURE_LIMIT[unit]})")
    assert score <= EXPOSURE_LIMIT[unit], result.stdout


def test_tmpfiles_create_the_data_dirs_for_the_agent_user(tmp_path: Path) -> None:
    require("systemd-tmpfiles")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\npyvorin-edge:x:990:990::/data/pyvorin-edge:/sbin/nologin\n")
    (root / "etc/group").write_text("root:x:0:\npyvorin-edge:x:990:\n")
    result = subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create",
                             str(SERVICE_FILES / "pyvorin-edge.tmpfiles")], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0 and not result.stderr, result.stderr
    for path in (root / "data/pyvorin-edge", root / "data/pyvorin-edge/backups"):
        st = path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (990, 990, 0o750)


def _apparmor_parse(profile: Path) -> subprocess.CompletedProcess[str]:
    require("apparmor_parser")
    if not FEATURES.exists():
        pytest.skip(f"{FEATURES} missing (apt-get install apparmor)")
    return subprocess.run(["apparmor_parser", "-Q", "-K", "-M", str(FEATURES), str(profile)], capture_output=True,
                          text=True, check=False)


def test_apparmor_profile_parses() -> None:
    result = _apparmor_parse(PROFILE)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_apparmor_profile_enforces_and_names_the_agent() -> None:
    text = PROFILE.read_text()
    assert re.search(r"^profile pyv-edge-agent /usr/bin/pyv-edge-agent flags=\(attach_disconnected\) \{", text, re.M)
    # No complain or unconfined flag: the profile enforces.
    assert not re.search(r"flags=\([^)]*(complain|unconfined|kill)", text)
    assert "/data/pyvorin-edge/** rwk," in text
    assert not re.search(r"^\s*/etc/\S* [^,]*w", text, re.M), "config must stay read-only"
    for unit in ("pyvorin-edge-agent.service", "pyvorin-edge-backup.service"):
        assert "AppArmorProfile=pyv-edge-agent" in (SERVICE_FILES / unit).read_text()


def test_a_broken_profile_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.write_text(PROFILE.read_text().replace("/data/pyvorin-edge/** rwk,", "/data/pyvorin-edge/** rwq,"))
    assert _apparmor_parse(broken).returncode != 0


def test_agent_unit_hardening_is_as_specified() -> None:
    unit = (SERVICE_FILES / "pyvorin-edge-agent.service").read_text()
    for line in ("Type=notify", "ProtectSystem=strict", "ReadWritePaths=/data/pyvorin-edge", "User=pyvorin-edge",
                 "CapabilityBoundingSet=", "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "IPAddressDeny=any",
                 "IPAddressAllow=localhost", "NoNewPrivileges=yes", "WatchdogSec=30s"):
        assert re.search(rf"^{re.escape(line)}$", unit, re.M), line
    timer = (SERVICE_FILES / "pyvorin-edge-backup.timer").read_text()
    assert "OnCalendar=" in timer and "Persistent=true" in timer


# Top-level standard library modules -> the oe-core (scarthgap) package that ships them,
# from meta/recipes-devtools/python/python3/python3-manifest.json.  A module imported by
# the code but missing here fails the test: add it with its package.
STDLIB_PACKAGE = {
    "__future__": "python3-core", "argparse": "python3-core", "collections": "python3-core",
    "contextlib": "python3-core", "dataclasses": "python3-core", "errno": "python3-core", "fcntl": "python3-fcntl",
    "hashlib": "python3-crypt", "http": "python3-netclient", "ipaddress": "python3-core",
    "json": "python3-json", "math": "python3-core", "os": "python3-core", "pathlib": "python3-core",
    "re": "python3-core", "shutil": "python3-core", "signal": "python3-core", "socket": "python3-io",
    "socketserver": "python3-netserver", "sqlite3": "python3-sqlite3", "stat": "python3-core",
    "subprocess": "python3-core", "sys": "python3-core", "threading": "python3-core", "time": "python3-core",
    "tomllib": "python3-tomllib", "types": "python3-core", "typing": "python3-core", "urllib": "python3-netclient",
    "datetime": "python3-datetime", "random": "python3-math", "ssl": "python3-io",
}
#: Not the standard library: the meta-python package that provides it (paho: the MQTT transport).
THIRD_PARTY = {"paho": "python3-paho-mqtt"}
# Submodules that need more than their top-level package: http.server imports socketserver.
IMPLIED = {"http.server": {"python3-netserver"}}


def _imported_modules(package: Path) -> set[str]:
    """Dotted names of every absolute import outside the package itself."""
    found = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return {name for name in found if name.split(".")[0] != package.name}


def _rdepends(recipe: Path) -> set[str]:
    text = re.sub(r"\\\n", " ", recipe.read_text())
    match = re.search(r'^RDEPENDS:\$\{PN\} = "([^"]*)"', text, re.M)
    assert match, recipe
    return set(match.group(1).split())


@pytest.mark.parametrize(("package", "recipe"), [
    (AGENT_SRC / "pyvorin_edge_agent", RECIPES / "pyvorin-edge-agent/pyvorin-edge-agent_1.0.0.bb"),
    (VERIFY_SRC / "pyvorin_verify_deployment", RECIPES / "pyvorin-verify-deployment/pyvorin-verify-deployment_1.0.0.bb"),
])
def test_rdepends_cover_every_import(package: Path, recipe: Path) -> None:
    dotted = _imported_modules(package)
    modules = {name.split(".")[0] for name in dotted}
    unknown = sorted(m for m in modules if m not in STDLIB_PACKAGE and m not in THIRD_PARTY)
    assert not unknown, f"{package.name} imports {unknown}: not standard library, or missing from STDLIB_PACKAGE"
    assert all(m in sys.stdlib_module_names for m in modules if m not in THIRD_PARTY)
    needed = {STDLIB_PACKAGE.get(m) or THIRD_PARTY[m] for m in modules}
    for name in dotted:
        needed |= IMPLIED.get(name, set())
    rdepends = _rdepends(recipe)
    # Third-party packages come from their layer, only when it is there (the layer needs oe-core only).
    for module in modules & set(THIRD_PARTY):
        line = (f"RDEPENDS:${{PN}} += \"${{@'{THIRD_PARTY[module]}' if 'meta-python' in "
                f"(d.getVar('BBFILE_COLLECTIONS') or '').split() else ''}}\"")
        assert line in recipe.read_text(), f"{recipe.name}: no meta-python-gated RDEPENDS on {THIRD_PARTY[module]}"
        rdepends.add(THIRD_PARTY[module])
    assert needed <= rdepends, f"{recipe.name}: RDEPENDS lacks {sorted(needed - rdepends)}"
    assert rdepends <= needed, f"{recipe.name}: RDEPENDS has unneeded {sorted(rdepends - needed)}"


@pytest.mark.parametrize(("launcher", "package"), [(AGENT_SRC / "bin/pyv-edge-agent", "pyvorin_edge_agent"),
                                                   (VERIFY_SRC / "bin/pyvorin-verify-deployment",
                                                    "pyvorin_verify_deployment")])
def test_launchers_run_isolated(launcher: Path, package: str, tmp_path: Path) -> None:
    # -I: no PYTHONPATH or user site can change what runs; -B: no .pyc on the read-only root.
    assert launcher.read_text().startswith("#!/usr/bin/python3 -IB\n")
    assert launcher.stat().st_mode & 0o111
    # The package beside the launcher and nothing but the interpreter's own path.
    site = tmp_path / "site"
    shutil.copytree(launcher.parents[1] / package, site / package)
    shutil.copy2(launcher, site)
    result = subprocess.run([sys.executable, "-B", str(site / launcher.name), "--version"], capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode == 0 and result.stdout.strip().endswith("1.0.0"), result.stderr
