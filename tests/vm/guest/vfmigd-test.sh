#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Guest script: the real vfmigd (host mode, sd-device inventory, kernel VFIO
# back end) on the real kernel with vfmig_testmdev devices, on a private
# system bus whose config includes the shipped policy.  It sets the stage —
# the module, systemd-udevd, the bus — runs tests/vm/guest/test_NAME_guest.py
# (unittest) and checks that the kernel log is clean at the end.
#
#   vfmigd-test.sh daemon            inventory, OpenDevice, request channel
#   vfmigd-test.sh compat 2          compatibility (module at stream_version=2,
#                                    so one boot can play an older host)
#   vfmigd-test.sh reserve           reservations of a creatable mdev type
#   vfmigd-test.sh migrate           two daemons (a second private bus started
#                                    by the test), an instance migrated
#
# systemd-udevd runs as on a real host (vfmigd.service is After= it):
# vfmigd's sd-device monitor listens to udev's netlink group, which only
# udevd feeds; without it vfmigd sees no hotplug at all.
set -u
. "$(dirname "$0")/lib.sh"

NAME=${1:?usage: vfmigd-test.sh NAME [STREAM_VERSION]}
STREAM_VERSION=${2:-}
TEST="$(dirname "$0")/test_${NAME}_guest.py"
[ -f "$TEST" ] || die "no such guest test: $TEST"
[ -n "${VFMIG_BUILD_DIR:-}" ] || die "no build dir given (run-vm.sh --build-dir DIR)"
VFMIGD=$VFMIG_BUILD_DIR/daemon/vfmigd
BUS_CONF=$VFMIG_BUILD_DIR/tests/bus/system-bus.conf
[ -x "$VFMIGD" ] || die "vfmigd not built: $VFMIGD"
[ -f "$BUS_CONF" ] || die "bus config not generated: $BUS_CONF"
[ -f "$VFMIG_SRC_DIR/data/compat.d/vfmig-testmdev.json" ] || die "the test driver's rules file is missing"

echo "== load ${STREAM_VERSION:+(stream_version=$STREAM_VERSION)}"
tm_load $STREAM_VERSION

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

echo "== vfmigd on the real kernel: $NAME"
export VFMIG_BUILD_ROOT=$VFMIG_BUILD_DIR VFMIG_SOURCE_ROOT=$VFMIG_SRC_DIR
export VFMIG_VFMIGD_LOG=/tmp/vfmigd-$NAME.log
export PYTHONDONTWRITEBYTECODE=1
if timeout -k 5 180 /usr/bin/python3 "$TEST"; then
    ok "$(basename "$TEST")"
else
    bad "$(basename "$TEST")"
fi
# The test's daemon(s): $VFMIG_VFMIGD_LOG, a second one beside it (-target).
for log in "$VFMIG_VFMIGD_LOG" "${VFMIG_VFMIGD_LOG%.log}"-*.log; do
    [ -f "$log" ] || continue
    echo "---- vfmigd log $(basename "$log") ----"
    cat "$log"
    echo "---- end of vfmigd log $(basename "$log") ----"
done

kill $BUS_PID 2>/dev/null
wait $BUS_PID 2>/dev/null
udevadm control --exit 2>/dev/null || bad "systemd-udevd exit"
# Every test removes its instances; anything left would keep the module in.
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

echo "$NAME: $FAILS failure(s)"
[ "$FAILS" = 0 ]
