"""The bundle BitBake makes, judged by the device.

pyvorin_bundle.bbclass writes the release spec of ``pyvorin-update-image``
from the machine's BitBake variables and runs the release tool on it. The gate
expands the spec for each gated machine (``PYVORIN_BUNDLE_SPEC`` in ``bitbake
-e``), runs the class's own spec-writing prefunc and exports its do_deploy as
BitBake expands it (scripts/layer-gate-bundle.py). Here the spec is held to
the slot map, and the exported task runs: with the release tool on PATH
(pyvorin-native's program), the image, its SBOM and a previous release's image
where the deploy directory would hold them, and the Pi's slot devices made the
sandbox's files. Its bundles go to the device's swupdate: the Pi's full and
delta bundles are installed into file-backed slots and a file-backed U-Boot
environment; the Jetson's, left unsigned as the CI workflow has it and then
signed as its sign job does, is checked (``-c``: signature, hashes, hardware;
its post-install step needs the UEFI firmware)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import create_spdx
import layer_gate
from helpers import require, require_module, unavailable, write_image

pytestmark = [pytest.mark.gate]


@pytest.fixture(scope="module")
def gated() -> dict[str, layer_gate.GateRun]:
    lacking = layer_gate.missing_prerequisites()
    if lacking:
        unavailable(f"the layer gate needs {', '.join(lacking)} (scripts/test.sh sets them up as root)")
    try:
        return {machine: layer_gate.result(machine) for machine in layer_gate.MACHINES}
    except layer_gate.GateError as exc:
        pytest.fail(str(exc), pytrace=False)


def _spec(run: layer_gate.GateRun) -> dict:  # type: ignore[type-arg]
    assert run.bundle_spec is not None and run.slot_map is not None, f"{run.machine}: the gate exported no spec"
    return run.bundle_spec


@pytest.mark.parametrize("machine", layer_gate.MACHINES)
def test_the_class_writes_the_slot_maps_spec(gated: dict[str, layer_gate.GateRun], machine: str) -> None:
    run = gated[machine]
    spec, slots = _spec(run), run.slot_map
    assert slots is not None
    assert list(spec["machines"]) == [machine]
    board = spec["machines"][machine]
    (name, artifact), = spec["artifacts"].items()
    # copy1 runs on slot A and writes B (50-pyvorin picks it from the running root), copy2 the reverse.
    assert board["copy1"]["install"] == {name: slots["PYVORIN_SLOT_B_DEVICE"]}
    assert board["copy2"]["install"] == {name: slots["PYVORIN_SLOT_A_DEVICE"]}
    assert board["hardware-compatibility"] == slots["PYVORIN_HW_REVISION"].split() == ["1.0"]
    assert spec["software-set"] == slots["PYVORIN_SOFTWARE_SET"] == "stable"
    link = f"pyvorin-image-{machine}.rootfs"
    assert artifact["file"].endswith(f"/deploy/images/{machine}/{link}.ext4.gz")
    assert (artifact["type"], artifact["compressed"], artifact["installed-directly"]) == ("raw", "zlib", True)
    # The archive the gate's create-spdx check names (its IMAGE_LINK_NAME).
    assert spec["sbom"].endswith(f"/deploy/images/{machine}/{link}.spdx.tar.zst")
    assert spec["version"] == "0.0.0" and spec["description"] == f"Pyvorin Edge OS for {machine}"
    if machine.startswith("raspberrypi"):
        # The SD card's partitions in the wks order; rootpart is what boot.cmd.in boots.
        assert (slots["PYVORIN_SLOT_A_DEVICE"], slots["PYVORIN_SLOT_B_DEVICE"]) == ("/dev/mmcblk0p2", "/dev/mmcblk0p3")
        assert slots["PYVORIN_DATA_DEVICE"] == "/dev/mmcblk0p4" and slots["PYVORIN_BOOT_DEVICE"] == "/dev/mmcblk0p1"
        assert board["bootenv"] == {"upgrade_available": "1", "bootcount": "0"}
        assert board["copy1"]["bootenv"] == {"rootpart": slots["PYVORIN_SLOT_B_PART"]} == {"rootpart": "3"}
        assert board["copy2"]["bootenv"] == {"rootpart": slots["PYVORIN_SLOT_A_PART"]} == {"rootpart": "2"}
        assert "scripts" not in spec
    else:
        assert (slots["PYVORIN_SLOT_A_DEVICE"], slots["PYVORIN_SLOT_B_DEVICE"]) == \
            ("/dev/disk/by-partlabel/APP", "/dev/disk/by-partlabel/APP_b")
        assert slots["PYVORIN_DATA_DEVICE"] == "/dev/disk/by-partlabel/UDA"
        assert "bootenv" not in board and "bootenv" not in board["copy1"]
        assert [(Path(s["file"]).name, s["type"]) for s in spec["scripts"]] == [("pyvorin-tegra-slot.sh", "postinstall")]


@dataclass(frozen=True)
class Task:
    """The exported bundle task of one machine, moved under a test's directory."""

    base: Path
    machine: str
    link: str
    fstype: str
    version: str
    previous: str
    #: Verified boot: the slot FIT's name in the deploy directory ("" without).
    fit: str
    #: The environment ``pyvorin`` runs in (the cli fixture's: scrubbed, this tree's tool).
    env: dict[str, str]

    def spec(self, name: str = "release.json") -> dict:  # type: ignore[type-arg]
        return json.loads((self.base / "work" / name).read_text())

    def put_spec(self, spec: dict, name: str = "release.json") -> None:  # type: ignore[type-arg]
        (self.base / "work" / name).write_text(json.dumps(spec))

    def run(self, script: str = "do_deploy.sh") -> subprocess.CompletedProcess[str]:
        """do_deploy as BitBake runs a shell task (set -e, in its dirs), with the tool on PATH."""
        tool = self.base / "bin/pyvorin"
        tool.parent.mkdir(exist_ok=True)
        tool.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pyvorin "$@"\n')
        tool.chmod(0o755)
        command = f'set -e; . "{self.base / script}"; export PATH="{tool.parent}:/usr/bin:/bin"; ' \
                  f'cd "{self.base / "work"}"; do_deploy'
        return subprocess.run(["bash", "-c", command], env=self.env, capture_output=True, text=True, timeout=600,
                              check=False)

    def deployed(self) -> list[str]:
        return sorted(os.listdir(self.base / "deploy"))


