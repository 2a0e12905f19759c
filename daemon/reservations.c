/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * reservations.c — the reservation set: exclusive leased claims on devices,
 * expiry timers and the state file.  See reservations.h for the contract.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "log.h"
#include "mdev-create.h"
#include "reservations.h"
#include "util.h"
#include "vfmig-names.h"
#include "json-reader.h"

#define log_reservation(level, id, ...) log_internal((level), "VFMIG_RESERVATION", (id), __VA_ARGS__)

#define USEC_PER_SEC              ((uint64_t) 1000000)
#define TIMER_ACCURACY_USEC       ((uint64_t) 100000)
#define STATE_FORMAT              1
#define STATE_FILE_MAX            (16u * 1024 * 1024)
#define OWNER_MAX                 255

struct Reservations {
        sd_event *event;
        char *state_dir;
        char *state_path;
        char *bus_id;                   /* recorded with the set */
        char *on_disk;                  /* the state file's text as last read or written */
        GHashTable *by_id;              /* id → Reservation*, owns */
        GHashTable *by_target;          /* target → Reservation* */
        GPtrArray *expired_created;     /* dropped at load, their instances still to remove */
        const ReservationsListener *listener;
        void *listener_data;
        ReservationsBusyFn busy_fn;
        void *busy_data;
};

static const char *const state_names[_RESERVATION_STATE_MAX] = {
        [RESERVATION_ACTIVE] = "active",
        [RESERVATION_RECEIVING] = "receiving",
};

static const char *const end_names[_RESERVATION_END_MAX] = {
        [RESERVATION_END_RELEASED] = "released",
        [RESERVATION_END_EXPIRED] = "expired",
        [RESERVATION_END_OWNER_GONE] = "owner-gone",
        [RESERVATION_END_RESTART] = "restart",
};

const char *reservation_state_to_string(ReservationState s)
{
        return s >= 0 && s < _RESERVATION_STATE_MAX ? state_names[s] : NULL;
}

int reservation_state_from_string(const char *s)
{
        for (int i = 0; i < _RESERVATION_STATE_MAX; i++)
                if (streq_ptr(state_names[i], s))
                        return i;
        return -EINVAL;
}

const char *reservation_end_to_string(ReservationEnd e)
{
        return e >= 0 && e < _RESERVATION_END_MAX ? end_names[e] : NULL;
}

bool reservation_created_from_is_valid(const char *created_from)
{
        return created_from && (!created_from[0] || mdev_creatable_key_is_valid(created_from));
}

bool reservation_id_is_valid(const char *id)
{
        if (!id || strlen(id) != RESERVATION_ID_LEN)
                return false;
        for (const char *p = id; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return false;
        return true;
}

static uint64_t now_realtime(void)
{
        return (uint64_t) g_get_real_time();
}

static void reservation_free(Reservation *r)
{
        if (!r)
                return;
        sd_event_source_disable_unref(r->timer);
        if (r->profile)
                json_node_unref(r->profile);
        g_free(r->id);
        g_free(r->target);
        g_free(r->created_from);
        g_free(r->owner);
        g_free(r);
}

static void reservation_detach_and_free(gpointer p)
{
        Reservation *r = p;
        Reservations *s = r->set;

        if (s && s->listener && s->listener->detach)
                s->listener->detach(s, r, s->listener_data);
        reservation_free(r);
}

static char *first_state_directory(void)
{
        const char *e = getenv("STATE_DIRECTORY");

        /* systemd passes a colon-separated list when several are configured. */
        if (e && e[0] == '/') {
                const char *colon = strchr(e, ':');
                return colon ? g_strndup(e, colon - e) : g_strdup(e);
        }
        return g_strdup(RESERVATIONS_STATE_DIR_DEFAULT);
}

Reservations *reservations_new(sd_event *event, const char *state_dir)
{
        Reservations *s = g_new0(Reservations, 1);

        s->event = event ? sd_event_ref(event) : NULL;
        s->state_dir = state_dir ? g_strdup(state_dir) : first_state_directory();
        s->state_path = g_build_filename(s->state_dir, RESERVATIONS_STATE_FILE, NULL);
        s->bus_id = g_strdup("");
        s->by_id = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, reservation_detach_and_free);
        s->by_target = g_hash_table_new(g_str_hash, g_str_equal);
        s->expired_created = g_ptr_array_new_with_free_func((GDestroyNotify) reservation_free);
        return s;
}

