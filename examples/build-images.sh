#!/bin/sh
# Builds the example's root filesystem image into examples/out/ (deterministic).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/out"
mkdir -p "$out"
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/etc" "$tree/usr/bin"
echo "Pyvorin Edge OS example 2026.11.0" > "$tree/etc/issue"
printf 'VERSION_ID=2026.11.0\nID=pyvorin\n' > "$tree/etc/os-release"
# Fixed timestamps, UUID and hash seed make the image byte-for-byte reproducible.
find "$tree" -exec touch -h -d @1700000000 {} +
export E2FSPROGS_FAKE_TIME=1700000000
rm -f "$out/rootfs.ext4"
mkfs.ext4 -q -F -d "$tree" -L rootfs -U 6a1d3b1e-0d7c-4c43-9a55-3c2f8f1e7a10 \
    -E hash_seed=6a1d3b1e-0d7c-4c43-9a55-3c2f8f1e7a10 -b 4096 "$out/rootfs.ext4" 8M
# mkfs copies each file's ctime, which cannot be set beforehand: pin it after.
(cd "$tree" && find . -mindepth 1) | sed 's|^\.||' | while read -r path; do
    echo "sif $path ctime 20231114221320"
done > "$tree.debugfs"
debugfs -w -f "$tree.debugfs" "$out/rootfs.ext4" >/dev/null 2>&1
rm -f "$tree.debugfs"
gzip -n -9 -c "$out/rootfs.ext4" > "$out/rootfs.ext4.gz.tmp"
mv "$out/rootfs.ext4.gz.tmp" "$out/rootfs.ext4.gz"
echo "built $out/rootfs.ext4 and rootfs.ext4.gz"
