/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus-device.c — org.vfmig1.Device objects at /org/vfmig1/device/<name>, one
 * per inventory device, served by a fallback vtable, object_find and a node
 * enumerator (no per-object registration), plus the inventory listener that
 * turns inventory changes into signals.
 */
#include <errno.h>
#include <stddef.h>

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
        _cleanup_free_ char *path = bus_device_path(dev->name);
        int r;

        if (!path || !d->bus)
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

static void on_device_added(Inventory *inv, const VfmigDevice *dev, void *userdata)
{
        log_device(LOG_INFO, dev->name, "VFIO device appeared (%s, driver %s)",
                   vfmig_device_kind_to_string(dev->kind), dev->driver);
        emit_device_signal(userdata, dev, "DeviceAdded", true);
}

static void on_device_removed(Inventory *inv, const VfmigDevice *dev, void *userdata)
{
        log_device(LOG_INFO, dev->name, "VFIO device disappeared");
        emit_device_signal(userdata, dev, "DeviceRemoved", false);
}

static void on_device_changed(Inventory *inv, const VfmigDevice *dev, void *userdata)
{
        Daemon *d = userdata;
        _cleanup_free_ char *path = bus_device_path(dev->name);

        log_device(LOG_DEBUG, dev->name, "VFIO device changed");
        if (path && d->bus)
                (void) sd_bus_emit_properties_changed_strv(d->bus, path,
                                                           VFMIG_DBUS_INTERFACE_DEVICE, NULL);
}

static void on_parents_changed(Inventory *inv, void *userdata)
{
        Daemon *d = userdata;

        if (d->bus)
                (void) sd_bus_emit_signal(d->bus, VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER,
                                          "MdevTypesChanged", "");
}

const InventoryListener bus_inventory_listener = {
        .device_added = on_device_added,
        .device_changed = on_device_changed,
        .device_removed = on_device_removed,
        .parents_changed = on_parents_changed,
};
