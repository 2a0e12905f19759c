/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfmigctl-status.c — `status`: the properties of org.vfmig1.Manager (daemon
 * version, backend, device count, and whatever the daemon adds later).
 */
#include <stdio.h>

#include "vfmigctl.h"
#include "vfmig-names.h"

static const VfmigCtlProperty manager_properties[] = {
        { "Version", "Version", VFMIGCTL_FORMAT_STRING },
        { "Backend", "Backend", VFMIGCTL_FORMAT_STRING },
        { "DeviceCount", "Devices", VFMIGCTL_FORMAT_NUMBER },
};

int verb_status(VfmigCtl *ctl, int argc, char **argv)
{
        g_autoptr(JsonObject) props = NULL;
        int r;

        r = vfmigctl_get_all(ctl, "reading daemon status", VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER,
                             &props);
        if (r != 0)
                return r;

        if (ctl->json != VFMIGCTL_JSON_OFF) {
                g_autoptr(JsonObject) o = vfmigctl_json_object_from_properties(props);
                g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);

                vfmigctl_print_json(ctl, node);
        } else {
                g_autoptr(VfmigCtlTable) fields = vfmigctl_table_new((const char *const[]) { "", "", NULL });

                vfmigctl_table_add(fields, "Bus name");
                vfmigctl_table_add(fields, VFMIG_BUS_NAME);
                vfmigctl_table_add_properties(fields, props, manager_properties,
                                              ELEMENTSOF(manager_properties), false);
                vfmigctl_table_print_fields(fields);
        }
        return VFMIGCTL_EXIT_OK;
}
