/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Rules loading: the shipped files load clean and each names its source; a
 * broken file is reported with its path and location, skipped, and changes
 * nothing else; admin files override vendor files by name. */
#include <errno.h>

#include "compat-test.h"

static const char good_file[] =
        "{\"format\": 1, \"namespace\": \"good\", \"rules\": [{\"id\": \"good-rule\", \"match\": {\"bus\": \"pci\", "
        "\"driver\": \"good_vfio_pci\"}, \"migration-type\": \"g\", \"migration-version\": \"1\"}]}";

static void test_shipped(void)
{
        g_autoptr(VfmigRuleSet) rs = shipped_rules();
        const char *const *files = vfmig_rules_files(rs);
        static const char *const ids[] = {
                "mlx5-cx7", "mlx5-cx6dx", "hisi-acc", "pds-vf", "qat-gen4-vf", "virtio-net-vf", "mtty",
                "i915-gvtg", "i915-gvtg-aggregated", "nvidia-vgpu", "vfmig-testmdev",
        };

        g_assert_cmpuint(g_strv_length((char **) files), ==, 9);
        for (size_t i = 0; i < G_N_ELEMENTS(ids); i++)
                if (!vfmig_rules_has_rule(rs, ids[i]))
                        g_error("shipped rule %s missing", ids[i]);
        g_assert_cmpuint(vfmig_rules_count(rs), ==, G_N_ELEMENTS(ids));
        /* every shipped file names the public source of its facts */
        for (size_t i = 0; files[i]; i++) {
                g_autoptr(JsonParser) parser = json_parser_new();
                g_assert_true(json_parser_load_from_file(parser, files[i], NULL));
                JsonObject *o = json_node_get_object(json_parser_get_root(parser));
                const char *src = json_object_get_string_member_with_default(o, "source", "");
                if (strlen(src) < 40)
                        g_error("%s: no \"source\" note", files[i]);
        }
        g_assert_cmpuint(strlen(vfmig_rules_fingerprint(rs)), ==, 64);
}

