/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfmigctl-reservations.c — `reserve DEVICE [--profile FILE|-] [--lease S]
 * [--persist]`, `reservations`, `renew ID [--lease S]`, `release ID`
 * (Manager.Reserve, Manager.ListReservations, Reservation.Renew/Release).
 *
 * A reservation that does not persist belongs to the bus connection that
 * made it, so `reserve` without --persist holds it while it runs, like
 * systemd-inhibit: it prints the id, waits, and the reservation ends when
 * vfmigctl is interrupted (exit 0) or when the reservation ends otherwise
 * (expired, released by someone else: exit 1).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "vfmigctl.h"
#include "vfmig-names.h"
#include "json-reader.h"

#define PROFILE_FILE_MAX (1024 * 1024)
#define RESERVATION_ID_LEN 32

/* --- arguments ------------------------------------------------------------ */

static int usage(const char *fmt, const char *arg)
{
        fputs("vfmigctl: ", stderr);
        fprintf(stderr, fmt, arg);
        fputs(" (see vfmigctl --help)\n", stderr);
        return VFMIGCTL_EXIT_USAGE;
}

/* --lease: 1..86400 seconds (the daemon has the last word on the range). */
static int parse_lease(const char *s, uint32_t *ret)
{
        guint64 v;

        if (!s) {
                *ret = 0;
                return 0;
        }
        if (!g_ascii_string_to_unsigned(s, 10, 1, 86400, &v, NULL))
                return usage("--lease=\"%s\": expected whole seconds, 1..86400", s);
        *ret = (uint32_t) v;
        return 0;
}

/* A reservation id (32 hex digits, as `reservations` lists them) or its
 * object path → the object path. */
static int reservation_path(const char *arg, char **ret)
{
        const char *id = arg;

        if (g_str_has_prefix(arg, VFMIG_DBUS_RESERVATION_PREFIX "/"))
                id = arg + strlen(VFMIG_DBUS_RESERVATION_PREFIX "/");
        if (strlen(id) != RESERVATION_ID_LEN || strspn(id, "0123456789abcdef") != RESERVATION_ID_LEN)
                return usage("\"%s\" is not a reservation id (32 hex digits, see vfmigctl reservations)", arg);
        *ret = g_strconcat(VFMIG_DBUS_RESERVATION_PREFIX "/", id, NULL);
        return 0;
}

/* --- the profile file → a{sv} ---------------------------------------------- */

static int read_profile(const char *path, JsonObject **ret)
{
        g_autoptr(JsonParser) parser = json_parser_new();
        g_autoptr(GError) err = NULL;
        g_autofree char *data = NULL;
        g_autofree char *why = NULL;
        gsize len = 0;
        JsonNode *root;

        if (streq_ptr(path, "-")) {
                GString *s = g_string_new(NULL);
                char buf[4096];
                size_t n;

                while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0 && s->len <= PROFILE_FILE_MAX)
                        g_string_append_len(s, buf, n);
                len = s->len;
                data = g_string_free(s, false);
        } else if (!g_file_get_contents(path, &data, &len, &err)) {
                fprintf(stderr, "vfmigctl: reading profile: %s\n", err->message);
                return VFMIGCTL_EXIT_USAGE;
        }
        if (len > PROFILE_FILE_MAX) {
                fprintf(stderr, "vfmigctl: profile %s: larger than 1 MiB\n", path);
                return VFMIGCTL_EXIT_USAGE;
        }
        if (!jv_check(data, len, &why)) {
                fprintf(stderr, "vfmigctl: profile %s: not JSON: %s\n", path, why);
                return VFMIGCTL_EXIT_USAGE;
        }
        if (!json_parser_load_from_data(parser, data, len, &err)) {
                fprintf(stderr, "vfmigctl: profile %s: %s\n", path, err->message);
                return VFMIGCTL_EXIT_USAGE;
        }
        root = json_parser_get_root(parser);
        if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
                fprintf(stderr, "vfmigctl: profile %s: not a JSON object\n", path);
                return VFMIGCTL_EXIT_USAGE;
        }
        *ret = json_object_ref(json_node_get_object(root));
        return 0;
}

