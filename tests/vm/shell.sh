#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# tests/vm/shell.sh [--build-dir DIR] [GUEST-SCRIPT [ARGS...]]
#
# Boot the vfmig test VM (the same kernel, initramfs, module and host-root
# chroot as run-vm.sh) with an interactive bash on the serial console, after
# running GUEST-SCRIPT if one is given. The VFMIG_* variables of run-vm.sh
# are set. In the guest, for example:
#   . $VFMIG_SRC_DIR/tests/vm/guest/lib.sh; tm_load; tm_create small
#   bash $VFMIG_SRC_DIR/tests/vm/guest/kmod-smoke.sh
# 'exit' powers the VM off; Ctrl-A X kills QEMU.
exec "$(dirname "${BASH_SOURCE[0]}")/run-vm.sh" --shell "$@"
