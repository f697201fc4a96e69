#!/bin/bash
# Runs inside `kas shell` with kas/opt/verity.yml added (called by
# scripts/layer-gate.py): verified boot parses and reaches U-Boot and the
# initramfs module on the Raspberry Pi, and is refused, in one clear line, on
# every other machine (the Jetson plan in docs/verified-boot.md is not built).
#   layer-gate-verity.sh parses|refused
set -euo pipefail

say() { echo "gate: verity: $*"; }
fail() { echo "layer-gate-verity: $*"; exit 1; }

out=$(mktemp)
trap 'rm -f "$out"' EXIT
refusal="pyvorin: DISTRO_FEATURES pyvorin-verity is built for the Raspberry Pi only"
case "${1:-}" in
refused)
    if bitbake -p >"$out" 2>&1; then
        fail "pyvorin-verity parsed on a machine it is not built for"
    fi
    grep -q "$refusal" "$out" || { tail -n 20 "$out"; fail "bitbake failed, but not with the verity refusal"; }
    say "refused: $(grep -o "$refusal.*" "$out" | head -n 1)"
    exit 0
    ;;
parses) ;;
*) fail "usage: layer-gate-verity.sh parses|refused" ;;
esac

bitbake -p
say "bitbake -p: parsed with pyvorin-verity"
distro_features=" $(bitbake -e pyvorin-image | sed -n 's/^DISTRO_FEATURES="\(.*\)"$/\1/p' | tail -n 1) "
[[ $distro_features == *" pyvorin-verity "* ]] || fail "DISTRO_FEATURES lacks pyvorin-verity: $distro_features"

# U-Boot gets the verity fragment after the A/B one (merge order: last wins).
uboot_src=$(bitbake -e virtual/bootloader | sed -n 's/^SRC_URI="\(.*\)"$/\1/p' | tail -n 1)
[[ $uboot_src == *"file://pyvorin-ab.cfg"*"file://pyvorin-verity.cfg"* ]] \
    || fail "virtual/bootloader SRC_URI lacks pyvorin-verity.cfg after pyvorin-ab.cfg: $uboot_src"
say "bitbake -e virtual/bootloader: SRC_URI carries pyvorin-verity.cfg after pyvorin-ab.cfg"

# The initramfs module is no longer skipped (REQUIRED_DISTRO_FEATURES) and its
# runtime dependencies resolve.
bitbake -n initramfs-module-pyvorin-verity >"$out"
say "bitbake -n initramfs-module-pyvorin-verity: ok"
bitbake -n pyvorin-image pyvorin-update-image >"$out"
say "bitbake -n pyvorin-image pyvorin-update-image: ok with pyvorin-verity"
