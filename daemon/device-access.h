/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * device-access.h — ownership of the host's VFIO devices.
 *
 * For every inventory device the access manager decides whether vfmigd
 * manages it (the allow/deny lists of vfmigd.conf), opens it through the VFIO
 * layer (kernel back end on a real host, the simulator on a simulated one),
 * holds it open, and records a Status an operator can act on when it cannot
 * (group not viable, group held by another process, ...).  The access entry
 * of a device outlives inventory updates of the same device; it is reopened
 * only when the driver or IOMMU group changes.  No D-Bus.
 */
#pragma once

#include <errno.h>
#include <systemd/sd-event.h>

#include "device.h"
#include "vfio.h"

typedef enum AccessStatus {
        ACCESS_MANAGED,            /* open and held by vfmigd */
        ACCESS_EXCLUDED,           /* not managed by configuration */
        ACCESS_GROUP_NOT_VIABLE,   /* another group member is bound to a host driver */
        ACCESS_GROUP_IN_USE,       /* the group or device is held by another process */
        ACCESS_UNAVAILABLE,        /* could not be opened for another reason */
        ACCESS_RELEASED,           /* given back because the kernel asked (unbind, mdev removal) */
        _ACCESS_STATUS_MAX,
} AccessStatus;

/* "managed", "excluded", "group-not-viable", "group-in-use", "unavailable", "released" */
const char *access_status_to_string(AccessStatus s);

typedef struct AccessConfig {
        char **allow;     /* glob patterns; NULL = everything */
        char **deny;      /* glob patterns */
} AccessConfig;

/* Load [Devices] Allow=/Deny= from a key file.  A missing file is an empty
 * config (manage everything); a malformed one is -EINVAL with *error set. */
int access_config_load(const char *path, AccessConfig *ret, char **error);
void access_config_done(AccessConfig *c);
/* Patterns match the device name, "driver:<driver>" or "type:<mdev type>". */
bool access_config_allows(const AccessConfig *c, const VfmigDevice *d);

typedef struct ManagedDevice {
        char *name;                   /* in the entry's own allocation */
        char *driver;                 /* what it was opened with; a change reopens */
        char *driver_slot;            /* in the entry's allocation: the first driver, */
        size_t driver_slot_size;      /* ... and one as long as it after a change */
        int32_t iommu_group;
        AccessStatus status;
        int open_error;               /* ACCESS_UNAVAILABLE: what the open returned (-errno) */
        char *status_message;         /* one line for operators */
        bool status_message_shared;   /* ... owned by the DeviceAccess (not to be freed) */
        VfmigVfioDevice *vfio;        /* NULL unless ACCESS_MANAGED */
        uint64_t migration_flags;     /* probed at open */
        bool dma_logging;
        sd_event_source *request;     /* the kernel's "give it back" eventfd */
        struct DeviceAccess *access;
} ManagedDevice;

typedef struct DeviceAccess DeviceAccess;

/* Called after a device was given back to the kernel on its request. */
typedef void (*DeviceReleasedFn)(ManagedDevice *m, void *userdata);

/* simulate: open devices with the simulator, using each device's
 * backend_data (a SimDeviceSpec*, NULL = no migration support).  event: where
 * to watch the kernel's device request eventfds (NULL: don't). */
DeviceAccess *device_access_new(const AccessConfig *config, bool simulate, sd_event *event,
                                DeviceReleasedFn on_released, void *userdata);
void device_access_free(DeviceAccess *a);
/* While quiet (the start's enumeration of thousands of devices), the
 * per-device "managed" line is logged at debug level; problems still at
 * their level. */
void device_access_set_quiet(DeviceAccess *a, bool quiet);
/* Whether an unavailable entry's device may just not be ready yet: a new
 * mdev's uevent comes before its driver's probe makes the VFIO group, its
 * node (-ENOENT) and the device's place in it (-ENODEV). */
static inline bool managed_device_not_ready(const ManagedDevice *m)
{
        return m->status == ACCESS_UNAVAILABLE && (m->open_error == -ENOENT || m->open_error == -ENODEV);
}
/* Open such an entry again: true when that made it managed. */
bool device_access_retry(DeviceAccess *a, const VfmigDevice *d);
/* Devices currently held (status managed). */
guint device_access_count_managed(DeviceAccess *a);

/* Keep the entry of d current (open, reopen or exclude).  Returns the entry. */
ManagedDevice *device_access_update(DeviceAccess *a, const VfmigDevice *d);
/* The device went away: close it and drop the entry. */
void device_access_remove(DeviceAccess *a, const char *name);
ManagedDevice *device_access_get(DeviceAccess *a, const char *name);

/* The current migration state, read from the device; -ENODEV if unmanaged,
 * -ENOTTY without migration support. */
int managed_device_get_state(ManagedDevice *m, VfmigMigState *ret);
/* VFIO_DEVICE_RESET; -ENODEV if unmanaged. */
int managed_device_reset(ManagedDevice *m);
/* A dup of the device FD for a VMM; -ENODEV if unmanaged. */
int managed_device_open_fd(ManagedDevice *m);
