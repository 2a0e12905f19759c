#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Guest script: the VFIO conformance suite (tests/vfio/vfio-conformance)
# against the kernel back end and real vfmig_testmdev devices: one device,
# a peer of the same type to resume into, and a device of the other type
# whose stream must be refused. Runs once with the small type as the device
# and once with the large one.
set -u
. "$(dirname "$0")/lib.sh"

BIN=${VFMIG_BUILD_DIR:+$VFMIG_BUILD_DIR/tests/vfio/vfio-conformance}
if [ -z "${VFMIG_BUILD_DIR:-}" ]; then
    die "vfio-conformance not built: no build dir given (run-vm.sh --build-dir DIR)"
fi
if [ ! -x "$BIN" ]; then
    die "vfio-conformance not built: $BIN does not exist (build tests/vfio first)"
fi

tm_load "${1:-1}"
S1=$(tm_create small) && S2=$(tm_create small) && L1=$(tm_create large) && L2=$(tm_create large) \
    || die "creating test instances failed"
declare -A G
for u in $S1 $S2 $L1 $L2; do
    G[$u]=$(tm_group "$u") || die "no /dev/vfio group for $u"
done

# Linux 6.1 has neither PRE_COPY nor VFIO_DEVICE_FEATURE_MIG_DATA_SIZE (both
# 6.2); the suite checks that the kernel reports them absent.
ABSENT=pre-copy,data-size
run() { # run DEV PEER INCOMPATIBLE
    echo "== vfio-conformance: device $(basename "$(readlink /sys/bus/mdev/devices/$1/mdev_type)")"
    echo "+ $BIN --backend=kernel --device=$1 --group=${G[$1]} --peer=$2 --peer-group=${G[$2]} --incompatible=$3 --incompatible-group=${G[$3]} --absent=$ABSENT"
    if "$BIN" --backend=kernel --device="$1" --group="${G[$1]}" --absent="$ABSENT" \
              --peer="$2" --peer-group="${G[$2]}" \
              --incompatible="$3" --incompatible-group="${G[$3]}"; then
        ok "vfio-conformance ($1)"
    else
        bad "vfio-conformance ($1) exited with $?"
    fi
}
run "$S1" "$S2" "$L1"
run "$L1" "$L2" "$S1"

for u in $S1 $S2 $L1 $L2; do
    tm_remove "$u" || bad "remove $u"
done
rmmod $TM_MOD || bad "rmmod $TM_MOD"
SPLATS=$(kernel_splats)
[ -z "$SPLATS" ] || { bad "kernel log has warnings/oopses:"; echo "$SPLATS"; }

echo "conformance: $FAILS failure(s)"
[ "$FAILS" = 0 ]
