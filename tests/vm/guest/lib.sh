# SPDX-License-Identifier: LGPL-2.1-or-later
# Helpers for guest scripts (sourced; runs under bash inside the VM's chroot).

TM_MOD=vfmig_testmdev
TM_PARENT=/sys/class/mdev_bus/$TM_MOD
TM_TYPES=$TM_PARENT/mdev_supported_types

FAILS=0
ok() { echo "  ok   $*"; }
bad() { echo "  FAIL $*"; FAILS=$((FAILS + 1)); }
check() { # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}
die() { echo "FATAL: $*"; exit 1; }

# tm_load [stream_version]
tm_load() {
    modprobe $TM_MOD ${1:+stream_version=$1} || die "modprobe $TM_MOD failed"
    local i
    for i in $(seq 50); do
        [ -d "$TM_TYPES" ] && return 0
        sleep 0.1
    done
    die "$TM_PARENT did not appear"
}

# tm_create TYPE -> prints the new instance's UUID
tm_create() {
    local uuid
    uuid=$(cat /proc/sys/kernel/random/uuid)
    echo "$uuid" >"$TM_TYPES/$TM_MOD-$1/create" || return 1
    echo "$uuid"
}

# tm_group UUID -> prints the VFIO group number, waits for /dev/vfio/N
tm_group() {
    local g i
    g=$(basename "$(readlink "/sys/bus/mdev/devices/$1/iommu_group")") || return 1
    for i in $(seq 50); do
        [ -c "/dev/vfio/$g" ] && { echo "$g"; return 0; }
        sleep 0.1
    done
    return 1
}

tm_remove() { echo 1 >"/sys/bus/mdev/devices/$1/remove"; }

# Kernel log problems since boot (our module taints the kernel; that is fine).
kernel_splats() {
    dmesg | grep -E 'WARNING:|Oops|BUG:|Call Trace|general protection|kernel BUG' || true
}
