/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The host matrix (daemon/matrix.c): index, ranking, creatable types,
 * incremental updates, rules changes, fingerprint, cache persistence
 * (corrupt files, warm == cold) and the shipped simulated hosts. */
#include <errno.h>
#include <sys/stat.h>

#include "compat-test.h"
#include "matrix.h"
#include "sim-host.h"
#include "synth-host.h"

static VfmigRuleSet *rules;

#define F_ALL (VFMIG_COMPAT_FLAG_STOP_COPY | VFMIG_COMPAT_FLAG_P2P | VFMIG_COMPAT_FLAG_PRE_COPY)
#define F_SC_P2P (VFMIG_COMPAT_FLAG_STOP_COPY | VFMIG_COMPAT_FLAG_P2P)

/* ---- helpers ------------------------------------------------------------ */

static uint64_t sim_flags(const VfmigDevice *d)
{
        const SimDeviceSpec *s = d->backend_data;
        uint64_t f;

        if (!s)
                return 0;
        f = s->config.migration_flags;
        if (s->config.dma_logging)
                f |= VFMIG_COMPAT_FLAG_DMA_LOGGING;
        return f;
}

static SimHost *sim_host(const char *file)
{
        g_autofree char *path = g_build_filename(VFMIG_SOURCE_DATADIR, "sim", file, NULL);
        g_autofree char *error = NULL;
        SimHost *h = NULL;

        if (sim_host_load(path, &h, &error) < 0)
                g_error("%s: %s", path, error);
        return h;
}

static VfmigDevice *sim_device(SimHost *h, const char *name)
{
        for (guint i = 0; i < h->devices->len; i++)
                if (strcmp(((VfmigDevice *) h->devices->pdata[i])->name, name) == 0)
                        return h->devices->pdata[i];
        g_error("no device %s", name);
}

/* Feed a simulated host as the daemon would: VFIO devices, parents with the
 * identity of their PCI device. */
static void sim_populate(SimHost *h, Matrix *m)
{
        matrix_set_kernel_release(m, h->kernel_release);
        for (guint i = 0; i < h->parents->len; i++) {
                VfmigMdevParent *p = h->parents->pdata[i];
                matrix_update_parent(m, p, sim_device(h, p->name));
        }
        for (guint i = 0; i < h->devices->len; i++) {
                VfmigDevice *d = h->devices->pdata[i];
                if (d->kind == VFMIG_DEVICE_PCI && !vfmig_driver_is_vfio_pci(d->driver))
                        continue;
                matrix_update_device(m, d, NULL, sim_flags(d));
        }
}

static Matrix *sim_matrix(SimHost *h)
{
        Matrix *m = matrix_new(rules, h->host_name);

        matrix_defer(m);
        sim_populate(h, m);
        g_assert_true(matrix_build(m));
        return m;
}

static VfmigProfile *profile_of(const VfmigDevice *d, const VfmigDevice *parent, uint64_t flags)
{
        g_autofree char *why = NULL;
        VfmigProfile *p = NULL;

        if (vfmig_rules_profile_for(rules, d, parent, flags, &p, &why) < 0)
                g_error("no profile for %s: %s", d->name, why);
        return p;
}

static char *result_keys(GPtrArray *res)
{
        g_autoptr(GString) s = g_string_new(NULL);

        for (guint i = 0; i < res->len; i++) {
                MatrixResult *r = res->pdata[i];
                g_string_append_printf(s, "%s%s=%d", i ? " " : "", matrix_entry_get_key(r->entry), r->verdict.score);
        }
        return g_string_free(g_steal_pointer(&s), false);
}

static Matrix *synth_matrix(SynthHost *h)
{
        Matrix *m = matrix_new(rules, "synth");

        matrix_defer(m);
        matrix_set_kernel_release(m, "6.1.0-27-amd64");
        synth_populate(h, m);
        matrix_build(m);
        return m;
}

static VfmigDevice *vf(const char *name, const char *fw)
{
        VfmigDevice *d = synth_pci(name, "mlx5_vfio_pci", 0x15b3, 0x101e);

        synth_attr(d, "fw_version", fw);
        return d;
}

/* ---- the shipped simulated hosts ---------------------------------------- */

static void test_sim_hosts(void)
{
        g_autoptr(SimHost) a = sim_host("host-a.json");
        g_autoptr(SimHost) b = sim_host("host-b.json");
        g_autoptr(Matrix) ma = sim_matrix(a);
        g_autoptr(Matrix) mb = sim_matrix(b);
        VfmigDevice *a_vf = sim_device(a, "0000:17:00.1"), *b_vf = sim_device(b, "0000:31:00.1");
        g_autoptr(VfmigProfile) pa = profile_of(a_vf, NULL, sim_flags(a_vf));
        g_autoptr(VfmigProfile) pb = profile_of(b_vf, NULL, sim_flags(b_vf));
        g_autoptr(GPtrArray) res = NULL;
        g_autofree char *keys = NULL;
        MatrixFindOptions incompatible = { .include_incompatible = true };

        /* host-a's ConnectX-7 VF (fw 28.39) → host-b's three VFs (fw 28.41). */
        g_assert_cmpuint(matrix_find(mb, pa, NULL, NULL, &res), ==, 3);
        keys = result_keys(res);
        g_assert_cmpstr(keys, ==, "0000:31:00.1=98 0000:31:00.2=98 0000:31:00.3=98");
        for (guint i = 0; i < res->len; i++) {
                MatrixResult *r = res->pdata[i];
                g_assert_true(r->verdict.compatible);
                g_assert_cmpstr(r->verdict.rule_id, ==, "mlx5-cx7");
        }
        g_clear_pointer(&res, g_ptr_array_unref);
        g_clear_pointer(&keys, g_free);

        /* Not the reverse: host-a's firmware is older. */
        g_assert_cmpuint(matrix_find(ma, pb, NULL, NULL, &res), ==, 0);
        g_clear_pointer(&res, g_ptr_array_unref);
        g_assert_cmpuint(matrix_find(ma, pb, &incompatible, NULL, &res), ==, 2);   /* .4 cannot migrate */
        for (guint i = 0; i < res->len; i++) {
                MatrixResult *r = res->pdata[i];
                g_autofree char *text = vfmig_verdict_reasons_text(&r->verdict);
                g_assert_false(r->verdict.compatible);
                assert_contains(text, "target firmware 28.39 is older than source firmware 28.41");
        }
        g_clear_pointer(&res, g_ptr_array_unref);

        /* host-a's vGPU (nvidia-223, 535) → host-b's T4 (550) can create one. */
        {
                VfmigDevice *mdev = sim_device(a, "6f1a3c52-4b0e-4c1e-9a55-0d2b8e5f7a01");
                g_autoptr(VfmigProfile) pv = profile_of(mdev, sim_device(a, mdev->parent), sim_flags(mdev));
                MatrixFindOptions creatable = { .include_creatable = true };
                g_assert_cmpuint(matrix_find(mb, pv, NULL, NULL, &res), ==, 0);   /* no instance on b */
                g_clear_pointer(&res, g_ptr_array_unref);
                g_assert_cmpuint(matrix_find(mb, pv, &creatable, NULL, &res), ==, 1);
                MatrixResult *r = res->pdata[0];
                g_assert_cmpstr(matrix_entry_get_key(r->entry), ==, "0000:af:00.0/nvidia-223");
                g_assert_cmpint(matrix_entry_get_kind(r->entry), ==, MATRIX_ENTRY_CREATABLE);
                g_assert_cmpuint(matrix_entry_get_available_instances(r->entry), ==, 8);
                g_assert_true(r->verdict.compatible);
                g_clear_pointer(&res, g_ptr_array_unref);
                /* and back: host-a's 535 manager cannot take b's 550 state */
                g_assert_cmpuint(matrix_find(ma, pv, &creatable, NULL, &res), ==, 2);   /* a's own: instance + type */
        }
}

