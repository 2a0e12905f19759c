#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Guest script: reservations of a creatable mdev type on the real kernel —
# the real vfmigd (host mode) creates a vfmig_testmdev instance through
# sysfs for Reserve("vfmig_testmdev/vfmig_testmdev-small") and removes it
# when the reservation ends (Release, owner gone, expiry, after kill -9 and a
# restart), while it holds the device; an instance it did not create stays.
# The checks are in test_reserve_guest.py (unittest); this script sets the
# stage as compat.sh does: the module, systemd-udevd, the private bus, no
# instance left behind, and a clean kernel log at the end.
set -u
. "$(dirname "$0")/lib.sh"

[ -n "${VFMIG_BUILD_DIR:-}" ] || die "no build dir given (run-vm.sh --build-dir DIR)"
VFMIGD=$VFMIG_BUILD_DIR/daemon/vfmigd
BUS_CONF=$VFMIG_BUILD_DIR/tests/bus/system-bus.conf
[ -x "$VFMIGD" ] || die "vfmigd not built: $VFMIGD"
[ -f "$BUS_CONF" ] || die "bus config not generated: $BUS_CONF"
[ -f "$VFMIG_SRC_DIR/data/compat.d/vfmig-testmdev.json" ] || die "the test driver's rules file is missing"

echo "== load"
tm_load

echo "== systemd-udevd"
UDEVD=/lib/systemd/systemd-udevd
[ -x $UDEVD ] || die "$UDEVD missing (tests/vm/setup.sh installs udev)"
SYSTEMD_LOG_LEVEL=warning $UDEVD --daemon --resolve-names=never || die "systemd-udevd did not start"
for i in $(seq 100); do
    [ -S /run/udev/control ] && break
    sleep 0.1
done
[ -S /run/udev/control ] || die "systemd-udevd: no /run/udev/control"

echo "== private system bus"
ADDR_FILE=$(mktemp)
dbus-daemon --config-file="$BUS_CONF" --nofork --print-address=3 3>"$ADDR_FILE" &
BUS_PID=$!
for i in $(seq 100); do
    [ -s "$ADDR_FILE" ] && break
    kill -0 $BUS_PID 2>/dev/null || die "dbus-daemon exited"
    sleep 0.1
done
DBUS_SYSTEM_BUS_ADDRESS=$(head -n1 "$ADDR_FILE")
[ -n "$DBUS_SYSTEM_BUS_ADDRESS" ] || die "dbus-daemon printed no address"
export DBUS_SYSTEM_BUS_ADDRESS
echo "bus: $DBUS_SYSTEM_BUS_ADDRESS (pid $BUS_PID)"

echo "== vfmigd reservations of a creatable type on the real kernel"
export VFMIG_BUILD_ROOT=$VFMIG_BUILD_DIR VFMIG_SOURCE_ROOT=$VFMIG_SRC_DIR
export VFMIG_VFMIGD_LOG=/tmp/vfmigd-reserve.log
export PYTHONDONTWRITEBYTECODE=1
if timeout -k 5 150 /usr/bin/python3 "$(dirname "$0")/test_reserve_guest.py"; then
    ok "test_reserve_guest.py"
else
    bad "test_reserve_guest.py"
fi
echo "---- vfmigd log ----"
cat "$VFMIG_VFMIGD_LOG" 2>/dev/null
echo "---- end of vfmigd log ----"

kill $BUS_PID 2>/dev/null
wait $BUS_PID 2>/dev/null
udevadm control --exit 2>/dev/null || bad "systemd-udevd exit"
# The test removes its instances; anything left would keep the module in.
for u in /sys/bus/mdev/devices/*; do
    [ -e "$u" ] || continue
    bad "instance left behind: $(basename "$u")"
    tm_remove "$(basename "$u")"
done
grep -q "^$TM_MOD " /proc/modules && { rmmod $TM_MOD || bad "final rmmod"; }

echo "== kernel log"
SPLATS=$(kernel_splats)
if [ -n "$SPLATS" ]; then
    bad "kernel log has warnings/oopses:"
    echo "$SPLATS"
else
    ok "no WARNING/Oops/BUG in dmesg"
fi
dmesg | grep -iE "$TM_MOD|vfio" | tail -n 20

echo "reserve: $FAILS failure(s)"
[ "$FAILS" = 0 ]
