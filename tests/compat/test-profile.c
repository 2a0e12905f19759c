/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests for migration profiles: JSON and typed-setter paths share one
 * validation; every malformed field is refused by name and leaves the
 * profile unchanged; unknown keys are ignored. */
#include <errno.h>
#include <string.h>

#include <glib.h>

#include "json-guard.h"
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
        { "", "must be a JSON object" },
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
        /* text after the value, or outside JSON: refused before json-glib,
         * which would leak a second value (json-guard.h) */
        { "{\"format\": 1}{\"format\": 1}", "not valid JSON at byte 13" },
        { "9 [1]", "not valid JSON at byte 2" },
        { "\"x{\" {}", "not valid JSON at byte 5" },
        { "{\"a\": \"}\\\"{\"} []", "not valid JSON at byte 14" },
        { "{\"a\": 1} x", "not valid JSON at byte 9" },
        { "{\"format\": 1 /* { */}{\"b\": 2}", "not valid JSON at byte 13" },
        { "{\"format\": '{'}{\"b\": 1}", "not valid JSON at byte 11" },
        { "{\"format\": 0x1, \"migration-type\": \"t\", \"migration-version\": \"v\"}", "not valid JSON at byte 11" },
        { "\"aq[u\"/:/{\"format\": 1}", "not valid JSON at byte 6" },   /* found by fuzz-profile */
};

/* The guard alone: one JSON value, JSON's tokens and escapes, bounded depth. */
static void test_json_guard(void)
{
        static const struct {
                const char *text;
                bool one;
                size_t second;
        } cases[] = {
                { "", true, 0 },
                { "  {\"a\": [1, {\"b\": \"]}\"}, -2.5e+3, 0, 0.5, 1E9, true, false, null]} \n", true, 0 },
                { "{\"a\": 1}{\"b\": 2}", false, 8 },
                { "{\"a\": 1}\n\t [", false, 11 },
                { "1{}", false, 0 },                      /* "1{" is no number */
                { "true []", false, 5 },
                { "\"s\\\"{\"{}", false, 6 },
                { "{\"a\": 1} 9 {}", false, 9 },
                { "{\"a\": 1 /* { */}", false, 8 },       /* comments: not JSON */
                { "{\"a\": 'x'}", false, 6 },            /* single quotes: not JSON */
                { "{\"a\": 0x10}", false, 6 },           /* hexadecimal: not JSON */
                { "{\"a\": 017}", false, 6 },            /* octal (json-glib reads 15): not JSON */
                { "[.5]", false, 1 },
                { "[1.]", false, 1 },
                { "[-]", false, 1 },
                { "[00]", false, 1 },
                { "'x'", false, 0 },
                { "{\"a\": tru}", false, 6 },
                { "{\"a\": truex}", false, 6 },
                /* escapes as JSON has them: json-glib reads a short \u or a
                 * lone surrogate on past the closing quote (found in review) */
                { "[\"\\uD800\",\"]{}\"]", false, 2 },
                { "[\"\\u1\",\"]{}\"]", false, 2 },
                { "[\"\\uD800\\u0041\"]", false, 2 },
                { "[\"\\uDC00\"]", false, 2 },
                { "[\"\\q\"]", false, 2 },
                { "[\"a\x01\"]", false, 3 },            /* a raw control character */
                { "[\"\\uD83D\\uDE00 \\u00e9 \\n\\\"\\/\"]", true, 0 },
                { "{\"a\": [1, 2}", true, 0 },           /* unbalanced: json-glib's to refuse */
                { "[1 2]", true, 0 },                    /* grammar: json-glib's */
                { "{\"a\": \"unterminated", true, 0 },
                { "[[[[", true, 0 },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                size_t second = 0;
                bool one = vfmig_json_guard_one_value(cases[i].text, strlen(cases[i].text), &second);

                if (one != cases[i].one || (!one && second != cases[i].second))
                        g_error("case %zu (%s): got %d at %zu", i, cases[i].text, one, second);
        }
        /* nesting: 64 levels pass, 65 do not (json-glib recurses per level) */
        {
                g_autofree char *open = g_strnfill(64, '['), *close = g_strnfill(64, ']');
                g_autofree char *ok = g_strconcat(open, close, NULL);
                g_autofree char *deep = g_strnfill(100000, '[');
                size_t where = 0;
                g_assert_true(vfmig_json_guard_one_value(ok, strlen(ok), NULL));
                g_assert_false(vfmig_json_guard_one_value(deep, strlen(deep), &where));
                g_assert_cmpuint(where, ==, 64);
        }
        /* bounded by len: what follows is not looked at */
        g_assert_true(vfmig_json_guard_one_value("{}{}", 2, NULL));
        g_assert_true(vfmig_json_guard_one_value("\"x\"", 1, NULL));     /* an unended string */
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
        g_test_add_func("/compat/profile/json-guard", test_json_guard);
        g_test_add_func("/compat/profile/too-long", test_too_long);
        g_test_add_func("/compat/profile/setter-types", test_setter_types);
        g_test_add_func("/compat/profile/caps-text", test_caps_text);
        return g_test_run();
}
