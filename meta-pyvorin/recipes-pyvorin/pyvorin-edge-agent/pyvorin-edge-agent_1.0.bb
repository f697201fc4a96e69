SUMMARY = "Pyvorin Edge agent, reference implementation"
DESCRIPTION = "Health and Prometheus metrics on loopback port 8080, sensor \
               readings and a cloud sync queue in SQLite (WAL, synchronous=FULL) \
               under /data/pyvorin-edge, online backups and restore. Standard \
               library Python only. Installed through pyvorin-edge-service, \
               which any agent honouring the same interface can replace it in \
               (PYVORIN_EDGE_AGENT_PACKAGE)."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "console/utils"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://pyvorin_edge_agent/ \
           file://pyv-edge-agent \
           "

S = "${WORKDIR}"

inherit allarch python3-dir python3native

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${PYTHON_SITEPACKAGES_DIR}/pyvorin_edge_agent
    install -m 0644 ${S}/pyvorin_edge_agent/*.py ${D}${PYTHON_SITEPACKAGES_DIR}/pyvorin_edge_agent/
    # Compiled here because the read-only root cannot cache bytecode at run
    # time; unchecked-hash pycs do not depend on file times (reproducible), and
    # -s/-p record the path on the device, not the build directory.
    ${PYTHON} -m compileall -q --invalidation-mode unchecked-hash -s ${D} -p / \
        ${D}${PYTHON_SITEPACKAGES_DIR}/pyvorin_edge_agent
    install -d ${D}${bindir}
    install -m 0755 ${S}/pyv-edge-agent ${D}${bindir}/pyv-edge-agent
}

FILES:${PN} += "${bindir}/pyv-edge-agent \
                ${PYTHON_SITEPACKAGES_DIR}/pyvorin_edge_agent \
                "

# The standard library modules the agent imports, by their oe-core package.
RDEPENDS:${PN} = "python3-core \
                  python3-crypt \
                  python3-datetime \
                  python3-fcntl \
                  python3-io \
                  python3-json \
                  python3-math \
                  python3-netclient \
                  python3-netserver \
                  python3-sqlite3 \
                  python3-tomllib \
                  "
# MQTT telemetry ([cloud] url = "mqtts://..."): paho from meta-python, when
# that layer is there (the layer itself needs only oe-core; without it an
# mqtts:// URL is refused at start, naming the missing package). A line of its
# own, after the list: oelint would have it sorted into a list it cannot join.
# nooelint: oelint.vars.dependsordered
RDEPENDS:${PN} += "${@'python3-paho-mqtt' if 'meta-python' in (d.getVar('BBFILE_COLLECTIONS') or '').split() else ''}"
