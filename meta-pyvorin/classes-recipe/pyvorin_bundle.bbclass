# SWUpdate bundles made by the release tool, pyvorin-native: the one path
# from a build to a release. The class writes the release spec from BitBake
# variables (the spec a person or a CI job would write, README "Release
# spec") and runs `pyvorin bundle` on it, signed or unsigned for a separate
# signing host, then checks the result with `pyvorin verify` against the CA
# the image trusts. meta-rauc's bundle.bbclass drives rauc-native the same way.
#
# The recipe names the image, the boot environment and scripts of its board
# family; the slots come from the slot map (pyvorin-slots.inc), which the boot
# script, the daemon's copy selection and the disk layout read too. Every
# value lands in the spec: `bitbake-getvar -r RECIPE PYVORIN_BUNDLE_SPEC`
# prints it (with version 0.0.0; the task stamps the image's own).

inherit deploy image-artifact-names nopackages

DEPENDS += "pyvorin-native"

# The image whose root file system the bundle carries, and its image type.
PYVORIN_BUNDLE_IMAGE ??= ""
PYVORIN_BUNDLE_FSTYPE ??= "ext4.gz"
PYVORIN_BUNDLE_IMAGE_LINK ??= "${PYVORIN_BUNDLE_IMAGE}${IMAGE_MACHINE_SUFFIX}${IMAGE_NAME_SUFFIX}"
# The board and its revisions (pyvorin-hwrevision writes the running one),
# and the software set whose copy1/copy2 the daemon selects.
PYVORIN_BUNDLE_BOARD ??= "${MACHINE}"
PYVORIN_BUNDLE_HARDWARE ??= "${PYVORIN_HW_REVISION}"
PYVORIN_BUNDLE_SOFTWARE_SET ??= "${PYVORIN_SOFTWARE_SET}"
PYVORIN_BUNDLE_DESCRIPTION ??= "${DISTRO_NAME} for ${MACHINE}"
# Verified boot: the slot's signed FIT (a file in DEPLOY_DIR_IMAGE), written
# into the slot at PYVORIN_BUNDLE_FIT_OFFSET bytes, behind the verity image;
# empty: none. Kernel and root then change together, as the FIT carries the
# image's root hash (docs/verified-boot.md), and `pyvorin verify` holds the
# one to the other. A delta bundle carries the FIT whole.
PYVORIN_BUNDLE_FIT ??= ""
PYVORIN_BUNDLE_FIT_OFFSET ??= ""
# U-Boot variables as NAME=VALUE words: written by both copies once every
# image is installed, and by the copy that writes slot A or slot B.
PYVORIN_BUNDLE_BOOTENV ??= ""
PYVORIN_BUNDLE_BOOTENV_SLOT_A ??= ""
PYVORIN_BUNDLE_BOOTENV_SLOT_B ??= ""
# Scripts from SRC_URI the device runs, as FILE:TYPE words (TYPE: preinstall,
# postinstall, shellscript or lua, as SWUpdate names them).
PYVORIN_BUNDLE_SCRIPTS ??= ""
# "1": the image's SPDX SBOM (create-spdx's <image>.spdx.tar.zst) travels in
# the bundle, signed and never installed (pyvorin sbom show/diff read it).
PYVORIN_BUNDLE_SBOM ??= "1"
# "cms": signed with PYVORIN_SIGNING_KEY (a file or an RFC 7512 pkcs11: URI)
# and PYVORIN_SIGNING_CERT; "unsigned": signed later on a signing host with
# `pyvorin sign` (examples/ci/release.yml). A production build
# (PYVORIN_PRODUCTION) refuses a signer marked dev: `pyvorin bundle --production`.
PYVORIN_BUNDLE_SIGNING ??= "cms"
PYVORIN_SIGNING_KEY ??= ""
PYVORIN_SIGNING_CERT ??= ""
PYVORIN_BUNDLE_NAME ??= "${PN}${IMAGE_MACHINE_SUFFIX}"
# The release a delta bundle starts from: the root file system image of that
# release as its build deployed it (<image>.rootfs.ext4, or .ext4.gz), with its
# <image>.rootfs.version beside it. Set, the task also makes
# <name>-<old>-to-<new>.swu: a windowed delta of the raw images (pyvorin
# delta, under PYVORIN_DELTA_MEMORY), which the device applies from its
# running slot to the other after checking the running one holds exactly
# that release.
PYVORIN_DELTA_FROM ??= ""
PYVORIN_DELTA_MEMORY ??= "256M"
# How its windows are encoded (pyvorin delta --codec). The device that applies
# it runs the release it starts from: before that release's applier knew
# bsdiff+zstd (and had zstd), only "bsdiff" deltas apply there; a newer codec
# is refused before the slot is touched, never half-written.
PYVORIN_DELTA_CODEC ??= "bsdiff+zstd"
PYVORIN_BUNDLE_PRODUCTION = "${@'--production' if bb.utils.to_boolean(d.getVar('PYVORIN_PRODUCTION')) else ''}"
# An unsigned bundle says so in its name, so it cannot be mistaken for a release.
PYVORIN_BUNDLE_SUFFIX = "${@'.unsigned.swu' if d.getVar('PYVORIN_BUNDLE_SIGNING') == 'unsigned' else '.swu'}"

