/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Verdict tests: the shipped rules on the shipped simulated hosts, and the
 * seed scenarios (generations, aggregator, exact mdev types, same PCI ID
 * with a differing attribute, vendor namespaces, P2P, kernel answers). */
#include <errno.h>

#include "compat-test.h"

static VfmigRuleSet *rules;            /* shipped */
static VfmigRuleSet *fixture_rules;    /* tests/compat/fixtures/vendor */
static char *mlx5_file;

static VfmigProfile *profile_of(VfmigRuleSet *rs, const VfmigDevice *d, const VfmigDevice *parent, uint64_t flags)
{
        g_autofree char *why = NULL;
        VfmigProfile *p = NULL;

        if (vfmig_rules_profile_for(rs, d, parent, flags, &p, &why) < 0)
                g_error("no profile for %s: %s", d->name, why);
        g_assert_null(why);
        return p;
}

/* Check and compare the verdict; fragment: a reason that must appear (refusals). */
static void expect(VfmigRuleSet *rs, const VfmigProfile *src, const VfmigDevice *target,
                   const VfmigDevice *parent, uint64_t flags, bool compatible, const char *fragment)
{
        g_auto(VfmigVerdict) v = { 0 };
        g_autofree char *text = NULL;

        g_assert_cmpint(vfmig_rules_check(rs, src, target, parent, flags, NULL, &v), ==, compatible);
        text = vfmig_verdict_reasons_text(&v);
        g_test_message("%s → %s: %s [%s] score %d", src->migration_type, target->name,
                       compatible ? "yes" : "no", text, v.score);
        g_assert_cmpint(v.compatible, ==, compatible);
        if (compatible) {
                g_assert_cmpuint(v.reasons->len, ==, 0);
                g_assert_cmpint(v.score, >=, 1);
                g_assert_cmpint(v.score, <=, 100);
        } else {
                g_assert_cmpuint(v.reasons->len, >, 0);
                g_assert_cmpint(v.score, ==, 0);
                g_assert_cmpuint(g_hash_table_size(v.to_apply), ==, 0);
                assert_contains(text, fragment);
                /* every reason names the rule and its file */
                for (guint i = 0; i < v.reasons->len; i++)
                        if (!strstr(v.reasons->pdata[i], "(rule ") && !strstr(v.reasons->pdata[i], "no compatibility rule"))
                                g_error("reason without a rule: %s", (const char *) v.reasons->pdata[i]);
        }
}

#define ALL_FLAGS (VFMIG_COMPAT_FLAG_STOP_COPY | VFMIG_COMPAT_FLAG_P2P | VFMIG_COMPAT_FLAG_PRE_COPY)

/* ---- the shipped simulated hosts ---------------------------------------- */

static void test_sim_mlx5(void)
{
        GHashTable *a = sim_load("host-a.json"), *b = sim_load("host-b.json");
        SimDev *sa = sim_get(a, "0000:17:00.1"), *sb = sim_get(b, "0000:31:00.1");
        g_autoptr(VfmigProfile) pa = profile_of(rules, sa->dev, NULL, sa->flags);
        g_autoptr(VfmigProfile) pb = profile_of(rules, sb->dev, NULL, sb->flags);
        g_autofree char *expected = g_strdup_printf("target firmware 28.39 is older than source firmware 28.41 "
                                                    "(rule mlx5-cx7 in %s)", mlx5_file);
        g_auto(VfmigVerdict) v = { 0 };

        g_assert_cmpstr(pa->migration_type, ==, "pci-15b3:mlx5-cx7");
        g_assert_cmpstr(pa->migration_version, ==, "28.39.1002");
        g_assert_cmphex(pa->capabilities, ==, VFMIG_CAP_STOP_COPY | VFMIG_CAP_P2P | VFMIG_CAP_PRE_COPY |
                                              VFMIG_CAP_DMA_LOGGING);
        /* older → newer: yes, and a little below a perfect score */
        g_assert_true(vfmig_rules_check(rules, pa, sb->dev, NULL, sb->flags, NULL, &v));
        g_assert_cmpint(v.score, <, 100);
        g_assert_cmpstr(v.rule_id, ==, "mlx5-cx7");
        vfmig_verdict_clear(&v);
        /* newer → older: no, with exactly the reason DESIGN §4 gives */
        g_assert_false(vfmig_rules_check(rules, pb, sa->dev, NULL, sa->flags, NULL, &v));
        g_assert_cmpuint(v.reasons->len, ==, 1);
        g_assert_cmpstr(v.reasons->pdata[0], ==, expected);
        vfmig_verdict_clear(&v);
        /* same host, same firmware: perfect */
        g_assert_true(vfmig_rules_check(rules, pa, sim_get(a, "0000:17:00.2")->dev, NULL, ALL_FLAGS, NULL, &v));
        g_assert_cmpint(v.score, ==, 100);
        vfmig_verdict_clear(&v);
        /* a VF on plain vfio-pci has no migration driver: no rule, said so */
        expect(rules, pa, sim_get(a, "0000:17:00.3")->dev, NULL, 0, false,
               "no compatibility rule matches device 0000:17:00.3 (pci, driver vfio-pci, 15b3:101e)");
        sim_free(a);
        sim_free(b);
}

