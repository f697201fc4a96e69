"""What the A/B scenarios conclude from a run: the serial log and the U-Boot
environment read back on the host (tests/test_rollback.py and
tests/test_verified_boot.py)."""

from __future__ import annotations

import re

from qemu.device import Device
from qemu.vm import RunResult


def confirmed(env: dict[str, str], rootpart: str) -> bool:
    """``rootpart`` is the slot, and it is no longer on trial."""
    return (env.get("rootpart") == rootpart and env.get("upgrade_available") == "0"
            and env.get("bootcount") == "0")


def kernel_builds(run: RunResult) -> list[str]:
    """Per started kernel, the release whose slot it came from (stamped into each slot's initramfs)."""
    return re.findall(r"initramfs: kernel build (\S+)", run.log)


def fell_back(dev: Device, log: str) -> None:
    """Slot B used up its bootlimit; U-Boot went back to A and marked the update failed."""
    assert "pyvorin: slot 3 failed 4 boots (bootlimit 3): rolling back" in log, log
    env = dev.env()
    assert confirmed(env, "2"), env
    assert env["ustate"] == "3", env          # STATE_FAILED, for the agent to report
