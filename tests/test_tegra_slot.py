"""The Jetson post-install step (pyvorin-tegra-slot.sh) against an efivarfs-shaped
directory and a stand-in nvbootctrl that records what the firmware would see.

No Jetson here: the UEFI side is edk2-nvidia's L4TRootfsValidation, read for the
variable layout (RootfsStatusSlotA/B under NVIDIA's public GUID, 4 bytes of
attributes then a UINT32, 0 normal and 0xFF unbootable). What is proven: the
slot about to become active is reset to normal before ``set-active-boot-slot``
and only when UEFI marked it, and every failure stops before the switch."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import ROOT, require

SCRIPT = ROOT / "meta-pyvorin/dynamic-layers/swupdate/recipes-core/images/files/tegra/pyvorin-tegra-slot.sh"
GUID = "781e084c-a330-417c-b678-38e696380cb9"
NORMAL = bytes([7, 0, 0, 0, 0, 0, 0, 0])
UNBOOTABLE = bytes([7, 0, 0, 0, 0xFF, 0, 0, 0])

# Records each call with the status variables as they are at that moment.
FAKE_NVBOOTCTRL = """#!/bin/sh
{ printf '%s' "$*"; for v in "$PYVORIN_EFIVARS"/RootfsStatusSlot*; do
    printf ' %s=%s' "${v##*/RootfsStatusSlot}" "$(od -An -tx1 "$v" | tr -d ' \\n')"; done; echo; } >> "$CALLS"
case "$*" in
    "-t rootfs get-current-slot") echo "$CURRENT" ;;
    "-t rootfs set-active-boot-slot "[01]) ;;
    *) exit 2 ;;
esac
"""


def run(tmp_path: Path, current: str, status: dict[str, bytes | None], *args: str) -> tuple[
        subprocess.CompletedProcess[str], list[str], Path]:
    require("dash", "od", "chattr")
    efivars = tmp_path / "efivars"
    efivars.mkdir(exist_ok=True)
    for slot, value in status.items():
        if value is not None:
            (efivars / f"RootfsStatusSlot{slot}-{GUID}").write_bytes(value)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "nvbootctrl"
    fake.write_text(FAKE_NVBOOTCTRL)
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    calls.write_text("")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin:/usr/sbin:/sbin", "PYVORIN_EFIVARS": str(efivars),
           "CALLS": str(calls), "CURRENT": current}
    result = subprocess.run(["dash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30,
                            check=False)
    return result, calls.read_text().splitlines(), efivars


def var(efivars: Path, slot: str) -> Path:
    return efivars / f"RootfsStatusSlot{slot}-{GUID}"


@pytest.mark.parametrize(("current", "target", "letter"), [("0", "1", "B"), ("1", "0", "A")])
def test_unbootable_target_is_reset_before_it_is_made_active(tmp_path: Path, current: str, target: str,
                                                             letter: str) -> None:
    other = "A" if letter == "B" else "B"
    result, calls, efivars = run(tmp_path, current, {letter: UNBOOTABLE, other: NORMAL}, "postinst")
    assert result.returncode == 0, result.stderr
    assert var(efivars, letter).read_bytes() == NORMAL
    assert var(efivars, other).read_bytes() == NORMAL
    switch = [c for c in calls if "set-active-boot-slot" in c]
    assert len(switch) == 1 and switch[0].startswith(f"-t rootfs set-active-boot-slot {target} ")
    assert f"{letter}-{GUID}=0700000000000000" in switch[0], "the firmware saw the reset before the switch"
    assert "unbootable" in result.stdout


def test_a_normal_target_is_left_alone(tmp_path: Path) -> None:
    result, calls, efivars = run(tmp_path, "0", {"A": NORMAL, "B": NORMAL}, "postinst")
    assert result.returncode == 0, result.stderr
    assert "unbootable" not in result.stdout
    assert calls[-1].startswith("-t rootfs set-active-boot-slot 1 ")
    assert var(efivars, "B").read_bytes() == NORMAL


def test_without_the_status_variable_nothing_is_switched(tmp_path: Path) -> None:
    result, calls, _ = run(tmp_path, "0", {"A": NORMAL, "B": None}, "postinst")
    assert result.returncode == 1
    assert "redundancy is not enabled" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not any("set-active-boot-slot" in c for c in calls)


def test_a_reset_that_does_not_stick_stops_before_the_switch(tmp_path: Path) -> None:
    (tmp_path / "efivars").mkdir()
    var(tmp_path / "efivars", "B").symlink_to("/proc/version")  # readable, never writable, never 0
    result, calls, _ = run(tmp_path, "0", {"A": NORMAL}, "postinst")
    assert result.returncode == 1
    assert "cannot reset" in result.stderr or "still reads" in result.stderr
    assert not any("set-active-boot-slot" in c for c in calls)


def test_an_unknown_current_slot_stops(tmp_path: Path) -> None:
    result, calls, efivars = run(tmp_path, "2", {"A": NORMAL, "B": UNBOOTABLE}, "postinst")
    assert result.returncode == 1 and "unexpected current rootfs slot '2'" in result.stderr
    assert var(efivars, "B").read_bytes() == UNBOOTABLE
    assert not any("set-active-boot-slot" in c for c in calls)


@pytest.mark.parametrize("phase", ["preinst", ""])
def test_other_phases_do_nothing(tmp_path: Path, phase: str) -> None:
    result, calls, efivars = run(tmp_path, "0", {"A": NORMAL, "B": UNBOOTABLE}, *([phase] if phase else []))
    assert result.returncode == 0 and calls == []
    assert var(efivars, "B").read_bytes() == UNBOOTABLE
