"""Bad release specs: one clear error naming the file, the line and the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pyvorin.errors import SpecError
from pyvorin.libconfig import parse
from pyvorin.spec import ImageType, load_spec
from pyvorin.swdesc import PayloadInfo, render_sw_description

GOOD = """\
version: 1.2.3
artifacts:
  rootfs.img:
    file: rootfs.img
    type: raw
  app.tar.gz:
    file: app.tar.gz
    type: archive
machines:
  raspberrypi4-64:
    hardware-compatibility: ["1.0"]
    copy1:
      install:
        rootfs.img: /dev/mmcblk0p3
        app.tar.gz: {device: /dev/mmcblk0p4, filesystem: ext4, path: /apps}
      bootenv: {rootpart: 3}
    copy2:
      install:
        rootfs.img: /dev/mmcblk0p2
        app.tar.gz: {device: /dev/mmcblk0p4, filesystem: ext4, path: /apps}
      bootenv: {rootpart: 2}
"""


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "release.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_spec_loads(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, GOOD))
    assert spec.version == "1.2.3" and spec.software_set == "stable"
    assert [a.type for a in spec.artifacts] == [ImageType.RAW, ImageType.ARCHIVE]
    copy1 = spec.machines[0].copies[0]
    assert copy1.mode == "copy1" and copy1.targets[0].device == "/dev/mmcblk0p3"
    assert copy1.bootenv == (("rootpart", "3"),)
    assert spec.artifacts[0].source == tmp_path / "rootfs.img"


@pytest.mark.parametrize("old,new,message", [
    ("    type: raw\n", "    type: raw\n    typo: 1\n", r"release.yaml:6: unknown key 'typo' in artifact 'rootfs.img'"),
    ("version: 1.2.3\n", "version: 1.2.3\nflavour: x\n", r"release.yaml:2: unknown key 'flavour'"),
    ("    type: raw\n", "    type: squashfs\n", r"release.yaml:5: type 'squashfs' is not one of: raw, rawfile, archive"),
    ("  rootfs.img:\n    file", "  ../rootfs.img:\n    file", r"release.yaml:3: artifact name '../rootfs.img' must be a plain"),
    ("  rootfs.img:\n    file", "  sub/rootfs.img:\n    file", "must be a plain file name"),
    ("        rootfs.img: /dev/mmcblk0p2\n", "        rootfs.img: /dev/mmcblk0p3\n", "copy1 and copy2 both write"),
    ("        rootfs.img: /dev/mmcblk0p3\n", "        rootfz.img: /dev/mmcblk0p3\n", "installs unknown artifact 'rootfz.img'"),
    ('    hardware-compatibility: ["1.0"]\n', "", "missing required key 'hardware-compatibility'"),
    ("  raspberrypi4-64:", "  4pi:", "machine name '4pi' must start with a letter"),
    ("bootenv: {rootpart: 3}", "bootenv: {rootpart: [3]}", "bootenv 'rootpart' must be a string or an integer"),
    ("bootenv: {rootpart: 3}", "bootenv: {'root part': 3}", "not a valid U-Boot variable name"),
    ("{device: /dev/mmcblk0p4, filesystem: ext4, path: /apps}\n      bootenv: {rootpart: 3}",
     "{device: /dev/mmcblk0p4, path: /apps}\n      bootenv: {rootpart: 3}", "give its 'filesystem'"),
    ("version: 1.2.3", "version: 1.2.3 beta", "must be a dotted version"),
    ("    type: raw\n", "    type: raw\n    compressed: lzma\n", "compressed 'lzma' is not one of"),
    ("    type: raw\n", "    type: raw\n    encrypted: 'yes'\n", "encrypted must be true or false"),
])
def test_bad_specs_name_the_problem(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace("[", r"\[")) as info:
        load_spec(_spec(tmp_path, GOOD.replace(old, new, 1)))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text,message", [
    ("version: [1\n", r"line \d+, column \d+: malformed YAML"),
    ("- just\n- a list\n", "top level must be a mapping"),
    ("version: 1\nversion: 2\n", "line 2: duplicate key 'version'"),
    ("version: 1\n\tartifacts: {}\n", "malformed YAML"),
    ("", "top level must be a mapping"),
])
def test_malformed_yaml(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load_spec(_spec(tmp_path, text))


def test_missing_spec_file(tmp_path: Path) -> None:
    from pyvorin.errors import PyvorinError

    with pytest.raises(PyvorinError, match="release spec not found"):
        load_spec(tmp_path / "nope.yaml")


def test_sw_description_escapes_and_reparses(tmp_path: Path) -> None:
    text = GOOD.replace("version: 1.2.3\n", 'version: 1.2.3\ndescription: "say \\"hi\\"\\n\\\\ and \\t"\n')
    spec = load_spec(_spec(tmp_path, text))
    infos = {a.name: PayloadInfo("ab" * 32) for a in spec.artifacts}
    rendered = render_sw_description(spec, infos).decode()
    tree = parse(rendered)
    software = tree["software"]
    assert software["description"] == 'say "hi"\n\\ and \t'
    board = software["raspberrypi4-64"]
    assert board["hardware-compatibility"] == ["1.0"]
    copy2 = board["stable"]["copy2"]
    assert copy2["images"][0] == {"filename": "rootfs.img", "type": "raw", "device": "/dev/mmcblk0p2",
                                  "sha256": "ab" * 32}
    assert copy2["images"][1]["filesystem"] == "ext4" and copy2["images"][1]["path"] == "/apps"
    assert copy2["bootenv"] == [{"name": "rootpart", "value": "2"}]
