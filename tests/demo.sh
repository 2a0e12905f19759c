#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Demonstration of vfmig's main job on two simulated hosts, each with its
# own private system bus (the shipped bus policy applies) and its own vfmigd:
# profile on the source -> compatible targets on the target -> reserve ->
# prepare the incoming side -> migrate with progress -> verified result.
# Usage: tests/demo.sh BUILD-DIR      (run by `bash tests/quickstart demo`)
set -euo pipefail

build=${1:?usage: demo.sh BUILD-DIR}
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/vfmig-demo.XXXXXX)
ctl="$build/client/vfmigctl"
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1;34m### %s\033[0m\n' "$*"; }
run() { printf '\033[1m%s$ %s\033[0m\n' "${HOSTTAG:-}" "$*"; "$@"; }

# start_host NAME HOSTFILE: a private system bus and vfmigd for one host.
start_host() {
  local name=$1 file=$2 addr
  mkdir -p "$work/$name/state" "$work/$name/cache"
  dbus-daemon --config-file="$build/tests/bus/system-bus.conf" --nofork --print-address=3 \
    3>"$work/$name/address" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$work/$name/address" ] && break; sleep 0.05; done
  addr=$(head -n1 "$work/$name/address")
  DBUS_SYSTEM_BUS_ADDRESS=$addr STATE_DIRECTORY="$work/$name/state" CACHE_DIRECTORY="$work/$name/cache" \
    "$build/daemon/vfmigd" --simulate "$top/data/sim/$file" --rules "$top/data/compat.d" \
    --admin-rules /nonexistent --config /nonexistent >/dev/null 2>"$work/$name/vfmigd.log" &
  pids+=($!)
  for _ in $(seq 200); do
    DBUS_SYSTEM_BUS_ADDRESS=$addr busctl --system status org.vfmig1 >/dev/null 2>&1 && break
    sleep 0.05
  done
  DBUS_SYSTEM_BUS_ADDRESS=$addr busctl --system status org.vfmig1 >/dev/null
  bus[$name]=$addr
}

on() { local host=$1; shift; HOSTTAG="[$host] " DBUS_SYSTEM_BUS_ADDRESS=${bus[$host]} "$@"; }

declare -A bus
step "two simulated hosts, each with its own system bus and vfmigd"
start_host a host-a.json
start_host b host-b.json
echo "host a (sim-host-a): ${bus[a]}"
echo "host b (sim-host-b): ${bus[b]}"
on a run "$ctl" devices
on b run "$ctl" devices

src=0000:17:00.1
step "source: the device's migration profile, and a pattern in its memory"
on a run "$ctl" profile "$src"
on a "$ctl" profile "$src" --json > "$work/profile.json"
on a run "$top/tests/demo-memory.py" write "$src"

step "target: where can this state be resumed? (and where not, with the reason)"
on b run "$ctl" targets "$work/profile.json"
on b run "$ctl" check "$work/profile.json" 0000:31:00.4 || true

tgt=$(on b "$ctl" targets "$work/profile.json" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["target"])')
step "target: reserve $tgt and prepare the incoming side"
rid=$(on b "$ctl" reserve "$tgt" --profile "$work/profile.json" --persist | awk '{print $1}')
echo "reservation $rid"
on b run "$ctl" reservations
read -r endpoint ticket < <(on b "$ctl" receive "$rid" 127.0.0.1)
echo "endpoint $endpoint, single-use ticket ${ticket:0:8}..."

step "source: migrate (TLS 1.3 with a PSK from the ticket)"
on a run "$ctl" migrate "$src" --to "$endpoint" --ticket "$ticket"

step "the result"
on a run "$ctl" jobs
on b run "$ctl" jobs
on a run "$ctl" show "$src" | grep -E 'Name|Migration state|Status'
on b run "$ctl" show "$tgt" | grep -E 'Name|Migration state|Status'
# The source keeps running (and dirtying its memory) until the stop-copy
# phase; it is stopped now, so its memory is exactly what was sent.
on a run "$top/tests/demo-memory.py" digest "$src" | tee "$work/source.digest"
on b run "$top/tests/demo-memory.py" digest "$tgt" | tee "$work/target.digest"
if [ "$(grep -o "sha256 .*" "$work/source.digest")" = "$(grep -o "sha256 .*" "$work/target.digest")" ] &&
   grep -q "pattern present" "$work/target.digest"; then
  echo "device state on the target equals the source's: verified"
else
  echo "device state differs between source and target" >&2
  exit 1
fi
on b run "$ctl" release "$rid"

step "vfmigd's logs"
sed 's/^/[a] /' "$work/a/vfmigd.log" | tail -n 8
sed 's/^/[b] /' "$work/b/vfmigd.log" | tail -n 8
echo
echo "demo finished: OK"
