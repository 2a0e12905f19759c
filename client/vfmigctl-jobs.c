/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfmigctl-jobs.c — `migrate DEVICE[,DEVICE...] [DEVICE...] --to HOST:PORT
 * --ticket T`, `jobs`, `watch JOB`, `cancel JOB` (Device.Migrate, for
 * several devices Manager.MigrateGroup; org.vfmig1.Job objects).
 *
 * `migrate` starts the job and watches it like `watch`: on a terminal one
 * progress bar line (bytes, throughput, ETA) redrawn in place; piped, one
 * plain line per change at most every second.  The exit status is 0 when the
 * job completed, else the status of its typed error (NotCompatible 6, ...).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vfmigctl.h"
#include "vfmig-names.h"

#define WATCH_POLL_USEC   (250ULL * 1000ULL)
#define PLAIN_EVERY_USEC  (1000ULL * 1000ULL)
#define BAR_WIDTH         30

static uint64_t mono_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

/* A job id (decimal, as `jobs` lists them) or its object path → the path. */
static int job_path(const char *arg, char **ret)
{
        const char *id = arg;

        if (g_str_has_prefix(arg, VFMIG_DBUS_JOB_PREFIX "/"))
                id = arg + strlen(VFMIG_DBUS_JOB_PREFIX "/");
        if (!id[0] || strlen(id) > 10 || strspn(id, "0123456789") != strlen(id)) {
                fprintf(stderr, "vfmigctl: \"%s\" is not a job id (a number, see vfmigctl jobs)\n", arg);
                return VFMIGCTL_EXIT_USAGE;
        }
        *ret = g_strconcat(VFMIG_DBUS_JOB_PREFIX "/", id, NULL);
        return 0;
}

static bool state_is_final(const char *s)
{
        return streq_ptr(s, "completed") || streq_ptr(s, "failed") || streq_ptr(s, "cancelled");
}

static char *format_bytes(uint64_t b)
{
        return g_format_size_full(b, G_FORMAT_SIZE_IEC_UNITS);
}

/* The exit status of a job's Error ("org.vfmig1.Error.Name: message"). */
static int job_exit_status(const char *state, const char *err)
{
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        g_autofree char *name = NULL;
        const char *colon;

        if (streq_ptr(state, "completed"))
                return VFMIGCTL_EXIT_OK;
        colon = err ? strstr(err, ": ") : NULL;
        if (!colon)
                return VFMIGCTL_EXIT_FAILURE;
        name = g_strndup(err, colon - err);
        (void) sd_bus_error_set(&e, name, colon + 2);
        return vfmigctl_exit_status(&e, -EIO);
}

static void print_progress(JsonObject *p, bool tty, bool final)
{
        const char *state = vfmigctl_get_string(p, "State");
        uint64_t done = (uint64_t) vfmigctl_get_int(p, "BytesTransferred", 0);
        uint64_t est = (uint64_t) vfmigctl_get_int(p, "BytesEstimated", 0);
        double tp = json_object_has_member(p, "Throughput") ? json_object_get_double_member(p, "Throughput") : 0;
        g_autofree char *d = format_bytes(done), *e = format_bytes(est), *t = format_bytes((uint64_t) tp);
        g_autofree char *eta = NULL;

        if (est > done && tp > 0) {
                uint64_t s = (uint64_t) ((double) (est - done) / tp);
                eta = g_strdup_printf("%" PRIu64 ":%02" PRIu64, s / 60, s % 60);
        } else
                eta = g_strdup("-");
        if (tty) {
                unsigned pct = est ? (unsigned) (MIN(done, est) * 100 / est) : 0;
                unsigned fill = pct * BAR_WIDTH / 100;
                char bar[BAR_WIDTH + 1];

                memset(bar, '#', fill);
                memset(bar + fill, ' ', BAR_WIDTH - fill);
                bar[BAR_WIDTH] = 0;
                fprintf(stderr, "\r%-10s [%s] %3u%% %s/%s %s/s ETA %s\033[K", state ? state : "?", bar, pct, d, e, t,
                        eta);
                if (final)
                        fputc('\n', stderr);
                fflush(stderr);
        } else
                printf("%s %" PRIu64 "/%" PRIu64 " bytes %.0f bytes/s eta %s\n", state ? state : "?", done, est, tp,
                       eta);
}

