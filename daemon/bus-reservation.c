/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus-reservation.c — org.vfmig1.Reservation objects at
 * /org/vfmig1/reservation/<id> (a fallback vtable, object_find and a node
 * enumerator), the Manager methods Reserve and ListReservations, owner
 * tracking with sd_bus_track, and the signals for the reservation set
 * (reservations.c, which knows no D-Bus).
 *
 * Owners across restarts: a unique bus name means something only on the bus
 * instance that assigned it (the bus daemon never reuses one while it runs,
 * a new bus daemon starts over at :1.1).  The state file records the bus id
 * (sd_bus_get_bus_id()); at start a non-persistent reservation stays only if
 * the bus is the same instance and its owner is still connected, and is
 * tracked again; otherwise it ends ("restart").  Persistent ones stay until
 * released or expired.
 *
 * A creatable mdev type ("PARENT/TYPE") as target: Reserve checks the type
 * like a device (compatibility by the matrix's creatable entry, a free slot
 * or Busy), creates one instance (mdev-create.c) and reserves that instance,
 * recording where it came from (CreatedFrom, persisted).  Whenever such a
 * reservation ends — Release, expiry, owner gone, a restart that cannot
 * keep it, or expiry while vfmigd was not running — the instance is removed.
 * Instances vfmigd did not create are never removed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "mdev-create.h"
#include "reservations.h"
#include "util.h"
#include "vfmigd.h"
#include "vfmig-names.h"

/* Bounds on the opaque source profile accepted at Reserve. */
#define PROFILE_DEPTH_MAX     8
#define PROFILE_VALUES_MAX    1024
#define PROFILE_KEY_MAX       256

char *bus_reservation_path(const char *id)
{
        /* Ids are lowercase hex: valid object path characters as they are. */
        return g_strconcat(VFMIG_DBUS_RESERVATION_PREFIX "/", id, NULL);
}

/* The id in path, or NULL (borrowed from path). */
static const char *id_from_path(const char *path)
{
        const char *id;

        if (!g_str_has_prefix(path, VFMIG_DBUS_RESERVATION_PREFIX "/"))
                return NULL;
        id = path + strlen(VFMIG_DBUS_RESERVATION_PREFIX "/");
        return reservation_id_is_valid(id) ? id : NULL;
}

static Daemon *current_daemon(sd_bus_message *m)
{
        return sd_bus_slot_get_userdata(sd_bus_get_current_slot(sd_bus_message_get_bus(m)));
}

/* --- profile: a{sv} → JSON and back ------------------------------------- */

static int profile_error(sd_bus_error *error, const char *key, const char *why)
{
        return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "profile field \"%s\": %s", key, why);
}

static int read_json_value(sd_bus_message *m, const char *key, unsigned depth, unsigned *budget,
                           JsonNode **ret, sd_bus_error *error);

/* The container at m's read position (array/struct, dict or not) as JSON. */
static int read_json_container(sd_bus_message *m, char type, const char *contents, const char *key,
                               unsigned depth, unsigned *budget, JsonNode **ret, sd_bus_error *error)
{
        bool dict = type == SD_BUS_TYPE_ARRAY && contents[0] == SD_BUS_TYPE_DICT_ENTRY_BEGIN;
        g_autoptr(JsonObject) obj = NULL;
        g_autoptr(JsonArray) arr = NULL;
        /* "{sv}" → "sv": what sd_bus_message_enter_container() wants for an entry */
        g_autofree char *entry = dict ? g_strndup(contents + 1, strlen(contents) - 2) : NULL;
        int r;

        if (dict && contents[1] != SD_BUS_TYPE_STRING)
                return profile_error(error, key, "dictionaries must have string keys");
        if (dict)
                obj = json_object_new();
        else
                arr = json_array_new();
        r = sd_bus_message_enter_container(m, type, contents);
        if (r < 0)
                return r;
        for (;;) {
                g_autoptr(JsonNode) value = NULL;
                const char *k;

                r = sd_bus_message_at_end(m, false);
                if (r < 0)
                        return r;
                if (r > 0)
                        break;
                if (!dict) {
                        r = read_json_value(m, key, depth + 1, budget, &value, error);
                        if (r < 0)
                                return r;
                        json_array_add_element(arr, g_steal_pointer(&value));
                        continue;
                }
                r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, entry);
                if (r < 0)
                        return r;
                r = sd_bus_message_read_basic(m, SD_BUS_TYPE_STRING, &k);
                if (r < 0)
                        return r;
                if (!vfmig_string_is_valid(k, PROFILE_KEY_MAX))
                        return profile_error(error, key, "keys must be 1-256 printable ASCII characters");
                r = read_json_value(m, k, depth + 1, budget, &value, error);
                if (r < 0)
                        return r;
                json_object_set_member(obj, k, g_steal_pointer(&value));
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        *ret = dict ? json_node_init_object(json_node_alloc(), obj) : json_node_init_array(json_node_alloc(), arr);
        return 0;
}

