#!/bin/bash
# yocto-check-layer on meta-pyvorin (called by scripts/layer-gate.py after the
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
# dependants') then carries a fresh uuid on every bitbake run, so
# test_signatures fails for any layer tested beside meta-security.  A
# throwaway layer in this build directory (in the baseline and in the run with
# meta-pyvorin alike) drops that flag; nothing of ours uses aide.
fixup="$builddir/check-layer-fixup"
mkdir -p "$fixup/conf" "$fixup/recipes-ids/aide"
cat > "$fixup/conf/layer.conf" <<'CONF'
BBPATH .= ":${LAYERDIR}"
BBFILES_DYNAMIC += "security:${LAYERDIR}/recipes-*/*/*.bbappend"
BBFILE_COLLECTIONS += "check-layer-fixup"
BBFILE_PATTERN_check-layer-fixup = "^${LAYERDIR}/"
BBFILE_PRIORITY_check-layer-fixup = "1"
LAYERSERIES_COMPAT_check-layer-fixup = "scarthgap"
CONF
printf '%s\n' "python () {" "    d.delVarFlag('do_install', 'nostamp')" "}" > "$fixup/recipes-ids/aide/aide_%.bbappend"
grep -q check-layer-fixup conf/bblayers.conf || echo "BBLAYERS += \"$fixup\"" >> conf/bblayers.conf

extra=("$work/meta-openembedded/meta-oe" "$work/meta-openembedded/meta-python"
       "$work/meta-openembedded/meta-networking" "$work/meta-swupdate" "$work/meta-security")
yocto-check-layer --no-auto --dependency "${extra[@]}" --additional-layers "${extra[@]}" \
    --machines qemuarm64 -- "$repo/meta-pyvorin"
