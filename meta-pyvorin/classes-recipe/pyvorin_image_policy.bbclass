# The rules a Pyvorin image must keep.  In a production build
# (PYVORIN_PRODUCTION = "1", kas/opt/production.yml) any image feature that
# opens the device up stops the build at parse time, naming the feature; the
# root file system is checked for empty passwords before it is packed.

PYVORIN_FORBIDDEN_IMAGE_FEATURES ?= "allow-empty-password allow-root-login dbg-pkgs debug-tweaks \
                                     dev-pkgs eclipse-debug empty-root-password package-management \
                                     ptest-pkgs serial-autologin-root tools-debug tools-profile \
                                     tools-sdk tools-testapps"

# Checked at parse time on purpose: the build stops before any task runs.
# nooelint: oelint.task.noanonpython
python () {
    if not bb.utils.to_boolean(d.getVar('PYVORIN_PRODUCTION')):
        return
    features = set((d.getVar('IMAGE_FEATURES') or '').split())
    forbidden = sorted(features & set((d.getVar('PYVORIN_FORBIDDEN_IMAGE_FEATURES') or '').split()))
    if forbidden:
        bb.fatal("%s: a production build (PYVORIN_PRODUCTION = \"1\") must not have IMAGE_FEATURES %s "
                 "(they come from kas/opt/debug.yml or EXTRA_IMAGE_FEATURES)" % (d.getVar('PN'), ' '.join(forbidden)))
}

ROOTFS_POSTPROCESS_COMMAND += "pyvorin_check_passwords"

pyvorin_check_passwords[doc] = "Fails the image if an account in the root file system has an empty password"
python pyvorin_check_passwords() {
    # Only the debug fragment may allow empty passwords; everything else fails here.
    import os
    features = (d.getVar('IMAGE_FEATURES') or '').split()
    if any(f in features for f in ('debug-tweaks', 'empty-root-password', 'allow-empty-password')):
        if not bb.utils.to_boolean(d.getVar('PYVORIN_PRODUCTION')):
            return
    shadow = os.path.join(d.getVar('IMAGE_ROOTFS'), 'etc', 'shadow')
    if not os.path.exists(shadow):
        return
    with open(shadow) as handle:
        empty = [line.split(':')[0] for line in handle if line.count(':') >= 1 and line.split(':')[1] == '']
    if empty:
        bb.fatal("%s: accounts with an empty password in the root file system: %s" % (d.getVar('PN'), ', '.join(empty)))
}
