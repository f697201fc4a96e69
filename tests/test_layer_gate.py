"""The BitBake gate in CI: a real parse and dry run of both images for each gated
machine from the pinned layers, and what pyvorin-image really installs.

The first run parses from cold (about 7 minutes per machine on two cores);
later runs reuse BitBake's parse cache, and a passing run is kept for the same
inputs (tests/layer_gate.py). ``pytest -m "not gate"`` leaves it out locally."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qemu import layer

import layer_gate
from helpers import unavailable

pytestmark = pytest.mark.gate


@pytest.fixture(scope="module")
def prerequisites() -> None:
    lacking = layer_gate.missing_prerequisites()
    if lacking:
        unavailable(f"the layer gate needs {', '.join(lacking)} (scripts/test.sh sets them up as root)")


def gate(machine: str) -> layer_gate.GateRun:
    """One gate run per machine and session (layer_gate.result), shared by the tests below."""
    try:
        return layer_gate.result(machine)
    except layer_gate.GateError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_snapshot_holds_the_pinned_commits(prerequisites: None) -> None:
    """A pin moved without ../shared/upstream: the gate would test old commits."""
    assert layer_gate.stale_pins() == []


@pytest.mark.parametrize("machine", layer_gate.MACHINES)
def test_gate_parses_checks_and_dry_runs_both_images(prerequisites: None, machine: str) -> None:
    run = gate(machine)
    for check in ("bitbake -p: parsed", "DISTRO_FEATURES ok", "IMAGE_FSTYPES=",
                  "SRC_URI carries the pyvorin hardening fragments",
                  "bitbake -n pyvorin-image pyvorin-update-image: ok, pyvorin-native makes the bundle",
                  "bitbake -e pyvorin-update-image: PYVORIN_BUNDLE_SPEC", "bitbake -g pyvorin-image:",
                  f"create-spdx deploys pyvorin-image-{machine}.rootfs.spdx.tar.zst"):
        assert any(check in line for line in run.lines), f"{machine}: no '{check}' in the gate's summary:\n" + \
            "\n".join(run.lines)
    if machine.startswith("raspberrypi"):
        assert any("kernel-image in the root slot" in line for line in run.lines)


@pytest.mark.parametrize("machine", layer_gate.MACHINES)
def test_verified_boot_parses_on_the_pi_and_is_refused_elsewhere(prerequisites: None, machine: str) -> None:
    """kas/opt/verity.yml: the Pi parses and dry-runs with U-Boot's verity fragment and the
    initramfs module; the Jetson, whose chain is a plan only, stops with one clear line."""
    lines = gate(machine).verity_lines
    if machine.startswith("raspberrypi"):
        for check in ("bitbake -p: parsed with pyvorin-verity", "SRC_URI carries pyvorin-verity.cfg after pyvorin-ab.cfg",
                      "IMAGE_FSTYPES has ext4.verity (4096-byte blocks), INITRAMFS_IMAGE=pyvorin-verity-initramfs",
                      "bitbake -n initramfs-module-pyvorin-verity: ok",
                      "bitbake -n pyvorin-verity-initramfs: ok, after pyvorin-image's ext4.verity",
                      "bitbake -e virtual/kernel: fitImage signed by pyvorin-fit (sha256,rsa4096, configurations), "
                      "load address 0x00200000",
                      "control device trees, no boot.scr; slot A from pyvorin-slot; no kernel in the root",
                      "bitbake -n pyvorin-image pyvorin-update-image: ok with pyvorin-verity (FIT, control device "
                      "trees, slot image, wic, bundle)"):
            assert any(check in line for line in lines), f"{machine}: no '{check}' in:\n" + "\n".join(lines)
    else:
        assert any("refused: pyvorin: DISTRO_FEATURES pyvorin-verity is built for the Raspberry Pi only" in line
                   for line in lines), lines


PI_MACHINES = [machine for machine in layer_gate.MACHINES if machine.startswith("raspberrypi")]


@pytest.mark.parametrize("machine", PI_MACHINES)
def test_the_pi_boot_logic_is_the_one_qemu_boots_with_the_pi_words(prerequisites: None, machine: str) -> None:
    """The control device tree's boot command as BitBake renders it for the Pi
    (pyvorin-control-dtb): every word filled, the Pi's devices and FIT window, the board's own
    FIT configuration, and, like the QEMU board's, nothing but the A/B state read from the
    unsigned environment."""
    prefix = "gate: verity: bootcmd|"
    script = "\n".join(line[len(prefix):].removeprefix(" ") for line in gate(machine).verity_lines
                       if line.startswith(prefix))
    assert script.strip(), "the gate printed no boot command"
    assert "@@" not in script
    assert layer.environment_reads(script) == {"rootpart", "bootcount", "upgrade_available"}
    assert "read mmc 0:${pyvorin_slot} 0x10000000 ${pyvorin_fit_block} 0x20000" in script
    assert re.search(r"^\s*bootm 0x10000000#conf-bcm27\d\d-rpi-[\w-]+\.dtb$", script, re.M), script
    assert 'setenv bootargs "console=serial0,115200 console=tty1 root=/dev/mmcblk0p${pyvorin_slot} rootwait ro ' \
        'panic=5"' in script
    # The logic QEMU boots, line for line: only the lines with a board word differ.
    template = [line for line in layer.VERITY_BOOT.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    pi, qemu = script.strip("\n").splitlines(), layer.verity_boot_command().strip("\n").splitlines()
    assert len(pi) == len(qemu) == len(template)
    for pi_line, qemu_line, line in zip(pi, qemu, template, strict=True):
        assert pi_line == qemu_line or "@@" in line, (pi_line, qemu_line)


@pytest.mark.parametrize("machine", PI_MACHINES)
def test_the_verity_bundle_writes_image_and_fit_into_the_slot(prerequisites: None, machine: str) -> None:
    """pyvorin-update-image with verified boot: the compressed verity image from each slot's first
    byte and the FIT at the start of the slot's last 64 MiB (PYVORIN_ROOTFS_SLOT_SIZE 2048)."""
    prefix = "gate: verity: bundle spec|"
    specs = [line[len(prefix):] for line in gate(machine).verity_lines if line.startswith(prefix)]
    assert len(specs) == 1, specs
    spec = json.loads(specs[0])
    artifacts = spec["artifacts"]
    assert artifacts["rootfs.ext4.verity.gz"]["compressed"] == "zlib"
    assert artifacts["slot.fit"]["file"].endswith(f"/fitImage-pyvorin-verity-initramfs-{machine}-{machine}")
    board = spec["machines"][machine]
    for copy, slot in (("copy1", "/dev/mmcblk0p3"), ("copy2", "/dev/mmcblk0p2")):
        install = board[copy]["install"]
        assert install["rootfs.ext4.verity.gz"] == slot
        assert install["slot.fit"] == {"device": slot, "offset": (2048 - 64) * 1024 * 1024}


