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
           file://abstractions/pyvorin-fleet-client \
          "

# The fleet (docs/fleet.md): only an image that polls a rollout server gives
# swupdate IP networking, the device's key and the fleet CA.
PYVORIN_FLEET_URL ??= ""
PYVORIN_IDENTITY_DIR ??= "/data/identity"
PYVORIN_FLEET_CA_PATH ??= "${datadir}/pyvorin/fleet-ca.crt"

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
    if [ -n "${PYVORIN_FLEET_URL}" ]; then
        sed -e 's,@FLEET_CA@,${PYVORIN_FLEET_CA_PATH},g' -e 's,@IDENTITY_DIR@,${PYVORIN_IDENTITY_DIR},g' \
            ${S}/abstractions/pyvorin-fleet-client > ${D}${sysconfdir}/apparmor.d/abstractions/pyvorin-fleet-client
        chmod 0644 ${D}${sysconfdir}/apparmor.d/abstractions/pyvorin-fleet-client
    fi
}

FILES:${PN} += "${sysconfdir}/apparmor.d"
RDEPENDS:${PN} = "apparmor"
