#!/bin/busybox sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# /init of the vfmig test VM's initramfs (busybox sh). Copied in by
# run-vm.sh. Loads the base modules, mounts the host's root (9p, read-only)
# under an overlay with a tmpfs upper layer, chroots into it with fresh
# proc/sys/dev, and runs the job that run-vm.sh wrote (path on the kernel
# command line: vfmig_job=...). Prints the verdict as
#   VFMIG-VM-RESULT <nonce>: <exit status>
# on the console and powers off. vfmig_mode=shell gives an interactive shell
# in the chroot instead.

/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

say() { echo "vm-init: $*"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

MODE=test JOB= NONCE=none
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vfmig_job=*) JOB=${arg#vfmig_job=} ;;
        vfmig_mode=*) MODE=${arg#vfmig_mode=} ;;
        vfmig_nonce=*) NONCE=${arg#vfmig_nonce=} ;;
    esac
done

finish() {
    echo "VFMIG-VM-RESULT $NONCE: $1"
    sync
    poweroff -f
    sleep 10
}

ABI=$(uname -r)
while read -r ko; do
    [ -n "$ko" ] || continue
    insmod "/lib/modules/$ABI/$ko" || { say "insmod $ko failed"; finish 97; }
done < /etc/vfmig-modules

R=/newroot
mkdir -p /host /ovl $R
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host \
    || { say "cannot mount the host root over 9p"; finish 96; }
mount -t tmpfs -o mode=0755 tmpfs /ovl
mkdir -p /ovl/upper /ovl/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/ovl/upper,workdir=/ovl/work $R \
    || { say "cannot mount the overlay"; finish 95; }

mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs -o mode=0755 tmpfs $R/run
# The kernel's modules (from the initramfs) where the host's kmod looks.
mkdir -p $R/lib/modules/$ABI
mount --bind /lib/modules/$ABI $R/lib/modules/$ABI
# Host-side leftovers that must not leak into the guest's view.
rm -f $R/etc/mtab 2>/dev/null; ln -s /proc/self/mounts $R/etc/mtab 2>/dev/null
hostname vfmig-vm

ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=${TERM:-linux} LANG=C.UTF-8"

if [ "$MODE" = shell ]; then
    say "interactive shell in the chroot; 'exit' powers off"
    setsid cttyhack env -i $ENV chroot $R /bin/bash "$JOB"
    finish 0
fi

[ -n "$JOB" ] || { say "no vfmig_job= on the kernel command line"; finish 94; }
say "running job $JOB"
env -i $ENV chroot $R /bin/bash "$JOB" </dev/null
rc=$?

# Any kernel splat during the run fails it, whatever the script said.
if dmesg | grep -E 'WARNING:|Oops|BUG:|Call Trace|general protection|kernel BUG' >/dev/null; then
    say "kernel log has a warning/oops:"
    dmesg | tail -n 80
    [ $rc -eq 0 ] && rc=98
elif [ $rc -ne 0 ]; then
    say "job failed ($rc); kernel log tail:"
    dmesg | tail -n 40
fi
finish $rc