/* One value of any signature (but h) as a JSON node, within the bounds. */
static int read_json_value(sd_bus_message *m, const char *key, unsigned depth, unsigned *budget,
                           JsonNode **ret, sd_bus_error *error)
{
        const char *contents = NULL;
        char type;
        int r;

        if (depth > PROFILE_DEPTH_MAX)
                return profile_error(error, key, "nested too deeply");
        if (*budget == 0)
                return profile_error(error, key, "the profile has too many values");
        (*budget)--;

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
                if (r < 0)
                        return r;
                if (type == SD_BUS_TYPE_UINT64 && v.t > (uint64_t) G_MAXINT64)
                        return profile_error(error, key, "unsigned values above 2^63-1 are not accepted");
                x = type == SD_BUS_TYPE_BYTE ? v.y :
                    type == SD_BUS_TYPE_INT16 ? v.n :
                    type == SD_BUS_TYPE_UINT16 ? v.q :
                    type == SD_BUS_TYPE_INT32 ? v.i :
                    type == SD_BUS_TYPE_UINT32 ? v.u :
                    type == SD_BUS_TYPE_INT64 ? v.x : (gint64) v.t;
                *ret = json_node_init_int(json_node_alloc(), x);
                return 0;
        }
        case SD_BUS_TYPE_DOUBLE: {
                double v;

                r = sd_bus_message_read_basic(m, type, &v);
                if (r < 0)
                        return r;
                *ret = json_node_init_double(json_node_alloc(), v);
                return 0;
        }
        case SD_BUS_TYPE_BOOLEAN: {
                int v;

                r = sd_bus_message_read_basic(m, type, &v);
                if (r < 0)
                        return r;
                *ret = json_node_init_boolean(json_node_alloc(), v);
                return 0;
        }
        case SD_BUS_TYPE_STRING:
        case SD_BUS_TYPE_OBJECT_PATH:
        case SD_BUS_TYPE_SIGNATURE: {
                const char *v;

                r = sd_bus_message_read_basic(m, type, &v);
                if (r < 0)
                        return r;
                if (!vfmig_text_is_valid(v, VFMIG_STRING_MAX))
                        return profile_error(error, key, "strings must be printable ASCII, at most 4096 bytes");
                *ret = json_node_init_string(json_node_alloc(), v);
                return 0;
        }
        case SD_BUS_TYPE_VARIANT:
                r = sd_bus_message_enter_container(m, type, contents);
                if (r < 0)
                        return r;
                r = read_json_value(m, key, depth, budget, ret, error);
                if (r < 0)
                        return r;
                return sd_bus_message_exit_container(m);
        case SD_BUS_TYPE_ARRAY:
        case SD_BUS_TYPE_STRUCT:
                return read_json_container(m, type, contents, key, depth, budget, ret, error);
        default:
                return profile_error(error, key, "file descriptors are not accepted");
        }
}

/* The profile argument (a{sv}) as a JSON object.  Kept opaque here: the
 * compatibility check (reservation_check_compatible()) interprets it. */
static int read_profile(sd_bus_message *m, JsonNode **ret, sd_bus_error *error)
{
        unsigned budget = PROFILE_VALUES_MAX;
        int r;

        r = read_json_container(m, SD_BUS_TYPE_ARRAY, "{sv}", "", 0, &budget, ret, error);
        if (r < 0 && !sd_bus_error_is_set(error))
                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "profile: not a readable a{sv} (%s)",
                                         strerror(-r));
        return r;
}

/* The bus type a profile field is documented with (doc/compat-rules.md),
 * where JSON alone cannot tell: integers. */
static char profile_int_type(const char *key)
{
        if (streq_ptr(key, "format"))
                return SD_BUS_TYPE_UINT32;
        if (streq_ptr(key, "state-size"))
                return SD_BUS_TYPE_UINT64;
        return SD_BUS_TYPE_INT64;
}

