# Configuration checks for DISTRO = "pyvorin", run once when the
# configuration is parsed, so a wrong setup fails before any task runs.

addhandler pyvorin_sanity_check
pyvorin_sanity_check[eventmask] = "bb.event.ConfigParsed"

pyvorin_sanity_check[doc] = "Checks the layers and settings a Pyvorin build needs"
python pyvorin_sanity_check() {
    collections = (e.data.getVar('BBFILE_COLLECTIONS') or '').split()
    features = (e.data.getVar('DISTRO_FEATURES') or '').split()
    if 'swupdate' not in collections:
        bb.warn("pyvorin: meta-swupdate is not in BBLAYERS: images build, but without A/B updates")
    if 'security' not in collections:
        bb.warn("pyvorin: meta-security is not in BBLAYERS: AppArmor is off")
    if 'pyvorin-hardening' in features:
        for collection, what in (('openembedded-layer', 'auditd'), ('networking-layer', 'the nftables firewall')):
            if collection not in collections:
                bb.warn("pyvorin: %s is not in BBLAYERS: the image is built without %s" % (collection, what))
    if bb.utils.to_boolean(e.data.getVar('PYVORIN_PRODUCTION')) and 'pyvorin-update' not in features:
        bb.fatal("pyvorin: PYVORIN_PRODUCTION = \"1\" needs the update feature (add meta-swupdate)")
}
