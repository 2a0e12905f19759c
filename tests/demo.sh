#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Demonstration on a private system bus (the shipped bus policy applies):
# vfmigd serves a simulated host; vfmigctl and busctl query it.
# Usage: tests/demo.sh BUILD-DIR      (run by `bash tests/quickstart demo`)
set -euo pipefail

build=${1:?usage: demo.sh BUILD-DIR}
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/vfmig-demo.XXXXXX)
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1;34m### %s\033[0m\n' "$*"; }
run() { printf '\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "a private system bus with vfmig's bus policy"
dbus-daemon --config-file="$build/tests/bus/system-bus.conf" --nofork --print-address=3 3>"$work/address" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/address" ] && break; sleep 0.05; done
export DBUS_SYSTEM_BUS_ADDRESS=$(head -n1 "$work/address")
echo "DBUS_SYSTEM_BUS_ADDRESS=$DBUS_SYSTEM_BUS_ADDRESS"

step "vfmigd on the simulated host data/sim/host-a.json"
"$build/daemon/vfmigd" --simulate "$top/data/sim/host-a.json" 2>"$work/vfmigd.log" &
pids+=($!)
for _ in $(seq 100); do
  busctl --system status org.vfmig1 >/dev/null 2>&1 && break
  sleep 0.05
done
busctl --system status org.vfmig1 >/dev/null

ctl="$build/client/vfmigctl"
step "what vfmigctl sees"
run "$ctl" status
run "$ctl" devices
run "$ctl" types
run "$ctl" show 0000:17:00.1
step "the same through busctl"
run busctl --system tree org.vfmig1
run busctl --system call org.vfmig1 /org/vfmig1 org.vfmig1.Manager GetDevice s 0000:17:00.1
run busctl --system introspect org.vfmig1 /org/vfmig1/device/_30000_3a17_3a00_2e1 org.vfmig1.Device
step "an unprivileged user may query"
run setpriv --reuid=65534 --regid=65534 --clear-groups -- "$ctl" devices --json
step "an unknown device is a typed error"
run busctl --system call org.vfmig1 /org/vfmig1 org.vfmig1.Manager GetDevice s 0000:99:00.0 || true
step "vfmigd's log"
cat "$work/vfmigd.log"
echo
echo "demo finished: OK"
