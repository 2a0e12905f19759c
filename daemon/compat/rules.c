/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "rules-private.h"
#include "json-reader.h"

#define RULES_FILE_MAX (1024 * 1024)
#define RULES_PER_FILE_MAX 4096
#define CLAUSES_MAX 64
#define LIST_MAX 256
#define STR_MAX 256
#define TEXT_MAX 4096

/* ---- compiled rules: freeing ---------------------------------------------- */

static void clause_free(Clause *c)
{
        if (!c)
                return;
        g_free(c->field);
        g_free(c->label);
        g_strfreev(c->values);
        g_free(c->target_list);
        g_strfreev(c->order);
        g_free(c->factor[0]);
        g_free(c->factor[1]);
        g_free(c->solve);
        g_strfreev(c->apply);
        g_free(c->interface);
        g_free(c);
}

static void export_free(ExportAttr *e)
{
        if (!e)
                return;
        g_free(e->name);
        g_free(e->tmpl);
        if (e->table)
                g_hash_table_unref(e->table);
        g_free(e->fallback);
        g_free(e);
}

static void idset_clear(IdSet *s)
{
        if (s->ids)
                g_array_unref(s->ids);
}

static void rule_free(Rule *r)
{
        if (!r)
                return;
        g_free(r->id);
        g_free(r->match.driver);
        idset_clear(&r->match.vendor);
        idset_clear(&r->match.device);
        idset_clear(&r->match.subvendor);
        idset_clear(&r->match.subdevice);
        idset_clear(&r->match.revision);
        g_free(r->match.parent_driver);
        g_free(r->match.mdev_type);
        if (r->match.attributes)
                g_hash_table_unref(r->match.attributes);
        g_free(r->ns);
        g_free(r->type_tmpl);
        g_free(r->version_tmpl);
        g_free(r->json);
        if (r->exports)
                g_ptr_array_unref(r->exports);
        if (r->accept)
                g_ptr_array_unref(r->accept);
        g_free(r);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Rule, rule_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Clause, clause_free)

VfmigRuleSet *vfmig_rules_ref(VfmigRuleSet *rs)
{
        g_atomic_int_inc(&rs->n_ref);
        return rs;
}

void vfmig_rules_unref(VfmigRuleSet *rs)
{
        if (!rs || !g_atomic_int_dec_and_test(&rs->n_ref))
                return;
        g_ptr_array_unref(rs->rules);
        g_ptr_array_unref(rs->files);
        g_hash_table_unref(rs->ids);
        g_free(rs->fingerprint);
        g_free(rs);
}

guint vfmig_rules_count(const VfmigRuleSet *rs)
{
        return rs->rules->len;
}

bool vfmig_rules_has_rule(const VfmigRuleSet *rs, const char *id)
{
        return id && g_hash_table_contains(rs->ids, id);
}

const char *const *vfmig_rules_files(const VfmigRuleSet *rs)
{
        return (const char *const *) rs->files->pdata;
}

const char *vfmig_rules_fingerprint(const VfmigRuleSet *rs)
{
        return rs->fingerprint;
}

const char *vfmig_rules_rule_file(const VfmigRuleSet *rs, const char *id)
{
        const Rule *r = id ? g_hash_table_lookup(rs->ids, id) : NULL;

        return r ? r->file : NULL;
}

const char *vfmig_rules_rule_definition(const VfmigRuleSet *rs, const char *id)
{
        const Rule *r = id ? g_hash_table_lookup(rs->ids, id) : NULL;

        return r ? r->json : NULL;
}

/* ---- parsing helpers ----------------------------------------------------- */

typedef struct Ctx {
        const char *path;
        char *error;            /* first error: "PATH: WHERE: message" */
} Ctx;

static bool fail(Ctx *c, const char *where, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static bool fail(Ctx *c, const char *where, const char *fmt, ...)
{
        g_autofree char *msg = NULL;
        va_list ap;

        if (c->error)
                return false;
        va_start(ap, fmt);
        msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        c->error = g_strdup_printf("%s: %s: %s", c->path, where, msg);
        return false;
}

static bool printable(const char *s, size_t max)
{
        size_t n = 0;

        for (; s[n]; n++)
                if (n >= max || (unsigned char) s[n] < 0x20 || (unsigned char) s[n] > 0x7e)
                        return false;
        return n > 0;
}

static bool name_ok(const char *s, size_t max)
{
        size_t n = 0;

        for (; s[n]; n++)
                if (n >= max || !(g_ascii_isalnum(s[n]) || strchr("_.:/-", s[n])))
                        return false;
        return n > 0;
}

static bool check_keys(Ctx *c, const char *where, JsonObject *o, const char *const *allowed)
{
        g_autoptr(GList) members = json_object_get_members(o);

        for (GList *l = members; l; l = l->next)
                if (!g_strv_contains(allowed, l->data))
                        return fail(c, where, "unknown key \"%.64s\"", (const char *) l->data);
        return true;
}

/* *out = string member, or NULL when absent and !required. */
static bool get_str(Ctx *c, const char *where, JsonObject *o, const char *key, bool required, size_t max,
                    const char **out)
{
        JsonNode *n = json_object_get_member(o, key);

        *out = NULL;
        if (!n) {
                if (required)
                        return fail(c, where, "\"%s\" is required", key);
                return true;
        }
        if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING)
                return fail(c, where, "\"%s\" must be a string", key);
        *out = json_node_get_string(n);
        if (!printable(*out, max))
                return fail(c, where, "\"%s\" must be 1..%zu printable ASCII characters", key, max);
        return true;
}

static bool get_int(Ctx *c, const char *where, JsonObject *o, const char *key, bool *present, int64_t *out)
{
        JsonNode *n = json_object_get_member(o, key);

        *present = n != NULL;
        if (!n)
                return true;
        if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64)
                return fail(c, where, "\"%s\" must be an integer", key);
        *out = json_node_get_int(n);
        return true;
}

