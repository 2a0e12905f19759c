/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus-device.c — org.vfmig1.Device objects at /org/vfmig1/device/<name>, one
 * per inventory device, served by a fallback vtable, object_find and a node
 * enumerator (no per-object registration), plus the inventory listener that
 * turns inventory changes into signals.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "bus-polkit.h"
#include "log.h"
#include "util.h"
#include "vfmigd.h"
#include "vfmig-names.h"

char *bus_device_path(const char *name)
{
        char *path = NULL;

        if (sd_bus_path_encode(VFMIG_DBUS_DEVICE_PREFIX, name, &path) < 0)
                return NULL;
        return path;
}

static int device_find(sd_bus *bus, const char *path, const char *interface,
                       void *userdata, void **found, sd_bus_error *error)
{
        Daemon *d = userdata;
        _cleanup_free_ char *name = NULL;
        VfmigDevice *dev;

        if (sd_bus_path_decode(path, VFMIG_DBUS_DEVICE_PREFIX, &name) <= 0)
                return 0;
        dev = inventory_get_device(d->inventory, name);
        if (!dev)
                return 0;
        *found = dev;
        return 1;
}

static int device_enumerate(sd_bus *bus, const char *prefix, void *userdata,
                            char ***nodes, sd_bus_error *error)
{
        Daemon *d = userdata;
        g_autoptr(GPtrArray) devs = inventory_list_devices(d->inventory);
        char **l = calloc(devs->len + 1, sizeof(char *));

        if (!l)
                return -ENOMEM;
        for (guint i = 0; i < devs->len; i++) {
                l[i] = bus_device_path(((VfmigDevice *) devs->pdata[i])->name);
                if (!l[i]) {
                        for (guint j = 0; j < i; j++)
                                free(l[j]);
                        free(l);
                        return -ENOMEM;
                }
        }
        *nodes = l;
        return 0;
}

static int property_get_migration_flags(sd_bus *bus, const char *path, const char *interface,
                                        const char *property, sd_bus_message *reply,
                                        void *userdata, sd_bus_error *error)
{
        VfmigDevice *dev = userdata;
        ManagedDevice *m = dev->managed;
        g_auto(GStrv) flags = vfmig_mig_flags_to_strv(m ? m->migration_flags : 0, m && m->dma_logging);

        return sd_bus_message_append_strv(reply, flags);
}

static int property_get_migration_state(sd_bus *bus, const char *path, const char *interface,
                                        const char *property, sd_bus_message *reply,
                                        void *userdata, sd_bus_error *error)
{
        VfmigDevice *dev = userdata;
        VfmigMigState st;
        int r;

        /* Read live: a VMM holding the device FD may move the state itself. */
        r = managed_device_get_state(dev->managed, &st);
        if (r == -ENODEV)
                return sd_bus_message_append(reply, "s", "unknown");
        if (r < 0)
                return sd_bus_message_append(reply, "s", "unsupported");
        return sd_bus_message_append(reply, "s", vfmig_mig_state_to_string(st));
}

static int property_get_status(sd_bus *bus, const char *path, const char *interface,
                               const char *property, sd_bus_message *reply,
                               void *userdata, sd_bus_error *error)
{
        VfmigDevice *dev = userdata;
        ManagedDevice *m = dev->managed;

        return sd_bus_message_append(reply, "s", m ? access_status_to_string(m->status) : "unavailable");
}

static int property_get_status_message(sd_bus *bus, const char *path, const char *interface,
                                       const char *property, sd_bus_message *reply,
                                       void *userdata, sd_bus_error *error)
{
        VfmigDevice *dev = userdata;
        ManagedDevice *m = dev->managed;

        return sd_bus_message_append(reply, "s", m ? m->status_message : "");
}

/* The device must be open and held by vfmigd for anything but queries. */
static int require_managed(VfmigDevice *dev, sd_bus_error *error)
{
        ManagedDevice *m = dev->managed;

        if (!m || m->status != ACCESS_MANAGED)
                return sd_bus_error_setf(error, VFMIG_ERROR_NOT_MANAGED,
                                         "Device %s is not managed by vfmigd (status %s: %s)", dev->name,
                                         m ? access_status_to_string(m->status) : "unavailable",
                                         m ? m->status_message : "no VFIO access");
        return 0;
}

