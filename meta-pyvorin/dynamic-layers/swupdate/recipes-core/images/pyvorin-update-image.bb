# nooelint: oelint.file.underscores - the bundle carries the image's version, not its own
SUMMARY = "Signed SWUpdate bundle of pyvorin-image"
DESCRIPTION = "The OTA update for the running machine: the compressed root \
               file system for the inactive slot, the boot environment \
               switch, and the image's SBOM, made by pyvorin-native."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "images"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# Jetson: the post-install step that switches the UEFI rootfs slot (files/tegra/).
SRC_URI:append:tegra = " file://pyvorin-tegra-slot.sh"

# The slot map (pyvorin-slots.inc) knows these board families.
COMPATIBLE_MACHINE = "(rpi|tegra)"

inherit pyvorin_bundle

PYVORIN_BUNDLE_IMAGE = "pyvorin-image"

# Raspberry Pi: U-Boot boots ${rootpart}; the new slot boots on trial
# (upgrade_available) until pyvorin-confirm clears it, and a slot that fails
# bootlimit boots falls back (boot.cmd.in, docs/rollback.md).
PYVORIN_BUNDLE_BOOTENV:rpi = "upgrade_available=1 bootcount=0"
PYVORIN_BUNDLE_BOOTENV_SLOT_A:rpi = "rootpart=${PYVORIN_SLOT_A_PART}"
PYVORIN_BUNDLE_BOOTENV_SLOT_B:rpi = "rootpart=${PYVORIN_SLOT_B_PART}"

# Verified boot on the Pi (pyvorin-verity.inc): the verity image from the
# slot's first byte and the slot's signed FIT in its window at the end.
PYVORIN_BUNDLE_FSTYPE:rpi = "${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-verity', 'ext4.verity.gz', 'ext4.gz', d)}"
# (Read with getVar: both exist only with the feature, and BitBake does not
# run inline Python that names an undefined variable.)
PYVORIN_BUNDLE_FIT:rpi = "${@d.getVar('PYVORIN_VERITY_FIT') if bb.utils.contains('DISTRO_FEATURES', 'pyvorin-verity', True, False, d) else ''}"
PYVORIN_BUNDLE_FIT_OFFSET:rpi = "${@d.getVar('PYVORIN_FIT_OFFSET') if bb.utils.contains('DISTRO_FEATURES', 'pyvorin-verity', True, False, d) else ''}"

# Jetson: UEFI's variables pick the slot; the script sets them with nvbootctrl.
PYVORIN_BUNDLE_SCRIPTS:tegra = "pyvorin-tegra-slot.sh:postinstall"