static int watch_job(VfmigCtl *ctl, const char *path)
{
        bool tty = isatty(STDERR_FILENO) && ctl->json == VFMIGCTL_JSON_OFF;
        uint64_t last_plain = 0;
        g_autofree char *last_state = NULL;
        uint64_t last_bytes = UINT64_MAX;
        int r;

        /* Finished/Progress wake us early; the properties are polled anyway,
         * so a job that finished before the match was added is seen too. */
        (void) sd_bus_match_signal(ctl->bus, NULL, VFMIG_BUS_NAME, path, VFMIG_DBUS_INTERFACE_JOB, NULL, NULL, NULL);
        for (;;) {
                g_autoptr(JsonObject) p = NULL;
                const char *state;
                uint64_t bytes, now = mono_usec();
                bool final;

                r = vfmigctl_get_all(ctl, "watch", path, VFMIG_DBUS_INTERFACE_JOB, &p);
                if (r != 0)
                        return r;
                state = vfmigctl_get_string(p, "State");
                bytes = (uint64_t) vfmigctl_get_int(p, "BytesTransferred", 0);
                final = state_is_final(state);
                if (tty || final || !streq_ptr(state, last_state) ||
                    (bytes != last_bytes && now - last_plain >= PLAIN_EVERY_USEC)) {
                        print_progress(p, tty, final);
                        last_plain = now;
                        last_bytes = bytes;
                        g_free(last_state);
                        last_state = g_strdup(state);
                }
                if (final) {
                        const char *err = vfmigctl_get_string(p, "Error");

                        if (streq_ptr(state, "completed"))
                                printf("Job %s completed: %" PRId64 " bytes, downtime %" PRId64 " ms (predicted %"
                                       PRId64 " ms)\n", vfmigctl_get_string(p, "Id"),
                                       vfmigctl_get_int(p, "BytesTransferred", 0), vfmigctl_get_int(p, "DowntimeMs", 0),
                                       vfmigctl_get_int(p, "PredictedDowntimeMs", 0));
                        else
                                fprintf(stderr, "vfmigctl: job %s %s: %s\n", vfmigctl_get_string(p, "Id"), state,
                                        err && err[0] ? err : "no reason given");
                        return job_exit_status(state, err);
                }
                for (uint64_t until = mono_usec() + WATCH_POLL_USEC; mono_usec() < until;) {
                        r = sd_bus_process(ctl->bus, NULL);
                        if (r < 0)
                                return VFMIGCTL_EXIT_FAILURE;
                        if (r > 0)
                                continue;
                        (void) sd_bus_wait(ctl->bus, until - MIN(until, mono_usec()));
                }
        }
}

/* The devices of `migrate`: every argument, each a comma-separated list. */
static GPtrArray *migrate_devices(int argc, char **argv)
{
        GPtrArray *devs = g_ptr_array_new_with_free_func(g_free);

        for (int i = 1; i < argc; i++) {
                g_auto(GStrv) v = g_strsplit(argv[i], ",", -1);

                for (char **d = v; *d; d++)
                        if (**d)
                                g_ptr_array_add(devs, g_strdup(*d));
        }
        return devs;
}

int verb_migrate(VfmigCtl *ctl, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL, *call = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        g_autoptr(GPtrArray) devs = migrate_devices(argc, argv);
        const char *dev_path, *job;
        g_autofree char *dev = NULL, *jp = NULL;
        int r;

        if (!ctl->to || !ctl->ticket) {
                fprintf(stderr, "vfmigctl: migrate needs --to=HOST:PORT and --ticket=TICKET (from the target's "
                        "PrepareIncoming)\n");
                return VFMIGCTL_EXIT_USAGE;
        }
        if (devs->len == 0) {
                fprintf(stderr, "vfmigctl: migrate needs a device\n");
                return VFMIGCTL_EXIT_USAGE;
        }
        if (devs->len > 1) {
                /* a group: one job, one stream, device i into the target's i-th reservation */
                r = sd_bus_message_new_method_call(ctl->bus, &call, VFMIG_BUS_NAME, VFMIG_DBUS_PATH,
                                                   VFMIG_DBUS_INTERFACE_MANAGER, "MigrateGroup");
                if (r >= 0)
                        r = sd_bus_message_open_container(call, 'a', "s");
                for (guint i = 0; r >= 0 && i < devs->len; i++)
                        r = sd_bus_message_append(call, "s", devs->pdata[i]);
                if (r >= 0)
                        r = sd_bus_message_close_container(call);
                if (r >= 0)
                        r = sd_bus_message_append(call, "ssa{sv}", ctl->to, ctl->ticket, 0);
                if (r < 0)
                        return vfmigctl_log_parse_error(r, "migrate");
                r = sd_bus_call(ctl->bus, call, 0, &error, &reply);
                if (r < 0)
                        return vfmigctl_log_error(&error, r, "migrate");
        } else {
                r = vfmigctl_call(ctl, devs->pdata[0], VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER, "GetDevice",
                                  &reply, "s", devs->pdata[0]);
                if (r != 0)
                        return r;
                r = sd_bus_message_read(reply, "o", &dev_path);
                if (r < 0)
                        return vfmigctl_log_parse_error(r, devs->pdata[0]);
                dev = g_strdup(dev_path);
                reply = sd_bus_message_unref(reply);
                r = vfmigctl_call(ctl, "migrate", dev, VFMIG_DBUS_INTERFACE_DEVICE, "Migrate", &reply, "ssa{sv}",
                                  ctl->to, ctl->ticket, 0);
                if (r != 0)
                        return r;
        }
        r = sd_bus_message_read(reply, "o", &job);
        if (r < 0)
                return vfmigctl_log_parse_error(r, "migrate");
        jp = g_strdup(job);
        if (!isatty(STDOUT_FILENO))
                printf("job %s\n", jp);
        return watch_job(ctl, jp);
}