static bool array_of_strings(JsonArray *a)
{
        for (guint i = 0; i < json_array_get_length(a); i++)
                if (json_node_get_value_type(json_array_get_element(a, i)) != G_TYPE_STRING)
                        return false;
        return true;
}

static bool object_of_strings(JsonObject *o)
{
        JsonObjectIter it;
        JsonNode *v;

        json_object_iter_init(&it, o);
        while (json_object_iter_next(&it, NULL, &v))
                if (json_node_get_value_type(v) != G_TYPE_STRING)
                        return false;
        return true;
}

static int append_json_variant(sd_bus_message *m, const char *key, JsonNode *n);

static int append_json_dict(sd_bus_message *m, JsonObject *o)
{
        bool strings = object_of_strings(o);
        JsonObjectIter it;
        const char *k;
        JsonNode *v;
        int r;

        r = sd_bus_message_open_container(m, SD_BUS_TYPE_ARRAY, strings ? "{ss}" : "{sv}");
        if (r < 0)
                return r;
        json_object_iter_init_ordered(&it, o);
        while (json_object_iter_next_ordered(&it, &k, &v)) {
                if (JSON_NODE_HOLDS_NULL(v))
                        continue;
                if (strings)
                        r = sd_bus_message_append(m, "{ss}", k, json_node_get_string(v));
                else {
                        r = sd_bus_message_open_container(m, SD_BUS_TYPE_DICT_ENTRY, "sv");
                        if (r >= 0)
                                r = sd_bus_message_append_basic(m, SD_BUS_TYPE_STRING, k);
                        if (r >= 0)
                                r = append_json_variant(m, k, v);
                        if (r >= 0)
                                r = sd_bus_message_close_container(m);
                }
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(m);
}

/* n as one variant: strings s, booleans b, doubles d, integers by key (u, t)
 * or x, arrays of strings as, other arrays av, objects of strings a{ss},
 * other objects a{sv}. */
static int append_json_variant(sd_bus_message *m, const char *key, JsonNode *n)
{
        int r;

        if (JSON_NODE_HOLDS_OBJECT(n)) {
                JsonObject *o = json_node_get_object(n);

                r = sd_bus_message_open_container(m, SD_BUS_TYPE_VARIANT, object_of_strings(o) ? "a{ss}" : "a{sv}");
                if (r >= 0)
                        r = append_json_dict(m, o);
                return r < 0 ? r : sd_bus_message_close_container(m);
        }
        if (JSON_NODE_HOLDS_ARRAY(n)) {
                JsonArray *a = json_node_get_array(n);
                bool strings = array_of_strings(a);

                r = sd_bus_message_open_container(m, SD_BUS_TYPE_VARIANT, strings ? "as" : "av");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, SD_BUS_TYPE_ARRAY, strings ? "s" : "v");
                for (guint i = 0; r >= 0 && i < json_array_get_length(a); i++) {
                        JsonNode *e = json_array_get_element(a, i);

                        if (strings)
                                r = sd_bus_message_append_basic(m, SD_BUS_TYPE_STRING, json_node_get_string(e));
                        else if (!JSON_NODE_HOLDS_NULL(e))
                                r = append_json_variant(m, NULL, e);
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

                switch (x >= 0 ? profile_int_type(key) : SD_BUS_TYPE_INT64) {
                case SD_BUS_TYPE_UINT32:
                        if (x <= G_MAXUINT32)
                                return sd_bus_message_append(m, "v", "u", (uint32_t) x);
                        break;
                case SD_BUS_TYPE_UINT64:
                        return sd_bus_message_append(m, "v", "t", (uint64_t) x);
                default:
                        break;
                }
                return sd_bus_message_append(m, "v", "x", (int64_t) x);
        }
        default:
                return -EINVAL;
        }
}

/* --- options -------------------------------------------------------------- */

typedef struct ReserveOptions {
        uint32_t lease_sec;
        bool persist;
} ReserveOptions;

static int option_type_error(sd_bus_error *error, const char *key, const char *want, const char *got)
{
        return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "option \"%s\": must be %s, not %s", key, want,
                                 got);
}