static bool all_strings_array(JsonArray *a)
{
        for (guint i = 0; i < json_array_get_length(a); i++)
                if (json_node_get_value_type(json_array_get_element(a, i)) != G_TYPE_STRING)
                        return false;
        return true;
}

static bool all_strings_object(JsonObject *o)
{
        JsonObjectIter it;
        JsonNode *v;

        json_object_iter_init(&it, o);
        while (json_object_iter_next(&it, NULL, &v))
                if (json_node_get_value_type(v) != G_TYPE_STRING)
                        return false;
        return true;
}

static int append_dict(sd_bus_message *m, JsonObject *o);

/*
 * One JSON value as a variant, with the bus types of the profile format
 * (doc/compat-rules.md): "format" u, "state-size" t, other integers x,
 * strings s, arrays of strings as, objects of strings a{ss}.
 */
static int append_variant(sd_bus_message *m, const char *key, JsonNode *n)
{
        int r;

        if (JSON_NODE_HOLDS_OBJECT(n)) {
                JsonObject *o = json_node_get_object(n);

                r = sd_bus_message_open_container(m, 'v', all_strings_object(o) ? "a{ss}" : "a{sv}");
                if (r >= 0)
                        r = append_dict(m, o);
                return r < 0 ? r : sd_bus_message_close_container(m);
        }
        if (JSON_NODE_HOLDS_ARRAY(n)) {
                JsonArray *a = json_node_get_array(n);
                bool strings = all_strings_array(a);

                r = sd_bus_message_open_container(m, 'v', strings ? "as" : "av");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'a', strings ? "s" : "v");
                for (guint i = 0; r >= 0 && i < json_array_get_length(a); i++) {
                        JsonNode *e = json_array_get_element(a, i);

                        r = strings ? sd_bus_message_append_basic(m, 's', json_node_get_string(e))
                                    : append_variant(m, NULL, e);
                }
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                return r < 0 ? r : sd_bus_message_close_container(m);
        }
        switch (json_node_get_value_type(n)) {
        case G_TYPE_STRING:
                return sd_bus_message_append(m, "v", "s", json_node_get_string(n));
        case G_TYPE_BOOLEAN:
                return sd_bus_message_append(m, "v", "b", (int) json_node_get_boolean(n));
        case G_TYPE_DOUBLE:
                return sd_bus_message_append(m, "v", "d", json_node_get_double(n));
        case G_TYPE_INT64: {
                gint64 x = json_node_get_int(n);

                if (streq_ptr(key, "format") && x >= 0 && x <= G_MAXUINT32)
                        return sd_bus_message_append(m, "v", "u", (uint32_t) x);
                if (streq_ptr(key, "state-size") && x >= 0)
                        return sd_bus_message_append(m, "v", "t", (uint64_t) x);
                return sd_bus_message_append(m, "v", "x", (int64_t) x);
        }
        default:
                return -EINVAL;     /* null */
        }
}

