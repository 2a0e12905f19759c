/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus-polkit.c — asynchronous polkit CheckAuthorization for bus method calls
 * (park the call, ask polkit over sd-bus, re-dispatch the call on the
 * reply), and the method→action table.  See bus-polkit.h for the contract.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include <glib.h>
#include <systemd/sd-event.h>

#include "bus-polkit.h"
#include "log.h"
#include "util.h"
#include "vfmig-names.h"

#define POLKIT_BUS_NAME   "org.freedesktop.PolicyKit1"
#define POLKIT_PATH       "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_INTERFACE  "org.freedesktop.PolicyKit1.Authority"
#define POLKIT_FLAG_ALLOW_USER_INTERACTION 1u

/* An agent may wait for a person to type a password. */
#define POLKIT_TIMEOUT_USEC              (25ULL * 1000 * 1000)
#define POLKIT_TIMEOUT_INTERACTIVE_USEC  (5ULL * 60 * 1000 * 1000)

/*
 * Every state-changing method and the polkit action that authorizes it.  A
 * method that is not listed here is refused (bus_verify_method_async).
 */
typedef struct MethodAction {
        const char *interface;
        const char *member;
        const char *action;
        const char *verb;       /* polkit detail "verb" */
} MethodAction;

static const MethodAction method_actions[] = {
        { VFMIG_DBUS_INTERFACE_DEVICE,      "OpenDevice",      VFMIG_POLKIT_OPEN_DEVICE, "open-device" },
        { VFMIG_DBUS_INTERFACE_DEVICE,      "Reset",           VFMIG_POLKIT_MANAGE,      "reset" },
        { VFMIG_DBUS_INTERFACE_MANAGER,     "Reserve",         VFMIG_POLKIT_RESERVE,     "reserve" },
        { VFMIG_DBUS_INTERFACE_RESERVATION, "Renew",           VFMIG_POLKIT_RESERVE,     "renew" },
        { VFMIG_DBUS_INTERFACE_RESERVATION, "Release",         VFMIG_POLKIT_RESERVE,     "release" },
        { VFMIG_DBUS_INTERFACE_MANAGER,     "Reload",          VFMIG_POLKIT_MANAGE,      "reload" },
        { VFMIG_DBUS_INTERFACE_RESERVATION, "PrepareIncoming", VFMIG_POLKIT_MIGRATE,     "prepare-incoming" },
        { VFMIG_DBUS_INTERFACE_RESERVATION, "ReceiveFromFd",   VFMIG_POLKIT_MIGRATE,     "receive" },
        { VFMIG_DBUS_INTERFACE_DEVICE,      "Migrate",         VFMIG_POLKIT_MIGRATE,     "migrate" },
        { VFMIG_DBUS_INTERFACE_DEVICE,      "SaveToFd",        VFMIG_POLKIT_MIGRATE,     "save" },
        { VFMIG_DBUS_INTERFACE_MANAGER,     "MigrateGroup",    VFMIG_POLKIT_MIGRATE,     "migrate-group" },
        { VFMIG_DBUS_INTERFACE_MANAGER,     "SaveGroupToFd",   VFMIG_POLKIT_MIGRATE,     "save-group" },
        { VFMIG_DBUS_INTERFACE_JOB,         "Switchover",      VFMIG_POLKIT_MIGRATE,     "switchover" },
        { VFMIG_DBUS_INTERFACE_JOB,         "Cancel",          VFMIG_POLKIT_MIGRATE,     "cancel" },
};

struct PolkitRegistry {
        GHashTable *queries;            /* sd_bus_message* (the parked call) → PolkitQuery* */
        sd_event_source *exit_source;   /* frees the registry when the loop exits */
        PolkitRegistry **owner;         /* set to NULL when freed */
        uint64_t next_id;               /* for cancellation ids */
};

typedef struct PolkitQuery {
        PolkitRegistry *registry;
        sd_bus_message *request;        /* the parked call */
        sd_bus_message *reply;          /* polkit's answer, once it came */
        sd_bus_slot *slot;              /* the pending CheckAuthorization */
        sd_bus_track *track;            /* the caller, while polkit is asked */
        sd_event_source *defer;         /* drops the query after the re-dispatch */
        char *action;
        char **details;
        char *cancel_id;
} PolkitQuery;

