SUMMARY = "Applies pyvorin windowed deltas on the device"
DESCRIPTION = "The device half of pyvorin's windowed deltas: checks the \
               delta's own hash and the active slot's hash, rebuilds the \
               inactive slot window by window with bspatch or zstd, and reads \
               it back against the new image's hash. SWUpdate runs it from \
               the pyvdelta handler."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "console/utils"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# One source of truth: the applier is the release tool's own module
# (scripts/pyvorin/delta; its version is PV), standard library only. The
# host side (make.py) stays out.
require recipes-pyvorin/pyvorin-source/pyvorin-source.inc
SRC_URI = "file://scripts/pyvorin/__init__.py \
           file://scripts/pyvorin/errors.py \
           file://scripts/pyvorin/delta/__init__.py \
           file://scripts/pyvorin/delta/__main__.py \
           file://scripts/pyvorin/delta/apply.py \
           file://scripts/pyvorin/delta/codec.py \
           file://scripts/pyvorin/delta/container.py \
           file://pyvorin-delta-apply \
           "

S = "${WORKDIR}"

inherit allarch python3-dir python3native

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${PYTHON_SITEPACKAGES_DIR}/pyvorin/delta
    install -m 0644 ${S}/scripts/pyvorin/__init__.py ${S}/scripts/pyvorin/errors.py ${D}${PYTHON_SITEPACKAGES_DIR}/pyvorin/
    install -m 0644 ${S}/scripts/pyvorin/delta/__init__.py ${S}/scripts/pyvorin/delta/__main__.py \
        ${S}/scripts/pyvorin/delta/apply.py ${S}/scripts/pyvorin/delta/codec.py ${S}/scripts/pyvorin/delta/container.py \
        ${D}${PYTHON_SITEPACKAGES_DIR}/pyvorin/delta/
    # Bytecode compiled here: the read-only root cannot cache it at run time.
    ${PYTHON} -m compileall -q --invalidation-mode unchecked-hash -s ${D} -p / \
        ${D}${PYTHON_SITEPACKAGES_DIR}/pyvorin
    install -d ${D}${bindir}
    install -m 0755 ${S}/pyvorin-delta-apply ${D}${bindir}/pyvorin-delta-apply
}

FILES:${PN} += "${PYTHON_SITEPACKAGES_DIR}/pyvorin"

# bspatch and zstd rebuild the windows their codec made (codec.py).
RDEPENDS:${PN} = "bsdiff-bspatch \
                  python3-core \
                  python3-crypt \
                  python3-io \
                  python3-json \
                  zstd \
                  "