static void test_check(void)
{
        g_autoptr(SimHost) a = sim_host("host-a.json");
        g_autoptr(SimHost) b = sim_host("host-b.json");
        g_autoptr(Matrix) ma = sim_matrix(a);
        VfmigDevice *b_vf = sim_device(b, "0000:31:00.1"), *a_vf = sim_device(a, "0000:17:00.1");
        g_autoptr(VfmigProfile) pb = profile_of(b_vf, NULL, sim_flags(b_vf));
        g_autoptr(VfmigProfile) pa = profile_of(a_vf, NULL, sim_flags(a_vf));
        g_autofree char *text = NULL;

        {
                g_auto(VfmigVerdict) v = { 0 };
                g_assert_true(matrix_check(ma, pa, "0000:17:00.2", NULL, &v));
                g_assert_cmpint(v.score, ==, 100);
        }
        {
                g_auto(VfmigVerdict) v = { 0 };
                g_assert_false(matrix_check(ma, pb, "0000:17:00.2", NULL, &v));
                text = vfmig_verdict_reasons_text(&v);
                assert_contains(text, "older than source firmware 28.41 (rule mlx5-cx7 in ");
                g_clear_pointer(&text, g_free);
        }
        {
                /* plain vfio-pci: no rule, and the reason says where rules were read */
                g_auto(VfmigVerdict) v = { 0 };
                g_assert_false(matrix_check(ma, pa, "0000:17:00.3", NULL, &v));
                text = vfmig_verdict_reasons_text(&v);
                assert_contains(text, "no compatibility rule matches device 0000:17:00.3 (pci, driver vfio-pci");
                assert_contains(text, "rules read from ");
                assert_contains(text, "compat.d");
                g_assert_null(matrix_entry_get_acceptor(matrix_lookup(ma, "0000:17:00.3")));
                g_clear_pointer(&text, g_free);
        }
        {
                g_auto(VfmigVerdict) v = { 0 };
                g_assert_false(matrix_check(ma, pa, "0000:99:00.9", NULL, &v));
                text = vfmig_verdict_reasons_text(&v);
                assert_contains(text, "no VFIO device or creatable mdev type \"0000:99:00.9\" on host sim-host-a");
                g_clear_pointer(&text, g_free);
        }
        {
                /* a bare type id, when one parent offers it */
                VfmigDevice *mdev = sim_device(a, "6f1a3c52-4b0e-4c1e-9a55-0d2b8e5f7a01");
                g_autoptr(VfmigProfile) pv = profile_of(mdev, sim_device(a, mdev->parent), sim_flags(mdev));
                g_auto(VfmigVerdict) v = { 0 };
                g_assert_true(matrix_check(ma, pv, "nvidia-223", NULL, &v));
                g_assert_cmpint(v.score, ==, 95);   /* −5: still to be created */
        }
}

/* ---- the index ------------------------------------------------------------ */

static void test_index_visits(void)
{
        SynthHost *h = synth_host_new(4);
        g_autoptr(Matrix) m = synth_matrix(h);
        g_autoptr(VfmigDevice) cx7 = vf("src", "28.39.1002");
        g_autoptr(VfmigProfile) src = profile_of(cx7, NULL, F_ALL);
        g_autoptr(GPtrArray) res = NULL;
        guint n_type = matrix_count_type(m, src->migration_type);
        MatrixStats st;

        /* 50 ConnectX-7 VFs per block; 512 targets in all. */
        g_assert_cmpuint(n_type, ==, 200);
        g_assert_cmpuint(matrix_size(m), ==, 512);
        g_assert_cmpuint(matrix_indexed_size(m), ==, 512 - 4 * 8);
        matrix_reset_stats(m);
        matrix_find(m, src, NULL, NULL, &res);
        st = matrix_get_stats(m);
        /* Every ConnectX-7 target looked at once, nothing else; one clause
         * evaluation per class (three firmware levels), not per target. */
        g_assert_cmpuint(st.visited, ==, n_type);
        g_assert_cmpuint(st.checks, ==, 3);
        g_assert_cmpuint(res->len, ==, n_type);
        g_clear_pointer(&res, g_ptr_array_unref);

        /* a type nobody has: nothing visited */
        g_free(src->migration_type);
        src->migration_type = g_strdup("pci-15b3:mlx5-cx9");
        matrix_reset_stats(m);
        g_assert_cmpuint(matrix_find(m, src, NULL, NULL, &res), ==, 0);
        st = matrix_get_stats(m);
        g_assert_cmpuint(st.visited, ==, 0);
        g_assert_cmpuint(st.checks, ==, 0);
        synth_host_free(h);
}

static bool busy_cb(const char *key, void *userdata)
{
        return g_strv_contains(userdata, key);
}

static void test_ranking(void)
{
        g_autoptr(Matrix) m = matrix_new(rules, "rank");
        const char *fws[][2] = {
                { "0000:01:00.5", "28.43.1000" }, { "0000:01:00.1", "28.39.1002" }, { "0000:01:00.4", "28.41.1000" },
                { "0000:01:00.2", "28.39.1002" }, { "0000:01:00.3", "28.38.1000" }, { "0000:01:00.6", "22.39.1000" },
        };
        g_autoptr(VfmigDevice) s = vf("src", "28.39.1002");
        g_autoptr(VfmigProfile) src = profile_of(s, NULL, F_ALL);
        g_autoptr(GPtrArray) res = NULL;
        g_autofree char *keys = NULL;
        const char *busy[] = { "0000:01:00.1", NULL };
        MatrixFindOptions top2 = { .max_results = 2 };
        MatrixFindOptions nobusy = { .is_busy = busy_cb, .userdata = busy };
        MatrixFindOptions all = { .include_incompatible = true };

        for (guint i = 0; i < G_N_ELEMENTS(fws); i++) {
                g_autoptr(VfmigDevice) d = vf(fws[i][0], fws[i][1]);
                g_assert_true(matrix_update_device(m, d, NULL, F_ALL));
        }
        matrix_find(m, src, NULL, NULL, &res);
        keys = result_keys(res);
        /* same firmware first (100), then one (99: 28.41 is 2 minor steps
         * → 98), then 28.43 (96); by name within a score; 28.38 and 22.x refused */
        g_assert_cmpstr(keys, ==, "0000:01:00.1=100 0000:01:00.2=100 0000:01:00.4=98 0000:01:00.5=96");
        g_clear_pointer(&res, g_ptr_array_unref);
        g_clear_pointer(&keys, g_free);

        matrix_find(m, src, &top2, NULL, &res);
        keys = result_keys(res);
        g_assert_cmpstr(keys, ==, "0000:01:00.1=100 0000:01:00.2=100");
        g_clear_pointer(&res, g_ptr_array_unref);
        g_clear_pointer(&keys, g_free);

        matrix_find(m, src, &nobusy, NULL, &res);
        keys = result_keys(res);
        g_assert_cmpstr(keys, ==, "0000:01:00.2=100 0000:01:00.4=98 0000:01:00.5=96");
        g_clear_pointer(&res, g_ptr_array_unref);
        g_clear_pointer(&keys, g_free);

        /* refusals after every compatible one (the cx6dx one is another type: never seen) */
        matrix_find(m, src, &all, NULL, &res);
        keys = result_keys(res);
        g_assert_cmpstr(keys, ==, "0000:01:00.1=100 0000:01:00.2=100 0000:01:00.4=98 0000:01:00.5=96 0000:01:00.3=0");
        g_clear_pointer(&res, g_ptr_array_unref);
        g_clear_pointer(&keys, g_free);

        /* An existing device before a creatable type of the same score: a vGPU
         * instance on a 555 parent (range penalty 5) and a type on a 550 parent
         * (creatable penalty 5) both score 95 for a 550 source; the type's key
         * sorts first by name, the instance must still come first. */
        {
                g_autoptr(VfmigDevice) p1 = synth_pci("0000:af:00.0", "nvidia", 0x10de, 0x1eb8);
                g_autoptr(VfmigDevice) p2 = synth_pci("0000:b0:00.0", "nvidia", 0x10de, 0x1eb8);
                g_autoptr(VfmigMdevParent) mp = vfmig_mdev_parent_new("0000:af:00.0");
                VfmigMdevType *t = vfmig_mdev_type_new("nvidia-223");
                g_autoptr(VfmigDevice) inst = NULL, srcdev = NULL;
                g_autoptr(VfmigProfile) vsrc = NULL;
                MatrixFindOptions cr = { .include_creatable = true };

                synth_attr(p1, "vgpu_driver_version", "550.54.14");
                synth_attr(p2, "vgpu_driver_version", "555.42.02");
                g_free(mp->driver);
                mp->driver = g_strdup("nvidia");
                t->available_instances = 4;
                g_ptr_array_add(mp->types, t);
                g_assert_true(matrix_update_parent(m, mp, p1));
                inst = synth_mdev(7, 1, p2, "nvidia-223");
                g_assert_true(matrix_update_device(m, inst, p2, F_SC_P2P));
                srcdev = synth_mdev(8, 1, p1, "nvidia-223");
                vsrc = profile_of(srcdev, p1, F_SC_P2P);
                matrix_find(m, vsrc, &cr, NULL, &res);
                keys = result_keys(res);
                g_assert_cmpstr(keys, ==, "00000007-0000-4000-8000-000000000001=95 0000:af:00.0/nvidia-223=95");
                g_clear_pointer(&res, g_ptr_array_unref);
        }
}

/* ---- the query cache ------------------------------------------------------ */

