/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target: the matrix cache file (CACHE_DIRECTORY/matrix.json),
 * read at every start.  The daemon wrote it, but a disk, an editor or an
 * older version can leave anything there: any content must either restore
 * the matrix of the simulated host data/sim/host-a.json or be ignored with a
 * warning that names the file, and the matrix must then be built cold.
 *
 * The first input byte chooses the mode: 'F' frames the rest as a cache
 * body, with the right checksum and "@FP@" replaced by the host's
 * fingerprint, so that mutations reach the body's decoding and the
 * restore; anything else is the whole file as it is.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include <glib/gstdio.h>

#include "matrix.h"
#include "sim-host.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static VfmigRuleSet *rules;
static SimHost *host;
static GRegex *generation_re;
static char *dir, *path, *cold_content;

/* The export without its generation (a cold build after a stale cache
 * counts on from the cache's). */
static char *content_of(Matrix *m)
{
        g_autofree char *json = matrix_export_json(m);

        return g_regex_replace_literal(generation_re, json, -1, 0, "", 0, NULL);
}

static const VfmigDevice *device_named(const char *name)
{
        for (guint i = 0; i < host->devices->len; i++)
                if (strcmp(((VfmigDevice *) host->devices->pdata[i])->name, name) == 0)
                        return host->devices->pdata[i];
        return NULL;
}

/* A deferred matrix of the host, fed as the daemon feeds it. */
static Matrix *recorded(void)
{
        Matrix *m = matrix_new(rules, host->host_name);

        matrix_defer(m);
        matrix_set_kernel_release(m, host->kernel_release);
        for (guint i = 0; i < host->parents->len; i++) {
                VfmigMdevParent *p = host->parents->pdata[i];
                matrix_update_parent(m, p, device_named(p->name));
        }
        for (guint i = 0; i < host->devices->len; i++) {
                VfmigDevice *d = host->devices->pdata[i];
                const SimDeviceSpec *s = d->backend_data;
                uint64_t flags = 0;
                if (d->kind == VFMIG_DEVICE_PCI && !vfmig_driver_is_vfio_pci(d->driver))
                        continue;
                if (s)
                        flags = s->config.migration_flags |
                                (s->config.dma_logging ? VFMIG_COMPAT_FLAG_DMA_LOGGING : 0);
                matrix_update_device(m, d, NULL, flags);
        }
        return m;
}

static void setup(void)
{
        g_autofree char *error = NULL;
        g_autoptr(GPtrArray) errors = NULL;
        g_autoptr(Matrix) m = NULL;

        rules = vfmig_rules_load(FUZZ_RULES_DIR, NULL, &errors);
        if (sim_host_load(FUZZ_HOST_FILE, &host, &error) < 0 || !rules || !errors || errors->len > 0)
                __builtin_trap();
        dir = g_dir_make_tmp("fuzz-matrix-cache-XXXXXX", NULL);
        if (!dir)
                __builtin_trap();
        path = g_build_filename(dir, MATRIX_CACHE_FILE, NULL);
        generation_re = g_regex_new("\"generation\" : [0-9]+,", 0, 0, NULL);
        m = recorded();
        matrix_build(m);
        cold_content = content_of(m);
}

/* The cache frame as matrix_save() writes it, around body. */
static char *framed(const char *body, size_t len, const char *fp)
{
        g_autoptr(GString) b = g_string_new_len(body, (gssize) len);
        g_autofree char *sum = NULL;

        g_string_replace(b, "@FP@", fp, 0);
        sum = matrix_cache_checksum(b->str, b->len);
        return g_strdup_printf("{\"vfmig-matrix-cache\":%d,\"checksum\":\"%s\",\"body\":%s}\n", MATRIX_CACHE_VERSION,
                               sum, b->str);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        g_autoptr(Matrix) m = NULL;
        g_autoptr(MatrixCacheFile) f = NULL;
        g_autofree char *warning = NULL, *text = NULL, *content = NULL;
        int r;

        if (!rules)
                setup();
        m = recorded();
        if (size > 0 && data[0] == 'F')
                text = framed((const char *) data + 1, size - 1, matrix_fingerprint(m));
        if (!g_file_set_contents(path, text ? text : (const char *) data, text ? -1 : (gssize) size, NULL))
                return 0;
        f = matrix_cache_file_read(dir);
        r = matrix_load_file(m, f, NULL, &warning);
        if (g_getenv("FUZZ_MATRIX_CACHE_VERBOSE"))     /* for seed work: what each input gave */
                fprintf(stderr, "fuzz-matrix-cache: %s\n", r == 1 ? "restored" : warning ? warning : "no file");
        if (matrix_is_deferred(m))
                __builtin_trap();           /* restored or built: never left half-way */
        if (r == 0 && (!warning || !strstr(warning, path)))
                __builtin_trap();           /* every file ignored is named, with why */
        if (r == 1 && warning)
                __builtin_trap();
        content = content_of(m);            /* walks every entry, restored or not */
        if (r == 0 && strcmp(content, cold_content) != 0)
                __builtin_trap();           /* ignored: exactly the cold matrix */
        g_unlink(path);
        return 0;
}