@pytest.mark.parametrize("machine", layer_gate.MACHINES)
def test_the_kas_record_names_every_commit_the_build_used(prerequisites: None, machine: str) -> None:
    """``kas dump --resolve-refs --resolve-local``, as the release job keeps it
    (examples/ci/release.yml), run on the gate's own build: each pinned repository
    at its pin, and this repository at the commit kas built from."""
    run = gate(machine)
    assert run.kas_record is not None
    record = yaml.safe_load(run.kas_record.read_text())
    assert record["machine"] == machine and record["distro"] == "pyvorin"
    repos = record["repos"]
    for repo in layer_gate.gate.machines()[machine].repos:
        assert repos[repo.name]["commit"] == repo.commit, repo.name
    assert re.fullmatch(r"[0-9a-f]{40}", str(repos["meta-pyvorin"].get("commit"))), repos["meta-pyvorin"]


@pytest.mark.parametrize("machine", layer_gate.MACHINES)
def test_image_installs_what_the_machine_and_the_layer_promise(prerequisites: None, machine: str) -> None:
    run = gate(machine)
    assert layer_gate.missing(run, machine) == []


@pytest.mark.parametrize("machine", layer_gate.MACHINES)
def test_image_installs_nothing_a_production_image_must_not(prerequisites: None, machine: str) -> None:
    run = gate(machine)
    development = {"packagegroup-core-tools-debug", "gdbserver", "gdb", "strace", "valgrind", "perf",
                   # the whole Python standard library, with its GUI, REPL and installer tools
                   "python3-modules", "python3-tkinter", "python3-idle", "python3-ensurepip", "python3-2to3",
                   "python3-pydoc", "python3-venv", "python3-tests"}
    forbidden = [p for p in run.packages if p in development
                 # kernel modules may end so (nv-kernel-module-cdi-dev is a camera driver)
                 or p.endswith(("-dbg", "-dev", "-staticdev", "-ptest")) and "kernel-module-" not in p]
    assert forbidden == []