static void test_sim_nvidia(void)
{
        GHashTable *a = sim_load("host-a.json"), *b = sim_load("host-b.json");
        SimDev *m = sim_get(a, "6f1a3c52-4b0e-4c1e-9a55-0d2b8e5f7a01");
        const VfmigDevice *pa = sim_get(a, "0000:3b:00.0")->dev, *pb = sim_get(b, "0000:af:00.0")->dev;
        g_autoptr(VfmigProfile) src = profile_of(rules, m->dev, pa, m->flags);
        g_autoptr(VfmigDevice) hyp = mdev_new("0d9f8e7c-0000-4000-8000-000000000001", pb, "nvidia-223");
        g_autoptr(VfmigProfile) newer = NULL;
        g_auto(VfmigVerdict) v = { 0 };

        g_assert_cmpstr(src->migration_type, ==, "pci-10de:nvidia-223");
        g_assert_cmpstr(src->migration_version, ==, "535.129.03");
        /* host-a → a creatable nvidia-223 on host-b's newer driver: yes */
        g_assert_true(vfmig_rules_check_mdev_type(rules, src, pb, "nvidia-223", VFMIG_COMPAT_FLAG_UNKNOWN, NULL, &v));
        vfmig_verdict_clear(&v);
        /* another type: the first-level filter says no */
        g_assert_false(vfmig_rules_check_mdev_type(rules, src, pb, "nvidia-222", VFMIG_COMPAT_FLAG_UNKNOWN, NULL, &v));
        assert_contains(v.reasons->pdata[0], "source migration type \"pci-10de:nvidia-223\" differs from the "
                                             "target's \"pci-10de:nvidia-222\"");
        vfmig_verdict_clear(&v);
        /* host-b (550) → host-a (535): no */
        newer = profile_of(rules, hyp, pb, VFMIG_COMPAT_FLAG_STOP_COPY | VFMIG_COMPAT_FLAG_P2P);
        g_assert_false(vfmig_rules_check_mdev_type(rules, newer, pa, "nvidia-223", VFMIG_COMPAT_FLAG_UNKNOWN, NULL, &v));
        assert_contains(v.reasons->pdata[0], "target vGPU manager branch 535 is older than source vGPU manager "
                                             "branch 550 (rule nvidia-vgpu in ");
        sim_free(a);
        sim_free(b);
}

static void test_sim_other_devices(void)
{
        GHashTable *a = sim_load("host-a.json"), *b = sim_load("host-b.json");
        SimDev *gvt = sim_get(a, "c3d1e9a0-7f2b-4e8d-b1a4-5e6f7a8b9c0d");
        SimDev *qat = sim_get(b, "0000:d8:00.0");
        g_autoptr(VfmigProfile) pg = profile_of(rules, gvt->dev, sim_get(a, "0000:00:02.0")->dev, gvt->flags);
        g_autoptr(VfmigProfile) pq = profile_of(rules, qat->dev, NULL, qat->flags);
        g_autofree char *why = NULL;
        VfmigProfile *none = NULL;

        g_assert_cmpstr(pg->migration_type, ==, "pci-8086:i915-GVTg_V5_4");
        g_assert_cmpstr(g_hash_table_lookup(pg->attributes, "generation"), ==, "gen9.5");
        g_assert_cmpstr(pq->migration_type, ==, "pci-8086:qat-vf-0x4941");
        /* host-b has no GVT-g: the i915 profile finds no i915 target there (the nvme is no match) */
        expect(rules, pg, sim_get(b, "0000:5e:00.0")->dev, NULL, 0, false, "no compatibility rule");
        /* a device without stop-copy cannot be a source */
        g_assert_cmpint(vfmig_rules_profile_for(rules, sim_get(a, "0000:17:00.4")->dev, NULL, 0, &none, &why),
                        ==, -EOPNOTSUPP);
        g_assert_null(none);
        assert_contains(why, "does not support migration (no stop-copy) (rule mlx5-cx7 in ");
        sim_free(a);
        sim_free(b);
}

/* ---- seed scenarios -------------------------------------------------------- */

static VfmigDevice *igpu(const char *name, guint16 did, const char *aggregation)
{
        VfmigDevice *d = dev_new(name, VFMIG_DEVICE_PCI, "i915", 0x8086, did, NULL);
        if (aggregation)
                g_hash_table_replace(d->attributes, g_strdup("gvt_aggregation"), g_strdup(aggregation));
        return d;
}

