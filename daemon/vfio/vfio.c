/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <string.h>

#include "util.h"
#include "vfio-private.h"

static const char *const state_names[_VFMIG_MIG_STATE_MAX] = {
        [VFMIG_MIG_ERROR] = "error",
        [VFMIG_MIG_STOP] = "stop",
        [VFMIG_MIG_RUNNING] = "running",
        [VFMIG_MIG_STOP_COPY] = "stop-copy",
        [VFMIG_MIG_RESUMING] = "resuming",
        [VFMIG_MIG_RUNNING_P2P] = "running-p2p",
        [VFMIG_MIG_PRE_COPY] = "pre-copy",
        [VFMIG_MIG_PRE_COPY_P2P] = "pre-copy-p2p",
};

const char *vfmig_mig_state_to_string(VfmigMigState state)
{
        if ((unsigned) state >= ELEMENTSOF(state_names))
                return NULL;
        return state_names[state];
}

int vfmig_mig_state_from_string(const char *s, VfmigMigState *ret)
{
        if (!s || !ret)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(state_names); i++)
                if (strcmp(s, state_names[i]) == 0) {
                        *ret = (VfmigMigState) i;
                        return 0;
                }
        return -EINVAL;
}

char **vfmig_mig_flags_to_strv(uint64_t flags, bool dma_logging)
{
        GPtrArray *a = g_ptr_array_new();

        if (flags & VFMIG_MIGRATION_STOP_COPY)
                g_ptr_array_add(a, g_strdup("stop-copy"));
        if (flags & VFMIG_MIGRATION_P2P)
                g_ptr_array_add(a, g_strdup("p2p"));
        if (flags & VFMIG_MIGRATION_PRE_COPY)
                g_ptr_array_add(a, g_strdup("pre-copy"));
        if (dma_logging)
                g_ptr_array_add(a, g_strdup("dma-logging"));
        g_ptr_array_add(a, NULL);
        return (char **) g_ptr_array_free(a, false);
}

void vfmig_vfio_close(VfmigVfioDevice *d)
{
        if (!d)
                return;
        d->ops->close(d);
}

const char *vfmig_vfio_backend(VfmigVfioDevice *d)
{
        return d ? d->ops->backend : NULL;
}

const char *vfmig_vfio_name(VfmigVfioDevice *d)
{
        return d ? d->name : NULL;
}

int vfmig_vfio_get_migration_flags(VfmigVfioDevice *d, uint64_t *ret_flags)
{
        if (!d || !ret_flags)
                return -EINVAL;
        return d->ops->get_migration_flags(d, ret_flags);
}

bool vfmig_vfio_has_dma_logging(VfmigVfioDevice *d)
{
        return d && d->ops->has_dma_logging(d);
}

int vfmig_vfio_get_state(VfmigVfioDevice *d, VfmigMigState *ret)
{
        if (!d || !ret)
                return -EINVAL;
        return d->ops->get_state(d, ret);
}

int vfmig_vfio_set_state(VfmigVfioDevice *d, VfmigMigState new_state, VfmigVfioData **ret_data)
{
        VfmigVfioData *data = NULL;
        int r;

        if (ret_data)
                *ret_data = NULL;
        if (!d)
                return -EINVAL;

        /* Out-of-range values go down to the back end on purpose: the kernel's
         * own answer to them (-EINVAL) is part of what the conformance suite
         * checks. */
        r = d->ops->set_state(d, new_state, &data);
        if (r < 0)
                return r;
        if (ret_data)
                *ret_data = data;
        else
                vfmig_vfio_data_close(data);
        return 0;
}

int vfmig_vfio_get_data_size(VfmigVfioDevice *d, uint64_t *ret_stop_copy_length)
{
        if (!d || !ret_stop_copy_length)
                return -EINVAL;
        return d->ops->get_data_size(d, ret_stop_copy_length);
}

int vfmig_vfio_reset(VfmigVfioDevice *d)
{
        if (!d)
                return -EINVAL;
        return d->ops->reset(d);
}

int vfmig_vfio_request_eventfd(VfmigVfioDevice *d)
{
        if (!d)
                return -EINVAL;
        if (!d->ops->request_eventfd)
                return -EOPNOTSUPP;
        return d->ops->request_eventfd(d);
}

int vfmig_vfio_dup_fd(VfmigVfioDevice *d)
{
        if (!d)
                return -EINVAL;
        return d->ops->dup_fd(d);
}

ssize_t vfmig_vfio_data_read(VfmigVfioData *s, void *buf, size_t n)
{
        if (!s || !buf || n == 0)
                return -EINVAL;
        return s->ops->read(s, buf, n);
}

ssize_t vfmig_vfio_data_write(VfmigVfioData *s, const void *buf, size_t n)
{
        if (!s || !buf || n == 0)
                return -EINVAL;
        return s->ops->write(s, buf, n);
}

int vfmig_vfio_data_precopy_info(VfmigVfioData *s, uint64_t *ret_initial_bytes, uint64_t *ret_dirty_bytes)
{
        uint64_t initial = 0, dirty = 0;
        int r;

        if (!s)
                return -EINVAL;
        r = s->ops->precopy_info(s, &initial, &dirty);
        if (r < 0)
                return r;
        if (ret_initial_bytes)
                *ret_initial_bytes = initial;
        if (ret_dirty_bytes)
                *ret_dirty_bytes = dirty;
        return 0;
}

int vfmig_vfio_data_fd(VfmigVfioData *s)
{
        return s ? s->ops->fd(s) : -1;
}

void vfmig_vfio_data_close(VfmigVfioData *s)
{
        if (!s)
                return;
        s->ops->close(s);
}

int vfmig_vfio_sim_write_memory(VfmigVfioDevice *d, uint64_t offset, const void *buf, size_t n)
{
        if (!d || (!buf && n > 0))
                return -EINVAL;
        if (!vfmig_vfio_is_sim(d))
                return -EOPNOTSUPP;
        return vfmig_vfio_sim_write_memory_impl(d, offset, buf, n);
}

int vfmig_vfio_sim_inject_fault(VfmigVfioDevice *d, VfmigMigState step_to, int error, bool to_error)
{
        if (!d || (unsigned) step_to >= _VFMIG_MIG_STATE_MAX)
                return -EINVAL;
        if (step_to != VFMIG_MIG_ERROR && error <= 0)
                return -EINVAL;
        if (!vfmig_vfio_is_sim(d))
                return -EOPNOTSUPP;
        return vfmig_vfio_sim_inject_fault_impl(d, step_to, error, to_error);
}
