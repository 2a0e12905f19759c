/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus-compat.c — the compatibility API on the bus: profiles as a{sv},
 * GetMigrationProfile, CheckCompatibility, FindCompatibleTargets,
 * ExportMatrix, Reload, and Device.Profile.  Parses and validates the
 * arguments, calls the compat service and the matrix, and replies.
 */
#include <errno.h>
#include <string.h>

#include "bus-strings.h"
#include "log.h"
#include "util.h"
#include "vfmigd.h"
#include "vfmig-names.h"

#define FIND_DEFAULT_MAX 32
#define FIND_LIMIT_MAX 4096

/*
 * Strings of one "as" or "a{ss}" value, borrowed from the message (no copies:
 * the profile setter validates them and copies what it keeps).  Only a
 * bounded prefix is kept: vfmig_profile_set() refuses a longer list within
 * that prefix anyway (at most 64 attribute pairs, so the 65th pair decides;
 * at most 5 distinct capabilities, so the 6th entry is a duplicate or
 * unknown), so the verdict on any list is the same as on the whole list;
 * the rest is skipped.
 */
#define LIST_KEEP (2 * VFMIG_PROFILE_ATTRS_MAX + 2)
typedef struct ListBuf {
        const char *item[LIST_KEEP + 1];
} ListBuf;

static int read_string_list(sd_bus_message *m, bool pairs, ListBuf *buf)
{
        size_t n = 0;
        int r;

        r = sd_bus_message_enter_container(m, 'a', pairs ? "{ss}" : "s");
        if (r < 0)
                return r;
        for (;;) {
                const char *k, *val;

                if (n + (pairs ? 2 : 1) > LIST_KEEP) {
                        r = sd_bus_message_skip(m, pairs ? "{ss}" : "s");
                        if (r <= 0)
                                break;
                        continue;
                }
                if (pairs) {
                        r = sd_bus_message_enter_container(m, 'e', "ss");
                        if (r <= 0)
                                break;
                        r = sd_bus_message_read_basic(m, 's', &k);
                        if (r >= 0)
                                r = sd_bus_message_read_basic(m, 's', &val);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(m);
                        if (r < 0)
                                break;
                        buf->item[n++] = k;
                        buf->item[n++] = val;
                } else {
                        r = sd_bus_message_read_basic(m, 's', &k);
                        if (r <= 0)
                                break;
                        buf->item[n++] = k;
                }
        }
        if (r < 0)
                return r;
        buf->item[n] = NULL;
        return sd_bus_message_exit_container(m);
}

/* The type a profile field is normally sent with, or NULL (vfmig_profile_set()
 * alone decides what is acceptable, and ignores keys it does not know). */
static const char *profile_key_signature(const char *key)
{
        static const struct { const char *key, *sig; } fields[] = {
                { "format", "u" }, { "migration-type", "s" }, { "migration-version", "s" },
                { "attributes", "a{ss}" }, { "capabilities", "as" }, { "state-size", "t" },
                { "source-host", "s" }, { "source-device", "s" },
        };

        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                if (streq_ptr(key, fields[i].key))
                        return fields[i].sig;
        return NULL;
}

/*
 * Read one variant's value into v; strings stay owned by the message (or
 * buf).  expected: the signature the field is normally sent with: entering
 * the variant with it saves a look at the type first; a variant of another
 * type is not entered by that (-ENXIO, nothing read) and is then looked at.
 */
