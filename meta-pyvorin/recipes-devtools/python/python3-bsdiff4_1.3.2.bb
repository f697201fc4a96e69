SUMMARY = "BSDIFF4-format diff and patch for Python"
DESCRIPTION = "The binary diff pyvorin-native's windowed deltas use on the \
               build host (pyvorin delta; PYVORIN_DELTA_FROM in \
               pyvorin_bundle.bbclass). The device applies the windows with \
               bspatch (recipes-support/bsdiff), not with this module."
HOMEPAGE = "https://github.com/ilanschnell/bsdiff4"
SECTION = "devel/python"
LICENSE = "BSD-2-Clause"
LIC_FILES_CHKSUM = "file://LICENSE;md5=a2321ebf3d51a8e3b0010d032d40cd22"

SRC_URI[sha256sum] = "ed262caa697247e9af00af1076b5fce0b578a17b19d9bdbad30c110dd7660a8d"

inherit pypi setuptools3

BBCLASSEXTEND = "native"