static void test_generations(void)
{
        g_autoptr(VfmigDevice) kbl = igpu("0000:00:02.0", 0x5912, NULL);   /* gen9 */
        g_autoptr(VfmigDevice) cfl = igpu("0000:00:02.0", 0x3e92, NULL);   /* gen9.5 */
        g_autoptr(VfmigDevice) old_m = mdev_new("11111111-1111-1111-1111-111111111111", kbl, "i915-GVTg_V5_4");
        g_autoptr(VfmigDevice) new_m = mdev_new("22222222-2222-2222-2222-222222222222", cfl, "i915-GVTg_V5_4");
        g_autoptr(VfmigDevice) new_8 = mdev_new("33333333-3333-3333-3333-333333333333", cfl, "i915-GVTg_V5_8");
        g_autoptr(VfmigProfile) po = profile_of(rules, old_m, kbl, VFMIG_COMPAT_FLAG_STOP_COPY);
        g_autoptr(VfmigProfile) pn = profile_of(rules, new_m, cfl, VFMIG_COMPAT_FLAG_STOP_COPY);

        /* lower → higher generation: yes; higher → lower: never */
        expect(rules, po, new_m, cfl, VFMIG_COMPAT_FLAG_STOP_COPY, true, NULL);
        expect(rules, pn, old_m, kbl, VFMIG_COMPAT_FLAG_STOP_COPY, false,
               "target GPU generation gen9 is older than source GPU generation gen9.5: migration only goes "
               "from an older to a newer generation (rule i915-gvtg in ");
        /* mdev migration stays within one type unless a rule says otherwise */
        expect(rules, po, new_8, cfl, VFMIG_COMPAT_FLAG_STOP_COPY, false,
               "source migration type \"pci-8086:i915-GVTg_V5_4\" differs from the target's "
               "\"pci-8086:i915-GVTg_V5_8\"");
}

static void test_aggregator(void)
{
        g_autoptr(VfmigDevice) gpu = igpu("0000:00:02.0", 0x3e92, "1");
        g_autoptr(VfmigDevice) src = mdev_new("44444444-4444-4444-4444-444444444444", gpu, "i915-GVTg_V5_8");
        g_autoptr(VfmigDevice) t_ok = mdev_new("55555555-5555-5555-5555-555555555555", gpu, "i915-GVTg_V5_4");
        g_autoptr(VfmigDevice) t_bad = mdev_new("66666666-6666-6666-6666-666666666666", gpu, "i915-GVTg_V5_4");
        g_autoptr(VfmigProfile) p = NULL;
        g_auto(VfmigVerdict) v = { 0 };

        g_hash_table_replace(src->attributes, g_strdup("aggregator"), g_strdup("2"));
        g_hash_table_replace(t_ok->attributes, g_strdup("aggregator"), g_strdup("1"));
        g_hash_table_replace(t_bad->attributes, g_strdup("aggregator"), g_strdup("2"));
        p = profile_of(rules, src, gpu, VFMIG_COMPAT_FLAG_STOP_COPY);
        g_assert_cmpstr(p->migration_type, ==, "pci-8086:i915-GVTg_V5");
        g_assert_cmpstr(g_hash_table_lookup(p->attributes, "type_size"), ==, "1");

        /* 2 × V5_8 (size 1) is one V5_4 (size 2) */
        expect(rules, p, t_ok, gpu, VFMIG_COMPAT_FLAG_STOP_COPY, true, NULL);
        expect(rules, p, t_bad, gpu, VFMIG_COMPAT_FLAG_STOP_COPY, false,
               "source aggregator × type_size = 2 × 1 = 2 differs from the target's 2 × 2 = 4 (rule "
               "i915-gvtg-aggregated in ");
        /* creatable types: the aggregator is solved and reported to apply */
        g_assert_true(vfmig_rules_check_mdev_type(rules, p, gpu, "i915-GVTg_V5_4", VFMIG_COMPAT_FLAG_UNKNOWN, NULL, &v));
        g_assert_cmpstr(g_hash_table_lookup(v.to_apply, "aggregator"), ==, "1");
        vfmig_verdict_clear(&v);
        g_assert_true(vfmig_rules_check_mdev_type(rules, p, gpu, "i915-GVTg_V5_8", VFMIG_COMPAT_FLAG_UNKNOWN, NULL, &v));
        g_assert_cmpstr(g_hash_table_lookup(v.to_apply, "aggregator"), ==, "2");
        vfmig_verdict_clear(&v);
        g_assert_false(vfmig_rules_check_mdev_type(rules, p, gpu, "i915-GVTg_V5_2", VFMIG_COMPAT_FLAG_UNKNOWN, NULL, &v));
        assert_contains(v.reasons->pdata[0], "= 2 is not a multiple of the target's type_size 4");
        g_assert_null(g_hash_table_lookup(v.to_apply, "aggregator"));
}