def _task(run: layer_gate.GateRun, directory: Path, cli, keys, new: bytes, old: bytes,  # type: ignore[no-untyped-def]
          exported: Path | None = None) -> Task:
    """The task's inputs as a build would leave them: the image (gzip'd, as the spec says) and
    its SBOM in the deploy directory, the previous release's image, the signing keys.
    ``exported``: another export of the task than the machine's own (verified boot's)."""
    exported = exported or run.bundle
    assert exported is not None and (exported / "paths.json").is_file(), f"{run.machine}: no bundle task exported"
    paths = json.loads((exported / "paths.json").read_text())
    shutil.copytree(exported, directory, symlinks=True)
    for path in directory.rglob("*"):
        if path.is_file() and path.suffix in (".sh", ".json") or path.name in ("delta-from", "version"):
            path.write_text(path.read_text().replace(paths["base"], str(directory)))
    task = Task(directory, run.machine, paths["image_link"], paths["fstype"], paths["version"], paths["previous"],
                paths.get("fit", ""), cli.env)
    assert task.fstype.endswith(".gz"), task.fstype
    (directory / "deploy-images" / f"{task.link}.{task.fstype}").write_bytes(gzip.compress(new, mtime=0))
    (directory / "previous" / f"{task.link}.{task.fstype}").write_bytes(gzip.compress(old, mtime=0))
    require("zstd")
    create_spdx.archive(directory / "deploy-images" / f"{task.link}.spdx.tar.zst",
                        create_spdx.documents(task.link, task.version, {"busybox": "1.36.1", "swupdate": "2026.05.1"}))
    shutil.copy(keys.key, directory / "keys/signer.key")
    shutil.copy(keys.cert, directory / "keys/signer.crt")
    shutil.copy(keys.ca, directory / "keys/ca.crt")
    return task


def _images(tmp: Path) -> tuple[bytes, bytes]:
    """Two releases of a root file system: the second changes, moves and appends a little."""
    old = write_image(tmp / "old.ext4", 2 << 20, seed=3).read_bytes()
    new = bytearray(old)
    new[100_000:100_064] = bytes(range(64))
    new[1 << 20:(1 << 20) + 8192] = old[:8192]
    return old, bytes(new) + bytes(range(256)) * 16


def _to_sandbox(spec: dict, machine: str, slots: dict[str, str], sandbox) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """The spec with the Pi's slot devices made the sandbox's files."""
    devices = {slots["PYVORIN_SLOT_A_DEVICE"]: str(sandbox.slot_a), slots["PYVORIN_SLOT_B_DEVICE"]: str(sandbox.slot_b)}
    for copy in ("copy1", "copy2"):
        install = spec["machines"][machine][copy]["install"]
        for name, target in install.items():
            if isinstance(target, dict):
                install[name] = {key: devices[value] if key in ("device", "source") else value
                                 for key, value in target.items()}
            else:
                install[name] = devices[target]
    return spec