static char *find_keys(Matrix *m, const VfmigProfile *src, const MatrixFindOptions *opt)
{
        g_autoptr(GPtrArray) res = NULL;

        matrix_find(m, src, opt, NULL, &res);
        return result_keys(res);
}

/* The same question again gets the kept answer only while it is still the
 * answer: a changed filter verdict, matrix, profile or option is asked anew. */
static void test_query_cache(void)
{
        g_autoptr(Matrix) m = matrix_new(rules, "qc");
        const char *fws[][2] = {
                { "0000:01:00.1", "28.39.1002" }, { "0000:01:00.2", "28.39.1002" }, { "0000:01:00.3", "28.41.1000" },
        };
        g_autoptr(VfmigDevice) s = vf("src", "28.39.1002");
        g_autoptr(VfmigProfile) src = profile_of(s, NULL, F_ALL);
        g_autoptr(VfmigProfile) src2 = NULL;
        const char *busy[3] = { NULL, NULL, NULL };
        MatrixFindOptions opt = { .is_busy = busy_cb, .userdata = busy };
        MatrixFindOptions top1 = { .max_results = 1, .is_busy = busy_cb, .userdata = busy };
        g_autoptr(GPtrArray) held = NULL;
        char *k;
        MatrixStats st;

        for (guint i = 0; i < G_N_ELEMENTS(fws); i++) {
                g_autoptr(VfmigDevice) d = vf(fws[i][0], fws[i][1]);
                g_assert_true(matrix_update_device(m, d, NULL, F_ALL));
        }
#define EXPECT(o, want, hits) do { \
                matrix_reset_stats(m); \
                k = find_keys(m, src, o); \
                g_assert_cmpstr(k, ==, want); \
                g_free(k); \
                st = matrix_get_stats(m); \
                g_assert_cmpuint(st.cache_hits, ==, hits); \
                if (hits) g_assert_cmpuint(st.checks, ==, 0); \
                else g_assert_cmpuint(st.checks, >, 0); \
        } while (0)

        EXPECT(&opt, "0000:01:00.1=100 0000:01:00.2=100 0000:01:00.3=98", 0);
        EXPECT(&opt, "0000:01:00.1=100 0000:01:00.2=100 0000:01:00.3=98", 1);
        /* a hit hands out the same (read-only) array; it outlives a change */
        matrix_find(m, src, &opt, NULL, &held);
        g_assert_cmpuint(held->len, ==, 3);

        /* the filter changes its mind about a target: asked again */
        busy[0] = "0000:01:00.2";
        EXPECT(&opt, "0000:01:00.1=100 0000:01:00.3=98", 0);
        EXPECT(&opt, "0000:01:00.1=100 0000:01:00.3=98", 1);
        busy[0] = NULL;
        EXPECT(&opt, "0000:01:00.1=100 0000:01:00.2=100 0000:01:00.3=98", 0);

        /* max-results 1: a target the run looked at (the head of every
         * class, and the next one after the answer) is asked about again */
        EXPECT(&top1, "0000:01:00.1=100", 0);
        EXPECT(&top1, "0000:01:00.1=100", 1);
        busy[0] = "0000:01:00.3";
        EXPECT(&top1, "0000:01:00.1=100", 0);
        busy[0] = "0000:01:00.1";
        EXPECT(&top1, "0000:01:00.2=100", 0);
        busy[0] = NULL;

        /* several answers are kept: questions with other options in between
         * (the one of top1 went stale: .1 is free again) */
        EXPECT(&opt, "0000:01:00.1=100 0000:01:00.2=100 0000:01:00.3=98", 1);
        EXPECT(&top1, "0000:01:00.1=100", 0);
        EXPECT(&opt, "0000:01:00.1=100 0000:01:00.2=100 0000:01:00.3=98", 1);
        EXPECT(&top1, "0000:01:00.1=100", 1);

        /* another profile: asked anew */
        src2 = vfmig_profile_copy(src);
        g_free(src2->migration_version);
        src2->migration_version = g_strdup("28.41.1000");
        g_hash_table_replace(src2->attributes, g_strdup("fw_version"), g_strdup("28.41.1000"));
        matrix_reset_stats(m);
        k = find_keys(m, src2, &top1);
        g_assert_cmpstr(k, ==, "0000:01:00.3=100");
        g_free(k);
        g_assert_cmpuint(matrix_get_stats(m).cache_hits, ==, 0);

        /* the matrix changes: a better target appears, one goes away */
        EXPECT(&opt, "0000:01:00.1=100 0000:01:00.2=100 0000:01:00.3=98", 1);
        {
                g_autoptr(VfmigDevice) d = vf("0000:01:00.0", "28.39.1002");
                g_assert_true(matrix_update_device(m, d, NULL, F_ALL));
        }
        EXPECT(&opt, "0000:01:00.0=100 0000:01:00.1=100 0000:01:00.2=100 0000:01:00.3=98", 0);
        g_assert_true(matrix_remove_device(m, "0000:01:00.1"));
        EXPECT(&opt, "0000:01:00.0=100 0000:01:00.2=100 0000:01:00.3=98", 0);
        EXPECT(&opt, "0000:01:00.0=100 0000:01:00.2=100 0000:01:00.3=98", 1);
        /* the held answer still reads (its entries are referenced) */
        k = result_keys(held);
        g_assert_cmpstr(k, ==, "0000:01:00.1=100 0000:01:00.2=100 0000:01:00.3=98");
        g_free(k);

        /* a rules change drops it too */
        {
                g_autoptr(VfmigRuleSet) rs2 = NULL;
                g_autoptr(GPtrArray) errors = NULL;
                g_autofree char *dir = g_dir_make_tmp("vfmig-qc-XXXXXX", NULL);
                g_autofree char *file = g_build_filename(dir, "mlx5.json", NULL);
                const char *text =
                        "{\"format\":1,\"namespace\":\"pci-15b3\",\"rules\":[{\"id\":\"cx7-any\","
                        "\"match\":{\"bus\":\"pci\",\"driver\":\"mlx5_vfio_pci\",\"vendor-id\":\"0x15b3\"},"
                        "\"migration-type\":\"mlx5-cx7\",\"migration-version\":\"1\","
                        "\"attributes\":{\"fw_version\":\"${fw_version}\"},"
                        "\"capabilities\":[\"stop-copy\",\"p2p\",\"pre-copy\"],"
                        "\"accept\":[{\"check\":\"equal\",\"field\":\"fw_version\"}]}]}";
                g_assert_true(g_file_set_contents(file, text, -1, NULL));
                rs2 = vfmig_rules_load(dir, NULL, &errors);
                for (guint i = 0; i < errors->len; i++)
                        g_test_message("rules error: %s", (const char *) errors->pdata[i]);
                g_assert_cmpuint(errors->len, ==, 0);
                g_assert_true(matrix_set_rules(m, rs2));
                EXPECT(&opt, "0000:01:00.0=100 0000:01:00.2=100", 0);
                g_unlink(file);
                g_rmdir(dir);
        }
#undef EXPECT
}

/* ---- creatable types ------------------------------------------------------ */