/* A string or a list of strings → NULL-terminated strv (NULL when absent). */
static bool get_strv(Ctx *c, const char *where, JsonObject *o, const char *key, bool allow_single,
                     size_t max, char ***out)
{
        JsonNode *n = json_object_get_member(o, key);
        g_autoptr(GPtrArray) a = g_ptr_array_new_with_free_func(g_free);

        *out = NULL;
        if (!n)
                return true;
        if (allow_single && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING) {
                if (!printable(json_node_get_string(n), max))
                        return fail(c, where, "\"%s\" must be 1..%zu printable ASCII characters", key, max);
                g_ptr_array_add(a, g_strdup(json_node_get_string(n)));
        } else if (JSON_NODE_HOLDS_ARRAY(n)) {
                JsonArray *arr = json_node_get_array(n);
                guint len = json_array_get_length(arr);

                if (len == 0 || len > LIST_MAX)
                        return fail(c, where, "\"%s\" must list 1..%d strings", key, LIST_MAX);
                for (guint i = 0; i < len; i++) {
                        JsonNode *e = json_array_get_element(arr, i);
                        if (!JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_STRING ||
                            !printable(json_node_get_string(e), max))
                                return fail(c, where, "\"%s\"[%u] must be a string of 1..%zu printable "
                                            "ASCII characters", key, i, max);
                        g_ptr_array_add(a, g_strdup(json_node_get_string(e)));
                }
        } else {
                return fail(c, where, "\"%s\" must be %s", key,
                            allow_single ? "a string or a list of strings" : "a list of strings");
        }
        g_ptr_array_add(a, NULL);
        *out = (char **) g_ptr_array_free(g_steal_pointer(&a), false);
        return true;
}

static bool parse_hex(const char *s, guint max, guint *out)
{
        char *end;
        guint64 v;

        if (!s || !g_str_has_prefix(s, "0x") || !g_ascii_isxdigit(s[2]))
                return false;
        v = g_ascii_strtoull(s + 2, &end, 16);
        if (*end || v > max)
                return false;
        *out = (guint) v;
        return true;
}

/* "0x15b3", ["0x101e", "0x101f"], or for the revision {"min": "0x00", "max": "0x10"}. */
static bool get_idset(Ctx *c, const char *where, JsonObject *o, const char *key, guint max, bool allow_range,
                      IdSet *out)
{
        JsonNode *n = json_object_get_member(o, key);
        g_auto(GStrv) v = NULL;
        guint x;

        if (!n)
                return true;
        if (allow_range && JSON_NODE_HOLDS_OBJECT(n)) {
                JsonObject *r = json_node_get_object(n);
                g_autofree char *w = g_strdup_printf("%s.%s", where, key);
                static const char *const keys[] = { "min", "max", NULL };
                const char *min, *max_s;

                if (!check_keys(c, w, r, keys) || !get_str(c, w, r, "min", true, 16, &min) ||
                    !get_str(c, w, r, "max", true, 16, &max_s))
                        return false;
                if (!parse_hex(min, max, &out->min) || !parse_hex(max_s, max, &out->max))
                        return fail(c, w, "\"min\" and \"max\" must be hex numbers \"0x..\" up to 0x%x", max);
                if (out->min > out->max)
                        return fail(c, w, "\"min\" %s is above \"max\" %s", min, max_s);
                out->ranged = true;
                return true;
        }
        if (!get_strv(c, where, o, key, true, 16, &v))
                return false;
        out->ids = g_array_new(false, false, sizeof(guint16));
        for (size_t i = 0; v[i]; i++) {
                guint16 id;
                if (!parse_hex(v[i], max, &x))
                        return fail(c, where, "\"%s\": \"%s\" is not a hex number \"0x..\" up to 0x%x", key,
                                    v[i], max);
                id = (guint16) x;
                g_array_append_val(out->ids, id);
        }
        return true;
}

static bool glob_ok(Ctx *c, const char *where, const char *key, const char *pattern)
{
        /* fnmatch() needs no compilation; refuse only what can never match. */
        size_t n = strlen(pattern);
        if (n && pattern[n - 1] == '\\' && (n < 2 || pattern[n - 2] != '\\'))
                return fail(c, where, "\"%s\": pattern \"%s\" ends in a lone backslash", key, pattern);
        return true;
}

/* ${name}, ${name:-default}, $$; checked at load so evaluation cannot trip. */
static bool template_ok(Ctx *c, const char *where, const char *key, const char *t)
{
        for (const char *p = t; *p; p++) {
                if (*p != '$')
                        continue;
                if (p[1] == '$') {
                        p++;
                        continue;
                }
                if (p[1] != '{')
                        return fail(c, where, "\"%s\": \"$\" at offset %td must start \"${name}\" (write "
                                    "\"$$\" for a dollar sign)", key, p - t);
                const char *end = strchr(p + 2, '}');
                if (!end)
                        return fail(c, where, "\"%s\": \"${\" at offset %td is not closed", key, p - t);
                g_autofree char *inner = g_strndup(p + 2, (gsize) (end - p - 2));
                char *dflt = strstr(inner, ":-");
                if (dflt)
                        *dflt = '\0';
                if (!name_ok(inner, STR_MAX))
                        return fail(c, where, "\"%s\": \"%s\" is not a variable name ([A-Za-z0-9_.:/-])", key,
                                    inner);
                p = end;
        }
        return true;
}

/* ---- templates ------------------------------------------------------------ */

/* Not vfmig_device_kind_to_string(): this library links nothing of the daemon. */
static const char *kind_name(VfmigDeviceKind k)
{
        return k == VFMIG_DEVICE_MDEV ? "mdev" : "pci";
}

static bool variable(const char *name, const VfmigDevice *dev, const VfmigDevice *parent, GHashTable *exported,
                     char **out)
{
        const char *v;

        if (strcmp(name, "bus") == 0)
                *out = g_strdup(kind_name(dev->kind));
        else if (strcmp(name, "driver") == 0)
                *out = g_strdup(dev->driver ? dev->driver : "");
        else if (strcmp(name, "vendor_id") == 0)
                *out = g_strdup_printf("0x%04x", dev->vendor_id);
        else if (strcmp(name, "device_id") == 0)
                *out = g_strdup_printf("0x%04x", dev->device_id);
        else if (strcmp(name, "subsystem_vendor_id") == 0)
                *out = g_strdup_printf("0x%04x", dev->subsystem_vendor_id);
        else if (strcmp(name, "subsystem_device_id") == 0)
                *out = g_strdup_printf("0x%04x", dev->subsystem_device_id);
        else if (strcmp(name, "revision") == 0)
                *out = g_strdup_printf("0x%02x", dev->revision);
        else if (strcmp(name, "mdev_type") == 0 && dev->kind == VFMIG_DEVICE_MDEV)
                *out = g_strdup(dev->mdev_type);
        else if (strcmp(name, "parent_driver") == 0 && parent && parent->driver && *parent->driver)
                *out = g_strdup(parent->driver);
        else if (exported && (v = g_hash_table_lookup(exported, name)))
                *out = g_strdup(v);
        else if ((v = g_hash_table_lookup(dev->attributes, name)))
                *out = g_strdup(v);
        else if (parent && (v = g_hash_table_lookup(parent->attributes, name)))
                *out = g_strdup(v);
        else
                return false;
        return true;
}