static int append_dict(sd_bus_message *m, JsonObject *o)
{
        bool strings = all_strings_object(o);
        JsonObjectIter it;
        const char *k;
        JsonNode *v;
        int r;

        r = sd_bus_message_open_container(m, 'a', strings ? "{ss}" : "{sv}");
        if (r < 0)
                return r;
        json_object_iter_init_ordered(&it, o);
        while (json_object_iter_next_ordered(&it, &k, &v)) {
                if (strings) {
                        r = sd_bus_message_append(m, "{ss}", k, json_node_get_string(v));
                } else {
                        r = sd_bus_message_open_container(m, 'e', "sv");
                        if (r >= 0)
                                r = sd_bus_message_append_basic(m, 's', k);
                        if (r >= 0)
                                r = append_variant(m, k, v);
                        if (r >= 0)
                                r = sd_bus_message_close_container(m);
                }
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(m);
}

/* The profile as a{sv} (also when every value is a string). */
static int append_profile(sd_bus_message *m, JsonObject *profile)
{
        JsonObjectIter it;
        const char *k;
        JsonNode *v;
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        if (profile) {
                json_object_iter_init_ordered(&it, profile);
                while (r >= 0 && json_object_iter_next_ordered(&it, &k, &v)) {
                        if (JSON_NODE_HOLDS_NULL(v))
                                continue;
                        r = sd_bus_message_open_container(m, 'e', "sv");
                        if (r >= 0)
                                r = sd_bus_message_append_basic(m, 's', k);
                        if (r >= 0)
                                r = append_variant(m, k, v);
                        if (r >= 0)
                                r = sd_bus_message_close_container(m);
                }
        }
        return r < 0 ? r : sd_bus_message_close_container(m);
}

/* --- calls ---------------------------------------------------------------- */

/* Like vfmigctl_call, plus NotReserved → VFMIGCTL_EXIT_NOT_RESERVED. */
static int call_reservation(VfmigCtl *ctl, const char *what, const char *path, const char *member,
                            const char *types, ...)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        va_list ap;
        int r;

        r = sd_bus_message_new_method_call(ctl->bus, &m, VFMIG_BUS_NAME, path, VFMIG_DBUS_INTERFACE_RESERVATION,
                                           member);
        if (r >= 0 && types) {
                va_start(ap, types);
                r = sd_bus_message_appendv(m, types, ap);
                va_end(ap);
        }
        if (r >= 0)
                r = sd_bus_message_set_allow_interactive_authorization(m, true);
        if (r < 0)
                return vfmigctl_log_error(NULL, r, what);
        r = sd_bus_call(ctl->bus, m, 0, &error, &reply);
        if (r < 0) {
                if (sd_bus_error_has_name(&error, VFMIG_ERROR_NOT_RESERVED)) {
                        g_autofree char *msg = vfmigctl_one_line(error.message ? error.message : error.name);

                        fprintf(stderr, "vfmigctl: %s: %s\n", what, msg);
                        return VFMIGCTL_EXIT_NOT_RESERVED;
                }
                return vfmigctl_log_error(&error, r, what);
        }
        return 0;
}

typedef struct Hold {
        const char *id;
        const char *device;
} Hold;

static int on_reservation_removed(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Hold *h = userdata;
        const char *id, *target, *path, *reason;

        if (sd_bus_message_read(m, "ssos", &id, &target, &path, &reason) < 0 || !h->id || !streq_ptr(id, h->id))
                return 0;
        fprintf(stderr, "vfmigctl: reservation %s of %s ended: %s\n", id, target, reason);
        return sd_event_exit(sd_bus_get_event(sd_bus_message_get_bus(m)), VFMIGCTL_EXIT_FAILURE);
}

int verb_reserve(VfmigCtl *ctl, int argc, char **argv)
{
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        g_autoptr(JsonObject) profile = NULL;
        g_autofree char *what = g_strdup_printf("reserve %s", argv[1]);
        g_autofree char *id = NULL;
        Hold hold = { .device = argv[1] };
        const char *path;
        uint32_t lease;
        sigset_t mask;
        int r;

        r = parse_lease(ctl->lease, &lease);
        if (r != 0)
                return r;
        if (ctl->profile) {
                r = read_profile(ctl->profile, &profile);
                if (r != 0)
                        return r;
        }

        if (!ctl->persist) {
                /* Listen before asking: a short lease may end before the reply is read. */
                sigemptyset(&mask);
                sigaddset(&mask, SIGINT);
                sigaddset(&mask, SIGTERM);
                sigprocmask(SIG_BLOCK, &mask, NULL);
                r = sd_event_new(&event);
                if (r >= 0)
                        r = sd_event_add_signal(event, NULL, SIGINT, NULL, NULL);
                if (r >= 0)
                        r = sd_event_add_signal(event, NULL, SIGTERM, NULL, NULL);
                if (r >= 0)
                        r = sd_bus_attach_event(ctl->bus, event, SD_EVENT_PRIORITY_NORMAL);
                if (r >= 0)
                        r = sd_bus_match_signal(ctl->bus, NULL, VFMIG_BUS_NAME, VFMIG_DBUS_PATH,
                                                VFMIG_DBUS_INTERFACE_MANAGER, "ReservationRemoved",
                                                on_reservation_removed, &hold);
                if (r < 0)
                        return vfmigctl_log_error(NULL, r, what);
        }

        r = sd_bus_message_new_method_call(ctl->bus, &m, VFMIG_BUS_NAME, VFMIG_DBUS_PATH,
                                           VFMIG_DBUS_INTERFACE_MANAGER, "Reserve");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", argv[1]);
        if (r >= 0)
                r = append_profile(m, profile);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && lease)
                r = sd_bus_message_append(m, "{sv}", "lease-seconds", "u", lease);
        if (r >= 0 && ctl->persist)
                r = sd_bus_message_append(m, "{sv}", "persist", "b", 1);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_set_allow_interactive_authorization(m, true);
        if (r < 0) {
                fprintf(stderr, "vfmigctl: %s: cannot build the call: %s\n", what, g_strerror(-r));
                return VFMIGCTL_EXIT_USAGE;
        }
        r = sd_bus_call(ctl->bus, m, 0, &error, &reply);
        if (r < 0)
                return vfmigctl_log_error(&error, r, what);
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return vfmigctl_log_parse_error(r, what);
        id = g_path_get_basename(path);
        hold.id = id;
        printf("%s %s\n", id, path);
        fflush(stdout);
        if (ctl->persist)
                return VFMIGCTL_EXIT_OK;

        if (isatty(STDERR_FILENO))
                fprintf(stderr, "Holding reservation %s of %s; it ends when vfmigctl exits (Ctrl-C).\n", id,
                        argv[1]);
        r = sd_event_loop(event);
        return r < 0 ? vfmigctl_log_error(NULL, r, what) : r;
}

