"""U-Boot for QEMU's ``virt`` board with the real boot counter, built from
Debian's ``u-boot`` source package.

Debian's own ``u-boot-qemu`` has no bootcount and keeps its environment in
pflash, which the Debian kernel cannot write. We rebuild the same source with
``qemu_arm64_defconfig`` + the layer's A/B fragment (the one the Raspberry Pi
build uses) + the QEMU board fragment, and one board change: enumerate the
virtio bus in ``board_init`` (stock qemu-arm does it in ``board_late_init``,
after the environment was loaded, so an environment on a virtio disk would
never be found)."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pyvorin_devsim import cache
from qemu.errors import HarnessError
from qemu.host import run

ROOT = Path(__file__).resolve().parents[2]
LAYER_FILES = ROOT / "meta-pyvorin/dynamic-layers/raspberrypi/recipes-bsp/u-boot/files"
LAYER_FRAGMENT = LAYER_FILES / "pyvorin-ab.cfg"
#: Verified boot (DISTRO_FEATURES pyvorin-verity): merged last, as the bbappend adds it last.
VERITY_FRAGMENT = LAYER_FILES / "pyvorin-verity.cfg"
BOARD_FRAGMENT = Path(__file__).with_name("files") / "qemu-arm64.cfg"
BOARD_FILE = "board/emulation/qemu-arm/qemu-arm.c"
_BOARD_INIT = "int board_init(void)\n{\n"
_CROSS = {"ARCH": "arm", "CROSS_COMPILE": "aarch64-linux-gnu-"}


@dataclass(frozen=True)
class UBoot:
    binary: Path       # u-boot.bin, for qemu -bios
    config: Path       # the .config it was built with
    env_size: int      # CONFIG_ENV_SIZE
    #: Directory with this source's fit_check_sign (built with FIT signatures; Debian's
    #: u-boot-tools ships none), which the layer's pyvorin-control-dtb runs; None without.
    tools: Path | None = None


def _options(text: str) -> dict[str, str]:
    """CONFIG_X=value lines of a Kconfig file or fragment ("n" for 'is not set')."""
    found = {m.group(1): m.group(2) for m in re.finditer(r"^(CONFIG_\w+)=(.*)$", text, re.M)}
    found.update({m.group(1): "n" for m in re.finditer(r"^# (CONFIG_\w+) is not set$", text, re.M)})
    return found


def _patch_board(source: Path) -> None:
    path = source / BOARD_FILE
    text = path.read_text()
    if _BOARD_INIT not in text or "virtio_init();" not in text:
        raise HarnessError(f"{BOARD_FILE}: board_init or virtio_init not found; the board change needs updating")
    path.write_text(text.replace(_BOARD_INIT, _BOARD_INIT + "\t/* virtio disks before env_load(): ENV_IS_IN_FAT */\n"
                                 "\tvirtio_init();\n", 1))


def _build(out: Path, fragments: tuple[Path, ...]) -> None:
    work = out / "src"
    work.mkdir()
    try:
        run(["apt-get", "source", "-qq", "u-boot"], cwd=work, timeout=900)
    except HarnessError as exc:
        raise HarnessError("apt-get source u-boot failed: a deb-src entry for Debian is needed "
                           "(scripts/test.sh adds one when run as root)\n" + str(exc)) from exc
    sources = [p for p in work.iterdir() if p.is_dir() and p.name.startswith("u-boot-")]
    if len(sources) != 1:
        raise HarnessError(f"apt-get source u-boot: expected one source tree in {work}, found {sources}")
    source = sources[0]
    _patch_board(source)
    build = out / "build"
    jobs = str(os.cpu_count() or 1)
    run(["make", "-s", f"O={build}", "qemu_arm64_defconfig"], cwd=source, env=_CROSS)
    run(["scripts/kconfig/merge_config.sh", "-m", "-O", build, build / ".config", *fragments], cwd=source, env=_CROSS)
    run(["make", "-s", f"O={build}", "olddefconfig"], cwd=source, env=_CROSS)
    config = (build / ".config").read_text()
    wanted: dict[str, str] = {}
    for fragment in fragments:
        wanted.update(_options(fragment.read_text()))
    got = _options(config)
    lost = {k: v for k, v in wanted.items() if got.get(k, "n") != v}
    if lost:
        raise HarnessError(f"Kconfig dropped these options (unmet dependencies?): {lost}")
    run(["make", "-s", f"O={build}", f"-j{jobs}", "u-boot.bin"], cwd=source, env=_CROSS, timeout=3600)
    shutil.copy2(build / "u-boot.bin", out / "u-boot.bin")
    if _options(config).get("CONFIG_FIT_SIGNATURE") == "y":
        # The host tools of the same source: fit_check_sign, as u-boot-tools-native has it.
        run(["make", "-s", f"O={build}", f"-j{jobs}", "tools"], cwd=source, env=_CROSS, timeout=900)
        (out / "tools").mkdir()
        shutil.copy2(build / "tools/fit_check_sign", out / "tools/fit_check_sign")
    shutil.copy2(build / ".config", out / "config")
    shutil.rmtree(work)
    shutil.rmtree(build)


def build(*, verity: bool = False) -> UBoot:
    """The cached U-Boot, built on first use (about 2-3 minutes on 2 cores); ``verity``: with the
    layer's verified-boot fragment."""
    fragments = (LAYER_FRAGMENT, BOARD_FRAGMENT, *((VERITY_FRAGMENT,) if verity else ()))
    inputs = cache.key(*(f.read_bytes() for f in fragments), Path(__file__).read_bytes())
    out = cache.entry("u-boot-verity" if verity else "u-boot", inputs, lambda path: _build(path, fragments))
    size = _options((out / "config").read_text()).get("CONFIG_ENV_SIZE", "")
    if not size:
        raise HarnessError("CONFIG_ENV_SIZE missing from the U-Boot configuration")
    tools = out / "tools"
    return UBoot(binary=out / "u-boot.bin", config=out / "config", env_size=int(size, 0),
                 tools=tools if tools.is_dir() else None)