static void test_creatable(void)
{
        g_autoptr(Matrix) m = matrix_new(rules, "cr");
        g_autoptr(VfmigDevice) gpu = synth_pci("0000:3b:00.0", "nvidia", 0x10de, 0x1eb8);
        g_autoptr(VfmigMdevParent) p = vfmig_mdev_parent_new("0000:3b:00.0");
        g_autoptr(VfmigDevice) srcdev = NULL;
        g_autoptr(VfmigProfile) src = NULL;
        g_autoptr(GPtrArray) res = NULL;
        g_autofree char *keys = NULL;
        MatrixFindOptions cr = { .include_creatable = true };
        MatrixFindOptions cr_all = { .include_creatable = true, .include_unavailable = true };
        uint64_t gen;

        synth_attr(gpu, "vgpu_driver_version", "550.54.14");
        g_free(p->driver);
        p->driver = g_strdup("nvidia");
        for (guint i = 0; i < 3; i++) {
                VfmigMdevType *t = vfmig_mdev_type_new(i == 0 ? "nvidia-222" : i == 1 ? "nvidia-223" : "nvidia-224");
                t->available_instances = i == 1 ? 0 : 2;
                g_ptr_array_add(p->types, t);
        }
        g_assert_true(matrix_update_parent(m, p, gpu));
        g_assert_cmpuint(matrix_size(m), ==, 3);
        srcdev = synth_mdev(1, 1, gpu, "nvidia-223");
        src = profile_of(srcdev, gpu, F_SC_P2P);

        /* nvidia-223 is full: not offered unless asked */
        g_assert_cmpuint(matrix_find(m, src, &cr, NULL, &res), ==, 0);
        g_clear_pointer(&res, g_ptr_array_unref);
        g_assert_cmpuint(matrix_find(m, src, &cr_all, NULL, &res), ==, 1);
        g_assert_false(matrix_entry_is_available(((MatrixResult *) res->pdata[0])->entry));
        g_clear_pointer(&res, g_ptr_array_unref);
        {
                g_auto(VfmigVerdict) v = { 0 };
                g_autofree char *text = NULL;
                g_assert_false(matrix_check(m, src, "0000:3b:00.0/nvidia-223", NULL, &v));
                text = vfmig_verdict_reasons_text(&v);
                assert_contains(text, "has no available instances");
        }

        /* the same question twice: the second answer is the kept one ... */
        g_assert_cmpuint(matrix_find(m, src, &cr, NULL, &res), ==, 0);
        g_clear_pointer(&res, g_ptr_array_unref);
        matrix_reset_stats(m);
        g_assert_cmpuint(matrix_find(m, src, &cr, NULL, &res), ==, 0);
        g_clear_pointer(&res, g_ptr_array_unref);
        g_assert_cmpuint(matrix_get_stats(m).cache_hits, ==, 1);

        /* ... until an instance is destroyed: 223 has room again; one generation step */
        gen = matrix_generation(m);
        ((VfmigMdevType *) p->types->pdata[1])->available_instances = 1;
        g_assert_true(matrix_update_parent(m, p, gpu));
        g_assert_cmpuint(matrix_generation(m), ==, gen + 1);
        g_assert_false(matrix_update_parent(m, p, gpu));
        g_assert_cmpuint(matrix_generation(m), ==, gen + 1);
        matrix_find(m, src, &cr, NULL, &res);
        keys = result_keys(res);
        g_assert_cmpstr(keys, ==, "0000:3b:00.0/nvidia-223=95");
        g_clear_pointer(&res, g_ptr_array_unref);

        /* a type disappears from the parent */
        vfmig_mdev_type_free(g_ptr_array_steal_index(p->types, 2));
        g_assert_true(matrix_update_parent(m, p, gpu));
        g_assert_null(matrix_lookup(m, "0000:3b:00.0/nvidia-224"));
        g_assert_cmpuint(matrix_size(m), ==, 2);

        /* the parent goes */
        g_assert_true(matrix_remove_parent(m, "0000:3b:00.0"));
        g_assert_cmpuint(matrix_size(m), ==, 0);
        g_assert_false(matrix_remove_parent(m, "0000:3b:00.0"));
}

/* ---- incremental updates -------------------------------------------------- */

static void test_incremental(void)
{
        SynthHost *h = synth_host_new(4);
        g_autoptr(Matrix) m = synth_matrix(h);
        g_autoptr(GHashTable) before = g_hash_table_new(g_str_hash, g_str_equal);
        VfmigDevice *d = h->devices->pdata[40];    /* a ConnectX-7 VF of block 1 */
        uint64_t fl = g_array_index(h->flags, uint64_t, 40);
        g_autoptr(VfmigDevice) c = NULL;
        const VfmigAcceptor *old;
        uint64_t gen = matrix_generation(m);
        g_autofree char *fp = g_strdup(matrix_fingerprint(m));
        GHashTableIter it;
        gpointer k, v;
        guint same = 0;

        g_assert_cmpstr(d->driver, ==, "mlx5_vfio_pci");
        g_assert_cmpuint(gen, ==, 1);
        for (guint i = 0; i < h->devices->len; i++) {
                const char *name = ((VfmigDevice *) h->devices->pdata[i])->name;
                g_hash_table_insert(before, (gpointer) name, (gpointer) matrix_entry_get_acceptor(matrix_lookup(m, name)));
        }
        old = matrix_entry_get_acceptor(matrix_lookup(m, d->name));
        g_assert_nonnull(old);

        /* The same device again: nothing changes. */
        g_assert_false(matrix_update_device(m, d, NULL, fl));
        g_assert_cmpuint(matrix_generation(m), ==, gen);

        /* A firmware update: exactly that entry, one generation step. */
        c = vf(d->name, "28.45.1000");
        synth_attr(c, "driver_version", "6.1.0");
        g_assert_true(matrix_update_device(m, c, NULL, fl));
        g_assert_cmpuint(matrix_generation(m), ==, gen + 1);
        g_assert_true(matrix_entry_get_acceptor(matrix_lookup(m, d->name)) != old);
        g_assert_cmpstr(g_hash_table_lookup(matrix_entry_get_profile(matrix_lookup(m, d->name))->attributes,
                                            "fw_version"), ==, "28.45.1000");
        g_hash_table_iter_init(&it, before);
        while (g_hash_table_iter_next(&it, &k, &v)) {
                if (strcmp(k, d->name) == 0)
                        continue;
                g_assert_true(matrix_entry_get_acceptor(matrix_lookup(m, k)) == v);
                same++;
        }
        g_assert_cmpuint(same, ==, h->devices->len - 1);
        g_assert_cmpstr(matrix_fingerprint(m), !=, fp);

        /* Fields the rules do not read (sysfs path, NUMA node): no change. */
        old = matrix_entry_get_acceptor(matrix_lookup(m, d->name));
        g_free(c->sysfs_path);
        c->sysfs_path = g_strdup("/sys/devices/pci0000:00/x");
        c->numa_node = 1;
        g_assert_false(matrix_update_device(m, c, NULL, fl));
        g_assert_cmpuint(matrix_generation(m), ==, gen + 1);

        /* An attribute no rule exports: the content is the same (generation
         * stays, the acceptor stays), the fingerprint moves. */
        g_free(fp);
        fp = g_strdup(matrix_fingerprint(m));
        synth_attr(c, "driver_version", "6.1.1");
        g_assert_false(matrix_update_device(m, c, NULL, fl));
        g_assert_cmpuint(matrix_generation(m), ==, gen + 1);
        g_assert_true(matrix_entry_get_acceptor(matrix_lookup(m, d->name)) == old);
        g_assert_cmpstr(matrix_fingerprint(m), !=, fp);
        g_assert_true(matrix_needs_save(m));

        /* Flags: losing P2P changes the profile. */
        g_assert_true(matrix_update_device(m, c, NULL, fl & ~VFMIG_COMPAT_FLAG_P2P));
        g_assert_cmpuint(matrix_generation(m), ==, gen + 2);

        /* A new device. */
        {
                g_autoptr(VfmigDevice) n = vf("0000:ee:00.1", "28.39.1002");
                guint size = matrix_size(m);
                g_assert_true(matrix_update_device(m, n, NULL, F_ALL));
                g_assert_cmpuint(matrix_generation(m), ==, gen + 3);
                g_assert_cmpuint(matrix_size(m), ==, size + 1);
        }
        synth_host_free(h);
}

static void test_remove(void)
{
        SynthHost *h = synth_host_new(1);
        g_autoptr(Matrix) m = synth_matrix(h);
        g_autoptr(VfmigDevice) s = vf("src", "28.39.1002");
        g_autoptr(VfmigProfile) src = profile_of(s, NULL, F_ALL);
        g_autoptr(GPtrArray) res = NULL;
        uint64_t gen = matrix_generation(m);
        guint n = matrix_find(m, src, NULL, NULL, &res);
        const char *victim = matrix_entry_get_key(((MatrixResult *) res->pdata[0])->entry);
        g_autofree char *name = g_strdup(victim);
        g_autoptr(MatrixEntry) held = matrix_entry_ref(((MatrixResult *) res->pdata[0])->entry);

        g_clear_pointer(&res, g_ptr_array_unref);
        g_assert_true(matrix_remove_device(m, name));
        g_assert_cmpuint(matrix_generation(m), ==, gen + 1);
        g_assert_null(matrix_lookup(m, name));
        g_assert_cmpuint(matrix_find(m, src, NULL, NULL, &res), ==, n - 1);
        for (guint i = 0; i < res->len; i++)
                g_assert_cmpstr(matrix_entry_get_key(((MatrixResult *) res->pdata[i])->entry), !=, name);
        /* a held entry stays readable */
        g_assert_cmpstr(matrix_entry_get_key(held), ==, name);
        g_assert_nonnull(matrix_entry_get_profile(held));
        g_assert_false(matrix_remove_device(m, name));
        g_assert_false(matrix_remove_device(m, "0001:00:00.0/nvidia-222"));   /* not a device */
        g_assert_cmpuint(matrix_generation(m), ==, gen + 1);
        synth_host_free(h);
}

/* A parent's identity changes (vGPU manager update): its types and its
 * instances follow. */
