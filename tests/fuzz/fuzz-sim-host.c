/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: simulated host files (sim-host.c), which vfmigd reads
 * from an operator-given path.  Any input must give a host or a located
 * error, never a crash or a leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sim-host.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        _cleanup_close_ int fd = memfd_create("fuzz-host", MFD_CLOEXEC);
        g_autoptr(SimHost) h = NULL;
        g_autoptr(Inventory) inv = NULL;
        g_autofree char *error = NULL;
        char path[64];

        if (fd < 0 || write(fd, data, size) != (ssize_t) size)
                return 0;
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        if (sim_host_load(path, &h, &error) < 0) {
                if (!error)
                        __builtin_trap();   /* every refusal must say why */
                return 0;
        }
        inv = inventory_new();
        sim_host_populate(h, inv);
        return 0;
}