void reservations_free(Reservations *s)
{
        if (!s)
                return;
        g_hash_table_remove_all(s->by_target);
        g_hash_table_unref(s->by_id);
        g_hash_table_unref(s->by_target);
        g_ptr_array_unref(s->expired_created);
        sd_event_unref(s->event);
        g_free(s->state_dir);
        g_free(s->state_path);
        g_free(s->bus_id);
        g_free(s->on_disk);
        g_free(s);
}

void reservations_set_listener(Reservations *s, const ReservationsListener *l, void *userdata)
{
        s->listener = l;
        s->listener_data = userdata;
}

void reservations_set_busy_hook(Reservations *s, ReservationsBusyFn fn, void *userdata)
{
        s->busy_fn = fn;
        s->busy_data = userdata;
}

const char *reservations_state_path(Reservations *s)
{
        return s->state_path;
}

const char *reservations_get_bus_id(Reservations *s)
{
        return s->bus_id;
}

void reservations_set_bus_id(Reservations *s, const char *bus_id)
{
        g_free(s->bus_id);
        s->bus_id = g_strdup(bus_id ? bus_id : "");
}

guint reservations_count(Reservations *s)
{
        return g_hash_table_size(s->by_id);
}

Reservation *reservations_get(Reservations *s, const char *id)
{
        return id ? g_hash_table_lookup(s->by_id, id) : NULL;
}

Reservation *reservations_get_by_target(Reservations *s, const char *target)
{
        /* FindCompatibleTargets asks this of every candidate; most hosts hold
         * no reservation, and an empty table needs no hashing of the key. */
        if (!target || g_hash_table_size(s->by_target) == 0)
                return NULL;
        return g_hash_table_lookup(s->by_target, target);
}

static gint compare_target(gconstpointer a, gconstpointer b)
{
        const Reservation *x = *(Reservation *const *) a, *y = *(Reservation *const *) b;

        return strcmp(x->target, y->target);
}

GPtrArray *reservations_list(Reservations *s)
{
        GPtrArray *l = g_ptr_array_sized_new(g_hash_table_size(s->by_id));
        GHashTableIter it;
        gpointer v;

        g_hash_table_iter_init(&it, s->by_id);
        while (g_hash_table_iter_next(&it, NULL, &v))
                g_ptr_array_add(l, v);
        g_ptr_array_sort(l, compare_target);
        return l;
}

/* --- state file ---------------------------------------------------------- */

static void build_entry(JsonBuilder *b, const Reservation *r)
{
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "id");
        json_builder_add_string_value(b, r->id);
        json_builder_set_member_name(b, "target");
        json_builder_add_string_value(b, r->target);
        json_builder_set_member_name(b, "created-from");
        json_builder_add_string_value(b, r->created_from);
        json_builder_set_member_name(b, "owner");
        json_builder_add_string_value(b, r->owner);
        json_builder_set_member_name(b, "persist");
        json_builder_add_boolean_value(b, r->persist);
        json_builder_set_member_name(b, "lease-seconds");
        json_builder_add_int_value(b, r->lease_sec);
        json_builder_set_member_name(b, "created-at");
        json_builder_add_int_value(b, (gint64) r->created_usec);
        json_builder_set_member_name(b, "expires-at");
        json_builder_add_int_value(b, (gint64) r->expires_usec);
        json_builder_set_member_name(b, "state");
        json_builder_add_string_value(b, reservation_state_to_string(r->state));
        json_builder_set_member_name(b, "profile");
        json_builder_add_value(b, json_node_copy(r->profile));
        json_builder_end_object(b);
}

