"""Install the example release with the real swupdate into file-backed slots.

The shipped spec targets the Raspberry Pi's eMMC/SD partitions
(/dev/mmcblk0p2, /dev/mmcblk0p3).  On a build host those are retargeted to two
slot files and a U-Boot environment file, in a private mount namespace
(tools/devsim: the device's swupdate built from the pinned sources, run
against file-backed slots), then installed twice, as a device would: from
slot A with ``-e stable,copy1``, then from slot B with ``-e stable,copy2``.

    python examples/install_demo.py examples/release.yaml examples/out/keys examples/out/device
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "devsim"))

from pyvorin.cli import pyvorin  # noqa: E402
from pyvorin_devsim.swupdate_sandbox import SwupdateSandbox, swupdate_available  # noqa: E402

DEVICES = {"/dev/mmcblk0p2": "slot_a", "/dev/mmcblk0p3": "slot_b"}


def retarget(spec_path: Path, sandbox: SwupdateSandbox, out: Path) -> Path:
    """The example spec with device paths pointed at the sandbox's slot files."""
    spec = yaml.safe_load(spec_path.read_text())
    base = spec_path.resolve().parent
    for artifact in spec["artifacts"].values():
        artifact["file"] = str(base / artifact["file"])
    for script in spec.get("scripts", []):
        script["file"] = str(base / script["file"])
    for machine in spec["machines"].values():
        for mode in ("copy1", "copy2"):
            install = machine[mode]["install"]
            for name, device in install.items():
                install[name] = str(getattr(sandbox, DEVICES[device]))
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def main(spec: Path, keys: Path, workdir: Path) -> int:
    reason = swupdate_available()
    if reason:
        print(f"skipping the install demo: {reason}")
        return 0
    workdir.mkdir(parents=True, exist_ok=True)
    sandbox = SwupdateSandbox(workdir / "device", slot_size=16 << 20,
                              initial_env={"rootpart": "2", "bootcount": "0", "upgrade_available": "0"})
    on_files = retarget(spec, sandbox, workdir / "release-on-files.yaml")
    swu = workdir / "release-on-files.swu"
    pyvorin(["bundle", str(on_files), "-o", str(swu), "--key", str(keys / "swupdate/signer.key"),
             "--cert", str(keys / "swupdate/signer.crt")])
    rootfs = gzip.decompress((spec.parent / "out/rootfs.ext4.gz").read_bytes())
    ca = keys / "swupdate/ca.crt"
    ok = True
    for select, target, other, rootpart in (("stable,copy1", sandbox.slot_b, sandbox.slot_a, "3"),
                                            ("stable,copy2", sandbox.slot_a, sandbox.slot_b, "2")):
        before_other = sandbox.slot_bytes(other)
        result = sandbox.install(swu, ca, select)
        env = sandbox.printenv()
        written = sandbox.slot_bytes(target)[: len(rootfs)] == rootfs
        kept = sandbox.slot_bytes(other) == before_other
        good = result.succeeded and written and kept and env.get("rootpart") == rootpart
        ok &= good
        print(f"swupdate -e {select}: {'OK' if good else 'FAILED'} — wrote {target.name}: {written}, "
              f"{other.name} unchanged: {kept}, rootpart={env.get('rootpart')} "
              f"upgrade_available={env.get('upgrade_available')} bootcount={env.get('bootcount')}")
        if not good:
            print(result.output, file=sys.stderr)
        sandbox.setenv("upgrade_available", "0")  # what the confirm service does after a healthy boot
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
