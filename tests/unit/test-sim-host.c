/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests for the simulated host parser: the shipped hosts load and are
 * filtered like a real host; malformed input is refused with a located
 * reason (the bus tests check the daemon's exit and message). */
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "sim-host.h"

static char *write_tmp(const char *text)
{
        g_autoptr(GError) err = NULL;
        char *path = NULL;
        int fd = g_file_open_tmp("vfmig-host-XXXXXX.json", &path, &err);

        g_assert_no_error(err);
        g_assert_true(g_file_set_contents(path, text, -1, &err));
        close(fd);
        return path;
}

static void test_shipped_host_a(void)
{
        g_autofree char *path = g_build_filename(VFMIG_SOURCE_DATADIR, "sim", "host-a.json", NULL);
        g_autoptr(SimHost) h = NULL;
        g_autoptr(Inventory) inv = inventory_new();
        g_autofree char *error = NULL;
        VfmigDevice *m;

        g_assert_cmpint(sim_host_load(path, &h, &error), ==, 0);
        g_assert_null(error);
        g_assert_cmpstr(h->host_name, ==, "sim-host-a");
        sim_host_populate(h, inv);
        /* mlx5_core PF, nvidia, i915 and nvme functions are not VFIO devices. */
        g_assert_null(inventory_get_device(inv, "0000:17:00.0"));
        g_assert_null(inventory_get_device(inv, "0000:5e:00.0"));
        g_assert_nonnull(inventory_get_device(inv, "0000:17:00.3"));
        g_assert_cmpuint(inventory_device_count(inv), ==, 8);
        /* An mdev carries its parent's PCI identity. */
        m = inventory_get_device(inv, "c3d1e9a0-7f2b-4e8d-b1a4-5e6f7a8b9c0d");
        g_assert_nonnull(m);
        g_assert_cmphex(m->vendor_id, ==, 0x8086);
        g_assert_cmphex(m->device_id, ==, 0x3e92);
        g_assert_cmpstr(m->mdev_type, ==, "i915-GVTg_V5_4");
        g_assert_nonnull(inventory_get_parent(inv, "0000:3b:00.0"));
}

static void expect_error(const char *json, const char *fragment)
{
        g_autofree char *path = write_tmp(json);
        g_autoptr(SimHost) h = NULL;
        g_autofree char *error = NULL;

        g_assert_cmpint(sim_host_load(path, &h, &error), ==, -EINVAL);
        g_assert_null(h);
        g_assert_nonnull(error);
        if (!strstr(error, fragment))
                g_error("error \"%s\" lacks \"%s\"", error, fragment);
        g_assert_nonnull(strstr(error, path));
        g_unlink(path);
}

static void test_malformed(void)
{
        expect_error("", "");
        expect_error("{", "Parse error");
        expect_error("[]", "top level must be an object");
        expect_error("{\"host\": 5, \"devices\": []}", "\"host\" must be a string");
        expect_error("{\"host\": \"h\"}", "missing required key \"devices\"");
        expect_error("{\"host\": \"h\", \"devices\": [5]}", "devices[0]: must be an object");
        expect_error("{\"host\": \"h\", \"devices\": [{\"name\": \"0000:01:00.0\", \"kind\": \"pci\", "
                     "\"driver\": \"vfio-pci\", \"vendor-id\": \"0x10de\"}]}",
                     "missing required key \"device-id\"");
        expect_error("{\"host\": \"h\", \"devices\": [], \"mdev-parents\": [{\"name\": \"0000:00:02.0\", "
                     "\"driver\": \"i915\", \"types\": []}]}",
                     "mdev-parents[0]: \"types\" must be a non-empty array");
        expect_error("{\"host\": \"h\", \"devices\": [], \"mdev-parents\": [{\"name\": \"0000:00:02.0\", "
                     "\"driver\": \"i915\", \"types\": [{\"id\": \"a\", \"device-api\": \"vfio-pci\"}, "
                     "{\"id\": \"a\", \"device-api\": \"vfio-pci\"}]}]}",
                     "type \"a\" listed twice");
        expect_error("{\"host\": \"h\", \"devices\": [{\"name\": \"0000:01:00.0\", \"kind\": \"pci\", "
                     "\"driver\": \"vfio-pci\", \"vendor-id\": \"0x10de\", \"device-id\": \"0x1\", "
                     "\"attributes\": {\"a/b\": \"x\"}}]}",
                     "attribute name \"a/b\" is not valid");
}

/* Devices with the same attributes as the one before share its table; any
 * difference (a value, the order, a name given twice) is a table of its own,
 * and a bad attribute after a good run of them is still refused. */
static void test_shared_attributes(void)
{
        static const char *const attrs[] = {
                "{\"fw\": \"1\", \"drv\": \"6.1\"}",
                "{\"fw\": \"1\", \"drv\": \"6.1\"}",
                "{\"fw\": \"2\", \"drv\": \"6.1\"}",
                "{\"drv\": \"6.1\", \"fw\": \"2\"}",
                "{\"drv\": 7, \"drv\": \"6.1\", \"fw\": \"2\"}",
                "{\"drv\": 8, \"drv\": \"6.1\", \"fw\": \"2\"}",
                "{}",
                "{}",
        };
        g_autoptr(GString) text = g_string_new("{\"host\": \"h\", \"devices\": [");
        g_autofree char *path = NULL, *error = NULL;
        g_autoptr(SimHost) h = NULL;
        GHashTable *t[G_N_ELEMENTS(attrs)];

        for (size_t i = 0; i < G_N_ELEMENTS(attrs); i++)
                g_string_append_printf(text, "%s{\"name\": \"0000:01:00.%zu\", \"kind\": \"pci\", "
                                       "\"driver\": \"vfio-pci\", \"vendor-id\": \"0x10de\", "
                                       "\"device-id\": \"0x1\", \"attributes\": %s}",
                                       i ? ", " : "", i, attrs[i]);
        g_string_append(text, "]}");
        path = write_tmp(text->str);
        if (sim_host_load(path, &h, &error) < 0)
                g_error("%s", error);
        g_unlink(path);
        for (size_t i = 0; i < G_N_ELEMENTS(attrs); i++) {
                t[i] = ((VfmigDevice *) h->devices->pdata[i])->attributes;
                g_assert_cmpuint(g_hash_table_size(t[i]), ==, i < 6 ? 2 : 0);
                if (i < 6) {
                        g_assert_cmpstr(g_hash_table_lookup(t[i], "fw"), ==, i < 2 ? "1" : "2");
                        g_assert_cmpstr(g_hash_table_lookup(t[i], "drv"), ==, "6.1");
                }
        }
        g_assert_true(t[1] == t[0]);
        g_assert_true(t[2] != t[1]);
        g_assert_true(t[3] != t[2]);
        g_assert_true(t[4] != t[3]);
        g_assert_true(t[5] != t[4]);
        g_assert_true(t[7] == t[6]);

        expect_error("{\"host\": \"h\", \"devices\": [{\"name\": \"0000:01:00.0\", \"kind\": \"pci\", "
                     "\"driver\": \"vfio-pci\", \"vendor-id\": \"0x10de\", \"device-id\": \"0x1\", "
                     "\"attributes\": {\"a\": \"x\"}}, {\"name\": \"0000:01:00.1\", \"kind\": \"pci\", "
                     "\"driver\": \"vfio-pci\", \"vendor-id\": \"0x10de\", \"device-id\": \"0x1\", "
                     "\"attributes\": {\"a\": \"x\", \"a\": 1}}]}",
                     "devices[1].attributes: \"a\" must be a string");
}

/* An attribute value of every length 0..50 (the reader scans strings and
 * indentation 16 bytes at a time), with its escape, non-ASCII character or
 * control character at every place, and indentations of every width. */
static void test_scan_boundaries(void)
{
        for (guint len = 0; len <= 50; len++)
                for (guint at = 0; at <= len; at++)
                        for (guint kind = 0; kind < 4; kind++) {
                                static const char *const special[] = { "\\\"", "\xc3\xa9", "\t", "" };
                                static const char *const decoded[] = { "\"", "\xc3\xa9", NULL, "" };
                                g_autoptr(GString) value = g_string_new(NULL), want = g_string_new(NULL);
                                g_autoptr(GString) text = g_string_new("{\n");
                                g_autofree char *path = NULL, *error = NULL;
                                g_autoptr(SimHost) h = NULL;
                                guint indent = (len + at) % 40;

                                for (guint i = 0; i <= len; i++) {
                                        if (i == at && kind < 3) {   /* at == len: right before the quote */
                                                g_string_append(value, special[kind]);
                                                if (decoded[kind])
                                                        g_string_append(want, decoded[kind]);
                                        }
                                        if (i == len)
                                                break;
                                        g_string_append_c(value, (char) ('a' + i % 26));
                                        g_string_append_c(want, (char) ('a' + i % 26));
                                }
                                g_string_append_printf(text, "%*s\"host\": \"h\",\n%*s\"devices\": [{\"name\": "
                                                       "\"0000:01:00.0\", \"kind\": \"pci\", \"driver\": \"vfio-pci\", "
                                                       "\"vendor-id\": \"0x10de\", \"device-id\": \"0x1\",\n%*s"
                                                       "\"attributes\": {\"a\": \"%s\"}}]\n%*s}",
                                                       (int) indent, "", (int) indent, "", (int) indent, "", value->str,
                                                       (int) indent, "");
                                path = write_tmp(text->str);
                                if (kind == 2) {
                                        g_assert_cmpint(sim_host_load(path, &h, &error), ==, -EINVAL);
                                        g_assert_nonnull(strstr(error, "control character in a string"));
                                } else {
                                        if (sim_host_load(path, &h, &error) < 0)
                                                g_error("length %u, at %u, kind %u: %s", len, at, kind, error);
                                        g_assert_cmpstr(g_hash_table_lookup(((VfmigDevice *) h->devices->pdata[0])->attributes,
                                                                            "a"), ==, want->str);
                                }
                                g_unlink(path);
                        }
        /* A string or an indentation that runs into the end of the file. */
        for (guint len = 0; len <= 40; len++) {
                g_autoptr(GString) t = g_string_new("{\"host\": \"");
                for (guint i = 0; i < len; i++)
                        g_string_append_c(t, 'x');
                expect_error(t->str, "unterminated string");
                g_string_assign(t, "{\"host\": \"h\", \"devices\": []\n");
                for (guint i = 0; i < len; i++)
                        g_string_append_c(t, ' ');
                expect_error(t->str, "expected ',' or '}' in an object");
        }
}

/* The JSON reader: what RFC 8259 allows is read, with escapes decoded;
 * everything else is refused with LINE:COL. */
static void test_json_syntax(void)
{
        static const char *const dev_head = "{\"host\": \"h\", \"devices\": [{\"name\": \"0000:01:00.0\", "
                                            "\"kind\": \"pci\", \"driver\": \"vfio-pci\", \"vendor-id\": \"0x10de\", "
                                            "\"device-id\": \"0x1\", \"attributes\": {\"a\": ";
        static const struct { const char *value, *want; } ok[] = {
                { "\"x\\u00e9y\"", "x\xc3\xa9y" },                       /* \u escape to UTF-8 */
                { "\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80" },            /* a surrogate pair */
                { "\"q\\\"b\\\\s\\/\"", "q\"b\\s/" },
                { "\"caf\xc3\xa9\"", "caf\xc3\xa9" },                     /* raw UTF-8 */
        };
        static const struct { const char *text, *fragment; } bad[] = {
                { "{\"host\": \"h\", \"devices\": []} x", "1:30: Parse error" },
                { "{\"host\": \"h\",\n \"devices\": [,]}", "2:14: Parse error" },
                { "{\"host\": \"a\tb\", \"devices\": []}", "control character" },
                { "{\"host\": \"\xc3\x28\", \"devices\": []}", "not valid UTF-8" },
                { "{\"host\": \"\\ud800x\", \"devices\": []}", "surrogate" },
                { "{\"host\": \"\\u0000\", \"devices\": []}", "\\u0000" },
                { "{\"host\": \"\\q\", \"devices\": []}", "unknown escape" },
                { "{\"host\": \"h\", \"devices\": [01]}", "Parse error" },
                { "{\"host\": \"h\", \"devices\": [1.]}", "digits after the point" },
                { "{\"host\": \"h\", \"devices\": [99999999999999999999]}", "out of range" },
                { "{\"host\": \"h\", \"devices\": [tru]}", "unexpected word" },
                { "{\"host\": \"h\" \"devices\": []}", "expected ',' or '}'" },
                { "{host: \"h\"}", "member name in quotes" },
                { "{\"host\": \"h\", \"devices\": [", "unexpected end of file" },
                { "{\"host\": \"h\", \"devices\": [\n", "2:0: Parse error: unexpected end of file" },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(ok); i++) {
                g_autofree char *text = g_strdup_printf("%s%s}}]}", dev_head, ok[i].value);
                g_autofree char *path = write_tmp(text);
                g_autoptr(SimHost) h = NULL;
                g_autofree char *error = NULL;

                if (sim_host_load(path, &h, &error) < 0)
                        g_error("%s: %s", ok[i].value, error);
                g_assert_cmpstr(g_hash_table_lookup(((VfmigDevice *) h->devices->pdata[0])->attributes, "a"), ==,
                                ok[i].want);
                g_unlink(path);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++)
                expect_error(bad[i].text, bad[i].fragment);

        /* deep nesting is refused, not recursed into without bound */
        {
                g_autoptr(GString) deep = g_string_new("{\"host\": \"h\", \"devices\": [], \"comment\": ");
                for (int i = 0; i < 100000; i++)
                        g_string_append_c(deep, '[');
                expect_error(deep->str, "nested too deeply");
        }
        /* typed checks see JSON types: a real number is not an integer, null not a string */
        expect_error("{\"host\": \"h\", \"devices\": [{\"name\": \"0000:01:00.0\", \"kind\": \"pci\", "
                     "\"driver\": \"vfio-pci\", \"vendor-id\": \"0x10de\", \"device-id\": \"0x1\", "
                     "\"iommu-group\": 1.5}]}", "\"iommu-group\" must be an integer");
        expect_error("{\"host\": null, \"devices\": []}", "\"host\" must be a string");
        /* devices are read as the file is, yet a syntax error anywhere, and the
         * top-level checks, still come before a device's own problem */
        expect_error("{\"host\": \"h\", \"devices\": [5], \"x\": }", "Parse error");
        expect_error("{\"host\": 5, \"devices\": [5]}", "\"host\" must be a string");
        expect_error("{\"devices\": [5], \"bogus\": 1, \"host\": \"h\"}", "unknown key \"bogus\"");
        /* "devices" twice: the last array counts, the first one's problem too is forgotten */
        {
                g_autofree char *path = write_tmp("{\"host\": \"h\", \"devices\": [5], \"devices\": []}");
                g_autoptr(SimHost) h = NULL;
                g_autofree char *error = NULL;

                if (sim_host_load(path, &h, &error) < 0)
                        g_error("%s", error);
                g_assert_cmpuint(h->devices->len, ==, 0);
                g_unlink(path);
        }
        expect_error("{\"host\": \"h\", \"devices\": [], \"devices\": 3}", "\"devices\" must be an array");
        /* a key given twice: the last one counts; a byte order mark is skipped */
        {
                g_autofree char *path = write_tmp("\xef\xbb\xbf{\"host\": \"first\", \"devices\": [], \"host\": \"last\"}");
                g_autoptr(SimHost) h = NULL;
                g_autofree char *error = NULL;

                g_assert_cmpint(sim_host_load(path, &h, &error), ==, 0);
                g_assert_cmpstr(h->host_name, ==, "last");
                g_unlink(path);
        }
}

/* Every shipped host file loads. */
static void test_shipped_hosts(void)
{
        g_autofree char *dir = g_build_filename(VFMIG_SOURCE_DATADIR, "sim", NULL);
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *name;
        guint n = 0;

        g_assert_nonnull(d);
        while ((name = g_dir_read_name(d))) {
                g_autofree char *path = g_build_filename(dir, name, NULL);
                g_autoptr(SimHost) h = NULL;
                g_autofree char *error = NULL;

                if (!g_str_has_suffix(name, ".json"))
                        continue;
                if (sim_host_load(path, &h, &error) < 0)
                        g_error("%s", error);
                g_assert_cmpuint(h->devices->len, >, 0);
                n++;
        }
        g_assert_cmpuint(n, >, 0);
}

/* The fuzz target's seed corpus: every input gives a host or a located
 * refusal (under ASan this also says: no overflow, no leak). */
static void test_fuzz_corpus(void)
{
        g_autofree char *dir = g_build_filename(VFMIG_SOURCE_DATADIR, "..", "tests", "fuzz", "corpus", "sim-host",
                                                NULL);
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *name;
        guint n = 0, ok = 0;

        g_assert_nonnull(d);
        while ((name = g_dir_read_name(d))) {
                g_autofree char *path = g_build_filename(dir, name, NULL);
                g_autoptr(SimHost) h = NULL;
                g_autoptr(Inventory) inv = inventory_new();
                g_autofree char *error = NULL;
                int r = sim_host_load(path, &h, &error);

                n++;
                if (r == 0) {
                        g_assert_null(error);
                        sim_host_populate(h, inv);
                        ok++;
                } else {
                        g_assert_cmpint(r, ==, -EINVAL);
                        g_assert_nonnull(error);
                        g_assert_nonnull(strstr(error, path));
                }
        }
        g_test_message("%u inputs, %u hosts", n, ok);
        g_assert_cmpuint(n, >, 10);
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/sim-host/shipped-host-a", test_shipped_host_a);
        g_test_add_func("/sim-host/malformed", test_malformed);
        g_test_add_func("/sim-host/json-syntax", test_json_syntax);
        g_test_add_func("/sim-host/scan-boundaries", test_scan_boundaries);
        g_test_add_func("/sim-host/shared-attributes", test_shared_attributes);
        g_test_add_func("/sim-host/shipped-hosts", test_shipped_hosts);
        g_test_add_func("/sim-host/fuzz-corpus", test_fuzz_corpus);
        return g_test_run();
}