static int fsync_directory(const char *dir)
{
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0 || fsync(fd) < 0)
                return -errno;
        return 0;
}

static int write_all(int fd, const char *data, size_t len)
{
        while (len > 0) {
                ssize_t n = write(fd, data, len);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                data += n;
                len -= n;
        }
        return 0;
}

/* Write the whole set atomically: temporary file, fsync, rename, fsync dir. */
static int reservations_save(Reservations *s)
{
        g_autoptr(JsonBuilder) b = json_builder_new();
        g_autoptr(JsonGenerator) gen = json_generator_new();
        g_autoptr(JsonNode) root = NULL;
        g_autoptr(GPtrArray) l = reservations_list(s);
        g_autofree char *data = NULL, *tmp = NULL;
        _cleanup_close_ int fd = -1;
        gsize len;
        int r;

        json_builder_begin_object(b);
        json_builder_set_member_name(b, "format");
        json_builder_add_int_value(b, STATE_FORMAT);
        json_builder_set_member_name(b, "bus-id");
        json_builder_add_string_value(b, s->bus_id);
        json_builder_set_member_name(b, "reservations");
        json_builder_begin_array(b);
        for (guint i = 0; i < l->len; i++)
                build_entry(b, l->pdata[i]);
        json_builder_end_array(b);
        json_builder_end_object(b);
        root = json_builder_get_root(b);
        json_generator_set_root(gen, root);
        json_generator_set_pretty(gen, true);
        data = json_generator_to_data(gen, &len);

        /* Unchanged (a restart on the same bus with the same set): no
         * rewrite, no fsync on every start.  (A file removed behind
         * vfmigd's back is written again at the next change or start.) */
        if (s->on_disk && strlen(s->on_disk) == len + 1 && memcmp(s->on_disk, data, len) == 0 &&
            s->on_disk[len] == '\n')
                return 0;
        g_clear_pointer(&s->on_disk, g_free);

        if (g_mkdir_with_parents(s->state_dir, 0700) < 0)
                return -errno;
        tmp = g_strconcat(s->state_path, ".XXXXXX", NULL);
        fd = g_mkstemp_full(tmp, O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        r = write_all(fd, data, len);
        if (r >= 0)
                r = write_all(fd, "\n", 1);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && close(steal_fd(&fd)) < 0)
                r = -errno;
        if (r >= 0 && rename(tmp, s->state_path) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlink(tmp);
                return r;
        }
        r = fsync_directory(s->state_dir);
        if (r >= 0)
                s->on_disk = g_strconcat(data, "\n", NULL);
        return r;
}

int reservations_flush(Reservations *s)
{
        return reservations_save(s);
}

static void reservations_save_or_warn(Reservations *s, const char *why)
{
        int r = reservations_save(s);

        if (r < 0)
                log_warning_errno(r, "Failed to write %s after %s, a restart will restore the previous set: %m",
                                  s->state_path, why);
}

/* --- timers -------------------------------------------------------------- */

static int on_expire(sd_event_source *source, uint64_t usec, void *userdata)
{
        Reservation *r = userdata;

        log_reservation(LOG_INFO, r->id, "Reservation %s of %s expired", r->id, r->target);
        reservation_release(r, RESERVATION_END_EXPIRED);
        return 0;
}