static void test_same_pci_id_other_attribute(void)
{
        g_autoptr(VfmigDevice) a = dev_new("0000:5e:00.1", VFMIG_DEVICE_PCI, "nvme_vfio_pci", 0x144d, 0xa808,
                                           "remote_target", "iqn.2020-04.example:pool-a",
                                           "dynamic_resources", "queues=8", NULL);
        g_autoptr(VfmigDevice) b = dev_new("0000:5e:00.2", VFMIG_DEVICE_PCI, "nvme_vfio_pci", 0x144d, 0xa808,
                                           "remote_target", "iqn.2020-04.example:pool-b", NULL);
        g_autoptr(VfmigDevice) c = dev_new("0000:5e:00.3", VFMIG_DEVICE_PCI, "nvme_vfio_pci", 0x144d, 0xa808,
                                           "remote_target", "iqn.2020-04.example:pool-a", NULL);
        g_autoptr(VfmigDevice) h1 = dev_new("0000:b1:00.1", VFMIG_DEVICE_PCI, "hisi_acc_vfio_pci", 0x19e5, 0xa256, NULL);
        g_autoptr(VfmigDevice) h2 = dev_new("0000:b2:00.1", VFMIG_DEVICE_PCI, "hisi_acc_vfio_pci", 0x19e5, 0xa256, NULL);
        g_autoptr(VfmigProfile) pa = profile_of(fixture_rules, a, NULL, ALL_FLAGS | VFMIG_COMPAT_FLAG_DMA_LOGGING);
        g_autoptr(VfmigProfile) ph = NULL;
        g_auto(VfmigVerdict) v = { 0 };

        expect(fixture_rules, pa, b, NULL, ALL_FLAGS | VFMIG_COMPAT_FLAG_DMA_LOGGING, false,
               "target remote storage target iqn.2020-04.example:pool-b differs from source remote storage "
               "target iqn.2020-04.example:pool-a (rule nvme-remote in ");
        /* same remote: yes, and the dynamic resources are to be applied 1:1 */
        g_assert_true(vfmig_rules_check(fixture_rules, pa, c, NULL, ALL_FLAGS | VFMIG_COMPAT_FLAG_DMA_LOGGING, NULL, &v));
        g_assert_cmpstr(g_hash_table_lookup(v.to_apply, "dynamic_resources"), ==, "queues=8");
        vfmig_verdict_clear(&v);
        /* a required capability the target lacks */
        expect(fixture_rules, pa, c, NULL, ALL_FLAGS, false,
               "the target lacks dma-logging, which this device family needs to resume");

        /* hisi_acc: same device id, other hardware revision */
        h1->revision = 0x21;
        h2->revision = 0x30;
        ph = profile_of(rules, h1, NULL, ALL_FLAGS);
        expect(rules, ph, h2, NULL, ALL_FLAGS, false,
               "target hardware revision 0x30 differs from source hardware revision 0x21 (rule hisi-acc in ");
        h2->revision = 0x21;
        expect(rules, ph, h2, NULL, ALL_FLAGS, true, NULL);
}

static void test_vendor_namespaces(void)
{
        g_autoptr(VfmigDevice) one = dev_new("0000:01:00.1", VFMIG_DEVICE_PCI, "one_vfio_pci", 0x1111, 0x0001, NULL);
        g_autoptr(VfmigDevice) one2 = dev_new("0000:01:00.2", VFMIG_DEVICE_PCI, "one_vfio_pci", 0x1111, 0x0001, NULL);
        g_autoptr(VfmigDevice) two = dev_new("0000:02:00.1", VFMIG_DEVICE_PCI, "two_vfio_pci", 0x2222, 0x0001, NULL);
        g_autoptr(VfmigProfile) p1 = profile_of(fixture_rules, one, NULL, ALL_FLAGS);
        g_autoptr(VfmigProfile) p2 = profile_of(fixture_rules, two, NULL, ALL_FLAGS);

        /* both drivers say "accel-1"; the namespaces keep them apart */
        g_assert_cmpstr(p1->migration_type, ==, "pci-1111:accel-1");
        g_assert_cmpstr(p2->migration_type, ==, "pci-2222:accel-1");
        expect(fixture_rules, p1, one2, NULL, ALL_FLAGS, true, NULL);
        expect(fixture_rules, p1, two, NULL, ALL_FLAGS, false,
               "source migration type \"pci-1111:accel-1\" differs from the target's \"pci-2222:accel-1\"");
        expect(fixture_rules, p2, one, NULL, ALL_FLAGS, false, "differs from the target's \"pci-1111:accel-1\"");
}

static void test_p2p(void)
{
        g_autoptr(VfmigDevice) s = dev_new("0000:17:00.1", VFMIG_DEVICE_PCI, "mlx5_vfio_pci", 0x15b3, 0x101e,
                                           "fw_version", "28.39.1002", NULL);
        g_autoptr(VfmigDevice) t = dev_new("0000:31:00.1", VFMIG_DEVICE_PCI, "mlx5_vfio_pci", 0x15b3, 0x101e,
                                           "fw_version", "28.39.1002", NULL);
        g_autoptr(VfmigProfile) multi = profile_of(rules, s, NULL, ALL_FLAGS | VFMIG_COMPAT_FLAG_NEEDS_P2P);
        g_autoptr(VfmigProfile) single = profile_of(rules, s, NULL, ALL_FLAGS);

        g_assert_true(multi->capabilities & VFMIG_CAP_NEEDS_P2P);
        g_assert_false(single->capabilities & VFMIG_CAP_NEEDS_P2P);
        expect(rules, multi, t, NULL, VFMIG_COMPAT_FLAG_STOP_COPY, false,
               "needs P2P (the RUNNING_P2P state), which the target lacks (target capabilities: stop-copy)");
        expect(rules, multi, t, NULL, VFMIG_COMPAT_FLAG_STOP_COPY | VFMIG_COMPAT_FLAG_P2P, true, NULL);
        expect(rules, single, t, NULL, VFMIG_COMPAT_FLAG_STOP_COPY, true, NULL);
        /* a target that cannot migrate at all */
        expect(rules, single, t, NULL, 0, false, "target 0000:31:00.1: device 0000:31:00.1 does not support migration");
}

