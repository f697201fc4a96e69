#!/bin/bash
# The layer's parse gate: a real BitBake parse and dry run of pyvorin-image and
# pyvorin-update-image for every machine, against the pinned upstream layers
# cloned locally (they are never part of this repository).
#
#   scripts/layer-gate.sh                       # all machines
#   scripts/layer-gate.sh raspberrypi4-64       # one machine
#
# Environment:
#   PYVORIN_LAYERS  directory holding clones of poky, meta-openembedded,
#                   meta-swupdate, meta-security, meta-raspberrypi, meta-tegra
#                   (default: ../layers beside this repository)
#   PYVORIN_GATE_BUILD  work directory (default: $PYVORIN_LAYERS/gate)
#   PYVORIN_GATE_USER   unprivileged user to run bitbake as when started as root
#                   (bitbake refuses root; default: builder)
#   KAS             the kas command (default: kas on PATH, else /opt/kas-venv/bin/kas)
#   PYVORIN_GATE_SKIP_CHECK_LAYER=1  leave out yocto-check-layer (~30 min)
#   PYVORIN_GATE_ADMIN_KEY  an SSH public key file: the images get the
#                   administrator account "edgeadmin" with it (pyvorin-admin), as
#                   the booted-device test logs in (tests/test_device_boot.py)
#   PYVORIN_GATE_REPO  the tree to test (default: the one holding this script;
#                   set it when running a copy of the script, as the tests do,
#                   so that editing the tree cannot change a running script)
#
# Without the layers it prints a loud SKIP and exits 0, as in CI, where the
# static layer checks (tests/test_layer.py) run instead.
set -euo pipefail

repo=${PYVORIN_GATE_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
layers=${PYVORIN_LAYERS:-$(dirname "$repo")/layers}
machines=("$@")
[ ${#machines[@]} -gt 0 ] || machines=(raspberrypi4-64 raspberrypi5 jetson-orin-nano-devkit)

skip() {
    printf '\n%s\n' "##########################################################################"
    printf '%s\n' "## LAYER GATE SKIPPED: $1"
    printf '%s\n' "## The BitBake parse of meta-pyvorin did NOT run. See README, 'Layer gate'."
    printf '%s\n\n' "##########################################################################"
    exit 0
}

for name in poky meta-openembedded meta-swupdate meta-security meta-raspberrypi meta-tegra; do
    [ -d "$layers/$name/.git" ] || skip "no clone of $name in $layers (set PYVORIN_LAYERS)"
done
kas=${KAS:-}
if [ -z "$kas" ]; then
    # The first kas the build user can run (a root-only pyenv shim will not do).
    for candidate in /opt/kas-venv/bin/kas "$(command -v kas || true)"; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        if [ "$(id -u)" != 0 ] || runuser -u "${PYVORIN_GATE_USER:-builder}" -- "$candidate" --version >/dev/null 2>&1; then
            kas=$candidate
            break
        fi
    done
fi
[ -n "$kas" ] || skip "kas is not installed for the build user (python3 -m venv /opt/kas-venv && /opt/kas-venv/bin/pip install kas)"

build=${PYVORIN_GATE_BUILD:-$layers/gate}
mkdir -p "$build"

# Point every pinned repository at its local clone; branch and commit stay as
# pinned, so kas itself proves each commit is on its branch.  kas wants every
# file of a concatenation in one repository: the override lives in the frozen
# copy (below), untracked.
pinned_commit() {  # repo name -> the commit kas/ pins it to
    awk -v repo="  $1:" '$0 == repo {found=1; next} found && /^  [^ ]/ {found=0}
        found && $1 == "commit:" {print $2; exit}' "$repo"/kas/pyvorin.yml "$repo"/kas/bsp/*.yml
}

# kas clones whole repositories; a snapshot may lack old objects (files of
# 4 MiB+ in history), so clone a shallow mirror that reaches the pinned commit.
shallow_mirror() {  # repo name: make $build/mirrors/<name> hold the pinned commit
    local name=$1 commit mirror tries=0
    commit=$(pinned_commit "$name")
    mirror="$build/mirrors/$name"
    if [ ! -d "$mirror/.git" ]; then
        git -c safe.directory='*' clone -q --depth 1 --single-branch --branch scarthgap \
            "file://$layers/$name" "$mirror"
    fi
    until git -c safe.directory='*' -C "$mirror" cat-file -e "$commit^{commit}" 2>/dev/null; do
        tries=$((tries + 1))
        if [ $tries -gt 40 ] || ! git -c safe.directory='*' -C "$mirror" fetch -q --deepen 50 origin scarthgap; then
            echo "$name: the pinned commit $commit is not on scarthgap in $layers/$name:" \
                "the clone (or ../shared/upstream snapshot) is stale, refresh it to the pin" >&2
            exit 1
        fi
    done
}

write_override() {  # machine -> override file path
    local bsp file
    case "$1" in
        raspberrypi*) bsp=meta-raspberrypi ;;
        jetson*) bsp=meta-tegra ;;
        *) echo "unknown machine $1" >&2; return 1 ;;
    esac
    file="$src/.gate/local-layers-$1.yml"
    mkdir -p "$src/.gate"
    {
        echo "header:"
        echo "  version: 14"
        echo "repos:"
        for name in poky meta-openembedded meta-swupdate meta-security "$bsp"; do
            echo "  $name:"
            echo "    url: file://$build/mirrors/$name"
        done
        echo "local_conf_header:"
        echo "  pyvorin-gate: |"
        echo "    BB_NO_NETWORK = \"1\""
        echo "    PYVORIN_KEYS_DIR = \"$build/keys\""
        if [ -n "${PYVORIN_GATE_ADMIN_KEY:-}" ]; then
            echo "    PYVORIN_ADMIN_USER = \"edgeadmin\""
            echo "    PYVORIN_ADMIN_AUTHORIZED_KEYS = \"$build/keys/admin.pub\""
        fi
    } > "$file"
    echo "$file"
}

