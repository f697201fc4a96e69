"""Static rules for the hardening content of the layer: everything is gated by
the pyvorin-hardening distro feature, every shipped file is used, and the
kernel bbappends name recipes the pinned BSP layers really have (checked against
the pinned snapshot's clones, the ones the layer gate parses)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import layer_gate
from helpers import ROOT, unavailable

LAYER = ROOT / "meta-pyvorin"
RECIPES = {
    LAYER / "recipes-core/pyvorin-hardening/pyvorin-hardening_1.0.bb": "pyvorin-hardening systemd",
    LAYER / "recipes-security/pyvorin-apparmor-profiles/pyvorin-apparmor-profiles_1.0.bb":
        "apparmor pyvorin-hardening",
}
KERNEL_APPENDS = {
    LAYER / "dynamic-layers/raspberrypi/recipes-kernel/linux/linux-raspberrypi_%.bbappend":
        ("meta-raspberrypi", "recipes-kernel/linux", "linux-raspberrypi"),
    LAYER / "dynamic-layers/tegra/recipes-kernel/linux/linux-jammy-nvidia-tegra_%.bbappend":
        ("meta-tegra", "recipes-kernel/linux", "linux-jammy-nvidia-tegra"),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES), ids=lambda p: p.name)
def test_recipe_is_gated_and_ships_every_file(recipe: Path) -> None:
    text = recipe.read_text()
    assert "inherit" in text and "features_check" in text
    assert re.search(rf'^REQUIRED_DISTRO_FEATURES = "{RECIPES[recipe]}"$', text, re.M)
    fetched = set(re.findall(r"file://([\w./-]+)", text))
    shipped = {str(p.relative_to(recipe.parent / "files")) for p in (recipe.parent / "files").rglob("*")
               if p.is_file()}
    assert fetched == shipped, f"unused: {sorted(shipped - fetched)}, missing: {sorted(fetched - shipped)}"


@pytest.mark.parametrize("append", sorted(KERNEL_APPENDS), ids=lambda p: p.name)
def test_kernel_append_gates_on_hardening(append: Path) -> None:
    line = append.read_text().strip()
    assert line.startswith("require ${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-hardening', ")
    inc = append.parent / re.findall(r"'([\w-]+\.inc)'", line)[0]
    assert "require recipes-kernel/linux/linux-pyvorin-hardening.inc" in inc.read_text()


@pytest.mark.parametrize("append", sorted(KERNEL_APPENDS), ids=lambda p: p.name)
def test_kernel_append_matches_a_recipe_of_the_pinned_bsp(append: Path) -> None:
    try:
        layers = layer_gate.layers()  # the pinned snapshot's clones, as the gate uses them
    except (layer_gate.GateError, OSError) as exc:
        unavailable(f"the pinned layers are not available: {exc}")
    bsp, subdir, recipe = KERNEL_APPENDS[append]
    directory = layers / bsp / subdir
    assert directory.is_dir(), f"the pinned {bsp} has no {subdir}"
    pattern = re.compile(rf"^{re.escape(recipe)}_[\d.]+\.bb$")
    assert any(pattern.match(p.name) for p in directory.iterdir()), f"no {recipe}_<version>.bb in {directory}"
    assert append.name == f"{recipe}_%.bbappend"


def test_every_custom_variable_is_known_to_oelint() -> None:
    known = set(json.loads((ROOT / ".oelint" / "hardening-constants.json").read_text())["variables"]["known"])
    ours = [*RECIPES, LAYER / "recipes-kernel/linux/linux-pyvorin-hardening.inc",
            *(p.parent / re.findall(r"'([\w-]+\.inc)'", p.read_text())[0] for p in KERNEL_APPENDS)]
    used = {v for path in ours for v in re.findall(r"^(PYVORIN_\w+) \?\?=", path.read_text(), re.M)}
    assert used and used <= known, f"add to .oelint/hardening-constants.json: {sorted(used - known)}"