static int read_variant(sd_bus_message *m, const char *expected, VfmigValue *v, ListBuf *buf)
{
        const char *contents = NULL;
        char type;
        int r = -ENXIO;

        if (expected) {
                r = sd_bus_message_enter_container(m, 'v', expected);
                contents = expected;
        }
        if (r == -ENXIO) {
                r = sd_bus_message_peek_type(m, &type, &contents);
                if (r <= 0)
                        return r < 0 ? r : -EBADMSG;
                r = sd_bus_message_enter_container(m, 'v', contents);
        }
        if (r <= 0)
                return r < 0 ? r : -EBADMSG;
        if (streq_ptr(contents, "u")) {
                v->type = VFMIG_VALUE_U32;
                r = sd_bus_message_read_basic(m, 'u', &v->u32);
        } else if (streq_ptr(contents, "t")) {
                v->type = VFMIG_VALUE_U64;
                r = sd_bus_message_read_basic(m, 't', &v->u64);
        } else if (streq_ptr(contents, "x")) {
                v->type = VFMIG_VALUE_INT64;
                r = sd_bus_message_read_basic(m, 'x', &v->i64);
        } else if (streq_ptr(contents, "s")) {
                v->type = VFMIG_VALUE_STRING;
                r = sd_bus_message_read_basic(m, 's', &v->str);
        } else if (streq_ptr(contents, "as") || streq_ptr(contents, "a{ss}")) {
                bool pairs = contents[1] == '{';

                v->type = pairs ? VFMIG_VALUE_PAIRS : VFMIG_VALUE_STRV;
                r = read_string_list(m, pairs, buf);
                v->strv = buf->item;
        } else {
                v->type = VFMIG_VALUE_OTHER;
                r = sd_bus_message_skip(m, contents);
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

/* An a{sv} profile from the bus, validated; InvalidArgs naming the field. */
static int read_profile(sd_bus_message *m, VfmigProfile **ret, sd_bus_error *error)
{
        g_autoptr(VfmigProfile) p = vfmig_profile_new();
        g_autofree char *why = NULL;
        ListBuf buf;
        const char *key;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                VfmigValue v = {};

                const char *sig;

                r = sd_bus_message_read_basic(m, 's', &key);
                if (r < 0)
                        return r;
                sig = profile_key_signature(key);
                r = read_variant(m, sig, &v, &buf);
                if (r < 0)
                        return r;
                r = vfmig_profile_set(p, key, &v, &why);
                if (r < 0)
                        return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "Invalid profile: %s", why);
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        if (vfmig_profile_validate(p, &why) < 0)
                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "Invalid profile: %s", why);
        *ret = g_steal_pointer(&p);
        return 0;
}

static int append_profile(sd_bus_message *reply, const VfmigProfile *p, const char *host, const char *device)
{
        g_auto(GStrv) caps = vfmig_caps_to_strv(p->capabilities);
        int r;

        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "{sv}", "format", "u", p->format);
        if (r >= 0)
                r = sd_bus_message_append(reply, "{sv}", "migration-type", "s", p->migration_type);
        if (r >= 0)
                r = sd_bus_message_append(reply, "{sv}", "migration-version", "s", p->migration_version);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'e', "sv");
        if (r >= 0)
                r = sd_bus_message_append_basic(reply, 's', "attributes");
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'v', "a{ss}");
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "{ss}");
        if (r >= 0) {
                g_autoptr(GList) keys = g_hash_table_get_keys(p->attributes);
                keys = g_list_sort(keys, (GCompareFunc) strcmp);
                for (GList *l = keys; r >= 0 && l; l = l->next)
                        r = sd_bus_message_append(reply, "{ss}", l->data,
                                                  g_hash_table_lookup(p->attributes, l->data));
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'e', "sv");
        if (r >= 0)
                r = sd_bus_message_append_basic(reply, 's', "capabilities");
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'v', "as");
        if (r >= 0)
                r = sd_bus_message_append_strv(reply, caps);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0 && p->has_state_size)
                r = sd_bus_message_append(reply, "{sv}", "state-size", "t", p->state_size);
        if (r >= 0 && (p->source_host || host))
                r = sd_bus_message_append(reply, "{sv}", "source-host", "s", p->source_host ? p->source_host : host);
        if (r >= 0 && (p->source_device || device))
                r = sd_bus_message_append(reply, "{sv}", "source-device", "s",
                                          p->source_device ? p->source_device : device);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

static const char *host_name(Daemon *d)
{
        return d->host_name;
}

/* The Daemon behind a vtable callback (the slot's userdata). */
static Daemon *bus_daemon_of(sd_bus *bus)
{
        return sd_bus_slot_get_userdata(sd_bus_get_current_slot(bus));
}

/* The device's own profile from the matrix, or an error saying why not. */
static int device_profile(Daemon *d, const char *name, const VfmigProfile **ret, sd_bus_error *error)
{
        MatrixEntry *e = matrix_lookup(compat_service_matrix(d->compat), name);
        const VfmigProfile *p = e ? matrix_entry_get_profile(e) : NULL;

        if (!p)
                return sd_bus_error_setf(error, VFMIG_ERROR_NOT_SUPPORTED,
                                         "Device %s has no migration profile: %s", name,
                                         e && matrix_entry_get_reason(e) ? matrix_entry_get_reason(e)
                                                                         : "no compatibility rule matches it");
        *ret = p;
        return 0;
}

