#!/bin/bash
# yocto-check-layer on meta-pyvorin (called by scripts/layer-gate.sh after the
# machine runs checked out the pinned layers into WORK): a plain poky build
# directory, then the layer added with its recommended layers; the layer must
# not change any signature until its distro is selected.
set -euo pipefail
repo=$1 work=$2 builddir=$3

set +u
# shellcheck disable=SC1091
source "$work/poky/oe-init-build-env" "$builddir" >/dev/null
set -u
grep -q '^BB_NO_NETWORK' conf/local.conf || echo 'BB_NO_NETWORK = "1"' >> conf/local.conf
# meta-security's aide sets do_install[nostamp]: its signature (and its
# dependants') carries a fresh uuid on every bitbake run, so test_signatures
# would fail for any layer tested beside meta-security.  Masked in both the
# baseline and the with-layer run; nothing of ours uses aide.
grep -q 'recipes-ids/aide' conf/local.conf || echo 'BBMASK += "meta-security/recipes-ids/aide/"' >> conf/local.conf

extra=("$work/meta-openembedded/meta-oe" "$work/meta-openembedded/meta-python"
       "$work/meta-openembedded/meta-networking" "$work/meta-swupdate" "$work/meta-security")
yocto-check-layer --no-auto --dependency "${extra[@]}" --additional-layers "${extra[@]}" \
    --machines qemuarm64 -- "$repo/meta-pyvorin"
