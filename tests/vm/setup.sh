#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# tests/vm/setup.sh — make this machine able to run the real-kernel VM tier.
#
# Idempotent. Installs what is missing (qemu-system-x86, linux-headers-amd64,
# busybox-static, kmod, cpio), reads the kernel ABI from the headers
# metapackage's dependency, and unpacks Debian's kernel image for that same
# ABI (without installing it) into $VFMIG_VM_CACHE/<abi>/root.
#
# On success prints "ABI=<abi>" and "KROOT=<dir>" on stdout (last two lines);
# everything else goes to stderr. Fails loudly (exit 1) when anything cannot
# be obtained.
#
# Environment:
#   VFMIG_VM_CACHE   cache directory (default /var/cache/vfmig-vm)

set -euo pipefail

CACHE=${VFMIG_VM_CACHE:-/var/cache/vfmig-vm}

log() { echo "vm-setup: $*" >&2; }
die() { echo "vm-setup: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, needs the kernel image)"

pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

APT_UPDATED=0
apt_install() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing: ${missing[*]}"
    if [ $APT_UPDATED = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
    for p in "${missing[@]}"; do
        pkg_installed "$p" || die "package $p still not installed after apt-get install"
    done
}

# Tools used by run-vm.sh too: make/gcc for kbuild, cpio+gzip for the
# initramfs, kmod for modprobe/depmod, timeout (coreutils). udev: the guest
# runs systemd-udevd from the host root, as a real host does, because vfmigd
# listens to udev's netlink group, not the kernel's (vm-daemon).
apt_install qemu-system-x86 linux-headers-amd64 busybox-static kmod cpio gzip make gcc libelf-dev python3 udev

# The ABI: from the installed metapackage's dependency, never hard-coded.
DEP=$(dpkg-query -W -f='${Depends}' linux-headers-amd64) || die "cannot read linux-headers-amd64 dependencies"
ABI=$(printf '%s\n' "$DEP" | tr ',' '\n' | sed -n 's/^ *linux-headers-\([0-9][^ ]*-amd64\).*/\1/p;T;q')
[ -n "$ABI" ] || die "cannot find the kernel ABI in linux-headers-amd64's Depends: '$DEP'"
KBUILD=/lib/modules/$ABI/build
[ -f "$KBUILD/Makefile" ] || die "headers for $ABI not found at $KBUILD (is linux-headers-$ABI installed?)"

# The kernel image for that ABI, downloaded and unpacked, not installed.
DEST=$CACHE/$ABI
KROOT=$DEST/root
if [ ! -f "$DEST/.complete" ]; then
    log "fetching linux-image-$ABI into $DEST"
    rm -rf "$DEST"
    mkdir -p "$DEST/dl"
    chown _apt "$DEST/dl" 2>/dev/null || true   # apt-get download drops privileges
    if ! (cd "$DEST/dl" && apt-get download "linux-image-$ABI" >&2); then
        if [ $APT_UPDATED = 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || die "apt-get update failed"
            APT_UPDATED=1
        fi
        (cd "$DEST/dl" && apt-get download "linux-image-$ABI" >&2) \
            || die "apt-get download linux-image-$ABI failed"
    fi
    DEB=$(compgen -G "$DEST/dl/linux-image-${ABI}_*.deb" || true)
    [ -n "$DEB" ] && [ -f "$DEB" ] || die "downloaded linux-image-$ABI .deb not found"
    mkdir -p "$KROOT"
    dpkg-deb -x "$DEB" "$KROOT" || die "dpkg-deb -x $DEB failed"
    [ -f "$KROOT/boot/vmlinuz-$ABI" ] || die "no vmlinuz-$ABI in $DEB"
    [ -d "$KROOT/lib/modules/$ABI/kernel" ] || die "no modules for $ABI in $DEB"
    # modules.dep etc. for modprobe --show-depends; the package ships none.
    depmod -b "$KROOT" "$ABI" || die "depmod for the extracted $ABI failed"
    rm -rf "$DEST/dl"
    touch "$DEST/.complete"
fi

[ -x /bin/busybox ] || die "/bin/busybox missing"
BB_APPLETS=$(/bin/busybox --list) || die "/bin/busybox does not run"
grep -qx sh <<<"$BB_APPLETS" || die "/bin/busybox has no sh applet"
grep -qx cttyhack <<<"$BB_APPLETS" || die "/bin/busybox has no cttyhack applet"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing"
[ -x /lib/systemd/systemd-udevd ] || die "/lib/systemd/systemd-udevd missing (package udev)"

log "ready: ABI $ABI, kernel root $KROOT"
echo "ABI=$ABI"
echo "KROOT=$KROOT"