static void test_parent_identity(void)
{
        SynthHost *h = synth_host_new(1);
        g_autoptr(Matrix) m = synth_matrix(h);
        VfmigMdevParent *p = h->parents->pdata[0];
        VfmigDevice *pid = h->parent_ids->pdata[0];
        MatrixEntry *inst = matrix_lookup(m, "00000000-0000-4000-8000-000000000000");
        uint64_t gen = matrix_generation(m);

        g_assert_cmpstr(g_hash_table_lookup(matrix_entry_get_profile(inst)->attributes, "vgpu_driver_version"), ==,
                        "535.129.03");
        synth_attr(pid, "vgpu_driver_version", "550.54.14");
        g_assert_true(matrix_update_parent(m, p, pid));
        g_assert_cmpuint(matrix_generation(m), ==, gen + 1);
        inst = matrix_lookup(m, "00000000-0000-4000-8000-000000000000");
        g_assert_cmpstr(g_hash_table_lookup(matrix_entry_get_profile(inst)->attributes, "vgpu_driver_version"), ==,
                        "550.54.14");
        g_assert_cmpstr(g_hash_table_lookup(matrix_entry_get_profile(matrix_lookup(m, "0001:00:00.0/nvidia-230"))
                                            ->attributes, "vgpu_driver_version"), ==, "550.54.14");
        synth_host_free(h);
}

/* ---- rules changes ---------------------------------------------------------- */

static char *rules_copy(void)
{
        g_autofree char *src = g_build_filename(VFMIG_SOURCE_DATADIR, "compat.d", NULL);
        g_autoptr(GDir) d = g_dir_open(src, 0, NULL);
        char *dir = tmpdir_new();
        const char *n;

        while ((n = g_dir_read_name(d))) {
                g_autofree char *p = g_build_filename(src, n, NULL), *text = NULL;
                g_assert_true(g_file_get_contents(p, &text, NULL, NULL));
                write_file(dir, n, text);
        }
        return dir;
}

static void edit_file(const char *dir, const char *name, const char *from, const char *to)
{
        g_autofree char *p = g_build_filename(dir, name, NULL), *text = NULL;
        g_autoptr(GString) s = NULL;

        g_assert_true(g_file_get_contents(p, &text, NULL, NULL));
        s = g_string_new(text);
        g_assert_cmpuint(g_string_replace(s, from, to, 1), ==, 1);
        write_file(dir, name, s->str);
}

static VfmigRuleSet *load_rules(const char *dir)
{
        g_autoptr(GPtrArray) errors = NULL;
        VfmigRuleSet *rs = vfmig_rules_load(dir, NULL, &errors);

        g_assert_cmpuint(errors->len, ==, 0);
        return rs;
}

static void test_rules_change(void)
{
        g_autofree char *dir = rules_copy();
        g_autoptr(VfmigRuleSet) rs1 = load_rules(dir);
        g_autoptr(VfmigRuleSet) rs1b = NULL, rs2 = NULL, rs3 = NULL;
        SynthHost *h = synth_host_new(2);
        g_autoptr(Matrix) m = matrix_new(rs1, "rules");
        g_autoptr(VfmigDevice) s = vf("src", "28.39.1002");
        g_autoptr(VfmigProfile) src = NULL;
        g_autoptr(GPtrArray) res = NULL;
        g_autofree char *fp = NULL, *exp1 = NULL;
        uint64_t gen;

        matrix_defer(m);
        synth_populate(h, m);
        matrix_build(m);
        gen = matrix_generation(m);
        fp = g_strdup(matrix_fingerprint(m));
        exp1 = matrix_export_json(m);

        /* The same files loaded again: no-op. */
        rs1b = load_rules(dir);
        g_assert_false(matrix_set_rules(m, rs1b));
        g_assert_cmpuint(matrix_generation(m), ==, gen);

        /* A rules file changes in a way no entry sees (its "source" note):
         * every entry re-evaluated, content the same, fingerprint moves. */
        edit_file(dir, "qat.json", "\"source\": \"", "\"source\": \"(edited) ");
        rs2 = load_rules(dir);
        g_assert_false(matrix_set_rules(m, rs2));
        g_assert_cmpuint(matrix_generation(m), ==, gen);
        g_assert_cmpstr(matrix_fingerprint(m), !=, fp);

        /* The mlx5 accept clause changes: a firmware minor must now match
         * exactly (same: 2); one generation step; the query follows. */
        edit_file(dir, "mlx5.json", "\"field\": \"fw_version\", \"same\": 1", "\"field\": \"fw_version\", \"same\": 2");
        rs3 = load_rules(dir);
        src = profile_of(s, NULL, F_ALL);
        g_assert_cmpuint(matrix_find(m, src, NULL, NULL, &res), ==, 100);   /* 28.39, 28.41, 28.43 of 2 blocks */
        g_clear_pointer(&res, g_ptr_array_unref);
        g_assert_true(matrix_set_rules(m, rs3));
        g_assert_cmpuint(matrix_generation(m), ==, gen + 1);
        g_assert_true(matrix_get_rules(m) == rs3);
        g_assert_cmpuint(matrix_find(m, src, NULL, NULL, &res), ==, 33);     /* only 28.39.x */
        synth_host_free(h);
        tmpdir_remove(dir);
}

/* ---- fingerprint -------------------------------------------------------------- */

static char *fp_of(SynthHost *h, VfmigRuleSet *rs, const char *kernel, bool reverse)
{
        g_autoptr(Matrix) m = matrix_new(rs, reverse ? "other-name" : "synth");

        matrix_defer(m);
        matrix_set_kernel_release(m, kernel);
        matrix_set_driver_version(m, "mlx5_vfio_pci", "6.1.0");
        if (!reverse) {
                synth_populate(h, m);
        } else {
                for (guint i = h->devices->len; i-- > 0;)
                        matrix_update_device(m, h->devices->pdata[i], NULL, g_array_index(h->flags, uint64_t, i));
                for (guint i = h->parents->len; i-- > 0;)
                        matrix_update_parent(m, h->parents->pdata[i], h->parent_ids->pdata[i]);
        }
        return g_strdup(matrix_fingerprint(m));
}

static void test_fingerprint(void)
{
        SynthHost *h = synth_host_new(1);
        g_autofree char *dir = rules_copy();
        g_autoptr(VfmigRuleSet) rs = load_rules(dir), rs2 = NULL;
        g_autofree char *base = fp_of(h, rs, "6.1.0-27-amd64", false), *x = NULL;
        VfmigDevice *d = h->devices->pdata[10];
        VfmigMdevParent *p = h->parents->pdata[0];

        g_assert_true(g_str_has_prefix(base, "sha256:"));
        /* order of events and host name do not matter */
        x = fp_of(h, rs, "6.1.0-27-amd64", true);
        g_assert_cmpstr(x, ==, base);
        g_clear_pointer(&x, g_free);
        /* nor NUMA node, IOMMU group, sysfs path, availability */
        d->numa_node = 3;
        d->iommu_group = 77;
        g_free(d->sysfs_path);
        d->sysfs_path = g_strdup("/sys/bus/pci/devices/x");
        ((VfmigMdevType *) p->types->pdata[0])->available_instances = 0;
        x = fp_of(h, rs, "6.1.0-27-amd64", false);
        g_assert_cmpstr(x, ==, base);
        g_clear_pointer(&x, g_free);
        /* an attribute does, and reverting it restores the fingerprint */
        synth_attr(d, "fw_version", "28.99.0");
        x = fp_of(h, rs, "6.1.0-27-amd64", false);
        g_assert_cmpstr(x, !=, base);
        g_clear_pointer(&x, g_free);
        synth_attr(d, "fw_version", "28.41.1000");
        x = fp_of(h, rs, "6.1.0-27-amd64", false);
        g_assert_cmpstr(x, ==, base);
        g_clear_pointer(&x, g_free);
        /* the bound driver */
        g_free(d->driver);
        d->driver = g_strdup("vfio-pci");
        x = fp_of(h, rs, "6.1.0-27-amd64", false);
        g_assert_cmpstr(x, !=, base);
        g_clear_pointer(&x, g_free);
        g_free(d->driver);
        d->driver = g_strdup("mlx5_vfio_pci");
        /* the kernel release */
        x = fp_of(h, rs, "6.1.0-31-amd64", false);
        g_assert_cmpstr(x, !=, base);
        g_clear_pointer(&x, g_free);
        /* a rules file */
        edit_file(dir, "virtio.json", "\"source\": \"", "\"source\": \"x");
        rs2 = load_rules(dir);
        x = fp_of(h, rs2, "6.1.0-27-amd64", false);
        g_assert_cmpstr(x, !=, base);
        g_clear_pointer(&x, g_free);
        /* a driver version */
        {
                g_autoptr(Matrix) m = matrix_new(rs, "synth");
                g_autofree char *f1 = NULL;
                matrix_set_kernel_release(m, "6.1.0-27-amd64");
                synth_populate(h, m);
                g_assert_true(matrix_set_driver_version(m, "mlx5_vfio_pci", "6.1.0"));
                f1 = g_strdup(matrix_fingerprint(m));
                g_assert_cmpstr(f1, ==, base);
                g_assert_false(matrix_set_driver_version(m, "mlx5_vfio_pci", "6.1.0"));
                g_assert_true(matrix_set_driver_version(m, "mlx5_vfio_pci", "6.6.0"));
                g_assert_cmpstr(matrix_fingerprint(m), !=, f1);
        }
        synth_host_free(h);
        tmpdir_remove(dir);
}

