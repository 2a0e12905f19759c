/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus-compat.c — the compatibility API on the bus: profiles as a{sv},
 * GetMigrationProfile, CheckCompatibility, FindCompatibleTargets,
 * ExportMatrix, Reload, and Device.Profile.  Parses and validates the
 * arguments, calls the compat service and the matrix, and replies.
 */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "util.h"
#include "vfmigd.h"
#include "vfmig-names.h"

#define FIND_DEFAULT_MAX 32
#define FIND_LIMIT_MAX 4096

/* Read one variant's value into v; strings stay owned by the message. */
static int read_variant(sd_bus_message *m, VfmigValue *v, GPtrArray *keep)
{
        const char *contents = NULL;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r <= 0)
                return r < 0 ? r : -EBADMSG;
        r = sd_bus_message_enter_container(m, 'v', contents);
        if (r < 0)
                return r;
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
        } else if (streq_ptr(contents, "as")) {
                char **l = NULL;
                v->type = VFMIG_VALUE_STRV;
                r = sd_bus_message_read_strv(m, &l);
                if (r >= 0) {
                        g_ptr_array_add(keep, l);
                        v->strv = (const char *const *) l;
                }
        } else if (streq_ptr(contents, "a{ss}")) {
                GPtrArray *pairs = g_ptr_array_new();
                const char *k, *val;
                v->type = VFMIG_VALUE_PAIRS;
                r = sd_bus_message_enter_container(m, 'a', "{ss}");
                while (r >= 0 && (r = sd_bus_message_read(m, "{ss}", &k, &val)) > 0) {
                        g_ptr_array_add(pairs, (char *) k);
                        g_ptr_array_add(pairs, (char *) val);
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                g_ptr_array_add(pairs, NULL);
                v->strv = (const char *const *) pairs->pdata;
                g_ptr_array_add(keep, g_ptr_array_free(pairs, FALSE));
        } else {
                v->type = VFMIG_VALUE_OTHER;
                r = sd_bus_message_skip(m, contents);
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static void strv_or_array_free(gpointer p)
{
        /* sd_bus_message_read_strv gives a malloc'd strv; pairs arrays hold borrowed strings. */
        g_free(p);
}

/* An a{sv} profile from the bus, validated; InvalidArgs naming the field. */
static int read_profile(sd_bus_message *m, VfmigProfile **ret, sd_bus_error *error)
{
        g_autoptr(VfmigProfile) p = vfmig_profile_new();
        g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(strv_or_array_free);
        g_autofree char *why = NULL;
        const char *key;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                VfmigValue v = {};

                r = sd_bus_message_read_basic(m, 's', &key);
                if (r < 0)
                        return r;
                r = read_variant(m, &v, keep);
                if (r < 0)
                        return r;
                r = vfmig_profile_set(p, key, &v, &why);
                if (v.type == VFMIG_VALUE_STRV) {
                        char **l = g_ptr_array_steal_index(keep, keep->len - 1);
                        g_strfreev(l);
                }
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

int bus_property_get_profile(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        VfmigDevice *dev = userdata;
        Daemon *d = bus_daemon_of(bus);
        MatrixEntry *e = matrix_lookup(compat_service_matrix(d->compat), dev->name);
        const VfmigProfile *p = e ? matrix_entry_get_profile(e) : NULL;

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
        g_auto(VfmigVerdict) v;
        const char *target;
        int r;

        vfmig_verdict_init(&v);
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
                r = append_verdict_lines(reply, &v, matrix_lookup(compat_service_matrix(d->compat), target), true);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
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
                const char *contents = NULL;
                char type;

                r = sd_bus_message_read_basic(m, 's', &key);
                if (r < 0)
                        return r;
                r = sd_bus_message_peek_type(m, &type, &contents);
                if (r < 0)
                        return r;
                if (streq_ptr(key, "include-creatable") || streq_ptr(key, "include-incompatible") ||
                    streq_ptr(key, "include-unavailable")) {
                        int b;
                        if (!streq_ptr(contents, "b"))
                                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS,
                                                         "Option \"%s\" must be a boolean (b)", key);
                        r = sd_bus_message_read(m, "v", "b", &b);
                        if (streq_ptr(key, "include-creatable"))
                                o->include_creatable = b;
                        else if (streq_ptr(key, "include-incompatible"))
                                o->include_incompatible = b;
                        else
                                o->include_unavailable = b;
                } else if (streq_ptr(key, "max-results")) {
                        uint32_t n;
                        if (!streq_ptr(contents, "u"))
                                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS,
                                                         "Option \"max-results\" must be an unsigned integer (u)");
                        r = sd_bus_message_read(m, "v", "u", &n);
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
                r = sd_bus_message_open_container(reply, 'a', "(ssbuuas)");
        for (guint i = 0; r >= 0 && i < results->len; i++) {
                MatrixResult *res = results->pdata[i];
                bool creatable = matrix_entry_get_kind(res->entry) == MATRIX_ENTRY_CREATABLE;

                r = sd_bus_message_open_container(reply, 'r', "ssbuuas");
                if (r >= 0)
                        r = sd_bus_message_append(reply, "ssbuu", matrix_entry_get_key(res->entry),
                                                  creatable ? "creatable" : "device", res->verdict.compatible,
                                                  (uint32_t) res->verdict.score,
                                                  creatable ? matrix_entry_get_available_instances(res->entry) : 1u);
                if (r >= 0)
                        r = append_verdict_lines(reply, &res->verdict, res->entry, false);
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
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
