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

# The agent is a Python project of its own (pyproject.toml), kept in this
# layer so the layer builds on its own (README.md, "Where the sources live").
SRC_URI = "file://pyvorin-edge-agent/"

S = "${WORKDIR}/pyvorin-edge-agent"

inherit python_setuptools_build_meta

# Bytecode is compiled below, by hash: the read-only root cannot cache it at
# run time, and unchecked-hash pycs do not depend on file times
# (reproducible); -s/-p record the path on the device, not the build directory.
INSTALL_WHEEL_COMPILE_BYTECODE = "--no-compile-bytecode"

do_install:append() {
    ${PYTHON} -m compileall -q -f --invalidation-mode unchecked-hash -s ${D} -p / \
        ${D}${PYTHON_SITEPACKAGES_DIR}/pyvorin_edge_agent
    # The device's entry point is the project's launcher (python3 -IB: nothing
    # outside the image changes what runs), not a generated console script.
    install -D -m 0755 ${S}/bin/pyv-edge-agent ${D}${bindir}/pyv-edge-agent
}

FILES:${PN} += "${bindir}/pyv-edge-agent"

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