/* options a{sv}: lease-seconds (u), persist (b); other keys are ignored. */
static int read_options(sd_bus_message *m, ReserveOptions *o, sd_bus_error *error)
{
        int r;

        r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, "sv")) > 0) {
                const char *key, *contents;

                r = sd_bus_message_read_basic(m, SD_BUS_TYPE_STRING, &key);
                if (r < 0)
                        return r;
                r = sd_bus_message_peek_type(m, NULL, &contents);
                if (r < 0)
                        return r;
                if (streq_ptr(key, "lease-seconds")) {
                        if (!streq_ptr(contents, "u"))
                                return option_type_error(error, key, "an unsigned 32-bit integer (u)", contents);
                        r = sd_bus_message_read(m, "v", "u", &o->lease_sec);
                        if (r < 0)
                                return r;
                        if (o->lease_sec < RESERVATION_LEASE_MIN_SEC || o->lease_sec > RESERVATION_LEASE_MAX_SEC)
                                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS,
                                                         "option \"lease-seconds\": %" PRIu32 " is out of range, "
                                                         "expected %u..%u",
                                                         o->lease_sec, RESERVATION_LEASE_MIN_SEC,
                                                         RESERVATION_LEASE_MAX_SEC);
                } else if (streq_ptr(key, "persist")) {
                        int b;

                        if (!streq_ptr(contents, "b"))
                                return option_type_error(error, key, "a boolean (b)", contents);
                        r = sd_bus_message_read(m, "v", "b", &b);
                        if (r < 0)
                                return r;
                        o->persist = b;
                } else {
                        r = sd_bus_message_skip(m, "v");
                        if (r < 0)
                                return r;
                }
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

/* --- checks --------------------------------------------------------------- */

/* A creatable type: the parent offers it and a slot is free. */
static int check_creatable(Daemon *d, const char *key, sd_bus_error *error)
{
        g_autofree char *msg = NULL;
        uint32_t avail = 0;
        int r;

        if (!d->mdev)
                return sd_bus_error_set(error, VFMIG_ERROR_NOT_SUPPORTED,
                                        "This vfmigd cannot create mdev instances");
        r = mdev_creator_available(d->mdev, key, &avail, &msg);
        if (r == -ENXIO || r == -EINVAL)
                return sd_bus_error_setf(error, r == -ENXIO ? VFMIG_ERROR_NO_SUCH_DEVICE : VFMIG_ERROR_INVALID_ARGS,
                                         "%s", msg);
        if (r < 0)
                return sd_bus_error_setf(error, VFMIG_ERROR_DEVICE_FAILED, "%s", msg);
        if (avail == 0)
                return sd_bus_error_setf(error, VFMIG_ERROR_BUSY,
                                         "No instance of %s can be created: the type has 0 available instances "
                                         "(every slot is in use; release one or choose another type, see "
                                         "ListMdevTypes)", key);
        return 0;
}

/*
 * Reserve hands out existing devices that vfmigd holds, and creatable mdev
 * types ("PARENT/TYPE") with a free slot: those are resolved to an instance
 * created for the reservation in bus_reservation_method_reserve(), which the
 * removed() listener call below removes at the reservation's end.
 */
static int check_target(Daemon *d, const char *target, sd_bus_error *error)
{
        g_autofree char *holder = NULL;
        VfmigDevice *dev;
        ManagedDevice *m;

        if (strchr(target, '/'))
                return check_creatable(d, target, error);
        dev = inventory_get_device(d->inventory, target);
        if (!dev)
                return sd_bus_error_setf(error, VFMIG_ERROR_NO_SUCH_DEVICE,
                                         "No VFIO device \"%s\" on this host (see ListDevices)", target);
        m = dev->managed;
        if (!m || m->status != ACCESS_MANAGED)
                return sd_bus_error_setf(error, VFMIG_ERROR_NOT_MANAGED,
                                         "Device %s is not managed by vfmigd (status %s: %s); only managed "
                                         "devices can be reserved", target,
                                         m ? access_status_to_string(m->status) : "unavailable",
                                         m ? m->status_message : "no VFIO access");
        if (reservations_is_busy(d->reservations, target, &holder))
                return sd_bus_error_setf(error, VFMIG_ERROR_BUSY, "Device %s is held by %s", target, holder);
        return 0;
}

/*
 * Compatibility is re-checked at Reserve (DESIGN §1 step 3): the source
 * profile must be valid (InvalidArgs naming the field) and the target must
 * accept it by the rules and, on a real host, by its driver (NotCompatible
 * with every reason).
 */