int compat_expand(const char *tmpl, const VfmigDevice *dev, const VfmigDevice *parent, GHashTable *exported,
                  char **ret, char **why)
{
        g_autoptr(GString) s = g_string_new(NULL);

        for (const char *p = tmpl; *p; p++) {
                if (*p != '$') {
                        g_string_append_c(s, *p);
                        continue;
                }
                if (p[1] == '$') {
                        g_string_append_c(s, '$');
                        p++;
                        continue;
                }
                const char *end = strchr(p + 2, '}');   /* validated at load */
                if (p[1] != '{' || !end)
                        return *why = g_strdup("malformed template"), -EINVAL;
                g_autofree char *inner = g_strndup(p + 2, (gsize) (end - p - 2));
                g_autofree char *value = NULL;
                char *dflt = strstr(inner, ":-");
                if (dflt) {
                        *dflt = '\0';
                        dflt += 2;
                }
                if (!variable(inner, dev, parent, exported, &value)) {
                        if (!dflt) {
                                *why = g_strdup_printf("the device has no attribute \"%s\"", inner);
                                return -EINVAL;
                        }
                        value = g_strdup(dflt);
                }
                g_string_append(s, value);
                p = end;
        }
        if (s->len > STR_MAX || !printable(s->str, STR_MAX + 1)) {
                *why = g_strdup_printf("\"%s\" expands to an empty, too long or unprintable value", tmpl);
                return -EINVAL;
        }
        *ret = g_string_free(g_steal_pointer(&s), false);
        return 0;
}

/* ---- parsing: match ----------------------------------------------------- */

static bool parse_match(Ctx *c, const char *where, JsonObject *o, Match *m)
{
        static const char *const keys[] = {
                "bus", "driver", "vendor-id", "device-id", "subsystem-vendor-id", "subsystem-device-id",
                "revision", "mdev-parent-driver", "mdev-type", "attributes", "comment", NULL
        };
        const char *bus = NULL, *s;
        JsonNode *n;

        if (!check_keys(c, where, o, keys) || !get_str(c, where, o, "bus", false, 16, &bus))
                return false;
        m->bus = -1;
        if (bus && strcmp(bus, "pci") == 0)
                m->bus = VFMIG_DEVICE_PCI;
        else if (bus && strcmp(bus, "mdev") == 0)
                m->bus = VFMIG_DEVICE_MDEV;
        else if (bus)
                return fail(c, where, "\"bus\" must be \"pci\" or \"mdev\", not \"%s\"", bus);
        if (!get_str(c, where, o, "driver", false, STR_MAX, &s) || (s && !glob_ok(c, where, "driver", s)))
                return false;
        m->driver = g_strdup(s);
        if (!get_idset(c, where, o, "vendor-id", 0xffff, false, &m->vendor) ||
            !get_idset(c, where, o, "device-id", 0xffff, false, &m->device) ||
            !get_idset(c, where, o, "subsystem-vendor-id", 0xffff, false, &m->subvendor) ||
            !get_idset(c, where, o, "subsystem-device-id", 0xffff, false, &m->subdevice) ||
            !get_idset(c, where, o, "revision", 0xff, true, &m->revision))
                return false;
        if (!get_str(c, where, o, "mdev-parent-driver", false, STR_MAX, &s))
                return false;
        m->parent_driver = g_strdup(s);
        if (!get_str(c, where, o, "mdev-type", false, STR_MAX, &s) || (s && !glob_ok(c, where, "mdev-type", s)))
                return false;
        m->mdev_type = g_strdup(s);
        if ((m->parent_driver || m->mdev_type) && m->bus == VFMIG_DEVICE_PCI)
                return fail(c, where, "\"mdev-parent-driver\"/\"mdev-type\" need \"bus\": \"mdev\"");
        if ((m->parent_driver || m->mdev_type) && m->bus < 0)
                m->bus = VFMIG_DEVICE_MDEV;
        n = json_object_get_member(o, "attributes");
        if (n) {
                g_autofree char *w = g_strdup_printf("%s.attributes", where);
                g_autoptr(GList) members = NULL;
                JsonObject *a;

                if (!JSON_NODE_HOLDS_OBJECT(n))
                        return fail(c, where, "\"attributes\" must be an object of name → pattern");
                a = json_node_get_object(n);
                members = json_object_get_members(a);
                m->attributes = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
                for (GList *l = members; l; l = l->next) {
                        if (!name_ok(l->data, 64))
                                return fail(c, w, "\"%.64s\" is not an attribute name", (const char *) l->data);
                        if (!get_str(c, w, a, l->data, true, STR_MAX, &s) || !glob_ok(c, w, l->data, s))
                                return false;
                        g_hash_table_replace(m->attributes, g_strdup(l->data), g_strdup(s));
                }
        }
        return true;
}

/* ---- parsing: accept clauses -------------------------------------------- */

static const struct {
        const char *name;
        CheckKind kind;
} check_names[] = {
        { "equal", CHECK_EQUAL },          { "set", CHECK_SET },
        { "range", CHECK_RANGE },          { "version", CHECK_VERSION },
        { "generation", CHECK_GENERATION }, { "product", CHECK_PRODUCT },
        { "apply", CHECK_APPLY },          { "capabilities", CHECK_CAPABILITIES },
        { "kernel", CHECK_KERNEL },
};

static bool get_bound(Ctx *c, const char *where, JsonObject *o, const char *key, Bound *b)
{
        JsonNode *n = json_object_get_member(o, key);

        if (!n)
                return true;
        b->present = true;
        if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64) {
                b->value = json_node_get_int(n);
                return true;
        }
        if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING &&
            strcmp(json_node_get_string(n), "target") == 0) {
                b->target = true;
                return true;
        }
        return fail(c, where, "\"%s\" must be an integer or \"target\"", key);
}

