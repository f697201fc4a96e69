SUMMARY = "Pyvorin Edge OS image"
DESCRIPTION = "Read-only root file system with /etc as an overlay on the \
               persistent /data partition, updated A/B by SWUpdate."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "images"
LICENSE = "MIT"

inherit core-image pyvorin_image_policy

# read-only-rootfs: the root is mounted read-only and replaced whole, per slot.
# overlayfs-etc: /etc is an overlay whose upper layer lives on /data, so
# systemd commits /etc/machine-id there on first boot and it survives updates.
IMAGE_FEATURES += "read-only-rootfs overlayfs-etc ssh-server-openssh"

# swupdate-client: a local install through the daemon's root-only IPC socket
# (an operator over SSH, a service technician's USB stick), checked and
# installed by the same daemon, unit and profile as a fleet update.
# packagegroup-core-boot brings the machine's essential packages
# (MACHINE_ESSENTIAL_EXTRA_*), packagegroup-machine-base its extras
# (MACHINE_EXTRA_*): Ethernet drivers and firmware, udev rules, kernel
# modules, Jetson's boot-slot tools. core-image adds neither by itself.
IMAGE_INSTALL = "packagegroup-core-boot \
                 packagegroup-machine-base \
                 packagegroup-pyvorin-edge \
                 pyvorin-hwrevision \
                 ${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-hardening', 'pyvorin-hardening', '', d)} \
                 ${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-update', 'swupdate swupdate-client pyvorin-confirm', '', d)} \
                 ${@'pyvorin-admin' if d.getVar('PYVORIN_ADMIN_USER') else ''} \
                 ${CORE_IMAGE_EXTRA_INSTALL} \
                "

IMAGE_LINGUAS = ""

# /data: agent state and the /etc overlay; an update never touches it.
OVERLAYFS_ETC_MOUNT_POINT = "/data"
OVERLAYFS_ETC_FSTYPE = "ext4"
OVERLAYFS_ETC_MOUNT_OPTIONS = "defaults,nodev,nosuid"
# The device comes from the slot map (conf/distro/include/pyvorin-slots.inc).
OVERLAYFS_ETC_DEVICE = "${PYVORIN_DATA_DEVICE}"
# The preinit would otherwise remount the root read-write to create its mount
# points, on every boot: the slot's superblock changes (mount count and time),
# so the running slot no longer matches the image a delta was made from (and
# verified boot could never hash it). The image carries the mount points.
OVERLAYFS_ETC_CREATE_MOUNT_DIRS = "0"

# The FAT boot partition (U-Boot's environment copies, fw_env.config) at /boot,
# written into the root file system itself: every slot, the one in the wic
# and every one an update writes from ext4.gz, must mount it the same way.
# The kernel in the slot's own /boot is U-Boot's to load, not Linux's.
# PYVORIN_BOOT_DEVICE: the slot map (pyvorin-slots.inc); empty on boards without one.
PYVORIN_BOOT_MOUNT_OPTIONS ??= "nodev,nosuid,noexec,umask=0077"
pyvorin_boot_fstab() {
    install -d ${IMAGE_ROOTFS}/boot ${IMAGE_ROOTFS}${OVERLAYFS_ETC_MOUNT_POINT}
    if [ -n "${PYVORIN_BOOT_DEVICE}" ]; then
        printf '%s\t/boot\tvfat\t%s\t0\t2\n' "${PYVORIN_BOOT_DEVICE}" "${PYVORIN_BOOT_MOUNT_OPTIONS}" \
            >> ${IMAGE_ROOTFS}${sysconfdir}/fstab
    fi
}
pyvorin_boot_fstab[doc] = "Creates the /boot and /data mount points, adds the boot partition's /boot line to fstab"
ROOTFS_POSTPROCESS_COMMAND += "pyvorin_boot_fstab"

# No journal on the read-only root: mounting a journalled ext4 read-only
# still loads the journal and rewrites its superblock in the kernel's cache of
# the block device, so the running slot no longer reads back as the image it
# was made from and every delta is refused ("does not hold the delta's source
# image"; found booting the image, tests/test_device_boot.py). A root that is
# never written has nothing to journal.
# (":ext4" is the image type image_types.bbclass reads, not an override oelint knows.)
# nooelint: oelint.vars.specific
EXTRA_IMAGECMD:ext4 = "-i 4096 -O ^has_journal"

# The update bundle ships the root file system compressed; SWUpdate streams
# it into the inactive slot.
IMAGE_FSTYPES:append = " ext4.gz"

# Raspberry Pi: boot, root A, root B, data (wic/pyvorin-rpi-ab.wks.in).
# The partition sizes: the slot map (pyvorin-slots.inc), which the bundle reads too.
WKS_FILE:rpi = "pyvorin-rpi-ab.wks.in"
# What the wic's slot A is a copy of: the ext4, or with verified boot the
# whole slot, hash tree and FIT included (pyvorin_verity_slot.bbclass).
PYVORIN_SLOT_IMAGE_TYPE = "${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-verity', 'pyvorin-slot', 'ext4', d)}"
WICVARS:append:rpi = " PYVORIN_ROOTFS_SLOT_SIZE PYVORIN_DATA_SIZE PYVORIN_SLOT_IMAGE_TYPE"
# Replaces meta-raspberrypi's "tar.bz2 ext3 wic.bz2 wic.bmap": no ext3 or
# tarball nobody flashes, and no type twice.
IMAGE_FSTYPES:rpi = "wic.bz2 wic.bmap"
# ... which also drops the ext4.verity that meta-security's dm-verity-img adds
# with verified boot (conf/distro/include/pyvorin-verity.inc): back it comes.
# The bundle carries it compressed (pyvorin-update-image).
IMAGE_FSTYPES:append:rpi = "${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-verity', ' ext4.verity ext4.verity.gz', '', d)}"
# The wic's slot A is a byte copy of the ext4 or the slot image (the wks's
# rawcopy), so that is made first and kept; the ext4 is also what ext4.gz
# compresses for the bundle.
# (IMAGE_TYPEDEP:wic is the name image.bbclass reads, ":wic" no override: the
# ":append:wic" oelint suggests would never apply.)
# nooelint: oelint.vars.specific,oelint.vars.overrideappend
IMAGE_TYPEDEP:wic:append = " ${PYVORIN_SLOT_IMAGE_TYPE}"

