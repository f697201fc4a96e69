SUMMARY = "AppArmor profiles for SWUpdate and the boot confirmation service"
DESCRIPTION = "Enforce-mode profiles that apparmor.service loads at boot: \
               swupdate (attached to /usr/bin/swupdate) and pyvorin-confirm, \
               with the abstractions they share (U-Boot environment, Jetson \
               boot control). Site additions go to /etc/apparmor.d/local/."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "admin"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://usr.bin.swupdate \
           file://pyvorin-confirm \
           file://abstractions/pyvorin-ubootenv \
           file://abstractions/pyvorin-tegra-bootctrl \
          "

S = "${WORKDIR}"

# AppArmor user space comes from meta-security (the apparmor distro feature);
# without it, or without the hardening feature, there is nothing to build.
inherit allarch features_check
REQUIRED_DISTRO_FEATURES = "apparmor pyvorin-hardening"

INHIBIT_DEFAULT_DEPS = "1"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${sysconfdir}/apparmor.d/abstractions
    install -m 0644 ${S}/usr.bin.swupdate ${S}/pyvorin-confirm ${D}${sysconfdir}/apparmor.d/
    install -m 0644 ${S}/abstractions/pyvorin-ubootenv ${S}/abstractions/pyvorin-tegra-bootctrl \
        ${D}${sysconfdir}/apparmor.d/abstractions/
}

FILES:${PN} += "${sysconfdir}/apparmor.d"
RDEPENDS:${PN} = "apparmor"