def test_the_flashed_slot_a_is_the_release_ext4_byte_for_byte(prerequisites: None) -> None:
    """The Pi's wic, as image_types_wic expands its wks: slot A is a rawcopy of the very ext4 the
    bundles carry (made first, kept), without a label wic would write into the copy; so the first
    delta update after flashing finds its source image in slot A."""
    run = gate("raspberrypi4-64")
    assert run.install is not None
    image = json.loads((run.install / "image/image.json").read_text())
    parts = [line.split() for line in image["wks"].splitlines() if line.startswith("part ")]
    assert len(parts) == 4, image["wks"]
    slot_a = parts[1]
    assert "--source" in slot_a and slot_a[slot_a.index("--source") + 1] == "rawcopy", slot_a
    assert f'--sourceparams="file={image["ext4_link"]}"' in slot_a, (slot_a, image["ext4_link"])
    assert image["ext4_link"].endswith(".rootfs.ext4") and "${" not in image["wks"]
    assert not any(word.startswith("--label") for word in slot_a), "wic would relabel the copy"
    assert "ext4" in image["wic_typedep"], image["wic_typedep"]
    # Slot A and slot B have the same fixed size: an update of either slot fits the other.
    sizes = [p[p.index("--fixed-size") + 1] for p in parts[1:3]]
    assert sizes[0] == sizes[1], sizes


def test_expected_lists_name_one_package_per_line() -> None:
    for machine in layer_gate.MACHINES:
        items = layer_gate.expected(machine)
        assert items, machine
        names = [item.package for item in items]
        assert len(names) == len(set(names)), f"{machine}: a package is listed twice"
        assert all(item.why for item in items), f"{machine}: every listed package says why it is there"


def test_a_stale_clone_is_named_not_tested(prerequisites: None, tmp_path: Path) -> None:
    """A clone whose scarthgap lacks the pinned commit stops the gate before kas runs."""
    layers = tmp_path / "layers"
    for name in layer_gate.LAYERS:
        repo = layers / name
        repo.mkdir(parents=True)
        git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@localhost"]
        subprocess.run([*git, "init", "-q", "-b", "scarthgap"], check=True)
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "not the pin"], check=True)
    env = {**os.environ, "PYVORIN_LAYERS": str(layers), "PYVORIN_GATE_BUILD": str(tmp_path / "build"),
           "KAS": layer_gate.KAS}
    result = subprocess.run([sys.executable, str(layer_gate.GATE), "raspberrypi4-64"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "stale" in lines[0], result.stderr
    # Every repository the machine builds with is named, with its pin; the other BSP is not.
    for name, commit in layer_gate.pins().items():
        assert (f"{name} ({commit} on scarthgap)" in lines[0]) == (name != "meta-tegra"), (name, lines[0])
    assert not (tmp_path / "build" / "src").exists(), "nothing ran past the stale clone"
    shutil.rmtree(tmp_path, ignore_errors=True)
