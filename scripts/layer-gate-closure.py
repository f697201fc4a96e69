#!/usr/bin/env python3
"""The packages an image installs, as BitBake resolves them, without building.

Runs inside `kas shell` after `bitbake -g IMAGE` (scripts/layer-gate-checks.sh):

    layer-gate-closure.py IMAGE PN_BUILDLIST OUTPUT

Starts from the image's PACKAGE_INSTALL (IMAGE_INSTALL plus what its features
add) and PACKAGE_INSTALL_ATTEMPTONLY, follows every package's RDEPENDS and,
unless NO_RECOMMENDATIONS is set, RRECOMMENDS minus BAD_RECOMMENDATIONS, the
way the rootfs step asks the package manager to. Each name resolves to the
recipe bitbake chose for it: among its runtime providers, the one in
`bitbake -g`'s pn-buildlist. Dependencies found only when packaging (shared
library and pkg-config dependencies) are not known before a build; they only
add packages, so every name listed here is one the image really installs.

OUTPUT gets one line per package, "package recipe reason", sorted, the reason
being the package (or "image", "image-attempt") whose dependency brought it
first. A name no recipe of the build provides is an error: the rootfs step
would fail on it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def bitbake_lib() -> Path:
    """BitBake's Python library, beside the `bitbake` that kas put on PATH."""
    found = shutil.which("bitbake")
    if not found:
        raise SystemExit("layer-gate-closure: bitbake is not on PATH; run inside `kas shell`")
    return Path(os.path.realpath(found)).parent.parent / "lib"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    image, buildlist_path, output = argv
    sys.path.insert(0, str(bitbake_lib()))
    import bb.tinfoil  # noqa: PLC0415 - only importable once the path is known

    buildlist = set(Path(buildlist_path).read_text().split())
    with bb.tinfoil.Tinfoil() as tinfoil:
        tinfoil.prepare(config_only=False, quiet=2)
        data = tinfoil.parse_recipe(image)
        install = (data.getVar("PACKAGE_INSTALL") or "").split()
        attempt = (data.getVar("PACKAGE_INSTALL_ATTEMPTONLY") or "").split()
        bad = set((data.getVar("BAD_RECOMMENDATIONS") or "").split())
        recommends = data.getVar("NO_RECOMMENDATIONS") != "1"
        cache = tinfoil.cooker.recipecaches[""]
        rundeps, runrecs, pkg_fn, packages = cache.rundeps, cache.runrecs, cache.pkg_fn, cache.packages
        aliases: dict[str, dict[str, list[str]]] = {}

        def provider(name: str) -> str | None:
            """The recipe file bitbake chose for *name*: its best provider, else any in the build list."""
            every, best = tinfoil.get_runtime_providers(name) or ([], None)
            return next((fn for fn in [best, *every] if fn and pkg_fn.get(fn) in buildlist), None)

        def real_packages(name: str, fn: str) -> list[str]:
            """The packages of recipe fn that a dependency on name installs."""
            if fn in packages.get(name, []):
                return [name]
            if fn not in aliases:  # name is an RPROVIDES: which package says so
                recipe = tinfoil.parse_recipe_file(fn)
                aliases[fn] = {}
                for pkg in (recipe.getVar("PACKAGES") or "").split():
                    for alias in (recipe.getVar(f"RPROVIDES:{pkg}") or "").split():
                        aliases[fn].setdefault(alias, []).append(pkg)
            return aliases[fn].get(name, [])

        closure: dict[str, tuple[str, str]] = {}
        queue = [(name, True, "image") for name in install] + [(name, False, "image-attempt") for name in attempt]
        queue.reverse()
        while queue:
            name, required, reason = queue.pop()
            if name in closure:
                continue
            fn = provider(name)
            if fn is None:
                if required:
                    raise SystemExit(f"layer-gate-closure: nothing in the build provides {name!r} (needed by {image})")
                continue  # a recommended or attempt-only package may be missing, as for the package manager
            closure[name] = (pkg_fn[fn], reason)
            for pkg in real_packages(name, fn):
                closure.setdefault(pkg, (pkg_fn[fn], name))
                queue += [(dep, required, pkg) for dep in rundeps[fn].get(pkg, [])]
                if recommends:
                    queue += [(rec, False, pkg) for rec in runrecs[fn].get(pkg, []) if rec not in bad]

    Path(output).write_text("".join(f"{pkg} {pn} {why}\n" for pkg, (pn, why) in sorted(closure.items())))
    print(f"gate: {image}: {len(closure)} packages from {len({pn for pn, _ in closure.values()})} recipes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
