#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# tests/vm/run-vm.sh — run one guest script inside Debian's own kernel under
# QEMU TCG, with the vfmig test mdev module, and return its verdict.
#
#   run-vm.sh [--build-dir DIR] [--log FILE] [--timeout SEC] [--shell]
#             [--require FILE]... [--] GUEST-SCRIPT [ARGS...]
#
# The guest sees the host's root read-only over 9p (overlay with a tmpfs
# upper layer, chrooted, fresh proc/sys/dev), so it runs the host's freshly
# built binaries at their host paths. GUEST-SCRIPT runs under bash in that
# chroot with these variables set:
#   VFMIG_BUILD_DIR  the meson build dir (--build-dir; empty if not given)
#   VFMIG_SRC_DIR    the source tree root
#   VFMIG_VM_ABI     the guest kernel release
# The exit status of GUEST-SCRIPT comes back as this script's exit status
# (through a marker line "VFMIG-VM-RESULT <nonce>: <status>" on the serial
# console); a missing or repeated marker, a timeout, or a kernel warning/oops
# in the guest is a failure. The console is saved to the log file and printed
# always (on stdout after a pass, on stderr after a failure; VFMIG_VM_QUIET=1
# prints it only on failure).
#
# --require FILE fails at once, without booting, unless FILE is an
# executable (e.g. a test binary the guest script runs).
# --shell boots the same VM with an interactive shell (see shell.sh).
#
# Environment: VFMIG_VM_CACHE (default /var/cache/vfmig-vm), VFMIG_VM_TIMEOUT
# (default 240 s), VFMIG_VM_MEM (MiB, default 1024), VFMIG_VM_SMP (default 2),
# VFMIG_BUILD_DIR (default for --build-dir), VFMIG_VM_QUIET=1 (no timings).

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_DIR=$(cd "$HERE/../.." && pwd)
CACHE=${VFMIG_VM_CACHE:-/var/cache/vfmig-vm}
TIMEOUT=${VFMIG_VM_TIMEOUT:-240}
MEM=${VFMIG_VM_MEM:-1024}
SMP=${VFMIG_VM_SMP:-2}
BUILD_DIR=${VFMIG_BUILD_DIR:-}
LOG=
SHELL_MODE=0
REQUIRE=()

# Modules the initramfs loads at boot, in this order (dependencies are
# resolved with modprobe --show-depends against the extracted kernel).
BASE_MODULES="virtio_pci 9pnet_virtio 9p overlay vfio vfio_iommu_type1 mdev"

die() { echo "run-vm: ERROR: $*" >&2; exit 2; }
note() { [ "${VFMIG_VM_QUIET:-0}" = 1 ] || echo "run-vm: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

usage() {
    sed -n '4,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --build-dir) BUILD_DIR=${2:?}; shift 2 ;;
        --build-dir=*) BUILD_DIR=${1#*=}; shift ;;
        --log) LOG=${2:?}; shift 2 ;;
        --log=*) LOG=${1#*=}; shift ;;
        --timeout) TIMEOUT=${2:?}; shift 2 ;;
        --timeout=*) TIMEOUT=${1#*=}; shift ;;
        --shell) SHELL_MODE=1; shift ;;
        --require) REQUIRE+=("${2:?}"); shift 2 ;;
        --require=*) REQUIRE+=("${1#*=}"); shift ;;
        -h|--help) usage ;;
        --) shift; break ;;
        -*) die "unknown option $1" ;;
        *) break ;;
    esac
done

