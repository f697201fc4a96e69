SUMMARY = "The device's SSH administrator account"
DESCRIPTION = "One administrator account, PYVORIN_ADMIN_USER, that logs in over \
               SSH with the public keys of PYVORIN_ADMIN_AUTHORIZED_KEYS only \
               (installed root-owned under /etc/ssh/authorized_keys/, so the \
               account cannot add keys), has no password, and may use sudo \
               without one when PYVORIN_ADMIN_SUDO is 1. Root login stays off."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "base"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# PYVORIN_ADMIN_USER              account name; empty = no administrator (a sealed device)
# PYVORIN_ADMIN_AUTHORIZED_KEYS   path to an authorized_keys file (public keys only)
# PYVORIN_ADMIN_SUDO              1 = passwordless sudo for the account (it has no password)
PYVORIN_ADMIN_USER ??= ""
PYVORIN_ADMIN_AUTHORIZED_KEYS ??= ""
PYVORIN_ADMIN_SUDO ??= "1"

# Key types OpenSSH 9 accepts that we allow: no DSA, no RSA below 3072 bits.
PYVORIN_ADMIN_KEY_TYPES ??= "ssh-ed25519 sk-ssh-ed25519@openssh.com ecdsa-sha2-nistp256 \
                             ecdsa-sha2-nistp384 ecdsa-sha2-nistp521 sk-ecdsa-sha2-nistp256@openssh.com ssh-rsa"

# The authorized_keys lines of PATH, checked: one public key per line, of an
# allowed type, whose base64 blob names the same type; never a private key.
def pyvorin_admin_keys(d, path):
    import base64
    import re
    import struct
    if not path or not os.path.isfile(path):
        bb.fatal('PYVORIN_ADMIN_AUTHORIZED_KEYS must name an authorized_keys file for %s, got "%s"'
                 % (d.getVar('PYVORIN_ADMIN_USER'), path))
    allowed = (d.getVar('PYVORIN_ADMIN_KEY_TYPES') or '').split()
    with open(path) as handle:
        text = handle.read()
    if 'PRIVATE KEY' in text:
        bb.fatal('%s holds a private key: give the public keys (.pub lines) only' % path)
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        fields = line.split()
        # Options (e.g. from="10.0.0.0/8") may come first: find the key type.
        at = next((i for i, f in enumerate(fields) if f in allowed), None)
        if at is None or at + 1 >= len(fields):
            bb.fatal('%s:%d: not a public key of an allowed type (%s)' % (path, number, ' '.join(allowed)))
        try:
            blob = base64.b64decode(fields[at + 1], validate=True)
            length = struct.unpack('>I', blob[:4])[0]
            named = blob[4:4 + length].decode()
        except (ValueError, struct.error, UnicodeDecodeError):
            bb.fatal('%s:%d: the key data is not valid base64 of an SSH public key' % (path, number))
        if named != fields[at]:
            bb.fatal('%s:%d: the key data is a %s key, the line says %s' % (path, number, named, fields[at]))
        if named == 'ssh-rsa':
            # e, then n: the modulus length in bits (minus a leading zero byte).
            e_len = struct.unpack('>I', blob[4 + length:8 + length])[0]
            n_at = 8 + length + e_len
            n_len = struct.unpack('>I', blob[n_at:n_at + 4])[0]
            bits = (n_len - (1 if blob[n_at + 4] == 0 else 0)) * 8
            if bits < 3072:
                bb.fatal('%s:%d: an RSA key of %d bits; 3072 at least' % (path, number, bits))
        keys.append(line)
    if not keys:
        bb.fatal('%s has no public key' % path)
    return keys

# Skipped at parse time when no administrator is configured, so the image
# and `bitbake world` see no account instead of a broken one.
# nooelint: oelint.task.noanonpython
python () {
    user = d.getVar('PYVORIN_ADMIN_USER')
    if not user:
        raise bb.parse.SkipRecipe('PYVORIN_ADMIN_USER is not set: the image has no administrator account')
    import re
    if not re.fullmatch(r'[a-z_][a-z0-9_-]{0,30}', user) or user == 'root':
        bb.fatal('PYVORIN_ADMIN_USER "%s" is not a valid account name (and must not be root)' % user)
}

inherit allarch useradd

SRC_URI = "file://pyvorin-admin.sudoers.in"

S = "${WORKDIR}"
INHIBIT_DEFAULT_DEPS = "1"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

# A rebuild when the key file changes.
do_install[file-checksums] += "${@'%s:True' % d.getVar('PYVORIN_ADMIN_AUTHORIZED_KEYS') if d.getVar('PYVORIN_ADMIN_AUTHORIZED_KEYS') else ''}"
do_install[vardeps] += "PYVORIN_ADMIN_USER PYVORIN_ADMIN_SUDO PYVORIN_ADMIN_KEY_TYPES"

python do_install() {
    import os
    user = d.getVar('PYVORIN_ADMIN_USER')
    keys = pyvorin_admin_keys(d, d.getVar('PYVORIN_ADMIN_AUTHORIZED_KEYS'))
    dest = d.getVar('D')
    keydir = os.path.join(dest, d.getVar('sysconfdir').lstrip('/'), 'ssh', 'authorized_keys')
    os.makedirs(keydir, mode=0o755, exist_ok=True)
    path = os.path.join(keydir, user)
    with open(path, 'w') as handle:
        handle.write('\n'.join(keys) + '\n')
    os.chmod(path, 0o644)
    if bb.utils.to_boolean(d.getVar('PYVORIN_ADMIN_SUDO')):
        sudoers = os.path.join(dest, d.getVar('sysconfdir').lstrip('/'), 'sudoers.d')
        os.makedirs(sudoers, mode=0o750, exist_ok=True)
        rule = os.path.join(sudoers, '50-pyvorin-admin')
        with open(os.path.join(d.getVar('S'), 'pyvorin-admin.sudoers.in')) as template:
            text = template.read().replace('@USER@', user)
        with open(rule, 'w') as handle:
            handle.write(text)
        os.chmod(rule, 0o440)
}

USERADD_PACKAGES = "${PN}"
# No password ("*": no login by password, yet not "!"-locked, which sshd
# refuses even for keys); home on the read-only root, never written.
USERADD_PARAM:${PN} = "--system --create-home --home-dir /home/${PYVORIN_ADMIN_USER} \
                       --shell /bin/sh --password '*' --user-group ${PYVORIN_ADMIN_USER}"

RDEPENDS:${PN} = "${@'sudo' if bb.utils.to_boolean(d.getVar('PYVORIN_ADMIN_SUDO')) else ''}"
