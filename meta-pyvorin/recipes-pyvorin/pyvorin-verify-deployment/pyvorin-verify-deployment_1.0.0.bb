SUMMARY = "Go-live checklist of a Pyvorin Edge device"
DESCRIPTION = "pyvorin-verify-deployment checks the agent service, its health, \
               config, databases and backups, journald caps, the firewall, sshd, \
               the read-only root, AppArmor confinement, temperature and disk; \
               it exits 0 only if every check passes (human or --json output)."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "console/utils"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# A Python project of its own (pyproject.toml), kept in this layer so the
# layer builds on its own (README.md, "Where the sources live").
SRC_URI = "file://pyvorin-verify-deployment/"

S = "${WORKDIR}/pyvorin-verify-deployment"

inherit python_setuptools_build_meta

# Bytecode is compiled below, by hash: the read-only root cannot cache it at run time.
INSTALL_WHEEL_COMPILE_BYTECODE = "--no-compile-bytecode"

do_install:append() {
    ${PYTHON} -m compileall -q -f --invalidation-mode unchecked-hash -s ${D} -p / \
        ${D}${PYTHON_SITEPACKAGES_DIR}/pyvorin_verify_deployment
    # The launcher (python3 -IB), not a generated console script.
    install -D -m 0755 ${S}/bin/pyvorin-verify-deployment ${D}${sbindir}/pyvorin-verify-deployment
}

FILES:${PN} += "${sbindir}/pyvorin-verify-deployment"

RDEPENDS:${PN} = "python3-core \
                  python3-crypt \
                  python3-datetime \
                  python3-json \
                  python3-netclient \
                  python3-sqlite3 \
                  python3-tomllib \
                  "
# The programs its checks ask; a missing one fails its check, it does not break the tool.
RRECOMMENDS:${PN} = "nftables"