int bus_method_get_migration_profile(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Daemon *d = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const VfmigProfile *p = NULL;
        const char *name;
        int r;

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        if (!vfmig_device_name_is_valid(name))
                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "Device name is not valid");
        if (!inventory_get_device(d->inventory, name))
                return sd_bus_error_setf(error, VFMIG_ERROR_NO_SUCH_DEVICE, "No VFIO device \"%s\" on this host", name);
        r = device_profile(d, name, &p, error);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = append_profile(reply, p, host_name(d), name);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* Keep a copy of what a client is told, for bus_device_emit_profile_changes(). */
static void remember_told_profile(Daemon *d, const char *name, const VfmigProfile *p)
{
        gpointer old;

        if (!d->told_profiles)
                d->told_profiles = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                                         (GDestroyNotify) vfmig_profile_free);
        if (g_hash_table_lookup_extended(d->told_profiles, name, NULL, &old) &&
            (old == p || (old && p && vfmig_profile_equal(old, p))))
                return;
        g_hash_table_replace(d->told_profiles, g_strdup(name), p ? vfmig_profile_copy(p) : NULL);
}

void bus_device_emit_profile_changes(Daemon *d)
{
        GHashTableIter it;
        gpointer name, told;

        if (!d->told_profiles)
                return;
        g_hash_table_iter_init(&it, d->told_profiles);
        while (g_hash_table_iter_next(&it, &name, &told)) {
                MatrixEntry *e = matrix_lookup(compat_service_matrix(d->compat), name);
                const VfmigProfile *now = e ? matrix_entry_get_profile(e) : NULL;
                _cleanup_free_ char *path = NULL;

                if (!inventory_get_device(d->inventory, name)) {
                        g_hash_table_iter_remove(&it);     /* gone: DeviceRemoved said so */
                        continue;
                }
                if (now == told || (now && told && vfmig_profile_equal(now, told)))
                        continue;
                path = bus_device_path(name);
                if (path && d->bus)
                        (void) sd_bus_emit_properties_changed(d->bus, path, VFMIG_DBUS_INTERFACE_DEVICE,
                                                              "Profile", NULL);
                g_hash_table_iter_replace(&it, now ? vfmig_profile_copy(now) : NULL);
        }
}

int bus_property_get_profile(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        VfmigDevice *dev = userdata;
        Daemon *d = bus_daemon_of(bus);
        MatrixEntry *e = matrix_lookup(compat_service_matrix(d->compat), dev->name);
        const VfmigProfile *p = e ? matrix_entry_get_profile(e) : NULL;

        remember_told_profile(d, dev->name, p);

        if (!p)   /* no rule: an empty dictionary, GetMigrationProfile says why */
                return sd_bus_message_append(reply, "a{sv}", 0);
        return append_profile(reply, p, host_name(d), dev->name);
}

/*
 * The explanation of a verdict: every reason for a no; for a yes the rule
 * that accepts (its file and the migration type are in CheckCompatibility's
 * first line and ExportMatrix) and what must be set on the target.  Kept
 * short: FindCompatibleTargets repeats it per result.
 */
static int append_verdict_lines(sd_bus_message *reply, const VfmigVerdict *v, const MatrixEntry *e, bool full)
{
        int r = sd_bus_message_open_container(reply, 'a', "s");

        if (r < 0)
                return r;
        if (v->compatible && e) {
                const VfmigAcceptor *a = matrix_entry_get_acceptor(e);
                g_autofree char *line = full
                        ? g_strdup_printf("accepted by rule %s (%s) for migration type %s",
                                          v->rule_id ? v->rule_id : "?", a ? vfmig_acceptor_get_rule_file(a) : "?",
                                          matrix_entry_get_migration_type(e))
                        : g_strconcat("accepted by rule ", v->rule_id ? v->rule_id : "?", NULL);

                r = sd_bus_message_append_basic(reply, 's', line);
                if (r >= 0 && v->to_apply && g_hash_table_size(v->to_apply) > 0) {
                        g_autoptr(GList) keys = g_list_sort(g_hash_table_get_keys(v->to_apply), (GCompareFunc) strcmp);
                        for (GList *l = keys; r >= 0 && l; l = l->next) {
                                g_autofree char *set = g_strdup_printf("set %s=%s on the target before resuming",
                                                                       (char *) l->data,
                                                                       (char *) g_hash_table_lookup(v->to_apply, l->data));
                                r = sd_bus_message_append_basic(reply, 's', set);
                        }
                }
        } else
                for (guint i = 0; r >= 0 && v->reasons && i < v->reasons->len; i++)
                        r = sd_bus_message_append_basic(reply, 's', v->reasons->pdata[i]);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

int bus_method_check_compatibility(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Daemon *d = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        g_autoptr(VfmigProfile) p = NULL;
        g_auto(VfmigVerdict) v = { 0 };   /* matrix_check() fills it */
        const char *target;
        int r;

        r = read_profile(m, &p, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "s", &target);
        if (r < 0)
                return r;
        if (!vfmig_string_is_valid(target, 2 * VFMIG_NAME_MAX + 1) || !*target)
                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS,
                                         "Target must be a device name or PARENT/TYPE");
        matrix_check(compat_service_matrix(d->compat), p, target, compat_service_hook(d->compat), &v);
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "b", v.compatible);
        if (r >= 0)
                r = append_verdict_lines(reply, &v, matrix_resolve(compat_service_matrix(d->compat), target, NULL),
                                         true);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* Enter an option's variant when it holds sig: 1; 0 when it holds another type. */
