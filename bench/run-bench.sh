#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Build, then run every benchmark registered in bench/meson.build (one at a
# time: meson never runs benchmarks in parallel) and print every figure,
# then a summary of the targets and ratios.
#
#   bench/run-bench.sh [--build-dir DIR] [NAME...] [-- MESON-TEST-ARGS...]
#
#   NAME             only these benchmarks (e.g. bench-query)
#   --build-dir DIR  default: build (set up with meson if missing)
#   after --         passed to `meson test`, e.g. --test-args='--rounds 20000'
#
# The figures depend on the machine and on what else runs: the header prints
# the load average before and after; compare ratios measured in one run, not
# absolute times across runs.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build="$top/build"
names=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build=$(realpath -m "$2"); shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '3,16p' "$0"; exit 0 ;;
    *) names+=("$1"); shift ;;
  esac
done

if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$top"
fi
ninja -C "$build"

load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "# vfmig benchmarks"
echo "# commit $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)"
echo "# $(uname -srm), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "# load average before: $(load)"

rc=0
meson test -C "$build" --benchmark --logbase benchmarklog --print-errorlogs "${extra[@]}" "${names[@]}" || rc=$?

echo "# load average after: $(load)"
log="$build/meson-logs/benchmarklog.json"
if [ -f "$log" ]; then
  echo "# ---- summary: targets and ratios ----"
  /usr/bin/python3 - "$log" <<'PY'
import json, re, sys
keys = re.compile(r'(target_met|_vs_|_ratio |(cold|warm)(_ms|\.median_ms) |matrix_phase |update\.(median|p99)_us |'
                  r'query\.(ping|find)\.(median|p99)_us |loadavg)')
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"## {r['name']}: {r['result']} ({r.get('duration', 0):.1f} s)")
    for l in (r.get('stdout') or '').splitlines():
        if keys.search(l + ' ') and not l.startswith('#'):
            print(l)
PY
fi
exit $rc
