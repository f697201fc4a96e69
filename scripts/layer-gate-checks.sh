#!/bin/bash
# Runs inside `kas shell` for one machine (called by scripts/layer-gate.py):
# parse, check the image's configuration, dry-run the image and the bundle.
set -euo pipefail

say() { echo "gate: $*"; }

bitbake -p
say "bitbake -p: parsed"

env_dump=$(mktemp)
dry_run=""
trap 'rm -f "$env_dump" $dry_run' EXIT
bitbake -e pyvorin-image > "$env_dump"
value() { sed -n "s/^$1=\"\\(.*\\)\"\$/\\1/p" "$env_dump" | tail -n 1; }

image_features=" $(value IMAGE_FEATURES) "
distro_features=" $(value DISTRO_FEATURES) "
for want in read-only-rootfs overlayfs-etc; do
    [[ $image_features == *" $want "* ]] || { echo "IMAGE_FEATURES lacks $want: $image_features"; exit 1; }
done
for bad in debug-tweaks empty-root-password allow-empty-password allow-root-login tools-debug dev-pkgs dbg-pkgs package-management; do
    [[ $image_features != *" $bad "* ]] || { echo "IMAGE_FEATURES has $bad: $image_features"; exit 1; }
done
for want in systemd usrmerge pam seccomp apparmor pyvorin-update pyvorin-hardening; do
    [[ $distro_features == *" $want "* ]] || { echo "DISTRO_FEATURES lacks $want: $distro_features"; exit 1; }
done
[[ $distro_features != *'${'* ]] || { echo "DISTRO_FEATURES has an unexpanded variable: $distro_features"; exit 1; }
[ "$(value DISTRO)" = pyvorin ] || { echo "DISTRO is not pyvorin"; exit 1; }
say "bitbake -e pyvorin-image: IMAGE_FEATURES=[${image_features# }] DISTRO_FEATURES ok"

# Every image type once, and only the ones a release uses.
fstypes=$(value IMAGE_FSTYPES)
duplicates=$(tr ' ' '\n' <<<"$fstypes" | sed '/^$/d' | sort | uniq -d | tr '\n' ' ')
[ -z "$duplicates" ] || { echo "IMAGE_FSTYPES lists twice: $duplicates($fstypes)"; exit 1; }
for bad in ext3 tar.bz2; do
    [[ " $fstypes " != *" $bad "* ]] || { echo "IMAGE_FSTYPES builds $bad: $fstypes"; exit 1; }
done
[[ " $fstypes " == *" ext4.gz "* ]] || { echo "IMAGE_FSTYPES lacks ext4.gz (the bundle's root file system): $fstypes"; exit 1; }
say "bitbake -e pyvorin-image: IMAGE_FSTYPES=[$fstypes]"

# The image's SBOM: oe-core's create-spdx (on by default since 4.2; a distro
# or local.conf can drop it from INHERIT_DISTRO) combines the image's SPDX
# documents into <image>.spdx.tar.zst, which a release spec's 'sbom' takes.
[[ " $(value INHERIT) " == *" create-spdx "* ]] || { echo "INHERIT lacks create-spdx: no SBOM for the bundle"; exit 1; }
[[ " $(value ROOTFS_POSTUNINSTALL_COMMAND) " == *"image_combine_spdx"* ]] \
    || { echo "ROOTFS_POSTUNINSTALL_COMMAND lacks image_combine_spdx: no <image>.spdx.tar.zst"; exit 1; }
say "bitbake -e pyvorin-image: create-spdx deploys $(value IMAGE_LINK_NAME).spdx.tar.zst"

# Raspberry Pi A/B: the kernel travels in the root slot, not on the FAT.
machineoverrides=":$(value MACHINEOVERRIDES):"
if [[ $machineoverrides == *":rpi:"* ]]; then
    kernel_type=$(value KERNEL_IMAGETYPE)
    [[ " $(value IMAGE_INSTALL) " == *" kernel-image "* ]] || { echo "rpi: IMAGE_INSTALL lacks kernel-image"; exit 1; }
    for item in $(value IMAGE_BOOT_FILES); do
        [ "$item" != "$kernel_type" ] || { echo "rpi: IMAGE_BOOT_FILES still carries $kernel_type"; exit 1; }
    done
    say "bitbake -e pyvorin-image: kernel-image in the root slot, $kernel_type not in IMAGE_BOOT_FILES"
fi

