SUMMARY = "initramfs-framework module: the slot's root through dm-verity"
DESCRIPTION = "Opens the root partition named by root= through dm-verity with \
               the root hash of the initramfs (dm-verity-img's parameters, in \
               the slot's signed FIT) and restart-on-corruption, and hands \
               the verified device to the rootfs module. Every failure \
               reboots, so U-Boot's boot counter rolls a bad slot back."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "base"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://pyvorin-verity"

S = "${WORKDIR}"

inherit allarch features_check

REQUIRED_DISTRO_FEATURES = "pyvorin-verity"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    # 85: after udev (01), before rootfs (90) mounts ${bootparam_root}.
    install -D -m 0755 ${S}/pyvorin-verity ${D}/init.d/85-pyvorin_verity
}

FILES:${PN} += "/init.d/85-pyvorin_verity"

# veritysetup is in meta-oe's cryptsetup package.
RDEPENDS:${PN} = "cryptsetup initramfs-framework-base"