static bool get_field(Ctx *c, const char *where, JsonObject *o, const char *key, char **out)
{
        const char *s;

        if (!get_str(c, where, o, key, true, 64, &s))
                return false;
        if (strcmp(s, "migration-version") != 0 && !name_ok(s, 64))
                return fail(c, where, "\"%s\": \"%s\" is not an attribute name or \"migration-version\"", key, s);
        *out = g_strdup(s);
        return true;
}

static Clause *parse_clause(Ctx *c, const char *where, JsonNode *node)
{
        static const char *const keys[] = {
                "check", "field", "label", "values", "target-list", "min", "max", "component", "same",
                "order", "fields", "solve", "require", "interface", "comment", NULL
        };
        g_autoptr(Clause) cl = g_new0(Clause, 1);
        const char *check, *label;
        JsonObject *o;
        bool present;
        int64_t v;
        size_t k;

        if (!JSON_NODE_HOLDS_OBJECT(node))
                return fail(c, where, "must be an object"), NULL;
        o = json_node_get_object(node);
        if (!check_keys(c, where, o, keys) || !get_str(c, where, o, "check", true, 32, &check))
                return NULL;
        for (k = 0; k < G_N_ELEMENTS(check_names); k++)
                if (strcmp(check, check_names[k].name) == 0)
                        break;
        if (k == G_N_ELEMENTS(check_names))
                return fail(c, where, "unknown check \"%s\" (known: equal, set, range, version, generation, "
                            "product, apply, capabilities, kernel)", check), NULL;
        cl->kind = check_names[k].kind;
        cl->component = -1;

        switch (cl->kind) {
        case CHECK_EQUAL:
        case CHECK_SET:
        case CHECK_RANGE:
        case CHECK_VERSION:
        case CHECK_GENERATION:
                if (!get_field(c, where, o, "field", &cl->field))
                        return NULL;
                break;
        default:
                if (json_object_has_member(o, "field"))
                        return fail(c, where, "\"field\" does not apply to check \"%s\"", check), NULL;
        }
        if (!get_str(c, where, o, "label", false, 64, &label))
                return NULL;
        cl->label = g_strdup(label ? label : cl->field);

        switch (cl->kind) {
        case CHECK_EQUAL:
                break;
        case CHECK_SET: {
                const char *tl;
                if (!get_strv(c, where, o, "values", false, STR_MAX, &cl->values) ||
                    !get_str(c, where, o, "target-list", false, 64, &tl))
                        return NULL;
                if (!!cl->values == !!tl)
                        return fail(c, where, "check \"set\" needs exactly one of \"values\" and "
                                    "\"target-list\""), NULL;
                if (tl && !name_ok(tl, 64))
                        return fail(c, where, "\"target-list\": \"%s\" is not an attribute name", tl), NULL;
                cl->target_list = g_strdup(tl);
                break;
        }
        case CHECK_RANGE:
                if (!get_bound(c, where, o, "min", &cl->min) || !get_bound(c, where, o, "max", &cl->max) ||
                    !get_int(c, where, o, "component", &present, &v))
                        return NULL;
                if (!cl->min.present && !cl->max.present)
                        return fail(c, where, "check \"range\" needs \"min\" or \"max\""), NULL;
                if (cl->min.present && cl->max.present && !cl->min.target && !cl->max.target &&
                    cl->min.value > cl->max.value)
                        return fail(c, where, "\"min\" %" G_GINT64_FORMAT " is above \"max\" %" G_GINT64_FORMAT,
                                    cl->min.value, cl->max.value), NULL;
                if (present && (v < 0 || v > 16))
                        return fail(c, where, "\"component\" must be 0..16"), NULL;
                if (present)
                        cl->component = (int) v;
                break;
        case CHECK_VERSION:
                if (!get_int(c, where, o, "same", &present, &v))
                        return NULL;
                if (present && (v < 0 || v > 8))
                        return fail(c, where, "\"same\" must be 0..8"), NULL;
                cl->same = present ? (int) v : 1;
                break;
        case CHECK_GENERATION:
                if (!get_strv(c, where, o, "order", false, 64, &cl->order))
                        return NULL;
                if (!cl->order)
                        return fail(c, where, "check \"generation\" needs \"order\" (oldest first)"), NULL;
                for (size_t i = 0; cl->order[i]; i++)
                        for (size_t j = 0; j < i; j++)
                                if (strcmp(cl->order[i], cl->order[j]) == 0)
                                        return fail(c, where, "\"order\": \"%s\" appears twice",
                                                    cl->order[i]), NULL;
                break;
        case CHECK_PRODUCT: {
                g_auto(GStrv) f = NULL;
                const char *solve;
                if (!get_strv(c, where, o, "fields", false, 64, &f) ||
                    !get_str(c, where, o, "solve", false, 64, &solve))
                        return NULL;
                if (!f || g_strv_length(f) != 2 || !name_ok(f[0], 64) || !name_ok(f[1], 64))
                        return fail(c, where, "check \"product\" needs \"fields\": two attribute names"), NULL;
                cl->factor[0] = g_strdup(f[0]);
                cl->factor[1] = g_strdup(f[1]);
                if (solve && strcmp(solve, f[0]) != 0 && strcmp(solve, f[1]) != 0)
                        return fail(c, where, "\"solve\": \"%s\" is not one of \"fields\"", solve), NULL;
                cl->solve = g_strdup(solve);
                if (!cl->label)
                        cl->label = g_strdup_printf("%s × %s", f[0], f[1]);
                break;
        }
        case CHECK_APPLY:
                if (!get_strv(c, where, o, "fields", false, 64, &cl->apply))
                        return NULL;
                if (!cl->apply)
                        return fail(c, where, "check \"apply\" needs \"fields\""), NULL;
                for (size_t i = 0; cl->apply[i]; i++)
                        if (!name_ok(cl->apply[i], 64))
                                return fail(c, where, "\"fields\": \"%s\" is not an attribute name",
                                            cl->apply[i]), NULL;
                break;
        case CHECK_CAPABILITIES: {
                g_auto(GStrv) req = NULL;
                if (!get_strv(c, where, o, "require", false, 32, &req))
                        return NULL;
                if (!req)
                        return fail(c, where, "check \"capabilities\" needs \"require\""), NULL;
                for (size_t i = 0; req[i]; i++) {
                        uint32_t bit = vfmig_cap_from_string(req[i]);
                        if (!bit || bit == VFMIG_CAP_NEEDS_P2P)
                                return fail(c, where, "\"require\": \"%s\" is not a target capability "
                                            "(stop-copy, p2p, pre-copy, dma-logging)", req[i]), NULL;
                        cl->caps |= bit;
                }
                break;
        }
        case CHECK_KERNEL: {
                const char *itf;
                if (!get_str(c, where, o, "interface", true, 64, &itf))
                        return NULL;
                if (strcmp(itf, "migration_version") != 0 && strcmp(itf, "migration-compatible") != 0)
                        return fail(c, where, "\"interface\" must be \"migration_version\" or "
                                    "\"migration-compatible\", not \"%s\"", itf), NULL;
                cl->interface = g_strdup(itf);
                break;
        }
        }
        /* Keys that belong to other checks are mistakes, not decoration. */
        static const struct { const char *key; unsigned kinds; } owners[] = {
                { "values", 1u << CHECK_SET }, { "target-list", 1u << CHECK_SET },
                { "min", 1u << CHECK_RANGE }, { "max", 1u << CHECK_RANGE }, { "component", 1u << CHECK_RANGE },
                { "same", 1u << CHECK_VERSION }, { "order", 1u << CHECK_GENERATION },
                { "fields", (1u << CHECK_PRODUCT) | (1u << CHECK_APPLY) }, { "solve", 1u << CHECK_PRODUCT },
                { "require", 1u << CHECK_CAPABILITIES }, { "interface", 1u << CHECK_KERNEL },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(owners); i++)
                if (json_object_has_member(o, owners[i].key) && !(owners[i].kinds & (1u << cl->kind)))
                        return fail(c, where, "\"%s\" does not apply to check \"%s\"", owners[i].key,
                                    check), NULL;
        return g_steal_pointer(&cl);
}