static char *time_cell(uint64_t usec)
{
        g_autoptr(GDateTime) t = g_date_time_new_from_unix_local((gint64) (usec / G_USEC_PER_SEC));

        return t ? g_date_time_format(t, "%Y-%m-%d %H:%M:%S") : g_strdup("-");
}

int verb_reservations(VfmigCtl *ctl, int argc, char **argv)
{
        static const char *const headers[] = { "ID", "TARGET", "STATE", "EXPIRES", "OWNER", NULL };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        g_autoptr(GHashTable) objects = NULL;
        g_autoptr(VfmigCtlTable) table = vfmigctl_table_new(headers);
        g_autoptr(JsonArray) array = json_array_new();
        const char *id, *target, *path, *owner, *state;
        uint64_t expires;
        int r;

        r = vfmigctl_call(ctl, "listing reservations", VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER,
                          "ListReservations", &reply, NULL);
        if (r != 0)
                return r;
        if (ctl->json != VFMIGCTL_JSON_OFF) {
                r = vfmigctl_get_managed_objects(ctl, "listing reservations", VFMIG_DBUS_INTERFACE_RESERVATION,
                                                 &objects);
                if (r != 0)
                        return r;
        }
        r = sd_bus_message_enter_container(reply, 'a', "(ssosst)");
        if (r < 0)
                return vfmigctl_log_parse_error(r, "listing reservations");
        while ((r = sd_bus_message_read(reply, "(ssosst)", &id, &target, &path, &owner, &state, &expires)) > 0) {
                if (ctl->json != VFMIGCTL_JSON_OFF) {
                        JsonObject *props = g_hash_table_lookup(objects, path);
                        JsonObject *o;

                        if (!props)
                                continue;       /* ended in between */
                        o = vfmigctl_json_object_from_properties(props);
                        json_object_set_string_member(o, "object-path", path);
                        json_array_add_object_element(array, o);
                        continue;
                }
                vfmigctl_table_add(table, id);
                vfmigctl_table_add(table, target);
                vfmigctl_table_add(table, state);
                vfmigctl_table_take(table, time_cell(expires));
                vfmigctl_table_add(table, owner);
        }
        if (r < 0)
                return vfmigctl_log_parse_error(r, "listing reservations");

        if (ctl->json != VFMIGCTL_JSON_OFF) {
                g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), array);

                vfmigctl_print_json(ctl, node);
        } else {
                vfmigctl_table_print(ctl, table);
        }
        return VFMIGCTL_EXIT_OK;
}

