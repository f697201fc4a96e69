"""The SBOM in every bundle: create-spdx's archive in, one SPDX document out
(checked by spdx-tools and the NTIA minimum-elements checker, both from
PyPI), signed with sw-description, read back and compared; hostile SBOMs
end with one error line; the device's swupdate installs such a bundle."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvorin import __version__, sbom
from pyvorin_devsim.swupdate_sandbox import SUCCESS_MARKER, SwupdateSandbox

import create_spdx as spdx
from helpers import one_error_line, require, which

IMAGE = "pyvorin-image-raspberrypi4-64-20261201"
OLD = {"busybox": "1.36.1", "openssl": "3.2.1", "dropbear": "2022.83"}
NEW = {"busybox": "1.36.1", "openssl": "3.2.2", "openssh": "9.6p1"}


def _tool(name: str) -> str:
    """A checker scripts/test.sh installs with pip (into the tests' venv)."""
    require(name)
    return str(which(name))


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    require("zstd")
    return spdx.archive(tmp_path / f"{IMAGE}.spdx.tar.zst", spdx.documents(IMAGE, "1.0", OLD))


def _spec(tmp_path: Path, sbom_file: str, version: str = "1.0", slots: tuple[str, str] = ("/dev/mmcblk0p2",
                                                                                           "/dev/mmcblk0p3")) -> Path:
    (tmp_path / "rootfs.img").write_bytes(os.urandom(16 * 1024))
    spec = tmp_path / f"release-{version}.yml"
    spec.write_text(f'version: "{version}"\nartifacts:\n  rootfs.img: {{file: rootfs.img, type: raw}}\n'
                    f'machines:\n  raspberrypi4-64:\n    hardware-compatibility: ["1.0"]\n'
                    f'    bootenv: {{upgrade_available: "1"}}\n'
                    f'    copy1: {{install: {{rootfs.img: {slots[1]}}}, bootenv: {{rootpart: "3"}}}}\n'
                    f'    copy2: {{install: {{rootfs.img: {slots[0]}}}, bootenv: {{rootpart: "2"}}}}\n'
                    f'sbom: {sbom_file}\n')
    return spec


def test_the_fixture_is_spdx_as_create_spdx_writes_it(tmp_path: Path) -> None:
    """The test's recipe, package and image documents validate with spdx-tools (the runtime ones
    describe nothing: they amend a package's document); the image document alone fails the NTIA
    minimum elements (nothing DESCRIBES the image; its packages are in other documents)."""
    docs = spdx.documents(IMAGE, "1.0", OLD)
    for name, data in docs.items():
        (tmp_path / name).write_bytes(data)
        if name.startswith("runtime-"):
            continue
        checked = subprocess.run([_tool("pyspdxtools"), "-i", str(tmp_path / name)], capture_output=True, text=True)
        assert checked.returncode == 0, f"{name}: {checked.stdout}{checked.stderr}"
    ntia = subprocess.run([_tool("sbomcheck"), str(tmp_path / f"{IMAGE}.spdx.json")], capture_output=True, text=True)
    assert ntia.returncode != 0 and "Conformant: False" in ntia.stdout, ntia.stdout


def test_the_bundle_carries_one_conformant_spdx_document(cli, keys, archive: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "release.swu"
    cli("bundle", _spec(tmp_path, archive.name), "-o", bundle, *keys.signing_args(), check=True)
    document = tmp_path / "release.spdx.json"
    shown = cli("sbom", "show", bundle, "--json", check=True)
    document.write_text(shown.stdout)
    checked = subprocess.run([_tool("pyspdxtools"), "-i", str(document)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    ntia = subprocess.run([_tool("sbomcheck"), str(document)], capture_output=True, text=True)
    assert ntia.returncode == 0 and "Conformant: True" in ntia.stdout, ntia.stdout
    spdx_doc = json.loads(shown.stdout)
    assert spdx_doc["creationInfo"]["creators"].count(f"Tool: pyvorin-{__version__}") == 1
    namespace = spdx_doc["documentNamespace"]
    assert namespace.startswith(f"{spdx.NAMESPACE}/{IMAGE}-") and namespace.count("/release") == 1, namespace
    names = sorted((p["name"], p["versionInfo"]) for p in spdx_doc["packages"][1:])
    assert names == sorted(OLD.items())
    assert all(p["supplier"] == spdx.SUPPLIER and p["filesAnalyzed"] is False for p in spdx_doc["packages"][1:])
    # Signed with sw-description, never installed: named there with its sha256, in no image.
    verified = cli("verify", bundle, "--cert", keys.ca, check=True)
    assert sbom.MEMBER in verified.stdout, verified.stdout
    swdesc = cli("inspect", bundle, "--json", check=True)
    inspected = json.loads(swdesc.stdout)
    assert inspected["sw-description"]["software"]["sbom"]["filename"] == sbom.MEMBER
    assert inspected["sbom"] == {"image": "pyvorin-image", "version": "1.0", "packages": 3,
                                 "spdx_version": "SPDX-2.2", "created": spdx.CREATED}
    text = cli("sbom", "show", bundle, check=True).stdout
    assert text.splitlines()[0].startswith("pyvorin-image 1.0: 3 packages") and "  openssl 3.2.1" in text


def test_sbom_diff_lists_what_changed_between_two_releases(cli, keys, tmp_path: Path) -> None:
    require("zstd")
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    spdx.archive(old_dir / "image.spdx.tar.zst", spdx.documents(IMAGE, "1.0", OLD))
    spdx.archive(new_dir / "image.spdx.tar.zst", spdx.documents(IMAGE, "1.1", NEW))
    old, new = tmp_path / "old.swu", tmp_path / "new.swu"
    cli("bundle", _spec(old_dir, "image.spdx.tar.zst", "1.0"), "-o", old, *keys.signing_args(), check=True)
    cli("bundle", _spec(new_dir, "image.spdx.tar.zst", "1.1"), "-o", new, *keys.signing_args(), check=True)
    text = cli("sbom", "diff", old, new, check=True).stdout.splitlines()
    assert text == ["pyvorin-image 1.0 -> pyvorin-image 1.1: 1 added, 1 removed, 1 changed",
                    "+ openssh 9.6p1", "- dropbear 2022.83", "~ openssl 3.2.1 -> 3.2.2"]
    answer = json.loads(cli("sbom", "diff", old, new_dir / "image.spdx.tar.zst", "--json", check=True).stdout)
    assert answer["changed"] == [{"name": "openssl", "old": "3.2.1", "new": "3.2.2"}]


def test_an_uncompressed_archive_and_a_single_document_read_alike(cli, archive: Path, tmp_path: Path) -> None:
    plain = spdx.archive(tmp_path / "image.spdx.tar", spdx.documents(IMAGE, "1.0", OLD), compress=False)
    shown = {source.name: json.loads(cli("sbom", "show", source, "--json", check=True).stdout)
             for source in (archive, plain)}
    assert shown[archive.name] == shown[plain.name]
    # The release document read back as one .spdx.json: the same packages.
    single = tmp_path / "release.spdx.json"
    single.write_text(json.dumps(shown[plain.name]))
    again = json.loads(cli("sbom", "show", single, "--json", check=True).stdout)
    assert again == shown[plain.name], "a release document is read back as it is"


def test_a_tampered_sbom_is_refused_by_verify_and_by_sbom(cli, keys, archive: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "release.swu"
    cli("bundle", _spec(tmp_path, archive.name), "-o", bundle, *keys.signing_args(), check=True)
    data = bytearray(bundle.read_bytes())
    at = data.index(b'"openssl"') + 2
    data[at] = ord("O")
    bundle.write_bytes(bytes(data))
    assert "member 'sbom.spdx.json' fails its cpio checksum" in one_error_line(cli("verify", bundle, "--cert", keys.ca),
                                                                               code=1)
    assert "does not match its sha256" in one_error_line(cli("sbom", "show", bundle), code=1)


HOSTILE = {
    "not-spdx.spdx.json": (lambda: b'{"hello": 1}', "not an SPDX 2 document"),
    "deep.spdx.json": (lambda: b"[" * 200_000 + b"]" * 200_000, "neither an SPDX JSON document"),
    "deep-object.spdx.json": (lambda: b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "not JSON"),
    "garbage.spdx.tar.zst": (lambda: b"\x28\xb5\x2f\xfd" + os.urandom(4096), "not a zstd stream"),
    "traversal.spdx.tar.zst": (lambda: spdx.zstd(spdx.tar({"../../etc/evil.spdx.json": b'{"x": 1}'})),
                               "not an SPDX 2 document"),
    "two-roots.spdx.tar.zst": (lambda: spdx.zstd(spdx.tar({n: d for n, d in spdx.documents(IMAGE, "1", {"a": "1"}).items()}
                                                  | {"other.spdx.json": spdx.documents("other", "1", {})[
                                                      "other.spdx.json"]})), "found 2"),
    "missing-package-doc.spdx.tar.zst": (lambda: spdx.zstd(spdx.tar({n: d for n, d in spdx.documents(
        IMAGE, "1", {"a": "1"}).items() if n != "a.spdx.json"})), "expected one image document"),
    "bomb.spdx.tar.zst": (lambda: subprocess.run(["sh", "-c", "head -c 600M /dev/zero | zstd -q -c -19 --long=27"],
                                                 capture_output=True, check=True).stdout, "larger than 512 MiB"),
    "empty.spdx.json": (lambda: b"", "neither an SPDX JSON document"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_sboms_end_with_one_line_and_write_nothing(cli, keys, tmp_path: Path, name: str) -> None:
    require("zstd")
    make, expected = HOSTILE[name]
    (tmp_path / name).write_bytes(make())
    bundle = tmp_path / "release.swu"
    result = cli("bundle", _spec(tmp_path, name), "-o", bundle, *keys.signing_args())
    line = one_error_line(result)
    assert expected in line and name in line, line
    assert not bundle.exists() and not list(tmp_path.glob("*.tmp*"))
    assert expected in one_error_line(cli("sbom", "show", tmp_path / name))
    assert not (tmp_path.parent / "etc").exists()


def test_spec_errors_name_the_sbom(cli, keys, tmp_path: Path) -> None:
    line = one_error_line(cli("bundle", _spec(tmp_path, "image.cdx.json"), "-o", tmp_path / "r.swu",
                              *keys.signing_args()))
    assert "must be an SPDX document (.spdx.json) or create-spdx's archive" in line, line
    line = one_error_line(cli("bundle", _spec(tmp_path, "missing.spdx.tar.zst"), "-o", tmp_path / "r.swu",
                              *keys.signing_args()))
    assert "missing.spdx.tar.zst" in line and "not found" in line, line
    line = one_error_line(cli("sbom", "show", tmp_path / "rootfs.img"))
    assert "neither an SPDX JSON document" in line, line


@pytest.mark.swupdate
@pytest.mark.usefixtures("device_swupdate")
def test_the_device_installs_a_bundle_carrying_an_sbom(cli, keys, archive: Path, tmp_path: Path) -> None:
    """SWUpdate skips the member no image names: the install is as without it."""
    sandbox = SwupdateSandbox(tmp_path / "sbx", initial_env={"rootpart": "2", "bootcount": "0",
                                                             "upgrade_available": "0"})
    bundle = tmp_path / "release.swu"
    cli("bundle", _spec(tmp_path, archive.name, slots=(str(sandbox.slot_a), str(sandbox.slot_b))), "-o", bundle,
        *keys.signing_args(), check=True)
    result = sandbox.install(bundle, keys.ca, "stable,copy1")
    assert result.returncode == 0 and SUCCESS_MARKER in result.output, result.output
    image = (tmp_path / "rootfs.img").read_bytes()
    assert sandbox.slot_bytes(sandbox.slot_b)[: len(image)] == image
    assert sandbox.printenv()["rootpart"] == "3"
    assert sbom.MEMBER in result.output, "swupdate's log names the member it skipped"


@pytest.fixture(scope="module")
def genuine() -> dict[str, bytes]:
    """A create-spdx archive and the release document made of it: what mutations start from."""
    require("zstd")
    tar = spdx.tar(spdx.documents(IMAGE, "1.0", OLD))
    return {"tar": tar, "document": sbom.render(sbom.read_chunks([tar]))}


@settings(max_examples=int(150 * float(os.environ.get("PYVORIN_FUZZ_EXAMPLES", "1"))), deadline=None, database=None, derandomize=bool(os.environ.get("CI")),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_sboms_are_read_or_refused_never_crash(genuine: dict[str, bytes], data: st.DataObject) -> None:
    """Bytes flipped, cut or inserted anywhere in a genuine archive or release document: the
    reader returns an SBOM or raises SbomError, nothing else, and never more than its bounds."""
    blob = bytearray(genuine[data.draw(st.sampled_from(sorted(genuine)), label="start")])
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(blob) - 1), label="at")
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "truncate"]), label="kind")
        if kind == "flip":
            blob[at] ^= data.draw(st.integers(1, 255), label="bits")
        elif kind == "cut":
            del blob[at:at + data.draw(st.integers(1, 64), label="length")]
        elif kind == "insert":
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=64), label="bytes")
        else:
            del blob[at:]
        if not blob:
            blob = bytearray(b"{")
    try:
        found = sbom.read_chunks([bytes(blob[i:i + 4096]) for i in range(0, len(blob), 4096)])
    except sbom.SbomError:
        return
    assert isinstance(found.spdx, dict) and all(isinstance(p.name, str) for p in found.packages)
    assert sbom.render(found)  # what a bundle would carry serialises


def test_inspect_reports_an_unreadable_sbom_without_failing(cli, keys, archive: Path, tmp_path: Path) -> None:
    """inspect verifies nothing: a bundle whose SBOM does not match still lists its members."""
    bundle = tmp_path / "release.swu"
    cli("bundle", _spec(tmp_path, archive.name), "-o", bundle, *keys.signing_args(), check=True)
    data = bytearray(bundle.read_bytes())
    data[data.index(b'"openssl"') + 2] = ord("O")
    bundle.write_bytes(bytes(data))
    shown = cli("inspect", bundle, "--json", check=True)
    assert "does not match its sha256" in json.loads(shown.stdout)["sbom"]["error"]
    assert "sbom: unreadable:" in cli("inspect", bundle, check=True).stdout
