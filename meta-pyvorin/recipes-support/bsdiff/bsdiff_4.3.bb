SUMMARY = "Binary diff and patch tools (bsdiff, bspatch)"
DESCRIPTION = "Colin Percival's bsdiff 4.3: bsdiff makes BSDIFF40 patches, \
               bspatch applies them. The device applies the bsdiff windows of \
               pyvorin deltas with bspatch, so it is hardened against hostile \
               patches here."
HOMEPAGE = "https://www.daemonology.net/bsdiff/"
SECTION = "console/utils"
LICENSE = "BSD-2-Clause"
LIC_FILES_CHKSUM = "file://bsdiff.c;endline=26;md5=7352f2c7111e9b6ddb2699505b96feca"

DEPENDS = "bzip2"

SRC_URI = "https://www.daemonology.net/bsdiff/${BP}.tar.gz \
           file://0001-bspatch-validate-every-control-value-before-use.patch \
           "
SRC_URI[sha256sum] = "18821588b2dc5bf159aa37d3bcb7b885d85ffd1e19f23a0c57a58723fea85f48"

# The upstream Makefile is BSD make; two files need no build system.
do_compile() {
    ${CC} ${CFLAGS} ${LDFLAGS} -o bsdiff ${S}/bsdiff.c -lbz2
    ${CC} ${CFLAGS} ${LDFLAGS} -o bspatch ${S}/bspatch.c -lbz2
}

do_install() {
    install -d ${D}${bindir} ${D}${mandir}/man1
    install -m 0755 bsdiff bspatch ${D}${bindir}
    install -m 0644 ${S}/bsdiff.1 ${S}/bspatch.1 ${D}${mandir}/man1
}

PACKAGES =+ "${PN}-bspatch"
FILES:${PN}-bspatch += "${bindir}/bspatch"

BBCLASSEXTEND = "native nativesdk"