# Raspberry Pi A/B: U-Boot loads the kernel from /boot of the root slot it
# boots (rpi-u-boot-scr boot.cmd.in), so an update and a rollback change the
# kernel together with its /lib/modules. The kernel therefore travels in the
# root file system (kernel-image: /boot/<KERNEL_IMAGETYPE> -> the versioned
# file), and the FAT partition keeps only firmware, U-Boot (as the firmware's
# kernel), device trees, overlays and boot.scr: a kernel left there would be
# a stale one nobody boots.
# u-boot-env carries /etc/fw_env.config (the two environment copies on the FAT,
# u-boot_pyvorin.inc): swupdate's bootloader handler, fw_setenv and
# pyvorin-confirm read it, and nothing else in the image depends on it
# (libubootenv ships none), so without it no update could switch or confirm a slot.
# With verified boot the kernel is in the slot's FIT instead, outside the
# file system (docs/verified-boot.md), and /boot of the root holds none.
IMAGE_INSTALL:append:rpi = "${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-update', ' u-boot-env', '', d)}"
IMAGE_INSTALL:append:rpi = "${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-update', '' if 'pyvorin-verity' in d.getVar('DISTRO_FEATURES').split() else ' kernel-image', '', d)}"
IMAGE_BOOT_FILES:remove:rpi = "${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-update', '${KERNEL_IMAGETYPE}', '', d)} \
                               ${@pyvorin_control_boot_files(d, False)}"

# Verified boot: the board trees on the boot partition are U-Boot's control
# device trees (pyvorin-control-dtb: the boot logic and the FIT key; inside
# the signed boot.img) in place of the plain ones, and there is no boot.scr
# (U-Boot runs the control tree's boot logic and cannot run scripts).
def pyvorin_control_boot_files(d, control):
    if not bb.utils.contains('DISTRO_FEATURES', 'pyvorin-verity', True, False, d):
        return ''
    boards = d.getVar('PYVORIN_CONTROL_DTBS').split()
    if control:
        return ' '.join('pyvorin-control/%s;%s' % (b, b) for b in boards)
    return ' '.join(boards + ['boot.scr'])
IMAGE_BOOT_FILES:append:rpi = " ${@pyvorin_control_boot_files(d, True)}"
do_image_wic[depends] += "${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-verity', 'pyvorin-control-dtb:do_deploy', '', d)}"

# The release version (pyvorin-update.inc), stamped when the root file system
# is made: an image rebuilt for any reason gets a new one, an image restored
# from sstate keeps its own. It lands in os-release as IMAGE_VERSION (where
# the device's swupdate reads -N/-R from, on the read-only root) and beside
# the image as <link name>.version, which pyvorin-update-image puts into
# sw-description, so the image and its bundle never disagree.
def pyvorin_release_version(d, now=None):
    import calendar, re, time
    number = (d.getVar('PYVORIN_BUILD_NUMBER') or '').strip()
    if not number:
        stamp = time.strptime(now or d.getVar('DATETIME'), '%Y%m%d%H%M%S')
        number = str((calendar.timegm(stamp) - 1577836800) // 60)
    version = '%s.%s' % (d.getVar('DISTRO_VERSION'), number)
    if not re.fullmatch(r'(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})', version):
        bb.fatal("pyvorin: release version '%s' (DISTRO_VERSION.PYVORIN_BUILD_NUMBER) must be three "
                 "numbers, MAJOR.MINOR.BUILD, so SWUpdate compares it as a number" % version)
    return version
# The build time is the point, not an input: a new DATETIME must not change
# the task signature (the metadata would not be deterministic).
pyvorin_release_version[vardepsexclude] = "DATETIME"

def pyvorin_stamp_os_release(path, image, version):
    with open(path) as handle:
        lines = [l for l in handle.read().splitlines() if not l.startswith(('IMAGE_ID=', 'IMAGE_VERSION='))]
    lines += ['IMAGE_ID=%s' % image, 'IMAGE_VERSION=%s' % version]
    with open(path, 'w') as handle:
        handle.write('\n'.join(lines) + '\n')

python pyvorin_image_version () {
    version = pyvorin_release_version(d)
    pyvorin_stamp_os_release(d.expand('${IMAGE_ROOTFS}${nonarch_libdir}/os-release'), d.getVar('IMAGE_BASENAME'), version)
    with open(d.expand('${IMGDEPLOYDIR}/${IMAGE_LINK_NAME}.version'), 'w') as handle:
        handle.write(version + '\n')
    bb.note('pyvorin: release version %s' % version)
}
pyvorin_image_version[doc] = "Stamps the release version into os-release and deploys it beside the image"
pyvorin_image_version[vardepsexclude] = "DATETIME"
ROOTFS_POSTPROCESS_COMMAND += "pyvorin_image_version"