/* ---- parsing: rules ------------------------------------------------------- */

static bool ns_ok(const char *s)
{
        size_t n = 0;

        for (; s[n]; n++)
                if (n >= 32 || !(g_ascii_islower(s[n]) || g_ascii_isdigit(s[n]) || strchr("_.-", s[n])))
                        return false;
        return n > 0;
}

static bool parse_exports(Ctx *c, const char *where, JsonObject *o, Rule *r)
{
        JsonNode *n = json_object_get_member(o, "attributes");
        g_autoptr(GList) members = NULL;
        g_autofree char *w = g_strdup_printf("%s.attributes", where);
        JsonObject *a;

        r->exports = g_ptr_array_new_with_free_func((GDestroyNotify) export_free);
        if (!n)
                return true;
        if (!JSON_NODE_HOLDS_OBJECT(n))
                return fail(c, where, "\"attributes\" must be an object of name → template");
        a = json_node_get_object(n);
        members = json_object_get_members(a);
        if (g_list_length(members) > VFMIG_PROFILE_ATTRS_MAX)
                return fail(c, w, "more than %d attributes", VFMIG_PROFILE_ATTRS_MAX);
        for (GList *l = members; l; l = l->next) {
                JsonNode *e = json_object_get_member(a, l->data);
                ExportAttr *x = g_new0(ExportAttr, 1);

                g_ptr_array_add(r->exports, x);
                if (!name_ok(l->data, VFMIG_PROFILE_ATTR_NAME_MAX))
                        return fail(c, w, "\"%.64s\" is not an attribute name", (const char *) l->data);
                x->name = g_strdup(l->data);
                if (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING) {
                        const char *t;
                        if (!get_str(c, w, a, l->data, true, STR_MAX, &t) || !template_ok(c, w, l->data, t))
                                return false;
                        x->tmpl = g_strdup(t);
                } else if (JSON_NODE_HOLDS_OBJECT(e)) {
                        static const char *const keys[] = { "lookup", "table", "default", NULL };
                        g_autofree char *w2 = g_strdup_printf("%s.%s", w, x->name);
                        JsonObject *lo = json_node_get_object(e);
                        JsonNode *tn = json_object_get_member(lo, "table");
                        g_autoptr(GList) tm = NULL;
                        const char *t, *d;

                        if (!check_keys(c, w2, lo, keys) || !get_str(c, w2, lo, "lookup", true, STR_MAX, &t) ||
                            !template_ok(c, w2, "lookup", t) || !get_str(c, w2, lo, "default", false, STR_MAX, &d))
                                return false;
                        if (!tn || !JSON_NODE_HOLDS_OBJECT(tn))
                                return fail(c, w2, "\"table\" must be an object of key → value");
                        x->tmpl = g_strdup(t);
                        x->fallback = g_strdup(d);
                        x->table = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
                        tm = json_object_get_members(json_node_get_object(tn));
                        for (GList *k = tm; k; k = k->next) {
                                const char *val;
                                g_autofree char *w3 = g_strdup_printf("%s.table", w2);
                                if (!get_str(c, w3, json_node_get_object(tn), k->data, true, STR_MAX, &val))
                                        return false;
                                g_hash_table_replace(x->table, g_strdup(k->data), g_strdup(val));
                        }
                } else {
                        return fail(c, w, "\"%.64s\" must be a template string or {\"lookup\", \"table\"}",
                                    (const char *) l->data);
                }
        }
        return true;
}

