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
bitbake -e pyvorin-image >"$out"
value() { sed -n "s/^$1=\"\\(.*\\)\"\$/\\1/p" "$out" | tail -n 1; }
[[ " $(value DISTRO_FEATURES) " == *" pyvorin-verity "* ]] || fail "DISTRO_FEATURES lacks pyvorin-verity"
# meta-security's dm-verity-img makes pyvorin-image's ext4.verity, one hash per ext4 block.
[[ " $(value IMAGE_FSTYPES) " == *" ext4.verity "* ]] || fail "IMAGE_FSTYPES lacks ext4.verity: $(value IMAGE_FSTYPES)"
[ "$(value DM_VERITY_IMAGE_DATA_BLOCK_SIZE)" = 4096 ] || fail "DM_VERITY_IMAGE_DATA_BLOCK_SIZE is not 4096"
[ "$(value INITRAMFS_IMAGE)" = pyvorin-verity-initramfs ] || fail "INITRAMFS_IMAGE is not pyvorin-verity-initramfs"
say "bitbake -e pyvorin-image: IMAGE_FSTYPES has ext4.verity (4096-byte blocks), INITRAMFS_IMAGE=pyvorin-verity-initramfs"

# U-Boot gets the verity fragment after the A/B one (merge order: last wins).
uboot_src=$(bitbake -e virtual/bootloader | sed -n 's/^SRC_URI="\(.*\)"$/\1/p' | tail -n 1)
[[ $uboot_src == *"file://pyvorin-ab.cfg"*"file://pyvorin-verity.cfg"* ]] \
    || fail "virtual/bootloader SRC_URI lacks pyvorin-verity.cfg after pyvorin-ab.cfg: $uboot_src"
say "bitbake -e virtual/bootloader: SRC_URI carries pyvorin-verity.cfg after pyvorin-ab.cfg"

# The initramfs module is no longer skipped (REQUIRED_DISTRO_FEATURES) and its
# runtime dependencies resolve.
bitbake -n initramfs-module-pyvorin-verity >"$out"
say "bitbake -n initramfs-module-pyvorin-verity: ok"
# The initramfs takes the root hash from pyvorin-image's verity conversion.
bitbake -n pyvorin-verity-initramfs >"$out"
grep -q "Running task .*pyvorin-image\.bb:do_image_ext4)" "$out" \
    || fail "bitbake -n pyvorin-verity-initramfs does not run pyvorin-image's do_image_ext4"
say "bitbake -n pyvorin-verity-initramfs: ok, after pyvorin-image's ext4.verity"
bitbake -n pyvorin-image pyvorin-update-image >"$out"
say "bitbake -n pyvorin-image pyvorin-update-image: ok with pyvorin-verity"