/* ---- kernel-provided answers (fake hook) --------------------------------- */

typedef struct FakeKernel {
        int answer;
        int calls;
        const char *only;       /* when set, other interfaces answer -EOPNOTSUPP */
        char *last_interface, *last_parent, *last_type, *last_written;
        bool last_device_null;
} FakeKernel;

static int fake_ask(void *userdata, const VfmigKernelQuery *q, char **why)
{
        FakeKernel *k = userdata;

        if (k->only && strcmp(q->interface, k->only) != 0)
                return -EOPNOTSUPP;
        k->calls++;
        g_free(k->last_interface);
        g_free(k->last_parent);
        g_free(k->last_type);
        g_free(k->last_written);
        k->last_interface = g_strdup(q->interface);
        k->last_parent = g_strdup(q->parent);
        k->last_type = g_strdup(q->mdev_type);
        k->last_written = g_strdup(q->source->migration_version);
        k->last_device_null = q->device == NULL;
        if (k->answer == 0)
                *why = g_strdup("write-and-test returned EINVAL");
        return k->answer;
}

static void test_kernel_hook(void)
{
        g_autoptr(VfmigDevice) parent = dev_new("vfmig_testmdev", VFMIG_DEVICE_PCI, "vfmig_testmdev", 0, 0,
                                                "software_version", "2", NULL);
        g_autoptr(VfmigDevice) old_parent = dev_new("vfmig_testmdev", VFMIG_DEVICE_PCI, "vfmig_testmdev", 0, 0,
                                                    "software_version", "1", NULL);
        g_autoptr(VfmigDevice) src = mdev_new("77777777-7777-7777-7777-777777777777", old_parent, "vfmig_testmdev-small");
        g_autoptr(VfmigDevice) src2 = mdev_new("88888888-8888-8888-8888-888888888888", parent, "vfmig_testmdev-small");
        g_autoptr(VfmigProfile) p1 = profile_of(rules, src, old_parent, VFMIG_COMPAT_FLAG_STOP_COPY | VFMIG_COMPAT_FLAG_P2P);
        g_autoptr(VfmigProfile) p2 = profile_of(rules, src2, parent, VFMIG_COMPAT_FLAG_STOP_COPY | VFMIG_COMPAT_FLAG_P2P);
        FakeKernel k = { .answer = 1, .only = "migration_version" };
        VfmigKernelHook hook = { .ask = fake_ask, .userdata = &k };
        g_auto(VfmigVerdict) v = { 0 };

        g_assert_cmpstr(p1->migration_type, ==, "vfmig_testmdev:vfmig_testmdev-small");
        g_assert_cmpstr(p1->migration_version, ==, "vfmig_testmdev-small-v1");
        /* what migration/compatible_* are checked against */
        g_assert_cmpstr(g_hash_table_lookup(p1->attributes, "type"), ==, "vfmig_testmdev-small");
        g_assert_cmpstr(g_hash_table_lookup(p1->attributes, "software_version"), ==, "1");
        /* v1 → v2 host: rules and kernel agree */
        g_assert_true(vfmig_rules_check_mdev_type(rules, p1, parent, "vfmig_testmdev-small", VFMIG_COMPAT_FLAG_UNKNOWN, &hook, &v));
        g_assert_cmpint(k.calls, ==, 1);
        g_assert_cmpstr(k.last_interface, ==, "migration_version");
        g_assert_cmpstr(k.last_written, ==, "vfmig_testmdev-small-v1");
        g_assert_cmpstr(k.last_parent, ==, "vfmig_testmdev");
        g_assert_cmpstr(k.last_type, ==, "vfmig_testmdev-small");
        g_assert_true(k.last_device_null);
        vfmig_verdict_clear(&v);
        /* the kernel says no: refused with its word */
        k.answer = 0;
        g_assert_false(vfmig_rules_check_mdev_type(rules, p1, parent, "vfmig_testmdev-small", VFMIG_COMPAT_FLAG_UNKNOWN, &hook, &v));
        assert_contains(v.reasons->pdata[0], "the target's driver refused source version \"vfmig_testmdev-small-v1\" "
                                             "via migration_version: write-and-test returned EINVAL (rule vfmig-testmdev in ");
        vfmig_verdict_clear(&v);
        /* no such interface: the rules decide alone */
        k.answer = -EOPNOTSUPP;
        g_assert_true(vfmig_rules_check_mdev_type(rules, p1, parent, "vfmig_testmdev-small", VFMIG_COMPAT_FLAG_UNKNOWN, &hook, &v));
        vfmig_verdict_clear(&v);
        k.answer = -EIO;
        g_assert_false(vfmig_rules_check_mdev_type(rules, p1, parent, "vfmig_testmdev-small", VFMIG_COMPAT_FLAG_UNKNOWN, &hook, &v));
        assert_contains(v.reasons->pdata[0], "could not ask the target's driver via migration_version: Input/output error");
        vfmig_verdict_clear(&v);
        /* v2 → v1 host: the rules refuse, whatever the kernel would say */
        k.answer = 1;
        g_assert_false(vfmig_rules_check_mdev_type(rules, p2, old_parent, "vfmig_testmdev-small", VFMIG_COMPAT_FLAG_UNKNOWN, &hook, &v));
        assert_contains(v.reasons->pdata[0], "target stream version 1 is older than source stream version 2");
        vfmig_verdict_clear(&v);
        /* small → large: never */
        g_assert_false(vfmig_rules_check_mdev_type(rules, p1, parent, "vfmig_testmdev-large", VFMIG_COMPAT_FLAG_UNKNOWN, &hook, &v));
        assert_contains(v.reasons->pdata[0], "differs from the target's \"vfmig_testmdev:vfmig_testmdev-large\"");
        vfmig_verdict_clear(&v);
        /* migration-compatible: asked too, its refusal says it is that interface */
        k.only = "migration-compatible";
        k.answer = 1;
        k.calls = 0;
        g_assert_true(vfmig_rules_check_mdev_type(rules, p1, parent, "vfmig_testmdev-small", VFMIG_COMPAT_FLAG_UNKNOWN, &hook, &v));
        g_assert_cmpint(k.calls, ==, 1);
        g_assert_cmpstr(k.last_interface, ==, "migration-compatible");
        vfmig_verdict_clear(&v);
        k.answer = 0;
        g_assert_false(vfmig_rules_check_mdev_type(rules, p1, parent, "vfmig_testmdev-small", VFMIG_COMPAT_FLAG_UNKNOWN, &hook, &v));
        g_assert_cmpuint(v.reasons->len, ==, 1);
        assert_contains(v.reasons->pdata[0], "the target's driver does not accept this source via "
                                             "migration/compatible_*: write-and-test returned EINVAL (rule vfmig-testmdev in ");
        vfmig_verdict_clear(&v);
        /* both interfaces refusing: two reasons */
        k.only = NULL;
        k.calls = 0;
        g_assert_false(vfmig_rules_check_mdev_type(rules, p1, parent, "vfmig_testmdev-small", VFMIG_COMPAT_FLAG_UNKNOWN, &hook, &v));
        g_assert_cmpint(k.calls, ==, 2);
        g_assert_cmpuint(v.reasons->len, ==, 2);
        g_free(k.last_interface);
        g_free(k.last_parent);
        g_free(k.last_type);
        g_free(k.last_written);
}

