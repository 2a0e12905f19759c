/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "compat-service.h"
#include "log.h"
#include "util.h"

/* Changes come in bursts (hotplug, start-up): save once they settle. */
#define SAVE_DELAY_USEC (2 * 1000 * 1000)

struct CompatService {
        CompatConfig cfg;
        char *vendor_dir, *admin_dir, *cache_dir;
        sd_event *event;
        sd_event_source *save_timer;
        VfmigRuleSet *rules;
        Matrix *matrix;
        VfmigKernelHook hook;
        GHashTable *parents;    /* names of the parents fed to the matrix */
        MatrixCacheFile *cache_file;    /* read by the preload, until the start */
        bool started;
};

struct CompatPreload {
        char *vendor_dir, *admin_dir, *cache_dir;
        GThread *thread;                /* NULL once joined (or never started) */
        VfmigRuleSet *rules;
        GPtrArray *errors;
        MatrixCacheFile *cache_file;
};

static uint64_t compat_flags(uint64_t vfio_flags, bool dma_logging)
{
        /* VFMIG_COMPAT_FLAG_{STOP_COPY,P2P,PRE_COPY} are the VFIO bits. */
        uint64_t f = vfio_flags & (VFMIG_COMPAT_FLAG_STOP_COPY | VFMIG_COMPAT_FLAG_P2P | VFMIG_COMPAT_FLAG_PRE_COPY);

        if (dma_logging)
                f |= VFMIG_COMPAT_FLAG_DMA_LOGGING;
        return f;
}

/* The target's migration/ directory (mdev, else PCI), open; -EOPNOTSUPP
 * when the driver offers none. */
static int open_migration_dir(const char *device, char **ret_path)
{
        static const char *const buses[] = { "mdev", "pci" };

        for (size_t i = 0; i < ELEMENTSOF(buses); i++) {
                g_autofree char *path = g_strdup_printf("/sys/bus/%s/devices/%s/migration", buses[i], device);
                int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

                if (fd >= 0) {
                        *ret_path = g_steal_pointer(&path);
                        return fd;
                }
                if (errno != ENOENT)
                        return -errno;
        }
        return -EOPNOTSUPP;
}

