SUMMARY = "U-Boot's control device trees for verified boot on the Raspberry Pi"
DESCRIPTION = "Each board device tree of the machine with the A/B boot \
               logic as /config/bootcmd and the FIT key's public half as a \
               required key, checked against the slot FIT the kernel build \
               signed. They replace the plain trees on the boot partition, \
               inside the boot.img the boot ROM verifies."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "bsp"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# fdtput; mkimage and fit_check_sign (u-boot-tools-native).
DEPENDS = "dtc-native u-boot-tools-native"

SRC_URI = "file://pyvorin-verity-boot.cmd.in \
           file://pyvorin-control-dtb \
          "

S = "${WORKDIR}"
B = "${WORKDIR}/build"

COMPATIBLE_MACHINE = "^rpi$"

inherit deploy features_check image-artifact-names nopackages
# kernel-fitimage's defaults, for its configuration names (FIT_CONF_PREFIX);
# an oe-core file oelint does not look into.
# nooelint: oelint.file.requirenotfound
require conf/image-fitimage.conf

REQUIRED_DISTRO_FEATURES = "pyvorin-verity"
PACKAGE_ARCH = "${MACHINE_ARCH}"

# One control tree per board tree: PYVORIN_CONTROL_DTBS (pyvorin-verity.inc).
# The kernel command line, whole: the firmware's (cmdline.txt) is not used,
# since U-Boot takes none of it. The console is the one meta-raspberrypi's
# cmdline.txt names.
PYVORIN_VERITY_BOOTARGS ??= "console=serial0,115200 console=tty1"
# Where U-Boot reads the FIT window into RAM: above the kernel bootm puts at
# UBOOT_LOADADDRESS (2 MiB) and below the memory U-Boot relocates itself to,
# on every Pi from 1 GiB up.
PYVORIN_FIT_ADDR ??= "0x10000000"
PYVORIN_BOOT_MEDIA ??= "mmc"

# The Pi's words for pyvorin-verity-boot.cmd.in (the QEMU board's are in
# tests/qemu/layer.py; the QEMU tests boot the same file).
def pyvorin_verity_words(d, dtb):
    return {
        'BOOT_MEDIA': d.getVar('PYVORIN_BOOT_MEDIA'),
        'PYVORIN_BOOT_DEVPART': '0:%s' % d.getVar('PYVORIN_BOOT_PART'),
        'PYVORIN_BOOT_DEV': '0',
        'PYVORIN_ENV_FILE': 'uboot.env',
        'PYVORIN_ENV_FILE_REDUND': 'uboot-redund.env',
        'PYVORIN_SLOT_A_PART': d.getVar('PYVORIN_SLOT_A_PART'),
        'PYVORIN_SLOT_B_PART': d.getVar('PYVORIN_SLOT_B_PART'),
        'PYVORIN_BOOTLIMIT': d.getVar('PYVORIN_BOOTLIMIT'),
        'PYVORIN_ROOT_PREFIX': d.getVar('PYVORIN_PART_PREFIX'),
        'PYVORIN_PANIC_TIMEOUT': d.getVar('PYVORIN_PANIC_TIMEOUT'),
        'PYVORIN_BOOTARGS': d.getVar('PYVORIN_VERITY_BOOTARGS'),
        # 512-byte blocks, in hex as U-Boot's read and setexpr take them.
        'PYVORIN_FIT_WINDOW_BLOCKS': '0x%x' % (int(d.getVar('PYVORIN_FIT_WINDOW_MB')) * 2048),
        'PYVORIN_FIT_ADDR': d.getVar('PYVORIN_FIT_ADDR'),
        # kernel-fitimage's configuration of that tree.
        'PYVORIN_FIT_CONF': '%s%s' % (d.getVar('FIT_CONF_PREFIX') or 'conf-', dtb),
    }

# The boot logic as /config/bootcmd holds it: every word filled in, comment
# and blank lines dropped (hush runs the lines as a script).
def pyvorin_verity_bootcmd(d, dtb):
    import re
    path = bb.utils.which(d.getVar('FILESPATH'), 'pyvorin-verity-boot.cmd.in')
    with open(path) as handle:
        text = handle.read()
    words = pyvorin_verity_words(d, dtb)
    pattern = re.compile(r'@@([A-Z][A-Z0-9_]*)@@')
    unknown = sorted(set(pattern.findall(text)) - set(words))
    if unknown:
        bb.fatal("pyvorin-verity-boot.cmd.in has words pyvorin-control-dtb does not fill: %s" % ' '.join(unknown))
    empty = sorted(name for name, value in words.items() if not value)
    if empty:
        bb.fatal("pyvorin-control-dtb: no value for %s" % ' '.join(empty))
    text = pattern.sub(lambda m: words[m.group(1)], text)
    return '\n'.join(l for l in text.splitlines() if l.strip() and not l.lstrip().startswith('#')) + '\n'

# For review (bitbake-getvar) and the layer gate: the first board's command.
PYVORIN_VERITY_BOOTCMD = "${@pyvorin_verity_bootcmd(d, d.getVar('PYVORIN_CONTROL_DTBS').split()[0])}"
PYVORIN_VERITY_BOOTCMD[doc] = "The boot logic of the first board's control device tree, as U-Boot runs it"

python do_compile () {
    import os
    for dtb in d.getVar('PYVORIN_CONTROL_DTBS').split():
        with open(os.path.join(d.getVar('B'), 'bootcmd-' + dtb), 'w') as handle:
            handle.write(pyvorin_verity_bootcmd(d, dtb))
}
do_compile[dirs] = "${B}"
do_compile[cleandirs] = "${B}"
do_compile[vardeps] += "PYVORIN_CONTROL_DTBS PYVORIN_BOOT_MEDIA PYVORIN_BOOT_PART PYVORIN_SLOT_A_PART \
                        PYVORIN_SLOT_B_PART PYVORIN_BOOTLIMIT PYVORIN_PART_PREFIX PYVORIN_PANIC_TIMEOUT \
                        PYVORIN_VERITY_BOOTARGS PYVORIN_FIT_WINDOW_MB PYVORIN_FIT_ADDR FIT_CONF_PREFIX"

do_configure[noexec] = "1"
do_install[noexec] = "1"

# The board trees and the signed FIT come from the kernel's deploy.
do_deploy[depends] += "virtual/kernel:do_deploy"
do_deploy[file-checksums] += "${PYVORIN_FIT_KEY_DIR}/${PYVORIN_FIT_KEY_NAME}.crt:True"
do_deploy() {
    install -d ${DEPLOYDIR}/pyvorin-control
    for dtb in ${PYVORIN_CONTROL_DTBS}; do
        TMPDIR="${B}" sh ${S}/pyvorin-control-dtb "${DEPLOY_DIR_IMAGE}/$dtb" "${B}/bootcmd-$dtb" \
            "${DEPLOY_DIR_IMAGE}/${PYVORIN_VERITY_FIT}" "${PYVORIN_FIT_KEY_DIR}" \
            "${FIT_CONF_PREFIX}$dtb" "${DEPLOYDIR}/pyvorin-control/$dtb" \
            || bbfatal "pyvorin-control-dtb: $dtb failed (see above)"
    done
}
addtask deploy after do_compile before do_build
