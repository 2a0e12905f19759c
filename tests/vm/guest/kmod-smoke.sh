#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Guest script: smoke test of the vfmig_testmdev kernel module on the real
# kernel. Load, types, create, /dev/vfio/<group>, migration_version
# (read + write-and-test), migration/ attributes, a raw-uAPI migration self
# test, removal while a device is held (the request channel), remove, unload,
# and a clean kernel log.
set -u
. "$(dirname "$0")/lib.sh"

echo "== load"
tm_load
check "module loaded" grep -q "^$TM_MOD " /proc/modules
check "stream_version defaults to 1" test "$(cat /sys/module/$TM_MOD/parameters/stream_version)" = 1
for t in small large; do
    d=$TM_TYPES/$TM_MOD-$t
    check "type $TM_MOD-$t exists" test -d "$d"
    check "$t: device_api vfio-platform" test "$(cat "$d/device_api" 2>/dev/null)" = vfio-platform
    check "$t: available_instances 16" test "$(cat "$d/available_instances" 2>/dev/null)" = 16
    check "$t: description" grep -q "migration stream v1" "$d/description"
done

echo "== create"
S1=$(tm_create small) || die "create small failed"
S2=$(tm_create small) || die "create second small failed"
L1=$(tm_create large) || die "create large failed"
check "available_instances drops to 14" test "$(cat $TM_TYPES/$TM_MOD-small/available_instances)" = 14
declare -A G
for u in $S1 $S2 $L1; do
    G[$u]=$(tm_group "$u") || { bad "no /dev/vfio group for $u"; continue; }
    ok "$u -> /dev/vfio/${G[$u]}"
    check "$u bound to $TM_MOD" test "$(basename "$(readlink /sys/bus/mdev/devices/$u/driver)")" = $TM_MOD
done
check "groups differ" test "${G[$S1]}" != "${G[$S2]}"
check "duplicate UUID refused" bash -c "! echo $S1 > $TM_TYPES/$TM_MOD-small/create 2>/dev/null"

echo "== migration_version"
mver() { cat "/sys/bus/mdev/devices/$1/migration_version"; }
wv() { echo "$2" >"/sys/bus/mdev/devices/$1/migration_version" 2>/dev/null; }
check "small reads $TM_MOD-small-v1" test "$(mver $S1)" = "$TM_MOD-small-v1"
check "large reads $TM_MOD-large-v1" test "$(mver $L1)" = "$TM_MOD-large-v1"
check "small accepts small's string" wv $S2 "$(mver $S1)"
check "large accepts large's string" wv $L1 "$(mver $L1)"
check "small refuses large's string" bash -c "! (echo '$(mver $L1)' > /sys/bus/mdev/devices/$S1/migration_version) 2>/dev/null"
check "large refuses small's string" bash -c "! (echo '$(mver $S1)' > /sys/bus/mdev/devices/$L1/migration_version) 2>/dev/null"
check "refuses a newer version (v2 on a v1 host)" bash -c "! (echo $TM_MOD-small-v2 > /sys/bus/mdev/devices/$S1/migration_version) 2>/dev/null"
check "refuses v0" bash -c "! (echo $TM_MOD-small-v0 > /sys/bus/mdev/devices/$S1/migration_version) 2>/dev/null"
check "refuses garbage" bash -c "! (echo nonsense > /sys/bus/mdev/devices/$S1/migration_version) 2>/dev/null"
check "refuses trailing junk" bash -c "! (echo $TM_MOD-small-v1x > /sys/bus/mdev/devices/$S1/migration_version) 2>/dev/null"
echo 3 > /sys/module/$TM_MOD/parameters/stream_version
check "stream_version set to 3 at run time" test "$(cat /sys/module/$TM_MOD/parameters/stream_version)" = 3
check "small now reads -v3" test "$(mver $S1)" = "$TM_MOD-small-v3"
check "a v3 host accepts v1 (older)" wv $S1 "$TM_MOD-small-v1"
check "a v3 host accepts v3" wv $S1 "$TM_MOD-small-v3"
check "a v3 host refuses v4" bash -c "! (echo $TM_MOD-small-v4 > /sys/bus/mdev/devices/$S1/migration_version) 2>/dev/null"
check "stream_version 0 refused" bash -c "! (echo 0 > /sys/module/$TM_MOD/parameters/stream_version) 2>/dev/null"

echo "== migration/ attributes"
for u in $S1 $L1; do
    d=/sys/bus/mdev/devices/$u/migration
    t=$(basename "$(readlink /sys/bus/mdev/devices/$u/mdev_type)")
    check "$t: migration/device_api" test "$(cat $d/device_api)" = vfio-platform
    check "$t: migration/mdev_type" test "$(cat $d/mdev_type)" = "$t"
    check "$t: migration/software_version" test "$(cat $d/software_version)" = 3
    check "$t: migration/compatible_type" test "$(cat $d/compatible_type)" = "$t"
    check "$t: migration/compatible_software_version" test "$(cat $d/compatible_software_version)" = 1-3
    check "$t: migration/ is read-only" bash -c "! (echo x > $d/software_version) 2>/dev/null"
done

echo "== raw VFIO migration self test (stream_version 3)"
if /usr/bin/python3 "$(dirname "$0")/vfio-selftest.py" $S1 ${G[$S1]} $S2 ${G[$S2]} $L1 ${G[$L1]}; then
    ok "vfio-selftest"
else
    bad "vfio-selftest"
fi
echo 1 > /sys/module/$TM_MOD/parameters/stream_version

echo "== device request: remove while the device is held"
for mode in armed unarmed; do
    R=$(tm_create small) || { bad "create for the $mode request test"; continue; }
    RG=$(tm_group "$R") || { bad "no /dev/vfio group for $R"; continue; }
    if /usr/bin/python3 "$(dirname "$0")/vfio-request.py" $mode "$R" "$RG"; then
        ok "vfio-request $mode"
    else
        bad "vfio-request $mode"
    fi
done

echo "== remove and unload"
for u in $S1 $S2 $L1; do
    check "remove $u" tm_remove "$u"
    check "$u gone" test ! -e "/sys/bus/mdev/devices/$u"
done
# One instance left in place: rmmod must tear it down itself.
L2=$(tm_create large) || bad "create before rmmod"
check "rmmod with a live instance" rmmod $TM_MOD
check "module gone" bash -c "! grep -q '^$TM_MOD ' /proc/modules"
check "parent gone" test ! -e "$TM_PARENT"
check "reload with stream_version=2" tm_load 2
check "v2 after reload" test "$(cat /sys/module/$TM_MOD/parameters/stream_version)" = 2
check "final rmmod" rmmod $TM_MOD

echo "== kernel log"
SPLATS=$(kernel_splats)
if [ -n "$SPLATS" ]; then
    bad "kernel log has warnings/oopses:"
    echo "$SPLATS"
else
    ok "no WARNING/Oops/BUG in dmesg"
fi
dmesg | grep -i "$TM_MOD" | tail -n 20

echo "kmod-smoke: $FAILS failure(s)"
[ "$FAILS" = 0 ]