/* Each row: a broken file's text, and the located error it must produce. */
static const struct {
        const char *text;
        const char *error;
} bad_files[] = {
        { "{\"format\": 1, \"rules\": [", ":1:" },   /* json-glib's line:column */
        { "[]", "(top): must be a JSON object" },
        { "{\"rules\": []}", "(top): \"format\" must be 1" },
        { "{\"format\": 2, \"rules\": []}", "(top): \"format\" must be 1" },
        { "{\"format\": 1}", "(top): \"rules\" is required" },
        { "{\"format\": 1, \"rulez\": []}", "(top): unknown key \"rulez\"" },
        { "{\"format\": 1, \"rules\": [7]}", "rules[0]: must be an object" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\"}]}",
          "rules[0]: \"id\" is required" },
        { "{\"format\": 1, \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\"}]}",
          "rules[0]: \"namespace\" is required" },
        { "{\"format\": 1, \"namespace\": \"Bad NS\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\"}]}",
          "rules[0]: \"namespace\" \"Bad NS\" must be" },
        { "{\"format\": 1, \"namespace\": \"pci-15b3\", \"rules\": [{\"id\": \"a\", \"match\": {\"vendor-id\": \"0x8086\"}, \"migration-type\": \"t\", \"migration-version\": \"v\"}]}",
          "rules[0]: namespace \"pci-15b3\" belongs to PCI vendor 0x15b3" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {\"bus\": \"usb\"}, \"migration-type\": \"t\", \"migration-version\": \"v\"}]}",
          "rules[0].match: \"bus\" must be \"pci\" or \"mdev\"" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {\"device-id\": \"101e\"}, \"migration-type\": \"t\", \"migration-version\": \"v\"}]}",
          "rules[0].match: \"device-id\": \"101e\" is not a hex number" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {\"revision\": {\"min\": \"0x10\", \"max\": \"0x01\"}}, \"migration-type\": \"t\", \"migration-version\": \"v\"}]}",
          "rules[0].match.revision: \"min\" 0x10 is above \"max\" 0x01" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {\"bus\": \"pci\", \"mdev-type\": \"x-*\"}, \"migration-type\": \"t\", \"migration-version\": \"v\"}]}",
          "rules[0].match: \"mdev-parent-driver\"/\"mdev-type\" need \"bus\": \"mdev\"" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t-${fw\", \"migration-version\": \"v\"}]}",
          "rules[0]: \"migration-type\": \"${\" at offset 2 is not closed" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"$v\"}]}",
          "rules[0]: \"migration-version\": \"$\" at offset 0 must start \"${name}\"" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\", \"capabilities\": [\"needs-p2p\"]}]}",
          "rules[0]: \"capabilities\": \"needs-p2p\" is not a device capability" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\", \"accept\": [{\"check\": \"similar\", \"field\": \"x\"}]}]}",
          "rules[0].accept[0]: unknown check \"similar\"" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\", \"accept\": [{\"check\": \"equal\"}]}]}",
          "rules[0].accept[0]: \"field\" is required" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\", \"accept\": [{\"check\": \"range\", \"field\": \"x\"}]}]}",
          "rules[0].accept[0]: check \"range\" needs \"min\" or \"max\"" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\", \"accept\": [{\"check\": \"range\", \"field\": \"x\", \"min\": \"older\"}]}]}",
          "rules[0].accept[0]: \"min\" must be an integer or \"target\"" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\", \"accept\": [{\"check\": \"equal\", \"field\": \"x\", \"same\": 1}]}]}",
          "rules[0].accept[0]: \"same\" does not apply to check \"equal\"" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\", \"accept\": [{}, {\"check\": \"generation\", \"field\": \"g\", \"order\": [\"a\", \"a\"]}]}]}",
          "rules[0].accept[0]: \"check\" is required" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\", \"accept\": [{\"check\": \"generation\", \"field\": \"g\", \"order\": [\"a\", \"a\"]}]}]}",
          "rules[0].accept[0]: \"order\": \"a\" appears twice" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\", \"accept\": [{\"check\": \"product\", \"fields\": [\"a\", \"b\"], \"solve\": \"c\"}]}]}",
          "rules[0].accept[0]: \"solve\": \"c\" is not one of \"fields\"" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\", \"accept\": [{\"check\": \"kernel\", \"interface\": \"ioctl\"}]}]}",
          "rules[0].accept[0]: \"interface\" must be \"migration_version\" or \"migration-compatible\"" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\"}, {\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\"}]}",
          "rules[1]: rule id \"a\" appears twice in this file" },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"good-rule\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\"}]}",
          "rules[0]: rule id \"good-rule\" is already defined in " },
        { "{\"format\": 1, \"namespace\": \"x\", \"rules\": [{\"id\": \"a\", \"match\": {}, \"migration-type\": \"t\", \"migration-version\": \"v\", \"attributes\": {\"n\": {\"lookup\": \"${x}\"}}}]}",
          "rules[0].attributes.n: \"table\" must be an object" },
};

static void test_bad_files(void)
{
        for (size_t i = 0; i < G_N_ELEMENTS(bad_files); i++) {
                g_autofree char *dir = tmpdir_new();
                g_autofree char *bad_path = g_build_filename(dir, "zz-bad.json", NULL);
                g_autoptr(GPtrArray) errors = NULL;
                g_autoptr(VfmigRuleSet) rs = NULL;
                const char *e;

                g_test_message("row %zu", i);
                write_file(dir, "aa-good.json", good_file);
                write_file(dir, "zz-bad.json", bad_files[i].text);
                rs = vfmig_rules_load(dir, NULL, &errors);
                g_assert_cmpuint(errors->len, ==, 1);
                e = errors->pdata[0];
                /* names the file and the place */
                if (!g_str_has_prefix(e, bad_path))
                        g_error("row %zu: \"%s\" does not start with the path", i, e);
                assert_contains(e, bad_files[i].error);
                /* the other file is still in force, and nothing of the bad one is */
                g_assert_cmpuint(vfmig_rules_count(rs), ==, 1);
                g_assert_true(vfmig_rules_has_rule(rs, "good-rule"));
                g_assert_cmpuint(g_strv_length((char **) vfmig_rules_files(rs)), ==, 1);
                tmpdir_remove(dir);
        }
}

static void test_garbage_never_crashes(void)
{
        g_autofree char *dir = tmpdir_new();
        g_autoptr(GPtrArray) errors = NULL;
        g_autoptr(VfmigRuleSet) rs = NULL;
        char bin[] = "{\"format\": 1, \"rules\": [] \0 }";
        g_autofree char *p = g_build_filename(dir, "nul.json", NULL);

        g_assert_true(g_file_set_contents(p, bin, sizeof(bin), NULL));
        write_file(dir, "not-json.txt", "ignored: not *.json");
        rs = vfmig_rules_load(dir, "/nonexistent/admin", &errors);
        g_assert_cmpuint(errors->len, ==, 1);
        assert_contains(errors->pdata[0], "nul.json: (file): contains a NUL byte");
        g_assert_cmpuint(vfmig_rules_count(rs), ==, 0);
        tmpdir_remove(dir);
}

static void test_admin_override(void)
{
        g_autofree char *vendor = g_build_filename(COMPAT_FIXTURES, "vendor", NULL);
        g_autofree char *admin = g_build_filename(COMPAT_FIXTURES, "admin", NULL);
        g_autofree char *admin_nvme = g_build_filename(admin, "nvme.json", NULL);
        g_autoptr(GPtrArray) errors = NULL;
        g_autoptr(VfmigRuleSet) plain = vfmig_rules_load(vendor, NULL, NULL);
        g_autoptr(VfmigRuleSet) rs = vfmig_rules_load(vendor, admin, &errors);
        g_autoptr(VfmigDevice) d = dev_new("0000:5e:00.1", VFMIG_DEVICE_PCI, "nvme_vfio_pci", 0x144d, 0xa808,
                                           "remote_target", "pool-a", NULL);
        g_autoptr(VfmigDevice) t = dev_new("0000:5e:00.2", VFMIG_DEVICE_PCI, "nvme_vfio_pci", 0x144d, 0xa808,
                                           "remote_target", "pool-b", "accepted_targets", "pool-a, pool-b", NULL);
        g_autoptr(VfmigProfile) p = NULL;
        g_auto(VfmigVerdict) v = { 0 };
        const char *file = NULL;

        g_assert_cmpuint(errors->len, ==, 0);
        g_assert_true(vfmig_rules_has_rule(plain, "nvme-remote"));
        g_assert_true(vfmig_rules_has_rule(plain, "masked-rule"));
        /* same name in the admin dir: the vendor's file is gone, the admin's is in force */
        g_assert_false(vfmig_rules_has_rule(rs, "nvme-remote"));
        g_assert_true(vfmig_rules_has_rule(rs, "nvme-remote-admin"));
        g_assert_cmpstr(vfmig_rules_match(rs, d, NULL, &file), ==, "nvme-remote-admin");
        g_assert_cmpstr(file, ==, admin_nvme);
        /* an empty admin file masks the vendor file */
        g_assert_false(vfmig_rules_has_rule(rs, "masked-rule"));
        g_assert_true(vfmig_rules_has_rule(rs, "vendor-one-accel"));
        g_assert_cmpstr(vfmig_rules_fingerprint(rs), !=, vfmig_rules_fingerprint(plain));
        /* the admin's set clause: the target lists the remotes it can reach */
        g_assert_cmpint(vfmig_rules_profile_for(rs, d, NULL, VFMIG_COMPAT_FLAG_STOP_COPY, &p, NULL), ==, 0);
        g_assert_true(vfmig_rules_check(rs, p, t, NULL, VFMIG_COMPAT_FLAG_STOP_COPY, NULL, &v));
        vfmig_verdict_clear(&v);
        g_hash_table_replace(t->attributes, g_strdup("accepted_targets"), g_strdup("pool-b"));
        g_assert_false(vfmig_rules_check(rs, p, t, NULL, VFMIG_COMPAT_FLAG_STOP_COPY, NULL, &v));
        assert_contains(v.reasons->pdata[0], "source remote storage target pool-a is not one the target accepts "
                                             "(pool-b) (rule nvme-remote-admin in ");
}

static void test_broken_admin_masks(void)
{
        g_autofree char *vendor = g_build_filename(COMPAT_FIXTURES, "vendor", NULL);
        g_autofree char *admin = tmpdir_new();
        g_autoptr(GPtrArray) errors = NULL;
        g_autoptr(VfmigRuleSet) rs = NULL;

        write_file(admin, "nvme.json", "{\"format\": 1, \"rules\": [ oops ]}");
        rs = vfmig_rules_load(vendor, admin, &errors);
        g_assert_cmpuint(errors->len, ==, 1);
        assert_contains(errors->pdata[0], "nvme.json:1:");
        g_assert_false(vfmig_rules_has_rule(rs, "nvme-remote"));     /* fail closed */
        g_assert_true(vfmig_rules_has_rule(rs, "vendor-one-accel"));
        tmpdir_remove(admin);
}

static void test_priority_and_order(void)
{
        g_autofree char *dir = tmpdir_new();
        g_autoptr(VfmigRuleSet) rs = NULL;
        g_autoptr(GPtrArray) errors = NULL;
        g_autoptr(VfmigDevice) d = dev_new("0000:01:00.1", VFMIG_DEVICE_PCI, "x_vfio_pci", 0x1234, 0x0001,
                                           "fw", "1.2", NULL);
        const char *id;

        write_file(dir, "a.json",
                   "{\"format\": 1, \"namespace\": \"x\", \"rules\": ["
                   "{\"id\": \"first-general\", \"match\": {\"driver\": \"x_*\"}, \"migration-type\": \"t\", \"migration-version\": \"v\"},"
                   "{\"id\": \"specific\", \"priority\": 5, \"match\": {\"driver\": \"x_vfio_pci\", \"revision\": {\"min\": \"0x00\", \"max\": \"0x01\"}, \"attributes\": {\"fw\": \"1.*\"}}, \"migration-type\": \"t\", \"migration-version\": \"v\"}]}");
        rs = vfmig_rules_load(dir, NULL, &errors);
        g_assert_cmpuint(errors->len, ==, 0);
        id = vfmig_rules_match(rs, d, NULL, NULL);
        g_assert_cmpstr(id, ==, "specific");
        d->revision = 2;
        g_assert_cmpstr(vfmig_rules_match(rs, d, NULL, NULL), ==, "first-general");
        d->revision = 0;
        g_hash_table_replace(d->attributes, g_strdup("fw"), g_strdup("2.0"));
        g_assert_cmpstr(vfmig_rules_match(rs, d, NULL, NULL), ==, "first-general");
        tmpdir_remove(dir);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/compat/rules/shipped", test_shipped);
        g_test_add_func("/compat/rules/bad-files", test_bad_files);
        g_test_add_func("/compat/rules/garbage", test_garbage_never_crashes);
        g_test_add_func("/compat/rules/admin-override", test_admin_override);
        g_test_add_func("/compat/rules/broken-admin-masks", test_broken_admin_masks);
        g_test_add_func("/compat/rules/priority-and-order", test_priority_and_order);
        return g_test_run();
}
