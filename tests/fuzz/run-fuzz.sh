#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# run-fuzz.sh FUZZER SEED-CORPUS [LIBFUZZER-OPTIONS...]
#
# One short libFuzzer run: new inputs go to a fresh work directory (removed
# afterwards), the seed corpus in the tree is only read.  libFuzzer writes
# what it finds into the first corpus directory it is given.
set -eu
fuzzer=$1 seeds=$2
shift 2
[ -d "$seeds" ] || { echo "run-fuzz.sh: no seed corpus at $seeds" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/vfmig-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
rc=0
"$fuzzer" "$@" "$work" "$seeds" || rc=$?
# libFuzzer exits 77 on a finding (crash, leak, timeout), which meson would
# report as a skipped test: a finding is a failure.
[ "$rc" -ne 77 ] || { echo "run-fuzz.sh: $fuzzer found a problem (exit 77), see above" >&2; rc=1; }
exit $rc
