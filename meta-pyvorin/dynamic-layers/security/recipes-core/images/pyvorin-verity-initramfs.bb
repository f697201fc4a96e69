SUMMARY = "Initramfs of a verified-boot slot: opens the root through dm-verity"
DESCRIPTION = "The initramfs the slot's signed FIT carries: initramfs-framework \
               with udev, the layer's dm-verity module and the root hash of \
               pyvorin-image (dm-verity-img's parameters), so the root opened \
               is the one this build signed."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "images"
LICENSE = "MIT"

inherit core-image features_check

REQUIRED_DISTRO_FEATURES = "pyvorin-verity"

# initramfs-framework's /init and finish, udev for the slot's device node,
# the verity module before rootfs mounts what it opened.
PACKAGE_INSTALL = "base-passwd \
                   busybox \
                   cryptsetup \
                   initramfs-framework-base \
                   initramfs-module-pyvorin-verity \
                   initramfs-module-rootfs \
                   initramfs-module-udev \
                   udev \
                   "

IMAGE_FEATURES = ""
IMAGE_LINGUAS = ""
IMAGE_NAME_SUFFIX ?= ""
IMAGE_FSTYPES = "${INITRAMFS_FSTYPES}"

# The parameters come from pyvorin-image's ext4.verity conversion.
do_image[depends] += "${DM_VERITY_IMAGE}:do_image_${@d.getVar('DM_VERITY_IMAGE_TYPE').replace('-', '_')}"
# ... and must follow every rebuild of it, which this recipe's signature does not see.
do_image[nostamp] = "1"

# Where the module reads them (and meta-security's own initramfs puts them).
pyvorin_verity_params() {
    install -D -m 0644 ${STAGING_VERITY_DIR}/${DM_VERITY_IMAGE}.${DM_VERITY_IMAGE_TYPE}.verity.env \
        ${IMAGE_ROOTFS}${datadir}/misc/dm-verity.env
}
pyvorin_verity_params[doc] = "Installs pyvorin-image's dm-verity parameters (the root hash) into the initramfs"
IMAGE_PREPROCESS_COMMAND += "pyvorin_verity_params"
