/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfmigctl-bus.c — calls to org.vfmig1 and their failures: D-Bus error names
 * to exit statuses, one-line error messages, and a generic reader that turns
 * property values of any signature into JSON nodes, so that a property the
 * daemon adds later shows up in `show` and `--json` without a client change.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "vfmigctl.h"
#include "vfmig-names.h"

#define DBUS_SPAWN_ERROR_PREFIX       "org.freedesktop.DBus.Error.Spawn."

static const struct {
        const char *name;
        int status;
} error_status_table[] = {
        { VFMIG_ERROR_NO_SUCH_DEVICE, VFMIGCTL_EXIT_NO_SUCH_DEVICE },
        { VFMIG_ERROR_INVALID_ARGS, VFMIGCTL_EXIT_USAGE },
        { SD_BUS_ERROR_INVALID_ARGS, VFMIGCTL_EXIT_USAGE },
        { VFMIG_ERROR_ACCESS_DENIED, VFMIGCTL_EXIT_ACCESS_DENIED },
        { SD_BUS_ERROR_ACCESS_DENIED, VFMIGCTL_EXIT_ACCESS_DENIED },
        { SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, VFMIGCTL_EXIT_ACCESS_DENIED },
        { SD_BUS_ERROR_SERVICE_UNKNOWN, VFMIGCTL_EXIT_NOT_RUNNING },
        { SD_BUS_ERROR_NAME_HAS_NO_OWNER, VFMIGCTL_EXIT_NOT_RUNNING },
        { VFMIG_ERROR_NOT_COMPATIBLE, VFMIGCTL_EXIT_NOT_COMPATIBLE },
        { VFMIG_ERROR_BUSY, VFMIGCTL_EXIT_BUSY },
};

int vfmigctl_exit_status(const sd_bus_error *error, int r)
{
        if (sd_bus_error_is_set(error)) {
                for (size_t i = 0; i < ELEMENTSOF(error_status_table); i++)
                        if (sd_bus_error_has_name(error, error_status_table[i].name))
                                return error_status_table[i].status;
                /* Bus activation of vfmigd failed: it is not running. */
                if (g_str_has_prefix(error->name, DBUS_SPAWN_ERROR_PREFIX))
                        return VFMIGCTL_EXIT_NOT_RUNNING;
                return VFMIGCTL_EXIT_FAILURE;
        }
        if (r == -EACCES || r == -EPERM)
                return VFMIGCTL_EXIT_ACCESS_DENIED;
        return VFMIGCTL_EXIT_FAILURE;
}

int vfmigctl_log_error(const sd_bus_error *error, int r, const char *what)
{
        int status = vfmigctl_exit_status(error, r);
        g_autofree char *msg = NULL;

        if (sd_bus_error_is_set(error) && error->message && error->message[0])
                msg = vfmigctl_one_line(error->message);
        else if (sd_bus_error_is_set(error))
                msg = g_strdup(error->name);
        else
                msg = g_strdup(g_strerror(r < 0 ? -r : r));

        if (status == VFMIGCTL_EXIT_NOT_RUNNING)
                fprintf(stderr, "vfmigctl: %s: vfmigd is not running (%s)\n", what, msg);
        else
                fprintf(stderr, "vfmigctl: %s: %s\n", what, msg);
        return status;
}

int vfmigctl_log_parse_error(int r, const char *what)
{
        fprintf(stderr, "vfmigctl: %s: unexpected reply from vfmigd: %s\n", what,
                g_strerror(r < 0 ? -r : r));
        return VFMIGCTL_EXIT_FAILURE;
}

int vfmigctl_call(VfmigCtl *ctl, const char *what, const char *path, const char *interface,
                  const char *member, sd_bus_message **reply, const char *types, ...)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        va_list ap;
        int r;

        va_start(ap, types);
        r = sd_bus_call_methodv(ctl->bus, VFMIG_BUS_NAME, path, interface, member, &error, reply,
                                types, ap);
        va_end(ap);
        if (r < 0)
                return vfmigctl_log_error(&error, r, what);
        return 0;
}