int verb_renew(VfmigCtl *ctl, int argc, char **argv)
{
        g_autofree char *path = NULL, *what = g_strdup_printf("renew %s", argv[1]);
        uint32_t lease;
        int r;

        r = reservation_path(argv[1], &path);
        if (r != 0)
                return r;
        r = parse_lease(ctl->lease, &lease);
        if (r != 0)
                return r;
        /* 0: the lease the reservation was made or last renewed with. */
        r = call_reservation(ctl, what, path, "Renew", "u", lease);
        if (r != 0)
                return r;
        if (ctl->legend)
                printf("%s: renewed\n", argv[1]);
        return VFMIGCTL_EXIT_OK;
}

int verb_release(VfmigCtl *ctl, int argc, char **argv)
{
        g_autofree char *path = NULL, *what = g_strdup_printf("release %s", argv[1]);
        int r;

        r = reservation_path(argv[1], &path);
        if (r != 0)
                return r;
        r = call_reservation(ctl, what, path, "Release", NULL);
        if (r != 0)
                return r;
        if (ctl->legend)
                printf("%s: released\n", argv[1]);
        return VFMIGCTL_EXIT_OK;
}

/* receive ID [ADDRESS]: prepare the incoming side of a migration for a
 * reservation (PrepareIncoming); prints the endpoint and the single-use
 * ticket to give to `vfmigctl migrate` on the source host. */
/* `receive ID[,ID...] [ADDRESS]`: one listener for one reservation, or for a
 * group (PrepareIncoming on the first with option "group": the others, in
 * order; stream device i goes into the i-th). */
int verb_receive(VfmigCtl *ctl, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL, *call = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autofree char *what = g_strdup_printf("receive %s", argv[1]);
        g_auto(GStrv) ids = g_strsplit(argv[1], ",", -1);
        g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
        const char *endpoint, *ticket;
        int r;

        for (char **id = ids; *id; id++) {
                char *path = NULL;

                r = reservation_path(*id, &path);
                if (r != 0)
                        return r;
                g_ptr_array_add(paths, path);
        }
        if (paths->len == 0)
                return usage("receive needs a reservation id%s", "");
        r = sd_bus_message_new_method_call(ctl->bus, &call, VFMIG_BUS_NAME, paths->pdata[0],
                                           VFMIG_DBUS_INTERFACE_RESERVATION, "PrepareIncoming");
        if (r >= 0)
                r = sd_bus_message_open_container(call, 'a', "{sv}");
        if (r >= 0 && argc > 2)
                r = sd_bus_message_append(call, "{sv}", "address", "s", argv[2]);
        if (r >= 0 && paths->len > 1) {
                r = sd_bus_message_open_container(call, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append(call, "s", "group");
                if (r >= 0)
                        r = sd_bus_message_open_container(call, 'v', "ao");
                if (r >= 0)
                        r = sd_bus_message_open_container(call, 'a', "o");
                for (guint i = 1; r >= 0 && i < paths->len; i++)
                        r = sd_bus_message_append(call, "o", paths->pdata[i]);
                for (int k = 0; r >= 0 && k < 3; k++)
                        r = sd_bus_message_close_container(call);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(call);
        if (r < 0)
                return vfmigctl_log_parse_error(r, what);
        r = sd_bus_call(ctl->bus, call, 0, &error, &reply);
        if (r < 0)
                return vfmigctl_log_error(&error, r, what);
        r = sd_bus_message_read(reply, "ss", &endpoint, &ticket);
        if (r < 0)
                return vfmigctl_log_parse_error(r, what);
        if (ctl->json != VFMIGCTL_JSON_OFF) {
                g_autoptr(JsonBuilder) b = json_builder_new();
                g_autoptr(JsonNode) node = NULL;

                json_builder_begin_object(b);
                json_builder_set_member_name(b, "endpoint");
                json_builder_add_string_value(b, endpoint);
                json_builder_set_member_name(b, "ticket");
                json_builder_add_string_value(b, ticket);
                json_builder_end_object(b);
                node = json_builder_get_root(b);
                vfmigctl_print_json(ctl, node);
        } else
                printf("%s %s\n", endpoint, ticket);
        return VFMIGCTL_EXIT_OK;
}
