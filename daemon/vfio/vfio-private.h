/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfio-private.h — what a back end implements behind vfio.h.  vfio.c checks
 * arguments and dispatches; each back end embeds VfmigVfioDevice /
 * VfmigVfioData as the first member of its own structs.
 */
#pragma once

#include "vfio.h"

typedef struct VfmigVfioDeviceOps {
        const char *backend;
        void (*close)(VfmigVfioDevice *d);
        int (*get_migration_flags)(VfmigVfioDevice *d, uint64_t *ret);
        bool (*has_dma_logging)(VfmigVfioDevice *d);
        int (*get_state)(VfmigVfioDevice *d, VfmigMigState *ret);
        int (*set_state)(VfmigVfioDevice *d, VfmigMigState new_state, VfmigVfioData **ret_data);
        int (*get_data_size)(VfmigVfioDevice *d, uint64_t *ret);
        int (*reset)(VfmigVfioDevice *d);
        int (*dup_fd)(VfmigVfioDevice *d);
        int (*request_eventfd)(VfmigVfioDevice *d);   /* NULL: no request channel */
} VfmigVfioDeviceOps;

struct VfmigVfioDevice {
        const VfmigVfioDeviceOps *ops;
        char *name;
};

typedef struct VfmigVfioDataOps {
        ssize_t (*read)(VfmigVfioData *s, void *buf, size_t n);
        ssize_t (*write)(VfmigVfioData *s, const void *buf, size_t n);
        int (*precopy_info)(VfmigVfioData *s, uint64_t *initial, uint64_t *dirty);
        int (*fd)(VfmigVfioData *s);
        void (*close)(VfmigVfioData *s);
} VfmigVfioDataOps;

struct VfmigVfioData {
        const VfmigVfioDataOps *ops;
};

/* Whether d is a sim device (for the sim-only seams). */
bool vfmig_vfio_is_sim(VfmigVfioDevice *d);

/* The sim's seams, called by vfio.c after the type check. */
int vfmig_vfio_sim_write_memory_impl(VfmigVfioDevice *d, uint64_t offset, const void *buf, size_t n);
int vfmig_vfio_sim_inject_fault_impl(VfmigVfioDevice *d, VfmigMigState step_to, int error, bool to_error);