/* The Daemon a device method runs for: the fallback vtable's userdata. */
static Daemon *current_daemon(sd_bus_message *msg)
{
        return sd_bus_slot_get_userdata(sd_bus_get_current_slot(sd_bus_message_get_bus(msg)));
}

/*
 * parse → validate → authorize → look the object up again → act → reply.
 * Returns 1 with *ret set when the caller may act on the device, 0 when the
 * call is parked while polkit is asked (the handler then returns without a
 * reply and runs again when polkit answered), <0 on refusal with *error set.
 */
static int device_authorize(sd_bus_message *msg, VfmigDevice *dev, VfmigDevice **ret, sd_bus_error *error)
{
        Daemon *d = current_daemon(msg);
        _cleanup_free_ char *name = strdup(dev->name);
        int r;

        if (!name)
                return -ENOMEM;
        r = require_managed(dev, error);
        if (r < 0)
                return r;
        r = bus_verify_method_async(msg, VFMIG_DBUS_INTERFACE_DEVICE, name, &d->polkit_registry, error);
        if (r <= 0)
                return r;
        /* Authorized: act on the device as it is now. */
        dev = inventory_get_device(d->inventory, name);
        if (!dev)
                return sd_bus_error_setf(error, VFMIG_ERROR_NO_SUCH_DEVICE,
                                         "Device %s disappeared while the call was authorized", name);
        r = require_managed(dev, error);
        if (r < 0)
                return r;
        *ret = dev;
        return 1;
}

static int method_open_device(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        VfmigDevice *dev = userdata;
        _cleanup_close_ int fd = -1;
        int r;

        r = device_authorize(msg, dev, &dev, error);
        if (r <= 0)
                return r < 0 ? r : 1;   /* refused, or parked until polkit answers */
        fd = managed_device_open_fd(dev->managed);
        if (fd < 0)
                return sd_bus_error_set_errnof(error, fd, "Cannot duplicate the device FD of %s: %m", dev->name);
        log_device(LOG_INFO, dev->name, "device FD handed out to %s", sd_bus_message_get_sender(msg));
        /* sd-bus dups the fd into the message; ours is closed on return. */
        return sd_bus_reply_method_return(msg, "h", fd);
}

static int method_reset(sd_bus_message *msg, void *userdata, sd_bus_error *error)
{
        VfmigDevice *dev = userdata;
        int r;

        r = device_authorize(msg, dev, &dev, error);
        if (r <= 0)
                return r < 0 ? r : 1;   /* refused, or parked until polkit answers */
        r = managed_device_reset(dev->managed);
        if (r < 0)
                return sd_bus_error_setf(error, VFMIG_ERROR_DEVICE_FAILED,
                                         "VFIO_DEVICE_RESET of %s failed: %s", dev->name, strerror(-r));
        log_device(LOG_INFO, dev->name, "device reset by %s", sd_bus_message_get_sender(msg));
        return sd_bus_reply_method_return(msg, NULL);
}

static int property_get_kind(sd_bus *bus, const char *path, const char *interface,
                             const char *property, sd_bus_message *reply,
                             void *userdata, sd_bus_error *error)
{
        VfmigDevice *dev = userdata;

        return sd_bus_message_append(reply, "s", vfmig_device_kind_to_string(dev->kind));
}

