/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus-introspect.c — the introspection XML of an interface, generated from
 * its vtable, for `vfmigd --introspect`.  The files in dbus/ are compared with
 * both this output and what the running daemon introspects, so the vtable
 * stays the single contract.
 */
#include <string.h>

#include <glib.h>

#include "vfmigd.h"
#include "vfmig-names.h"

/* Length of the single complete type at the start of s (0 if malformed). */
static size_t complete_type_len(const char *s)
{
        size_t i = 0, depth = 0;

        for (;;) {
                char c = s[i++];

                if (c == '\0')
                        return 0;
                if (c == 'a')
                        continue;   /* an array is its element type */
                if (c == '(' || c == '{')
                        depth++;
                else if (c == ')' || c == '}') {
                        if (depth == 0)
                                return 0;
                        depth--;
                }
                if (depth == 0)
                        return i;
        }
}

/* Emit one <arg> per complete type of signature; names are consumed from *names. */
static void write_args(GString *out, const char *signature, const char **names,
                       const char *direction)
{
        const char *s = signature;

        while (s && *s) {
                size_t n = complete_type_len(s);
                g_autofree char *type = NULL;

                if (n == 0)
                        return;
                type = g_strndup(s, n);
                g_string_append_printf(out, "   <arg type=\"%s\"", type);
                if (*names && **names) {
                        g_string_append_printf(out, " name=\"%s\"", *names);
                        *names += strlen(*names) + 1;
                }
                if (direction)
                        g_string_append_printf(out, " direction=\"%s\"", direction);
                g_string_append(out, "/>\n");
                s += n;
        }
}

static const char *property_access(const sd_bus_vtable *v)
{
        if (v->type == _SD_BUS_VTABLE_WRITABLE_PROPERTY)
                return "readwrite";
        return "read";
}

static const char *property_emits(uint64_t flags)
{
        if (flags & SD_BUS_VTABLE_PROPERTY_CONST)
                return "const";
        if (flags & SD_BUS_VTABLE_PROPERTY_EMITS_INVALIDATION)
                return "invalidates";
        if (flags & SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE)
                return NULL;
        return "false";
}

char *bus_introspect_interface(const char *interface, const sd_bus_vtable *vtable)
{
        GString *out = g_string_new(NULL);

        g_string_append_printf(out, " <interface name=\"%s\">\n", interface);
        for (const sd_bus_vtable *v = vtable; v->type != _SD_BUS_VTABLE_END; v++) {
                const char *names, *emits;

                switch (v->type) {
                case _SD_BUS_VTABLE_METHOD:
                        names = v->x.method.names;
                        g_string_append_printf(out, "  <method name=\"%s\">\n", v->x.method.member);
                        write_args(out, v->x.method.signature, &names, "in");
                        write_args(out, v->x.method.result, &names, "out");
                        /* As sd-bus marks methods that need privileges. */
                        if (!(v->flags & SD_BUS_VTABLE_UNPRIVILEGED))
                                g_string_append(out, "   <annotation name=\"org.freedesktop.systemd1.Privileged\" value=\"true\"/>\n");
                        g_string_append(out, "  </method>\n");
                        break;
                case _SD_BUS_VTABLE_SIGNAL:
                        names = v->x.signal.names;
                        g_string_append_printf(out, "  <signal name=\"%s\">\n", v->x.signal.member);
                        write_args(out, v->x.signal.signature, &names, NULL);
                        g_string_append(out, "  </signal>\n");
                        break;
                case _SD_BUS_VTABLE_PROPERTY:
                case _SD_BUS_VTABLE_WRITABLE_PROPERTY:
                        emits = property_emits(v->flags);
                        g_string_append_printf(out, "  <property name=\"%s\" type=\"%s\" access=\"%s\"",
                                               v->x.property.member, v->x.property.signature,
                                               property_access(v));
                        if (emits)
                                g_string_append_printf(out, ">\n   <annotation name=\"org.freedesktop.DBus.Property.EmitsChangedSignal\" value=\"%s\"/>\n  </property>\n", emits);
                        else
                                g_string_append(out, "/>\n");
                        break;
                default:
                        break;
                }
        }
        g_string_append(out, " </interface>\n");
        return g_string_free(out, FALSE);
}

char *bus_introspect_all(void)
{
        static const struct {
                const char *interface;
                const sd_bus_vtable *vtable;
        } ifaces[] = {
                { VFMIG_DBUS_INTERFACE_MANAGER, manager_vtable },
                { VFMIG_DBUS_INTERFACE_DEVICE, device_vtable },
                { VFMIG_DBUS_INTERFACE_RESERVATION, reservation_vtable },
                { VFMIG_DBUS_INTERFACE_JOB, job_vtable },
        };
        GString *out = g_string_new("<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n"
                                    " \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n"
                                    "<node>\n");

        for (size_t i = 0; i < G_N_ELEMENTS(ifaces); i++) {
                g_autofree char *x = bus_introspect_interface(ifaces[i].interface, ifaces[i].vtable);
                g_string_append(out, x);
        }
        g_string_append(out, "</node>\n");
        return g_string_free(out, FALSE);
}