static const MethodAction *method_action_lookup(const char *interface, const char *member)
{
        for (size_t i = 0; i < ELEMENTSOF(method_actions); i++)
                if (streq_ptr(method_actions[i].interface, interface) &&
                    streq_ptr(method_actions[i].member, member))
                        return &method_actions[i];
        return NULL;
}

const char *bus_polkit_action_for_method(const char *interface, const char *member)
{
        const MethodAction *a = method_action_lookup(interface, member);

        return a ? a->action : NULL;
}

static void query_free(PolkitQuery *q)
{
        if (!q)
                return;
        if (q->registry)
                g_hash_table_remove(q->registry->queries, q->request);
        sd_bus_slot_unref(q->slot);
        sd_bus_track_unref(q->track);
        sd_event_source_disable_unref(q->defer);
        sd_bus_message_unref(q->request);
        sd_bus_message_unref(q->reply);
        g_free(q->action);
        g_strfreev(q->details);
        g_free(q->cancel_id);
        g_free(q);
}

unsigned polkit_registry_size(const PolkitRegistry *registry)
{
        return registry ? g_hash_table_size(registry->queries) : 0;
}

PolkitRegistry *polkit_registry_free(PolkitRegistry *registry)
{
        GHashTableIter iter;
        gpointer value;

        if (!registry)
                return NULL;
        if (g_hash_table_size(registry->queries) > 0)
                log_debug("Dropping %u call(s) waiting for polkit", g_hash_table_size(registry->queries));
        g_hash_table_iter_init(&iter, registry->queries);
        while (g_hash_table_iter_next(&iter, NULL, &value)) {
                PolkitQuery *q = value;

                g_hash_table_iter_remove(&iter);
                q->registry = NULL;
                query_free(q);
        }
        g_hash_table_unref(registry->queries);
        sd_event_source_disable_unref(registry->exit_source);
        if (registry->owner)
                *registry->owner = NULL;
        g_free(registry);
        return NULL;
}

static int on_loop_exit(sd_event_source *s, void *userdata)
{
        polkit_registry_free(userdata);
        return 0;
}

static int registry_get(PolkitRegistry **registry, sd_bus *bus, PolkitRegistry **ret)
{
        PolkitRegistry *reg;
        sd_event *event = sd_bus_get_event(bus);
        int r;

        if (*registry) {
                *ret = *registry;
                return 0;
        }
        if (!event)
                return -ENXIO;   /* the re-dispatch needs an event loop */
        reg = g_new0(PolkitRegistry, 1);
        reg->queries = g_hash_table_new(g_direct_hash, g_direct_equal);
        r = sd_event_add_exit(event, &reg->exit_source, on_loop_exit, reg);
        if (r < 0) {
                polkit_registry_free(reg);
                return r;
        }
        reg->owner = registry;
        *registry = *ret = reg;
        return 0;
}

/* Whether the caller is root, as the bus driver says (never from /proc). */
static int sender_is_root(sd_bus_message *m)
{
        sd_bus_creds *creds = NULL;
        uid_t uid;
        int r;

        r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_UID | SD_BUS_CREDS_EUID, &creds);
        if (r < 0)
                return r;
        if (sd_bus_creds_get_augmented_mask(creds) & (SD_BUS_CREDS_UID | SD_BUS_CREDS_EUID))
                r = 0;
        else if (sd_bus_creds_get_euid(creds, &uid) >= 0 || sd_bus_creds_get_uid(creds, &uid) >= 0)
                r = uid == 0;
        else
                r = 0;
        sd_bus_creds_unref(creds);
        return r;
}

static bool details_equal(char **a, const char **b)
{
        size_t i;

        if (!a || !b)
                return (!a || !*a) && (!b || !*b);
        for (i = 0; a[i] && b[i]; i++)
                if (strcmp(a[i], b[i]) != 0)
                        return false;
        return !a[i] && !b[i];
}

static bool error_is_no_polkit(const sd_bus_error *e)
{
        return sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER,
                                      SD_BUS_ERROR_NO_REPLY, SD_BUS_ERROR_TIMEOUT,
                                      SD_BUS_ERROR_DISCONNECTED);
}