int verb_watch(VfmigCtl *ctl, int argc, char **argv)
{
        g_autofree char *path = NULL;
        int r = job_path(argv[1], &path);

        if (r != 0)
                return r;
        return watch_job(ctl, path);
}

int verb_cancel(VfmigCtl *ctl, int argc, char **argv)
{
        g_autofree char *path = NULL;
        int r = job_path(argv[1], &path);

        if (r != 0)
                return r;
        return vfmigctl_call(ctl, "cancel", path, VFMIG_DBUS_INTERFACE_JOB, "Cancel", NULL, "");
}

static gint cmp_path(gconstpointer a, gconstpointer b)
{
        const char *x = *(const char **) a, *y = *(const char **) b;
        size_t lx = strlen(x), ly = strlen(y);

        return lx != ly ? (lx < ly ? -1 : 1) : strcmp(x, y);
}

int verb_jobs(VfmigCtl *ctl, int argc, char **argv)
{
        static const char *const headers[] = { "ID", "KIND", "DEVICES", "STATE", "BYTES", "ERROR", NULL };
        g_autoptr(GHashTable) objs = NULL;
        g_autoptr(GPtrArray) paths = NULL;
        g_autoptr(VfmigCtlTable) t = NULL;
        int r;

        r = vfmigctl_get_managed_objects(ctl, "jobs", VFMIG_DBUS_INTERFACE_JOB, &objs);
        if (r != 0)
                return r;
        paths = g_ptr_array_new();
        {
                g_autoptr(GList) keys = g_hash_table_get_keys(objs);

                for (GList *l = keys; l; l = l->next)
                        g_ptr_array_add(paths, l->data);
        }
        g_ptr_array_sort(paths, cmp_path);
        if (ctl->json != VFMIGCTL_JSON_OFF) {
                g_autoptr(JsonArray) a = json_array_new();
                g_autoptr(JsonNode) n = NULL;

                for (guint i = 0; i < paths->len; i++)
                        json_array_add_object_element(
                                a, vfmigctl_json_object_from_properties(g_hash_table_lookup(objs, paths->pdata[i])));
                n = json_node_init_array(json_node_alloc(), a);
                vfmigctl_print_json(ctl, n);
                return VFMIGCTL_EXIT_OK;
        }
        t = vfmigctl_table_new(headers);
        for (guint i = 0; i < paths->len; i++) {
                JsonObject *p = g_hash_table_lookup(objs, paths->pdata[i]);
                JsonArray *devs = json_object_has_member(p, "Devices") ? json_object_get_array_member(p, "Devices")
                                                                       : NULL;
                GString *d = g_string_new(NULL);

                for (guint k = 0; devs && k < json_array_get_length(devs); k++)
                        g_string_append_printf(d, "%s%s", k ? "," : "", json_array_get_string_element(devs, k));
                vfmigctl_table_add(t, vfmigctl_get_string(p, "Id"));
                vfmigctl_table_add(t, vfmigctl_get_string(p, "Kind"));
                vfmigctl_table_take(t, g_string_free(d, false));
                vfmigctl_table_add(t, vfmigctl_get_string(p, "State"));
                vfmigctl_table_take(t, g_strdup_printf("%" PRId64, vfmigctl_get_int(p, "BytesTransferred", 0)));
                vfmigctl_table_take(t, vfmigctl_one_line(vfmigctl_get_string(p, "Error")));
        }
        vfmigctl_table_print(ctl, t);
        return VFMIGCTL_EXIT_OK;
}
