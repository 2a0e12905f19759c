/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests for migration profiles: JSON and typed-setter paths share one
 * validation; every malformed field is refused by name and leaves the
 * profile unchanged; unknown keys are ignored. */
#include <errno.h>
#include <string.h>

#include <glib.h>

#include "json-reader.h"
#include "profile.h"

static const char good[] =
        "{\"format\": 1, \"migration-type\": \"pci-15b3:mlx5-cx7\", \"migration-version\": \"28.39.1002\","
        " \"attributes\": {\"fw_version\": \"28.39.1002\", \"device_id\": \"0x101e\"},"
        " \"capabilities\": [\"stop-copy\", \"p2p\", \"needs-p2p\"], \"state-size\": 4194304,"
        " \"source-host\": \"sim-host-a\", \"source-device\": \"0000:17:00.1\", \"future-key\": [1, {}]}";

static void test_json_roundtrip(void)
{
        g_autoptr(VfmigProfile) p = NULL, q = NULL;
        g_autofree char *error = NULL, *json = NULL;

        g_assert_cmpint(vfmig_profile_from_json(good, -1, &p, &error), ==, 0);
        g_assert_null(error);
        g_assert_cmpuint(p->format, ==, 1);
        g_assert_cmpstr(p->migration_type, ==, "pci-15b3:mlx5-cx7");
        g_assert_cmpstr(p->migration_version, ==, "28.39.1002");
        g_assert_cmpstr(g_hash_table_lookup(p->attributes, "fw_version"), ==, "28.39.1002");
        g_assert_cmpuint(g_hash_table_size(p->attributes), ==, 2);
        g_assert_cmphex(p->capabilities, ==, VFMIG_CAP_STOP_COPY | VFMIG_CAP_P2P | VFMIG_CAP_NEEDS_P2P);
        g_assert_true(p->has_state_size);
        g_assert_cmpuint(p->state_size, ==, 4194304);
        g_assert_cmpstr(p->source_host, ==, "sim-host-a");
        g_assert_cmpstr(p->source_device, ==, "0000:17:00.1");

        json = vfmig_profile_to_json(p);
        g_assert_nonnull(strstr(json, "\"needs-p2p\""));
        g_assert_cmpint(vfmig_profile_from_json(json, -1, &q, &error), ==, 0);
        g_assert_true(vfmig_profile_equal(p, q));
        g_free(q->migration_version);
        q->migration_version = g_strdup("28.41.1000");
        g_assert_false(vfmig_profile_equal(p, q));
}

