# Configuration checks for DISTRO = "pyvorin", run once when the
# configuration is parsed, so a wrong setup fails before any task runs.

# Why a certificate must not go into a production build, or None. 'pyvorin
# keys init' marks dev keys twice: OU=pyvorin-dev in the certificate and
# "dev": true in the manifest.json of the key directory.
def pyvorin_dev_key_reason(path):
    import base64, binascii, json, os, re
    try:
        with open(path) as handle:
            pem = handle.read()
    except OSError as exc:
        return 'cannot be read: %s' % exc.strerror
    blocks = re.findall(r'-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----', pem, re.S)
    if not blocks:
        return 'holds no PEM certificate'
    for block in blocks:
        try:
            der = base64.b64decode(''.join(block.split()), validate=True)
        except (binascii.Error, ValueError):
            return 'holds a certificate that is not valid base64'
        # organizationalUnitName (2.5.4.11) = "pyvorin-dev", UTF8String or PrintableString
        if re.search(rb'\x06\x03\x55\x04\x0b[\x0c\x13]\x0bpyvorin-dev', der):
            return 'is a development certificate (OU=pyvorin-dev)'
    keys = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    manifest = os.path.join(keys, 'manifest.json')
    if os.path.exists(manifest):
        try:
            with open(manifest) as handle:
                entries = json.load(handle).get('entries', [])
        except (OSError, ValueError, AttributeError) as exc:
            return 'sits beside an unreadable %s (%s)' % (manifest, exc)
        name = os.path.relpath(os.path.abspath(path), keys)
        if any(isinstance(e, dict) and e.get('file') == name and e.get('dev') for e in entries):
            return 'is marked dev in %s' % manifest
    return None

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
    if bb.utils.to_boolean(e.data.getVar('PYVORIN_PRODUCTION')):
        if 'pyvorin-update' not in features:
            bb.fatal("pyvorin: PYVORIN_PRODUCTION = \"1\" needs the update feature (add meta-swupdate)")
        # The device's trust anchor as much as the signer: a release that
        # trusts the dev CA accepts every bundle signed with a dev key.
        for variable in ('PYVORIN_SWUPDATE_CA_CERT', 'SWUPDATE_CMS_CERT'):
            path = e.data.getVar(variable) or ''
            if not path:
                bb.fatal("pyvorin: a production build needs %s (from the signing setup, never dev keys)" % variable)
            reason = pyvorin_dev_key_reason(path)
            if reason:
                bb.fatal("pyvorin: production build: %s = %s %s" % (variable, path, reason))
}
