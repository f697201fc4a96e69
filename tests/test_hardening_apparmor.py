"""The layer's AppArmor profiles, compiled by Debian's apparmor_parser.

Each profile is compiled against the pinned feature set Debian ships
(/usr/share/apparmor-features/features) without touching the kernel
(``-Q -K``), with our abstractions on the include path. Warnings are errors,
except "rule not enforced" for one known case: the base abstraction's
fine-grained unix socket rules, which kernels without unix mediation
(upstream Linux, and that feature set) downgrade to plain network rules.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import ROOT, require, unavailable

LAYER = ROOT / "meta-pyvorin"
PROFILES_DIR = LAYER / "recipes-security" / "pyvorin-apparmor-profiles" / "files"
PROFILES = sorted(p for p in PROFILES_DIR.iterdir() if p.is_file())
SWUPDATE_DROPIN = LAYER / "dynamic-layers/swupdate/recipes-support/swupdate/files/swupdate-hardening.conf"
FEATURES = Path("/usr/share/apparmor-features/features")
WERROR = ["rule-downgraded", "abi", "deprecated", "dangerous", "unexpected", "format", "missing", "override",
          "config"]
KNOWN_DOWNGRADE = "downgrading extended network unix socket rule to generic network rule"


FLEET_CLIENT = "abstractions/pyvorin-fleet-client"


@functools.cache
def installed(fleet: bool) -> Path:
    """/etc/apparmor.d as the recipe installs it: the fleet abstraction only in an image with a
    rollout server (PYVORIN_FLEET_URL), rendered as its do_install renders it."""
    tree = Path(tempfile.mkdtemp(prefix="pyvorin-apparmor-"))
    shutil.copytree(PROFILES_DIR, tree, dirs_exist_ok=True)
    if fleet:
        text = (PROFILES_DIR / FLEET_CLIENT).read_text()
        text = text.replace("@FLEET_CA@", "/usr/share/pyvorin/fleet-ca.crt").replace("@IDENTITY_DIR@", "/data/identity")
        (tree / FLEET_CLIENT).write_text(text)
    else:
        (tree / FLEET_CLIENT).unlink()
    return tree


def parse(profile: Path, *extra: str, fleet: bool = False) -> subprocess.CompletedProcess[str]:
    require("apparmor_parser")
    if not FEATURES.is_file():
        unavailable(f"needs {FEATURES} (apt-get install apparmor)")
    werror = [f"--Werror={w}" for w in WERROR]
    return subprocess.run(["apparmor_parser", "-Q", "-K", "-M", str(FEATURES), "-I", str(installed(fleet)),
                           "--warn=all", *werror, *extra, str(profile)], capture_output=True, text=True, check=False)


def complaints(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and KNOWN_DOWNGRADE not in ln]


@pytest.mark.parametrize("fleet", [False, True], ids=["local-only", "fleet"])
@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_profile_compiles_without_warnings(profile: Path, fleet: bool) -> None:
    result = parse(profile, fleet=fleet)
    assert result.returncode == 0 and not complaints(result.stderr), result.stderr


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_profile_is_enforced_and_overridable(profile: Path) -> None:
    text = profile.read_text()
    assert "complain" not in re.sub(r"#.*", "", text), f"{profile.name} must load in enforce mode"
    assert re.search(r"^abi <abi/3\.0>,$", text, re.M), "pin the policy ABI"
    assert f"include if exists <local/{profile.name}>" in text, "site-specific additions go to local/"


def test_profile_names_and_attachments() -> None:
    names = {}
    for profile in PROFILES:
        result = parse(profile, "-N")
        assert result.returncode == 0, result.stderr
        names[profile.name] = result.stdout.split()
    assert names == {"pyvorin-confirm": ["pyvorin-confirm"], "usr.bin.swupdate": ["swupdate"]}
    swupdate = (PROFILES_DIR / "usr.bin.swupdate").read_text()
    # swupdate.sh execs /usr/bin/swupdate: attachment by path, no unit change.
    assert re.search(r"^profile swupdate /usr/bin/swupdate flags=\(attach_disconnected\) \{", swupdate, re.M)
    confirm = (PROFILES_DIR / "pyvorin-confirm").read_text()
    assert re.search(r"^profile pyvorin-confirm /usr/\{bin,sbin,libexec\}/pyvorin-confirm \{", confirm, re.M)


def _capabilities(profile: Path) -> set[str]:
    """Capabilities a profile grants, following our own abstractions."""
    text = profile.read_text()
    for include in re.findall(r"^\s*include <(abstractions/pyvorin-[\w-]+)>", text, re.M):
        text += (PROFILES_DIR / include).read_text()
    return {c for group in re.findall(r"^\s*capability ([\w ,]+),", text, re.M) for c in group.split()}


def test_swupdate_profile_grants_no_capability_the_unit_bounds_away() -> None:
    granted = _capabilities(PROFILES_DIR / "usr.bin.swupdate")
    bounding = re.search(r"^CapabilityBoundingSet=(.*)$", SWUPDATE_DROPIN.read_text(), re.M)
    assert bounding
    allowed = {c.removeprefix("CAP_").lower() for c in bounding.group(1).split()}
    assert granted and granted <= allowed, f"profile grants {sorted(granted - allowed)} the unit drops"
    assert allowed <= granted, f"unit keeps {sorted(allowed - granted)} the profile denies"


def _rules(text: str) -> str:
    return re.sub(r"#.*", "", text)


def test_profiles_allow_ip_only_where_it_is_needed() -> None:
    # swupdate: IP only through the fleet abstraction, which only a fleet image installs.
    swupdate = _rules((PROFILES_DIR / "usr.bin.swupdate").read_text())
    assert "network inet" not in swupdate and f"include if exists <{FLEET_CLIENT}>" in swupdate
    assert not (installed(False) / FLEET_CLIENT).exists()
    fleet = _rules((installed(True) / FLEET_CLIENT).read_text())
    assert "network inet stream," in fleet and "/data/identity/device.key r," in fleet
    assert "@" not in fleet.replace("@{", ""), "a word left unrendered"
    confirm = (PROFILES_DIR / "pyvorin-confirm").read_text()
    assert "network inet stream," in confirm and "deny network inet dgram," in confirm


@pytest.mark.parametrize("broken, message", [
    ("  /usr/share/swupdate/** r\n", "missing an end of line"),  # missing comma
    ("  capability sys_admim,\n", "capability"),              # misspelt capability
    ("  /usr/share/swupdate/** rq,\n", "expecting TOK_MODE"),  # unknown permission
    ("  include <abstractions/pyvorin-missing>\n", "Could not open"),
])
def test_a_broken_profile_fails(broken: str, message: str, tmp_path: Path) -> None:
    source = (PROFILES_DIR / "pyvorin-confirm").read_text()
    profile = tmp_path / "pyvorin-confirm"
    profile.write_text(source.replace("  /usr/share/swupdate/** r,\n", broken))
    assert broken in profile.read_text()
    result = parse(profile)
    assert result.returncode != 0, f"apparmor_parser accepted a broken profile:\n{profile.read_text()}"
    assert message.lower() in result.stderr.lower(), result.stderr


def test_nothing_in_the_layer_turns_apparmor_off() -> None:
    """CONFIG_LSM enables AppArmor; a command line lsm=/security=/apparmor=0
    would override it."""
    pattern = re.compile(r"\b(apparmor=0|security=(?!apparmor)\w+|lsm=(?![\w,]*apparmor)[\w,]+)")
    offenders = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in LAYER.rglob("*") if p.is_file()
                 for m in [pattern.search(p.read_text(errors="replace"))] if m]
    assert not offenders, offenders