static Rule *parse_rule(Ctx *c, const char *where, JsonNode *node, const char *file_ns)
{
        static const char *const keys[] = {
                "id", "description", "comment", "priority", "match", "namespace", "migration-type",
                "migration-version", "attributes", "capabilities", "accept", NULL
        };
        g_autoptr(Rule) r = g_new0(Rule, 1);
        const char *id, *ns, *s;
        g_auto(GStrv) caps = NULL;
        JsonObject *o;
        JsonNode *n;
        bool present;
        int64_t v;

        if (!JSON_NODE_HOLDS_OBJECT(node))
                return fail(c, where, "must be an object"), NULL;
        o = json_node_get_object(node);
        if (!check_keys(c, where, o, keys) || !get_str(c, where, o, "id", true, 64, &id))
                return NULL;
        if (!name_ok(id, 64))
                return fail(c, where, "\"id\" must be 1..64 characters of [A-Za-z0-9_.:/-]"), NULL;
        r->id = g_strdup(id);
        if (!get_str(c, where, o, "description", false, TEXT_MAX, &s) ||
            !get_int(c, where, o, "priority", &present, &v))
                return NULL;
        if (present && (v < -1000 || v > 1000))
                return fail(c, where, "\"priority\" must be -1000..1000"), NULL;
        r->priority = present ? (int) v : 0;

        n = json_object_get_member(o, "match");
        if (!n || !JSON_NODE_HOLDS_OBJECT(n))
                return fail(c, where, "\"match\" is required and must be an object"), NULL;
        {
                g_autofree char *w = g_strdup_printf("%s.match", where);
                if (!parse_match(c, w, json_node_get_object(n), &r->match))
                        return NULL;
        }

        if (!get_str(c, where, o, "namespace", false, 32, &ns))
                return NULL;
        ns = ns ? ns : file_ns;
        if (!ns)
                return fail(c, where, "\"namespace\" is required (here or at the top of the file)"), NULL;
        if (!ns_ok(ns))
                return fail(c, where, "\"namespace\" \"%s\" must be 1..32 characters of [a-z0-9_.-]", ns), NULL;
        /* "pci-XXXX" is the PCI vendor's namespace: only rules pinned to that vendor may use it. */
        if (g_str_has_prefix(ns, "pci-")) {
                guint vid;
                g_autofree char *hex = g_strdup_printf("0x%s", ns + 4);
                if (strlen(ns) != 8 || !parse_hex(hex, 0xffff, &vid))
                        return fail(c, where, "namespace \"%s\": \"pci-\" must be followed by 4 lowercase hex "
                                    "digits", ns), NULL;
                if (!r->match.vendor.ids || r->match.vendor.ids->len != 1 ||
                    g_array_index(r->match.vendor.ids, guint16, 0) != vid)
                        return fail(c, where, "namespace \"%s\" belongs to PCI vendor 0x%04x: \"match\" must "
                                    "have \"vendor-id\": \"0x%04x\" and no other", ns, vid, vid), NULL;
        }
        r->ns = g_strdup(ns);

        if (!get_str(c, where, o, "migration-type", true, STR_MAX, &s) ||
            !template_ok(c, where, "migration-type", s))
                return NULL;
        r->type_tmpl = g_strdup(s);
        if (!get_str(c, where, o, "migration-version", true, STR_MAX, &s) ||
            !template_ok(c, where, "migration-version", s))
                return NULL;
        r->version_tmpl = g_strdup(s);
        if (!parse_exports(c, where, o, r))
                return NULL;

        if (!get_strv(c, where, o, "capabilities", false, 32, &caps))
                return NULL;
        r->caps_declared = caps != NULL;
        for (size_t i = 0; caps && caps[i]; i++) {
                uint32_t bit = vfmig_cap_from_string(caps[i]);
                if (!bit || bit == VFMIG_CAP_NEEDS_P2P)
                        return fail(c, where, "\"capabilities\": \"%s\" is not a device capability (stop-copy, "
                                    "p2p, pre-copy, dma-logging)", caps[i]), NULL;
                r->caps |= bit;
        }

        r->accept = g_ptr_array_new_with_free_func((GDestroyNotify) clause_free);
        n = json_object_get_member(o, "accept");
        if (n) {
                JsonArray *a;
                if (!JSON_NODE_HOLDS_ARRAY(n))
                        return fail(c, where, "\"accept\" must be a list of clauses"), NULL;
                a = json_node_get_array(n);
                if (json_array_get_length(a) > CLAUSES_MAX)
                        return fail(c, where, "\"accept\" has more than %d clauses", CLAUSES_MAX), NULL;
                for (guint i = 0; i < json_array_get_length(a); i++) {
                        g_autofree char *w = g_strdup_printf("%s.accept[%u]", where, i);
                        Clause *cl = parse_clause(c, w, json_array_get_element(a, i));
                        if (!cl)
                                return NULL;
                        r->has_kernel |= cl->kind == CHECK_KERNEL;
                        g_ptr_array_add(r->accept, cl);
                }
        }
        r->json = json_to_string(node, false);
        return g_steal_pointer(&r);
}

/* Parse one file's text into rules (appended to out); false and c->error on any problem. */
static bool parse_file(Ctx *c, const char *text, gsize len, GPtrArray *out)
{
        static const char *const keys[] = { "format", "source", "comment", "namespace", "rules", NULL };
        g_autoptr(JsonParser) parser = json_parser_new_immutable();
        g_autoptr(GError) err = NULL;
        const char *ns, *s;
        JsonObject *o;
        JsonNode *root, *n;
        JsonArray *rules;
        bool present;
        int64_t format;
        g_autofree char *why = NULL;

        if (len == 0)
                return true;   /* an empty file masks a vendor file of the same name */
        if (memchr(text, '\0', len))
                return fail(c, "(file)", "contains a NUL byte");
        if (!jv_check(text, len, &why)) {
                /* "LINE:COL: Parse error: ...", as json-glib words it */
                c->error = g_strdup_printf("%s:%s", c->path, why);
                return false;
        }
        if (!json_parser_load_from_data(parser, text, (gssize) len, &err)) {
                /* json-glib says "<data>:LINE:COL: Parse error: ..."; keep LINE:COL. */
                const char *m = err->message;
                if (g_str_has_prefix(m, "<data>:"))
                        m += strlen("<data>:");
                c->error = g_strdup_printf("%s:%s", c->path, m);
                return false;
        }
        root = json_parser_get_root(parser);
        if (!root || !JSON_NODE_HOLDS_OBJECT(root))
                return fail(c, "(top)", "must be a JSON object");
        o = json_node_get_object(root);
        if (!check_keys(c, "(top)", o, keys) || !get_int(c, "(top)", o, "format", &present, &format))
                return false;
        if (!present || format != 1)
                return fail(c, "(top)", "\"format\" must be 1");
        if (!get_str(c, "(top)", o, "source", false, TEXT_MAX, &s) ||
            !get_str(c, "(top)", o, "namespace", false, 32, &ns))
                return false;
        n = json_object_get_member(o, "rules");
        if (!n || !JSON_NODE_HOLDS_ARRAY(n))
                return fail(c, "(top)", "\"rules\" is required and must be a list");
        rules = json_node_get_array(n);
        if (json_array_get_length(rules) > RULES_PER_FILE_MAX)
                return fail(c, "(top)", "more than %d rules", RULES_PER_FILE_MAX);
        for (guint i = 0; i < json_array_get_length(rules); i++) {
                g_autofree char *w = g_strdup_printf("rules[%u]", i);
                Rule *r = parse_rule(c, w, json_array_get_element(rules, i), ns);
                if (!r)
                        return false;
                for (guint j = 0; j < out->len; j++)
                        if (strcmp(((Rule *) out->pdata[j])->id, r->id) == 0) {
                                rule_free(r);
                                return fail(c, w, "rule id \"%s\" appears twice in this file",
                                            ((Rule *) out->pdata[j])->id);
                        }
                g_ptr_array_add(out, r);
        }
        return true;
}