/* Arm the CLOCK_BOOTTIME timer for the realtime expiry r->expires_usec. */
static int arm_timer(Reservation *r)
{
        Reservations *s = r->set;
        uint64_t now_rt = now_realtime(), now_bt, left;
        int k;

        if (!s->event)
                return 0;
        k = sd_event_now(s->event, CLOCK_BOOTTIME, &now_bt);
        if (k < 0)
                return k;
        left = r->expires_usec > now_rt ? r->expires_usec - now_rt : 0;
        if (r->timer) {
                k = sd_event_source_set_time(r->timer, now_bt + left);
                if (k >= 0)
                        k = sd_event_source_set_enabled(r->timer, SD_EVENT_ONESHOT);
                return k;
        }
        k = sd_event_add_time(s->event, &r->timer, CLOCK_BOOTTIME, now_bt + left, TIMER_ACCURACY_USEC,
                              on_expire, r);
        if (k >= 0)
                (void) sd_event_source_set_description(r->timer, "reservation-expiry");
        return k;
}

static int insert(Reservations *s, Reservation *r)
{
        int k;

        r->set = s;
        k = arm_timer(r);
        if (k < 0)
                return k;
        g_hash_table_insert(s->by_id, r->id, r);
        g_hash_table_insert(s->by_target, r->target, r);
        return 0;
}

/* Take r out of the set without calling any listener; frees it. */
static void remove_quietly(Reservations *s, Reservation *r)
{
        g_hash_table_remove(s->by_target, r->target);
        g_hash_table_remove(s->by_id, r->id);
}

/* --- restore ------------------------------------------------------------- */

static bool member_int(JsonObject *o, const char *name, gint64 min, gint64 max, gint64 *ret)
{
        JsonNode *n = json_object_get_member(o, name);

        if (!n || json_node_get_value_type(n) != G_TYPE_INT64)
                return false;
        *ret = json_node_get_int(n);
        return *ret >= min && *ret <= max;
}

static const char *member_string(JsonObject *o, const char *name)
{
        JsonNode *n = json_object_get_member(o, name);

        if (!n || json_node_get_value_type(n) != G_TYPE_STRING)
                return NULL;
        return json_node_get_string(n);
}

/* One entry of the file, or NULL with *why set. */
static Reservation *entry_parse(JsonNode *node, const char **why)
{
        JsonObject *o;
        JsonNode *profile, *persist;
        const char *id, *target, *owner, *state, *created_from;
        gint64 lease, created, expires;
        Reservation *r;
        int st;

        if (!JSON_NODE_HOLDS_OBJECT(node))
                return *why = "not an object", NULL;
        o = json_node_get_object(node);
        id = member_string(o, "id");
        if (!reservation_id_is_valid(id))
                return *why = "bad \"id\"", NULL;
        target = member_string(o, "target");
        if (!target || !vfmig_device_name_is_valid(target))
                return *why = "bad \"target\"", NULL;
        owner = member_string(o, "owner");
        if (!owner || !vfmig_string_is_valid(owner, OWNER_MAX))
                return *why = "bad \"owner\"", NULL;
        /* Absent in files written before instances were created for reservations. */
        created_from = json_object_has_member(o, "created-from") ? member_string(o, "created-from") : "";
        if (!reservation_created_from_is_valid(created_from))
                return *why = "bad \"created-from\"", NULL;
        persist = json_object_get_member(o, "persist");
        if (!persist || json_node_get_value_type(persist) != G_TYPE_BOOLEAN)
                return *why = "bad \"persist\"", NULL;
        if (!member_int(o, "lease-seconds", RESERVATION_LEASE_MIN_SEC, RESERVATION_LEASE_MAX_SEC, &lease))
                return *why = "bad \"lease-seconds\"", NULL;
        if (!member_int(o, "created-at", 0, G_MAXINT64, &created) ||
            !member_int(o, "expires-at", 0, G_MAXINT64, &expires))
                return *why = "bad \"created-at\" or \"expires-at\"", NULL;
        state = member_string(o, "state");
        st = reservation_state_from_string(state);
        if (st < 0)
                return *why = "bad \"state\"", NULL;
        profile = json_object_get_member(o, "profile");
        if (!profile || !JSON_NODE_HOLDS_OBJECT(profile))
                return *why = "bad \"profile\"", NULL;

        r = g_new0(Reservation, 1);
        r->id = g_strdup(id);
        r->target = g_strdup(target);
        r->created_from = g_strdup(created_from);
        r->owner = g_strdup(owner);
        r->persist = json_node_get_boolean(persist);
        r->lease_sec = (uint32_t) lease;
        r->created_usec = (uint64_t) created;
        r->expires_usec = (uint64_t) expires;
        /* An incoming stream does not survive the process that received it. */
        r->state = RESERVATION_ACTIVE;
        r->profile = json_node_copy(profile);
        return r;
}

