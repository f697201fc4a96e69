#!/bin/bash
# Runs inside `kas shell` with kas/opt/verity.yml added (called by
# scripts/layer-gate.py): on the Raspberry Pi verified boot parses, and every
# link of the chain is in the parsed build and its dry run (U-Boot's
# fragment, the signed FIT, the control device trees, the initramfs and its
# module, the slot image, the wic, the bundle, whose task is exported for
# tests/test_update_bundle.py); on every other machine it is refused in one
# clear line (the Jetson plan in docs/verified-boot.md is not built).
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

# The slot's FIT: linux-raspberrypi also builds fitImage, signed per
# configuration with the FIT key, the Image at a 2 MiB boundary.
bitbake -e virtual/kernel >"$out"
[[ " $(value KERNEL_IMAGETYPES) " == *" fitImage "* ]] || fail "KERNEL_IMAGETYPES lacks fitImage: $(value KERNEL_IMAGETYPES)"
[[ " $(value KERNEL_CLASSES) " == *" kernel-fitimage "* ]] || fail "KERNEL_CLASSES lacks kernel-fitimage"
[ "$(value UBOOT_SIGN_ENABLE)" = 1 ] || fail "UBOOT_SIGN_ENABLE is not 1 for the kernel"
[ "$(value FIT_SIGN_INDIVIDUAL)" = 0 ] || fail "FIT_SIGN_INDIVIDUAL is not 0"
[ "$(value FIT_GENERATE_KEYS)" = 0 ] || fail "FIT_GENERATE_KEYS is not 0"
[ "$(value UBOOT_SIGN_KEYNAME)" = pyvorin-fit ] || fail "UBOOT_SIGN_KEYNAME is not pyvorin-fit"
[[ "$(value UBOOT_SIGN_KEYDIR)" == */rpi/fit ]] || fail "UBOOT_SIGN_KEYDIR is not the keys' rpi/fit: $(value UBOOT_SIGN_KEYDIR)"
[ "$(value UBOOT_LOADADDRESS)" = 0x00200000 ] || fail "UBOOT_LOADADDRESS is $(value UBOOT_LOADADDRESS), not 2 MiB"
[[ $(value SRC_URI) == *"file://pyvorin-verity.cfg"* ]] || fail "the kernel's SRC_URI lacks pyvorin-verity.cfg"
say "bitbake -e virtual/kernel: fitImage signed by $(value UBOOT_SIGN_KEYNAME) ($(value FIT_HASH_ALG),$(value FIT_SIGN_ALG), configurations), load address $(value UBOOT_LOADADDRESS), default $(value FIT_CONF_DEFAULT_DTB)"

# The boot partition: control device trees in place of the plain ones, no
# boot.scr, no kernel; slot A is the whole slot image.
bitbake -e pyvorin-image >"$out"
boot_files=" $(value IMAGE_BOOT_FILES) "
[[ $boot_files == *" pyvorin-control/bcm"*".dtb;bcm"* ]] || fail "IMAGE_BOOT_FILES has no control device tree: $boot_files"
[[ $boot_files != *" boot.scr "* ]] || fail "IMAGE_BOOT_FILES still has boot.scr"
for word in $boot_files; do
    case "$word" in bcm*.dtb) fail "IMAGE_BOOT_FILES keeps the plain $word" ;; esac
done
[ "$(value PYVORIN_SLOT_IMAGE_TYPE)" = pyvorin-slot ] || fail "PYVORIN_SLOT_IMAGE_TYPE is not pyvorin-slot"
[[ " $(value IMAGE_INSTALL) " != *" kernel-image "* ]] || fail "the root file system still installs kernel-image"
say "bitbake -e pyvorin-image: boot files $(tr ' ' '\n' <<<"$boot_files" | grep -c '^pyvorin-control/') control device trees, no boot.scr; slot A from pyvorin-slot; no kernel in the root"

# The boot logic the first board's control device tree carries, for the
# tests (tests/test_layer_gate.py checks it like the QEMU board's).
bitbake-getvar -r pyvorin-control-dtb --value PYVORIN_VERITY_BOOTCMD >"$out"
grep -q '@@' "$out" && fail "the Pi's boot logic has unfilled words: $(grep -o '@@[A-Z_]*@@' "$out" | sort -u | tr '\n' ' ')"
sed 's/^/gate: verity: bootcmd| /' "$out"
# The bundle writes the verity image and, into the window, the FIT.
bitbake-getvar -r pyvorin-update-image --value PYVORIN_BUNDLE_SPEC >"$out"
echo "gate: verity: bundle spec| $(cat "$out")"
# ... and the bundle task with verified boot's spec, for tests/test_update_bundle.py, which
# runs it on a verity image and a FIT and installs the result with the device's swupdate.
export_dir="${BUILDDIR:-$PWD}/gate-out"
rm -rf "$export_dir"
mkdir -p "$export_dir"
"$(dirname "$0")/layer-gate-bundle.py" "$export_dir/bundle" >/dev/null
say "bundle task exported with the verity image and the FIT"

bitbake -n pyvorin-image pyvorin-update-image >"$out"
for task in "linux-raspberrypi_.*do_assemble_fitimage_initramfs" "pyvorin-control-dtb_1.0.bb:do_deploy" \
            "pyvorin-image.bb:do_image_pyvorin_slot" "pyvorin-image.bb:do_image_wic" "pyvorin-update-image.bb:do_deploy"; do
    grep -q "Running task .*$task)" "$out" || fail "bitbake -n pyvorin-image pyvorin-update-image does not run $task"
done
say "bitbake -n pyvorin-image pyvorin-update-image: ok with pyvorin-verity (FIT, control device trees, slot image, wic, bundle)"