/* Each row: a JSON profile that must be refused, and what the error must say. */
static const struct {
        const char *json;
        const char *fragment;
} bad_profiles[] = {
        { "", "not valid JSON: 1:0: Parse error: unexpected end of file" },
        { "[1]", "must be a JSON object" },
        { "{\"format\": 1, \"migration-type\": \"t\"", "not valid JSON" },
        { "{\"migration-type\": \"t\", \"migration-version\": \"v\"}", "field \"format\": is required" },
        { "{\"format\": 2, \"migration-type\": \"t\", \"migration-version\": \"v\"}", "field \"format\": format 2 is not supported" },
        { "{\"format\": -1, \"migration-type\": \"t\", \"migration-version\": \"v\"}", "field \"format\": must be an unsigned 32-bit integer (u), not a negative number" },
        { "{\"format\": \"1\", \"migration-type\": \"t\", \"migration-version\": \"v\"}", "field \"format\": must be an unsigned" },
        { "{\"format\": 1, \"migration-version\": \"v\"}", "field \"migration-type\": is required" },
        { "{\"format\": 1, \"migration-type\": \"t\"}", "field \"migration-version\": is required" },
        { "{\"format\": 1, \"migration-type\": \"\", \"migration-version\": \"v\"}", "field \"migration-type\": is empty" },
        { "{\"format\": 1, \"migration-type\": 7, \"migration-version\": \"v\"}", "field \"migration-type\": must be a string" },
        { "{\"format\": 1, \"migration-type\": \"a\\u0001b\", \"migration-version\": \"v\"}", "field \"migration-type\": contains a control" },
        { "{\"format\": 1, \"migration-type\": \"t\", \"migration-version\": \"v\\n\"}", "field \"migration-version\": contains a control" },
        { "{\"format\": 1, \"migration-type\": \"t\", \"migration-version\": \"v\", \"attributes\": [\"a\"]}", "field \"attributes\": must be a string→string map" },
        { "{\"format\": 1, \"migration-type\": \"t\", \"migration-version\": \"v\", \"attributes\": {\"a b\": \"x\"}}", "field \"attributes\": name \"a b\"" },
        { "{\"format\": 1, \"migration-type\": \"t\", \"migration-version\": \"v\", \"attributes\": {\"a\": 1}}", "field \"attributes\": must be a string→string map" },
        { "{\"format\": 1, \"migration-type\": \"t\", \"migration-version\": \"v\", \"attributes\": {\"a\": \"\"}}", "field \"attributes\": value of \"a\" is empty" },
        { "{\"format\": 1, \"migration-type\": \"t\", \"migration-version\": \"v\", \"capabilities\": [\"warp\"]}", "field \"capabilities\": unknown capability \"warp\"" },
        { "{\"format\": 1, \"migration-type\": \"t\", \"migration-version\": \"v\", \"capabilities\": [\"p2p\", \"p2p\"]}", "field \"capabilities\": \"p2p\" appears twice" },
        { "{\"format\": 1, \"migration-type\": \"t\", \"migration-version\": \"v\", \"capabilities\": \"p2p\"}", "field \"capabilities\": must be a list" },
        { "{\"format\": 1, \"migration-type\": \"t\", \"migration-version\": \"v\", \"state-size\": -5}", "field \"state-size\": must be an unsigned 64-bit integer (t), not a negative number" },
        { "{\"format\": 1, \"migration-type\": \"t\", \"migration-version\": \"v\", \"state-size\": 1.5}", "field \"state-size\": must be an unsigned 64-bit" },
        { "{\"format\": 1, \"migration-type\": \"t\", \"migration-version\": \"v\", \"source-host\": \"\"}", "field \"source-host\": is empty" },
        { "{\"format\": 1, \"migration-type\": \"t\", \"migration-version\": \"v\", \"source-device\": \"../x y\"}", "field \"source-device\": \"../x y\" is not a device name" },
        /* text after the value, or outside JSON: refused by jv_check()
         * before json-glib, which would leak a second value */
        { "{\"format\": 1}{\"format\": 1}", "not valid JSON: 1:" },
        { "9 [1]", "not valid JSON: 1:" },
        { "\"x{\" {}", "not valid JSON: 1:" },
        { "{\"a\": \"}\\\"{\"} []", "not valid JSON: 1:" },
        { "{\"a\": 1} x", "not valid JSON: 1:" },
        { "{\"format\": 1 /* { */}{\"b\": 2}", "not valid JSON: 1:" },
        { "{\"format\": '{'}{\"b\": 1}", "not valid JSON: 1:" },
        { "{\"format\": 0x1, \"migration-type\": \"t\", \"migration-version\": \"v\"}", "not valid JSON: 1:" },
        { "\"aq[u\"/:/{\"format\": 1}", "not valid JSON: 1:" },   /* found by fuzz-profile */
};

/* jv_check(), which every reader of outside JSON asks before json-glib:
 * one value, JSON's tokens and escapes, bounded depth. */
