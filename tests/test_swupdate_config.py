"""The device's swupdate configuration gate, like the kernel fragments' gate.

The configuration is meta-swupdate's pinned ``defconfig`` merged with the
layer's ``pyvorin.cfg`` the way ``swupdate.inc`` merges it, then ``oldconfig``
on the pinned swupdate source (``device_swupdate``). Every fragment line must
survive, and every feature the layer relies on must be on; the bbappend's own
check (``pyvorin_swupdate_config_check``) is run on the same files and must
agree.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from pyvorin.spec import Compression, ImageType, ScriptType
from pyvorin_devsim import device_swupdate

from helpers import unavailable

INC = device_swupdate.SWUPDATE_FILES.parent / "swupdate_pyvorin.inc"

#: What each release-spec value needs compiled in. A new spec value without an
#: entry here fails test_every_spec_value_has_a_feature.
SPEC_FEATURES: dict[object, tuple[str, ...]] = {
    ImageType.RAW: ("CONFIG_RAW",),
    ImageType.RAWFILE: ("CONFIG_RAW",),  # handlers/raw_handler.c registers both
    ImageType.ARCHIVE: ("CONFIG_ARCHIVE",),
    ImageType.DELTA: ("CONFIG_LUA", "CONFIG_EMBEDDED_LUA_HANDLER"),
    Compression.NONE: (),
    Compression.ZLIB: ("CONFIG_GUNZIP",),
    Compression.ZSTD: ("CONFIG_ZSTD",),
    ScriptType.SHELLSCRIPT: ("CONFIG_SCRIPTS", "CONFIG_SHELLSCRIPTHANDLER"),
    ScriptType.PREINSTALL: ("CONFIG_SCRIPTS", "CONFIG_SHELLSCRIPTHANDLER"),
    ScriptType.POSTINSTALL: ("CONFIG_SCRIPTS", "CONFIG_SHELLSCRIPTHANDLER"),
    ScriptType.LUA: ("CONFIG_SCRIPTS", "CONFIG_LUASCRIPTHANDLER"),
}

#: What the device's update path relies on besides the spec's artifact types.
RELIED_ON = {
    "CONFIG_BOOTLOADERHANDLER": "bundles carry a bootenv section (rootpart, upgrade_available, bootcount)",
    "CONFIG_UBOOT": "the boot environment is U-Boot's, written through libubootenv",
    "CONFIG_BOOTLOADER_DEFAULT_UBOOT": "swupdate.sh passes no -B",
    "CONFIG_SIGNED_IMAGES": "unsigned bundles must be refused",
    "CONFIG_SIGALG_CMS": "pyvorin signs with CMS by default",
    "CONFIG_HASH_VERIFY": "every image carries its sha256",
    "CONFIG_ENCRYPTED_IMAGES": "the spec offers encrypted: true",
    "CONFIG_SYSTEMD": "swupdate.service is Type=notify and socket-activated",
    "CONFIG_HW_COMPATIBILITY": "bundles name the hardware revisions they fit",
}


@pytest.fixture(scope="module")
def merged() -> dict[str, str]:
    try:
        return device_swupdate.config_values(device_swupdate.merged_config())
    except device_swupdate.BuildError as exc:
        unavailable(f"the device's swupdate cannot be built here: {exc}")
        raise


def test_snapshot_matches_the_pins() -> None:
    """../shared/upstream holds what kas and the pinned meta-swupdate name."""
    device_swupdate.check_pins()
    recipe = (device_swupdate.meta_swupdate() / device_swupdate.RECIPE).read_text()
    assert "require swupdate.inc" in recipe


def test_every_fragment_line_survives_the_merge() -> None:
    config = device_swupdate.merged_config()
    for fragment in device_swupdate.FRAGMENTS:
        assert device_swupdate.dropped_lines(fragment.read_text(), config) == [], fragment.name


def test_relied_on_features_are_on(merged: dict[str, str]) -> None:
    off = {symbol: why for symbol, why in RELIED_ON.items() if merged.get(symbol) != "y"}
    assert not off, f"features the layer relies on are off in the device build: {off}"
    # and the ones that must stay off: no web server, no unsigned algorithms
    assert merged.get("CONFIG_WEBSERVER", "n") == "n"
    assert merged.get("CONFIG_SIGALG_RAWRSA", "n") == "n"


def test_every_spec_value_has_a_feature(merged: dict[str, str]) -> None:
    for enum_type in (ImageType, Compression, ScriptType):
        for value in enum_type:
            assert value in SPEC_FEATURES, f"{value!r} is accepted by the release spec but not mapped to a feature"
            off = [symbol for symbol in SPEC_FEATURES[value] if merged.get(symbol) != "y"]
            assert not off, f"spec value {value.value!r} needs {off}, off in the device build"


def test_trust_paths_are_on_the_read_only_root(merged: dict[str, str]) -> None:
    """Nothing the daemon trusts is read from /etc, which is an overlay on /data."""
    for symbol in ("CONFIG_DEFAULT_CONFIG_FILE", "CONFIG_HW_COMPATIBILITY_FILE", "CONFIG_SW_VERSIONS_FILE"):
        assert merged[symbol].strip('"').startswith("/usr/"), (symbol, merged[symbol])
    for symbol in ("CONFIG_SOCKET_CTRL_PATH", "CONFIG_SOCKET_PROGRESS_PATH"):
        assert merged[symbol].strip('"').startswith("/run/swupdate/"), (symbol, merged[symbol])


def test_merge_follows_merge_config_semantics() -> None:
    base = 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_AB="x"\nCONFIG_C=y\n'
    merged = device_swupdate.merge_fragments(base, ["CONFIG_B=y\n# CONFIG_A is not set\n"])
    # the base lines naming A and B go, CONFIG_AB stays (a different symbol), the fragment is appended
    assert merged == 'CONFIG_AB="x"\nCONFIG_C=y\nCONFIG_B=y\n# CONFIG_A is not set\n'


def test_gate_sees_a_dropped_line(tmp_path: Path) -> None:
    """A fragment line oldconfig drops (unmet dependency) is reported, on the real Kconfig."""
    try:
        src = device_swupdate.untar(device_swupdate.upstream(device_swupdate.SWUPDATE_TARBALL), tmp_path)
    except device_swupdate.BuildError as exc:
        unavailable(str(exc))
    (src / "swupdate_handlers.lua").write_text("-- empty\n")
    bad = tmp_path / "bad.cfg"
    # The handler needs Lua: with Lua off, Kconfig drops it.
    bad.write_text(device_swupdate.FRAGMENTS[0].read_text().replace("CONFIG_LUA=y", "# CONFIG_LUA is not set"))
    config = device_swupdate.configure(src, tmp_path / "build", fragments=[bad])
    dropped = device_swupdate.dropped_lines(bad.read_text(), config)
    assert "CONFIG_EMBEDDED_LUA_HANDLER=y" in dropped
    assert "CONFIG_LUASCRIPTHANDLER=y" in dropped
    # and the recipe's own check fails the same way
    result = _recipe_check(bad, tmp_path / "build")
    assert result.returncode != 0 and "CONFIG_" in result.stderr and "did not survive" in result.stderr


def _recipe_check(fragment: Path, build_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run pyvorin_swupdate_config_check from the bbappend's .inc with sh, bbfatal as BitBake defines it."""
    body = re.search(r"^pyvorin_swupdate_config_check\(\) \{\n(.*?)^\}", INC.read_text(), re.M | re.S)
    assert body is not None
    script = body.group(1).replace("${B}", str(build_dir)).replace("${PYVORIN_SWUPDATE_FRAGMENTS}", str(fragment))
    assert "${" not in script.replace("${line", "").replace("${symbol", ""), "unexpanded BitBake variable"
    prelude = 'bbfatal() { echo "ERROR: $*" >&2; exit 1; }\n'
    return subprocess.run(["sh", "-c", prelude + script], capture_output=True, text=True, check=False)


def test_recipe_check_passes_on_the_device_build(tmp_path: Path) -> None:
    (tmp_path / ".config").write_text(device_swupdate.merged_config())
    for fragment in device_swupdate.FRAGMENTS:
        result = _recipe_check(fragment, tmp_path)
        assert result.returncode == 0, result.stderr


def test_recipe_check_is_wired_into_do_configure() -> None:
    text = INC.read_text()
    assert 'do_configure[postfuncs] += "pyvorin_swupdate_config_check"' in text
    fragments = re.search(r'^PYVORIN_SWUPDATE_FRAGMENTS = "(.*)"$', text, re.M)
    assert fragments is not None
    assert [Path(f).name for f in fragments.group(1).split()] == [f.name for f in device_swupdate.FRAGMENTS]
    for fragment in device_swupdate.FRAGMENTS:
        assert f"file://{fragment.name}" in text