@pytest.mark.swupdate
@pytest.mark.usefixtures("device_swupdate")
def test_the_class_task_makes_full_and_delta_bundles_the_pi_installs(gated: dict[str, layer_gate.GateRun], cli,
                                                                     keys, tmp_path: Path, delta_env) -> None:
    from pyvorin_devsim.swupdate_sandbox import SwupdateSandbox

    require_module("bsdiff4")
    machine = "raspberrypi4-64"
    run = gated[machine]
    assert run.slot_map is not None
    old, new = _images(tmp_path)
    task = _task(run, tmp_path / "task", cli, keys, new, old)
    assert task.fstype == "ext4.gz" and not task.fit
    spec, delta_spec = task.spec(), task.spec("release-delta.json")
    assert spec["version"] == delta_spec["version"] == task.version
    assert delta_spec["description"] == f"Pyvorin Edge OS for {machine} (delta from {task.previous})"
    assert delta_spec["sbom"] == spec["sbom"], "the delta bundle carries the new image's SBOM too"
    env = {"rootpart": "2", "bootcount": "0", "upgrade_available": "0"}
    full_device = SwupdateSandbox(tmp_path / "full", board=machine, initial_env=env)
    delta_device = SwupdateSandbox(tmp_path / "delta", board=machine, initial_env=env)
    delta_env(delta_device)
    with open(delta_device.slot_a, "r+b") as slot:  # the device runs the previous release
        slot.write(old)
    task.put_spec(_to_sandbox(spec, machine, run.slot_map, full_device))
    task.put_spec(_to_sandbox(delta_spec, machine, run.slot_map, delta_device), "release-delta.json")

    result = task.run()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    name = f"pyvorin-update-image-{machine}"
    full, delta = f"{name}-{task.version}.swu", f"{name}-{task.previous}-to-{task.version}.swu"
    assert task.deployed() == sorted([full, delta, f"{name}.swu"])
    assert '--codec "bsdiff+zstd"' in (task.base / "do_deploy.sh").read_text()
    assert os.readlink(task.base / "deploy" / f"{name}.swu") == full
    assert sorted(os.listdir(task.base / "work")) == ["delta-from", "release-delta.json", "release.json", "version"]

    for device, bundle in ((full_device, full), (delta_device, delta)):
        result = device.install(task.base / "deploy" / bundle, keys.ca, "stable,copy1")
        assert result.succeeded, f"{bundle}: {result.output}"
        assert device.slot_bytes(device.slot_b)[:len(new)] == new
        state = device.printenv()
        assert (state["rootpart"], state["upgrade_available"], state["bootcount"]) == ("3", "1", "0")
    assert full_device.untouched(full_device.slot_a) and delta_device.slot_bytes(delta_device.slot_a)[:len(old)] == old


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


