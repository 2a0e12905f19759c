/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* stream-header.c — the HEADER record's JSON, both ways. */
#include <errno.h>

#include "stream-private.h"
#include "json-reader.h"

/*
 * {
 *   "format": "vfmig-stream", "version": 1,
 *   "device-count": N,
 *   "devices": [ { "index": 0, "profile": { ... }, "bytes-estimate": 123 }, ... ],
 *   "options": { "transport": "tls" | "plaintext", "precopy": true,
 *                "downtime-budget-ms": 300 }
 * }
 */

const char *vfmig_stream_record_type_to_string(unsigned type)
{
        static const char *const names[] = {
                [VFMIG_STREAM_REC_HEADER] = "header",
                [VFMIG_STREAM_REC_PRECOPY] = "precopy",
                [VFMIG_STREAM_REC_STOPCOPY] = "stopcopy",
                [VFMIG_STREAM_REC_DEVICE_END] = "device-end",
                [VFMIG_STREAM_REC_END] = "end",
                [VFMIG_STREAM_REC_ABORT] = "abort",
                [VFMIG_STREAM_REC_PROGRESS] = "progress",
                [VFMIG_STREAM_REC_RESULT] = "result",
                [VFMIG_STREAM_REC_COMMIT] = "commit",
        };

        return type < G_N_ELEMENTS(names) ? names[type] : NULL;
}

void vfmig_stream_header_clear(VfmigStreamHeader *h)
{
        for (unsigned i = 0; i < VFMIG_STREAM_MAX_DEVICES; i++)
                g_clear_pointer(&h->devices[i].profile, json_object_unref);
        memset(h, 0, sizeof(*h));
}

void vfmig_stream_header_set_profile(VfmigStreamHeader *h, unsigned i, JsonObject *profile)
{
        g_return_if_fail(i < VFMIG_STREAM_MAX_DEVICES);
        if (profile)
                json_object_ref(profile);
        g_clear_pointer(&h->devices[i].profile, json_object_unref);
        h->devices[i].profile = profile;
}

int vfmig_stream_header_to_json(const VfmigStreamHeader *h, char **ret)
{
        g_autoptr(JsonBuilder) b = json_builder_new();
        g_autoptr(JsonGenerator) gen = json_generator_new();
        g_autoptr(JsonNode) root = NULL;

        if (h->n_devices < 1 || h->n_devices > VFMIG_STREAM_MAX_DEVICES)
                return -EINVAL;
        for (unsigned i = 0; i < h->n_devices; i++)
                if (!h->devices[i].profile)
                        return -EINVAL;

        json_builder_begin_object(b);
        json_builder_set_member_name(b, "format");
        json_builder_add_string_value(b, "vfmig-stream");
        json_builder_set_member_name(b, "version");
        json_builder_add_int_value(b, VFMIG_STREAM_VERSION);
        json_builder_set_member_name(b, "device-count");
        json_builder_add_int_value(b, h->n_devices);
        json_builder_set_member_name(b, "devices");
        json_builder_begin_array(b);
        for (unsigned i = 0; i < h->n_devices; i++) {
                JsonNode *n = json_node_new(JSON_NODE_OBJECT);

                json_node_set_object(n, h->devices[i].profile);
                json_builder_begin_object(b);
                json_builder_set_member_name(b, "index");
                json_builder_add_int_value(b, i);
                json_builder_set_member_name(b, "profile");
                json_builder_add_value(b, n);
                json_builder_set_member_name(b, "bytes-estimate");
                json_builder_add_int_value(b, (gint64) MIN(h->devices[i].bytes_estimate, (uint64_t) G_MAXINT64));
                json_builder_end_object(b);
        }
        json_builder_end_array(b);
        json_builder_set_member_name(b, "options");
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "transport");
        json_builder_add_string_value(b, h->tls ? "tls" : "plaintext");
        json_builder_set_member_name(b, "precopy");
        json_builder_add_boolean_value(b, h->precopy);
        json_builder_set_member_name(b, "downtime-budget-ms");
        json_builder_add_int_value(b, (gint64) MIN(h->downtime_budget_ms, (uint64_t) G_MAXINT64));
        json_builder_end_object(b);
        json_builder_end_object(b);

        root = json_builder_get_root(b);
        json_generator_set_root(gen, root);
        *ret = json_generator_to_data(gen, NULL);
        if (strlen(*ret) > VFMIG_STREAM_MAX_HEADER) {
                g_clear_pointer(ret, g_free);
                return -E2BIG;
        }
        return 0;
}

static int fail(char **ret_error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int fail(char **ret_error, const char *fmt, ...)
{
        va_list ap;

        if (ret_error) {
                va_start(ap, fmt);
                *ret_error = g_strdup_vprintf(fmt, ap);
                va_end(ap);
        }
        return -EBADMSG;
}

/* An integer member: absent -> def (or an error when required), else a
 * non-negative integer. */
static bool get_uint(JsonObject *o, const char *name, bool required, uint64_t def, uint64_t *ret)
{
        JsonNode *n = json_object_get_member(o, name);

        if (!n) {
                *ret = def;
                return !required;
        }
        if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64 ||
            json_node_get_int(n) < 0)
                return false;
        *ret = (uint64_t) json_node_get_int(n);
        return true;
}

