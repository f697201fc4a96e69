#!/usr/bin/env python3
"""What the image's own recipes install, exported for the booted-device test.

Runs inside `kas shell` after layer-gate-closure.py (scripts/layer-gate-checks.sh):

    layer-gate-install.py [--set VAR=VALUE]... [--layer DIR] PACKAGES_TXT OUTPUT IMAGE RECIPE[:postfuncs]...

No recipe can be built here (nothing upstream can be fetched), yet the QEMU
test must boot the layer's runtime content installed exactly as the recipes
install it. So the recipes' own install code is exported, expanded by BitBake
for this machine, to be run later in the test's arm64 root file system
(tests/qemu/system.py): nothing is transcribed, so the stand-in cannot drift
from the layer. For each RECIPE, OUTPUT/<recipe>/ gets:

* ``workdir/``: the recipe's local (file://) sources, unpacked by BitBake's
  fetcher as do_unpack unpacks them;
* ``do_install.sh``: a shell do_install with every function it calls
  (``bb.data.emit_func``), WORKDIR expanded as ``/tmp/pyvorin-install/<recipe>``
  (where the test puts workdir/ inside the root file system) and D as
  ``${WORKDIR}/image``; or ``image/``: a Python do_install, run here;
* ``recipe.json``: for a python_pep517 recipe the installer scheme its
  wheel goes into (``python_scheme``); per package, in PACKAGES order, its FILES, whether the
  image installs it (PACKAGES_TXT, from layer-gate-closure.py), its
  SYSTEMD_SERVICE and SYSTEMD_AUTO_ENABLE and its useradd/groupadd
  parameters: what packaging and the rootfs step do with the installed files.

``RECIPE:sources`` exports the sources and install code of a recipe whose
package Debian stands in for, without the packages (the test takes single
files from it, as that install code places them).
``RECIPE:postfuncs`` exports only do_install's postfuncs (a layer's additions
to a recipe whose own install needs its build, as u-boot's fw_env.config).
``--layer DIR`` adds, after the RECIPEs named, every recipe of the layer in
DIR that the image installs a package of (PACKAGES_TXT), packagegroups
aside: a recipe the layer adds to the image is exported without anyone
listing it (a hand-kept list once left the device identity out).
``--set`` gives a variable the value of the board the test boots (the QEMU
board's disk is /dev/vda where the Pi's is /dev/mmcblk0), as a machine
configuration would; it applies to every recipe and the image.

For IMAGE, OUTPUT/image/ gets the shell steps of its ROOTFS_POSTPROCESS_COMMAND
the stand-in needs (``rootfs-postprocess.sh``, IMAGE_ROOTFS being
``$PYVORIN_ROOTFS`` at run time), oe-core's overlayfs-etc preinit template and
``image.json`` with the values that fill it, as create_overlayfs_etc_preinit
does.

The CA certificate and AES key a recipe installs are named
``${WORKDIR}/pyvorin-ca.crt`` and ``${WORKDIR}/pyvorin-aes.key``, the fleet CA
``${WORKDIR}/pyvorin-fleet-ca.crt``: the test supplies the keys its bundles are
signed with and its device certificates are issued by. ``${PYTHON}`` is the target's
python3 (the bytecode is compiled for the interpreter that runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

TARGET_WORKDIR = "/tmp/pyvorin-install"


def bitbake_lib() -> Path:
    found = shutil.which("bitbake")
    if not found:
        raise SystemExit("layer-gate-install: bitbake is not on PATH; run inside `kas shell`")
    return Path(os.path.realpath(found)).parent.parent / "lib"


def layer_recipes(tinfoil: object, layer: Path, image_recipes: list[str], named: set[str]) -> list[str]:
    """The recipes of ``layer`` among ``image_recipes`` not ``named`` already, packagegroups aside."""
    found = []
    for pn in image_recipes:
        if pn in named:
            continue
        recipe_file = Path(tinfoil.get_recipe_file(pn))  # type: ignore[attr-defined]
        if layer not in recipe_file.resolve().parents or recipe_file.name.startswith("packagegroup-"):
            continue
        found.append(pn)
    return found


def main(argv: list[str]) -> int:
    settings: dict[str, str] = {}
    layer: Path | None = None
    while argv[:1] in (["--set"], ["--layer"]) and len(argv) > 1:
        if argv[0] == "--layer":
            layer = Path(argv[1]).resolve()
        else:
            name, eq, value = argv[1].partition("=")
            if not eq:
                raise SystemExit(f"layer-gate-install: --set {argv[1]}: VAR=VALUE")
            settings[name] = value
        argv = argv[2:]
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    packages_txt, output, image, recipes = Path(argv[0]), Path(argv[1]).resolve(), argv[2], argv[3:]
    sys.path.insert(0, str(bitbake_lib()))
    import bb.build  # noqa: PLC0415 - only importable once the path is known
    import bb.data  # noqa: PLC0415
    import bb.fetch2  # noqa: PLC0415
    import bb.tinfoil  # noqa: PLC0415

    lines = [line.split() for line in packages_txt.read_text().splitlines() if line.strip()]
    installed = {fields[0] for fields in lines}
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    with bb.tinfoil.Tinfoil() as tinfoil:
        tinfoil.prepare(config_only=False, quiet=2)
        if layer is not None:
            recipes = recipes + layer_recipes(tinfoil, layer, sorted({fields[1] for fields in lines}),
                                              {spec.partition(":")[0] for spec in recipes})
        for spec in recipes:
            pn, _, part = spec.partition(":")
            if part not in ("", "postfuncs", "sources"):
                raise SystemExit(f"layer-gate-install: {spec}: only RECIPE, RECIPE:postfuncs or RECIPE:sources")
            d = tinfoil.parse_recipe(pn)
            board(d, settings)
            out = output / pn
            workdir = out / "workdir"
            workdir.mkdir(parents=True)
            # Unpack the local sources with BitBake's own fetcher, into our workdir.
            local = [uri for uri in (d.getVar("SRC_URI") or "").split() if uri.startswith("file://")]
            if local:
                fetcher = bb.fetch2.Fetch(local, d)
                fetcher.unpack(str(workdir))
            d.setVar("WORKDIR", f"{TARGET_WORKDIR}/{pn}")
            d.setVar("D", "${WORKDIR}/image")
            d.setVar("PYTHON", "python3")
            d.setVar("PYVORIN_SWUPDATE_CA_CERT", "${WORKDIR}/pyvorin-ca.crt")
            if d.getVar("PYVORIN_SWUPDATE_AES_KEY"):
                d.setVar("PYVORIN_SWUPDATE_AES_KEY", "${WORKDIR}/pyvorin-aes.key")
            if d.getVar("PYVORIN_FLEET_CA_CERT"):
                d.setVar("PYVORIN_FLEET_CA_CERT", "${WORKDIR}/pyvorin-fleet-ca.crt")
            if part == "postfuncs":
                # Only the layer's postfuncs, as the body of an install of their own.
                funcs = (d.getVarFlag("do_install", "postfuncs") or "").split()
                if not funcs:
                    raise SystemExit(f"layer-gate-install: {pn} has no do_install postfuncs")
                d.setVar("do_install", "\n".join(funcs) + "\n")
                d.setVarFlag("do_install", "python", None)
                d.setVarFlag("do_compile", "noexec", "1")
            if part != "sources" and not d.getVarFlag("do_compile", "noexec") and (d.getVar("do_compile") or "").strip():
                if d.getVarFlag("do_compile", "python"):
                    raise SystemExit(f"layer-gate-install: {pn}: a Python do_compile cannot be exported")
                with open(out / "do_compile.sh", "w") as script:
                    script.write("#!/bin/bash\n")
                    bb.data.emit_func("do_compile", script, d)
            if d.getVarFlag("do_install", "python"):
                # A Python do_install writes files only (no owners): run it here.
                installed_dir = out / "image"
                installed_dir.mkdir()
                d.setVar("WORKDIR", str(workdir))
                d.setVar("D", str(installed_dir))
                define_python_functions(d)
                bb.build.exec_func("do_install", d)
            else:
                with open(out / "do_install.sh", "w") as script:
                    script.write("#!/bin/bash\n")
                    bb.data.emit_func("do_install", script, d)
            info = {"recipe": pn, "S": d.getVar("S"), "B": d.getVar("B"), "D": d.getVar("D"),
                    "sources_only": part == "sources",
                    "install_dir": d.getVarFlag("do_install", "dirs", expand=True) or d.getVar("B"),
                    "compile_dir": d.getVarFlag("do_compile", "dirs", expand=True) or d.getVar("B"),
                    "packages": []}
            if bb.data.inherits_class("python_pep517", d):
                # Where the recipe's wheel goes: python3-native's target sysconfig
                # (python3targetconfig) as BitBake expands it here.
                info["python_scheme"] = {"purelib": d.getVar("PYTHON_SITEPACKAGES_DIR"),
                                         "platlib": d.getVar("PYTHON_SITEPACKAGES_DIR"),
                                         "scripts": d.getVar("bindir"), "data": d.getVar("prefix"),
                                         "headers": d.expand("${includedir}/${PYTHON_DIR}/${PN}")}
            for pkg in (d.getVar("PACKAGES") or "").split():
                info["packages"].append({
                    "name": pkg,
                    "installed": pkg in installed,
                    "files": (d.getVar(f"FILES:{pkg}") or "").split(),
                    "systemd_services": (d.getVar(f"SYSTEMD_SERVICE:{pkg}") or "").split()
                    if pkg in (d.getVar("SYSTEMD_PACKAGES") or "").split() else [],
                    "systemd_auto_enable": d.getVar(f"SYSTEMD_AUTO_ENABLE:{pkg}") or d.getVar("SYSTEMD_AUTO_ENABLE"),
                    "useradd": [p.strip() for p in (d.getVar(f"USERADD_PARAM:{pkg}") or "").split(";") if p.strip()]
                    if pkg in (d.getVar("USERADD_PACKAGES") or "").split() else [],
                    "groupadd": [p.strip() for p in (d.getVar(f"GROUPADD_PARAM:{pkg}") or "").split(";") if p.strip()]
                    if pkg in (d.getVar("USERADD_PACKAGES") or "").split() else [],
                })
            (out / "recipe.json").write_text(json.dumps(info, indent=1) + "\n")
            print(f"gate: install of {pn} exported ({sum(p['installed'] for p in info['packages'])} packages installed)")
        d = tinfoil.parse_recipe(image)
        board(d, settings)
        export_image(d, output / "image")
    (output / "recipes").write_text("".join(f"{spec.partition(':')[0]}\n" for spec in recipes))
    return 0


def define_python_functions(d) -> None:
    """The recipe's ``def`` functions, where its Python tasks find them.

    BitBake defines them while a worker parses the recipe; tinfoil's client
    only has them as variables (flags ``func`` and ``python``)."""
    import bb.methodpool  # noqa: PLC0415

    for name in d.keys():
        if not (d.getVarFlag(name, "func") and d.getVarFlag(name, "python")):
            continue
        text = d.getVar(name, False) or ""
        if text.startswith("def "):
            bb.methodpool.insert_method(d.getVar("PN"), text, d.getVarFlag(name, "filename") or name,
                                        int(d.getVarFlag(name, "lineno") or 0))


def board(d, settings: dict[str, str]) -> None:
    """Give each variable its board value, dropping the machine-override variants that would win."""
    for name, value in settings.items():
        for key in [k for k in d.keys() if k.startswith(name + ":")]:
            d.delVar(key)
        d.setVar(name, value)
        if d.getVar(name) != value:
            raise SystemExit(f"layer-gate-install: {name} stays {d.getVar(name)!r}, not {value!r}")


#: Shell steps of ROOTFS_POSTPROCESS_COMMAND that shape a read-only systemd root.
POSTPROCESS = ("read_only_rootfs_hook", "set_systemd_default_target", "empty_var_volatile", "pyvorin_boot_fstab")
#: What create_overlayfs_etc_preinit (oe-core overlayfs-etc.bbclass) reads.
OVERLAYFS_VARS = ("OVERLAYFS_ETC_MOUNT_POINT", "OVERLAYFS_ETC_MOUNT_OPTIONS", "OVERLAYFS_ETC_FSTYPE",
                  "OVERLAYFS_ETC_DEVICE", "OVERLAYFS_ETC_USE_ORIG_INIT_NAME", "OVERLAYFS_ETC_EXPOSE_LOWER",
                  "OVERLAYFS_ETC_CREATE_MOUNT_DIRS", "base_sbindir")


def export_image(d, out: Path) -> None:
    import bb.data  # noqa: PLC0415

    out.mkdir()
    commands = (d.getVar("ROOTFS_POSTPROCESS_COMMAND") or "").replace(";", " ").split()
    missing = [step for step in POSTPROCESS if step not in commands]
    if missing:
        raise SystemExit(f"layer-gate-install: ROOTFS_POSTPROCESS_COMMAND lacks {missing}: {commands}")
    d.setVar("IMAGE_ROOTFS", "$PYVORIN_ROOTFS")
    with open(out / "rootfs-postprocess.sh", "w") as script:
        script.write("#!/bin/bash\n")
        for step in POSTPROCESS:
            bb.data.emit_func(step, script, d)
    features = (d.getVar("IMAGE_FEATURES") or "").split()
    info = {"image": d.getVar("PN"), "features": features, "postprocess": list(POSTPROCESS),
            "rootfs_postprocess_command": commands,
            "overlayfs": {name: d.getVar(name) for name in OVERLAYFS_VARS},
            "ext4_options": d.getVar("EXTRA_IMAGECMD:ext4") or "",
            # How the flashed image is laid out: the wks as image_types_wic expands it, and the
            # ext4 (with the types it must come after) its rawcopy partition names.
            "wks": d.getVar("_WKS_TEMPLATE") or "",
            "ext4_link": d.expand("${IMGDEPLOYDIR}/${IMAGE_LINK_NAME}.ext4"),
            "wic_typedep": (d.getVar("IMAGE_TYPEDEP:wic") or "").split(),
            "fstypes": (d.getVar("IMAGE_FSTYPES") or "").split()}
    if "overlayfs-etc" in features:
        shutil.copy(d.getVar("OVERLAYFS_ETC_INIT_TEMPLATE"), out / "overlayfs-etc-preinit.sh.in")
    (out / "image.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"gate: rootfs steps of {d.getVar('PN')} exported")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