@pytest.mark.swupdate
@pytest.mark.usefixtures("device_swupdate")
def test_the_class_task_makes_verity_bundles_the_pi_installs(gated: dict[str, layer_gate.GateRun], cli, keys,
                                                             tmp_path: Path, delta_env) -> None:
    """Verified boot (kas/opt/verity.yml): the class's task, as BitBake expands it with the feature,
    bundles the verity image and the slot's FIT, checks the image against the root hash in the FIT
    (its `pyvorin verify`), and the device's swupdate writes both into the slot: the image from the
    first byte, the FIT at the start of the slot's last 64 MiB. The delta bundle does the same from
    the running slot. A FIT of another build makes the task fail before anything ships."""
    from pyvorin_devsim.swupdate_sandbox import SwupdateSandbox
    from verity_parts import make_fit, make_initramfs, make_verity

    require_module("bsdiff4")
    machine = "raspberrypi4-64"
    run = gated[machine]
    assert run.slot_map is not None and run.verity_bundle is not None, "the gate exported no verity bundle task"
    old, new = make_verity(tmp_path, "old.ext4.verity", seed=1), make_verity(tmp_path, "new.ext4.verity", seed=2)
    new_bytes, old_bytes = new.image.read_bytes(), old.image.read_bytes()
    task = _task(run, tmp_path / "task", cli, keys, new_bytes, old_bytes, run.verity_bundle)
    assert task.fstype == "ext4.verity.gz"
    assert task.fit == f"fitImage-pyvorin-verity-initramfs-{machine}-{machine}"
    fit = make_fit(tmp_path, "slot.fit", make_initramfs(tmp_path, "new", new.env_text))
    fit_bytes = fit.read_bytes()
    env = {"rootpart": "2", "bootcount": "0", "upgrade_available": "0"}
    full_device = SwupdateSandbox(tmp_path / "full", board=machine, initial_env=env, slot_size=16 << 20)
    delta_device = SwupdateSandbox(tmp_path / "delta", board=machine, initial_env=env, slot_size=16 << 20)
    delta_env(delta_device)
    with open(delta_device.slot_a, "r+b") as slot:  # the device runs the previous release
        slot.write(old_bytes)
    spec, delta_spec = task.spec(), task.spec("release-delta.json")
    offset = spec["machines"][machine]["copy1"]["install"]["slot.fit"]["offset"]
    assert offset == (2048 - 64) << 20
    task.put_spec(_to_sandbox(spec, machine, run.slot_map, full_device))
    task.put_spec(_to_sandbox(delta_spec, machine, run.slot_map, delta_device), "release-delta.json")

    # A FIT whose initramfs carries another image's root hash: the task's verify stops it.
    other = make_fit(tmp_path, "other.fit", make_initramfs(tmp_path, "old", old.env_text))
    shutil.copy(other, task.base / "deploy-images" / task.fit)
    refused = task.run()
    assert refused.returncode != 0, refused.stdout[-2000:]
    assert "rootfs.ext4.verity.gz does not match the root hash in slot.fit" in refused.stdout + refused.stderr, \
        refused.stdout[-2000:] + refused.stderr[-2000:]

    shutil.rmtree(task.base / "deploy")
    (task.base / "deploy").mkdir()
    shutil.copy(fit, task.base / "deploy-images" / task.fit)
    result = task.run()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    name = f"pyvorin-update-image-{machine}"
    full, delta = f"{name}-{task.version}.swu", f"{name}-{task.previous}-to-{task.version}.swu"
    assert task.deployed() == sorted([full, delta, f"{name}.swu"])
    for device, bundle in ((full_device, full), (delta_device, delta)):
        result = device.install(task.base / "deploy" / bundle, keys.ca, "stable,copy1")
        assert result.succeeded, f"{bundle}: {result.output}"
        assert _read_at(device.slot_b, 0, len(new_bytes)) == new_bytes
        assert _read_at(device.slot_b, offset, len(fit_bytes) + 1) == fit_bytes
        state = device.printenv()
        assert (state["rootpart"], state["upgrade_available"], state["bootcount"]) == ("3", "1", "0")
    assert _read_at(delta_device.slot_a, 0, len(old_bytes)) == old_bytes


@pytest.mark.swupdate
@pytest.mark.usefixtures("device_swupdate")
def test_the_class_task_leaves_the_jetson_bundle_unsigned_for_the_sign_job(gated: dict[str, layer_gate.GateRun],
                                                                          cli, keys, tmp_path: Path) -> None:
    """The CI workflow's path: PYVORIN_BUNDLE_SIGNING = "unsigned", then `pyvorin sign` on the signing host."""
    from pyvorin_devsim.swupdate_sandbox import SwupdateSandbox

    require_module("bsdiff4")
    machine = "jetson-orin-nano-devkit"
    old, new = _images(tmp_path)
    task = _task(gated[machine], tmp_path / "task", cli, keys, new, old)
    (task.base / "keys/signer.key").unlink()  # the build host never has it
    result = task.run("do_deploy-unsigned.sh")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    name = f"pyvorin-update-image-{machine}"
    unsigned = f"{name}-{task.version}.unsigned.swu"
    assert task.deployed() == sorted([unsigned, f"{name}-{task.previous}-to-{task.version}.unsigned.swu", f"{name}.swu"])
    signed = tmp_path / f"{name}-{task.version}.swu"
    cli("sign", task.base / "deploy" / unsigned, "-o", signed, *keys.signing_args(), check=True)
    members = cli("inspect", signed, check=True).stdout
    assert "pyvorin-tegra-slot.sh" in members and "sbom.spdx.json" in members
    sandbox = SwupdateSandbox(tmp_path / "sbx", board=machine)
    result = sandbox.install(signed, keys.ca, "stable,copy1", check_only=True)
    assert result.succeeded, result.output
    # ... and a Pi's device refuses it: the board is not in its hardware list.
    refused = sandbox.install(signed, keys.ca, "stable,copy1", check_only=True, hwrevision="raspberrypi4-64:1.0")
    assert not refused.succeeded and "HW compatibility not found" in refused.output