static void move_aside(Reservations *s, const char *why)
{
        g_autofree char *aside = g_strconcat(s->state_path, ".corrupt", NULL);

        if (rename(s->state_path, aside) < 0)
                log_warning_errno(-errno, "State file %s is unusable (%s) and cannot be moved aside: %m; "
                                  "starting without reservations", s->state_path, why);
        else
                log_warning("State file %s is unusable (%s); moved to %s, starting without reservations",
                            s->state_path, why, aside);
}

int reservations_load(Reservations *s)
{
        g_autoptr(JsonParser) parser = json_parser_new();
        g_autoptr(GError) err = NULL;
        g_autofree char *not_json = NULL;
        g_autofree char *data = NULL;
        JsonObject *root;
        JsonArray *arr;
        JsonNode *n;
        const char *bus_id;
        uint64_t now = now_realtime();
        gsize len;
        gint64 format;
        int restored = 0;

        if (!g_file_get_contents(s->state_path, &data, &len, &err)) {
                if (g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_NOENT))
                        return 0;
                log_warning("Cannot read state file %s: %s; starting without reservations", s->state_path,
                            err->message);
                return 0;
        }
        if (len > STATE_FILE_MAX)
                return move_aside(s, "too large"), 0;
        if (!jv_check(data, len, &not_json)) {
                g_autofree char *what = g_strdup_printf("not JSON: %s", not_json);
                return move_aside(s, what), 0;
        }
        if (!json_parser_load_from_data(parser, data, len, &err)) {
                g_autofree char *why = g_strdup_printf("not JSON: %s", err->message);
                return move_aside(s, why), 0;
        }
        n = json_parser_get_root(parser);
        if (!n || !JSON_NODE_HOLDS_OBJECT(n))
                return move_aside(s, "not a JSON object"), 0;
        root = json_node_get_object(n);
        if (!member_int(root, "format", STATE_FORMAT, STATE_FORMAT, &format))
                return move_aside(s, "unknown \"format\""), 0;
        n = json_object_get_member(root, "reservations");
        if (!n || !JSON_NODE_HOLDS_ARRAY(n))
                return move_aside(s, "no \"reservations\" array"), 0;
        bus_id = member_string(root, "bus-id");
        reservations_set_bus_id(s, bus_id && vfmig_string_is_valid(bus_id, 64) ? bus_id : "");

        g_free(s->on_disk);
        s->on_disk = g_strndup(data, len);

        arr = json_node_get_array(n);
        for (guint i = 0; i < json_array_get_length(arr); i++) {
                const char *why = NULL;
                Reservation *r = entry_parse(json_array_get_element(arr, i), &why);
                int k;

                if (!r) {
                        log_warning("State file %s: reservations[%u]: %s; dropped", s->state_path, i, why);
                        continue;
                }
                if (g_hash_table_contains(s->by_id, r->id) || g_hash_table_contains(s->by_target, r->target)) {
                        log_warning("State file %s: reservations[%u]: id or target repeated; dropped",
                                    s->state_path, i);
                        reservation_free(r);
                        continue;
                }
                if (r->expires_usec <= now) {
                        log_reservation(LOG_INFO, r->id, "Reservation %s of %s expired while vfmigd was not running",
                                        r->id, r->target);
                        if (r->created_from[0])
                                g_ptr_array_add(s->expired_created, r);    /* its instance goes too */
                        else
                                reservation_free(r);
                        continue;
                }
                k = insert(s, r);
                if (k < 0) {
                        log_warning_errno(k, "Cannot arm the expiry of reservation %s: %m; dropped", r->id);
                        r->set = NULL;
                        reservation_free(r);
                        continue;
                }
                log_reservation(LOG_INFO, r->id, "Restored reservation %s of %s (owner %s%s)", r->id, r->target,
                                r->owner, r->persist ? ", persistent" : "");
                restored++;
        }
        return restored;
}

