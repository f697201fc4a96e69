"""Static rules of the layer and the kas tree (CI has no upstream layers; the
BitBake parse itself is scripts/layer-gate.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, recipe_modules, require, require_module, which

LAYER = ROOT / "meta-pyvorin"
KAS = ROOT / "kas"
KAS_FILES = sorted(KAS.rglob("*.yml"))
RECIPES = sorted(p for p in LAYER.rglob("*") if p.suffix in {".bb", ".bbappend", ".bbclass", ".inc"}
                 and "conf" not in p.relative_to(LAYER).parts[:1])


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]


@pytest.mark.parametrize("path", KAS_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_kas_files_match_the_kas_schema(path: Path) -> None:
    jsonschema = require_module("jsonschema")
    configschema = require_module("kas.configschema")
    config = yaml.safe_load(path.read_text())
    jsonschema.validate(config, configschema.CONFIGSCHEMA)
    for include in config["header"].get("includes", []):
        assert (ROOT / include).is_file(), f"{path.name} includes missing {include}"


def test_every_remote_repo_is_pinned_to_a_full_commit_of_scarthgap() -> None:
    seen: dict[str, str] = {}
    for path in KAS_FILES:
        for name, repo in (yaml.safe_load(path.read_text()).get("repos") or {}).items():
            if repo is None or "url" not in repo:
                continue
            where = f"{path.relative_to(ROOT)}: repo {name}"
            assert "refspec" not in repo and "tag" not in repo, f"{where}: pin by branch + commit"
            assert repo.get("branch") == "scarthgap", f"{where}: branch must be scarthgap"
            assert re.fullmatch(r"[0-9a-f]{40}", str(repo.get("commit", ""))), f"{where}: commit must be a full SHA"
            assert name not in seen, f"{where}: pinned twice (each repository has one home: kas/pyvorin.yml or kas/bsp/)"
            seen[name] = repo["commit"]
    assert {"poky", "meta-openembedded", "meta-swupdate", "meta-security", "meta-raspberrypi", "meta-tegra"} <= set(seen)


def test_machine_files_hold_the_machine_and_bsp_files_the_bsp() -> None:
    """As isar-cip-core: a machine file names the machine and includes its BSP; a BSP file pins the
    BSP repository once, for every machine of it, with its local settings."""
    for path in sorted((KAS / "machine").glob("*.yml")):
        config = yaml.safe_load(path.read_text())
        assert set(config) == {"header", "machine"}, path.name
        assert config["machine"] == path.stem
        (bsp,) = config["header"]["includes"]
        assert bsp.startswith("kas/bsp/"), f"{path.name}: includes its BSP file only"
    for path in sorted((KAS / "bsp").glob("*.yml")):
        config = yaml.safe_load(path.read_text())
        assert set(config) <= {"header", "repos", "local_conf_header"}, path.name
        assert len(config["repos"]) == 1, f"{path.name}: only the BSP repository"
        assert "machine" not in config


def test_entry_files_build_the_image_and_bundle_per_machine() -> None:
    for machine in ("raspberrypi4-64", "raspberrypi5", "jetson-orin-nano-devkit"):
        config = yaml.safe_load((KAS / f"{machine}.yml").read_text())
        # Signing is an explicit choice (kas/opt/dev-keys.yml or production.yml), never built in.
        assert config["header"]["includes"] == ["kas/pyvorin.yml", f"kas/machine/{machine}.yml"]
        assert f"kas build kas/{machine}.yml:kas/opt/dev-keys.yml" in (ROOT / "kas" / f"{machine}.yml").read_text()
    base = yaml.safe_load((KAS / "pyvorin.yml").read_text())
    assert base["distro"] == "pyvorin" and base["target"] == ["pyvorin-image", "pyvorin-update-image"]


# PYVORIN_SOURCE_DIR: where the layer's own software is (as oe-core's layer.conf sets COREBASE);
# it only names a path, read by the layer's own recipes.
LAYER_VARS = re.compile(
    r"^(BBPATH|BBFILES|BBFILE_COLLECTIONS|BBFILE_PATTERN_pyvorin|BBFILE_PRIORITY_pyvorin|LAYERVERSION_pyvorin|"
    r"LAYERDEPENDS_pyvorin|LAYERRECOMMENDS_pyvorin|LAYERSERIES_COMPAT_pyvorin|BBFILES_DYNAMIC)\s*(\.=|\+=|=)"
    r"|^PYVORIN_SOURCE_DIR \?= "
)


def test_layer_conf_sets_only_layer_variables() -> None:
    text = (LAYER / "conf" / "layer.conf").read_text()
    logical = re.sub(r"\\\n", " ", text)
    for line in logical.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert LAYER_VARS.match(line), f"layer.conf may only set layer variables: {line.strip()}"
    assert 'LAYERSERIES_COMPAT_pyvorin = "scarthgap"' in text


def test_every_bbappend_is_only_feature_gates() -> None:
    """A bbappend changes nothing until a distro feature is selected: each line requires one .inc
    under one feature (one line per feature, e.g. hardening and verified boot for the Pi's kernel)."""
    appends = sorted(LAYER.rglob("*.bbappend"))
    assert appends
    gate = re.compile(r"^require \$\{@bb\.utils\.contains\('DISTRO_FEATURES', '([\w-]+)', '([\w%-]+\.inc)', '', d\)\}$")
    for path in appends:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        assert lines, f"{path.relative_to(ROOT)} is empty"
        features = []
        for line in lines:
            match = gate.match(line)
            assert match, f"{path.relative_to(ROOT)}: not a feature gate: {line}"
            features.append(match.group(1))
            assert (path.parent / match.group(2)).is_file(), f"{path.name} gates a missing {match.group(2)}"
        assert len(set(features)) == len(features), f"{path.name} gates one feature twice: {features}"


def test_distro_layer_has_no_machine_settings() -> None:
    assert not (LAYER / "conf" / "machine").exists()
    for path in (LAYER / "conf" / "distro").rglob("*"):
        if path.is_file():
            assert not re.search(r"^\s*MACHINE\s*[?:]*=", path.read_text(), re.M), path.name


def test_no_private_key_or_password_in_the_tree() -> None:
    for path in _tracked_files():
        data = path.read_bytes()
        pem = re.search(rb"(?m)^-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=:, -]{20,}", data)
        assert not pem, f"private key in {path}"
    forbidden = re.compile(r"debug-tweaks|empty-root-password|allow-empty-password|allow-root-login|AUTOREV")
    allowed = {KAS / "opt" / "debug.yml", LAYER / "classes-recipe" / "pyvorin_image_policy.bbclass",
               ROOT / "scripts" / "layer-gate-checks.sh"}
    for path in [*KAS_FILES, *(p for p in LAYER.rglob("*") if p.is_file())]:
        if path not in allowed:
            assert not forbidden.search(path.read_text(errors="replace")), f"{path.relative_to(ROOT)}"


def test_oelint_adv_finds_nothing() -> None:
    require("oelint-adv")
    rel = [str(p.relative_to(ROOT)) for p in RECIPES]
    result = subprocess.run([str(which("oelint-adv")), *rel], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        result.stdout + result.stderr


SLOTS = LAYER / "conf/distro/include/pyvorin-slots.inc"


def _slot_map(family: str) -> dict[str, str]:
    """The slot map's plain values for a board family (NAME:family ?= "value")."""
    return dict(re.findall(rf'^(PYVORIN_\w+):{family} \?= "([^"$]*)"$', SLOTS.read_text(), flags=re.M))


def test_the_sd_card_layout_is_the_slot_maps() -> None:
    """wic numbers partitions in the order of the wks lines: boot, slot A, slot B, data."""
    rpi = _slot_map("rpi")
    parts = [line for line in (LAYER / "wic/pyvorin-rpi-ab.wks.in").read_text().splitlines() if line.startswith("part ")]
    roles = {1: "--label boot", 2: "--source rawcopy", 3: "--label rootfsB", 4: "--label data"}
    assert len(parts) == 4 and all(roles[n] in parts[n - 1] for n in roles)
    assert [rpi[f"PYVORIN_{role}_PART"] for role in ("BOOT", "SLOT_A", "SLOT_B", "DATA")] == ["1", "2", "3", "4"]
    assert rpi["PYVORIN_PART_PREFIX"] == "/dev/mmcblk0p"
    tegra = _slot_map("tegra")
    assert (tegra["PYVORIN_SLOT_A_DEVICE"], tegra["PYVORIN_SLOT_B_DEVICE"]) == \
        ("/dev/disk/by-partlabel/APP", "/dev/disk/by-partlabel/APP_b")


def test_no_recipe_names_a_slot_device_but_the_slot_map() -> None:
    """One slot map: the devices are written once (the README's tables may name them)."""
    device = re.compile(r"/dev/(mmcblk0p\d|disk/by-partlabel/(APP|APP_b|UDA)\b)")
    offenders = [str(p.relative_to(ROOT)) for p in LAYER.rglob("*") if p.is_file() and p != SLOTS
                 and p.suffix != ".md" and device.search(p.read_text(errors="replace"))]
    assert offenders == []


def test_the_update_image_is_made_by_pyvorin_native() -> None:
    """No meta-swupdate class, no sw-description template: the bundle class and the release tool."""
    recipe = (LAYER / "dynamic-layers/swupdate/recipes-core/images/pyvorin-update-image.bb").read_text()
    assert "inherit pyvorin_bundle" in recipe and "inherit swupdate" not in recipe
    assert not list(LAYER.rglob("sw-description"))
    bbclass = (LAYER / "classes-recipe/pyvorin_bundle.bbclass").read_text()
    assert 'DEPENDS += "pyvorin-native"' in bbclass
    assert "pyvorin_bundle_make release.json" in bbclass and 'pyvorin bundle "$1"' in bbclass
    assert "${PYVORIN_BUNDLE_PRODUCTION}" in bbclass


def test_slot_selection_script_picks_the_other_slot(tmp_path: Path) -> None:
    """The device-side helper behind `swupdate -e stable,<copy>`, run by /bin/sh."""
    source = (LAYER / "dynamic-layers/swupdate/recipes-support/swupdate/files/pyvorin-swupdate-select").read_text()
    slot_a, slot_b, other = (tmp_path / n for n in ("p2", "p3", "p9"))
    for node in (slot_a, slot_b, other):
        node.touch()
    (tmp_path / "by-label-a").symlink_to(slot_a)
    script = tmp_path / "select"
    script.write_text(source.replace("@SLOT_A@", str(tmp_path / "by-label-a")).replace("@SLOT_B@", str(slot_b)))
    script.chmod(0o755)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    findmnt = bindir / "findmnt"
    for root, expected in ((slot_a, "copy1"), (slot_b, "copy2"), (other, None)):
        findmnt.write_text(f"#!/bin/sh\necho {root}\n")
        findmnt.chmod(0o755)
        result = subprocess.run(["/bin/sh", script], capture_output=True, text=True, check=False,
                                env={"PATH": f"{bindir}:/usr/bin:/bin"})
        if expected:
            assert result.returncode == 0 and result.stdout.strip() == expected, result.stderr
        else:
            assert result.returncode != 0 and "neither slot A" in result.stderr


def test_gate_skips_loudly_without_layers(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, ROOT / "scripts" / "layer-gate.py"], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYVORIN_LAYERS": str(tmp_path / "none")}, check=False)
    assert result.returncode == 0
    assert "LAYER GATE SKIPPED" in result.stdout and "did NOT run" in result.stdout


def test_gate_reads_machines_and_pins_from_the_kas_files() -> None:
    """The gate's machines are kas/machine/'s; each builds with the base's repositories and its
    BSP's, every one pinned to a commit of a branch, read from the files kas reads."""
    from layer_gate import gate

    machines = gate.machines()
    assert sorted(machines) == sorted(yaml.safe_load(p.read_text())["machine"] for p in (KAS / "machine").glob("*.yml"))
    base = {name for name, spec in yaml.safe_load((KAS / "pyvorin.yml").read_text())["repos"].items() if spec and "url" in spec}
    for name, machine in machines.items():
        names = {repo.name for repo in machine.repos}
        bsp = names - base
        assert base <= names and len(bsp) == 1, (name, names)
        assert all(re.fullmatch(r"[0-9a-f]{40}", repo.commit) and repo.branch == "scarthgap" for repo in machine.repos)
    assert {repo.name for repo in machines["raspberrypi5"].repos} == {repo.name for repo in machines["raspberrypi4-64"].repos}


def _kas_tree(root: Path, bsp_commit: str = "b" * 40, extra: str = "") -> Path:
    (root / "kas/machine").mkdir(parents=True)
    (root / "kas/bsp").mkdir()
    head = "header:\n  version: 14\n"
    (root / "kas/base.yml").write_text(head + "repos:\n  this:\n  poky:\n    url: https://p\n    branch: scarthgap\n"
                                       "    commit: " + "a" * 40 + "\n")
    (root / "kas/bsp/b.yml").write_text(head + "repos:\n  meta-b:\n    url: https://b\n    branch: scarthgap\n"
                                        f"    commit: {bsp_commit}\n" + extra)
    (root / "kas/machine/m.yml").write_text(head + "  includes:\n    - kas/bsp/b.yml\nmachine: m\n")
    (root / "kas/m.yml").write_text(head + "  includes:\n    - kas/base.yml\n    - kas/machine/m.yml\n")
    return root


def test_gate_refuses_kas_files_it_cannot_trust(tmp_path: Path) -> None:
    from layer_gate import gate

    good = _kas_tree(tmp_path / "good")
    (machine,) = gate.machines(good).values()
    assert [(r.name, r.commit) for r in machine.repos] == [("meta-b", "b" * 40), ("poky", "a" * 40)]
    twice = _kas_tree(tmp_path / "twice", extra="  poky:\n    url: https://p\n    branch: scarthgap\n    commit: "
                      + "c" * 40 + "\n")
    with pytest.raises(gate.GateError, match="poky is pinned twice"):
        gate.machines(twice)
    unpinned = _kas_tree(tmp_path / "unpinned", bsp_commit="")
    with pytest.raises(gate.GateError, match="meta-b is not pinned"):
        gate.machines(unpinned)
    broken = _kas_tree(tmp_path / "broken")
    (broken / "kas/bsp/b.yml").write_text("repos: [unclosed\n")
    with pytest.raises(gate.GateError, match="b.yml"):
        gate.machines(broken)
    orphan = _kas_tree(tmp_path / "orphan")
    (orphan / "kas/m.yml").unlink()
    with pytest.raises(gate.GateError, match="no entry file kas/m.yml"):
        gate.machines(orphan)


def test_gate_writes_no_git_configuration() -> None:
    """The gate runs as root over clones another user owns: it passes safe.directory per call
    (git -c), never in a git configuration file outside its work directory."""
    for path in [ROOT / "scripts/layer-gate.py", *sorted((ROOT / "scripts").glob("layer-gate-*"))]:
        text = path.read_text()
        assert not re.search(r"git[\"', ]+config\b|--global|--system", text), path.name


def test_kas_menu_offers_every_fragment() -> None:
    kconfiglib = require_module("kconfiglib")
    config = kconfiglib.Kconfig(str(KAS / "Kconfig"), warn_to_stderr=False)
    offered = set()
    for name, symbol in config.syms.items():
        if name.startswith("KAS_INCLUDE_"):
            for default, _ in symbol.defaults:
                offered.add(default.str_value)
    # BSP files come with their machine file, never chosen alone.
    fragments = {str(p.relative_to(ROOT)) for p in KAS_FILES
                 if (p.parent != KAS or p.name == "pyvorin.yml") and p.parent.name != "bsp"}
    assert offered == fragments
    assert not config.warnings, config.warnings


def _imported_closure(start: str) -> set[str]:
    """The package's modules *start* needs, following its relative imports (what the device runs)."""
    import ast

    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        package = Path(module).parent
        for node in ast.walk(ast.parse((ROOT / "scripts" / module).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.parent
                names = [node.module] if node.module else [alias.name for alias in node.names]
                for name in names:
                    target = base.joinpath(*name.split("."))
                    for candidate in (f"{target}.py", f"{target}/__init__.py"):
                        if (ROOT / "scripts" / candidate).is_file():
                            todo.append(candidate)
        init = package / "__init__.py"
        if (ROOT / "scripts" / init).is_file():
            todo.append(str(init))
    return seen


def test_delta_applier_recipe_ships_the_release_tools_applier() -> None:
    """The recipe's version is the tool's, and its files exist beside the layer."""
    import pyvorin

    recipes = list((LAYER / "recipes-pyvorin/pyvorin-delta-apply").glob("pyvorin-delta-apply_*.bb"))
    assert [r.name for r in recipes] == [f"pyvorin-delta-apply_{pyvorin.__version__}.bb"]
    native = [r.name for r in (LAYER / "recipes-devtools/pyvorin").glob("*.bb")]
    assert native == [f"pyvorin-native_{pyvorin.__version__}.bb"]
    modules = recipe_modules(recipes[0])
    assert "pyvorin/delta/apply.py" in modules and "pyvorin/delta/make.py" not in modules
    assert _imported_closure("pyvorin/delta/__main__.py") <= set(modules), "the device would miss a module"
    for module in modules:
        assert (ROOT / "scripts" / module).is_file(), module
    # The embedded handler runs it: swupdate must pull it in.
    inc = (LAYER / "dynamic-layers/swupdate/recipes-support/swupdate/swupdate_pyvorin.inc").read_text()
    assert "pyvorin-delta-apply" in inc.split("RDEPENDS:${PN}")[1]


def test_production_checks_certificates_with_the_release_tool(cli, keys, tmp_path: Path) -> None:
    """`pyvorin keys check --production`, which a production swupdate build runs on the CA it installs."""
    for cert in (keys.ca, keys.cert):
        result = cli("keys", "check", "--production", cert)
        assert result.returncode == 2 and "development certificate (OU=pyvorin-dev)" in result.stderr
    prod = tmp_path / "prod"
    cli("keys", "init", prod, "--only", "swupdate", "--key-size", "2048", "--production", check=True)
    assert "1 production certificate" in cli("keys", "check", "--production", prod / "swupdate/ca.crt",
                                              check=True).stdout
    # A bundle of both: the development one is found.
    both = tmp_path / "both.crt"
    both.write_bytes((prod / "swupdate/ca.crt").read_bytes() + keys.ca.read_bytes())
    assert cli("keys", "check", "--production", both).returncode == 2
    # A production-looking certificate whose key the key directory's manifest marks dev.
    relabelled = tmp_path / "relabelled"
    shutil.copytree(keys.directory, relabelled)
    manifest = relabelled / "manifest.json"
    dev_entries = json.loads(manifest.read_text())
    prod_ca = next(e for e in json.loads((prod / "manifest.json").read_text())["entries"]
                   if e["file"] == "swupdate/ca.crt")
    dev_entries["entries"].append({**prod_ca, "file": "swupdate/other-ca.crt", "dev": True})
    manifest.write_text(json.dumps(dev_entries))
    shutil.copy(prod / "swupdate/ca.crt", relabelled / "swupdate/other-ca.crt")
    result = cli("keys", "check", "--production", relabelled / "swupdate/other-ca.crt")
    assert result.returncode == 2 and "marked dev in" in result.stderr
    (tmp_path / "junk.crt").write_text("not a certificate\n")
    for bad in (tmp_path / "missing.crt", tmp_path / "junk.crt"):
        result = cli("keys", "check", "--production", bad)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert cli("keys", "check", prod / "swupdate/ca.crt").returncode == 2, "--production is required"
    # The build runs it where it matters, and only for a production build.
    inc = (LAYER / "dynamic-layers/swupdate/recipes-support/swupdate/swupdate_pyvorin.inc").read_text()
    assert 'pyvorin keys check --production "${PYVORIN_SWUPDATE_CA_CERT}"' in inc
    assert "do_install[prefuncs] += \"${@'pyvorin_swupdate_production_ca' if bb.utils.to_boolean(" \
           "d.getVar('PYVORIN_PRODUCTION'))" in inc
    assert "base64" not in (LAYER / "classes-global/pyvorin_sanity.bbclass").read_text()


def test_release_version_grows_and_is_numeric(tmp_path: Path) -> None:
    """pyvorin-image's version stamp: DISTRO_VERSION.BUILD, three numbers, growing with the build time."""
    from helpers import RecipeData, RecipeFatal, recipe_functions

    functions = recipe_functions(LAYER / "recipes-core/images/pyvorin-image.bb")
    version = functions["pyvorin_release_version"]
    data = RecipeData({"DISTRO_VERSION": "2026.11", "DATETIME": "20261203235959"})
    first = version(data)
    later = version(data, now="20261204000100")
    assert re.fullmatch(r"2026\.11\.\d+", first) and first != later
    assert int(later.rsplit(".", 1)[1]) > int(first.rsplit(".", 1)[1])
    assert version(RecipeData({"DISTRO_VERSION": "2026.11", "PYVORIN_BUILD_NUMBER": "4711"})) == "2026.11.4711"
    for bad in ({"DISTRO_VERSION": "2026.11-rc1"}, {"DISTRO_VERSION": "2026", "PYVORIN_BUILD_NUMBER": "1"},
                {"DISTRO_VERSION": "2026.11", "PYVORIN_BUILD_NUMBER": "12a"}):
        with pytest.raises(RecipeFatal, match="three"):
            version(RecipeData({"DATETIME": "20261203235959", **bad}))
    osrelease = tmp_path / "os-release"
    osrelease.write_text('ID=pyvorin\nVERSION_ID=2026.11\nIMAGE_VERSION=old\n')
    functions["pyvorin_stamp_os_release"](str(osrelease), "pyvorin-image", first)
    assert osrelease.read_text() == f"ID=pyvorin\nVERSION_ID=2026.11\nIMAGE_ID=pyvorin-image\nIMAGE_VERSION={first}\n"
    # and 50-pyvorin reads exactly that field
    select = (LAYER / "dynamic-layers/swupdate/recipes-support/swupdate/files/50-pyvorin").read_text()
    script = select[:select.index("if [ -z")].replace("@NONARCH_LIBDIR@/os-release", str(osrelease))
    out = subprocess.run(["sh", "-c", script + 'printf %s "$pyvorin_version"'], capture_output=True, text=True)
    assert out.stdout == first, out.stderr


@pytest.mark.parametrize("bits", [2048, 4096])
def test_fit_key_check_reads_the_key_size_keys_init_writes(cli, tmp_path: Path, bits: int) -> None:
    """The kernel's FIT key check (linux-raspberrypi-pyvorin-verity.inc) reads the modulus size of
    the key `pyvorin keys init` writes, so a key that does not match FIT_SIGN_ALG stops the build
    before it signs a FIT no device would boot."""
    require("openssl")
    inc = (LAYER / "dynamic-layers/raspberrypi/recipes-kernel/linux/"
                   "linux-raspberrypi-pyvorin-verity.inc").read_text()
    function = re.search(r"^pyvorin_fit_key_bits\(\) \{\n.*?^\}\n", inc, re.M | re.S)
    assert function, "pyvorin_fit_key_bits() not found"
    cli("keys", "init", tmp_path / "keys", "--only", "rpi", "--key-size", str(bits), check=True)

    def key_bits(path: Path) -> str:
        return subprocess.run(["sh", "-c", function.group(0) + 'pyvorin_fit_key_bits "$1"', "sh", str(path)],
                              capture_output=True, text=True, check=True).stdout.strip()

    assert key_bits(tmp_path / "keys/rpi/fit/pyvorin-fit.key") == str(bits)
    # Not an RSA private key (here the public one): nothing, and the check stops the build.
    assert key_bits(tmp_path / "keys/rpi/public.pem") == ""
