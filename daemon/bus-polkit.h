/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus-polkit.h — asynchronous polkit authorization of bus method calls, the
 * way systemd's bus-polkit.c does it, and the one method→action table.
 *
 * A handler of a state-changing method calls bus_verify_method_async() (or
 * bus_verify_polkit_async() with an explicit action) after it has parsed and
 * validated its arguments:
 *
 *     r = bus_verify_method_async(msg, VFMIG_DBUS_INTERFACE_DEVICE, name, registry, error);
 *     if (r < 0)
 *             return r;            (refused: *error names the action)
 *     if (r == 0)
 *             return 1;            (parked: the handler runs again later)
 *     ... look the object up again, act, reply ...
 *
 * The first call asks polkit (CheckAuthorization, asynchronously), keeps a
 * reference to the call and returns 0; the handler returns without a reply.
 * When polkit answers, the call is put back into the bus's read queue, so it
 * is dispatched again from the start (object lookup included) and this time
 * gets the verdict: 1 = allowed, <0 = refused.  Callers with euid 0 (as the
 * bus driver reports it) are allowed without asking.  polkit absent or
 * failing means refused.  The main loop serves other calls meanwhile.  A
 * parked call is dropped, and polkit's check cancelled, when its client
 * disconnects.
 *
 * Methods gated this way are declared SD_BUS_VTABLE_UNPRIVILEGED.
 */
#pragma once

#include <systemd/sd-bus.h>

typedef struct PolkitRegistry PolkitRegistry;

/*
 * Authorize the call m for action, with polkit details (key, value, ...,
 * NULL; may be NULL).  *registry is allocated on first use; it frees itself
 * and every parked call when the event loop of m's bus exits, and sets
 * *registry to NULL then.  Returns 1 allowed, 0 parked, <0 refused with
 * *error set (org.vfmig1.Error.AccessDenied or InteractiveAuthorizationRequired,
 * naming the action).
 */
int bus_verify_polkit_async(sd_bus_message *m, const char *action, const char **details,
                            PolkitRegistry **registry, sd_bus_error *error);

/*
 * The same, with the action looked up in the method→action table from
 * interface and m's member, and the details "verb" and, when device is not
 * NULL, "device".  A method not in the table is refused, also for root.
 */
int bus_verify_method_async(sd_bus_message *m, const char *interface, const char *device,
                            PolkitRegistry **registry, sd_bus_error *error);

/* The polkit action of interface.member, NULL when it is not in the table. */
const char *bus_polkit_action_for_method(const char *interface, const char *member);

/* Number of calls parked or awaiting re-dispatch. */
unsigned polkit_registry_size(const PolkitRegistry *registry);

/* Drops every parked call without a reply, sets the owner's pointer to NULL.
 * Returns NULL. */
PolkitRegistry *polkit_registry_free(PolkitRegistry *registry);