# The bundle is per machine; its work lives apart from the unpacked scripts.
PACKAGE_ARCH = "${MACHINE_ARCH}"
B = "${WORKDIR}/bundle"

def pyvorin_bundle_words(d, variable):
    """NAME=VALUE words of a variable, as a dict; a word without '=' stops the build."""
    values = {}
    for word in (d.getVar(variable) or '').split():
        name, sep, value = word.partition('=')
        if not sep or not name:
            bb.fatal("%s: '%s' is not NAME=VALUE" % (variable, word))
        values[name] = value
    return values

def pyvorin_bundle_spec(d, version, delta=None):
    """The release spec of the bundle, as pyvorin reads it (JSON is YAML).

    With *delta* (a .pyvd from pyvorin delta) the bundle carries that delta
    instead of the image: each copy rebuilds its slot from the running one."""
    import os
    slot_a = d.getVar('PYVORIN_SLOT_A_DEVICE')
    slot_b = d.getVar('PYVORIN_SLOT_B_DEVICE')
    if not slot_a or not slot_b or slot_a == slot_b:
        bb.fatal("pyvorin-bundle: the slot map names no two slots for %s (PYVORIN_SLOT_A_DEVICE='%s', "
                 "PYVORIN_SLOT_B_DEVICE='%s'; conf/distro/include/pyvorin-slots.inc)"
                 % (d.getVar('MACHINE'), slot_a, slot_b))
    if not d.getVar('PYVORIN_BUNDLE_IMAGE'):
        bb.fatal("pyvorin-bundle: PYVORIN_BUNDLE_IMAGE names no image")
    deploy = d.getVar('DEPLOY_DIR_IMAGE')
    link = d.getVar('PYVORIN_BUNDLE_IMAGE_LINK')
    fstype = d.getVar('PYVORIN_BUNDLE_FSTYPE')
    if delta:
        name = 'rootfs.pyvd'
        artifact = {'file': delta, 'type': 'pyvdelta'}
    else:
        name = 'rootfs.' + fstype
        artifact = {'file': os.path.join(deploy, '%s.%s' % (link, fstype)), 'type': 'raw',
                    'installed-directly': True}
        compression = {'gz': 'zlib', 'zst': 'zstd'}.get(fstype.rsplit('.', 1)[-1])
        if compression:
            artifact['compressed'] = compression
    fit = d.getVar('PYVORIN_BUNDLE_FIT')
    if fit and not (d.getVar('PYVORIN_BUNDLE_FIT_OFFSET') or '').isdigit():
        bb.fatal("pyvorin-bundle: PYVORIN_BUNDLE_FIT needs PYVORIN_BUNDLE_FIT_OFFSET, in bytes (got '%s')"
                 % d.getVar('PYVORIN_BUNDLE_FIT_OFFSET'))
    board = {'hardware-compatibility': (d.getVar('PYVORIN_BUNDLE_HARDWARE') or '').split()}
    bootenv = pyvorin_bundle_words(d, 'PYVORIN_BUNDLE_BOOTENV')
    if bootenv:
        board['bootenv'] = bootenv
    # copy1 runs on slot A and writes slot B, copy2 the reverse (50-pyvorin).
    for copy, device, running, variable in (('copy1', slot_b, slot_a, 'PYVORIN_BUNDLE_BOOTENV_SLOT_B'),
                                            ('copy2', slot_a, slot_b, 'PYVORIN_BUNDLE_BOOTENV_SLOT_A')):
        target = {'device': device, 'source': running} if delta else device
        board[copy] = {'install': {name: target}}
        if fit:
            board[copy]['install']['slot.fit'] = {'device': device,
                                                  'offset': int(d.getVar('PYVORIN_BUNDLE_FIT_OFFSET'))}
        values = pyvorin_bundle_words(d, variable)
        if values:
            board[copy]['bootenv'] = values
    artifacts = {name: artifact}
    if fit:
        artifacts['slot.fit'] = {'file': os.path.join(deploy, fit), 'type': 'raw'}
    spec = {
        'version': version,
        'description': d.getVar('PYVORIN_BUNDLE_DESCRIPTION'),
        'software-set': d.getVar('PYVORIN_BUNDLE_SOFTWARE_SET'),
        'artifacts': artifacts,
        'machines': {d.getVar('PYVORIN_BUNDLE_BOARD'): board},
    }
    scripts = []
    for word in (d.getVar('PYVORIN_BUNDLE_SCRIPTS') or '').split():
        script, sep, kind = word.partition(':')
        if not sep:
            bb.fatal("PYVORIN_BUNDLE_SCRIPTS: '%s' is not FILE:TYPE" % word)
        scripts.append({'file': os.path.join(d.getVar('WORKDIR'), script), 'type': kind})
    if scripts:
        spec['scripts'] = scripts
    if bb.utils.to_boolean(d.getVar('PYVORIN_BUNDLE_SBOM')):
        if not bb.data.inherits_class('create-spdx', d):
            bb.fatal("pyvorin-bundle: PYVORIN_BUNDLE_SBOM is on but create-spdx is not inherited "
                     "(INHERIT_DISTRO); set PYVORIN_BUNDLE_SBOM = \"0\" to release without an SBOM")
        spec['sbom'] = os.path.join(deploy, '%s.spdx.tar.zst' % link)
    return spec

