/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* vfmigctl reset DEVICE — VFIO_DEVICE_RESET through the daemon, which owns
 * the device (Device.Reset). */
#include <stdio.h>

#include "vfmigctl.h"
#include "vfmig-names.h"

int verb_reset(VfmigCtl *ctl, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL, *done = NULL;
        g_autofree char *what = g_strdup_printf("reset %s", argv[1]);
        g_autofree char *device_path = NULL;
        const char *path;
        int r;

        r = vfmigctl_call(ctl, what, VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER, "GetDevice", &reply, "s",
                          argv[1]);
        if (r != 0)
                return r;
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return vfmigctl_log_parse_error(r, what);
        device_path = g_strdup(path);
        r = vfmigctl_call(ctl, what, device_path, VFMIG_DBUS_INTERFACE_DEVICE, "Reset", &done, NULL);
        if (r != 0)
                return r;
        if (ctl->legend)
                printf("%s: reset\n", argv[1]);
        return VFMIGCTL_EXIT_OK;
}