/* ---- migration/compatible_* value lists --------------------------------- */

static void test_compatible_lists(void)
{
        static const struct {
                const char *list, *value;
                int want;               /* 1 admitted, 0 not, -EINVAL not understood */
                const char *why;        /* part of the refusal to understand */
        } cases[] = {
                { "vfmig_testmdev-small\n", "vfmig_testmdev-small", 1, NULL },
                { "vfmig_testmdev-small\n", "vfmig_testmdev-large", 0, NULL },
                { "vfmig_testmdev-small", "vfmig_testmdev-smal", 0, NULL },
                { "1-3\n", "1", 1, NULL },
                { "1-3", "3", 1, NULL },
                { "1-3", "4", 0, NULL },
                { "1-3", "0", 0, NULL },
                { "2-2", "2", 1, NULL },
                { "1-3", "x", 0, NULL },                 /* not a number: never in a range */
                { "1-3", "1-3", 0, NULL },               /* a range admits numbers, not its own text */
                { "5", "05", 1, NULL },                  /* numbers compare as numbers */
                { "a, b ,c", "b", 1, NULL },
                { "a,b,c", "d", 0, NULL },
                { "i915-GVTg_V4_4, i915-GVTg_V5_4", "i915-GVTg_V4_4", 1, NULL },
                { "1-2,7,10-12", "11", 1, NULL },
                { "1-2,7,10-12", "8", 0, NULL },
                { "18446744073709551615", "18446744073709551615", 1, NULL },   /* 20 digits: compared as text */
                { "1-9", "0000000000000000000001", 0, NULL },                    /* ... and never in a range */
                { "1-3", NULL, 0, NULL },                /* the source says nothing */
                { "", "1", -EINVAL, "empty" },
                { "\n", "1", -EINVAL, "empty" },
                { "a,,b", "a", -EINVAL, "item 2 is empty" },
                { ",a", "a", -EINVAL, "item 1 is empty" },
                { "a,", "a", -EINVAL, "item 2 is empty" },
                { "3-1", "2", -EINVAL, "runs backwards" },
                { "a b", "a", -EINVAL, "a space" },
                { "caf\xc3\xa9", "caf", -EINVAL, "non-ASCII" },
                { "a\x01", "a", -EINVAL, "control" },
                { "1-3,3-1", "2", -EINVAL, "runs backwards" },   /* understood whole or not at all */
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *why = NULL;
                int r = vfmig_compatible_list_admits(cases[i].list, strlen(cases[i].list), cases[i].value, &why);

                if (r != cases[i].want)
                        g_error("case %zu (\"%s\" ∋ \"%s\"): got %d, want %d (%s)", i, cases[i].list,
                                cases[i].value ? cases[i].value : "(none)", r, cases[i].want, why ? why : "");
                if (cases[i].why)
                        assert_contains(why, cases[i].why);
                else
                        g_assert_null(why);
        }
        /* length-bounded: the bytes after len are not read */
        g_assert_cmpint(vfmig_compatible_list_admits("1-3,garbage\x01", 3, "2", NULL), ==, 1);
        /* too long for a sysfs page of lists */
        {
                g_autofree char *big = g_strnfill(VFMIG_COMPATIBLE_LIST_MAX + 1, 'a');
                g_autofree char *why = NULL;
                g_assert_cmpint(vfmig_compatible_list_admits(big, strlen(big), "a", &why), ==, -EINVAL);
                assert_contains(why, "longer than");
        }
}