static int enter_option(sd_bus_message *m, const char *sig)
{
        int r = sd_bus_message_enter_container(m, 'v', sig);

        if (r == -ENXIO)
                return 0;   /* another type: nothing was read */
        return r < 0 ? r : r == 0 ? -EBADMSG : 1;
}

static int read_find_options(sd_bus_message *m, MatrixFindOptions *o, sd_bus_error *error)
{
        const char *key;
        int r;

        *o = (MatrixFindOptions) { .include_creatable = true, .max_results = FIND_DEFAULT_MAX };
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                r = sd_bus_message_read_basic(m, 's', &key);
                if (r < 0)
                        return r;
                if (streq_ptr(key, "include-creatable") || streq_ptr(key, "include-incompatible") ||
                    streq_ptr(key, "include-unavailable")) {
                        int b = 0;
                        r = enter_option(m, "b");
                        if (r == 0)
                                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS,
                                                         "Option \"%s\" must be a boolean (b)", key);
                        if (r > 0)
                                r = sd_bus_message_read_basic(m, 'b', &b);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(m);
                        if (streq_ptr(key, "include-creatable"))
                                o->include_creatable = b;
                        else if (streq_ptr(key, "include-incompatible"))
                                o->include_incompatible = b;
                        else
                                o->include_unavailable = b;
                } else if (streq_ptr(key, "max-results")) {
                        uint32_t n = 0;
                        r = enter_option(m, "u");
                        if (r == 0)
                                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS,
                                                         "Option \"max-results\" must be an unsigned integer (u)");
                        if (r > 0)
                                r = sd_bus_message_read_basic(m, 'u', &n);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(m);
                        if (r >= 0 && (n == 0 || n > FIND_LIMIT_MAX))
                                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS,
                                                         "Option \"max-results\" must be 1..%d", FIND_LIMIT_MAX);
                        o->max_results = n;
                } else
                        r = sd_bus_message_skip(m, "v");   /* unknown options are ignored */
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

typedef struct FindFilter {
        Daemon *daemon;
        const char *self;   /* the source device itself, when it lives on this host */
} FindFilter;

static bool find_skip(const char *key, void *userdata)
{
        FindFilter *f = userdata;

        if (f->self && strcmp(key, f->self) == 0)
                return true;    /* a device is never its own migration target */
        return f->daemon->is_busy && f->daemon->is_busy(key, f->daemon);
}

/*
 * The explanation lines of one result.  Results of one class share their
 * verdict's reasons and to_apply (matrix_find()), so consecutive results
 * with the same ones reuse the lines built for the first.
 */
typedef struct Explanation {
        const GPtrArray *reasons;
        const GHashTable *to_apply;
        GPtrArray *lines;          /* char*, owned */
} Explanation;

static const GPtrArray *explanation_for(Explanation *x, const VfmigVerdict *v)
{
        if (x->lines && x->reasons == v->reasons && x->to_apply == v->to_apply)
                return x->lines;
        if (x->lines)
                g_ptr_array_set_size(x->lines, 0);
        else
                x->lines = g_ptr_array_new_with_free_func(g_free);
        x->reasons = v->reasons;
        x->to_apply = v->to_apply;
        if (v->compatible) {
                g_ptr_array_add(x->lines, g_strconcat("accepted by rule ", v->rule_id ? v->rule_id : "?", NULL));
                if (v->to_apply && g_hash_table_size(v->to_apply) > 0) {
                        g_autoptr(GList) keys = g_list_sort(g_hash_table_get_keys(v->to_apply), (GCompareFunc) strcmp);
                        for (GList *l = keys; l; l = l->next)
                                g_ptr_array_add(x->lines,
                                                g_strdup_printf("set %s=%s on the target before resuming",
                                                                (char *) l->data,
                                                                (char *) g_hash_table_lookup(v->to_apply, l->data)));
                }
        } else
                for (guint i = 0; v->reasons && i < v->reasons->len; i++)
                        g_ptr_array_add(x->lines, g_strdup(v->reasons->pdata[i]));
        return x->lines;
}