# The hardening fragments reach the machine's kernel recipe.
kernel_src=$(bitbake -e virtual/kernel | sed -n 's/^SRC_URI="\(.*\)"$/\1/p' | tail -n 1)
for fragment in pyvorin-hardening.scc; do
    [[ $kernel_src == *"$fragment"* ]] || { echo "virtual/kernel SRC_URI lacks $fragment"; exit 1; }
done
say "bitbake -e virtual/kernel: SRC_URI carries the pyvorin hardening fragments"

dry_run=$(mktemp)
bitbake -n pyvorin-image pyvorin-update-image | tee "$dry_run"
# The one bundle path: the release tool, built natively, makes the bundle.
# Its delta codec comes from the layer's python3-bsdiff4 (PYVORIN_DELTA_FROM).
for task in 'pyvorin-native_[0-9.]*\.bb:do_populate_sysroot' 'python3-bsdiff4_[0-9.]*\.bb:do_populate_sysroot' \
        'pyvorin-update-image\.bb:do_deploy'; do
    grep -q "Running task .*$task)" "$dry_run" || { echo "bitbake -n pyvorin-update-image runs no $task"; exit 1; }
done
say "bitbake -n pyvorin-image pyvorin-update-image: ok, pyvorin-native makes the bundle"

# What the image installs, for the content check (tests/test_layer_gate.py
# compares it with tests/image-contents/<machine>.txt): the recipes bitbake
# builds for it and the packages its rootfs step asks for.
out="${BUILDDIR:-$PWD}/gate-out"
rm -rf "$out"
mkdir -p "$out"
bitbake -g pyvorin-image >/dev/null
mv pn-buildlist task-depends.dot "$out/"
say "bitbake -g pyvorin-image: $(wc -l < "$out/pn-buildlist") recipes"
"$(dirname "$0")/layer-gate-closure.py" pyvorin-image "$out/pn-buildlist" "$out/packages.txt"

# The release spec the bundle class writes from this machine's variables, and
# the slot map it should follow (the update image's view), for tests/test_update_bundle.py, which
# bundles and installs it with the device's swupdate.
bitbake -e pyvorin-update-image > "$env_dump"
# bitbake -e writes VAR="value" with each " escaped; the spec is one line of JSON.
value PYVORIN_BUNDLE_SPEC | sed 's/\\"/"/g' > "$out/bundle-spec.json"
for variable in PYVORIN_SLOT_A_DEVICE PYVORIN_SLOT_B_DEVICE PYVORIN_DATA_DEVICE PYVORIN_BOOT_DEVICE \
        PYVORIN_SLOT_A_PART PYVORIN_SLOT_B_PART PYVORIN_HW_REVISION PYVORIN_SOFTWARE_SET; do
    printf '%s=%s\n' "$variable" "$(value "$variable")"
done > "$out/slot-map.txt"
say "bitbake -e pyvorin-update-image: PYVORIN_BUNDLE_SPEC, $(wc -c < "$out/bundle-spec.json") bytes"
# ... and the bundle task itself, with its prefunc's output, for the same test.
"$(dirname "$0")/layer-gate-bundle.py" "$out/bundle"

# The Raspberry Pi's runtime content, exported for the booted-device test
# (tests/qemu/system.py): each recipe's install code as BitBake expands it for
# this machine, and the image's rootfs steps. The QEMU board boots the Pi's
# U-Boot path, so only the Pi is exported, with the QEMU board's disk names
# (virtio /dev/vda where the Pi has /dev/mmcblk0), as its machine file would set them,
# and built for a rollout server (the test's, on the host: tests/qemu/booted.py),
# as a fleet's site configuration would set it.
if [[ $machineoverrides == *":rpi:"* ]]; then
    board=(--set PYVORIN_SLOT_A_DEVICE=/dev/vda2 --set PYVORIN_SLOT_B_DEVICE=/dev/vda3
           --set PYVORIN_DATA_DEVICE=/dev/vda4 --set PYVORIN_BOOT_DEVICE=/dev/vda1
           --set PYVORIN_FW_MGMT_SUBNETS=10.0.2.2/32 --set PYVORIN_FLEET_URL=https://fleet.pyvorin.test)
    # Other layers' recipes the stand-in takes from their install code; the
    # layer's own recipes in the image follow them, found by --layer.
    recipes="base-files volatile-binds systemd-conf systemd:sources audit:sources u-boot:postfuncs bsdiff swupdate"
    # shellcheck disable=SC2086 # one word per recipe
    "$(dirname "$0")/layer-gate-install.py" "${board[@]}" --layer "$(dirname "$0")/../meta-pyvorin" \
        "$out/packages.txt" "$out/install" pyvorin-image $recipes
fi