static void test_json_check(void)
{
        static const struct {
                const char *text;
                bool ok;
        } cases[] = {
                { "  {\"a\": [1, {\"b\": \"]}\"}, -2.5e+3, 0, 0.5, 1E9, true, false, null]} \n", true },
                { "[\"\\uD83D\\uDE00 \\u00e9 \\n\\\"\\/\"]", true },
                { "", false },
                { "{\"a\": 1}{\"b\": 2}", false },          /* json-glib leaks the second value */
                { "{\"a\": 1}\n\t [", false },
                { "1{}", false },
                { "true []", false },
                { "\"s\\\"{\"{}", false },
                { "{\"a\": 1} 9 {}", false },
                { "{\"a\": 1 /* { */}", false },              /* comments: not JSON */
                { "{\"a\": 'x'}", false },                   /* single quotes: not JSON */
                { "{\"a\": 0x10}", false },                  /* hexadecimal: not JSON */
                { "{\"a\": 017}", false },                   /* octal (json-glib reads 15): not JSON */
                { "[.5]", false },
                { "[1.]", false },
                { "[-]", false },
                { "[00]", false },
                { "'x'", false },
                { "{\"a\": tru}", false },
                /* escapes as JSON has them: json-glib reads a short \u or a
                 * lone surrogate on past the closing quote (found in review) */
                { "[\"\\uD800\",\"]{}\"]", false },
                { "[\"\\u1\",\"]{}\"]", false },
                { "[\"\\uD800\\u0041\"]", false },
                { "[\"\\uDC00\"]", false },
                { "[\"\\q\"]", false },
                { "[\"a\x01\"]", false },                  /* a raw control character */
                { "{\"a\": [1, 2}", false },
                { "[1 2]", false },
                { "{\"a\": \"unterminated", false },
                { "[[[[", false },
                { "[\"caf\xc3\"]", false },                /* not UTF-8 */
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *why = NULL;
                bool ok = jv_check(cases[i].text, strlen(cases[i].text), &why);

                if (ok != cases[i].ok)
                        g_error("case %zu (%s): got %d (%s)", i, cases[i].text, ok, why ? why : "");
                if (!ok)
                        g_assert_true(why && strstr(why, "Parse error"));
                else
                        g_assert_null(why);
        }
        /* nesting: 64 levels pass, 65 do not (json-glib recurses per level) */
        {
                g_autofree char *open64 = g_strnfill(64, '['), *close64 = g_strnfill(64, ']');
                g_autofree char *ok = g_strconcat(open64, close64, NULL);
                g_autofree char *deep = g_strnfill(100000, '[');
                g_assert_true(jv_check(ok, strlen(ok), NULL));
                g_assert_false(jv_check(deep, strlen(deep), NULL));
        }
        /* bounded by len; a NUL inside is refused; the text is not changed */
        g_assert_true(jv_check("{}{}", 2, NULL));
        g_assert_false(jv_check("{}\0{}", 5, NULL));
        {
                const char text[] = "{\"a\": \"x\"}";
                char copy[sizeof text];
                memcpy(copy, text, sizeof text);
                g_assert_true(jv_check(copy, strlen(copy), NULL));
                g_assert_cmpmem(copy, sizeof copy, text, sizeof text);
        }
}

static void test_bad_profiles(void)
{
        for (size_t i = 0; i < G_N_ELEMENTS(bad_profiles); i++) {
                g_autoptr(VfmigProfile) p = NULL;
                g_autofree char *error = NULL;

                g_test_message("row %zu: %s", i, bad_profiles[i].json);
                g_assert_cmpint(vfmig_profile_from_json(bad_profiles[i].json, -1, &p, &error), ==, -EINVAL);
                g_assert_null(p);
                g_assert_nonnull(error);
                if (!strstr(error, bad_profiles[i].fragment))
                        g_error("row %zu: error \"%s\" lacks \"%s\"", i, error, bad_profiles[i].fragment);
        }
}

static void test_too_long(void)
{
        g_autofree char *longtype = g_strnfill(VFMIG_PROFILE_TYPE_MAX + 1, 'x');
        g_autofree char *okay = g_strnfill(VFMIG_PROFILE_TYPE_MAX, 'x');
        g_autoptr(VfmigProfile) p = vfmig_profile_new();
        g_autofree char *error = NULL;
        VfmigValue v = { .type = VFMIG_VALUE_STRING, .str = longtype };

        g_assert_cmpint(vfmig_profile_set(p, "migration-type", &v, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error, "field \"migration-type\": is too long"));
        g_assert_null(p->migration_type);
        v.str = okay;
        g_assert_cmpint(vfmig_profile_set(p, "migration-type", &v, NULL), ==, 0);
        g_assert_cmpstr(p->migration_type, ==, okay);
}

