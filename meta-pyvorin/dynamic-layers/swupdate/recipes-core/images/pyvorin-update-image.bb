# nooelint: oelint.file.underscores - image recipes carry no version
SUMMARY = "Signed SWUpdate bundle of pyvorin-image"
DESCRIPTION = "The OTA update for the running machine: the compressed root \
               file system for the inactive slot, and the boot environment switch."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "images"
LICENSE = "MIT"

SRC_URI = "file://sw-description"
# Jetson: the post-install step that switches the UEFI rootfs slot.
SRC_URI:append:tegra = " file://pyvorin-tegra-slot.sh"

# sw-description names the slots of a board family (files/<rpi|tegra>/).
COMPATIBLE_MACHINE = "(rpi|tegra)"

inherit swupdate

IMAGE_DEPENDS = "pyvorin-image"
SWUPDATE_IMAGES = "pyvorin-image"
SWUPDATE_IMAGES_FSTYPES[pyvorin-image] = ".rootfs.ext4.gz"
SWUPDATE_IMAGES_NOAPPEND_MACHINE[pyvorin-image] = "0"

# Filled into sw-description (@@VAR@@) by meta-swupdate.
PYVORIN_BUNDLE_ROOTFS = "pyvorin-image-${MACHINE}.rootfs.ext4.gz"

# sw-description's version is the one pyvorin-image stamped into its
# os-release (IMAGE_VERSION), read from the deployed image when the bundle is
# made: the device compares the two with -N/-R.
PYVORIN_VERSION = ""
python pyvorin_bundle_version () {
    path = d.expand('${DEPLOY_DIR_IMAGE}/pyvorin-image-${MACHINE}.rootfs.version')
    try:
        with open(path) as handle:
            version = handle.read().strip()
    except OSError as exc:
        bb.fatal("pyvorin-update-image: cannot read the image's release version: %s" % exc)
    d.setVar('PYVORIN_VERSION', version)
}
pyvorin_bundle_version[doc] = "Sets PYVORIN_VERSION from the release version pyvorin-image deployed"
do_swuimage[prefuncs] += "pyvorin_bundle_version"

# CMS, as SWUpdate verifies it with the CA certificate of PYVORIN_SWUPDATE_CA_CERT.
# SWUPDATE_CMS_KEY and SWUPDATE_CMS_CERT come from the build configuration
# (kas/opt/dev-keys.yml or a production signing setup), never from the layer.
SWUPDATE_SIGNING = "CMS"

# A production build refuses dev keys for the signer and the device's CA at
# parse time: pyvorin_sanity.bbclass (PYVORIN_PRODUCTION).
