# nooelint: oelint.file.underscores - image recipes carry no version
SUMMARY = "Signed SWUpdate bundle of pyvorin-image"
DESCRIPTION = "The OTA update for the running machine: the compressed root \
               file system for the inactive slot, and the boot environment switch."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "images"
LICENSE = "MIT"

SRC_URI = "file://sw-description"
# Jetson: the post-install step that switches the UEFI rootfs slot.
SRC_URI:append:tegra = " file://pyvorin-tegra-slot.sh"

# sw-description names the slots of a board family (files/<rpi|tegra>/).
COMPATIBLE_MACHINE = "(rpi|tegra)"

inherit swupdate

IMAGE_DEPENDS = "pyvorin-image"
SWUPDATE_IMAGES = "pyvorin-image"
SWUPDATE_IMAGES_FSTYPES[pyvorin-image] = ".rootfs.ext4.gz"
SWUPDATE_IMAGES_NOAPPEND_MACHINE[pyvorin-image] = "0"

# Filled into sw-description (@@VAR@@) by meta-swupdate.
PYVORIN_BUNDLE_ROOTFS = "pyvorin-image-${MACHINE}.rootfs.ext4.gz"

# sw-description's version is the one pyvorin-image stamped into its
# os-release (IMAGE_VERSION), read from the deployed image when the bundle is
# made: the device compares the two with -N/-R.
PYVORIN_VERSION = ""
python pyvorin_bundle_version () {
    path = d.expand('${DEPLOY_DIR_IMAGE}/pyvorin-image-${MACHINE}.rootfs.version')
    try:
        with open(path) as handle:
            version = handle.read().strip()
    except OSError as exc:
        bb.fatal("pyvorin-update-image: cannot read the image's release version: %s" % exc)
    d.setVar('PYVORIN_VERSION', version)
}
pyvorin_bundle_version[doc] = "Sets PYVORIN_VERSION from the release version pyvorin-image deployed"
do_swuimage[prefuncs] += "pyvorin_bundle_version"

# CMS, as SWUpdate verifies it with the CA certificate of PYVORIN_SWUPDATE_CA_CERT.
# SWUPDATE_CMS_KEY and SWUPDATE_CMS_CERT come from the build configuration
# (kas/opt/dev-keys.yml or a production signing setup), never from the layer.
SWUPDATE_SIGNING = "CMS"

# Checked at parse time on purpose: a production build with dev keys must
# stop before any task runs.
# nooelint: oelint.task.noanonpython
python () {
    # Refuse development keys in a production build (keys init marks them).
    if not bb.utils.to_boolean(d.getVar('PYVORIN_PRODUCTION')):
        return
    import base64, json, os
    cert = d.getVar('SWUPDATE_CMS_CERT') or ''
    if not cert or not os.path.exists(cert):
        bb.fatal("pyvorin-update-image: production build needs SWUPDATE_CMS_CERT set to the signer certificate")
    with open(cert) as handle:
        pem = handle.read()
    body = ''.join(l for l in pem.splitlines() if l and not l.startswith('-----'))
    if b'pyvorin-dev' in base64.b64decode(body.encode()):
        bb.fatal("pyvorin-update-image: %s is a development certificate (OU=pyvorin-dev); "
                 "a production build (PYVORIN_PRODUCTION = \"1\") must be signed with production keys" % cert)
    manifest = os.path.join(os.path.dirname(os.path.dirname(cert)), 'manifest.json')
    if os.path.exists(manifest):
        with open(manifest) as handle:
            entries = json.load(handle).get('entries', [])
        name = os.path.relpath(cert, os.path.dirname(manifest))
        if any(e.get('file') == name and e.get('dev') for e in entries):
            bb.fatal("pyvorin-update-image: %s is marked dev in %s; refusing a production bundle" % (cert, manifest))
}