static gint compare_strings(gconstpointer a, gconstpointer b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* One migration/compatible_<name> file against the source's attribute
 * <name>; appends to fails what does not fit.  -errno when unreadable. */
static int check_compatible_file(int dir, const char *dir_path, const char *file, const VfmigProfile *source,
                                 GPtrArray *fails)
{
        const char *name = file + strlen("compatible_");
        const char *value = source->attributes ? g_hash_table_lookup(source->attributes, name) : NULL;
        g_autofree char *bad = NULL;
        char text[VFMIG_COMPATIBLE_LIST_MAX + 3];     /* the list, sysfs's newline, one more, NUL */
        _cleanup_close_ int fd = -1;
        ssize_t n;
        int r;

        fd = openat(dir, file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        n = read(fd, text, sizeof text - 1);
        if (n < 0)
                return -errno;
        text[n] = '\0';
        if ((size_t) n == sizeof text - 1) {    /* more than a list and its newline */
                g_ptr_array_add(fails, g_strdup_printf("%s/%s is longer than %d bytes", dir_path, file,
                                                       VFMIG_COMPATIBLE_LIST_MAX));
                return 0;
        }
        r = vfmig_compatible_list_admits(text, (size_t) n, value, &bad);
        g_strchomp(text);
        if (r < 0)
                g_ptr_array_add(fails, g_strdup_printf("%s/%s is not understood (%s)", dir_path, file, bad));
        else if (r == 0 && !value)
                g_ptr_array_add(fails, g_strdup_printf("the source profile has no attribute \"%s\", which the "
                                                       "target limits to \"%s\" (%s/%s)", name, text, dir_path, file));
        else if (r == 0)
                g_ptr_array_add(fails, g_strdup_printf("source %s \"%s\" is not in \"%s\" (%s/%s)", name, value,
                                                       text, dir_path, file));
        return 0;
}

/*
 * migration-compatible (seed 000): every migration/compatible_<name> file of
 * the target lists the values of <name> its driver accepts from a source;
 * the source's value is its profile's attribute <name>.  Accepted when each
 * list admits the source's value; refused, naming every list that does not.
 * A target without any such file has no such interface.
 */
static int kernel_compatible(const VfmigKernelQuery *q, char **why)
{
        g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GPtrArray) fails = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *dir_path = NULL;
        _cleanup_close_ int dir = -1;
        DIR *d;
        struct dirent *de;
        int dfd, r = 0;

        if (!q->device)
                return -EOPNOTSUPP;     /* a creatable type: no instance to read */
        if (!vfmig_device_name_is_valid(q->device))
                return -EINVAL;
        dir = open_migration_dir(q->device, &dir_path);
        if (dir < 0)
                return dir;
        dfd = dup(dir);
        if (dfd < 0)
                return -errno;
        d = fdopendir(dfd);
        if (!d) {
                r = -errno;
                close(dfd);
                return r;
        }
        for (;;) {
                errno = 0;
                de = readdir(d);
                if (!de) {
                        r = -errno;     /* 0 at the end */
                        break;
                }
                if (g_str_has_prefix(de->d_name, "compatible_") && de->d_name[strlen("compatible_")])
                        g_ptr_array_add(files, g_strdup(de->d_name));
        }
        closedir(d);
        if (r < 0)
                return r;
        if (files->len == 0)
                return -EOPNOTSUPP;
        g_ptr_array_sort(files, compare_strings);
        for (guint i = 0; r >= 0 && i < files->len; i++)
                r = check_compatible_file(dir, dir_path, files->pdata[i], q->source, fails);
        if (r < 0)
                return r;
        if (fails->len == 0)
                return 1;
        g_ptr_array_add(fails, NULL);
        *why = g_strjoinv("; ", (char **) fails->pdata);
        return 0;
}

/*
 * migration_version write-and-test (seed 001): write the source's version to
 * the target's attribute; the driver refuses an incompatible one (EINVAL).
 */
static int kernel_ask(void *userdata, const VfmigKernelQuery *q, char **why)
{
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -1;
        const char *v;
        ssize_t n;

        if (strcmp(q->interface, "migration-compatible") == 0)
                return kernel_compatible(q, why);
        if (strcmp(q->interface, "migration_version") != 0 || !q->device)
                return -EOPNOTSUPP;
        v = q->source->migration_version;
        if (!v || !vfmig_string_is_valid(v, 256))
                return 0;
        if (!vfmig_device_name_is_valid(q->device))
                return -EINVAL;
        if (asprintf(&path, "/sys/bus/mdev/devices/%s/migration_version", q->device) < 0)
                return -ENOMEM;
        fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
                if (errno == ENOENT) {
                        free(path);
                        path = NULL;
                        if (asprintf(&path, "/sys/bus/pci/devices/%s/migration_version", q->device) < 0)
                                return -ENOMEM;
                        fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
                }
                if (fd < 0)
                        return errno == ENOENT ? -EOPNOTSUPP : -errno;
        }
        n = write(fd, v, strlen(v));
        if (n < 0) {
                if (errno == EINVAL) {
                        *why = g_strdup_printf("the driver of %s refused migration_version \"%s\" (%s)",
                                               q->device, v, path);
                        return 0;
                }
                return -errno;
        }
        return 1;
}

static void load_rules(CompatService *s, VfmigRuleSet **ret, GPtrArray **errors)
{
        *ret = vfmig_rules_load(s->vendor_dir, s->admin_dir, errors);
}

static void preload_run(CompatPreload *p)
{
        p->rules = vfmig_rules_load(p->vendor_dir, p->admin_dir, &p->errors);
        if (p->cache_dir)
                p->cache_file = matrix_cache_file_read(p->cache_dir);
}

static gpointer preload_thread(gpointer userdata)
{
        preload_run(userdata);
        return NULL;
}

CompatPreload *compat_preload_start(const char *vendor_dir, const char *admin_dir, const char *cache_dir)
{
        CompatPreload *p = g_new0(CompatPreload, 1);
        g_autoptr(GError) err = NULL;

        p->vendor_dir = g_strdup(vendor_dir);
        p->admin_dir = g_strdup(admin_dir);
        p->cache_dir = g_strdup(cache_dir);
        p->thread = g_thread_try_new("vfmigd-preload", preload_thread, p, &err);
        if (!p->thread)
                preload_run(p);         /* no thread: read here, in turn */
        return p;
}

static void preload_join(CompatPreload *p)
{
        if (p->thread) {
                g_thread_join(p->thread);
                p->thread = NULL;
        }
}

