SUMMARY = "Pyvorin Edge agent service: user, hardened units, backups, AppArmor"
DESCRIPTION = "Runs the edge agent as the dedicated user pyvorin-edge under a \
               hardened systemd unit (Type=notify, watchdog, state only under \
               /data/pyvorin-edge, loopback only, no capabilities) confined by \
               an AppArmor profile, with a nightly backup timer, tmpfiles for \
               /data and the default config. The agent itself is the package \
               named by PYVORIN_EDGE_AGENT_PACKAGE."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "console/utils"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://pyvorin-edge-agent.service \
           file://pyvorin-edge-backup.service \
           file://pyvorin-edge-backup.timer \
           file://pyvorin-edge.tmpfiles \
           file://config.toml \
           file://usr.bin.pyv-edge-agent \
           file://pyvorin-identity-key.conf \
           "

S = "${WORKDIR}"

inherit allarch features_check systemd useradd

REQUIRED_DISTRO_FEATURES = "systemd"

# The agent package: the reference one, or any package that installs
# /usr/bin/pyv-edge-agent with the same interface (docs/agent.md, "Swapping
# the agent"). Set it in local.conf or a kas fragment, e.g.
#   PYVORIN_EDGE_AGENT_PACKAGE = "acme-edge-agent"
PYVORIN_EDGE_AGENT_PACKAGE ??= "pyvorin-edge-agent"

# "1": the agent gets the device's identity key (pyvorin-identity) for MQTT
# telemetry over TLS ([cloud] url = "mqtts://...", docs/fleet.md).
PYVORIN_TELEMETRY_IDENTITY ??= "0"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/pyvorin-edge-agent.service ${S}/pyvorin-edge-backup.service \
        ${S}/pyvorin-edge-backup.timer ${D}${systemd_system_unitdir}/
    install -d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/pyvorin-edge.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/pyvorin-edge.conf
    # Readable by the agent's group only: it may one day hold a cloud token.
    install -d -m 0750 -g pyvorin-edge ${D}${sysconfdir}/pyvorin-edge
    install -m 0640 -g pyvorin-edge ${S}/config.toml ${D}${sysconfdir}/pyvorin-edge/config.toml
    if ${@'true' if bb.utils.to_boolean(d.getVar('PYVORIN_TELEMETRY_IDENTITY')) else 'false'}; then
        install -D -m 0644 ${S}/pyvorin-identity-key.conf \
            ${D}${systemd_system_unitdir}/pyvorin-edge-agent.service.d/pyvorin-identity-key.conf
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'apparmor', 'true', 'false', d)}; then
        install -d ${D}${sysconfdir}/apparmor.d
        install -m 0644 ${S}/usr.bin.pyv-edge-agent ${D}${sysconfdir}/apparmor.d/usr.bin.pyv-edge-agent
    fi
}

USERADD_PACKAGES = "${PN}"
# A system account with no login; its home is its state directory.
USERADD_PARAM:${PN} = "--system --no-create-home --home-dir /data/pyvorin-edge \
                       --shell ${base_sbindir}/nologin --user-group pyvorin-edge"

SYSTEMD_SERVICE:${PN} = "pyvorin-edge-agent.service pyvorin-edge-backup.timer"
SYSTEMD_AUTO_ENABLE = "enable"

FILES:${PN} += "${systemd_system_unitdir}/pyvorin-edge-backup.service \
                ${systemd_system_unitdir}/pyvorin-edge-agent.service.d \
                ${nonarch_libdir}/tmpfiles.d/pyvorin-edge.conf \
                ${sysconfdir}/pyvorin-edge \
                ${sysconfdir}/apparmor.d/usr.bin.pyv-edge-agent \
                "
CONFFILES:${PN} += "${sysconfdir}/pyvorin-edge/config.toml"

RDEPENDS:${PN} = "${PYVORIN_EDGE_AGENT_PACKAGE}"
