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

IMAGE_INSTALL = "packagegroup-core-boot \
                 packagegroup-pyvorin-edge \
                 pyvorin-hwrevision \
                 ${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-hardening', 'pyvorin-hardening', '', d)} \
                 ${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-update', 'swupdate pyvorin-confirm', '', d)} \
                 ${@'pyvorin-admin' if d.getVar('PYVORIN_ADMIN_USER') else ''} \
                 ${CORE_IMAGE_EXTRA_INSTALL} \
                "

IMAGE_LINGUAS = ""

# /data: agent state and the /etc overlay; an update never touches it.
OVERLAYFS_ETC_MOUNT_POINT = "/data"
OVERLAYFS_ETC_FSTYPE = "ext4"
OVERLAYFS_ETC_MOUNT_OPTIONS = "defaults,nodev,nosuid"
OVERLAYFS_ETC_DEVICE:rpi = "/dev/mmcblk0p4"
OVERLAYFS_ETC_DEVICE:tegra = "/dev/disk/by-partlabel/UDA"

# The update bundle ships the root file system compressed; SWUpdate streams
# it into the inactive slot.
IMAGE_FSTYPES:append = " ext4.gz"

# Raspberry Pi: boot, root A, root B, data (wic/pyvorin-rpi-ab.wks.in).
PYVORIN_ROOTFS_SLOT_SIZE ??= "2048"
PYVORIN_DATA_SIZE ??= "1024"
WKS_FILE:rpi = "pyvorin-rpi-ab.wks.in"
WICVARS:append:rpi = " PYVORIN_ROOTFS_SLOT_SIZE PYVORIN_DATA_SIZE"
IMAGE_FSTYPES:append:rpi = " wic.bz2 wic.bmap"

# Raspberry Pi A/B: U-Boot loads the kernel from /boot of the root slot it
# boots (rpi-u-boot-scr boot.cmd.in), so an update and a rollback change the
# kernel together with its /lib/modules. The kernel therefore travels in the
# root file system (kernel-image: /boot/<KERNEL_IMAGETYPE> -> the versioned
# file), and the FAT partition keeps only firmware, U-Boot (as the firmware's
# kernel), device trees, overlays and boot.scr: a kernel left there would be
# a stale one nobody boots.
IMAGE_INSTALL:append:rpi = "${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-update', ' kernel-image', '', d)}"
IMAGE_BOOT_FILES:remove:rpi = "${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-update', '${KERNEL_IMAGETYPE}', '', d)}"