/* One value of any signature, at the read position of M, as a JSON node. */
static int read_value(sd_bus_message *m, JsonNode **ret)
{
        g_autoptr(JsonNode) node = NULL;
        const char *contents = NULL;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r < 0)
                return r;
        if (r == 0)
                return -EBADMSG;

        switch (type) {
        case SD_BUS_TYPE_BYTE:
        case SD_BUS_TYPE_INT16:
        case SD_BUS_TYPE_UINT16:
        case SD_BUS_TYPE_INT32:
        case SD_BUS_TYPE_UINT32:
        case SD_BUS_TYPE_INT64:
        case SD_BUS_TYPE_UINT64: {
                union {
                        uint8_t y;
                        int16_t n;
                        uint16_t q;
                        int32_t i;
                        uint32_t u;
                        int64_t x;
                        uint64_t t;
                } v = {};
                gint64 x;

                r = sd_bus_message_read_basic(m, type, &v);
                x = type == SD_BUS_TYPE_BYTE ? v.y :
                    type == SD_BUS_TYPE_INT16 ? v.n :
                    type == SD_BUS_TYPE_UINT16 ? v.q :
                    type == SD_BUS_TYPE_INT32 ? v.i :
                    type == SD_BUS_TYPE_UINT32 ? v.u :
                    type == SD_BUS_TYPE_INT64 ? v.x :
                    /* JSON readers lose precision above 2^53 anyway; keep the bits. */
                    (gint64) v.t;
                node = json_node_init_int(json_node_alloc(), x);
                break;
        }
        case SD_BUS_TYPE_DOUBLE: {
                double v;
                r = sd_bus_message_read_basic(m, type, &v);
                node = json_node_init_double(json_node_alloc(), v);
                break;
        }
        case SD_BUS_TYPE_BOOLEAN: {
                int v;
                r = sd_bus_message_read_basic(m, type, &v);
                node = json_node_init_boolean(json_node_alloc(), v);
                break;
        }
        case SD_BUS_TYPE_STRING:
        case SD_BUS_TYPE_OBJECT_PATH:
        case SD_BUS_TYPE_SIGNATURE: {
                const char *v;
                r = sd_bus_message_read_basic(m, type, &v);
                node = json_node_init_string(json_node_alloc(), r >= 0 ? v : "");
                break;
        }
        case SD_BUS_TYPE_UNIX_FD:
                r = sd_bus_message_skip(m, "h");
                node = json_node_init_null(json_node_alloc());
                break;
        case SD_BUS_TYPE_VARIANT:
                r = sd_bus_message_enter_container(m, type, contents);
                if (r < 0)
                        return r;
                r = read_value(m, &node);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                break;
        case SD_BUS_TYPE_ARRAY:
        case SD_BUS_TYPE_STRUCT: {
                bool dict = type == SD_BUS_TYPE_ARRAY && contents[0] == SD_BUS_TYPE_DICT_ENTRY_BEGIN;
                g_autoptr(JsonObject) obj = dict ? json_object_new() : NULL;
                g_autoptr(JsonArray) arr = dict ? NULL : json_array_new();

                r = sd_bus_message_enter_container(m, type, contents);
                if (r < 0)
                        return r;
                for (;;) {
                        g_autoptr(JsonNode) key = NULL, value = NULL;
                        const char *entry_contents;
                        char entry_type;

                        r = sd_bus_message_at_end(m, false);
                        if (r < 0)
                                return r;
                        if (r > 0)
                                break;
                        if (!dict) {
                                r = read_value(m, &value);
                                if (r < 0)
                                        return r;
                                json_array_add_element(arr, g_steal_pointer(&value));
                                continue;
                        }
                        r = sd_bus_message_peek_type(m, &entry_type, &entry_contents);
                        if (r <= 0)
                                return r < 0 ? r : -EBADMSG;
                        r = sd_bus_message_enter_container(m, entry_type, entry_contents);
                        if (r < 0)
                                return r;
                        r = read_value(m, &key);
                        if (r < 0)
                                return r;
                        r = read_value(m, &value);
                        if (r < 0)
                                return r;
                        r = sd_bus_message_exit_container(m);
                        if (r < 0)
                                return r;
                        if (json_node_get_value_type(key) == G_TYPE_STRING) {
                                json_object_set_member(obj, json_node_get_string(key), g_steal_pointer(&value));
                        } else {
                                /* Integer or boolean keys: JSON keys are strings. */
                                g_autofree char *k = json_to_string(key, false);
                                json_object_set_member(obj, k, g_steal_pointer(&value));
                        }
                }
                r = sd_bus_message_exit_container(m);
                node = json_node_alloc();
                if (dict)
                        json_node_init_object(node, obj);
                else
                        json_node_init_array(node, arr);
                break;
        }
        default:
                return -EBADMSG;
        }
        if (r < 0)
                return r;
        *ret = g_steal_pointer(&node);
        return 0;
}

