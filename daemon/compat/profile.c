/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "profile.h"
#include "json-reader.h"

static const char *const cap_names[] = {
        "stop-copy", "p2p", "pre-copy", "dma-logging", "needs-p2p",
};

uint32_t vfmig_cap_from_string(const char *s)
{
        for (size_t i = 0; s && i < G_N_ELEMENTS(cap_names); i++)
                if (strcmp(s, cap_names[i]) == 0)
                        return 1u << i;
        return 0;
}

char **vfmig_caps_to_strv(uint32_t caps)
{
        GPtrArray *a = g_ptr_array_new();

        for (size_t i = 0; i < G_N_ELEMENTS(cap_names); i++)
                if (caps & (1u << i))
                        g_ptr_array_add(a, g_strdup(cap_names[i]));
        g_ptr_array_add(a, NULL);
        return (char **) g_ptr_array_free(a, false);
}

char *vfmig_caps_to_text(uint32_t caps)
{
        g_auto(GStrv) v = vfmig_caps_to_strv(caps);

        return v[0] ? g_strjoinv(", ", v) : g_strdup("none");
}

VfmigProfile *vfmig_profile_new(void)
{
        VfmigProfile *p = g_new0(VfmigProfile, 1);

        p->attributes = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        return p;
}

void vfmig_profile_free(VfmigProfile *p)
{
        if (!p)
                return;
        g_free(p->migration_type);
        g_free(p->migration_version);
        g_hash_table_unref(p->attributes);
        g_free(p->source_host);
        g_free(p->source_device);
        g_free(p);
}

VfmigProfile *vfmig_profile_copy(const VfmigProfile *p)
{
        VfmigProfile *c = vfmig_profile_new();
        GHashTableIter it;
        gpointer k, v;

        c->format = p->format;
        c->migration_type = g_strdup(p->migration_type);
        c->migration_version = g_strdup(p->migration_version);
        g_hash_table_iter_init(&it, p->attributes);
        while (g_hash_table_iter_next(&it, &k, &v))
                g_hash_table_replace(c->attributes, g_strdup(k), g_strdup(v));
        c->capabilities = p->capabilities;
        c->has_state_size = p->has_state_size;
        c->state_size = p->state_size;
        c->source_host = g_strdup(p->source_host);
        c->source_device = g_strdup(p->source_device);
        return c;
}

bool vfmig_profile_equal(const VfmigProfile *a, const VfmigProfile *b)
{
        GHashTableIter it;
        gpointer k, v;

        if (a->format != b->format || g_strcmp0(a->migration_type, b->migration_type) != 0 ||
            g_strcmp0(a->migration_version, b->migration_version) != 0 ||
            a->capabilities != b->capabilities || a->has_state_size != b->has_state_size ||
            (a->has_state_size && a->state_size != b->state_size) ||
            g_strcmp0(a->source_host, b->source_host) != 0 ||
            g_strcmp0(a->source_device, b->source_device) != 0 ||
            g_hash_table_size(a->attributes) != g_hash_table_size(b->attributes))
                return false;
        g_hash_table_iter_init(&it, a->attributes);
        while (g_hash_table_iter_next(&it, &k, &v))
                if (g_strcmp0(v, g_hash_table_lookup(b->attributes, k)) != 0)
                        return false;
        return true;
}

/* ---- validation --------------------------------------------------------- */