/* The second dispatch of a parked call: turn polkit's answer into a verdict. */
static int query_verdict(PolkitQuery *q, const char *action, const char **details, sd_bus_error *error)
{
        int authorized, challenge, r;

        if (!q->reply)
                /* Cannot happen: a parked call is not dispatched until polkit answered. */
                return sd_bus_error_setf(error, VFMIG_ERROR_ACCESS_DENIED,
                                         "Access denied: authorization of %s is still pending", action), -EACCES;
        if (!streq_ptr(q->action, action) || !details_equal(q->details, details))
                return sd_bus_error_setf(error, VFMIG_ERROR_ACCESS_DENIED,
                                         "Access denied: the call asked for %s, then for %s; refusing",
                                         q->action, action), -EACCES;

        if (sd_bus_message_is_method_error(q->reply, NULL)) {
                const sd_bus_error *e = sd_bus_message_get_error(q->reply);

                if (error_is_no_polkit(e))
                        sd_bus_error_setf(error, VFMIG_ERROR_ACCESS_DENIED,
                                          "Access denied: %s needs authorization by polkit, and polkit "
                                          "(" POLKIT_BUS_NAME ") is not available on the system bus (%s: %s)",
                                          action, e->name, e->message ?: "");
                else
                        sd_bus_error_setf(error, VFMIG_ERROR_ACCESS_DENIED,
                                          "Access denied: polkit could not check %s (%s: %s)",
                                          action, e->name, e->message ?: "");
                return -EACCES;
        }

        r = sd_bus_message_rewind(q->reply, true);
        if (r >= 0)
                r = sd_bus_message_enter_container(q->reply, 'r', "bba{ss}");
        if (r >= 0)
                r = sd_bus_message_read(q->reply, "bb", &authorized, &challenge);
        if (r < 0) {
                log_warning_errno(r, "Malformed reply from polkit for %s: %m", action);
                return sd_bus_error_setf(error, VFMIG_ERROR_ACCESS_DENIED,
                                         "Access denied: polkit's answer for %s could not be read", action),
                       -EACCES;
        }
        if (authorized)
                return 1;
        if (challenge)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                                         "Access denied: %s requires authentication; call again allowing "
                                         "interactive authorization (e.g. busctl "
                                         "--allow-interactive-authorization=yes)", action),
                       -EACCES;
        return sd_bus_error_setf(error, VFMIG_ERROR_ACCESS_DENIED,
                                 "Access denied: polkit does not authorize %s for this caller", action),
               -EACCES;
}

static int on_query_done(sd_event_source *s, void *userdata)
{
        /* The re-dispatched call has been handled (or dropped): forget it. */
        query_free(userdata);
        return 0;
}

static int on_polkit_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error)
{
        PolkitQuery *q = userdata;
        sd_bus *bus = sd_bus_message_get_bus(q->request);
        int r;

        q->slot = sd_bus_slot_unref(q->slot);
        q->track = sd_bus_track_unref(q->track);
        q->reply = sd_bus_message_ref(reply);

        /*
         * Dispatch the call a second time, from the start: the object is looked
         * up again and the handler now finds the verdict.  Forget the query once
         * the loop is idle again, i.e. after that second dispatch.
         */
        r = sd_event_add_defer(sd_bus_get_event(bus), &q->defer, on_query_done, q);
        if (r >= 0)
                r = sd_event_source_set_priority(q->defer, SD_EVENT_PRIORITY_IDLE);
        if (r >= 0)
                r = sd_bus_message_rewind(q->request, true);
        if (r >= 0)
                r = sd_bus_enqueue_for_read(bus, q->request);
        if (r < 0) {
                log_warning_errno(r, "Cannot re-dispatch %s after polkit answered: %m",
                                  sd_bus_message_get_member(q->request));
                (void) sd_bus_reply_method_errorf(q->request, VFMIG_ERROR_ACCESS_DENIED,
                                                  "Access denied: the answer of polkit for %s could not be "
                                                  "processed", q->action);
                query_free(q);
        }
        return 0;
}

/* The caller went away while polkit was asked: drop its call. */
static int on_caller_gone(sd_bus_track *track, void *userdata)
{
        PolkitQuery *q = userdata;
        sd_bus *bus = sd_bus_message_get_bus(q->request);

        log_debug("%s left while polkit was asked about %s; dropping the call",
                  sd_bus_message_get_sender(q->request), q->action);
        /* No reply wanted: polkit closes a dialog an agent may have opened. */
        (void) sd_bus_call_method_async(bus, NULL, POLKIT_BUS_NAME, POLKIT_PATH, POLKIT_INTERFACE,
                                        "CancelCheckAuthorization", NULL, NULL, "s", q->cancel_id);
        query_free(q);
        return 0;
}