int vfmigctl_read_properties(sd_bus_message *m, JsonObject **ret)
{
        g_autoptr(JsonObject) props = json_object_new();
        int r;

        r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, "sv")) > 0) {
                g_autoptr(JsonNode) value = NULL;
                const char *name;

                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return r;
                r = read_value(m, &value);
                if (r < 0)
                        return r;
                json_object_set_member(props, name, g_steal_pointer(&value));
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        *ret = g_steal_pointer(&props);
        return 0;
}

int vfmigctl_get_all(VfmigCtl *ctl, const char *what, const char *path, const char *interface,
                     JsonObject **ret)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = vfmigctl_call(ctl, what, path, DBUS_PROPERTIES_INTERFACE, "GetAll", &reply, "s", interface);
        if (r != 0)
                return r;
        r = vfmigctl_read_properties(reply, ret);
        if (r < 0)
                return vfmigctl_log_parse_error(r, what);
        return 0;
}

static int read_managed_objects(sd_bus_message *m, const char *interface, GHashTable *objects)
{
        int r;

        r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "{oa{sa{sv}}}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, "oa{sa{sv}}")) > 0) {
                const char *path;

                r = sd_bus_message_read(m, "o", &path);
                if (r < 0)
                        return r;
                r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "{sa{sv}}");
                if (r < 0)
                        return r;
                while ((r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, "sa{sv}")) > 0) {
                        const char *iface;

                        r = sd_bus_message_read(m, "s", &iface);
                        if (r < 0)
                                return r;
                        if (streq_ptr(iface, interface)) {
                                JsonObject *props = NULL;

                                r = vfmigctl_read_properties(m, &props);
                                if (r < 0)
                                        return r;
                                g_hash_table_replace(objects, g_strdup(path), props);
                        } else {
                                r = sd_bus_message_skip(m, "a{sv}");
                                if (r < 0)
                                        return r;
                        }
                        r = sd_bus_message_exit_container(m);
                        if (r < 0)
                                return r;
                }
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

int vfmigctl_get_managed_objects(VfmigCtl *ctl, const char *what, const char *interface,
                                 GHashTable **ret)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        g_autoptr(GHashTable) objects =
                g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) json_object_unref);
        int r;

        r = vfmigctl_call(ctl, what, VFMIG_DBUS_PATH, DBUS_OBJECT_MANAGER_INTERFACE, "GetManagedObjects",
                          &reply, NULL);
        if (r != 0)
                return r;
        r = read_managed_objects(reply, interface, objects);
        if (r < 0)
                return vfmigctl_log_parse_error(r, what);
        *ret = g_steal_pointer(&objects);
        return 0;
}
