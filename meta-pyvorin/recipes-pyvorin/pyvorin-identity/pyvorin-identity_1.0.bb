SUMMARY = "The device's fleet identity: its own key, certificate request and certificate"
DESCRIPTION = "A hardened oneshot unit that, at every boot, makes (once) or \
               checks the device's EC P-256 key and certificate request on \
               /data, named by the board's serial number, and the \
               pyvorin-identity command that installs the certificate the \
               fleet CA signed. The rollout client and the telemetry uploader \
               authenticate with it (mutual TLS)."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "base"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://pyvorin-identity \
           file://pyvorin-identity.service \
           file://pyvorin-identity.default \
           file://pyvorin-identity.tmpfiles \
           "

S = "${WORKDIR}"

inherit features_check systemd

REQUIRED_DISTRO_FEATURES = "systemd"

# The device ID is <prefix><serial>: both boards' firmware put the serial
# number into the device tree.
PYVORIN_IDENTITY_PREFIX ??= "pyvorin-"
PYVORIN_IDENTITY_PREFIX:rpi = "rpi-"
PYVORIN_IDENTITY_PREFIX:tegra = "jetson-"
# On /data: kept across A/B updates and rollbacks, gone with a factory reset.
PYVORIN_IDENTITY_DIR ??= "/data/identity"
# The fleet CA certificate (keys/fleet/ca.crt from 'pyvorin keys init'): a
# certificate is installed only if it chains to it. Empty: the device makes
# its key and request, and no certificate can be installed.
PYVORIN_FLEET_CA_CERT ??= ""
PYVORIN_FLEET_CA_PATH ??= "${datadir}/pyvorin/fleet-ca.crt"

# /etc/default/pyvorin-identity differs per machine.
PACKAGE_ARCH = "${MACHINE_ARCH}"

INHIBIT_DEFAULT_DEPS = "1"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install[file-checksums] += "${@'%s:True' % d.getVar('PYVORIN_FLEET_CA_CERT') if d.getVar('PYVORIN_FLEET_CA_CERT') else ''}"
do_install() {
    install -D -m 0755 ${S}/pyvorin-identity ${D}${bindir}/pyvorin-identity
    install -d ${D}${systemd_system_unitdir}
    sed -e 's,@BINDIR@,${bindir},g' -e 's,@IDENTITY_DIR@,${PYVORIN_IDENTITY_DIR},g' \
        ${S}/pyvorin-identity.service > ${D}${systemd_system_unitdir}/pyvorin-identity.service
    chmod 0644 ${D}${systemd_system_unitdir}/pyvorin-identity.service
    install -d ${D}${sysconfdir}/default
    sed -e 's,@PREFIX@,${PYVORIN_IDENTITY_PREFIX},g' -e 's,@IDENTITY_DIR@,${PYVORIN_IDENTITY_DIR},g' \
        -e 's,@FLEET_CA@,${PYVORIN_FLEET_CA_PATH},g' \
        ${S}/pyvorin-identity.default > ${D}${sysconfdir}/default/pyvorin-identity
    chmod 0644 ${D}${sysconfdir}/default/pyvorin-identity
    install -d ${D}${nonarch_libdir}/tmpfiles.d
    sed -e 's,@IDENTITY_DIR@,${PYVORIN_IDENTITY_DIR},g' ${S}/pyvorin-identity.tmpfiles \
        > ${D}${nonarch_libdir}/tmpfiles.d/pyvorin-identity.conf
    chmod 0644 ${D}${nonarch_libdir}/tmpfiles.d/pyvorin-identity.conf
    if [ -n "${PYVORIN_FLEET_CA_CERT}" ]; then
        if [ ! -f "${PYVORIN_FLEET_CA_CERT}" ]; then
            bbfatal "PYVORIN_FLEET_CA_CERT = '${PYVORIN_FLEET_CA_CERT}' is not a file (keys/fleet/ca.crt from 'pyvorin keys init')"
        fi
        install -D -m 0644 ${PYVORIN_FLEET_CA_CERT} ${D}${PYVORIN_FLEET_CA_PATH}
    fi
}

SYSTEMD_SERVICE:${PN} = "pyvorin-identity.service"
SYSTEMD_AUTO_ENABLE = "enable"

FILES:${PN} += "${nonarch_libdir}/tmpfiles.d/pyvorin-identity.conf \
                ${datadir}/pyvorin \
                "
CONFFILES:${PN} += "${sysconfdir}/default/pyvorin-identity"

RDEPENDS:${PN} = "openssl-bin"