void compat_preload_free(CompatPreload *p)
{
        if (!p)
                return;
        preload_join(p);
        vfmig_rules_unref(p->rules);
        if (p->errors)
                g_ptr_array_unref(p->errors);
        matrix_cache_file_free(p->cache_file);
        g_free(p->vendor_dir);
        g_free(p->admin_dir);
        g_free(p->cache_dir);
        g_free(p);
}

int compat_service_new(sd_event *event, const CompatConfig *cfg, CompatService **ret)
{
        g_autoptr(GPtrArray) errors = NULL;
        g_autoptr(CompatPreload) preload = cfg->preload;
        CompatService *s = g_new0(CompatService, 1);

        s->cfg = *cfg;
        s->vendor_dir = g_strdup(cfg->vendor_dir);
        s->admin_dir = g_strdup(cfg->admin_dir);
        s->cache_dir = g_strdup(cfg->cache_dir);
        s->event = sd_event_ref(event);
        s->parents = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        s->hook.ask = kernel_ask;
        s->hook.userdata = s;
        if (preload) {
                g_assert(streq_ptr(preload->vendor_dir, s->vendor_dir) &&
                         streq_ptr(preload->admin_dir, s->admin_dir) &&
                         streq_ptr(preload->cache_dir, s->cache_dir));
                preload_join(preload);
                s->rules = g_steal_pointer(&preload->rules);
                errors = g_steal_pointer(&preload->errors);
                s->cache_file = g_steal_pointer(&preload->cache_file);
        } else
                load_rules(s, &s->rules, &errors);
        s->cfg.preload = NULL;
        for (guint i = 0; errors && i < errors->len; i++)
                log_warning("compatibility rules: %s (file skipped)", (const char *) errors->pdata[i]);
        {
                g_autofree char *vendor = s->vendor_dir ? g_filename_display_name(s->vendor_dir) : g_strdup("(none)");
                g_autofree char *admin = s->admin_dir ? g_filename_display_name(s->admin_dir) : g_strdup("(none)");
                log_info("compatibility rules: %u rules from %s and %s", vfmig_rules_count(s->rules), vendor, admin);
        }
        s->matrix = matrix_new(s->rules, cfg->host_name);
        matrix_set_kernel_release(s->matrix, cfg->kernel_release);
        matrix_defer(s->matrix);
        *ret = s;
        return 0;
}

void compat_service_free(CompatService *s)
{
        if (!s)
                return;
        if (s->save_timer && s->cache_dir && matrix_needs_save(s->matrix)) {
                g_autofree char *err = NULL;
                if (matrix_save(s->matrix, s->cache_dir, &err) < 0)
                        log_warning("Cannot save the host matrix cache: %s", err);
        }
        sd_event_source_disable_unref(s->save_timer);
        matrix_free(s->matrix);
        matrix_cache_file_free(s->cache_file);
        vfmig_rules_unref(s->rules);
        g_hash_table_unref(s->parents);
        sd_event_unref(s->event);
        g_free(s->vendor_dir);
        g_free(s->admin_dir);
        g_free(s->cache_dir);
        g_free(s);
}

static int on_save(sd_event_source *es, uint64_t usec, void *userdata)
{
        CompatService *s = userdata;
        g_autofree char *err = NULL;

        if (matrix_needs_save(s->matrix) && matrix_save(s->matrix, s->cache_dir, &err) < 0)
                log_warning("Cannot save the host matrix cache in %s: %s", s->cache_dir, err);
        return 0;
}

static void schedule_save(CompatService *s)
{
        uint64_t now;

        if (!s->cache_dir || !s->started)
                return;
        if (sd_event_now(s->event, CLOCK_MONOTONIC, &now) < 0)
                return;
        if (s->save_timer) {
                (void) sd_event_source_set_time(s->save_timer, now + SAVE_DELAY_USEC);
                (void) sd_event_source_set_enabled(s->save_timer, SD_EVENT_ONESHOT);
                return;
        }
        (void) sd_event_add_time(s->event, &s->save_timer, CLOCK_MONOTONIC, now + SAVE_DELAY_USEC, 0,
                                 on_save, s);
}

static void changed(CompatService *s, bool did)
{
        if (!did || !s->started)
                return;
        schedule_save(s);
        if (s->cfg.changed)
                s->cfg.changed(matrix_generation(s->matrix), s->cfg.userdata);
}

