/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus-manager.c — org.vfmig1.Manager at /org/vfmig1: inventory queries.
 * Each handler parses, validates, calls the core and replies.  The members of
 * the other modules (compatibility, reservations, MigrateGroup) have their
 * bodies in bus-compat.c, bus-reservation.c and bus-job.c.
 */
#include <errno.h>

#include "config.h"
#include "util.h"
#include "vfmigd.h"
#include "vfmig-names.h"

static int property_get_version(sd_bus *bus, const char *path, const char *interface,
                                const char *property, sd_bus_message *reply,
                                void *userdata, sd_bus_error *error)
{
        return sd_bus_message_append(reply, "s", VFMIG_VERSION);
}

static int property_get_backend(sd_bus *bus, const char *path, const char *interface,
                                const char *property, sd_bus_message *reply,
                                void *userdata, sd_bus_error *error)
{
        Daemon *d = userdata;

        return sd_bus_message_append(reply, "s", d->backend);
}

static int property_get_device_count(sd_bus *bus, const char *path, const char *interface,
                                     const char *property, sd_bus_message *reply,
                                     void *userdata, sd_bus_error *error)
{
        Daemon *d = userdata;

        return sd_bus_message_append(reply, "u", (uint32_t) inventory_device_count(d->inventory));
}

/* Validate a device name from the bus; fill error and return <0 if bad. */
static int validate_device_name(const char *name, sd_bus_error *error)
{
        if (!vfmig_device_name_is_valid(name))
                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS,
                                         "Device name \"%.64s%s\" is not valid: expected a PCI address "
                                         "(0000:17:00.1) or an mdev UUID, at most %d characters of [A-Za-z0-9:._-]",
                                         name, strlen(name) > 64 ? "..." : "", VFMIG_NAME_MAX);
        return 0;
}

static int method_get_device(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Daemon *d = userdata;
        _cleanup_free_ char *path = NULL;
        const char *name;
        int r;

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        r = validate_device_name(name, error);
        if (r < 0)
                return r;
        if (!inventory_get_device(d->inventory, name))
                return sd_bus_error_setf(error, VFMIG_ERROR_NO_SUCH_DEVICE,
                                         "No VFIO device \"%s\" on this host (see ListDevices; a device "
                                         "must be bound to vfio-pci, a *_vfio_pci driver, or be an mdev)",
                                         name);
        path = bus_device_path(name);
        if (!path)
                return -ENOMEM;
        return sd_bus_reply_method_return(m, "o", path);
}

static int method_list_devices(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Daemon *d = userdata;
        g_autoptr(GPtrArray) devs = inventory_list_devices(d->inventory);
        sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ssso)");
        for (guint i = 0; r >= 0 && i < devs->len; i++) {
                VfmigDevice *dev = devs->pdata[i];
                _cleanup_free_ char *path = bus_device_path(dev->name);

                if (!path) {
                        r = -ENOMEM;
                        break;
                }
                r = sd_bus_message_append(reply, "(ssso)", dev->name,
                                          vfmig_device_kind_to_string(dev->kind), dev->driver, path);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        sd_bus_message_unref(reply);
        return r;
}

static int method_list_mdev_types(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Daemon *d = userdata;
        g_autoptr(GPtrArray) parents = inventory_list_parents(d->inventory);
        sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ssssssu)");
        for (guint i = 0; r >= 0 && i < parents->len; i++) {
                VfmigMdevParent *p = parents->pdata[i];

                for (guint j = 0; r >= 0 && j < p->types->len; j++) {
                        VfmigMdevType *t = p->types->pdata[j];
                        r = sd_bus_message_append(reply, "(ssssssu)", p->name, p->driver, t->id,
                                                  t->name, t->device_api, t->description,
                                                  t->available_instances);
                }
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        sd_bus_message_unref(reply);
        return r;
}

const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Backend", "s", property_get_backend, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DeviceCount", "u", property_get_device_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("ListDevices",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(ssso)", devices),
                                method_list_devices,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetDevice",
                                SD_BUS_ARGS("s", name),
                                SD_BUS_RESULT("o", device),
                                method_get_device,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListMdevTypes",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(ssssssu)", types),
                                method_list_mdev_types,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_PROPERTY("MatrixGeneration", "t", bus_property_get_matrix_generation, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("GetMigrationProfile",
                                SD_BUS_ARGS("s", device),
                                SD_BUS_RESULT("a{sv}", profile),
                                bus_method_get_migration_profile,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CheckCompatibility",
                                SD_BUS_ARGS("a{sv}", profile, "s", target),
                                SD_BUS_RESULT("b", compatible, "as", reasons),
                                bus_method_check_compatibility,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("FindCompatibleTargets",
                                SD_BUS_ARGS("a{sv}", profile, "a{sv}", options),
                                SD_BUS_RESULT("a(ssbuuas)", targets),
                                bus_method_find_compatible_targets,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ExportMatrix",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("s", matrix),
                                bus_method_export_matrix,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Reload",
                                SD_BUS_NO_ARGS,
                                SD_BUS_NO_RESULT,
                                bus_method_reload,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Reserve",
                                SD_BUS_ARGS("s", target, "a{sv}", profile, "a{sv}", options),
                                SD_BUS_RESULT("o", reservation),
                                bus_reservation_method_reserve,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListReservations",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(ssosst)", reservations),
                                bus_reservation_method_list,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        /* Several devices of one VM in one job and one stream (bus-job.c;
         * polkit org.vfmig1.migrate). */
        SD_BUS_METHOD_WITH_ARGS("MigrateGroup",
                                SD_BUS_ARGS("as", devices, "s", endpoint, "s", ticket, "a{sv}", options),
                                SD_BUS_RESULT("o", job),
                                bus_job_method_migrate_group,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        /* The same over a socket handed in (SaveToFd for a group). */
        SD_BUS_METHOD_WITH_ARGS("SaveGroupToFd",
                                SD_BUS_ARGS("as", devices, "h", socket, "a{sv}", options),
                                SD_BUS_RESULT("o", job),
                                bus_job_method_save_group_to_fd,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("ReservationAdded", SD_BUS_ARGS("s", id, "s", target, "o", reservation), 0),
        SD_BUS_SIGNAL_WITH_ARGS("ReservationRemoved",
                                SD_BUS_ARGS("s", id, "s", target, "o", reservation, "s", reason), 0),
        SD_BUS_SIGNAL_WITH_ARGS("DeviceAdded", SD_BUS_ARGS("s", name, "o", device), 0),
        SD_BUS_SIGNAL_WITH_ARGS("DeviceRemoved", SD_BUS_ARGS("s", name, "o", device), 0),
        SD_BUS_SIGNAL("MdevTypesChanged", "", 0),
        SD_BUS_SIGNAL_WITH_ARGS("MatrixChanged", SD_BUS_ARGS("t", generation), 0),
        SD_BUS_VTABLE_END
};