static int query_start(PolkitRegistry *reg, sd_bus_message *m, const char *action,
                       const char **details, PolkitQuery **ret)
{
        sd_bus *bus = sd_bus_message_get_bus(m);
        const char *sender = sd_bus_message_get_sender(m);
        bool interactive = sd_bus_message_get_allow_interactive_authorization(m) > 0;
        sd_bus_message *pk = NULL;
        PolkitQuery *q;
        int r;

        if (!sender)
                return -EBADMSG;

        q = g_new0(PolkitQuery, 1);
        q->action = g_strdup(action);
        q->details = details ? g_strdupv((char **) details) : NULL;
        q->cancel_id = g_strdup_printf("vfmigd-%" PRIu64, ++reg->next_id);

        r = sd_bus_message_new_method_call(bus, &pk, POLKIT_BUS_NAME, POLKIT_PATH, POLKIT_INTERFACE,
                                           "CheckAuthorization");
        if (r >= 0)
                r = sd_bus_message_append(pk, "(sa{sv})s", "system-bus-name", 1, "name", "s", sender, action);
        if (r >= 0)
                r = sd_bus_message_open_container(pk, 'a', "{ss}");
        for (size_t i = 0; r >= 0 && details && details[i] && details[i + 1]; i += 2)
                r = sd_bus_message_append(pk, "{ss}", details[i], details[i + 1]);
        if (r >= 0)
                r = sd_bus_message_close_container(pk);
        if (r >= 0)
                r = sd_bus_message_append(pk, "us",
                                          interactive ? POLKIT_FLAG_ALLOW_USER_INTERACTION : 0u,
                                          q->cancel_id);
        if (r >= 0)
                r = sd_bus_call_async(bus, &q->slot, pk, on_polkit_reply, q,
                                      interactive ? POLKIT_TIMEOUT_INTERACTIVE_USEC : POLKIT_TIMEOUT_USEC);
        sd_bus_message_unref(pk);
        if (r >= 0)
                r = sd_bus_track_new(bus, &q->track, on_caller_gone, q);
        if (r >= 0)
                r = sd_bus_track_add_sender(q->track, m);
        if (r < 0) {
                query_free(q);
                return r;
        }
        q->request = sd_bus_message_ref(m);
        q->registry = reg;
        g_hash_table_insert(reg->queries, m, q);
        *ret = q;
        return 0;
}

int bus_verify_polkit_async(sd_bus_message *m, const char *action, const char **details,
                            PolkitRegistry **registry, sd_bus_error *error)
{
        PolkitRegistry *reg;
        PolkitQuery *q;
        int r;

        if (*registry) {
                q = g_hash_table_lookup((*registry)->queries, m);
                if (q)
                        return query_verdict(q, action, details, error);
        }

        r = sender_is_root(m);
        if (r < 0)
                return sd_bus_error_setf(error, VFMIG_ERROR_ACCESS_DENIED,
                                         "Access denied: cannot tell who is asking for %s: %s",
                                         action, strerror(-r)), -EACCES;
        if (r > 0)
                return 1;

        r = registry_get(registry, sd_bus_message_get_bus(m), &reg);
        if (r >= 0)
                r = query_start(reg, m, action, details, &q);
        if (r < 0) {
                log_warning_errno(r, "Cannot ask polkit about %s: %m", action);
                return sd_bus_error_setf(error, VFMIG_ERROR_ACCESS_DENIED,
                                         "Access denied: cannot ask polkit about %s: %s",
                                         action, strerror(-r)), -EACCES;
        }
        log_debug("Asked polkit whether %s may %s; call parked", sd_bus_message_get_sender(m), action);
        return 0;
}

int bus_verify_method_async(sd_bus_message *m, const char *interface, const char *device,
                            PolkitRegistry **registry, sd_bus_error *error)
{
        const char *member = sd_bus_message_get_member(m);
        const MethodAction *a = method_action_lookup(interface, member);
        const char *details[] = { "verb", NULL, "device", device, NULL };

        if (!a)
                return sd_bus_error_setf(error, VFMIG_ERROR_ACCESS_DENIED,
                                         "Access denied: %s.%s is not in vfmigd's method→action table",
                                         interface ?: "(no interface)", member ?: "(no member)"), -EACCES;
        details[1] = a->verb;
        if (!device)
                details[2] = NULL;
        return bus_verify_polkit_async(m, a->action, details, registry, error);
}
