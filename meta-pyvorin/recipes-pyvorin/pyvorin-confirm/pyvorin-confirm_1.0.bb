SUMMARY = "Confirms the running A/B slot once the edge agent is ready"
DESCRIPTION = "A oneshot systemd service that waits (bounded) for the edge \
               agent's /ready and the product's readiness hooks, then marks the running slot good: clears \
               upgrade_available and bootcount in the U-Boot environment \
               (Raspberry Pi) or runs nvbootctrl verify (Jetson). Without a \
               ready agent it reboots, so the bootloader's boot counter falls \
               back to the previous slot. Also arms the hardware watchdog \
               (systemd RuntimeWatchdogSec)."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "base"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://pyvorin-confirm \
           file://pyvorin-confirm.service \
           file://pyvorin-confirm.default \
           file://50-pyvorin-watchdog.conf \
           "

S = "${WORKDIR}"

inherit features_check systemd

# Only meaningful with A/B updates; without them the recipe is skipped.
REQUIRED_DISTRO_FEATURES = "systemd pyvorin-update"

# How the slot is marked good, per board family.
PYVORIN_CONFIRM_BOOTLOADER ??= "uboot"
PYVORIN_CONFIRM_BOOTLOADER:tegra = "tegra"
PYVORIN_CONFIRM_BOOTCTRL ??= "libubootenv-bin"
PYVORIN_CONFIRM_BOOTCTRL:tegra = "tegra-redundant-boot-base"

# With a rollout server, suricatta reports a confirmed install as a success
# when it finds ustate 2 at its start (after this unit), then sets 0.
PYVORIN_FLEET_URL ??= ""
PYVORIN_CONFIRM_INSTALLED_USTATE ??= "${@'2' if d.getVar('PYVORIN_FLEET_URL') else '0'}"

# /etc/default/pyvorin-confirm differs per machine.
PACKAGE_ARCH = "${MACHINE_ARCH}"

INHIBIT_DEFAULT_DEPS = "1"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -D -m 0755 ${S}/pyvorin-confirm ${D}${libexecdir}/pyvorin-confirm
    install -d ${D}${systemd_system_unitdir}
    sed -e 's,@LIBEXECDIR@,${libexecdir},g' ${S}/pyvorin-confirm.service \
        > ${D}${systemd_system_unitdir}/pyvorin-confirm.service
    chmod 0644 ${D}${systemd_system_unitdir}/pyvorin-confirm.service
    install -d ${D}${sysconfdir}/default
    sed -e 's,@BOOTLOADER@,${PYVORIN_CONFIRM_BOOTLOADER},g' \
        -e 's,@INSTALLED_USTATE@,${PYVORIN_CONFIRM_INSTALLED_USTATE},g' ${S}/pyvorin-confirm.default \
        > ${D}${sysconfdir}/default/pyvorin-confirm
    chmod 0644 ${D}${sysconfdir}/default/pyvorin-confirm
    install -D -m 0644 ${S}/50-pyvorin-watchdog.conf ${D}${systemd_unitdir}/system.conf.d/50-pyvorin-watchdog.conf
}

SYSTEMD_SERVICE:${PN} = "pyvorin-confirm.service"
SYSTEMD_AUTO_ENABLE = "enable"

FILES:${PN} += "${libexecdir}/pyvorin-confirm \
                ${systemd_unitdir}/system.conf.d/50-pyvorin-watchdog.conf \
                "
CONFFILES:${PN} += "${sysconfdir}/default/pyvorin-confirm"

RDEPENDS:${PN} = "${PYVORIN_CONFIRM_BOOTCTRL} curl"
