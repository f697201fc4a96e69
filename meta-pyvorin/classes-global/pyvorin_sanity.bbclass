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
    if 'pyvorin-verity' in features:
        # Verified boot extends the A/B slots (the FIT sits at the end of each)
        # and is built for U-Boot on the Raspberry Pi; the Jetson's UEFI chain
        # is a plan so far (docs/verified-boot.md), so it must not look enabled.
        if 'pyvorin-update' not in features:
            bb.fatal("pyvorin: DISTRO_FEATURES pyvorin-verity needs the A/B update feature (add meta-swupdate)")
        if 'security' not in collections:
            bb.fatal("pyvorin: DISTRO_FEATURES pyvorin-verity needs meta-security (its dm-verity-img class)")
        if 'rpi' not in (e.data.getVar('MACHINEOVERRIDES') or '').split(':'):
            bb.fatal("pyvorin: DISTRO_FEATURES pyvorin-verity is built for the Raspberry Pi only; "
                     "for %s see the plan in docs/verified-boot.md" % e.data.getVar('MACHINE'))
    if bb.utils.to_boolean(e.data.getVar('PYVORIN_PRODUCTION')):
        if 'pyvorin-update' not in features:
            bb.fatal("pyvorin: PYVORIN_PRODUCTION = \"1\" needs the update feature (add meta-swupdate)")
        # Whether a certificate is a development one is the release tool's
        # call, made where it is used: swupdate runs `pyvorin keys check
        # --production` on the CA it installs, the bundle class `pyvorin
        # bundle --production` on its signer. Here: that there is one at all.
        if not e.data.getVar('PYVORIN_SWUPDATE_CA_CERT'):
            bb.fatal("pyvorin: a production build needs PYVORIN_SWUPDATE_CA_CERT (from the signing setup, never dev keys)")
}