void compat_service_start(CompatService *s)
{
        g_autofree char *warning = NULL, *err = NULL;
        int r = 0;

        if (s->cache_file)
                r = matrix_load_file(s->matrix, s->cache_file, NULL, &warning);
        else if (s->cache_dir)
                r = matrix_load(s->matrix, s->cache_dir, NULL, &warning);
        g_clear_pointer(&s->cache_file, matrix_cache_file_free);
        if (warning)
                log_warning("Host matrix cache ignored: %s", warning);
        if (r <= 0)
                matrix_build(s->matrix);
        log_info("host matrix %s: %u targets, %u with a rule, generation %" PRIu64,
                 r > 0 ? "restored from cache" : "evaluated", matrix_size(s->matrix),
                 matrix_indexed_size(s->matrix), matrix_generation(s->matrix));
        s->started = true;
        if (s->cache_dir && matrix_needs_save(s->matrix) && matrix_save(s->matrix, s->cache_dir, &err) < 0)
                log_warning("Cannot save the host matrix cache in %s: %s", s->cache_dir, err);
}

void compat_service_device_updated(CompatService *s, const VfmigDevice *dev, uint64_t vfio_flags, bool dma_logging)
{
        const VfmigDevice *parent = NULL;

        if (dev->kind == VFMIG_DEVICE_MDEV && s->cfg.identity)
                parent = s->cfg.identity(dev->parent, s->cfg.userdata);
        changed(s, matrix_update_device(s->matrix, dev, parent, compat_flags(vfio_flags, dma_logging)));
}

void compat_service_device_removed(CompatService *s, const char *name)
{
        changed(s, matrix_remove_device(s->matrix, name));
}

void compat_service_parents_updated(CompatService *s, GPtrArray *parents)
{
        g_autoptr(GHashTable) now = g_hash_table_new(g_str_hash, g_str_equal);
        g_autoptr(GPtrArray) gone = g_ptr_array_new_with_free_func(g_free);
        GHashTableIter it;
        gpointer key;
        bool did = false;

        for (guint i = 0; i < parents->len; i++) {
                const VfmigMdevParent *p = parents->pdata[i];
                const VfmigDevice *id = s->cfg.identity ? s->cfg.identity(p->name, s->cfg.userdata) : NULL;

                g_hash_table_add(now, p->name);
                did |= matrix_update_parent(s->matrix, p, id);
                g_hash_table_add(s->parents, g_strdup(p->name));
        }
        g_hash_table_iter_init(&it, s->parents);
        while (g_hash_table_iter_next(&it, &key, NULL))
                if (!g_hash_table_contains(now, key))
                        g_ptr_array_add(gone, g_strdup(key));
        for (guint i = 0; i < gone->len; i++) {
                did |= matrix_remove_parent(s->matrix, gone->pdata[i]);
                g_hash_table_remove(s->parents, gone->pdata[i]);
        }
        changed(s, did);
}

int compat_service_reload(CompatService *s, char **errors)
{
        g_autoptr(GPtrArray) errs = NULL;
        VfmigRuleSet *rs = NULL;

        load_rules(s, &rs, &errs);
        if (errs && errs->len > 0) {
                g_ptr_array_add(errs, NULL);
                *errors = g_strjoinv("\n", (char **) errs->pdata);
                for (guint i = 0; i + 1 < errs->len; i++)
                        log_warning("compatibility rules: %s", (const char *) errs->pdata[i]);
                log_warning("Reload refused: the last good rules stay in force");
                vfmig_rules_unref(rs);
                return -EINVAL;
        }
        vfmig_rules_unref(s->rules);
        s->rules = rs;
        changed(s, matrix_set_rules(s->matrix, rs));
        log_info("compatibility rules reloaded: %u rules", vfmig_rules_count(rs));
        return 0;
}

Matrix *compat_service_matrix(CompatService *s)
{
        return s->matrix;
}

VfmigRuleSet *compat_service_rules(CompatService *s)
{
        return s->rules;
}

const VfmigKernelHook *compat_service_hook(CompatService *s)
{
        return s->cfg.kernel_hook ? &s->hook : NULL;
}

int compat_service_profile_for(CompatService *s, const VfmigDevice *dev, uint64_t vfio_flags, bool dma_logging,
                               VfmigProfile **ret, char **why)
{
        const VfmigDevice *parent = NULL;

        if (dev->kind == VFMIG_DEVICE_MDEV && s->cfg.identity)
                parent = s->cfg.identity(dev->parent, s->cfg.userdata);
        return vfmig_rules_profile_for(s->rules, dev, parent, compat_flags(vfio_flags, dma_logging), ret, why);
}