static int reservation_check_compatible(Daemon *d, JsonNode *profile, const char *target, sd_bus_error *error)
{
        g_autoptr(VfmigProfile) src = NULL;
        g_autofree char *why = NULL;
        g_auto(VfmigVerdict) v = { 0 };   /* matrix_check() fills it */

        if (vfmig_profile_from_json_node(profile, &src, &why) < 0)
                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "Invalid profile: %s", why);
        if (!matrix_check(compat_service_matrix(d->compat), src, target, compat_service_hook(d->compat), &v)) {
                g_autofree char *reasons = vfmig_verdict_reasons_text(&v);
                return sd_bus_error_setf(error, VFMIG_ERROR_NOT_COMPATIBLE,
                                         "%s cannot resume this profile: %s", target, reasons);
        }
        return 0;
}

/* --- owner tracking ------------------------------------------------------- */

static int on_owner_gone(sd_bus_track *track, void *userdata)
{
        Reservation *r = userdata;

        if (r)
                reservation_owner_gone(r);
        return 0;
}

static int track_owner(Daemon *d, const char *owner, sd_bus_track **ret)
{
        sd_bus_track *t = NULL;
        int r;

        r = sd_bus_track_new(d->bus, &t, on_owner_gone, NULL);
        if (r < 0)
                return r;
        r = sd_bus_track_add_name(t, owner);
        if (r < 0) {
                sd_bus_track_unref(t);
                return r;
        }
        *ret = t;
        return 0;
}

static void attach_track(Reservation *r, sd_bus_track *t)
{
        sd_bus_track_set_userdata(t, r);
        r->bus_data = t;
}

/* --- instances created for reservations ------------------------------------ */

/* Remove the instance vfmigd created as target from created_from; why: for the log. */
static void remove_created(Daemon *d, const char *target, const char *created_from, const char *why)
{
        g_autofree char *msg = NULL;
        int r;

        if (!d->mdev || !created_from || !created_from[0])
                return;
        r = mdev_creator_remove(d->mdev, target, created_from, &msg);
        if (r == -ENOENT)
                log_device(LOG_INFO, target, "The instance of %s created for %s is gone already", created_from, why);
        else if (r < 0)
                log_device(LOG_WARNING, target, "Cannot remove the instance of %s created for %s: %s", created_from,
                           why, msg);
}

/* --- Manager methods ------------------------------------------------------ */

int bus_reservation_method_reserve(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Daemon *d = userdata;
        g_autoptr(JsonNode) profile = NULL;
        g_autofree char *msg = NULL, *path = NULL;
        ReserveOptions o = { .lease_sec = RESERVATION_LEASE_DEFAULT_SEC };
        sd_bus_track *track = NULL;
        Reservation *res = NULL;
        const char *target, *sender;
        g_autofree char *created = NULL;
        bool creatable;
        int r;

        /* parse, validate */
        r = sd_bus_message_read(m, "s", &target);
        if (r < 0)
                return r;
        if (!vfmig_device_name_is_valid(target) && !mdev_creatable_key_is_valid(target))
                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS,
                                         "Device name \"%.64s%s\" is not valid: expected a PCI address "
                                         "(0000:17:00.1), an mdev UUID or a creatable mdev type PARENT/TYPE, "
                                         "each name at most %d characters of [A-Za-z0-9:._-]",
                                         target, strlen(target) > 64 ? "..." : "", VFMIG_NAME_MAX);
        r = read_profile(m, &profile, error);
        if (r < 0)
                return r;
        r = read_options(m, &o, error);
        if (r < 0)
                return r;
        /* What would fail anyway fails before anybody is asked for a password. */
        r = check_target(d, target, error);
        if (r < 0)
                return r;

        /* authorize */
        r = bus_verify_method_async(m, VFMIG_DBUS_INTERFACE_MANAGER, target, &d->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;       /* parked until polkit answers */

        /* look up again: the world may have changed while polkit was asked */
        r = check_target(d, target, error);
        if (r < 0)
                return r;
        r = reservation_check_compatible(d, profile, target, error);
        if (r < 0)
                return r;

        sender = sd_bus_message_get_sender(m);
        if (!sender)
                return sd_bus_error_set(error, VFMIG_ERROR_INVALID_ARGS,
                                        "Reserve needs a caller with a unique bus name");
        if (!o.persist) {
                r = track_owner(d, sender, &track);
                if (r < 0)
                        return sd_bus_error_set_errnof(error, r, "Cannot track the caller %s: %m", sender);
        }

        /* change: a creatable type gets its instance now (the slot is claimed,
         * and a migration needs a device to resume into) */
        creatable = strchr(target, '/') != NULL;
        if (creatable) {
                r = mdev_creator_create(d->mdev, target, &created, &msg);
                if (r < 0) {
                        sd_bus_track_unref(track);
                        return sd_bus_error_set(error,
                                                r == -EBUSY ? VFMIG_ERROR_BUSY :
                                                r == -ENXIO ? VFMIG_ERROR_NO_SUCH_DEVICE :
                                                r == -EINVAL ? VFMIG_ERROR_INVALID_ARGS : VFMIG_ERROR_DEVICE_FAILED,
                                                msg);
                }
        }
        r = reservations_add_created(d->reservations, creatable ? created : target, creatable ? target : NULL,
                                     sender, profile, o.lease_sec, o.persist, &res, &msg);
        if (r < 0) {
                sd_bus_track_unref(track);
                if (creatable)
                        remove_created(d, created, target, "a reservation that failed");
                if (r == -EBUSY)
                        return sd_bus_error_set(error, VFMIG_ERROR_BUSY, msg);
                if (r == -EINVAL)
                        return sd_bus_error_set(error, VFMIG_ERROR_INVALID_ARGS, msg);
                return sd_bus_error_set(error, SD_BUS_ERROR_FAILED, msg);
        }
        if (track)
                attach_track(res, track);

        /* reply (the signals went out from the listener) */
        path = bus_reservation_path(res->id);
        return sd_bus_reply_method_return(m, "o", path);
}