GPtrArray *reservations_steal_expired_created(Reservations *s)
{
        GPtrArray *l = s->expired_created;

        s->expired_created = g_ptr_array_new_with_free_func((GDestroyNotify) reservation_free);
        return l;
}

/* --- changes ------------------------------------------------------------- */

int reservations_is_busy(Reservations *s, const char *device, char **holder)
{
        Reservation *r = reservations_get_by_target(s, device);
        char *job;

        if (r) {
                if (holder) {
                        uint64_t now = now_realtime();
                        uint64_t left = r->expires_usec > now ? (r->expires_usec - now) / USEC_PER_SEC : 0;

                        *holder = g_strdup_printf("reservation %s (owner %s, %s, expires in %" PRIu64 " s)",
                                                  r->id, r->owner, reservation_state_to_string(r->state), left);
                }
                return 1;
        }
        job = s->busy_fn ? s->busy_fn(device, s->busy_data) : NULL;
        if (job) {
                if (holder)
                        *holder = job;
                else
                        g_free(job);
                return 1;
        }
        return 0;
}

static int new_id(char ret[RESERVATION_ID_LEN + 1])
{
        uint8_t bytes[RESERVATION_ID_LEN / 2];
        ssize_t n = getrandom(bytes, sizeof(bytes), 0);

        if (n < 0)
                return -errno;
        if ((size_t) n != sizeof(bytes))
                return -EIO;
        for (size_t i = 0; i < sizeof(bytes); i++)
                snprintf(ret + 2 * i, 3, "%02x", bytes[i]);
        return 0;
}

static int check_lease(uint32_t lease_sec, char **error)
{
        if (lease_sec < RESERVATION_LEASE_MIN_SEC || lease_sec > RESERVATION_LEASE_MAX_SEC) {
                if (error)
                        *error = g_strdup_printf("lease-seconds %" PRIu32 " is out of range: expected %u..%u",
                                                 lease_sec, RESERVATION_LEASE_MIN_SEC, RESERVATION_LEASE_MAX_SEC);
                return -EINVAL;
        }
        return 0;
}

int reservations_add(Reservations *s, const char *target, const char *owner, JsonNode *profile,
                     uint32_t lease_sec, bool persist, Reservation **ret, char **error)
{
        return reservations_add_created(s, target, NULL, owner, profile, lease_sec, persist, ret, error);
}

