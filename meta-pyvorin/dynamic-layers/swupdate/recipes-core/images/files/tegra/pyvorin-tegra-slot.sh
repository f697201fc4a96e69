#!/bin/sh
# SWUpdate post-install step on Jetson (L4T R36, UEFI, meta-tegra with
# USE_REDUNDANT_FLASH_LAYOUT = "1"): the image was just written to the other
# rootfs slot (copy1 runs on slot 0 and writes APP_b, copy2 the reverse);
# make that slot the one UEFI boots next. UEFI counts its boots down
# (RootfsRetryCountMax) until pyvorin-confirm runs "nvbootctrl verify" with a
# healthy agent; when the count runs out UEFI marks the slot unbootable and
# boots the previous one. Proven by parse only (docs/rollback.md).
set -eu

# SWUpdate's shellscript handler calls post-install scripts with "postinst".
[ "${1:-}" = postinst ] || exit 0

current=$(nvbootctrl -t rootfs get-current-slot)
case $current in
    0) next=1 ;;
    1) next=0 ;;
    *)
        echo "pyvorin-tegra-slot: unexpected current rootfs slot '$current'" >&2
        exit 1
        ;;
esac
nvbootctrl -t rootfs set-active-boot-slot "$next"
echo "pyvorin-tegra-slot: rootfs slot $next boots next (running $current)"