/* ---- loading ----------------------------------------------------------- */

static void list_dir(const char *dir, GHashTable *name_to_path, GPtrArray *errors)
{
        g_autoptr(GError) err = NULL;
        g_autoptr(GDir) d = NULL;
        const char *name;

        if (!dir)
                return;
        d = g_dir_open(dir, 0, &err);
        if (!d) {
                if (!g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_NOENT) && errors) {
                        g_autofree char *shown = g_filename_display_name(dir);
                        g_ptr_array_add(errors, g_strdup_printf("%s: cannot read the directory: %s", shown,
                                                                err->message));
                }
                return;
        }
        while ((name = g_dir_read_name(d)))
                if (g_str_has_suffix(name, ".json") && name[0] != '.')
                        g_hash_table_replace(name_to_path, g_strdup(name), g_build_filename(dir, name, NULL));
}

static gint rule_cmp(gconstpointer a, gconstpointer b)
{
        const Rule *x = *(Rule * const *) a, *y = *(Rule * const *) b;

        if (x->priority != y->priority)
                return x->priority > y->priority ? -1 : 1;
        return x->order < y->order ? -1 : x->order > y->order;
}

static gint str_cmp(gconstpointer a, gconstpointer b)
{
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

VfmigRuleSet *vfmig_rules_load(const char *vendor_dir, const char *admin_dir, GPtrArray **errors)
{
        g_autoptr(GHashTable) paths = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_autoptr(GPtrArray) errs = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GPtrArray) names = g_ptr_array_new();
        g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
        VfmigRuleSet *rs = g_new0(VfmigRuleSet, 1);
        GHashTableIter it;
        gpointer k;
        guint order = 0;

        rs->n_ref = 1;
        rs->rules = g_ptr_array_new_with_free_func((GDestroyNotify) rule_free);
        rs->files = g_ptr_array_new_with_free_func(g_free);
        rs->ids = g_hash_table_new(g_str_hash, g_str_equal);

        list_dir(vendor_dir, paths, errs);
        list_dir(admin_dir, paths, errs);   /* same name: the admin's path replaces the vendor's */
        g_hash_table_iter_init(&it, paths);
        while (g_hash_table_iter_next(&it, &k, NULL))
                g_ptr_array_add(names, k);
        g_ptr_array_sort(names, str_cmp);

        for (guint i = 0; i < names->len; i++) {
                const char *path = g_hash_table_lookup(paths, names->pdata[i]);
                g_autoptr(GPtrArray) rules = g_ptr_array_new_with_free_func((GDestroyNotify) rule_free);
                g_autoptr(GError) err = NULL;
                g_autofree char *text = NULL;
                /* The path as messages, reasons and ExportMatrix show it: valid
                 * UTF-8 whatever bytes the file system holds (D-Bus strings
                 * must be UTF-8; a reply that is not fails to be sent). */
                g_autofree char *shown = g_filename_display_name(path);
                gsize len = 0;
                Ctx c = { .path = shown };

                if (!g_file_get_contents(path, &text, &len, &err)) {
                        g_ptr_array_add(errs, g_strdup_printf("%s: cannot read: %s", shown, err->message));
                        continue;
                }
                g_checksum_update(sum, (const guchar *) names->pdata[i], -1);
                g_checksum_update(sum, (const guchar *) "", 1);
                g_checksum_update(sum, (const guchar *) text, (gssize) len);
                if (len > RULES_FILE_MAX)
                        fail(&c, "(file)", "larger than %d bytes", RULES_FILE_MAX);
                else
                        parse_file(&c, text, len, rules);
                for (guint j = 0; !c.error && j < rules->len; j++) {
                        const Rule *r = rules->pdata[j];
                        const Rule *other = g_hash_table_lookup(rs->ids, r->id);
                        if (other)
                                c.error = g_strdup_printf("%s: rules[%u]: rule id \"%s\" is already defined in %s",
                                                          shown, j, r->id, other->file);
                }
                if (c.error) {
                        g_ptr_array_add(errs, c.error);
                        continue;
                }
                g_ptr_array_add(rs->files, g_strdup(shown));
                for (guint j = 0; j < rules->len; j++) {
                        Rule *r = rules->pdata[j];
                        r->file = g_ptr_array_index(rs->files, rs->files->len - 1);
                        r->order = order++;
                        g_hash_table_insert(rs->ids, r->id, r);
                }
                g_ptr_array_extend_and_steal(rs->rules, g_steal_pointer(&rules));
        }
        g_ptr_array_sort(rs->rules, rule_cmp);
        g_ptr_array_add(rs->files, NULL);
        for (guint i = 0; i < errs->len; i++)
                g_checksum_update(sum, (const guchar *) errs->pdata[i], -1);
        rs->fingerprint = g_strdup(g_checksum_get_string(sum));
        if (errors)
                *errors = g_steal_pointer(&errs);
        return rs;
}

/* ---- matching ----------------------------------------------------------- */

static bool idset_has(const IdSet *s, guint v)
{
        if (s->ranged)
                return v >= s->min && v <= s->max;
        if (!s->ids)
                return true;
        for (guint i = 0; i < s->ids->len; i++)
                if (g_array_index(s->ids, guint16, i) == v)
                        return true;
        return false;
}

static const char *attribute(const VfmigDevice *dev, const VfmigDevice *parent, const char *name)
{
        const char *v = g_hash_table_lookup(dev->attributes, name);

        if (!v && parent)
                v = g_hash_table_lookup(parent->attributes, name);
        return v;
}

