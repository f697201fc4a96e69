# The "pyvorin-slot" image type of verified boot (docs/verified-boot.md,
# decision 3): a root slot as the device holds it. The ext4 with its hash
# tree (dm-verity-img's ext4.verity) from offset 0 and the slot's signed FIT
# in the last PYVORIN_FIT_WINDOW_MB MiB of the PYVORIN_ROOTFS_SLOT_SIZE MiB
# partition, where U-Boot's boot logic reads it. The wks copies it into
# slot A; a bundle writes the same two pieces into the slot it updates
# (pyvorin_bundle.bbclass). Added to every image by pyvorin-verity.inc
# (IMAGE_CLASSES); only an image that asks for the type builds it.

IMAGE_TYPES += "pyvorin-slot"
# (":pyvorin-slot" is the image type image.bbclass reads, not an override.)
# nooelint: oelint.vars.specific
IMAGE_TYPEDEP:pyvorin-slot = "ext4.verity"
# The FIT: linux-raspberrypi's deploy (kernel-fitimage), whose initramfs
# carries this image's root hash.
do_image_pyvorin_slot[depends] += "virtual/kernel:do_deploy"

# Sparse: the gap between the hash tree and the FIT costs nothing on disk.
# (IMAGE_CMD:<type> is image.bbclass's name for the type's command, which runs
# in do_image_pyvorin_slot: no task of its own to name without a dash.)
# nooelint: oelint.task.dash,oelint.task.docstrings
IMAGE_CMD:pyvorin-slot () {
    slot=$(expr ${PYVORIN_ROOTFS_SLOT_SIZE} \* 1048576)
    offset=${PYVORIN_FIT_OFFSET}
    verity="${IMGDEPLOYDIR}/${IMAGE_NAME}.ext4.verity"
    fit="${DEPLOY_DIR_IMAGE}/${PYVORIN_VERITY_FIT}"
    out="${IMGDEPLOYDIR}/${IMAGE_NAME}.pyvorin-slot"
    [ -f "$fit" ] || bbfatal "pyvorin-slot: no FIT $fit (linux-raspberrypi with kernel-fitimage deploys it)"
    size=$(stat -L -c %s "$verity")
    [ "$size" -le "$offset" ] || bbfatal "pyvorin-slot: ${IMAGE_NAME}.ext4.verity is $size bytes and reaches the FIT window at $offset; raise PYVORIN_ROOTFS_SLOT_SIZE"
    fitsize=$(stat -L -c %s "$fit")
    [ "$fitsize" -le $(expr $slot - $offset) ] || bbfatal "pyvorin-slot: the FIT is $fitsize bytes, more than the ${PYVORIN_FIT_WINDOW_MB} MiB window (PYVORIN_FIT_WINDOW_MB)"
    rm -f "$out"
    truncate -s "$slot" "$out"
    dd if="$verity" of="$out" bs=1M conv=notrunc,sparse status=none
    dd if="$fit" of="$out" bs=512 seek=$(expr $offset / 512) conv=notrunc status=none
}
do_image_pyvorin_slot[vardeps] += "PYVORIN_ROOTFS_SLOT_SIZE PYVORIN_FIT_OFFSET PYVORIN_FIT_WINDOW_MB PYVORIN_VERITY_FIT"