/* ---- acceptors: what the matrix keeps ----------------------------------- */

static void test_acceptor(void)
{
        g_autoptr(VfmigDevice) mtty = dev_new("mtty", VFMIG_DEVICE_PCI, "mtty", 0, 0, NULL);
        g_autoptr(VfmigDevice) m1 = mdev_new("99999999-9999-9999-9999-999999999999", mtty, "mtty-1");
        g_autoptr(VfmigProfile) p = profile_of(rules, m1, mtty, ALL_FLAGS);
        g_autoptr(VfmigAcceptor) a1 = NULL, a2 = NULL, a3 = NULL;
        g_autofree char *why = NULL;
        g_auto(VfmigVerdict) v = { 0 };

        g_assert_cmpint(vfmig_acceptor_new_for_mdev_type(rules, mtty, "mtty-1", VFMIG_COMPAT_FLAG_UNKNOWN, &a1, &why), ==, 0);
        g_assert_cmpint(vfmig_acceptor_new_for_mdev_type(rules, mtty, "mtty-2", VFMIG_COMPAT_FLAG_UNKNOWN, &a2, &why), ==, 0);
        g_assert_cmpstr(vfmig_acceptor_get_migration_type(a1), ==, "mtty:mtty-1");
        g_assert_cmpstr(vfmig_acceptor_get_migration_type(a2), ==, "mtty:mtty-2");
        g_assert_cmpstr(vfmig_acceptor_get_rule_id(a1), ==, "mtty");
        /* declared capabilities stand in for an instance that does not exist yet */
        g_assert_cmphex(vfmig_acceptor_get_profile(a1)->capabilities, ==,
                        VFMIG_CAP_STOP_COPY | VFMIG_CAP_P2P | VFMIG_CAP_PRE_COPY);
        for (int i = 0; i < 3; i++) {   /* reusable */
                g_assert_true(vfmig_acceptor_check(a1, p, NULL, &v));
                g_assert_cmpint(v.score, ==, 95);   /* an instance must still be created */
                vfmig_verdict_clear(&v);
        }
        g_assert_false(vfmig_acceptor_check(a2, p, NULL, &v));
        vfmig_verdict_clear(&v);
        /* the acceptor keeps its rules alive after the caller drops them */
        {
                VfmigRuleSet *rs = shipped_rules();
                g_autoptr(VfmigAcceptor) a4 = NULL;
                g_assert_cmpint(vfmig_acceptor_new(rs, m1, mtty, ALL_FLAGS, &a4, NULL), ==, 0);
                vfmig_rules_unref(rs);
                g_assert_true(vfmig_acceptor_check(a4, p, NULL, &v));
                g_assert_cmpint(v.score, ==, 100);
                vfmig_verdict_clear(&v);
        }
        g_assert_cmpint(vfmig_acceptor_new_for_mdev_type(rules, mtty, "mtty-3", 0, &a3, &why), ==, -ENOENT);
        g_assert_null(a3);
        assert_contains(why, "no compatibility rule matches device (to be created) (mdev, driver none, 0000:0000, type mtty-3)");
}

/*
 * Targets alike share one acceptor unless the rule asks the kernel: then
 * each keeps its own names, and the query names that target.
 */