/* ---- persistence --------------------------------------------------------------- */

/* A start as the daemon does it: record the inventory, then load. */
static Matrix *start(SynthHost *h, const char *kernel, const char *dir, int *warm, char **warning)
{
        Matrix *m = matrix_new(rules, "synth");

        matrix_defer(m);
        matrix_set_kernel_release(m, kernel);
        synth_populate(h, m);
        *warm = matrix_load(m, dir, NULL, warning);
        g_assert_false(matrix_is_deferred(m));
        return m;
}

static void test_warm_equals_cold(void)
{
        SynthHost *h = synth_host_new(3);
        g_autofree char *dir = tmpdir_new(), *cold_json = NULL, *warm_json = NULL, *warning = NULL;
        g_autofree char *error = NULL;
        g_autoptr(Matrix) cold = NULL, warm = NULL, stale = NULL;
        g_autoptr(GDir) gd = NULL;
        MatrixStats st;
        int w = -1;

        /* no cache: cold, no warning */
        cold = start(h, "6.1.0-27-amd64", dir, &w, &warning);
        g_assert_cmpint(w, ==, 0);
        g_assert_null(warning);
        g_assert_cmpuint(matrix_get_stats(cold).evaluations, ==, matrix_size(cold));
        g_assert_true(matrix_needs_save(cold));
        g_assert_cmpint(matrix_save(cold, dir, &error), ==, 0);
        g_assert_false(matrix_needs_save(cold));
        cold_json = matrix_export_json(cold);
        /* atomic write: nothing but the cache left behind */
        gd = g_dir_open(dir, 0, NULL);
        g_assert_cmpstr(g_dir_read_name(gd), ==, MATRIX_CACHE_FILE);
        g_assert_null(g_dir_read_name(gd));

        warm = start(h, "6.1.0-27-amd64", dir, &w, &warning);
        g_assert_cmpint(w, ==, 1);
        g_assert_null(warning);
        st = matrix_get_stats(warm);
        g_assert_cmpuint(st.evaluations, ==, 0);        /* no rule matching at all */
        g_assert_cmpuint(st.restored, ==, matrix_size(warm));
        warm_json = matrix_export_json(warm);
        g_assert_cmpstr(warm_json, ==, cold_json);
        g_assert_cmpuint(matrix_generation(warm), ==, matrix_generation(cold));
        g_assert_false(matrix_needs_save(warm));

        /* the warm matrix answers and updates like the cold one */
        {
                g_autoptr(VfmigDevice) s = vf("src", "28.41.1000");
                g_autoptr(VfmigProfile) src = profile_of(s, NULL, F_ALL);
                g_autoptr(GPtrArray) r1 = NULL, r2 = NULL;
                g_autofree char *k1 = NULL, *k2 = NULL;
                matrix_find(cold, src, NULL, NULL, &r1);
                matrix_find(warm, src, NULL, NULL, &r2);
                k1 = result_keys(r1);
                k2 = result_keys(r2);
                g_assert_cmpstr(k1, ==, k2);
                g_assert_cmpuint(r1->len, >, 0);
                g_autoptr(VfmigDevice) c = vf(((VfmigDevice *) h->devices->pdata[30])->name, "28.45.1000");
                synth_attr(c, "driver_version", "6.1.0");
                g_assert_true(matrix_update_device(warm, c, NULL, F_ALL | VFMIG_COMPAT_FLAG_DMA_LOGGING));
                g_assert_true(matrix_update_device(cold, c, NULL, F_ALL | VFMIG_COMPAT_FLAG_DMA_LOGGING));
                g_free(warm_json);
                g_free(cold_json);
                warm_json = matrix_export_json(warm);
                cold_json = matrix_export_json(cold);
                g_assert_cmpstr(warm_json, ==, cold_json);
        }

        /* stale: another kernel; cold, with a warning, generation one up */
        stale = start(h, "6.1.0-31-amd64", dir, &w, &warning);
        g_assert_cmpint(w, ==, 0);
        assert_contains(warning, "stale");
        assert_contains(warning, dir);
        g_assert_cmpuint(matrix_generation(stale), ==, 2);
        g_clear_pointer(&warning, g_free);

        tmpdir_remove(dir);
        synth_host_free(h);
}

static char *read_text(const char *dir)
{
        g_autofree char *p = g_build_filename(dir, MATRIX_CACHE_FILE, NULL);
        g_autoptr(GMappedFile) f = g_mapped_file_new(p, false, NULL);

        g_assert_nonnull(f);
        return g_strndup(g_mapped_file_get_contents(f), g_mapped_file_get_length(f));
}

/* The export without its generation line: a cold start after a readable but
 * unusable cache counts on from the cache's generation. */
static char *content_of(Matrix *m)
{
        g_autofree char *json = matrix_export_json(m);
        g_autoptr(GRegex) re = g_regex_new("\"generation\" : [0-9]+,", 0, 0, NULL);

        return g_regex_replace_literal(re, json, -1, 0, "", 0, NULL);
}

static void assert_content(Matrix *m, const char *expected)
{
        g_autofree char *c = content_of(m);

        if (strcmp(c, expected) != 0)
                g_error("the matrix content differs from the cold build's");
}

/* A well framed cache around any body (so that the shape checks are reached). */
static void write_framed(const char *dir, const char *body)
{
        g_autofree char *sum = matrix_cache_checksum(body, strlen(body));
        g_autofree char *text = g_strdup_printf("{\"vfmig-matrix-cache\":1,\"checksum\":\"%s\",\"body\":%s}\n", sum,
                                                body);

        write_file(dir, MATRIX_CACHE_FILE, text);
}

/* The cache body m would write, with its fingerprint replaced by fp. */
static char *body_with_fp(Matrix *m, const char *fp)
{
        g_autofree char *dir = tmpdir_new(), *text = NULL;
        g_autoptr(GString) body = NULL;
        const char *b;

        g_assert_cmpint(matrix_save(m, dir, NULL), ==, 0);
        text = read_text(dir);
        tmpdir_remove(dir);
        b = strstr(text, "\"body\":") + strlen("\"body\":");
        body = g_string_new_len(b, (gssize) strlen(b) - 2);
        g_assert_cmpuint(g_string_replace(body, matrix_fingerprint(m), fp, 0), ==, 1);
        return g_string_free(g_steal_pointer(&body), false);
}