def pyvorin_bundle_raw_type(d):
    """The image type the slot holds: PYVORIN_BUNDLE_FSTYPE without its compression."""
    fstype = d.getVar('PYVORIN_BUNDLE_FSTYPE')
    for suffix in ('.gz', '.zst'):
        if fstype.endswith(suffix):
            return fstype[:-len(suffix)]
    return fstype

# The spec for review and for the tests, which build and install it with the
# device's swupdate (tests/test_layer_gate.py).
PYVORIN_BUNDLE_SPEC = "${@__import__('json').dumps(pyvorin_bundle_spec(d, '0.0.0'), sort_keys=True)}"
PYVORIN_BUNDLE_SPEC[doc] = "The release spec the bundle task writes, as JSON, with version 0.0.0"
PYVORIN_BUNDLE_DELTA_SPEC = "${@__import__('json').dumps(pyvorin_bundle_spec(d, '0.0.0', '${B}/rootfs.pyvd'), sort_keys=True)}"
PYVORIN_BUNDLE_DELTA_SPEC[doc] = "The spec of the delta bundle (PYVORIN_DELTA_FROM), as JSON, with version 0.0.0"

# Checked when the task runs, not at parse: a build without signing keys
# still parses and builds images.
def pyvorin_bundle_check_signing(d):
    signing = d.getVar('PYVORIN_BUNDLE_SIGNING')
    if signing not in ('cms', 'unsigned'):
        bb.fatal("PYVORIN_BUNDLE_SIGNING = '%s': 'cms' or 'unsigned'" % signing)
    if signing == 'cms' and not (d.getVar('PYVORIN_SIGNING_KEY') and d.getVar('PYVORIN_SIGNING_CERT')):
        bb.fatal("pyvorin-bundle: a signed bundle needs PYVORIN_SIGNING_KEY and PYVORIN_SIGNING_CERT "
                 "(kas/opt/dev-keys.yml or the signing setup), or PYVORIN_BUNDLE_SIGNING = \"unsigned\"")
    if signing == 'cms' and not d.getVar('PYVORIN_SWUPDATE_CA_CERT'):
        bb.fatal("pyvorin-bundle: PYVORIN_SWUPDATE_CA_CERT names no CA to verify the signed bundle with")

# The version is the one the image stamped into its os-release (IMAGE_VERSION,
# deployed as <image>.version): the device compares the two with -N and -R.
def pyvorin_bundle_release_version(path, what):
    """The release version in a deployed <image>.version file; the build stops without one."""
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError as exc:
        bb.fatal("pyvorin-bundle: cannot read %s: %s" % (what, exc))

python pyvorin_bundle_write_spec () {
    import json, os
    work = d.getVar('B')

    def write(name, content):
        with open(os.path.join(work, name), 'w') as handle:
            handle.write(content if isinstance(content, str) else json.dumps(content, indent=2, sort_keys=True))

    version = pyvorin_bundle_release_version(
        os.path.join(d.getVar('DEPLOY_DIR_IMAGE'), d.getVar('PYVORIN_BUNDLE_IMAGE_LINK') + '.version'),
        "the image's release version")
    pyvorin_bundle_check_signing(d)
    write('release.json', pyvorin_bundle_spec(d, version))
    write('version', version + '\n')
    old = d.getVar('PYVORIN_DELTA_FROM')
    if old:
        # The raw type the slot holds: ext4, or ext4.verity with verified boot.
        raw = pyvorin_bundle_raw_type(d)
        base = old[:-len('.gz')] if old.endswith('.gz') else old
        if not base.endswith('.' + raw) or not os.path.isfile(old):
            bb.fatal("PYVORIN_DELTA_FROM = '%s': not the .%s or .%s.gz image of an earlier release" % (old, raw, raw))
        old_version = pyvorin_bundle_release_version(base[:-len('.' + raw)] + '.version',
                                                     "the release version beside PYVORIN_DELTA_FROM")
        if old_version == version:
            bb.fatal("PYVORIN_DELTA_FROM is release %s, the one being built" % version)
        delta_spec = pyvorin_bundle_spec(d, version, os.path.join(work, 'rootfs.pyvd'))
        delta_spec['description'] += ' (delta from %s)' % old_version
        write('release-delta.json', delta_spec)
        write('delta-from', old_version + '\n')
}
pyvorin_bundle_write_spec[doc] = "Writes the release spec and the version of the bundle into B"

