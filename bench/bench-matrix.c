/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Host matrix benchmark (DESIGN §8): a synthetic host of 4096 devices and
 * creatable types; prints, in one run, plain "name value" lines:
 *   cold build vs warm start (from the cache) and their ratio (target ≤ 0.5),
 *   incremental update after one hotplug event, median and p99 over 1000
 *   events (target < 1 ms),
 *   in-process matrix_find cost, median and p99, against two baselines
 *   measured in the same run: a naive scan of every acceptor on the host,
 *   and a UNIX socket round trip between two threads (a lower bound of
 *   any D-Bus round trip, which crosses the broker twice).
 * Not a timed test: run with `meson test -C build --benchmark` or directly.
 *   bench-matrix [--blocks N]      (128 targets per block; default 32 = 4096)
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "config.h"
#include "matrix.h"
#include "synth-host.h"

static double now_us(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec * 1e6 + (double) ts.tv_nsec / 1e3;
}

static int dbl_cmp(const void *a, const void *b)
{
        double x = *(const double *) a, y = *(const double *) b;

        return x < y ? -1 : x > y;
}

static double pct(GArray *a, double p)
{
        g_array_sort(a, dbl_cmp);
        guint i = (guint) (p * (a->len - 1) + 0.5);
        return g_array_index(a, double, MIN(i, a->len - 1));
}

static VfmigRuleSet *rules;
static SynthHost *host;
static const char *kernel = "6.1.0-27-amd64";

/* A start: record the inventory, then load (warm) or build (cold). */
static Matrix *start(const char *cache_dir, int *warm, double *us)
{
        g_autofree char *warning = NULL;
        double t0 = now_us();
        Matrix *m = matrix_new(rules, "bench-host");

        matrix_defer(m);
        matrix_set_kernel_release(m, kernel);
        matrix_set_driver_version(m, "mlx5_vfio_pci", "6.1.0");
        synth_populate(host, m);
        *warm = matrix_load(m, cache_dir, NULL, &warning);
        *us = now_us() - t0;
        if (warning)
                fprintf(stderr, "warning: %s\n", warning);
        return m;
}

/* ---- UNIX socket round trip baseline -------------------------------------- */

static void *echo_thread(void *arg)
{
        int fd = *(int *) arg;
        char buf[64];
        ssize_t n;

        while ((n = read(fd, buf, sizeof buf)) > 0)
                if (write(fd, buf, (size_t) n) != n)
                        break;
        return NULL;
}

static void unix_rtt(guint rounds, double *median, double *p99)
{
        g_autoptr(GArray) t = g_array_new(false, false, sizeof(double));
        pthread_t th;
        int sv[2];
        char buf[64] = "ping";

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
                perror("socketpair");
                exit(1);
        }
        pthread_create(&th, NULL, echo_thread, &sv[1]);
        for (guint i = 0; i < rounds; i++) {
                double t0 = now_us();
                if (write(sv[0], buf, 32) != 32 || read(sv[0], buf, sizeof buf) != 32) {
                        perror("rtt");
                        exit(1);
                }
                double d = now_us() - t0;
                g_array_append_val(t, d);
        }
        shutdown(sv[0], SHUT_RDWR);
        pthread_join(th, NULL);
        close(sv[0]);
        close(sv[1]);
        *median = pct(t, 0.5);
        *p99 = pct(t, 0.99);
}

/* ---- naive baseline: every acceptor on the host -------------------------- */

static guint naive_find(Matrix *m, GPtrArray *keys, const VfmigProfile *src)
{
        guint n = 0;

        for (guint i = 0; i < keys->len; i++) {
                MatrixEntry *e = matrix_lookup(m, keys->pdata[i]);
                const VfmigAcceptor *a = e ? matrix_entry_get_acceptor(e) : NULL;
                g_auto(VfmigVerdict) v = { 0 };
                if (!a)
                        continue;
                if (vfmig_acceptor_check(a, src, NULL, &v))
                        n++;
        }
        return n;
}

static void query_bench(Matrix *m, const char *label, const VfmigProfile *src, const MatrixFindOptions *opt,
                        guint rounds, double *median_out)
{
        g_autoptr(GArray) t = g_array_new(false, false, sizeof(double));
        guint n = 0;

        for (guint i = 0; i < rounds; i++) {
                g_autoptr(GPtrArray) res = NULL;
                double t0 = now_us();
                n = matrix_find(m, src, opt, NULL, &res);
                double d = now_us() - t0;
                g_array_append_val(t, d);
        }
        printf("matrix.query.%s.results %u\n", label, n);
        printf("matrix.query.%s.median_us %.2f\n", label, pct(t, 0.5));
        printf("matrix.query.%s.p99_us %.2f\n", label, pct(t, 0.99));
        if (median_out)
                *median_out = pct(t, 0.5);
}

