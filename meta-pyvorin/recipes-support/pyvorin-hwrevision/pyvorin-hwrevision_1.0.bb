SUMMARY = "Hardware revision file for SWUpdate"
DESCRIPTION = "Writes the hardware revision '<machine> <revision>' where the \
               device's SWUpdate reads it (CONFIG_HW_COMPATIBILITY_FILE of \
               pyvorin.cfg): it refuses bundles whose hardware-compatibility \
               does not list it."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "base"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://hwrevision.in"

S = "${WORKDIR}"

INHIBIT_DEFAULT_DEPS = "1"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

# On the read-only root, not in /etc: /etc is an overlay on /data that
# survives updates, and a file left there would outlive the release that
# changed the revision.
do_install() {
    install -d ${D}${datadir}/swupdate
    sed -e 's,@MACHINE@,${MACHINE},' -e 's,@REVISION@,${PYVORIN_HW_REVISION},' \
        ${S}/hwrevision.in > ${D}${datadir}/swupdate/hwrevision
    chmod 0644 ${D}${datadir}/swupdate/hwrevision
}

# The file names the machine: one package per machine.
PACKAGE_ARCH = "${MACHINE_ARCH}"

FILES:${PN} += "${datadir}/swupdate/hwrevision"