do_deploy[prefuncs] += "pyvorin_bundle_write_spec"
do_deploy[cleandirs] = "${B} ${DEPLOYDIR}"
do_deploy[dirs] = "${B}"
do_deploy[vardeps] += "PYVORIN_SWUPDATE_CA_CERT"
do_deploy[file-checksums] += "${@'%s:True' % d.getVar('PYVORIN_SIGNING_CERT') if d.getVar('PYVORIN_SIGNING_CERT') else ''}"
do_deploy[file-checksums] += "${@'%s:True' % d.getVar('PYVORIN_SWUPDATE_CA_CERT') if d.getVar('PYVORIN_SWUPDATE_CA_CERT') else ''}"
do_deploy[file-checksums] += "${@'%s:True' % d.getVar('PYVORIN_DELTA_FROM') if d.getVar('PYVORIN_DELTA_FROM') else ''}"
# Bundles the spec $1 into DEPLOYDIR as $2, then checks the bundle as the
# device will judge it: signed by a signer its CA trusts, every hash right
# (an unsigned one: the hashes only).
pyvorin_bundle_make() {
    if [ "${PYVORIN_BUNDLE_SIGNING}" = unsigned ]; then
        pyvorin bundle "$1" -o "${DEPLOYDIR}/$2" --unsigned
        pyvorin verify "${DEPLOYDIR}/$2" --allow-unsigned
    else
        pyvorin bundle "$1" -o "${DEPLOYDIR}/$2" \
            --key "${PYVORIN_SIGNING_KEY}" --cert "${PYVORIN_SIGNING_CERT}" ${PYVORIN_BUNDLE_PRODUCTION}
        pyvorin verify "${DEPLOYDIR}/$2" --cert "${PYVORIN_SWUPDATE_CA_CERT}"
    fi
}
pyvorin_bundle_make[doc] = "Bundles a release spec into DEPLOYDIR, signed or not, and verifies the result"

do_deploy() {
    version=$(cat version)
    pyvorin_bundle_make release.json "${PYVORIN_BUNDLE_NAME}-$version${PYVORIN_BUNDLE_SUFFIX}"
    ln -sf "${PYVORIN_BUNDLE_NAME}-$version${PYVORIN_BUNDLE_SUFFIX}" "${DEPLOYDIR}/${PYVORIN_BUNDLE_NAME}.swu"
    if [ -n "${PYVORIN_DELTA_FROM}" ]; then
        pyvorin_bundle_delta "$version"
    fi
}

# The delta bundle: the delta of the two raw images (a compressed one is
# unpacked first: the delta is of what the slots hold; a raw one is read where
# it lies), and a bundle made like the full one, named for the release the
# device must run for it to apply.
pyvorin_bundle_delta() {
    old="${PYVORIN_DELTA_FROM}"
    new="${DEPLOY_DIR_IMAGE}/${PYVORIN_BUNDLE_IMAGE_LINK}.${PYVORIN_BUNDLE_FSTYPE}"
    case "$old" in *.gz) gzip -dc "$old" > old.img; old=old.img ;; esac
    case "$new" in *.gz) gzip -dc "$new" > new.img; new=new.img ;; esac
    pyvorin delta "$old" "$new" -o rootfs.pyvd --memory "${PYVORIN_DELTA_MEMORY}" \
        --codec "${PYVORIN_DELTA_CODEC}" --no-report
    rm -f old.img new.img
    from=$(cat delta-from)
    pyvorin_bundle_make release-delta.json "${PYVORIN_BUNDLE_NAME}-$from-to-$1${PYVORIN_BUNDLE_SUFFIX}"
    rm -f rootfs.pyvd
}
pyvorin_bundle_delta[doc] = "Makes the delta bundle from PYVORIN_DELTA_FROM to the image just bundled"

do_deploy[depends] += "${PYVORIN_BUNDLE_IMAGE}:do_image_complete"
# The FIT comes from the kernel's deploy.
do_deploy[depends] += "${@'virtual/kernel:do_deploy' if d.getVar('PYVORIN_BUNDLE_FIT') else ''}"

do_configure[noexec] = "1"
do_compile[noexec] = "1"
do_install[noexec] = "1"
addtask deploy after do_unpack before do_build
