/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfmigctl-devices.c — `devices` (the table of VFIO devices) and `show
 * DEVICE` (every property of one device).  JSON objects carry every
 * org.vfmig1.Device property under its kebab-case key, plus "object-path".
 */
#include <errno.h>
#include <stdio.h>

#include "vfmigctl.h"
#include "vfmig-names.h"

static const VfmigCtlProperty device_properties[] = {
        { "Name", "Name", VFMIGCTL_FORMAT_STRING },
        { "Kind", "Kind", VFMIGCTL_FORMAT_STRING },
        { "Driver", "Driver", VFMIGCTL_FORMAT_STRING },
        { "VendorId", "Vendor", VFMIGCTL_FORMAT_PCI_ID },
        { "DeviceId", "Device", VFMIGCTL_FORMAT_PCI_ID },
        { "SubsystemVendorId", "Subsystem vendor", VFMIGCTL_FORMAT_PCI_ID },
        { "SubsystemDeviceId", "Subsystem device", VFMIGCTL_FORMAT_PCI_ID },
        { "Revision", "Revision", VFMIGCTL_FORMAT_PCI_REVISION },
        { "IommuGroup", "IOMMU group", VFMIGCTL_FORMAT_INDEX },
        { "NumaNode", "NUMA node", VFMIGCTL_FORMAT_INDEX },
        { "MdevType", "Mdev type", VFMIGCTL_FORMAT_STRING },
        { "Parent", "Parent", VFMIGCTL_FORMAT_STRING },
        { "SysfsPath", "Sysfs path", VFMIGCTL_FORMAT_STRING },
        { "Status", "Status", VFMIGCTL_FORMAT_STRING },
        { "StatusMessage", "Status message", VFMIGCTL_FORMAT_STRING },
        { "MigrationFlags", "Migration", VFMIGCTL_FORMAT_LIST },
        { "MigrationState", "Migration state", VFMIGCTL_FORMAT_STRING },
};

static bool device_is_pci(JsonObject *props)
{
        return streq_ptr(vfmigctl_get_string(props, "Kind"), VFMIG_KIND_PCI);
}

static JsonNode *device_json(JsonObject *props, const char *path)
{
        JsonObject *o = vfmigctl_json_object_from_properties(props);
        JsonNode *node = json_node_alloc();

        json_object_set_string_member(o, "object-path", path);
        json_node_init_object(node, o);
        json_object_unref(o);
        return node;
}

/* "-1" and friends for the table: unknown is "-". */
static char *index_cell(gint64 v)
{
        return v < 0 ? NULL : g_strdup_printf("%" G_GINT64_FORMAT, v);
}

static void add_device_row(VfmigCtlTable *t, JsonObject *props)
{
        const char *type = vfmigctl_get_string(props, "MdevType");
        const char *parent = vfmigctl_get_string(props, "Parent");

        vfmigctl_table_add(t, vfmigctl_get_string(props, "Name"));
        vfmigctl_table_add(t, vfmigctl_get_string(props, "Kind"));
        vfmigctl_table_add(t, vfmigctl_get_string(props, "Driver"));
        if (device_is_pci(props))
                vfmigctl_table_take(t, g_strdup_printf("%04x:%04x",
                                                       (unsigned) vfmigctl_get_int(props, "VendorId", 0),
                                                       (unsigned) vfmigctl_get_int(props, "DeviceId", 0)));
        else
                vfmigctl_table_add(t, NULL);
        vfmigctl_table_take(t, index_cell(vfmigctl_get_int(props, "IommuGroup", -1)));
        vfmigctl_table_take(t, index_cell(vfmigctl_get_int(props, "NumaNode", -1)));
        if (type && type[0])
                vfmigctl_table_take(t, g_strconcat(type, parent && parent[0] ? "/" : "", parent, NULL));
        else
                vfmigctl_table_add(t, parent);
        vfmigctl_table_add(t, vfmigctl_get_string(props, "Status"));
}

/*
 * Properties of a device that GetManagedObjects did not return (it appeared
 * in between): ask it directly.  Returns 0 and *ret = NULL if it has gone
 * again since ListDevices.
 */
