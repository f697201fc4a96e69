"""A signed delta bundle installed by the real swupdate, through our Lua handler."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest

from pyvorin.delta.make import make_delta
from pyvorin_devsim.swupdate_sandbox import SUCCESS_MARKER, SwupdateSandbox

from helpers import ROOT, require, require_module

pytestmark = [pytest.mark.swupdate, pytest.mark.usefixtures("device_swupdate")]
require_module("bsdiff4")


def _images(seed: int = 1) -> tuple[bytes, bytes]:
    rng = random.Random(seed)
    old = b"".join(rng.randbytes(4096) if rng.random() < 0.6 else bytes(4096) for _ in range(512))  # 2 MiB
    new = bytearray(old)
    for _ in range(40):
        at = rng.randrange(0, len(new) - 64)
        new[at : at + 64] = rng.randbytes(64)
    new[1 << 20 : (1 << 20) + 65536] = old[:65536]  # moved content
    return old, bytes(new) + rng.randbytes(10_000)


def _bundle(cli, keys, tmp: Path, sandbox: SwupdateSandbox, old: bytes, new: bytes) -> Path:
    (tmp / "old.img").write_bytes(old)
    (tmp / "new.img").write_bytes(new)
    make_delta(tmp / "old.img", tmp / "new.img", tmp / "rootfs.pyvd")
    spec = tmp / "release.yaml"
    spec.write_text(textwrap.dedent(f"""\
        version: 2026.12.0
        artifacts:
          rootfs.pyvd: {{file: rootfs.pyvd, type: pyvdelta}}
        machines:
          raspberrypi4-64:
            hardware-compatibility: ["1.0"]
            bootenv: {{upgrade_available: "1", bootcount: "0"}}
            copy1:
              install:
                rootfs.pyvd: {{device: {sandbox.slot_b}, source: {sandbox.slot_a}}}
              bootenv: {{rootpart: "3"}}
            copy2:
              install:
                rootfs.pyvd: {{device: {sandbox.slot_a}, source: {sandbox.slot_b}}}
              bootenv: {{rootpart: "2"}}
        """))
    swu = tmp / "delta.swu"
    cli("bundle", spec, "-o", swu, *keys.signing_args(), check=True)
    return swu


def _sandbox(tmp: Path, slot_a_content: bytes, enable) -> SwupdateSandbox:  # type: ignore[no-untyped-def]
    sandbox = SwupdateSandbox(tmp / "sbx", initial_env={"rootpart": "2", "bootcount": "0", "upgrade_available": "0"})
    enable(sandbox)
    with open(sandbox.slot_a, "r+b") as slot:  # the device runs the old image from slot A
        slot.write(slot_a_content)
    return sandbox


def test_delta_bundle_rebuilds_new_image_in_slot_b(cli, keys, tmp_path: Path, delta_env) -> None:
    old, new = _images()
    sandbox = _sandbox(tmp_path, old, delta_env)
    swu = _bundle(cli, keys, tmp_path, sandbox, old, new)
    assert cli("verify", swu, "--cert", keys.ca).returncode == 0
    slot_a_before = sandbox.slot_bytes(sandbox.slot_a)
    result = sandbox.install(swu, keys.ca, "stable,copy1")
    assert result.returncode == 0 and SUCCESS_MARKER in result.output, result.output
    assert sandbox.slot_bytes(sandbox.slot_b)[: len(new)] == new
    assert sandbox.slot_bytes(sandbox.slot_a) == slot_a_before
    env = sandbox.printenv()
    assert env["rootpart"] == "3" and env["upgrade_available"] == "1"


def test_delta_against_a_different_source_is_refused(cli, keys, tmp_path: Path, delta_env) -> None:
    old, new = _images()
    other = bytearray(old)
    other[5000] ^= 0xFF  # the device does not run the image the delta was made from
    sandbox = _sandbox(tmp_path, bytes(other), delta_env)
    swu = _bundle(cli, keys, tmp_path, sandbox, old, new)
    result = sandbox.install(swu, keys.ca, "stable,copy1")
    assert result.returncode != 0 and SUCCESS_MARKER not in result.output
    assert "does not hold the delta's source image" in result.output
    assert sandbox.untouched(sandbox.slot_b)
    env = sandbox.printenv()
    assert env["rootpart"] == "2" and env["upgrade_available"] == "0"


@pytest.mark.parametrize("lua", ["lua5.1", "lua5.4"])
def test_handler_reads_os_execute_in_every_lua(lua: str) -> None:
    """Under Lua 5.1 os.execute returns a number: a failing applier must not count as success (issue 12, A5)."""

    require(lua)
    source = (ROOT / "meta-pyvorin/dynamic-layers/swupdate/recipes-support/swupdate/files/swupdate_handlers.lua")
    text = source.read_text()
    function = text[text.index("local function succeeded"):text.index("local function pyvdelta")]
    probe = function + 'io.write(tostring(succeeded(os.execute("exit 0"))), " ", tostring(succeeded(os.execute("exit 3"))),' \
                       ' " ", tostring(succeeded(os.execute("kill -9 $$"))))'
    import subprocess

    out = subprocess.run([lua, "-e", probe], capture_output=True, text=True, check=True).stdout
    assert out == "true false false", out
