SUMMARY = "Go-live checklist of a Pyvorin Edge device"
DESCRIPTION = "pyvorin-verify-deployment checks the agent service, its health, \
               config, databases and backups, journald caps, the firewall, sshd, \
               the read-only root, AppArmor confinement, temperature and disk; \
               it exits 0 only if every check passes (human or --json output)."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "console/utils"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://pyvorin_verify_deployment/ \
           file://pyvorin-verify-deployment \
           "

S = "${WORKDIR}"

inherit allarch python3-dir python3native

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${PYTHON_SITEPACKAGES_DIR}/pyvorin_verify_deployment/checks
    install -m 0644 ${S}/pyvorin_verify_deployment/*.py ${D}${PYTHON_SITEPACKAGES_DIR}/pyvorin_verify_deployment/
    install -m 0644 ${S}/pyvorin_verify_deployment/checks/*.py \
        ${D}${PYTHON_SITEPACKAGES_DIR}/pyvorin_verify_deployment/checks/
    # Bytecode compiled here: the read-only root cannot cache it at run time.
    ${PYTHON} -m compileall -q --invalidation-mode unchecked-hash -s ${D} -p / \
        ${D}${PYTHON_SITEPACKAGES_DIR}/pyvorin_verify_deployment
    install -d ${D}${sbindir}
    install -m 0755 ${S}/pyvorin-verify-deployment ${D}${sbindir}/pyvorin-verify-deployment
}

FILES:${PN} += "${sbindir}/pyvorin-verify-deployment \
                ${PYTHON_SITEPACKAGES_DIR}/pyvorin_verify_deployment \
                "

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