static int fail(char **error, const char *key, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int fail(char **error, const char *key, const char *fmt, ...)
{
        g_autofree char *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        if (error) {
                g_free(*error);
                *error = g_strdup_printf("field \"%s\": %s", key, msg);
        }
        return -EINVAL;
}

/* Printable ASCII, 1..max bytes; *why says what is wrong otherwise. */
static bool printable(const char *s, size_t max, const char **why)
{
        size_t n = 0;

        for (; s[n]; n++) {
                if (n >= max) {
                        *why = "is too long";
                        return false;
                }
                if ((unsigned char) s[n] < 0x20 || (unsigned char) s[n] > 0x7e) {
                        *why = "contains a control or non-ASCII character";
                        return false;
                }
        }
        if (n == 0) {
                *why = "is empty";
                return false;
        }
        return true;
}

static bool attr_name_ok(const char *s)
{
        size_t n = 0;

        for (; s[n]; n++)
                if (n >= VFMIG_PROFILE_ATTR_NAME_MAX ||
                    !(g_ascii_isalnum(s[n]) || strchr("_.:/-", s[n])))
                        return false;
        return n > 0;
}

static bool device_name_ok(const char *s)
{
        size_t n = 0;

        for (; s[n]; n++)
                if (n >= VFMIG_PROFILE_DEVICE_MAX || !(g_ascii_isalnum(s[n]) || strchr(":._-", s[n])))
                        return false;
        return n > 0;
}

static const char *type_name(VfmigValueType t)
{
        switch (t) {
        case VFMIG_VALUE_U32: return "u";
        case VFMIG_VALUE_U64: return "t";
        case VFMIG_VALUE_INT64: return "an integer";
        case VFMIG_VALUE_STRING: return "s";
        case VFMIG_VALUE_STRV: return "as";
        case VFMIG_VALUE_PAIRS: return "a{ss}";
        default: return "another type";
        }
}

static int set_string(char **field, const char *key, const VfmigValue *v, size_t max, char **error)
{
        const char *why;

        if (v->type != VFMIG_VALUE_STRING || !v->str)
                return fail(error, key, "must be a string (s), not %s", type_name(v->type));
        if (!printable(v->str, max, &why))
                return fail(error, key, "%s (at most %zu printable ASCII characters)", why, max);
        g_free(*field);
        *field = g_strdup(v->str);
        return 0;
}

static int set_attributes(VfmigProfile *p, const char *key, const VfmigValue *v, char **error)
{
        const char *why;
        size_t i;

        if (v->type != VFMIG_VALUE_PAIRS || !v->strv)
                return fail(error, key, "must be a string→string map (a{ss}), not %s", type_name(v->type));
        /* Everything is checked before p changes; at most 64 entries, so the
         * duplicate check compares with the earlier names directly. */
        for (i = 0; v->strv[i]; i += 2) {
                const char *name = v->strv[i], *value = v->strv[i + 1];

                if (!value)
                        return fail(error, key, "entry \"%s\" has no value", name);
                if (i / 2 >= VFMIG_PROFILE_ATTRS_MAX)
                        return fail(error, key, "more than %d entries", VFMIG_PROFILE_ATTRS_MAX);
                if (!attr_name_ok(name))
                        return fail(error, key, "name \"%.64s\" is not 1..%d characters of [A-Za-z0-9_.:/-]",
                                    name, VFMIG_PROFILE_ATTR_NAME_MAX);
                if (!printable(value, VFMIG_PROFILE_ATTR_VALUE_MAX, &why))
                        return fail(error, key, "value of \"%s\" %s (at most %d printable ASCII characters)",
                                    name, why, VFMIG_PROFILE_ATTR_VALUE_MAX);
                for (size_t j = 0; j < i; j += 2)
                        if (strcmp(v->strv[j], name) == 0)
                                return fail(error, key, "\"%s\" appears twice", name);
        }
        g_hash_table_remove_all(p->attributes);
        for (i = 0; v->strv[i]; i += 2)
                g_hash_table_insert(p->attributes, g_strdup(v->strv[i]), g_strdup(v->strv[i + 1]));
        return 0;
}

static int set_capabilities(VfmigProfile *p, const char *key, const VfmigValue *v, char **error)
{
        uint32_t caps = 0;

        if (v->type != VFMIG_VALUE_STRV || !v->strv)
                return fail(error, key, "must be a list of strings (as), not %s", type_name(v->type));
        for (size_t i = 0; v->strv[i]; i++) {
                uint32_t c = vfmig_cap_from_string(v->strv[i]);
                const char *why;

                if (!c) {
                        if (!printable(v->strv[i], 32, &why))
                                return fail(error, key, "entry %zu %s", i, why);
                        return fail(error, key, "unknown capability \"%s\" (known: stop-copy, p2p, "
                                    "pre-copy, dma-logging, needs-p2p)", v->strv[i]);
                }
                if (caps & c)
                        return fail(error, key, "\"%s\" appears twice", v->strv[i]);
                caps |= c;
        }
        p->capabilities = caps;
        return 0;
}

int vfmig_profile_set(VfmigProfile *p, const char *key, const VfmigValue *v, char **error)
{
        if (!key)
                return -EINVAL;
        if (strcmp(key, "format") == 0) {
                uint64_t f;
                if (v->type == VFMIG_VALUE_U32)
                        f = v->u32;
                else if (v->type == VFMIG_VALUE_INT64 && v->i64 >= 0)
                        f = (uint64_t) v->i64;
                else
                        return fail(error, key, "must be an unsigned 32-bit integer (u), not %s",
                                    v->type == VFMIG_VALUE_INT64 ? "a negative number" : type_name(v->type));
                if (f != VFMIG_PROFILE_FORMAT)
                        return fail(error, key, "format %" G_GUINT64_FORMAT " is not supported (this "
                                    "version reads format %d)", f, VFMIG_PROFILE_FORMAT);
                p->format = (uint32_t) f;
                return 0;
        }
        if (strcmp(key, "migration-type") == 0)
                return set_string(&p->migration_type, key, v, VFMIG_PROFILE_TYPE_MAX, error);
        if (strcmp(key, "migration-version") == 0)
                return set_string(&p->migration_version, key, v, VFMIG_PROFILE_VERSION_MAX, error);
        if (strcmp(key, "attributes") == 0)
                return set_attributes(p, key, v, error);
        if (strcmp(key, "capabilities") == 0)
                return set_capabilities(p, key, v, error);
        if (strcmp(key, "state-size") == 0) {
                if (v->type == VFMIG_VALUE_U64)
                        p->state_size = v->u64;
                else if (v->type == VFMIG_VALUE_INT64 && v->i64 >= 0)
                        p->state_size = (uint64_t) v->i64;
                else
                        return fail(error, key, "must be an unsigned 64-bit integer (t), not %s",
                                    v->type == VFMIG_VALUE_INT64 ? "a negative number" : type_name(v->type));
                p->has_state_size = true;
                return 0;
        }
        if (strcmp(key, "source-host") == 0)
                return set_string(&p->source_host, key, v, VFMIG_PROFILE_HOST_MAX, error);
        if (strcmp(key, "source-device") == 0) {
                if (v->type == VFMIG_VALUE_STRING && v->str && !device_name_ok(v->str))
                        return fail(error, key, "\"%.64s\" is not a device name (1..%d characters of "
                                    "[A-Za-z0-9:._-])", v->str, VFMIG_PROFILE_DEVICE_MAX);
                return set_string(&p->source_device, key, v, VFMIG_PROFILE_DEVICE_MAX, error);
        }
        return 0;   /* unknown keys are ignored: newer peers may send more */
}

int vfmig_profile_validate(const VfmigProfile *p, char **error)
{
        if (p->format != VFMIG_PROFILE_FORMAT)
                return fail(error, "format", "is required (must be %d)", VFMIG_PROFILE_FORMAT);
        if (!p->migration_type)
                return fail(error, "migration-type", "is required");
        if (!p->migration_version)
                return fail(error, "migration-version", "is required");
        return 0;
}

/* ---- JSON --------------------------------------------------------------- */

/* Convert one JSON member into a VfmigValue; the strings point into node or
 * into *keep (freed by the caller). */
static void json_to_value(JsonNode *node, VfmigValue *v, GPtrArray *keep)
{
        v->type = VFMIG_VALUE_OTHER;
        if (JSON_NODE_HOLDS_VALUE(node)) {
                GType t = json_node_get_value_type(node);
                if (t == G_TYPE_INT64) {
                        v->type = VFMIG_VALUE_INT64;
                        v->i64 = json_node_get_int(node);
                } else if (t == G_TYPE_STRING) {
                        v->type = VFMIG_VALUE_STRING;
                        v->str = json_node_get_string(node);
                }
        } else if (JSON_NODE_HOLDS_ARRAY(node)) {
                JsonArray *a = json_node_get_array(node);
                guint n = json_array_get_length(a);
                const char **strv = g_new0(const char *, n + 1);

                g_ptr_array_add(keep, strv);
                for (guint i = 0; i < n; i++) {
                        JsonNode *e = json_array_get_element(a, i);
                        if (!JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_STRING)
                                return;   /* OTHER */
                        strv[i] = json_node_get_string(e);
                }
                v->type = VFMIG_VALUE_STRV;
                v->strv = strv;
        } else if (JSON_NODE_HOLDS_OBJECT(node)) {
                JsonObject *o = json_node_get_object(node);
                g_autoptr(GList) members = json_object_get_members(o);
                const char **pairs = g_new0(const char *, 2 * g_list_length(members) + 1);
                size_t i = 0;

                g_ptr_array_add(keep, pairs);
                for (GList *l = members; l; l = l->next) {
                        JsonNode *e = json_object_get_member(o, l->data);
                        if (!JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_STRING)
                                return;   /* OTHER */
                        pairs[i++] = l->data;
                        pairs[i++] = json_node_get_string(e);
                }
                v->type = VFMIG_VALUE_PAIRS;
                v->strv = pairs;
        }
}

int vfmig_profile_from_json_node(JsonNode *root, VfmigProfile **ret, char **error)
{
        g_autoptr(VfmigProfile) p = vfmig_profile_new();
        g_autoptr(GList) members = NULL;
        JsonObject *o;
        int r;

        *ret = NULL;
        if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
                if (error)
                        *error = g_strdup("profile: must be a JSON object");
                return -EINVAL;
        }
        o = json_node_get_object(root);
        members = json_object_get_members(o);
        for (GList *l = members; l; l = l->next) {
                g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(g_free);
                VfmigValue v = { 0 };

                json_to_value(json_object_get_member(o, l->data), &v, keep);
                r = vfmig_profile_set(p, l->data, &v, error);
                if (r < 0)
                        return r;
        }
        r = vfmig_profile_validate(p, error);
        if (r < 0)
                return r;
        *ret = g_steal_pointer(&p);
        return 0;
}

