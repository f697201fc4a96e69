"""Bad release specs: one clear error naming the file, the line and the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pyvorin.errors import SpecError
from pyvorin.libconfig import parse
from pyvorin.spec import ImageType, load_spec
from pyvorin.swdesc import PayloadInfo, render_sw_description

from helpers import one_error_line

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


# -- offset: two raw images of one copy in one slot (verified boot's FIT window) ------------------

SHARED = """\
version: 1.2.3
artifacts:
  rootfs.img: {file: rootfs.img, type: raw}
  fit.itb: {file: fit.itb, type: raw}
  app.tar.gz: {file: app.tar.gz, type: archive}
machines:
  raspberrypi4-64:
    hardware-compatibility: ["1.0"]
    copy1:
      install:
        rootfs.img: /dev/mmcblk0p3
        fit.itb: {device: /dev/mmcblk0p3, offset: 960M}
        app.tar.gz: {device: /dev/mmcblk0p4, filesystem: ext4, path: /apps}
    copy2:
      install:
        rootfs.img: /dev/mmcblk0p2
        fit.itb: {device: /dev/mmcblk0p2, offset: 960M}
        app.tar.gz: {device: /dev/mmcblk0p4, filesystem: ext4, path: /apps}
"""
COPY1_FIT = "fit.itb: {device: /dev/mmcblk0p3, offset: 960M}"


@pytest.mark.parametrize("written,offset", [
    ("512", 512),
    ("'4096'", 4096),
    ("1K", 1 << 10),
    ("64M", 64 << 20),
    ("960M", 960 << 20),
    ("'2G'", 2 << 30),
    ("8589934592", 8 << 30),
])
def test_offset_forms(tmp_path: Path, written: str, offset: int) -> None:
    text = SHARED.replace(COPY1_FIT, COPY1_FIT.replace("960M", written))
    copy1 = load_spec(_spec(tmp_path, text)).machines[0].copies[0]
    assert [(t.artifact, t.device, t.offset) for t in copy1.targets[:2]] == [
        ("rootfs.img", "/dev/mmcblk0p3", None), ("fit.itb", "/dev/mmcblk0p3", offset)]


def test_an_explicit_zero_offset_is_rendered(tmp_path: Path) -> None:
    text = SHARED.replace("rootfs.img: /dev/mmcblk0p3", "rootfs.img: {device: /dev/mmcblk0p3, offset: 0}")
    spec = load_spec(_spec(tmp_path, text))
    assert spec.machines[0].copies[0].targets[0].offset == 0
    rendered = render_sw_description(spec, {a.name: PayloadInfo("ab" * 32) for a in spec.artifacts}).decode()
    assert parse(rendered)["software"]["raspberrypi4-64"]["stable"]["copy1"]["images"][0]["offset"] == "0"


def _line_of(text: str, marker: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if marker in line)


@pytest.mark.parametrize("old,new,marker,message", [
    ("960M}", "-512}", COPY1_FIT[:20], "offset of 'fit.itb' must not be negative"),
    ("960M}", "1000}", COPY1_FIT[:20], "offset 1000 of 'fit.itb' is not a multiple of 512: block devices are "
                                       "written in 512-byte sectors"),
    ("960M}", "'1000'}", COPY1_FIT[:20], "offset 1000 of 'fit.itb' is not a multiple of 512"),
    ("960M}", "64MB}", COPY1_FIT[:20], "offset '64MB' of 'fit.itb' is not a number of bytes, optionally with a K"),
    ("960M}", "64m}", COPY1_FIT[:20], "offset '64m' of 'fit.itb' is not a number of bytes"),
    ("960M}", "'0x100000'}", COPY1_FIT[:20], "offset '0x100000' of 'fit.itb' is not a number of bytes"),
    ("960M}", "'01024'}", COPY1_FIT[:20], "offset '01024' of 'fit.itb' is not a number of bytes"),  # octal to SWUpdate
    ("960M}", "1.5M}", COPY1_FIT[:20], "offset '1.5M' of 'fit.itb' is not a number of bytes"),
    ("960M}", "'-1M'}", COPY1_FIT[:20], "offset '-1M' of 'fit.itb' is not a number of bytes"),
    ("960M}", "' 64M'}", COPY1_FIT[:20], "offset ' 64M' of 'fit.itb' is not a number of bytes"),
    ("960M}", "''}", COPY1_FIT[:20], "offset '' of 'fit.itb' is not a number of bytes"),
    ("960M}", "true}", COPY1_FIT[:20], "offset of 'fit.itb' must be a whole number of bytes or a string like '64M'"),
    ("960M}", "1536.0}", COPY1_FIT[:20], "offset of 'fit.itb' must be a whole number of bytes"),
    ("960M}", "[512]}", COPY1_FIT[:20], "offset of 'fit.itb' must be a whole number of bytes"),
    ("960M}", "9223372036854775808}", COPY1_FIT[:20], "offset of 'fit.itb' is past what SWUpdate's lseek can reach"),
    ("960M}", "9999999999G}", COPY1_FIT[:20], "past what SWUpdate's lseek can reach"),
    ("960M}", f"'{'9' * 5000}'}}", COPY1_FIT[:20], "past what SWUpdate's lseek can reach"),
    # One device, one start: the second image would overwrite the first.
    ("960M}", "0}", COPY1_FIT[:20], "raspberrypi4-64.copy1: 'rootfs.img' and 'fit.itb' both write /dev/mmcblk0p3 "
                                    "from offset 0; one of them needs an 'offset' past the end of the other"),
    (COPY1_FIT, "fit.itb: /dev/mmcblk0p3", "fit.itb: /dev/mmcblk0p3", "'rootfs.img' and 'fit.itb' both write /dev/mmcblk0p3"),
    # Only raw images seek; a file written into a mounted file system has no offset.
    ("/apps}\n    copy2", "/apps, offset: 1M}\n    copy2", "app.tar.gz: {device: /dev/mmcblk0p4",
     "offset is for raw images (SWUpdate's raw handler seeks to it); 'app.tar.gz' is archive"),
    ("  fit.itb: {file: fit.itb, type: raw}", "  fit.itb: {file: fit.itb, type: rawfile}", COPY1_FIT[:20],
     "offset is for raw images (SWUpdate's raw handler seeks to it); 'fit.itb' is rawfile"),
    # An offset does not make one slot the other's: copy2 still must not write copy1's slot.
    ("fit.itb: {device: /dev/mmcblk0p2, offset: 960M}", "fit.itb: {device: /dev/mmcblk0p3, offset: 1G}", "copy2:",
     "copy1 and copy2 both write 'fit.itb' to /dev/mmcblk0p3"),
])
def test_bad_offsets_are_one_line_naming_file_and_line(cli, tmp_path: Path, old: str, new: str, marker: str,
                                                       message: str) -> None:
    assert old in SHARED
    text = SHARED.replace(old, new, 1)
    path = _spec(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    line = one_error_line(cli("swdesc", path))  # the command: exit 2, that one line
    assert line == f"pyvorin: error: {path}:{_line_of(text, marker)}: {str(info.value).split(': ', 1)[1]}"


def test_a_delta_writes_its_slot_from_the_first_byte(tmp_path: Path) -> None:
    """A pyvdelta rebuilds the whole slot image from offset 0: a raw image beside it needs an offset."""
    text = SHARED.replace("  rootfs.img: {file: rootfs.img, type: raw}", "  rootfs.img: {file: r.pyvd, type: pyvdelta}")
    text = text.replace("rootfs.img: /dev/mmcblk0p3", "rootfs.img: {device: /dev/mmcblk0p3, source: /dev/mmcblk0p2}")
    text = text.replace("rootfs.img: /dev/mmcblk0p2", "rootfs.img: {device: /dev/mmcblk0p2, source: /dev/mmcblk0p3}")
    assert load_spec(_spec(tmp_path, text)).machines[0].copies[0].targets[1].offset == 960 << 20
    with pytest.raises(SpecError, match="'rootfs.img' and 'fit.itb' both write /dev/mmcblk0p3 from offset 0"):
        load_spec(_spec(tmp_path, text.replace(COPY1_FIT, "fit.itb: /dev/mmcblk0p3")))
    with pytest.raises(SpecError, match="offset is for raw images .* 'rootfs.img' is pyvdelta"):
        load_spec(_spec(tmp_path, text.replace("source: /dev/mmcblk0p2}", "source: /dev/mmcblk0p2, offset: 0}")))


def test_sw_description_gives_the_offset_in_decimal_bytes(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, SHARED))
    rendered = render_sw_description(spec, {a.name: PayloadInfo("ab" * 32) for a in spec.artifacts}).decode()
    assert ('\t\t\t\t\t\tfilename = "fit.itb";\n'
            '\t\t\t\t\t\ttype = "raw";\n'
            '\t\t\t\t\t\tdevice = "/dev/mmcblk0p3";\n'
            '\t\t\t\t\t\toffset = "1006632960";\n') in rendered
    images = parse(rendered)["software"]["raspberrypi4-64"]["stable"]["copy2"]["images"]
    assert images[1] == {"filename": "fit.itb", "type": "raw", "device": "/dev/mmcblk0p2", "offset": "1006632960",
                         "sha256": "ab" * 32}
    assert "offset" not in images[0] and "offset" not in images[2]