SCRIPT=
if [ $# -gt 0 ]; then
    SCRIPT=$(realpath -e "$1") || die "guest script $1 not found"
    shift
elif [ $SHELL_MODE = 0 ]; then
    usage
fi
if [ -n "$BUILD_DIR" ]; then
    BUILD_DIR=$(realpath -e "$BUILD_DIR") || die "build dir not found"
    [ -d "$BUILD_DIR" ] || die "build dir $BUILD_DIR is not a directory"
fi
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "bad timeout '$TIMEOUT'"
for f in ${REQUIRE[@]+"${REQUIRE[@]}"}; do
    if [ ! -x "$f" ]; then
        echo "run-vm: FAIL: $f not built (needed by $(basename "${SCRIPT:-shell}"))" >&2
        exit 1
    fi
done

T0=$(now)

# ---- machine setup (idempotent, fast when done) ----------------------------
SETUP_OUT=$("$HERE/setup.sh") || die "tests/vm/setup.sh failed (see above)"
ABI=$(printf '%s\n' "$SETUP_OUT" | sed -n 's/^ABI=//p')
KROOT=$(printf '%s\n' "$SETUP_OUT" | sed -n 's/^KROOT=//p')
[ -n "$ABI" ] && [ -d "$KROOT" ] || die "setup.sh gave no ABI/kernel root"
VMLINUZ=$KROOT/boot/vmlinuz-$ABI
KBUILD=/lib/modules/$ABI/build
HDR_VER=$(dpkg-query -W -f='${Version}' "linux-headers-$ABI")
IMG_STAMP=$(stat -c %Y "$CACHE/$ABI/.complete")

ACACHE=$CACHE/$ABI
mkdir -p "$ACACHE"
exec 9>"$ACACHE/.lock"
flock 9

hash_of() { sha256sum | cut -c1-16; }

# ---- the test module, built out of the source tree -------------------------
KSRC=$HERE/kmod
KKEY=$( { echo "$ABI $HDR_VER"; cat "$KSRC/Kbuild" "$KSRC/vfmig_testmdev.c"; } | hash_of)
KDIR=$ACACHE/kmod-$KKEY
KO=$KDIR/vfmig_testmdev.ko
if [ ! -f "$KO" ]; then
    t=$(now)
    rm -rf "$KDIR.tmp"
    mkdir -p "$KDIR.tmp"
    cp "$KSRC/Kbuild" "$KSRC/vfmig_testmdev.c" "$KDIR.tmp/"
    if ! make -s -C "$KBUILD" M="$KDIR.tmp" modules >"$KDIR.tmp/build.log" 2>&1; then
        cat "$KDIR.tmp/build.log" >&2
        die "building vfmig_testmdev.ko against $ABI failed"
    fi
    if grep -E 'warning:|error:' "$KDIR.tmp/build.log" >&2; then
        die "vfmig_testmdev.c does not build cleanly against $ABI"
    fi
    [ -f "$KDIR.tmp/vfmig_testmdev.ko" ] || die "no vfmig_testmdev.ko produced"
    find "$ACACHE" -maxdepth 1 -name 'kmod-*' ! -name "kmod-$KKEY*" -exec rm -rf {} +
    rm -rf "$KDIR"
    mv "$KDIR.tmp" "$KDIR"
    note "module built in $(since "$t") s"
fi

# ---- the initramfs ----------------------------------------------------------
IKEY=$( { echo "$ABI $IMG_STAMP $BASE_MODULES"; cat "$HERE/guest-init.sh" "$KO";
          sha256sum /bin/busybox; } | hash_of)
INITRD=$ACACHE/initrd-$IKEY.cpio.gz
if [ ! -f "$INITRD" ]; then
    t=$(now)
    ST=$ACACHE/initrd-stage.$$
    rm -rf "$ST"
    mkdir -p "$ST"/{bin,sbin,etc,proc,sys,dev,tmp,run,lib/modules/"$ABI"/extra}
    cp /bin/busybox "$ST/bin/busybox"
    cp "$HERE/guest-init.sh" "$ST/init"
    chmod 755 "$ST/init"
    MD=$KROOT/lib/modules/$ABI
    : >"$ST/etc/vfmig-modules"
    for m in $BASE_MODULES; do
        deps=$(modprobe -S "$ABI" -d "$KROOT" --show-depends "$m") \
            || die "cannot resolve module $m for $ABI"
        while read -r verb path _; do
            [ "$verb" = insmod ] || continue
            rel=${path#"$MD"/}
            [ "$rel" != "$path" ] || die "unexpected module path $path"
            grep -qxF "$rel" "$ST/etc/vfmig-modules" && continue
            mkdir -p "$ST/lib/modules/$ABI/$(dirname "$rel")"
            cp "$path" "$ST/lib/modules/$ABI/$rel"
            echo "$rel" >>"$ST/etc/vfmig-modules"
        done <<<"$deps"
    done
    cp "$KO" "$ST/lib/modules/$ABI/extra/"
    for f in modules.order modules.builtin modules.builtin.modinfo; do
        [ -f "$MD/$f" ] && cp "$MD/$f" "$ST/lib/modules/$ABI/"
    done
    depmod -b "$ST" "$ABI" || die "depmod for the initramfs failed"
    (cd "$ST" && find . -print0 | LC_ALL=C sort -z |
        cpio --null -o -H newc --owner=0:0 --quiet | gzip -1 >"$INITRD.tmp") \
        || die "building the initramfs failed"
    mv "$INITRD.tmp" "$INITRD"
    rm -rf "$ST"
    find "$ACACHE" -maxdepth 1 -name 'initrd-*.cpio.gz' ! -name "initrd-$IKEY.cpio.gz" -delete
    note "initramfs built in $(since "$t") s ($(du -k "$INITRD" | cut -f1) KiB)"
fi
flock -u 9

# ---- the job ---------------------------------------------------------------
mkdir -p "$CACHE/runs"
RUN=$(mktemp -d "$CACHE/runs/run.XXXXXX")
chmod 755 "$RUN"
cleanup() { rm -rf "$RUN"; }
trap cleanup EXIT
trap 'exit 143' TERM INT HUP
# Leftovers of runs that were killed hard.
find "$CACHE/runs" -mindepth 1 -maxdepth 1 -name 'run.*' -mmin +600 -exec rm -rf {} + 2>/dev/null || true
NONCE=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')

{
    echo "# generated by tests/vm/run-vm.sh"
    printf 'export VFMIG_BUILD_DIR=%q\n' "$BUILD_DIR"
    printf 'export VFMIG_SRC_DIR=%q\n' "$SRC_DIR"
    printf 'export VFMIG_VM_ABI=%q\n' "$ABI"
    echo 'export VFMIG_VM=1'
    printf 'cd %q || exit 93\n' "${BUILD_DIR:-$SRC_DIR}"
    if [ $SHELL_MODE = 1 ]; then
        if [ -n "$SCRIPT" ]; then
            printf '/bin/bash %q' "$SCRIPT"
            for a in "$@"; do printf ' %q' "$a"; done
            printf '; echo "vm-job: %s exited with $?"\n' "$(basename "$SCRIPT")"
        fi
        echo 'exec /bin/bash -l'
    else
        printf 'echo "vm-job: start $(cut -d" " -f1 /proc/uptime) s after boot"\n'
        printf 'exec /bin/bash %q' "$SCRIPT"
        for a in "$@"; do printf ' %q' "$a"; done
        echo
    fi
} >"$RUN/job.sh"

if [ -z "$LOG" ]; then
    if [ -n "$BUILD_DIR" ]; then
        mkdir -p "$BUILD_DIR/meson-logs"
        LOG=$BUILD_DIR/meson-logs/vm-$(basename "${SCRIPT:-shell}" .sh).log
    else
        mkdir -p "$CACHE/logs"
        LOG=$CACHE/logs/vm-$(basename "${SCRIPT:-shell}" .sh).log
    fi
fi
mkdir -p "$(dirname "$LOG")"
: >"$LOG"

QEMU=(qemu-system-x86_64 -accel tcg -m "$MEM" -smp "$SMP" -no-reboot
      -nic none -kernel "$VMLINUZ" -initrd "$INITRD"
      -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
CMDLINE="console=ttyS0 panic=-1 quiet vfmig_job=$RUN/job.sh vfmig_nonce=$NONCE"

if [ $SHELL_MODE = 1 ]; then
    note "shell VM: Ctrl-A X quits QEMU; 'exit' in the shell powers off"
    "${QEMU[@]}" -nographic -append "$CMDLINE vfmig_mode=shell"
    exit 0
fi

note "booting $ABI for $(basename "$SCRIPT") (timeout ${TIMEOUT}s, log $LOG)"
boot() {
    TB=$(now)
    set +e
    timeout -k 10 "$TIMEOUT" "${QEMU[@]}" -display none -monitor none \
        -serial "file:$LOG" -append "$CMDLINE" </dev/null >>"$LOG.qemu" 2>&1
    QRC=$?
    set -e
    VM_SECS=$(since "$TB")
}
boot
# QEMU itself crashing (TCG has been seen to take a general protection fault
# now and then) before the guest started its job is no result of the test:
# boot once more, and say so.  A crash after the job started still fails.
if [ $QRC -gt 128 ] && [ $QRC -ne 137 ] && ! grep -q '^vm-job: start' "$LOG"; then
    echo "run-vm: qemu died of signal $((QRC - 128)) before the guest started its job; booting once more" >&2
    { echo "--- qemu died of signal $((QRC - 128)) before the job started; booting again ---"; } >>"$LOG.qemu"
    : >"$LOG"
    boot
fi
if [ -s "$LOG.qemu" ]; then
    { echo "--- qemu stdout/stderr ---"; cat "$LOG.qemu"; } >>"$LOG"
fi
rm -f "$LOG.qemu"

fail() {
    echo "run-vm: FAIL: $*" >&2
    echo "----- guest console ($LOG) -----" >&2
    tr -d '\r' <"$LOG" >&2
    echo "----- end of guest console -----" >&2
    exit 1
}

if [ $QRC -eq 124 ] || [ $QRC -eq 137 ]; then
    fail "VM timed out after ${TIMEOUT}s"
fi
MARKERS=$(tr -d '\r' <"$LOG" | grep -E "^VFMIG-VM-RESULT $NONCE: [0-9]+\$" || true)
N=$(printf '%s' "$MARKERS" | grep -c . || true)
[ "$N" = 1 ] || fail "expected one result marker on the console, found $N (qemu exit $QRC)"
RC=${MARKERS##*: }
[ $QRC -eq 0 ] || fail "qemu exited with $QRC"
START=$(tr -d '\r' <"$LOG" | sed -n 's/^vm-job: start \([0-9.]*\) s after boot$/\1/p;T;q' || true)
note "$(basename "$SCRIPT"): guest status $RC; VM ${VM_SECS} s (job started ${START:-?} s after kernel start); total $(since "$T0") s"
if [ "$RC" != 0 ]; then
    fail "guest script $(basename "$SCRIPT") exited with $RC"
fi
if [ "${VFMIG_VM_QUIET:-0}" != 1 ]; then
    echo "----- guest console ($LOG) -----"
    tr -d '\r' <"$LOG"
    echo "----- end of guest console -----"
fi
echo "run-vm: PASS: $(basename "$SCRIPT")"
exit 0