int vfmig_stream_header_from_json(const char *json, size_t len, VfmigStreamHeader *ret, char **ret_error)
{
        g_autoptr(JsonParser) parser = json_parser_new_immutable();
        g_autoptr(GError) err = NULL;
        g_autofree char *why = NULL;
        JsonObject *root, *opts = NULL;
        JsonArray *devs;
        JsonNode *n;
        uint64_t v, count, budget = 0;
        bool tls = true, precopy = false;
        VfmigStreamHeader h = {};

        if (!g_utf8_validate(json, (gssize) len, NULL) || memchr(json, 0, len))
                return fail(ret_error, "header is not UTF-8 text");
        if (!jv_check(json, len, &why))
                return fail(ret_error, "header is not JSON: %s", why);
        if (!json_parser_load_from_data(parser, json, (gssize) len, &err))
                return fail(ret_error, "header is not JSON: %s", err->message);
        n = json_parser_get_root(parser);
        if (!n || !JSON_NODE_HOLDS_OBJECT(n))
                return fail(ret_error, "header is not a JSON object");
        root = json_node_get_object(n);

        n = json_object_get_member(root, "format");
        if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING ||
            !g_str_equal(json_node_get_string(n), "vfmig-stream"))
                return fail(ret_error, "header \"format\" is not \"vfmig-stream\"");
        if (!get_uint(root, "version", true, 0, &v) || v != VFMIG_STREAM_VERSION)
                return fail(ret_error, "header \"version\" is not %d", VFMIG_STREAM_VERSION);
        if (!get_uint(root, "device-count", true, 0, &count) || count < 1 || count > VFMIG_STREAM_MAX_DEVICES)
                return fail(ret_error, "header \"device-count\" is not 1..%u", VFMIG_STREAM_MAX_DEVICES);

        n = json_object_get_member(root, "devices");
        if (!n || !JSON_NODE_HOLDS_ARRAY(n))
                return fail(ret_error, "header \"devices\" is not an array");
        devs = json_node_get_array(n);
        if (json_array_get_length(devs) != count)
                return fail(ret_error, "header \"devices\" has %u entries, \"device-count\" says %" PRIu64,
                            json_array_get_length(devs), count);

        n = json_object_get_member(root, "options");
        if (n) {
                if (!JSON_NODE_HOLDS_OBJECT(n))
                        return fail(ret_error, "header \"options\" is not an object");
                opts = json_node_get_object(n);
        }
        if (opts) {
                n = json_object_get_member(opts, "transport");
                if (n) {
                        const char *t = JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
                                ? json_node_get_string(n) : NULL;

                        if (g_strcmp0(t, "tls") == 0)
                                tls = true;
                        else if (g_strcmp0(t, "plaintext") == 0)
                                tls = false;
                        else
                                return fail(ret_error, "header option \"transport\" is not \"tls\" or \"plaintext\"");
                }
                n = json_object_get_member(opts, "precopy");
                if (n) {
                        if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_BOOLEAN)
                                return fail(ret_error, "header option \"precopy\" is not a boolean");
                        precopy = json_node_get_boolean(n);
                }
                if (!get_uint(opts, "downtime-budget-ms", false, 0, &budget))
                        return fail(ret_error, "header option \"downtime-budget-ms\" is not a non-negative integer");
        }

        for (unsigned i = 0; i < count; i++) {
                JsonNode *e = json_array_get_element(devs, i);
                JsonObject *d;

                if (!JSON_NODE_HOLDS_OBJECT(e))
                        goto bad_device;
                d = json_node_get_object(e);
                if (!get_uint(d, "index", true, 0, &v) || v != i)
                        goto bad_device;
                n = json_object_get_member(d, "profile");
                if (!n || !JSON_NODE_HOLDS_OBJECT(n))
                        goto bad_device;
                if (!get_uint(d, "bytes-estimate", false, 0, &v))
                        goto bad_device;
                h.devices[i].profile = json_object_ref(json_node_get_object(n));
                h.devices[i].bytes_estimate = v;
                continue;
bad_device:
                vfmig_stream_header_clear(&h);
                return fail(ret_error, "header device entry %u is malformed (needs \"index\": %u and an object \"profile\")", i, i);
        }

        h.n_devices = (unsigned) count;
        h.tls = tls;
        h.precopy = precopy;
        h.downtime_budget_ms = budget;
        *ret = h;
        return 0;
}

char *stream_reason_sanitize(const char *reason, size_t len)
{
        g_autofree char *valid = g_utf8_make_valid(reason ? reason : "", reason ? (gssize) len : 0);
        const char *end;

        if (strlen(valid) <= VFMIG_STREAM_MAX_REASON)
                return g_steal_pointer(&valid);
        end = g_utf8_find_prev_char(valid, valid + VFMIG_STREAM_MAX_REASON + 1);
        return g_strndup(valid, (gsize) (end - valid));
}
