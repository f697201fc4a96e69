"""The CLI teaches through --help and fails with one line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

import pytest

COMMANDS = [["keys"], ["keys", "init"], ["keys", "show"], ["swdesc"], ["bundle"], ["sign"], ["verify"], ["inspect"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_teaches(cli, command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: pyvorin " + " ".join(command))
    assert len(result.stdout.splitlines()) > 6


def test_top_level_help_shows_a_whole_release(cli) -> None:
    out = cli("--help", check=True).stdout
    for step in ("keys init", "bundle", "verify", "swupdate -i"):
        assert step in out


@pytest.mark.parametrize("args,message", [
    ([], "required: COMMAND"),
    (["frobnicate"], "invalid choice"),
    (["bundle", "x.yaml"], "-o/--output"),
    (["verify"], "BUNDLE.swu"),
])
def test_usage_errors(cli, args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.returncode == 2 and message in result.stderr


@pytest.mark.parametrize("content,message", [
    (b"", "truncated bundle"),
    (b"not a bundle at all" * 20, "bad magic"),
])
def test_verify_and_inspect_reject_non_bundles(cli, tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.swu"
    path.write_bytes(content)
    for command in ("verify", "inspect"):
        result = cli(command, path, "--allow-unsigned") if command == "verify" else cli(command, path)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_missing_bundle(cli, tmp_path: Path) -> None:
    result = cli("verify", tmp_path / "none.swu", "--cert", tmp_path / "ca.crt")
    assert result.returncode == 2 and "bundle not found" in result.stderr


def test_hostile_member_name_in_bundle(cli, tmp_path: Path) -> None:
    from helpers import write_members

    swu = write_members(tmp_path / "h.swu", [("sw-description", b"software = {};"), ("../../etc/passwd", b"x")])
    result = cli("inspect", swu)
    assert result.returncode == 2 and "hostile member name '../../etc/passwd'" in result.stderr


def test_a_closed_pipe_is_not_a_traceback(cli, keys, make_spec, tmp_path) -> None:
    """`pyvorin inspect X.swu --json | head` (issue 12, A3)."""
    import subprocess
    import sys

    spec = make_spec()
    out = tmp_path / "r.swu"
    cli("bundle", spec, "-o", out, *keys.signing_args(), check=True)
    # `true` exits before pyvorin has started: every write meets a closed pipe.
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m pyvorin inspect {out} --json | true"],
                          env=cli.env, capture_output=True, text=True, check=False)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


def test_os_errors_are_one_line_exit_2(cli, tmp_path) -> None:
    import subprocess
    import sys

    for argv in (["delta-apply", tmp_path / "missing.pyvd", "--source", tmp_path / "a", "--target", tmp_path / "b"],):
        result = cli(*argv)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    device = subprocess.run([sys.executable, "-m", "pyvorin.delta", str(tmp_path / "missing.pyvd"), "--source",
                             str(tmp_path / "a"), "--target", str(tmp_path / "b")], env=cli.env, capture_output=True,
                            text=True, check=False)
    assert device.returncode == 2 and device.stderr.startswith("pyvorin-delta-apply: error:"), device.stderr
    assert device.stderr.count("\n") == 1 and "missing.pyvd" in device.stderr