/* The bus adapter's path: typed values, wrong D-Bus types refused by name. */
static void test_setter_types(void)
{
        g_autoptr(VfmigProfile) p = vfmig_profile_new();
        g_autofree char *error = NULL;
        const char *pairs[] = { "fw_version", "28.41.1000", NULL };
        const char *odd[] = { "fw_version", NULL };
        const char *caps[] = { "stop-copy", NULL };
        VfmigValue u = { .type = VFMIG_VALUE_U32, .u32 = 1 };
        VfmigValue t = { .type = VFMIG_VALUE_U64, .u64 = G_MAXUINT64 };
        VfmigValue s = { .type = VFMIG_VALUE_STRING, .str = "x" };
        VfmigValue a = { .type = VFMIG_VALUE_PAIRS, .strv = pairs };
        VfmigValue c = { .type = VFMIG_VALUE_STRV, .strv = caps };

        g_assert_cmpint(vfmig_profile_set(p, "format", &u, &error), ==, 0);
        g_assert_cmpint(vfmig_profile_set(p, "state-size", &t, &error), ==, 0);
        g_assert_cmpuint(p->state_size, ==, G_MAXUINT64);
        g_assert_cmpint(vfmig_profile_set(p, "attributes", &a, &error), ==, 0);
        g_assert_cmpstr(g_hash_table_lookup(p->attributes, "fw_version"), ==, "28.41.1000");
        g_assert_cmpint(vfmig_profile_set(p, "capabilities", &c, &error), ==, 0);
        g_assert_cmphex(p->capabilities, ==, VFMIG_CAP_STOP_COPY);

        /* Wrong types: named and refused, the field keeps its value. */
        g_assert_cmpint(vfmig_profile_set(p, "format", &t, &error), ==, -EINVAL);
        g_assert_cmpstr(error, ==, "field \"format\": must be an unsigned 32-bit integer (u), not t");
        g_assert_cmpuint(p->format, ==, 1);
        g_assert_cmpint(vfmig_profile_set(p, "state-size", &u, &error), ==, -EINVAL);
        g_assert_cmpstr(error, ==, "field \"state-size\": must be an unsigned 64-bit integer (t), not u");
        g_assert_cmpint(vfmig_profile_set(p, "attributes", &s, &error), ==, -EINVAL);
        g_assert_nonnull(strstr(error, "field \"attributes\""));
        a.strv = odd;
        g_assert_cmpint(vfmig_profile_set(p, "attributes", &a, &error), ==, -EINVAL);
        g_assert_cmpstr(error, ==, "field \"attributes\": entry \"fw_version\" has no value");
        g_assert_cmpstr(g_hash_table_lookup(p->attributes, "fw_version"), ==, "28.41.1000");
        g_assert_cmpint(vfmig_profile_set(p, "capabilities", &s, &error), ==, -EINVAL);
        g_assert_cmphex(p->capabilities, ==, VFMIG_CAP_STOP_COPY);
        g_assert_cmpint(vfmig_profile_set(p, "source-host", &u, &error), ==, -EINVAL);
        g_assert_cmpstr(error, ==, "field \"source-host\": must be a string (s), not u");
        g_assert_null(p->source_host);

        /* Unknown keys are ignored whatever their type. */
        g_assert_cmpint(vfmig_profile_set(p, "x-vendor-extra", &t, NULL), ==, 0);
        g_assert_cmpint(vfmig_profile_validate(p, &error), ==, -EINVAL);
        g_assert_cmpstr(error, ==, "field \"migration-type\": is required");
}

static void test_caps_text(void)
{
        g_autofree char *none = vfmig_caps_to_text(0);
        g_autofree char *two = vfmig_caps_to_text(VFMIG_CAP_P2P | VFMIG_CAP_STOP_COPY);

        g_assert_cmpstr(none, ==, "none");
        g_assert_cmpstr(two, ==, "stop-copy, p2p");
        g_assert_cmpuint(vfmig_cap_from_string("dma-logging"), ==, VFMIG_CAP_DMA_LOGGING);
        g_assert_cmpuint(vfmig_cap_from_string("DMA-logging"), ==, 0);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/compat/profile/json-roundtrip", test_json_roundtrip);
        g_test_add_func("/compat/profile/bad-fields", test_bad_profiles);
        g_test_add_func("/compat/profile/json-check", test_json_check);
        g_test_add_func("/compat/profile/too-long", test_too_long);
        g_test_add_func("/compat/profile/setter-types", test_setter_types);
        g_test_add_func("/compat/profile/caps-text", test_caps_text);
        return g_test_run();
}