int bus_reservation_method_list(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Daemon *d = userdata;
        g_autoptr(GPtrArray) l = reservations_list(d->reservations);
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, SD_BUS_TYPE_ARRAY, "(ssosst)");
        for (guint i = 0; r >= 0 && i < l->len; i++) {
                Reservation *res = l->pdata[i];
                g_autofree char *path = bus_reservation_path(res->id);

                r = sd_bus_message_append(reply, "(ssosst)", res->id, res->target, path, res->owner,
                                          reservation_state_to_string(res->state), res->expires_usec);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* --- Reservation objects -------------------------------------------------- */

static int reservation_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                            void **found, sd_bus_error *error)
{
        Daemon *d = userdata;
        Reservation *r = reservations_get(d->reservations, id_from_path(path));

        if (!r)
                return 0;
        *found = r;
        return 1;
}

static int reservation_enumerate(sd_bus *bus, const char *prefix, void *userdata, char ***nodes,
                                 sd_bus_error *error)
{
        Daemon *d = userdata;
        g_autoptr(GPtrArray) l = reservations_list(d->reservations);
        char **v = calloc(l->len + 1, sizeof(char *));

        if (!v)
                return -ENOMEM;
        for (guint i = 0; i < l->len; i++) {
                if (asprintf(&v[i], VFMIG_DBUS_RESERVATION_PREFIX "/%s", ((Reservation *) l->pdata[i])->id) < 0) {
                        for (guint j = 0; j < i; j++)
                                free(v[j]);
                        free(v);
                        return -ENOMEM;
                }
        }
        *nodes = v;
        return 0;
}

/*
 * Renew/Release of a reservation that is gone (released, expired, never
 * was): NotReserved rather than the generic UnknownObject.  Runs before the
 * vtable for every call under the prefix, and also when a call parked in
 * polkit is dispatched again after its reservation ended.
 */
static int reservation_gone_filter(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Daemon *d = userdata;
        const char *id;

        if (!sd_bus_message_is_method_call(m, VFMIG_DBUS_INTERFACE_RESERVATION, NULL))
                return 0;
        if (!streq_ptr(sd_bus_message_get_member(m), "Renew") && !streq_ptr(sd_bus_message_get_member(m), "Release"))
                return 0;
        id = id_from_path(sd_bus_message_get_path(m));
        if (id && reservations_get(d->reservations, id))
                return 0;
        return sd_bus_reply_method_errorf(m, VFMIG_ERROR_NOT_RESERVED,
                                          "There is no reservation at %s: it was released, expired, or never "
                                          "existed (see ListReservations)", sd_bus_message_get_path(m));
}

static int property_get_persist(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Reservation *r = userdata;

        return sd_bus_message_append(reply, "b", (int) r->persist);
}

static int property_get_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Reservation *r = userdata;

        return sd_bus_message_append(reply, "s", reservation_state_to_string(r->state));
}

static int property_get_source_profile(sd_bus *bus, const char *path, const char *interface,
                                       const char *property, sd_bus_message *reply, void *userdata,
                                       sd_bus_error *error)
{
        Reservation *r = userdata;

        return append_json_dict(reply, json_node_get_object(r->profile));
}