int vfmig_profile_from_json(const char *text, gssize len, VfmigProfile **ret, char **error)
{
        g_autoptr(JsonParser) parser = json_parser_new_immutable();
        g_autoptr(GError) err = NULL;
        g_autofree char *why = NULL;

        *ret = NULL;
        if (len < 0)
                len = (gssize) strlen(text);
        if (memchr(text, '\0', (size_t) len)) {
                if (error)
                        *error = g_strdup("profile: contains a NUL byte");
                return -EINVAL;
        }
        if (!jv_check(text, (size_t) len, &why)) {
                if (error)
                        *error = g_strdup_printf("profile: not valid JSON: %s", why);
                return -EINVAL;
        }
        if (!json_parser_load_from_data(parser, text, len, &err)) {
                if (error)
                        *error = g_strdup_printf("profile: not valid JSON: %s", err->message);
                return -EINVAL;
        }
        return vfmig_profile_from_json_node(json_parser_get_root(parser), ret, error);
}

static gint str_cmp(gconstpointer a, gconstpointer b)
{
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

void vfmig_profile_build_json(const VfmigProfile *p, JsonBuilder *b)
{
        g_autoptr(GPtrArray) keys = g_ptr_array_new();
        g_auto(GStrv) caps = vfmig_caps_to_strv(p->capabilities);
        GHashTableIter it;
        gpointer k;

        json_builder_begin_object(b);
        json_builder_set_member_name(b, "format");
        json_builder_add_int_value(b, p->format);
        json_builder_set_member_name(b, "migration-type");
        json_builder_add_string_value(b, p->migration_type ? p->migration_type : "");
        json_builder_set_member_name(b, "migration-version");
        json_builder_add_string_value(b, p->migration_version ? p->migration_version : "");
        json_builder_set_member_name(b, "attributes");
        json_builder_begin_object(b);
        g_hash_table_iter_init(&it, p->attributes);
        while (g_hash_table_iter_next(&it, &k, NULL))
                g_ptr_array_add(keys, k);
        g_ptr_array_sort(keys, str_cmp);
        for (guint i = 0; i < keys->len; i++) {
                json_builder_set_member_name(b, keys->pdata[i]);
                json_builder_add_string_value(b, g_hash_table_lookup(p->attributes, keys->pdata[i]));
        }
        json_builder_end_object(b);
        json_builder_set_member_name(b, "capabilities");
        json_builder_begin_array(b);
        for (size_t i = 0; caps[i]; i++)
                json_builder_add_string_value(b, caps[i]);
        json_builder_end_array(b);
        if (p->has_state_size) {
                json_builder_set_member_name(b, "state-size");
                /* JSON integers are signed 64-bit: a size above 2^63 cannot be written. */
                json_builder_add_int_value(b, (gint64) MIN(p->state_size, (uint64_t) G_MAXINT64));
        }
        if (p->source_host) {
                json_builder_set_member_name(b, "source-host");
                json_builder_add_string_value(b, p->source_host);
        }
        if (p->source_device) {
                json_builder_set_member_name(b, "source-device");
                json_builder_add_string_value(b, p->source_device);
        }
        json_builder_end_object(b);
}

char *vfmig_profile_to_json(const VfmigProfile *p)
{
        g_autoptr(JsonBuilder) b = json_builder_new();
        g_autoptr(JsonGenerator) gen = json_generator_new();
        g_autoptr(JsonNode) root = NULL;

        vfmig_profile_build_json(p, b);
        root = json_builder_get_root(b);
        json_generator_set_root(gen, root);
        json_generator_set_pretty(gen, true);
        return json_generator_to_data(gen, NULL);
}