static void test_corrupt_cache(void)
{
        SynthHost *h = synth_host_new(1);
        g_autofree char *dir = tmpdir_new(), *valid = NULL, *cold_json = NULL, *body = NULL, *fp = NULL;
        g_autoptr(Matrix) ref = NULL;
        int w;

        {
                g_autofree char *warning = NULL;
                ref = start(h, "6.1.0-27-amd64", dir, &w, &warning);
                g_assert_cmpint(matrix_save(ref, dir, NULL), ==, 0);
                cold_json = content_of(ref);
                valid = read_text(dir);
                fp = g_strdup(matrix_fingerprint(ref));
                /* the body of the valid file */
                const char *b = strstr(valid, "\"body\":") + strlen("\"body\":");
                body = g_strndup(b, strlen(b) - 2);   /* minus "}\n" */
        }
        /* sanity: the valid file loads warm, also re-framed by the test */
        {
                g_autofree char *warning = NULL;
                g_autoptr(Matrix) m = NULL;
                write_framed(dir, body);
                m = start(h, "6.1.0-27-amd64", dir, &w, &warning);
                g_assert_null(warning);
                g_assert_cmpint(w, ==, 1);
        }

        g_autofree char *trunc = g_strndup(valid, strlen(valid) / 2);
        g_autofree char *flipped = g_strdup(valid);
        flipped[strlen(flipped) / 2] ^= 0x04;
        g_autofree char *v2 = g_strdup(valid);
        v2[strlen("{\"vfmig-matrix-cache\":")] = '2';
        g_autofree char *nul = g_strdup(valid);
        nul[40] = '\0';
        const struct { const char *name, *text; gssize len; const char *why; } raw[] = {
                { "empty", "", 0, "empty file" },
                { "garbage", "\x89PNG\r\n\x1a\n garbage \xff\xfe", -1, "not a vfmig matrix cache" },
                { "truncated", trunc, -1, "truncated" },
                { "bit flip", flipped, -1, "checksum mismatch" },
                { "wrong version", v2, -1, "cache version 2 is not 1" },
                { "no version", "{\"vfmig-matrix-cache\":x}", -1, "no version" },
                { "huge version", "{\"vfmig-matrix-cache\":99999999999999999999999}", -1, "no version" },
                { "nul byte", nul, (gssize) strlen(valid), "NUL" },
                { "json array", "[1,2,3]", -1, "not a vfmig matrix cache" },
        };
        for (guint i = 0; i < G_N_ELEMENTS(raw); i++) {
                g_autofree char *p = g_build_filename(dir, MATRIX_CACHE_FILE, NULL);
                g_autofree char *warning = NULL;
                g_autoptr(Matrix) m = NULL;
                g_autoptr(GError) err = NULL;
                g_assert_true(g_file_set_contents(p, raw[i].text, raw[i].len, &err));
                m = start(h, "6.1.0-27-amd64", dir, &w, &warning);
                g_test_message("%s: %s", raw[i].name, warning);
                g_assert_cmpint(w, ==, 0);
                assert_contains(warning, raw[i].why);
                assert_contains(warning, MATRIX_CACHE_FILE);
                assert_content(m, cold_json);
        }

        /* Well framed, checksum right, but the body is wrong. */
        g_autofree char *b_stale = g_strdup(body);
        memcpy(strstr(b_stale, "sha256:") + 7, "00000000", 8);
        /* Bodies of other hosts, presented with this host's fingerprint: one
         * device fewer (missing), one more (unknown); and a list twice. */
        g_autofree char *b_missing = NULL, *b_unknown = NULL, *b_dup = NULL;
        {
                g_autoptr(Matrix) fewer = matrix_new(rules, "synth"), more = matrix_new(rules, "synth");
                g_autoptr(VfmigDevice) extra = vf("0000:ee:00.1", "28.39.1002");
                g_autoptr(GRegex) re = g_regex_new("\"unmatched\":\\[(.*)\\]\\}$", 0, 0, NULL);
                matrix_set_kernel_release(fewer, "6.1.0-27-amd64");
                matrix_set_kernel_release(more, "6.1.0-27-amd64");
                synth_populate(h, fewer);
                synth_populate(h, more);
                g_assert_true(matrix_remove_device(fewer, "0000:00:00.0"));
                g_assert_true(matrix_update_device(more, extra, NULL, F_ALL));
                b_missing = body_with_fp(fewer, fp);
                b_unknown = body_with_fp(more, fp);
                b_dup = g_regex_replace(re, body, -1, 0, "\"unmatched\":[\\1,\\1]}", 0, NULL);
                g_assert_cmpstr(b_dup, !=, body);
        }
        g_autoptr(GString) b_rule = g_string_new(body);
        g_string_replace(b_rule, "\"rule\":\"mlx5-cx7\"", "\"rule\":\"no-such-rule\"", 1);
        g_autoptr(GString) b_badprof = g_string_new(body);
        g_string_replace(b_badprof, "\"format\":1", "\"format\":7", 1);
        g_autoptr(GString) b_wrongns = g_string_new(body);
        g_string_replace(b_wrongns, "\"rule\":\"mlx5-cx7\"", "\"rule\":\"virtio-net-vf\"", 1);
        g_autofree char *b_fp = g_strdup_printf("{\"fingerprint\":\"%s\",\"generation\":1", fp);
        const struct { const char *name, *body, *why; } bodies[] = {
                { "stale fingerprint", b_stale, "stale" },
                { "body not an object", "[]", "not a JSON object" },
                { "body not JSON", "{\"a\":", "not valid JSON" },
                { "no generation", "{\"fingerprint\":\"x\"}", "generation" },
                { "negative generation", "{\"generation\":-1}", "generation" },
                /* refused by the reader at the number itself */
                { "huge generation", "{\"generation\":1e400}", "number out of range" },
                { "real generation", "{\"generation\":1.0,\"fingerprint\":\"x\"}", "generation" },
                { "string generation", "{\"generation\":\"1\",\"fingerprint\":\"x\"}", "generation" },
                { "generation too big", "{\"generation\":9223372036854775807}", "generation" },
                { "fingerprint not a string", "{\"generation\":1,\"fingerprint\":5}", "fingerprint" },
                { "no lists", b_fp, "must be lists" },
                { "duplicate target", b_dup, "listed twice" },
                { "unknown target", b_unknown, "not on this host" },
                { "missing target", b_missing, "not in the cache" },
                { "unknown rule", b_rule->str, "not in force" },
                { "bad profile", b_badprof->str, "profiles[" },
                { "profile from another namespace", b_wrongns->str, "cannot come from rule" },
        };
        for (guint i = 0; i < G_N_ELEMENTS(bodies); i++) {
                g_autofree char *warning = NULL;
                g_autoptr(Matrix) m = NULL;
                g_autofree char *full = NULL;
                /* complete the bodies that are only a head */
                if (bodies[i].body == b_fp)
                        full = g_strdup_printf("%s,\"profiles\":{},\"groups\":[],\"unmatched\":[]}", b_fp);
                write_framed(dir, full ? full : bodies[i].body);
                m = start(h, "6.1.0-27-amd64", dir, &w, &warning);
                g_test_message("%s: %s", bodies[i].name, warning);
                g_assert_cmpint(w, ==, 0);
                assert_contains(warning, bodies[i].why);
                assert_content(m, cold_json);
        }
        /* wrong shapes inside groups and unmatched, with the right fingerprint */
        const char *shapes[] = {
                "[1]", "[{\"rule\":1,\"profile\":0,\"creatable\":false,\"targets\":\"\"}]",
                "[{\"rule\":\"mlx5-cx7\",\"profile\":99999999999999,\"creatable\":false,\"targets\":\"\"}]",
                "[{\"rule\":\"mlx5-cx7\",\"profile\":-1,\"creatable\":false,\"targets\":\"\"}]",
                "[{\"rule\":\"mlx5-cx7\",\"profile\":1.5,\"creatable\":false,\"targets\":\"\"}]",
                "[{\"rule\":\"mlx5-cx7\",\"profile\":0,\"creatable\":\"no\",\"targets\":\"\"}]",
                "[{\"rule\":\"mlx5-cx7\",\"profile\":0,\"creatable\":false,\"targets\":[\"a\"]}]",
        };
        for (guint i = 0; i < G_N_ELEMENTS(shapes); i++) {
                g_autofree char *warning = NULL, *b = NULL;
                g_autoptr(Matrix) m = NULL;
                b = g_strdup_printf("{\"fingerprint\":\"%s\",\"generation\":1,\"profiles\":[],\"groups\":%s,"
                                    "\"unmatched\":[{\"target\":5}]}", fp, shapes[i]);
                write_framed(dir, b);
                m = start(h, "6.1.0-27-amd64", dir, &w, &warning);
                g_test_message("shape %u: %s", i, warning);
                g_assert_cmpint(w, ==, 0);
                assert_contains(warning, "groups[0]");
                assert_content(m, cold_json);
        }
        /* damaged front-coded target lists (groups[0]'s, in the valid body) */
        {
                const char *lists[] = {
                        "5abc",                 /* a prefix longer than the key before */
                        "0a\\n",              /* a trailing separator */
                        "0a\\n\\n0b",       /* an empty line */
                        "0a\\n%b",            /* not a prefix length */
                        "0",                    /* an empty key */
                        "0a\\nz",             /* prefix 35 after a key of 1 */
                };
                const char *t = strstr(body, "\"targets\":\"");
                const char *end;
                g_assert_nonnull(t);
                t += strlen("\"targets\":\"");
                end = strchr(t, '"');
                for (guint i = 0; i < G_N_ELEMENTS(lists); i++) {
                        g_autofree char *warning = NULL, *b = NULL;
                        g_autoptr(Matrix) m = NULL;
                        b = g_strdup_printf("%.*s%s%s", (int) (t - body), body, lists[i], end);
                        write_framed(dir, b);
                        m = start(h, "6.1.0-27-amd64", dir, &w, &warning);
                        g_test_message("list %u: %s", i, warning);
                        g_assert_cmpint(w, ==, 0);
                        assert_contains(warning, "groups[0].targets: damaged target list");
                        assert_content(m, cold_json);
                }
        }
        /* a directory where the file should be */
        {
                g_autofree char *p = g_build_filename(dir, MATRIX_CACHE_FILE, NULL);
                g_autofree char *warning = NULL;
                g_autoptr(Matrix) m = NULL;
                g_unlink(p);
                g_assert_cmpint(g_mkdir(p, 0700), ==, 0);
                m = start(h, "6.1.0-27-amd64", dir, &w, &warning);
                g_assert_cmpint(w, ==, 0);
                assert_contains(warning, "not a regular file");
                g_rmdir(p);
        }
        /* random damage: never a crash; warm only when the content is intact */
        for (guint i = 0; i < 300; i++) {
                g_autofree char *t = g_strdup(valid), *warning = NULL;
                g_autofree char *p = g_build_filename(dir, MATRIX_CACHE_FILE, NULL);
                g_autoptr(Matrix) m = NULL;
                gsize len = strlen(t);
                guint pos = (guint) g_test_rand_int_range(0, (gint) len);
                if (i % 3 == 0)
                        len = pos;                                   /* truncate */
                else
                        t[pos] = (char) g_test_rand_int_range(1, 256); /* overwrite a byte */
                g_assert_true(g_file_set_contents(p, t, (gssize) len, NULL));
                m = start(h, "6.1.0-27-amd64", dir, &w, &warning);
                assert_content(m, cold_json);
                g_assert_true(w == 1 || warning != NULL);
        }
        tmpdir_remove(dir);
        synth_host_free(h);
}

