/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfmigctl-types.c — `types`: the mdev types this host's mdev parents can
 * create (Manager.ListMdevTypes), with the instances still available.
 */
#include <inttypes.h>
#include <stdio.h>

#include "vfmigctl.h"
#include "vfmig-names.h"

/* A multi-line sysfs description on one line: "a: 1\nb: 2" → "a: 1, b: 2". */
static char *description_cell(const char *description)
{
        g_auto(GStrv) lines = g_strsplit(description, "\n", -1);
        g_autoptr(GPtrArray) parts = g_ptr_array_new();

        for (char **l = lines; *l; l++) {
                g_strstrip(*l);
                if (**l)
                        g_ptr_array_add(parts, *l);
        }
        g_ptr_array_add(parts, NULL);
        return g_strjoinv(", ", (char **) parts->pdata);
}

int verb_types(VfmigCtl *ctl, int argc, char **argv)
{
        static const char *const headers[] = { "PARENT", "TYPE", "NAME", "API", "AVAILABLE", NULL };
        static const char *const headers_verbose[] = {
                "PARENT", "DRIVER", "TYPE", "NAME", "API", "AVAILABLE", "DESCRIPTION", NULL
        };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        g_autoptr(VfmigCtlTable) table = vfmigctl_table_new(ctl->verbose ? headers_verbose : headers);
        g_autoptr(JsonArray) array = json_array_new();
        const char *parent, *parent_driver, *id, *name, *api, *description;
        uint32_t available;
        int r;

        r = vfmigctl_call(ctl, "listing mdev types", VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER,
                          "ListMdevTypes", &reply, NULL);
        if (r != 0)
                return r;
        r = sd_bus_message_enter_container(reply, SD_BUS_TYPE_ARRAY, "(ssssssu)");
        if (r < 0)
                return vfmigctl_log_parse_error(r, "listing mdev types");
        while ((r = sd_bus_message_read(reply, "(ssssssu)", &parent, &parent_driver, &id, &name, &api,
                                        &description, &available)) > 0) {
                if (ctl->json != VFMIGCTL_JSON_OFF) {
                        JsonObject *o = json_object_new();

                        json_object_set_string_member(o, "parent", parent);
                        json_object_set_string_member(o, "parent-driver", parent_driver);
                        json_object_set_string_member(o, "type-id", id);
                        json_object_set_string_member(o, "type-name", name);
                        json_object_set_string_member(o, "device-api", api);
                        json_object_set_string_member(o, "description", description);
                        json_object_set_int_member(o, "available-instances", available);
                        json_array_add_object_element(array, o);
                        continue;
                }
                vfmigctl_table_add(table, parent);
                if (ctl->verbose)
                        vfmigctl_table_add(table, parent_driver);
                vfmigctl_table_add(table, id);
                vfmigctl_table_add(table, name);
                vfmigctl_table_add(table, api);
                vfmigctl_table_take(table, g_strdup_printf("%" PRIu32, available));
                if (ctl->verbose)
                        vfmigctl_table_take(table, description_cell(description));
        }
        if (r < 0)
                return vfmigctl_log_parse_error(r, "listing mdev types");

        if (ctl->json != VFMIGCTL_JSON_OFF) {
                g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), array);

                vfmigctl_print_json(ctl, node);
        } else {
                vfmigctl_table_print(ctl, table);
        }
        return VFMIGCTL_EXIT_OK;
}