static bool rule_matches(const Rule *r, const VfmigDevice *dev, const VfmigDevice *parent)
{
        const Match *m = &r->match;

        if (m->bus >= 0 && (int) dev->kind != m->bus)
                return false;
        if (m->driver && fnmatch(m->driver, dev->driver ? dev->driver : "", 0) != 0)
                return false;
        if (!idset_has(&m->vendor, dev->vendor_id) || !idset_has(&m->device, dev->device_id) ||
            !idset_has(&m->subvendor, dev->subsystem_vendor_id) ||
            !idset_has(&m->subdevice, dev->subsystem_device_id) || !idset_has(&m->revision, dev->revision))
                return false;
        if (m->mdev_type && fnmatch(m->mdev_type, dev->mdev_type ? dev->mdev_type : "", 0) != 0)
                return false;
        if (m->parent_driver) {
                /* The kernel names an mdev type "<parent driver>-<name>". */
                if (parent && parent->driver && *parent->driver) {
                        if (strcmp(parent->driver, m->parent_driver) != 0)
                                return false;
                } else {
                        size_t n = strlen(m->parent_driver);
                        if (!dev->mdev_type || strncmp(dev->mdev_type, m->parent_driver, n) != 0 ||
                            dev->mdev_type[n] != '-')
                                return false;
                }
        }
        if (m->attributes) {
                GHashTableIter it;
                gpointer k, v;
                g_hash_table_iter_init(&it, m->attributes);
                while (g_hash_table_iter_next(&it, &k, &v)) {
                        const char *a = attribute(dev, parent, k);
                        if (!a || fnmatch(v, a, 0) != 0)
                                return false;
                }
        }
        return true;
}

const Rule *compat_find_rule(const VfmigRuleSet *rs, const VfmigDevice *dev, const VfmigDevice *parent)
{
        for (guint i = 0; i < rs->rules->len; i++)
                if (rule_matches(rs->rules->pdata[i], dev, parent))
                        return rs->rules->pdata[i];
        return NULL;
}

const char *vfmig_rules_match(const VfmigRuleSet *rs, const VfmigDevice *dev, const VfmigDevice *parent,
                              const char **file)
{
        const Rule *r = compat_find_rule(rs, dev, parent);

        if (file)
                *file = r ? r->file : NULL;
        return r ? r->id : NULL;
}

char *compat_rule_where(const Rule *r)
{
        return g_strdup_printf(" (rule %s in %s)", r->id, r->file);
}

/* ---- profiles ------------------------------------------------------------ */

static int export_value(const ExportAttr *x, const VfmigDevice *dev, const VfmigDevice *parent, char **ret,
                        char **why)
{
        g_autofree char *key = NULL;
        const char *v;
        int r = compat_expand(x->tmpl, dev, parent, NULL, &key, why);

        if (r < 0 || !x->table) {
                *ret = g_steal_pointer(&key);
                return r;
        }
        v = g_hash_table_lookup(x->table, key);
        if (!v)
                v = x->fallback;
        if (!v) {
                *why = g_strdup_printf("attribute \"%s\": \"%s\" is not in the rule's table", x->name, key);
                return -EINVAL;
        }
        *ret = g_strdup(v);
        return 0;
}

int compat_rule_profile(const Rule *r, const VfmigDevice *dev, const VfmigDevice *parent, uint64_t flags,
                        VfmigProfile **ret, char **why_not)
{
        g_autoptr(VfmigProfile) p = vfmig_profile_new();
        g_autofree char *where = compat_rule_where(r);
        g_autofree char *type = NULL, *why = NULL;
        int k;

        for (guint i = 0; i < r->exports->len; i++) {
                const ExportAttr *x = r->exports->pdata[i];
                char *v = NULL;
                if (export_value(x, dev, parent, &v, &why) < 0)
                        goto bad;
                g_hash_table_replace(p->attributes, g_strdup(x->name), v);
        }
        /* The type and version may use the exported attributes too. */
        if (compat_expand(r->type_tmpl, dev, parent, p->attributes, &type, &why) < 0 ||
            compat_expand(r->version_tmpl, dev, parent, p->attributes, &p->migration_version, &why) < 0)
                goto bad;
        p->format = VFMIG_PROFILE_FORMAT;
        p->migration_type = g_strdup_printf("%s:%s", r->ns, type);
        if (strlen(p->migration_type) > VFMIG_PROFILE_TYPE_MAX) {
                why = g_strdup("the migration type is too long");
                goto bad;
        }
        if (flags & VFMIG_COMPAT_FLAG_UNKNOWN)
                p->capabilities = r->caps_declared ? r->caps : VFMIG_CAP_STOP_COPY;
        else
                p->capabilities = (uint32_t) (flags & (VFMIG_CAP_STOP_COPY | VFMIG_CAP_P2P | VFMIG_CAP_PRE_COPY |
                                                       VFMIG_CAP_DMA_LOGGING));
        if (!(p->capabilities & VFMIG_CAP_STOP_COPY)) {
                if (why_not)
                        *why_not = g_strdup_printf("device %s does not support migration (no stop-copy)%s",
                                                   dev->name && *dev->name ? dev->name : "(to be created)", where);
                return -EOPNOTSUPP;
        }
        p->capabilities |= (uint32_t) (flags & VFMIG_COMPAT_FLAG_NEEDS_P2P);
        *ret = g_steal_pointer(&p);
        return 0;

bad:
        if (why_not)
                *why_not = g_strdup_printf("device %s: %s%s", dev->name && *dev->name ? dev->name : "(to be created)",
                                           why, where);
        k = -EINVAL;
        return k;
}

int vfmig_rules_profile_for(const VfmigRuleSet *rs, const VfmigDevice *dev, const VfmigDevice *parent,
                            uint64_t flags, VfmigProfile **ret, char **why_not)
{
        const Rule *r = compat_find_rule(rs, dev, parent);

        *ret = NULL;
        if (!r) {
                if (why_not)
                        *why_not = g_strdup_printf("no compatibility rule matches device %s (%s, driver %s, "
                                                   "%04x:%04x%s%s)",
                                                   dev->name && *dev->name ? dev->name : "(to be created)",
                                                   kind_name(dev->kind),
                                                   dev->driver && *dev->driver ? dev->driver : "none",
                                                   dev->vendor_id, dev->device_id,
                                                   dev->kind == VFMIG_DEVICE_MDEV ? ", type " : "",
                                                   dev->kind == VFMIG_DEVICE_MDEV ? dev->mdev_type : "");
                return -ENOENT;
        }
        return compat_rule_profile(r, dev, parent, flags, ret, why_not);
}