for name in poky meta-openembedded meta-swupdate meta-security meta-raspberrypi meta-tegra; do
    shallow_mirror "$name"
done

# Dev keys for the bundle recipe (the layer has none and must not).
# A build directory kept from before the fleet CA gets both anew.
if [ ! -f "$build/keys/manifest.json" ] || [ ! -f "$build/keys/fleet/ca.crt" ]; then
    PYTHONPATH="$repo/scripts" python3 -m pyvorin keys init "$build/keys" --only swupdate,fleet --key-size 2048 --force
fi

if [ -n "${PYVORIN_GATE_ADMIN_KEY:-}" ]; then
    mkdir -p "$build/keys"
    cp "$PYVORIN_GATE_ADMIN_KEY" "$build/keys/admin.pub"
fi

# Run from a frozen copy of this tree (tracked and new files, as they are
# now), owned by whoever runs bitbake: kas reads it as a git repository, and
# git refuses a repository another user owns unless the system config vouches
# for it, which the gate must not write.
src="$build/src"
rm -rf "$src"
mkdir -p "$src"
(cd "$repo" && git -c safe.directory="$repo" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | xargs -0 cp --parents -t "$src")
# BitBake's parse cache trusts a file whose mtime did not change. A fresh
# clone gives every file a new mtime, which would re-parse everything: stamp
# each file with an mtime derived from its content instead, so an unchanged
# file keeps its cache entry across runs and clones, and a changed one never
# does.
python3 - "$src" <<'STAMP'
import hashlib, os, sys
for top, _, names in os.walk(sys.argv[1]):
    for name in names:
        path = os.path.join(top, name)
        if os.path.islink(path):
            continue
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).digest()
        stamp = 1_000_000_000 + int.from_bytes(digest[:4], "big") % 500_000_000
        os.utime(path, (stamp, stamp), follow_symlinks=False)
STAMP
git -C "$src" init -q
git -C "$src" add -A
git -C "$src" -c user.name=gate -c user.email=gate@localhost commit -q -m "frozen for the layer gate"

as_builder() {
    if [ "$(id -u)" = 0 ]; then
        user=${PYVORIN_GATE_USER:-builder}
        chown -R "$user" "$build"
        runuser -u "$user" -- env HOME="$(getent passwd "$user" | cut -d: -f6)" LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8 "$@"
    else
        "$@"
    fi
}

status=0
for machine in "${machines[@]}"; do
    echo "== $machine"
    log="$build/$machine.log"
    override=$(write_override "$machine")
    start=$(date +%s)
    if as_builder env KAS_WORK_DIR="$build/work" KAS_BUILD_DIR="$build/build-$machine" \
        "$kas" shell "$src/kas/$machine.yml:$src/kas/opt/dev-keys.yml:$override" -c "$src/scripts/layer-gate-checks.sh" >"$log" 2>&1; then
        echo "   PASS ($(( $(date +%s) - start )) s) - log: $log"
        grep '^gate:' "$log" | sed 's/^/   /'
    else
        echo "   FAIL ($(( $(date +%s) - start )) s) - log: $log"
        tail -n 30 "$log" | sed 's/^/   | /'
        status=1
    fi
done
if [ $status = 0 ] && [ -z "${PYVORIN_GATE_SKIP_CHECK_LAYER:-}" ]; then
    echo "== yocto-check-layer meta-pyvorin"
    log="$build/yocto-check-layer.log"
    start=$(date +%s)
    if as_builder "$src/scripts/layer-gate-check-layer.sh" "$src" "$build/work" "$build/check-layer" >"$log" 2>&1; then
        echo "   PASS ($(( $(date +%s) - start )) s) - log: $log"
    else
        echo "   FAIL ($(( $(date +%s) - start )) s) - log: $log"
        status=1
    fi
    # One line per test with its verdict (yocto-check-layer prints them apart).
    awk '/^INFO: test_[a-z_]+ \(/ {name = $2; next}
         name && /^INFO:  \.\.\. / {sub(/^INFO:  \.\.\. /, ""); print "   " name ": " $0; name = ""}
         /^INFO: (Ran |OK|FAILED)|^INFO: .*\.\.\. (PASS|FAIL)/ {print "   " $0}' "$log" || true
fi
exit $status