static int get_device_properties(VfmigCtl *ctl, const char *name, const char *path, JsonObject **ret)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *what = g_strdup_printf("reading device %s", name);
        int r;

        r = sd_bus_call_method(ctl->bus, VFMIG_BUS_NAME, path, DBUS_PROPERTIES_INTERFACE, "GetAll",
                               &error, &reply, "s", VFMIG_DBUS_INTERFACE_DEVICE);
        if (r < 0) {
                if (sd_bus_error_has_names(&error, SD_BUS_ERROR_UNKNOWN_OBJECT, SD_BUS_ERROR_UNKNOWN_INTERFACE,
                                           VFMIG_ERROR_NO_SUCH_DEVICE)) {
                        *ret = NULL;
                        return 0;
                }
                return vfmigctl_log_error(&error, r, what);
        }
        r = vfmigctl_read_properties(reply, ret);
        if (r < 0)
                return vfmigctl_log_parse_error(r, what);
        return 0;
}

int verb_devices(VfmigCtl *ctl, int argc, char **argv)
{
        static const char *const headers[] = {
                "NAME", "KIND", "DRIVER", "VENDOR:DEVICE", "IOMMU", "NUMA", "TYPE/PARENT", "STATUS", NULL
        };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        g_autoptr(GHashTable) objects = NULL;
        g_autoptr(VfmigCtlTable) table = vfmigctl_table_new(headers);
        g_autoptr(JsonArray) array = json_array_new();
        const char *name, *kind, *driver, *path;
        int r;

        r = vfmigctl_call(ctl, "listing devices", VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER, "ListDevices",
                          &reply, NULL);
        if (r != 0)
                return r;
        /* All properties of all devices in one round trip. */
        r = vfmigctl_get_managed_objects(ctl, "listing devices", VFMIG_DBUS_INTERFACE_DEVICE, &objects);
        if (r != 0)
                return r;

        r = sd_bus_message_enter_container(reply, SD_BUS_TYPE_ARRAY, "(ssso)");
        if (r < 0)
                return vfmigctl_log_parse_error(r, "listing devices");
        while ((r = sd_bus_message_read(reply, "(ssso)", &name, &kind, &driver, &path)) > 0) {
                g_autoptr(JsonObject) props = NULL;
                JsonObject *cached = g_hash_table_lookup(objects, path);

                if (cached) {
                        props = json_object_ref(cached);
                } else {
                        r = get_device_properties(ctl, name, path, &props);
                        if (r != 0)
                                return r;
                        if (!props)
                                continue;
                }
                if (ctl->json != VFMIGCTL_JSON_OFF)
                        json_array_add_element(array, device_json(props, path));
                else
                        add_device_row(table, props);
        }
        if (r < 0)
                return vfmigctl_log_parse_error(r, "listing devices");

        if (ctl->json != VFMIGCTL_JSON_OFF) {
                g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), array);

                vfmigctl_print_json(ctl, node);
        } else {
                vfmigctl_table_print(ctl, table);
        }
        return VFMIGCTL_EXIT_OK;
}

int verb_show(VfmigCtl *ctl, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        g_autoptr(JsonObject) props = NULL;
        g_autofree char *what = NULL;
        const char *path;
        int r;

        what = g_strdup_printf("show %s", argv[1]);
        r = vfmigctl_call(ctl, what, VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER, "GetDevice", &reply, "s",
                          argv[1]);
        if (r != 0)
                return r;
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return vfmigctl_log_parse_error(r, what);
        r = vfmigctl_get_all(ctl, what, path, VFMIG_DBUS_INTERFACE_DEVICE, &props);
        if (r != 0)
                return r;

        if (ctl->json != VFMIGCTL_JSON_OFF) {
                g_autoptr(JsonNode) node = device_json(props, path);

                vfmigctl_print_json(ctl, node);
        } else {
                g_autoptr(VfmigCtlTable) fields = vfmigctl_table_new((const char *const[]) { "", "", NULL });

                vfmigctl_table_add_properties(fields, props, device_properties, ELEMENTSOF(device_properties),
                                              device_is_pci(props));
                vfmigctl_table_add(fields, "Object path");
                vfmigctl_table_add(fields, path);
                vfmigctl_table_print_fields(fields);
        }
        return VFMIGCTL_EXIT_OK;
}