const sd_bus_vtable device_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", NULL, offsetof(VfmigDevice, name), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Kind", "s", property_get_kind, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Driver", "s", NULL, offsetof(VfmigDevice, driver), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("VendorId", "q", NULL, offsetof(VfmigDevice, vendor_id), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DeviceId", "q", NULL, offsetof(VfmigDevice, device_id), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SubsystemVendorId", "q", NULL, offsetof(VfmigDevice, subsystem_vendor_id), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SubsystemDeviceId", "q", NULL, offsetof(VfmigDevice, subsystem_device_id), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Revision", "y", NULL, offsetof(VfmigDevice, revision), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("IommuGroup", "i", NULL, offsetof(VfmigDevice, iommu_group), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("NumaNode", "i", NULL, offsetof(VfmigDevice, numa_node), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("MdevType", "s", NULL, offsetof(VfmigDevice, mdev_type), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Parent", "s", NULL, offsetof(VfmigDevice, parent), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SysfsPath", "s", NULL, offsetof(VfmigDevice, sysfs_path), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("MigrationFlags", "as", property_get_migration_flags, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("MigrationState", "s", property_get_migration_state, 0, 0),
        SD_BUS_PROPERTY("Status", "s", property_get_status, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StatusMessage", "s", property_get_status_message, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Profile", "a{sv}", bus_property_get_profile, 0, SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION),
        /* UNPRIVILEGED: the handlers ask polkit themselves (bus-polkit.c). */
        SD_BUS_METHOD_WITH_ARGS("OpenDevice",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("h", fd),
                                method_open_device,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Reset",
                                SD_BUS_NO_ARGS,
                                SD_BUS_NO_RESULT,
                                method_reset,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        /* Migration jobs: the bodies are in bus-job.c (polkit org.vfmig1.migrate). */
        SD_BUS_METHOD_WITH_ARGS("Migrate",
                                SD_BUS_ARGS("s", endpoint, "s", ticket, "a{sv}", options),
                                SD_BUS_RESULT("o", job),
                                bus_job_method_migrate,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SaveToFd",
                                SD_BUS_ARGS("h", fd, "a{sv}", options),
                                SD_BUS_RESULT("o", job),
                                bus_job_method_save_to_fd,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

int bus_device_register(Daemon *d)
{
        int r;

        r = sd_bus_add_fallback_vtable(d->bus, NULL, VFMIG_DBUS_DEVICE_PREFIX,
                                       VFMIG_DBUS_INTERFACE_DEVICE, device_vtable,
                                       device_find, d);
        if (r < 0)
                return r;
        return sd_bus_add_node_enumerator(d->bus, NULL, VFMIG_DBUS_DEVICE_PREFIX,
                                          device_enumerate, d);
}

static void emit_device_signal(Daemon *d, const VfmigDevice *dev, const char *member, bool added)
{
        _cleanup_free_ char *path = NULL;
        int r;

        if (!d->bus)
                return;         /* during the start's enumeration: nobody to tell yet */
        path = bus_device_path(dev->name);
        if (!path)
                return;
        if (added)
                r = sd_bus_emit_object_added(d->bus, path);
        else
                r = sd_bus_emit_object_removed(d->bus, path);
        if (r < 0)
                log_warning_errno(r, "Failed to emit object %s for %s: %m",
                                  added ? "added" : "removed", dev->name);
        r = sd_bus_emit_signal(d->bus, VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER,
                               member, "so", dev->name, path);
        if (r < 0)
                log_warning_errno(r, "Failed to emit %s for %s: %m", member, dev->name);
        (void) sd_bus_emit_properties_changed(d->bus, VFMIG_DBUS_PATH,
                                              VFMIG_DBUS_INTERFACE_MANAGER, "DeviceCount", NULL);
}

void bus_device_emit_added(Daemon *d, const VfmigDevice *dev)
{
        emit_device_signal(d, dev, "DeviceAdded", true);
}

void bus_device_emit_removed(Daemon *d, const VfmigDevice *dev)
{
        emit_device_signal(d, dev, "DeviceRemoved", false);
}

void bus_device_emit_changed(Daemon *d, const VfmigDevice *dev)
{
        _cleanup_free_ char *path = bus_device_path(dev->name);

        if (path && d->bus)
                (void) sd_bus_emit_properties_changed_strv(d->bus, path,
                                                           VFMIG_DBUS_INTERFACE_DEVICE, NULL);
}

void bus_manager_emit_types_changed(Daemon *d)
{
        if (d->bus)
                (void) sd_bus_emit_signal(d->bus, VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER,
                                          "MdevTypesChanged", "");
}