int reservations_add_created(Reservations *s, const char *target, const char *created_from, const char *owner,
                             JsonNode *profile, uint32_t lease_sec, bool persist, Reservation **ret,
                             char **error)
{
        g_autofree char *holder = NULL;
        char id[RESERVATION_ID_LEN + 1];
        Reservation *r;
        int k;

        k = check_lease(lease_sec, error);
        if (k < 0)
                return k;
        if (!profile || !JSON_NODE_HOLDS_OBJECT(profile)) {
                if (error)
                        *error = g_strdup("the profile must be an object");
                return -EINVAL;
        }
        if (!created_from)
                created_from = "";
        if (!reservation_created_from_is_valid(created_from)) {
                if (error)
                        *error = g_strdup_printf("\"%s\" is not a creatable type (PARENT/TYPE)", created_from);
                return -EINVAL;
        }
        if (reservations_is_busy(s, target, &holder)) {
                if (error)
                        *error = g_strdup_printf("Device %s is held by %s", target, holder);
                return -EBUSY;
        }
        do {
                k = new_id(id);
                if (k < 0) {
                        if (error)
                                *error = g_strdup_printf("Cannot get random bytes for an id: %s", g_strerror(-k));
                        return k;
                }
        } while (g_hash_table_contains(s->by_id, id));

        r = g_new0(Reservation, 1);
        r->id = g_strdup(id);
        r->target = g_strdup(target);
        r->created_from = g_strdup(created_from);
        r->owner = g_strdup(owner ? owner : "");
        r->persist = persist;
        r->lease_sec = lease_sec;
        r->created_usec = now_realtime();
        r->expires_usec = r->created_usec + lease_sec * USEC_PER_SEC;
        r->state = RESERVATION_ACTIVE;
        r->profile = json_node_copy(profile);

        k = insert(s, r);
        if (k < 0) {
                r->set = NULL;
                reservation_free(r);
                if (error)
                        *error = g_strdup_printf("Cannot arm the expiry timer: %s", g_strerror(-k));
                return k;
        }
        /* A reservation that a restart would forget is no reservation. */
        k = reservations_save(s);
        if (k < 0) {
                if (error)
                        *error = g_strdup_printf("Cannot record the reservation in %s: %s", s->state_path,
                                                 g_strerror(-k));
                remove_quietly(s, r);
                return k;
        }
        log_reservation(LOG_INFO, r->id, "Reserved %s%s%s for %s as %s (lease %" PRIu32 " s%s)", r->target,
                        r->created_from[0] ? ", created from " : "", r->created_from, r->owner, r->id, lease_sec,
                        persist ? ", persistent" : "");
        if (s->listener && s->listener->added)
                s->listener->added(s, r, s->listener_data);
        if (ret)
                *ret = r;
        return 0;
}

int reservation_renew(Reservation *r, uint32_t lease_sec, char **error)
{
        Reservations *s = r->set;
        int k;

        if (lease_sec == 0)
                lease_sec = r->lease_sec;
        k = check_lease(lease_sec, error);
        if (k < 0)
                return k;
        r->lease_sec = lease_sec;
        r->expires_usec = now_realtime() + lease_sec * USEC_PER_SEC;
        k = arm_timer(r);
        if (k < 0) {
                if (error)
                        *error = g_strdup_printf("Cannot arm the expiry timer: %s", g_strerror(-k));
                return k;
        }
        reservations_save_or_warn(s, "a renewal");
        log_reservation(LOG_INFO, r->id, "Renewed reservation %s of %s for %" PRIu32 " s", r->id, r->target,
                        lease_sec);
        if (s->listener && s->listener->changed)
                s->listener->changed(s, r, s->listener_data);
        return 0;
}

void reservation_release(Reservation *r, ReservationEnd why)
{
        Reservations *s = r->set;

        log_reservation(LOG_INFO, r->id, "Reservation %s of %s ended (%s)", r->id, r->target,
                        reservation_end_to_string(why));
        if (s->listener && s->listener->removed)
                s->listener->removed(s, r, why, s->listener_data);
        g_hash_table_remove(s->by_target, r->target);
        g_hash_table_steal(s->by_id, r->id);
        reservations_save_or_warn(s, "a release");
        reservation_detach_and_free(r);
}

void reservation_owner_gone(Reservation *r)
{
        if (r->persist) {
                log_reservation(LOG_INFO, r->id, "Owner %s of reservation %s left; it persists", r->owner, r->id);
                return;
        }
        reservation_release(r, RESERVATION_END_OWNER_GONE);
}

void reservation_set_state(Reservation *r, ReservationState state)
{
        Reservations *s = r->set;

        if (r->state == state)
                return;
        r->state = state;
        reservations_save_or_warn(s, "a state change");
        if (s->listener && s->listener->changed)
                s->listener->changed(s, r, s->listener_data);
}
