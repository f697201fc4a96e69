SUMMARY = "Pyvorin hardening: sysctl, systemd, journald, sshd, audit, firewall"
DESCRIPTION = "Configuration drop-ins that harden a Pyvorin device, one package \
               per area; the main package pulls in all of them. Each file is \
               checked by its real consumer in tests/test_hardening_*.py."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "base"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://60-pyvorin-hardening.conf \
           file://system.conf \
           file://journald.conf \
           file://pyvorin-journal.tmpfiles \
           file://pyvorin-journal-storage.service \
           file://sshd_config.in \
           file://sshd-socket.conf.in \
           file://audit.rules \
           file://firewall.nft.in \
           file://pyvorin-firewall.service \
           file://networkd-firewall.conf \
          "

S = "${WORKDIR}"

# Only for the Pyvorin distro with hardening on; every file assumes systemd.
inherit allarch features_check systemd
REQUIRED_DISTRO_FEATURES = "pyvorin-hardening systemd"

INHIBIT_DEFAULT_DEPS = "1"

# Firewall and SSH settings, also usable from local.conf or a kas file:
#   PYVORIN_SSH_PORT           sshd (socket and config) and the firewall rule
#   PYVORIN_FW_MGMT_SUBNETS    IPv4/IPv6 networks allowed to SSH; empty = none
#   PYVORIN_FW_MQTT_PORT       inbound MQTT over TLS (8883) when set; empty = closed
#   PYVORIN_AGENT_HEALTH_PORT  the agent's health/metrics port, loopback only
#   PYVORIN_FW_ICMP_RATE       nft limit for ICMP echo and errors
PYVORIN_SSH_PORT ??= "22"
PYVORIN_FW_MGMT_SUBNETS ??= ""
PYVORIN_FW_MQTT_PORT ??= ""
PYVORIN_AGENT_HEALTH_PORT ??= "8080"
PYVORIN_FW_ICMP_RATE ??= "10/second burst 20 packets"

def pyvorin_port(d, var, value=None):
    value = d.getVar(var) if value is None else value
    if not (value or '').isdigit() or not 0 < int(value) < 65536:
        bb.fatal('%s must be a TCP port number, got "%s"' % (var, value))
    return value

# "elements = { a, b }" for an nft set, or nothing (an empty set): networks of
# one IP version (4 or 6) from a list of both, or port numbers ("port").
def pyvorin_nft_elements(d, var, family):
    import ipaddress
    items = []
    for item in (d.getVar(var) or '').split():
        if family == 'port':
            items.append(pyvorin_port(d, var, item))
            continue
        try:
            network = ipaddress.ip_network(item)
        except ValueError as error:
            bb.fatal('%s: "%s" is not a network: %s' % (var, item, error))
        if network.version == family:
            items.append(str(network))
    return 'elements = { %s }' % ', '.join(items) if items else ''

