SUMMARY = "pyvorin, the Pyvorin Edge release tool, for the build host"
DESCRIPTION = "Writes, signs and verifies the SWUpdate bundles of \
               pyvorin_bundle.bbclass, and checks that a production image \
               trusts no development certificate. The same tool a release \
               engineer or a CI job runs by hand (README, 'Release spec')."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "devel/python"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# bsdiff4: `pyvorin delta` (PYVORIN_DELTA_FROM); zstd: `pyvorin bundle`
# unpacks create-spdx's SBOM archive with it.
DEPENDS = "python3-bsdiff4-native \
           python3-cryptography-native \
           python3-pyyaml-native \
           zstd-native \
           "

# The tool's sources are the repository's own (scripts/pyvorin, with its
# pyproject.toml): one copy, which CI installs with pip and BitBake builds
# here. PYVORIN_SOURCE_DIR (conf/layer.conf) says where that repository is.
require recipes-pyvorin/pyvorin-source/pyvorin-source.inc

SRC_URI = "file://pyproject.toml;subdir=pyvorin \
           file://README.md;subdir=pyvorin \
           file://scripts/pyvorin;subdir=pyvorin \
           "
S = "${WORKDIR}/pyvorin"

inherit python_setuptools_build_meta
inherit_defer native
