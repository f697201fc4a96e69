"""The reproducers of the hostile-input campaign, each as it was found: the real
command line, one ``pyvorin`` line on stderr, exit 2, and nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import delta_header, delta_with_header, read_members, write_image, write_members


def one_error_line(result, *fragments: str) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyvorin"), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return str(lines[0])


@pytest.mark.parametrize("command", ["swdesc", "bundle"])
def test_a_spec_nested_300_deep(cli, tmp_path: Path, command: str) -> None:
    spec = tmp_path / "deep.yaml"
    spec.write_text("version: " + "[" * 300 + "]" * 300 + "\n")
    extra = ["-o", str(tmp_path / "out.swu"), "--unsigned"] if command == "bundle" else []
    one_error_line(cli(command, spec, *extra), "nested deeper than 32 levels")
    assert not (tmp_path / "out.swu").exists()


def test_inspect_a_sw_description_nesting_1000_groups(cli, tmp_path: Path) -> None:
    text = "software = " + "{ a = " * 1000 + "1;" + " };" * 1000 + "\n"
    bundle = write_members(tmp_path / "deep.swu", [("sw-description", text.encode())])
    one_error_line(cli("inspect", bundle), "nested deeper than 64 levels")


def _delta(cli, tmp_path: Path) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    old, new = tmp_path / "old.img", tmp_path / "new.img"
    write_image(old, 64 * 1024, seed=1)
    write_image(new, 64 * 1024, seed=2)
    cli("delta", old, new, "-o", tmp_path / "d.pyvd", "--no-report", check=True)
    return tmp_path / "d.pyvd", old


@pytest.mark.parametrize("value", [None, "65536", [1]])
def test_a_delta_header_with_sizes_of_the_wrong_type(cli, tmp_path: Path, value: object) -> None:
    delta, old = _delta(cli, tmp_path)
    blob = delta.read_bytes()
    header = delta_header(blob)
    header["new_size"] = value
    delta.write_bytes(delta_with_header(blob, header))  # its self-hash made valid again
    target = tmp_path / "target.img"
    target.write_bytes(bytes(64 * 1024))
    one_error_line(cli("delta-apply", delta, "--source", old, "--target", target), "new_size")


def test_delta_apply_without_its_files(cli, tmp_path: Path) -> None:
    delta, old = _delta(cli, tmp_path)
    target = tmp_path / "target.img"
    target.write_bytes(bytes(64 * 1024))
    one_error_line(cli("delta-apply", delta, "--source", tmp_path / "missing.img", "--target", target),
                   "missing.img")
    one_error_line(cli("delta-apply", delta, "--source", old, "--target", tmp_path), "target slot")
    one_error_line(cli("delta-apply", delta, "--source", old, "--target", tmp_path / "new-target.img"),
                   "does not exist")
    assert not (tmp_path / "new-target.img").exists(), "a missing target was created"
    one_error_line(cli("delta-apply", delta, "--source", old, "--target", target, "--workdir", tmp_path / "nowhere"),
                   "work directory")
    assert target.read_bytes() == bytes(64 * 1024), "the target was touched before the work directory was checked"


@pytest.mark.parametrize("days", ["-1", "0", "1000000000"])
def test_keys_init_with_days_out_of_range(cli, tmp_path: Path, days: str) -> None:
    one_error_line(cli("keys", "init", tmp_path / "keys", "--days", days), "days", "1..36500")
    assert not (tmp_path / "keys").exists()


@pytest.mark.parametrize(("content", "fragment"), [(b"version: 1\n\x00: x\n", "byte 11"),
                                                    (b"version: 1\ndescription: \xff\n", "byte 24")])
def test_yaml_that_is_not_text_is_one_line(cli, tmp_path: Path, content: bytes, fragment: str) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_bytes(content)
    one_error_line(cli("swdesc", spec), fragment, "not YAML text")


def test_a_flipped_byte_in_the_embedded_signer_certificate(cli, keys, make_spec, tmp_path: Path) -> None:
    """Inside the subject's CN, with the cpio checksum fixed so the reader gets that far."""
    swu = tmp_path / "r.swu"
    cli("bundle", make_spec(), "-o", swu, *keys.signing_args(), check=True)
    members = read_members(swu)
    cn = b"Pyvorin SWUpdate signer"
    out = [(name, data.replace(cn, cn[:-1] + b"\xff", 1) if name == "sw-description.sig" else data)
           for name, data in members]
    assert out != members
    bad = write_members(tmp_path / "bad.swu", out)
    result = cli("verify", bad, "--cert", keys.ca)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