int main(int argc, char **argv)
{
        g_autofree char *rules_dir = g_build_filename(VFMIG_SOURCE_DATADIR, "compat.d", NULL);
        g_autoptr(GPtrArray) errors = NULL;
        g_autoptr(GError) err = NULL;
        g_autofree char *dir = g_dir_make_tmp("vfmig-bench-XXXXXX", &err);
        g_autofree char *cold_json = NULL, *warm_json = NULL, *save_err = NULL, *cache = NULL;
        g_autoptr(GArray) cold = g_array_new(false, false, sizeof(double));
        g_autoptr(GArray) warm = g_array_new(false, false, sizeof(double));
        g_autoptr(GArray) upd = g_array_new(false, false, sizeof(double));
        GArray *upd_kind[4] = { NULL };
        static const char *const kinds[4] = { "remove", "add", "change", "mdev_create" };
        g_autoptr(VfmigProfile) src = NULL, src_nv = NULL;
        Matrix *m = NULL;
        guint blocks = 32, rounds = 7;
        double us, q_median = 0, rtt_median, rtt_p99;
        int w;

        for (int i = 1; i < argc; i++)
                if (strcmp(argv[i], "--blocks") == 0 && i + 1 < argc)
                        blocks = (guint) atoi(argv[++i]);
        blocks = MAX(blocks, 1u);
        if (!dir) {
                fprintf(stderr, "tmpdir: %s\n", err->message);
                return 1;
        }
        rules = vfmig_rules_load(rules_dir, NULL, &errors);
        if (errors->len) {
                fprintf(stderr, "rules: %s\n", (const char *) errors->pdata[0]);
                return 1;
        }
        host = synth_host_new(blocks);
        printf("matrix.targets %u\n", host->targets);

        /* Cold and warm starts, alternating, median of several. */
        for (guint r = 0; r < rounds; r++) {
                Matrix *c = start(dir, &w, &us);
                if (w != 0) {
                        fprintf(stderr, "expected a cold start\n");
                        return 1;
                }
                g_array_append_val(cold, us);
                if (matrix_save(c, dir, &save_err) < 0) {
                        fprintf(stderr, "save: %s\n", save_err);
                        return 1;
                }
                if (r == 0)
                        cold_json = matrix_export_json(c);
                matrix_free(c);
                Matrix *x = start(dir, &w, &us);
                if (w != 1) {
                        fprintf(stderr, "expected a warm start\n");
                        return 1;
                }
                g_array_append_val(warm, us);
                if (r == rounds - 1) {
                        warm_json = matrix_export_json(x);
                        m = x;
                } else {
                        matrix_free(x);
                }
                cache = g_build_filename(dir, MATRIX_CACHE_FILE, NULL);
                g_unlink(cache);
                g_clear_pointer(&cache, g_free);
        }
        printf("matrix.entries %u\n", matrix_size(m));
        printf("matrix.indexed %u\n", matrix_indexed_size(m));
        printf("matrix.cold_ms %.2f\n", pct(cold, 0.5) / 1e3);
        printf("matrix.warm_ms %.2f\n", pct(warm, 0.5) / 1e3);
        printf("matrix.warm_cold_ratio %.3f\n", pct(warm, 0.5) / pct(cold, 0.5));
        printf("matrix.warm_equals_cold %d\n", strcmp(cold_json, warm_json) == 0);
        {
                struct stat st;
                cache = g_build_filename(dir, MATRIX_CACHE_FILE, NULL);
                matrix_save(m, dir, NULL);
                if (g_stat(cache, &st) == 0)
                        printf("matrix.cache_bytes %lld\n", (long long) st.st_size);
                g_clear_pointer(&cache, g_free);
        }

        /* 1000 hotplug events on the 4096-target host. */
        for (int k = 0; k < 4; k++)
                upd_kind[k] = g_array_new(false, false, sizeof(double));
        {
                guint32 seed = 12345;
                uint64_t g0 = matrix_generation(m);
                guint events = 0, changed = 0;
                for (guint i = 0; i < 1000; i++) {
                        int kind = (int) (i % 4);
                        VfmigDevice *d;
                        uint64_t fl;
                        double t0, dt;
                        guint idx;
                        seed = seed * 1103515245u + 12345u;
                        /* A PCI VF (the first 100 devices of each block after its 6 mdevs). */
                        idx = (seed >> 8) % host->devices->len;
                        d = host->devices->pdata[idx];
                        fl = g_array_index(host->flags, uint64_t, idx);
                        if (kind == 0 || kind == 1) {
                                /* unplug, then plug back in the next event */
                                static guint last;
                                if (kind == 0)
                                        last = idx;
                                d = host->devices->pdata[last];
                                fl = g_array_index(host->flags, uint64_t, last);
                                t0 = now_us();
                                changed += kind == 0 ? matrix_remove_device(m, d->name)
                                                     : matrix_update_device(m, d, NULL, fl);
                                dt = now_us() - t0;
                        } else if (kind == 2) {
                                /* a firmware update seen as a change event */
                                g_autoptr(VfmigDevice) c = synth_pci(d->name, d->driver, d->vendor_id, d->device_id);
                                c->kind = d->kind;
                                g_free(c->mdev_type);
                                c->mdev_type = g_strdup(d->mdev_type);
                                g_free(c->parent);
                                c->parent = g_strdup(d->parent);
                                synth_attr(c, "fw_version", i % 8 == 2 ? "28.45.1000" : "28.39.1002");
                                t0 = now_us();
                                changed += matrix_update_device(m, c, NULL, fl);
                                dt = now_us() - t0;
                                /* put it back (not timed) */
                                matrix_update_device(m, d, NULL, fl);
                        } else {
                                /* an mdev created on an NVIDIA parent: one fewer instance, one more device */
                                guint pi = (seed >> 4) % host->parents->len;
                                VfmigMdevParent *p = host->parents->pdata[pi];
                                const VfmigDevice *pid = host->parent_ids->pdata[pi];
                                VfmigMdevType *t = p->types->pdata[0];
                                g_autoptr(VfmigDevice) md = synth_mdev(0xffff, i, pid, t->id);
                                t->available_instances = t->available_instances ? t->available_instances - 1 : 3;
                                t0 = now_us();
                                changed += matrix_update_parent(m, p, pid);
                                changed += matrix_update_device(m, md, NULL, SYNTH_SC | SYNTH_P2P);
                                dt = now_us() - t0;
                                matrix_remove_device(m, md->name);
                        }
                        g_array_append_val(upd, dt);
                        g_array_append_val(upd_kind[kind], dt);
                        events++;
                }
                printf("matrix.update.events %u\n", events);
                printf("matrix.update.changed %u\n", changed);
                printf("matrix.update.generations %" G_GUINT64_FORMAT "\n", matrix_generation(m) - g0);
                printf("matrix.update.median_us %.2f\n", pct(upd, 0.5));
                printf("matrix.update.p99_us %.2f\n", pct(upd, 0.99));
                printf("matrix.update.max_us %.2f\n", pct(upd, 1.0));
                for (int k = 0; k < 4; k++)
                        printf("matrix.update.%s.median_us %.2f\n", kinds[k], pct(upd_kind[k], 0.5));
                printf("matrix.update.target_met %d\n", pct(upd, 0.99) < 1000.0);
        }

        /* Queries. */
        {
                VfmigDevice *cx7 = NULL, *nv = NULL;
                for (guint i = 0; i < host->devices->len && (!cx7 || !nv); i++) {
                        VfmigDevice *d = host->devices->pdata[i];
                        const char *fw = g_hash_table_lookup(d->attributes, "fw_version");
                        if (!cx7 && g_strcmp0(d->driver, "mlx5_vfio_pci") == 0 && g_strcmp0(fw, "28.39.1002") == 0)
                                cx7 = d;
                        if (!nv && g_strcmp0(d->mdev_type, "nvidia-223") == 0)
                                nv = d;
                }
                g_assert(cx7 && nv);
                g_assert(vfmig_rules_profile_for(rules, cx7, NULL, SYNTH_SC | SYNTH_P2P | SYNTH_PRE, &src, NULL) == 0);
                g_assert(vfmig_rules_profile_for(rules, nv, synth_parent_id(host, nv->parent), SYNTH_SC | SYNTH_P2P,
                                                 &src_nv, NULL) == 0);
                printf("matrix.query.cx7.candidates %u\n", matrix_count_type(m, src->migration_type));
                printf("matrix.query.nvidia.candidates %u\n", matrix_count_type(m, src_nv->migration_type));

                MatrixFindOptions top16 = { .include_creatable = true, .max_results = 16 };
                MatrixFindOptions all = { .include_creatable = true };
                query_bench(m, "cx7_top16", src, &top16, 10000, &q_median);
                query_bench(m, "cx7_all", src, &all, 1000, NULL);
                query_bench(m, "nvidia_top16", src_nv, &top16, 10000, NULL);

                g_autoptr(GPtrArray) keys = g_ptr_array_new_with_free_func(g_free);
                for (guint i = 0; i < host->devices->len; i++)
                        g_ptr_array_add(keys, g_strdup(((VfmigDevice *) host->devices->pdata[i])->name));
                g_autoptr(GArray) t = g_array_new(false, false, sizeof(double));
                guint n = 0;
                for (guint i = 0; i < 200; i++) {
                        double t0 = now_us();
                        n = naive_find(m, keys, src);
                        double d = now_us() - t0;
                        g_array_append_val(t, d);
                }
                printf("matrix.query.naive_scan.results %u\n", n);
                printf("matrix.query.naive_scan.median_us %.2f\n", pct(t, 0.5));
                printf("matrix.query.cx7_top16_vs_naive_scan_ratio %.4f\n", q_median / pct(t, 0.5));
        }
        unix_rtt(20000, &rtt_median, &rtt_p99);
        printf("baseline.unix_socket_rtt.median_us %.2f\n", rtt_median);
        printf("baseline.unix_socket_rtt.p99_us %.2f\n", rtt_p99);
        printf("matrix.query.cx7_top16_vs_unix_rtt_ratio %.3f\n", q_median / rtt_median);

        for (int k = 0; k < 4; k++)
                g_array_unref(upd_kind[k]);
        matrix_free(m);
        g_free(cache);
        cache = g_build_filename(dir, MATRIX_CACHE_FILE, NULL);
        g_unlink(cache);
        g_rmdir(dir);
        synth_host_free(host);
        vfmig_rules_unref(rules);
        return 0;
}
