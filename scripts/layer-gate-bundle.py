#!/usr/bin/env python3
"""The update bundle's task, exported with this machine's values for the tests.

Runs inside `kas shell` (scripts/layer-gate-checks.sh; with verified boot
selected, scripts/layer-gate-verity.sh):

    layer-gate-bundle.py OUTPUT

No bundle can be built here: pyvorin-native needs a full native build and
the bundle needs pyvorin-image. Yet the tests must run the bundle class's
own task code, not a transcription of it (tests/test_update_bundle.py), so
``pyvorin-update-image``'s do_deploy is exported as BitBake expands it for
this machine, with every path it names under OUTPUT:

* ``work/``: what the class's Python prefunc ``pyvorin_bundle_write_spec``
  writes, run here: ``release.json`` (the spec, from the slot map, the
  hardware revision, the software set and the image's version),
  ``release-delta.json`` and ``delta-from`` (PYVORIN_DELTA_FROM set to a
  previous release), ``version``;
* ``deploy-images/`` and ``previous/``: the version files that prefunc reads
  (the image's, 2026.11.77, and the previous release's, 2026.11.76), beside
  which the test puts the images and the SBOM;
* ``workdir/``: the recipe's local sources (the Jetson's slot script);
* ``do_deploy.sh`` (signed with ``keys/signer.key`` and ``keys/signer.crt``,
  verified with ``keys/ca.crt``: the test supplies them) and
  ``do_deploy-unsigned.sh`` (PYVORIN_BUNDLE_SIGNING = "unsigned"): do_deploy
  with every function it calls (``bb.data.emit_func``), bundles into
  ``deploy/``;
* ``paths.json``: OUTPUT as the exported files name it, so a test can move
  them, and the image type and (verified boot) FIT the spec names.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

RECIPE = "pyvorin-update-image"
VERSION, PREVIOUS = "2026.11.77", "2026.11.76"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    base = Path(argv[0]).resolve()
    base.mkdir(parents=True)
    import bb.build  # noqa: PLC0415
    import bb.data  # noqa: PLC0415
    import bb.fetch2  # noqa: PLC0415
    import bb.tinfoil  # noqa: PLC0415

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    install = importlib.import_module("layer-gate-install")  # its define_python_functions

    with bb.tinfoil.Tinfoil() as tinfoil:
        tinfoil.prepare(config_only=False, quiet=2)
        d = tinfoil.parse_recipe(RECIPE)
        link = d.getVar("PYVORIN_BUNDLE_IMAGE_LINK")
        fstype = d.getVar("PYVORIN_BUNDLE_FSTYPE")
        # Verified boot: the slot FIT's name in DEPLOY_DIR_IMAGE, where the test puts one.
        fit = d.getVar("PYVORIN_BUNDLE_FIT") or ""
        for name in ("work", "deploy", "deploy-images", "previous", "workdir", "temp", "keys"):
            (base / name).mkdir()
        (base / "deploy-images" / f"{link}.version").write_text(VERSION + "\n")
        (base / "previous" / f"{link}.version").write_text(PREVIOUS + "\n")
        (base / "previous" / f"{link}.{fstype}").touch()  # the test writes the previous image here
        local = [uri for uri in (d.getVar("SRC_URI") or "").split() if uri.startswith("file://")]
        if local:
            bb.fetch2.Fetch(local, d).unpack(str(base / "workdir"))
        values = {
            "WORKDIR": base / "workdir", "B": base / "work", "T": base / "temp", "DEPLOYDIR": base / "deploy",
            "DEPLOY_DIR_IMAGE": base / "deploy-images",
            "PYVORIN_DELTA_FROM": base / "previous" / f"{link}.{fstype}",
            "PYVORIN_SIGNING_KEY": base / "keys/signer.key", "PYVORIN_SIGNING_CERT": base / "keys/signer.crt",
            "PYVORIN_SWUPDATE_CA_CERT": base / "keys/ca.crt",
        }
        for name, value in values.items():
            d.setVar(name, str(value))
        install.define_python_functions(d)
        os.chdir(base / "work")
        bb.build.exec_func("pyvorin_bundle_write_spec", d)
        for signing, script_name in (("cms", "do_deploy.sh"), ("unsigned", "do_deploy-unsigned.sh")):
            d.setVar("PYVORIN_BUNDLE_SIGNING", signing)
            with open(base / script_name, "w") as script:
                script.write("#!/bin/bash\n")
                bb.data.emit_func("do_deploy", script, d)
    written = sorted(p.name for p in (base / "work").iterdir())
    if written != ["delta-from", "release-delta.json", "release.json", "version"]:
        raise SystemExit(f"layer-gate-bundle: pyvorin_bundle_write_spec wrote {written}")
    (base / "paths.json").write_text(json.dumps({"base": str(base), "image_link": link, "fstype": fstype,
                                                 "fit": fit, "version": VERSION, "previous": PREVIOUS}) + "\n")
    print(f"gate: bundle task of {RECIPE} exported (spec {VERSION}, delta from {PREVIOUS})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