do_install() {
    install -D -m 0644 ${S}/60-pyvorin-hardening.conf ${D}${nonarch_libdir}/sysctl.d/60-pyvorin-hardening.conf
    install -D -m 0644 ${S}/system.conf ${D}${systemd_unitdir}/system.conf.d/60-pyvorin.conf
    install -D -m 0644 ${S}/journald.conf ${D}${systemd_unitdir}/journald.conf.d/60-pyvorin.conf
    # The persistent journal on /data, set up before journald's flush.
    install -D -m 0644 ${S}/pyvorin-journal.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/pyvorin-journal.conf
    install -d ${D}${systemd_system_unitdir}
    sed -e 's,@BINDIR@,${bindir},g' -e 's,@TMPFILESDIR@,${nonarch_libdir}/tmpfiles.d,g' \
        ${S}/pyvorin-journal-storage.service > ${D}${systemd_system_unitdir}/pyvorin-journal-storage.service
    chmod 0644 ${D}${systemd_system_unitdir}/pyvorin-journal-storage.service

    install -d ${D}${sysconfdir}/ssh/sshd_config.d ${D}${systemd_system_unitdir}/sshd.socket.d
    sed -e 's,@SSH_PORT@,${@pyvorin_port(d, 'PYVORIN_SSH_PORT')},g' \
        ${S}/sshd_config.in > ${D}${sysconfdir}/ssh/sshd_config.d/50-pyvorin.conf
    sed -e 's,@SSH_PORT@,${@pyvorin_port(d, 'PYVORIN_SSH_PORT')},g' \
        ${S}/sshd-socket.conf.in > ${D}${systemd_system_unitdir}/sshd.socket.d/50-pyvorin-port.conf
    chmod 0644 ${D}${sysconfdir}/ssh/sshd_config.d/50-pyvorin.conf ${D}${systemd_system_unitdir}/sshd.socket.d/50-pyvorin-port.conf

    install -D -m 0640 ${S}/audit.rules ${D}${sysconfdir}/audit/rules.d/50-pyvorin.rules

    install -d ${D}${datadir}/pyvorin
    sed -e 's,@SSH_PORT@,${@pyvorin_port(d, 'PYVORIN_SSH_PORT')},g' \
        -e 's,@HEALTH_PORT@,${@pyvorin_port(d, 'PYVORIN_AGENT_HEALTH_PORT')},g' \
        -e 's,@ICMP_RATE@,${PYVORIN_FW_ICMP_RATE},g' \
        -e 's|@MGMT4_ELEMENTS@|${@pyvorin_nft_elements(d, 'PYVORIN_FW_MGMT_SUBNETS', 4)}|' \
        -e 's|@MGMT6_ELEMENTS@|${@pyvorin_nft_elements(d, 'PYVORIN_FW_MGMT_SUBNETS', 6)}|' \
        -e 's|@MQTT_ELEMENTS@|${@pyvorin_nft_elements(d, 'PYVORIN_FW_MQTT_PORT', 'port')}|' \
        ${S}/firewall.nft.in > ${D}${datadir}/pyvorin/firewall.nft
    chmod 0644 ${D}${datadir}/pyvorin/firewall.nft
    install -d ${D}${systemd_system_unitdir}
    sed -e 's,@SBINDIR@,${sbindir},g' -e 's,@DATADIR@,${datadir},g' \
        ${S}/pyvorin-firewall.service > ${D}${systemd_system_unitdir}/pyvorin-firewall.service
    chmod 0644 ${D}${systemd_system_unitdir}/pyvorin-firewall.service
    install -D -m 0644 ${S}/networkd-firewall.conf \
        ${D}${systemd_system_unitdir}/systemd-networkd.service.d/50-pyvorin-firewall.conf
}

PACKAGES = "${PN}-sysctl ${PN}-systemd ${PN}-journald ${PN}-ssh ${PN}-audit ${PN}-firewall ${PN}"

FILES:${PN}-sysctl += "${nonarch_libdir}/sysctl.d"
FILES:${PN}-systemd += "${systemd_unitdir}/system.conf.d"
FILES:${PN}-journald += "${systemd_unitdir}/journald.conf.d \
                         ${nonarch_libdir}/tmpfiles.d/pyvorin-journal.conf \
                         ${systemd_system_unitdir}/pyvorin-journal-storage.service \
                         "
FILES:${PN}-ssh += "${sysconfdir}/ssh/sshd_config.d ${systemd_system_unitdir}/sshd.socket.d"
FILES:${PN}-audit += "${sysconfdir}/audit/rules.d"
FILES:${PN}-firewall += "${datadir}/pyvorin/firewall.nft ${systemd_system_unitdir}/pyvorin-firewall.service \
                         ${systemd_system_unitdir}/systemd-networkd.service.d \
                         "
CONFFILES:${PN}-ssh += "${sysconfdir}/ssh/sshd_config.d/50-pyvorin.conf"
CONFFILES:${PN}-audit += "${sysconfdir}/audit/rules.d/50-pyvorin.rules"

SYSTEMD_PACKAGES = "${PN}-firewall ${PN}-journald"
SYSTEMD_SERVICE:${PN}-firewall = "pyvorin-firewall.service"
SYSTEMD_SERVICE:${PN}-journald = "pyvorin-journal-storage.service"

# The audit rules need auditd (meta-oe), the firewall nft (meta-networking):
# without those layers the packages are not pulled in (the kas tree has both).
RDEPENDS:${PN}-audit = "auditd"
RDEPENDS:${PN}-firewall = "nftables"
RDEPENDS:${PN} = "${@bb.utils.contains('BBFILE_COLLECTIONS', 'openembedded-layer', '${PN}-audit', '', d)} \
                  ${@bb.utils.contains('BBFILE_COLLECTIONS', 'networking-layer', '${PN}-firewall', '', d)} \
                  ${PN}-journald \
                  ${PN}-ssh \
                  ${PN}-sysctl \
                  ${PN}-systemd \
                  ${@bb.utils.contains('DISTRO_FEATURES', 'apparmor', 'pyvorin-apparmor-profiles', '', d)} \
                 "
ALLOW_EMPTY:${PN} = "1"
