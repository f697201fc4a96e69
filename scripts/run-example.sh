#!/bin/sh
# The main job on the shipped example: build the example root filesystem,
# generate dev keys, write sw-description, build and verify a signed bundle,
# and - as root, with the build dependencies scripts/test.sh installs and the
# pinned sources in ../shared/upstream - install it with the device's own
# swupdate (2026.05.1, built as meta-swupdate configures it for the layer;
# tools/devsim) into file-backed A/B slots.  Everything lands in
# examples/out/.
set -eu
cd "$(dirname "$0")/.."
out=examples/out

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
pyvorin=.venv/bin/pyvorin

step() { printf '\n== %s\n' "$*"; }

step "build the example images"
sh examples/build-images.sh

step "dev keys"
if [ -f "$out/keys/manifest.json" ]; then
    echo "reusing $out/keys (delete it for new keys)"
else
    "$pyvorin" keys init "$out/keys"
fi
"$pyvorin" keys show "$out/keys"

step "sw-description"
"$pyvorin" swdesc examples/release.yaml -o "$out/sw-description"
cat "$out/sw-description"

step "signed bundle"
"$pyvorin" bundle examples/release.yaml -o "$out/release.swu" \
    --key "$out/keys/swupdate/signer.key" --cert "$out/keys/swupdate/signer.crt"
"$pyvorin" verify "$out/release.swu" --cert "$out/keys/swupdate/ca.crt"

step "install with the device's swupdate into file-backed slots"
.venv/bin/python examples/install_demo.py examples/release.yaml "$out/keys" "$out"