/* ---- export and kernel hook ---------------------------------------------------- */

static void test_export(void)
{
        g_autoptr(SimHost) a = sim_host("host-a.json");
        g_autoptr(Matrix) m = sim_matrix(a);
        g_autofree char *json = matrix_export_json(m);
        g_autoptr(JsonParser) parser = json_parser_new();
        JsonObject *o, *types;
        JsonArray *arr;

        g_assert_true(json_parser_load_from_data(parser, json, -1, NULL));
        o = json_node_get_object(json_parser_get_root(parser));
        g_assert_cmpstr(json_object_get_string_member(o, "host"), ==, "sim-host-a");
        g_assert_cmpint(json_object_get_int_member(o, "generation"), ==, 1);
        g_assert_cmpstr(json_object_get_string_member(o, "fingerprint"), ==, matrix_fingerprint(m));
        g_assert_cmpstr(json_object_get_string_member(o, "kernel-release"), ==, "6.1.0-27-amd64");
        types = json_object_get_object_member(o, "migration-types");
        arr = json_object_get_array_member(types, "pci-15b3:mlx5-cx7");
        g_assert_cmpuint(json_array_get_length(arr), ==, 2);   /* .1 and .2; .4 has no migration flags */
        JsonObject *e = json_array_get_object_element(arr, 0);
        g_assert_cmpstr(json_object_get_string_member(e, "target"), ==, "0000:17:00.1");
        g_assert_cmpstr(json_object_get_string_member(e, "kind"), ==, "device");
        g_assert_true(json_object_get_boolean_member(e, "available"));
        g_assert_cmpstr(json_object_get_string_member(e, "rule"), ==, "mlx5-cx7");
        JsonObject *prof = json_object_get_object_member(e, "profile");
        g_assert_cmpstr(json_object_get_string_member(prof, "migration-version"), ==, "28.39.1002");
        g_assert_cmpuint(json_array_get_length(json_object_get_array_member(prof, "capabilities")), ==, 4);
        /* creatable types with availability */
        arr = json_object_get_array_member(types, "pci-10de:nvidia-223");
        g_assert_cmpuint(json_array_get_length(arr), ==, 2);   /* the instance and the type */
        e = json_array_get_object_element(arr, 0);
        g_assert_cmpstr(json_object_get_string_member(e, "target"), ==, "0000:3b:00.0/nvidia-223");
        g_assert_cmpstr(json_object_get_string_member(e, "kind"), ==, "creatable");
        g_assert_cmpint(json_object_get_int_member(e, "available-instances"), ==, 7);
        /* the rules as written, for schedulers */
        JsonObject *r = json_object_get_object_member(json_object_get_object_member(o, "rules"), "mlx5-cx7");
        assert_contains(json_object_get_string_member(r, "file"), "mlx5.json");
        g_assert_cmpstr(json_object_get_string_member(json_object_get_object_member(r, "definition"), "id"), ==,
                        "mlx5-cx7");
        /* the ones no rule takes, with reasons */
        arr = json_object_get_array_member(o, "unmatched");
        gboolean found = false;
        for (guint i = 0; i < json_array_get_length(arr); i++) {
                JsonObject *u = json_array_get_object_element(arr, i);
                if (strcmp(json_object_get_string_member(u, "target"), "0000:17:00.3") == 0) {
                        assert_contains(json_object_get_string_member(u, "reason"), "no compatibility rule");
                        found = true;
                }
        }
        g_assert_true(found);
}

typedef struct HookData {
        guint calls;            /* migration_version */
        guint compatible_calls; /* migration-compatible: answered as a target without the files */
        const char *refuse;
} HookData;

static int hook_ask(void *userdata, const VfmigKernelQuery *q, char **why)
{
        HookData *hd = userdata;

        if (strcmp(q->interface, "migration-compatible") == 0) {
                hd->compatible_calls++;
                return -EOPNOTSUPP;
        }
        hd->calls++;
        if (q->device && strcmp(q->device, hd->refuse) == 0) {
                *why = g_strdup("Invalid argument");
                return 0;
        }
        return 1;
}

static void test_kernel_hook(void)
{
        SynthHost *h = synth_host_new(2);
        g_autoptr(Matrix) m = synth_matrix(h);
        VfmigDevice *inst = NULL;
        g_autoptr(VfmigProfile) src = NULL;
        g_autoptr(GPtrArray) res = NULL;
        HookData hd = { .refuse = "00000000-0000-4000-8000-000000000014" };
        VfmigKernelHook hook = { .ask = hook_ask, .userdata = &hd };
        MatrixFindOptions opt = { .include_creatable = true };
        MatrixStats st;

        for (guint i = 0; i < h->devices->len && !inst; i++)
                if (g_strcmp0(((VfmigDevice *) h->devices->pdata[i])->mdev_type, "vfmig_testmdev-small") == 0)
                        inst = h->devices->pdata[i];
        src = profile_of(inst, synth_parent_id(h, inst->parent), VFMIG_COMPAT_FLAG_STOP_COPY);
        /* without a hook: one evaluation per class */
        matrix_reset_stats(m);
        g_assert_cmpuint(matrix_find(m, src, &opt, NULL, &res), ==, 4);   /* 2 instances + 2 types (v1 ≤ v1, v2) */
        st = matrix_get_stats(m);
        g_assert_cmpuint(st.checks, ==, 4);
        g_clear_pointer(&res, g_ptr_array_unref);
        /* with one: every target asked, the refused one left out */
        matrix_reset_stats(m);
        g_assert_cmpuint(matrix_find(m, src, &opt, &hook, &res), ==, 3);
        g_assert_cmpuint(hd.calls, ==, 4);
        g_assert_cmpuint(hd.compatible_calls, ==, 4);
        for (guint i = 0; i < res->len; i++)
                g_assert_cmpstr(matrix_entry_get_key(((MatrixResult *) res->pdata[i])->entry), !=, hd.refuse);
        g_clear_pointer(&res, g_ptr_array_unref);
        /* the kernel's answers are never kept: asked again every time */
        g_assert_cmpuint(matrix_find(m, src, &opt, &hook, &res), ==, 3);
        g_assert_cmpuint(hd.calls, ==, 8);
        g_assert_cmpuint(matrix_get_stats(m).cache_hits, ==, 0);
        synth_host_free(h);
}

int main(int argc, char **argv)
{
        int r;

        g_test_init(&argc, &argv, NULL);
        rules = shipped_rules();
        g_test_add_func("/compat/matrix/sim-hosts", test_sim_hosts);
        g_test_add_func("/compat/matrix/check", test_check);
        g_test_add_func("/compat/matrix/index-visits", test_index_visits);
        g_test_add_func("/compat/matrix/ranking", test_ranking);
        g_test_add_func("/compat/matrix/query-cache", test_query_cache);
        g_test_add_func("/compat/matrix/creatable", test_creatable);
        g_test_add_func("/compat/matrix/incremental", test_incremental);
        g_test_add_func("/compat/matrix/remove", test_remove);
        g_test_add_func("/compat/matrix/parent-identity", test_parent_identity);
        g_test_add_func("/compat/matrix/rules-change", test_rules_change);
        g_test_add_func("/compat/matrix/fingerprint", test_fingerprint);
        g_test_add_func("/compat/matrix/warm-equals-cold", test_warm_equals_cold);
        g_test_add_func("/compat/matrix/corrupt-cache", test_corrupt_cache);
        g_test_add_func("/compat/matrix/export", test_export);
        g_test_add_func("/compat/matrix/kernel-hook", test_kernel_hook);
        r = g_test_run();
        vfmig_rules_unref(rules);
        return r;
}
