/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Helpers shared by the compat tests: devices by hand, devices from the
 * shipped simulated hosts (the same fields sim-host.c reads), temp dirs. */
#pragma once

#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdarg.h>
#include <string.h>

#include "config.h"
#include "rules.h"

/* attrs: NULL-terminated name, value, ... */
static inline VfmigDevice *dev_new(const char *name, VfmigDeviceKind kind, const char *driver, guint vid,
                                   guint did, ...) G_GNUC_NULL_TERMINATED;
static inline VfmigDevice *dev_new(const char *name, VfmigDeviceKind kind, const char *driver, guint vid,
                                   guint did, ...)
{
        VfmigDevice *d = vfmig_device_new(name, kind);
        const char *k;
        va_list ap;

        g_free(d->driver);
        d->driver = g_strdup(driver);
        d->vendor_id = vid;
        d->device_id = did;
        va_start(ap, did);
        while ((k = va_arg(ap, const char *)))
                g_hash_table_replace(d->attributes, g_strdup(k), g_strdup(va_arg(ap, const char *)));
        va_end(ap);
        return d;
}

static inline VfmigDevice *mdev_new(const char *name, const VfmigDevice *parent, const char *type)
{
        VfmigDevice *d = vfmig_device_new(name, VFMIG_DEVICE_MDEV);

        d->vendor_id = parent->vendor_id;
        d->device_id = parent->device_id;
        d->subsystem_vendor_id = parent->subsystem_vendor_id;
        d->subsystem_device_id = parent->subsystem_device_id;
        d->revision = parent->revision;
        g_free(d->mdev_type);
        d->mdev_type = g_strdup(type);
        g_free(d->parent);
        d->parent = g_strdup(parent->name);
        return d;
}

typedef struct SimDev {
        VfmigDevice *dev;
        uint64_t flags;
} SimDev;

static inline guint16 hex16(JsonObject *o, const char *key)
{
        const char *s = json_object_get_string_member_with_default(o, key, "0x0");
        return (guint16) g_ascii_strtoull(s + 2, NULL, 16);
}

/* Every device of a shipped sim host (also the non-VFIO ones: parents). */
static inline GHashTable *sim_load(const char *file)
{
        g_autofree char *path = g_build_filename(VFMIG_SOURCE_DATADIR, "sim", file, NULL);
        g_autoptr(JsonParser) parser = json_parser_new();
        g_autoptr(GError) err = NULL;
        GHashTable *h = g_hash_table_new(g_str_hash, g_str_equal);
        JsonArray *devs;

        g_assert_true(json_parser_load_from_file(parser, path, &err));
        devs = json_object_get_array_member(json_node_get_object(json_parser_get_root(parser)), "devices");
        for (guint i = 0; i < json_array_get_length(devs); i++) {
                JsonObject *o = json_array_get_object_element(devs, i);
                const char *kind = json_object_get_string_member(o, "kind");
                SimDev *s = g_new0(SimDev, 1);
                VfmigDevice *d = vfmig_device_new(json_object_get_string_member(o, "name"),
                                                  strcmp(kind, "mdev") == 0 ? VFMIG_DEVICE_MDEV : VFMIG_DEVICE_PCI);

                g_free(d->driver);
                d->driver = g_strdup(json_object_get_string_member(o, "driver"));
                d->vendor_id = hex16(o, "vendor-id");
                d->device_id = hex16(o, "device-id");
                d->subsystem_vendor_id = hex16(o, "subsystem-vendor-id");
                d->subsystem_device_id = hex16(o, "subsystem-device-id");
                d->revision = (guint8) hex16(o, "revision");
                if (json_object_has_member(o, "mdev-type")) {
                        g_free(d->mdev_type);
                        d->mdev_type = g_strdup(json_object_get_string_member(o, "mdev-type"));
                        g_free(d->parent);
                        d->parent = g_strdup(json_object_get_string_member(o, "parent"));
                }
                if (json_object_has_member(o, "attributes")) {
                        JsonObject *a = json_object_get_object_member(o, "attributes");
                        g_autoptr(GList) m = json_object_get_members(a);
                        for (GList *l = m; l; l = l->next)
                                g_hash_table_replace(d->attributes, g_strdup(l->data),
                                                     g_strdup(json_object_get_string_member(a, l->data)));
                }
                if (json_object_has_member(o, "migration")) {
                        JsonObject *mo = json_object_get_object_member(o, "migration");
                        JsonArray *fl = json_object_get_array_member(mo, "flags");
                        for (guint j = 0; j < json_array_get_length(fl); j++)
                                s->flags |= vfmig_cap_from_string(json_array_get_string_element(fl, j));
                        if (json_object_get_boolean_member_with_default(mo, "dma-logging", false))
                                s->flags |= VFMIG_COMPAT_FLAG_DMA_LOGGING;
                }
                s->dev = d;
                g_hash_table_insert(h, d->name, s);
        }
        /* An mdev carries its parent's PCI identity, as sim-host.c does. */
        GHashTableIter it;
        gpointer v;
        g_hash_table_iter_init(&it, h);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                VfmigDevice *d = ((SimDev *) v)->dev;
                SimDev *p = d->kind == VFMIG_DEVICE_MDEV ? g_hash_table_lookup(h, d->parent) : NULL;
                if (p) {
                        d->vendor_id = p->dev->vendor_id;
                        d->device_id = p->dev->device_id;
                        d->subsystem_vendor_id = p->dev->subsystem_vendor_id;
                        d->subsystem_device_id = p->dev->subsystem_device_id;
                        d->revision = p->dev->revision;
                }
        }
        return h;
}

static inline void sim_free(GHashTable *h)
{
        GHashTableIter it;
        gpointer v;

        g_hash_table_iter_init(&it, h);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                vfmig_device_free(((SimDev *) v)->dev);
                g_free(v);
        }
        g_hash_table_unref(h);
}

static inline SimDev *sim_get(GHashTable *h, const char *name)
{
        SimDev *s = g_hash_table_lookup(h, name);
        g_assert_nonnull(s);
        return s;
}

static inline VfmigRuleSet *shipped_rules(void)
{
        g_autofree char *dir = g_build_filename(VFMIG_SOURCE_DATADIR, "compat.d", NULL);
        g_autoptr(GPtrArray) errors = NULL;
        VfmigRuleSet *rs = vfmig_rules_load(dir, NULL, &errors);

        for (guint i = 0; i < errors->len; i++)
                g_test_message("rules error: %s", (const char *) errors->pdata[i]);
        g_assert_cmpuint(errors->len, ==, 0);
        return rs;
}

static inline char *tmpdir_new(void)
{
        g_autoptr(GError) err = NULL;
        char *d = g_dir_make_tmp("vfmig-compat-XXXXXX", &err);

        g_assert_no_error(err);
        return d;
}

static inline void tmpdir_remove(const char *dir)
{
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *n;

        while (d && (n = g_dir_read_name(d))) {
                g_autofree char *p = g_build_filename(dir, n, NULL);
                g_unlink(p);
        }
        g_rmdir(dir);
}

static inline void write_file(const char *dir, const char *name, const char *text)
{
        g_autofree char *p = g_build_filename(dir, name, NULL);
        g_autoptr(GError) err = NULL;

        g_assert_true(g_file_set_contents(p, text, -1, &err));
}

static inline void assert_contains(const char *haystack, const char *needle)
{
        if (!haystack || !strstr(haystack, needle))
                g_error("\"%s\" does not contain \"%s\"", haystack ? haystack : "(null)", needle);
}