/* a(ssbuuas): key, kind, compatible, score, available instances, explanation. */
static int append_find_results(sd_bus_message *reply, GPtrArray *results)
{
        Explanation x = { 0 };
        int r;

        r = sd_bus_message_open_container(reply, 'a', "(ssbuuas)");
        for (guint i = 0; r >= 0 && i < results->len; i++) {
                MatrixResult *res = results->pdata[i];
                bool creatable = matrix_entry_get_kind(res->entry) == MATRIX_ENTRY_CREATABLE;
                uint32_t score = (uint32_t) res->verdict.score;
                uint32_t instances = creatable ? matrix_entry_get_available_instances(res->entry) : 1u;
                int compatible = res->verdict.compatible;
                const GPtrArray *lines = explanation_for(&x, &res->verdict);

                r = sd_bus_message_open_container(reply, 'r', "ssbuuas");
                if (r >= 0)
                        r = vfmig_bus_append_own_string(reply, matrix_entry_get_key(res->entry));
                if (r >= 0)
                        r = vfmig_bus_append_own_string(reply, creatable ? "creatable" : "device");
                if (r >= 0)
                        r = sd_bus_message_append_basic(reply, 'b', &compatible);
                if (r >= 0)
                        r = sd_bus_message_append_basic(reply, 'u', &score);
                if (r >= 0)
                        r = sd_bus_message_append_basic(reply, 'u', &instances);
                if (r >= 0)
                        r = sd_bus_message_open_container(reply, 'a', "s");
                for (guint j = 0; r >= 0 && j < lines->len; j++)
                        r = vfmig_bus_append_own_string(reply, lines->pdata[j]);
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (x.lines)
                g_ptr_array_unref(x.lines);
        return r;
}

int bus_method_find_compatible_targets(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Daemon *d = userdata;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        g_autoptr(VfmigProfile) p = NULL;
        g_autoptr(GPtrArray) results = NULL;
        MatrixFindOptions opt;
        int r;

        r = read_profile(m, &p, error);
        if (r < 0)
                return r;
        r = read_find_options(m, &opt, error);
        if (r < 0)
                return r;
        FindFilter filter = {
                .daemon = d,
                .self = p->source_device && streq_ptr(p->source_host, d->host_name) ? p->source_device : NULL,
        };
        opt.is_busy = find_skip;
        opt.userdata = &filter;
        matrix_find(compat_service_matrix(d->compat), p, &opt, compat_service_hook(d->compat), &results);

        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = append_find_results(reply, results);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

int bus_method_export_matrix(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Daemon *d = userdata;
        g_autofree char *json = matrix_export_json(compat_service_matrix(d->compat));

        return sd_bus_reply_method_return(m, "s", json);
}

int bus_method_reload(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Daemon *d = userdata;
        g_autofree char *errors = NULL;
        int r;

        r = bus_verify_method_async(m, VFMIG_DBUS_INTERFACE_MANAGER, NULL, &d->polkit_registry, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = compat_service_reload(d->compat, &errors);
        if (r < 0)
                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS,
                                         "Rules not reloaded, the last good rules stay in force: %s", errors);
        return sd_bus_reply_method_return(m, NULL);
}

int bus_property_get_matrix_generation(sd_bus *bus, const char *path, const char *interface, const char *property,
                                       sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Daemon *d = userdata;

        return sd_bus_message_append(reply, "t", matrix_generation(compat_service_matrix(d->compat)));
}

void bus_manager_emit_matrix_changed(Daemon *d, uint64_t generation)
{
        if (!d->bus)
                return;
        (void) sd_bus_emit_signal(d->bus, VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER, "MatrixChanged", "t",
                                  generation);
        (void) sd_bus_emit_properties_changed(d->bus, VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER,
                                              "MatrixGeneration", NULL);
}
