#!/bin/sh
# SWUpdate post-install step on Jetson (L4T R36, UEFI, meta-tegra with
# USE_REDUNDANT_FLASH_LAYOUT = "1"): the image was just written to the other
# rootfs slot (copy1 runs on slot 0 and writes APP_b, copy2 the reverse);
# make that slot the one UEFI boots next. UEFI counts its boots down
# (RootfsRetryCountMax) until pyvorin-confirm runs "nvbootctrl verify" with a
# healthy agent; when the count runs out UEFI marks the slot unbootable and
# boots the previous one.
#
# That mark stays: NVIDIA's UEFI (edk2-nvidia L4TRootfsValidation) keeps it in
# the non-volatile variable RootfsStatusSlotA/B (0 normal, 0xFF unbootable),
# and since L4T R35.2 no nvbootctrl command clears it. When the boot chain
# switches, UEFI starts the slot's retry count from that variable: an
# unbootable mark gives it no tries, so the freshly written slot would be
# skipped at once. The slot now holds a new image, so its mark is reset to
# normal before it is made active, as the UEFI menu does by hand (Device
# Manager, NVIDIA Configuration, L4T Configuration, OS chain status).
set -eu

# SWUpdate's shellscript handler calls post-install scripts with "postinst".
[ "${1:-}" = postinst ] || exit 0

# NVIDIA's public variable GUID (gNVIDIAPublicVariableGuid).
GUID=781e084c-a330-417c-b678-38e696380cb9
EFIVARS=${PYVORIN_EFIVARS:-/sys/firmware/efi/efivars}

fail() {
    echo "pyvorin-tegra-slot: $*" >&2
    exit 1
}

# efivarfs: 4 bytes of attributes, then the UINT32 value, little-endian.
status_of() {  # variable file -> its value as 8 hex digits, "" if unreadable
    od -An -v -tx1 -j4 -N4 "$1" 2>/dev/null | tr -d ' \n'
}

reset_status() {  # slot letter
    var="$EFIVARS/RootfsStatusSlot$1-$GUID"
    [ -f "$var" ] || fail "no $var: rootfs A/B redundancy is not enabled in the firmware"
    status=$(status_of "$var")
    case $status in
        00000000) return 0 ;;
        ????????) ;;
        *) fail "cannot read $var" ;;
    esac
    # efivarfs makes vendor variables immutable; a file system without the
    # flag (or an already mutable file) is fine, the write below decides.
    chattr -i "$var" 2>/dev/null || true
    # Attributes NON_VOLATILE|BOOTSERVICE_ACCESS|RUNTIME_ACCESS (7), value 0,
    # in one write as efivarfs requires.
    printf '\007\000\000\000\000\000\000\000' > "$var" || fail "cannot reset $var"
    [ "$(status_of "$var")" = 00000000 ] || fail "$var still reads $(status_of "$var") after the reset"
    echo "pyvorin-tegra-slot: UEFI had marked rootfs slot $1 unbootable (value bytes $status); reset to normal for the new image"
}

current=$(nvbootctrl -t rootfs get-current-slot)
case $current in
    0) next=1 letter=B ;;
    1) next=0 letter=A ;;
    *) fail "unexpected current rootfs slot '$current'" ;;
esac
reset_status "$letter"
nvbootctrl -t rootfs set-active-boot-slot "$next"
echo "pyvorin-tegra-slot: rootfs slot $next boots next (running $current)"