static void test_acceptor_like(void)
{
        g_autoptr(VfmigDevice) mtty = dev_new("mtty", VFMIG_DEVICE_PCI, "mtty", 0, 0, NULL);
        g_autoptr(VfmigDevice) m1 = mdev_new("99999999-9999-9999-9999-999999999999", mtty, "mtty-1");
        g_autoptr(VfmigProfile) p = profile_of(rules, m1, mtty, ALL_FLAGS);
        g_autoptr(VfmigDevice) parent = dev_new("vfmig_testmdev", VFMIG_DEVICE_PCI, "vfmig_testmdev", 0, 0,
                                                "software_version", "2", NULL);
        g_autoptr(VfmigDevice) t1 = mdev_new("66666666-6666-6666-6666-666666666666", parent, "vfmig_testmdev-small");
        g_autoptr(VfmigProfile) tp = profile_of(rules, t1, parent, VFMIG_COMPAT_FLAG_STOP_COPY | VFMIG_COMPAT_FLAG_P2P);
        g_autoptr(VfmigAcceptor) a = NULL, k1 = NULL;
        FakeKernel k = { .answer = 1, .only = "migration_version" };
        VfmigKernelHook hook = { .ask = fake_ask, .userdata = &k };
        g_auto(VfmigVerdict) v = { 0 };

        /* no kernel clause: another type instance is the same acceptor */
        g_assert_cmpint(vfmig_acceptor_new_for_mdev_type(rules, mtty, "mtty-1", VFMIG_COMPAT_FLAG_UNKNOWN, &a, NULL), ==, 0);
        {
                g_autoptr(VfmigAcceptor) same = vfmig_acceptor_new_like(a, NULL, "mtty2", "mtty-1");
                g_autoptr(VfmigAcceptor) dev = vfmig_acceptor_new_like(a, "11111111-1111-1111-1111-111111111111",
                                                                       "mtty", "mtty-1");
                g_assert_true(same == a);
                /* a device is of the other kind: its own acceptor, scored as one */
                g_assert_true(dev != a);
                g_assert_true(vfmig_acceptor_is_creatable(a));
                g_assert_false(vfmig_acceptor_is_creatable(dev));
                g_assert_true(vfmig_acceptor_get_profile(dev) == vfmig_acceptor_get_profile(a));
                g_assert_true(vfmig_acceptor_check(same, p, NULL, &v));
                g_assert_cmpint(v.score, ==, 95);
                vfmig_verdict_clear(&v);
                g_assert_true(vfmig_acceptor_check(dev, p, NULL, &v));
                g_assert_cmpint(v.score, ==, 100);
                vfmig_verdict_clear(&v);
        }
        /* the shared one outlives the references dropped above */
        g_assert_true(vfmig_acceptor_check(a, p, NULL, &v));
        vfmig_verdict_clear(&v);

        /* a kernel clause: each target its own acceptor, and the query names it */
        g_assert_cmpint(vfmig_acceptor_new(rules, t1, parent, VFMIG_COMPAT_FLAG_STOP_COPY | VFMIG_COMPAT_FLAG_P2P,
                                           &k1, NULL), ==, 0);
        g_assert_true(vfmig_acceptor_uses_kernel(k1));
        {
                g_autoptr(VfmigAcceptor) k2 = vfmig_acceptor_new_like(k1, "55555555-5555-5555-5555-555555555555",
                                                                      "other_parent", "vfmig_testmdev-small");
                g_assert_true(k2 != k1);
                g_assert_true(vfmig_acceptor_get_profile(k2) == vfmig_acceptor_get_profile(k1));
                g_assert_true(vfmig_acceptor_check(k2, tp, &hook, &v));
                vfmig_verdict_clear(&v);
                g_assert_cmpint(k.calls, ==, 1);
                g_assert_false(k.last_device_null);
                g_assert_cmpstr(k.last_parent, ==, "other_parent");
                g_assert_true(vfmig_acceptor_check(k1, tp, &hook, &v));
                vfmig_verdict_clear(&v);
                g_assert_cmpint(k.calls, ==, 2);
                g_assert_cmpstr(k.last_parent, ==, "vfmig_testmdev");
        }
        g_free(k.last_interface);
        g_free(k.last_parent);
        g_free(k.last_type);
        g_free(k.last_written);
}

int main(int argc, char **argv)
{
        g_autofree char *fixtures = g_build_filename(COMPAT_FIXTURES, "vendor", NULL);
        g_autoptr(GPtrArray) errors = NULL;
        int r;

        g_test_init(&argc, &argv, NULL);
        rules = shipped_rules();
        mlx5_file = g_build_filename(VFMIG_SOURCE_DATADIR, "compat.d", "mlx5.json", NULL);
        fixture_rules = vfmig_rules_load(fixtures, NULL, &errors);
        g_assert_cmpuint(errors->len, ==, 0);
        g_test_add_func("/compat/verdict/sim-mlx5", test_sim_mlx5);
        g_test_add_func("/compat/verdict/sim-nvidia", test_sim_nvidia);
        g_test_add_func("/compat/verdict/sim-other", test_sim_other_devices);
        g_test_add_func("/compat/verdict/generations", test_generations);
        g_test_add_func("/compat/verdict/aggregator", test_aggregator);
        g_test_add_func("/compat/verdict/same-pci-id-other-attribute", test_same_pci_id_other_attribute);
        g_test_add_func("/compat/verdict/vendor-namespaces", test_vendor_namespaces);
        g_test_add_func("/compat/verdict/p2p", test_p2p);
        g_test_add_func("/compat/verdict/kernel-hook", test_kernel_hook);
        g_test_add_func("/compat/verdict/compatible-lists", test_compatible_lists);
        g_test_add_func("/compat/verdict/acceptor", test_acceptor);
        g_test_add_func("/compat/verdict/acceptor-like", test_acceptor_like);
        r = g_test_run();
        vfmig_rules_unref(rules);
        vfmig_rules_unref(fixture_rules);
        g_free(mlx5_file);
        return r;
}