static int method_renew(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Reservation *res = userdata;
        Daemon *d = current_daemon(m);
        g_autofree char *msg = NULL;
        uint32_t lease;
        int r;

        r = sd_bus_message_read(m, "u", &lease);
        if (r < 0)
                return r;
        if (lease != 0 && (lease < RESERVATION_LEASE_MIN_SEC || lease > RESERVATION_LEASE_MAX_SEC))
                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS,
                                         "lease-seconds %" PRIu32 " is out of range: expected %u..%u, or 0 for "
                                         "the reservation's lease (%" PRIu32 " s)",
                                         lease, RESERVATION_LEASE_MIN_SEC, RESERVATION_LEASE_MAX_SEC, res->lease_sec);
        r = bus_verify_method_async(m, VFMIG_DBUS_INTERFACE_RESERVATION, res->target, &d->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;
        /* res was looked up again: a parked call is dispatched from the start. */
        r = reservation_renew(res, lease, &msg);
        if (r < 0)
                return sd_bus_error_set(error, r == -EINVAL ? VFMIG_ERROR_INVALID_ARGS : SD_BUS_ERROR_FAILED, msg);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_release(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Reservation *res = userdata;
        Daemon *d = current_daemon(m);
        int r;

        r = bus_verify_method_async(m, VFMIG_DBUS_INTERFACE_RESERVATION, res->target, &d->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;
        log_internal(LOG_INFO, "VFMIG_RESERVATION", res->id, "Reservation %s released by %s", res->id,
                     sd_bus_message_get_sender(m));
        reservation_release(res, RESERVATION_END_RELEASED);
        return sd_bus_reply_method_return(m, NULL);
}

const sd_bus_vtable reservation_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "s", NULL, offsetof(Reservation, id), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Target", "s", NULL, offsetof(Reservation, target), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("CreatedFrom", "s", NULL, offsetof(Reservation, created_from),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Owner", "s", NULL, offsetof(Reservation, owner), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Persist", "b", property_get_persist, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("CreatedAt", "t", NULL, offsetof(Reservation, created_usec), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ExpiresAt", "t", NULL, offsetof(Reservation, expires_usec),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("LeaseSeconds", "u", NULL, offsetof(Reservation, lease_sec),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SourceProfile", "a{sv}", property_get_source_profile, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        /* UNPRIVILEGED: the handlers ask polkit themselves (bus-polkit.c). */
        SD_BUS_METHOD_WITH_ARGS("Renew",
                                SD_BUS_ARGS("u", lease_seconds),
                                SD_BUS_NO_RESULT,
                                method_renew,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Release",
                                SD_BUS_NO_ARGS,
                                SD_BUS_NO_RESULT,
                                method_release,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        /* Incoming migration: the bodies are in bus-job.c (polkit org.vfmig1.migrate). */
        SD_BUS_METHOD_WITH_ARGS("PrepareIncoming",
                                SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("s", endpoint, "s", ticket),
                                bus_job_method_prepare_incoming,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ReceiveFromFd",
                                SD_BUS_ARGS("h", fd, "a{sv}", options),
                                SD_BUS_RESULT("o", job),
                                bus_job_method_receive_from_fd,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

/* --- signals from the reservation set ------------------------------------- */

static void on_added(Reservations *s, Reservation *r, void *userdata)
{
        Daemon *d = userdata;
        g_autofree char *path = bus_reservation_path(r->id);
        int k;

        if (!d->bus)
                return;
        k = sd_bus_emit_object_added(d->bus, path);
        if (k < 0)
                log_warning_errno(k, "Failed to emit InterfacesAdded for reservation %s: %m", r->id);
        k = sd_bus_emit_signal(d->bus, VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER, "ReservationAdded", "sso",
                               r->id, r->target, path);
        if (k < 0)
                log_warning_errno(k, "Failed to emit ReservationAdded for %s: %m", r->id);
}

static void on_changed(Reservations *s, Reservation *r, void *userdata)
{
        Daemon *d = userdata;
        g_autofree char *path = bus_reservation_path(r->id);

        if (d->bus)
                (void) sd_bus_emit_properties_changed(d->bus, path, VFMIG_DBUS_INTERFACE_RESERVATION, "ExpiresAt",
                                                      "LeaseSeconds", "State", NULL);
}

static void on_removed(Reservations *s, Reservation *r, ReservationEnd why, void *userdata)
{
        Daemon *d = userdata;
        g_autofree char *path = bus_reservation_path(r->id);
        int k;

        if (!d->bus) {
                if (r->created_from[0])
                        remove_created(d, r->target, r->created_from, "a reservation that ended");
                return;
        }
        k = sd_bus_emit_object_removed(d->bus, path);
        if (k < 0)
                log_warning_errno(k, "Failed to emit InterfacesRemoved for reservation %s: %m", r->id);
        k = sd_bus_emit_signal(d->bus, VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER, "ReservationRemoved", "ssos",
                               r->id, r->target, path, reservation_end_to_string(why));
        if (k < 0)
                log_warning_errno(k, "Failed to emit ReservationRemoved for %s: %m", r->id);
        /* after the signal: the instance's DeviceRemoved follows its reservation's end */
        if (r->created_from[0]) {
                g_autofree char *what = g_strdup_printf("reservation %s (%s)", r->id, reservation_end_to_string(why));
                remove_created(d, r->target, r->created_from, what);
        }
}

static void on_detach(Reservations *s, Reservation *r, void *userdata)
{
        sd_bus_track *t = r->bus_data;

        r->bus_data = NULL;
        if (t) {
                sd_bus_track_set_userdata(t, NULL);
                sd_bus_track_unref(t);
        }
}

static const ReservationsListener reservations_listener = {
        .added = on_added,
        .changed = on_changed,
        .removed = on_removed,
        .detach = on_detach,
};

/* Keep the restored reservations whose owners are verifiably still there;
 * remove the instances of those that expired while vfmigd was not running. */
static void restore_owners(Daemon *d)
{
        g_autoptr(GPtrArray) l = reservations_list(d->reservations);
        g_autoptr(GPtrArray) expired = reservations_steal_expired_created(d->reservations);
        char bus_id[SD_ID128_STRING_MAX];
        sd_id128_t id;
        bool same_bus;
        int r;

        r = sd_bus_get_bus_id(d->bus, &id);
        if (r < 0) {
                log_warning_errno(r, "Cannot get the bus id, restored reservations of connected owners end: %m");
                bus_id[0] = 0;
        } else
                sd_id128_to_string(id, bus_id);
        same_bus = bus_id[0] && streq_ptr(bus_id, reservations_get_bus_id(d->reservations));

        for (guint i = 0; i < expired->len; i++) {
                Reservation *res = expired->pdata[i];
                g_autofree char *what = g_strdup_printf("reservation %s (expired while vfmigd was not running)",
                                                        res->id);

                remove_created(d, res->target, res->created_from, what);
        }

        for (guint i = 0; i < l->len; i++) {
                Reservation *res = l->pdata[i];
                sd_bus_track *t = NULL;

                if (res->created_from[0] && d->mdev) {
                        g_autofree char *msg = NULL;

                        if (mdev_creator_restore(d->mdev, res->target, res->created_from, &msg) < 0)
                                log_internal(LOG_WARNING, "VFMIG_RESERVATION", res->id,
                                             "Reservation %s: the instance %s created from %s: %s", res->id,
                                             res->target, res->created_from, msg);
                }
                if (res->persist)
                        continue;
                if (same_bus && track_owner(d, res->owner, &t) >= 0) {
                        attach_track(res, t);
                        continue;
                }
                log_internal(LOG_INFO, "VFMIG_RESERVATION", res->id,
                             "Reservation %s of %s ends: its owner %s %s", res->id, res->target, res->owner,
                             same_bus ? "left while vfmigd was not running" : "was on another bus instance");
                reservation_release(res, RESERVATION_END_RESTART);
        }
        reservations_set_bus_id(d->reservations, bus_id);
        r = reservations_flush(d->reservations);
        if (r < 0)
                log_warning_errno(r, "Failed to write %s: %m", reservations_state_path(d->reservations));
}

int bus_reservation_register(Daemon *d)
{
        int r;

        r = sd_bus_add_fallback(d->bus, NULL, VFMIG_DBUS_RESERVATION_PREFIX, reservation_gone_filter, d);
        if (r < 0)
                return r;
        r = sd_bus_add_fallback_vtable(d->bus, NULL, VFMIG_DBUS_RESERVATION_PREFIX,
                                       VFMIG_DBUS_INTERFACE_RESERVATION, reservation_vtable, reservation_find, d);
        if (r < 0)
                return r;
        r = sd_bus_add_node_enumerator(d->bus, NULL, VFMIG_DBUS_RESERVATION_PREFIX, reservation_enumerate, d);
        if (r < 0)
                return r;
        reservations_set_listener(d->reservations, &reservations_listener, d);
        restore_owners(d);
        return 0;
}
