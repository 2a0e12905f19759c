/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus-job.c — org.vfmig1.Job objects at /org/vfmig1/job/<id> (a fallback
 * vtable, object_find and a node enumerator), the signals of the job set
 * (jobs.c, which knows no D-Bus; Progress at most every
 * BUS_JOB_PROGRESS_INTERVAL_USEC per job), and the bodies of the methods that
 * start jobs: Device.Migrate, Device.SaveToFd (bus-device.c's vtable),
 * Manager.MigrateGroup (bus-manager.c's) and Reservation.PrepareIncoming,
 * Reservation.ReceiveFromFd (bus-reservation.c's vtable; their option
 * "group" adds more reservations to receive a group into).  All of them are
 * polkit-gated (org.vfmig1.migrate).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus-polkit.h"
#include "jobs.h"
#include "stream.h"
#include "log.h"
#include "util.h"
#include "vfmigd.h"
#include "vfmig-names.h"

#define BUS_JOB_PROGRESS_INTERVAL_USEC (250ULL * 1000ULL)

static uint64_t mono_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

char *bus_job_path(const char *id)
{
        return g_strconcat(VFMIG_DBUS_JOB_PREFIX "/", id, NULL);
}

static Daemon *current_daemon(sd_bus_message *m)
{
        return sd_bus_slot_get_userdata(sd_bus_get_current_slot(sd_bus_message_get_bus(m)));
}

/* The typed error name of a core errno, NULL when it has none. */
static const char *error_name_of(int error)
{
        error = error < 0 ? -error : error;
        for (const sd_bus_error_map *e = vfmig_error_map; e->name; e++)
                if (e->code == error)
                        return e->name;
        return NULL;
}

static int set_error(sd_bus_error *error, int r, const char *msg)
{
        const char *name = error_name_of(r);

        return sd_bus_error_set(error, name ? name : SD_BUS_ERROR_FAILED, msg ? msg : strerror(r < 0 ? -r : r));
}

/* --- options ------------------------------------------------------------------ */

typedef struct JobOptions {
        uint32_t downtime_ms;
        uint32_t timeout_ms;
        int precopy;
        int plaintext;
        int resume_running;
        const char *ticket;
        const char *address;
        uint32_t port;
        GPtrArray *group;               /* reservation ids (borrowed from the message) */
} JobOptions;

static void job_options_clear(JobOptions *o)
{
        g_clear_pointer(&o->group, g_ptr_array_unref);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(JobOptions, job_options_clear)

/* Option "group": ao of reservation objects or as of reservation ids. */
static int read_group(sd_bus_message *m, const char *contents, JobOptions *o, sd_bus_error *error)
{
        char type = contents[1];
        const char *v;
        int r;

        r = sd_bus_message_enter_container(m, SD_BUS_TYPE_VARIANT, contents);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, contents + 1);
        if (r < 0)
                return r;
        if (!o->group)
                o->group = g_ptr_array_new();
        while ((r = sd_bus_message_read_basic(m, type, &v)) > 0) {
                const char *id = v;

                if (type == SD_BUS_TYPE_OBJECT_PATH) {
                        if (!g_str_has_prefix(v, VFMIG_DBUS_RESERVATION_PREFIX "/"))
                                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "option \"group\": %.80s "
                                                         "is not a reservation object", v);
                        id = v + strlen(VFMIG_DBUS_RESERVATION_PREFIX "/");
                }
                if (!reservation_id_is_valid(id))
                        return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "option \"group\": \"%.80s\" is not "
                                                 "a reservation id (32 hex digits) or object", v);
                if (o->group->len + 1 >= VFMIG_STREAM_MAX_DEVICES)
                        return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "option \"group\": at most %u "
                                                 "more reservations (a stream carries %u devices)",
                                                 VFMIG_STREAM_MAX_DEVICES - 1, VFMIG_STREAM_MAX_DEVICES);
                g_ptr_array_add(o->group, (char *) id);
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

/* a{sv} with the keys this method knows; other keys are ignored. */
static int read_options(sd_bus_message *m, JobOptions *o, const char *const *known, sd_bus_error *error)
{
        int r;

        r = sd_bus_message_enter_container(m, SD_BUS_TYPE_ARRAY, "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, SD_BUS_TYPE_DICT_ENTRY, "sv")) > 0) {
                const char *key, *contents, *want = NULL;
                bool ours = false;

                r = sd_bus_message_read_basic(m, SD_BUS_TYPE_STRING, &key);
                if (r < 0)
                        return r;
                r = sd_bus_message_peek_type(m, NULL, &contents);
                if (r < 0)
                        return r;
                for (const char *const *k = known; *k; k++)
                        ours = ours || streq_ptr(*k, key);
                if (!ours) {
                        r = sd_bus_message_skip(m, "v");
                } else if (streq_ptr(key, "group")) {
                        if (!streq_ptr(contents, "ao") && !streq_ptr(contents, "as"))
                                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "option \"group\": must be "
                                                         "of type ao (reservation objects) or as (ids), not %s",
                                                         contents);
                        r = read_group(m, contents, o, error);
                } else if (streq_ptr(key, "downtime-ms") || streq_ptr(key, "port") || streq_ptr(key, "timeout-ms")) {
                        want = "u";
                        if (streq_ptr(contents, want))
                                r = sd_bus_message_read(m, "v", "u",
                                                        streq_ptr(key, "port") ? &o->port :
                                                        streq_ptr(key, "timeout-ms") ? &o->timeout_ms :
                                                        &o->downtime_ms);
                } else if (streq_ptr(key, "ticket") || streq_ptr(key, "address")) {
                        want = "s";
                        if (streq_ptr(contents, want))
                                r = sd_bus_message_read(m, "v", "s",
                                                        streq_ptr(key, "ticket") ? &o->ticket : &o->address);
                } else {
                        want = "b";
                        if (streq_ptr(contents, want))
                                r = sd_bus_message_read(m, "v", "b",
                                                        streq_ptr(key, "precopy") ? &o->precopy :
                                                        streq_ptr(key, "plaintext") ? &o->plaintext :
                                                        &o->resume_running);
                }
                if (want && !streq_ptr(contents, want))
                        return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "option \"%s\": must be of type "
                                                 "%s, not %s", key, want, contents);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static int reply_job(sd_bus_message *m, Job *j)
{
        g_autofree char *path = bus_job_path(j->id);
        g_autofree char *names = g_strjoinv(", ", j->devices);

        log_internal(LOG_INFO, "VFMIG_JOB", j->id, "Job %s (%s of %s) started by %s", j->id,
                     job_kind_to_string(j->kind), names, sd_bus_message_get_sender(m));
        return sd_bus_reply_method_return(m, "o", path);
}

static int require_jobs(Daemon *d, sd_bus_error *error)
{
        if (!d->jobs)
                return sd_bus_error_set(error, VFMIG_ERROR_NOT_SUPPORTED, "This vfmigd runs no migration jobs");
        return 0;
}

/* --- Device.Migrate / Device.SaveToFd --------------------------------------- */

static const char *const save_keys[] = { "downtime-ms", "precopy", "timeout-ms", NULL };
static const char *const save_fd_keys[] = { "downtime-ms", "precopy", "plaintext", "ticket", "timeout-ms", NULL };

static int check_timeout(const JobOptions *o, sd_bus_error *error)
{
        if (o->timeout_ms && (o->timeout_ms < JOB_STALL_MIN_MS || o->timeout_ms > JOB_STALL_MAX_MS))
                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "option \"timeout-ms\": %" PRIu32 " is out "
                                         "of range, expected %u..%u (0: the default, %u)", o->timeout_ms,
                                         JOB_STALL_MIN_MS, JOB_STALL_MAX_MS, JOB_STALL_DEFAULT_MS);
        return 0;
}

static int check_endpoint_ticket(const char *endpoint, const char *ticket, sd_bus_error *error)
{
        if (!vfmig_string_is_valid(endpoint, 128))
                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS,
                                         "endpoint: expected HOST:PORT with a numeric host, at most 128 characters");
        if (!vfmig_string_is_valid(ticket, 64))
                return sd_bus_error_set(error, VFMIG_ERROR_INVALID_ARGS,
                                        "ticket: expected the 43 characters PrepareIncoming returned");
        return 0;
}

/* After the device(s): (s endpoint, s ticket, a{sv} options), checked. */
static int read_migrate_call(sd_bus_message *m, const char **endpoint, const char **ticket, JobOptions *o,
                             sd_bus_error *error)
{
        int r;

        r = sd_bus_message_read(m, "ss", endpoint, ticket);
        if (r < 0)
                return r;
        r = read_options(m, o, save_keys, error);
        if (r < 0)
                return r;
        r = check_endpoint_ticket(*endpoint, *ticket, error);
        if (r < 0)
                return r;
        return check_timeout(o, error);
}

static int start_migrate(Daemon *d, sd_bus_message *m, const char *const *devices, const char *endpoint,
                         const char *ticket, const JobOptions *o, sd_bus_error *error)
{
        g_autofree char *msg = NULL;
        Job *j = NULL;
        int r;

        r = jobs_start_migrate(d->jobs, devices, endpoint,
                               &(JobSaveOptions) { .precopy = o->precopy, .downtime_ms = o->downtime_ms,
                                                   .ticket = ticket, .timeout_ms = o->timeout_ms }, &j, &msg);
        if (r < 0)
                return set_error(error, r, msg);
        return reply_job(m, j);
}

int bus_job_method_migrate(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        VfmigDevice *dev = userdata;
        Daemon *d = current_daemon(m);
        g_autofree char *name = g_strdup(dev->name);
        const char *devices[] = { name, NULL };
        g_auto(JobOptions) o = {};
        const char *endpoint, *ticket;
        int r;

        r = require_jobs(d, error);
        if (r < 0)
                return r;
        r = read_migrate_call(m, &endpoint, &ticket, &o, error);
        if (r < 0)
                return r;
        r = bus_verify_method_async(m, VFMIG_DBUS_INTERFACE_DEVICE, name, &d->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;
        return start_migrate(d, m, devices, endpoint, ticket, &o, error);
}

/* The start of SaveToFd and ReceiveFromFd: the socket and the options;
 * TLS needs a ticket unless plaintext is asked for explicitly. */
static int read_fd_call(Daemon *d, sd_bus_message *m, const char *const *keys, int *fd, JobOptions *o,
                        sd_bus_error *error)
{
        int r;

        r = require_jobs(d, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "h", fd);
        if (r < 0)
                return r;
        r = read_options(m, o, keys, error);
        if (r < 0)
                return r;
        if (o->ticket && !vfmig_string_is_valid(o->ticket, 64))
                return sd_bus_error_set(error, VFMIG_ERROR_INVALID_ARGS, "option \"ticket\": expected 43 characters");
        if (!o->plaintext && !o->ticket)
                return sd_bus_error_set(error, VFMIG_ERROR_INVALID_ARGS,
                                        "option \"ticket\" is required for TLS over the fd (or set \"plaintext\")");
        return check_timeout(o, error);
}

static int start_save_fd(Daemon *d, sd_bus_message *m, const char *const *devices, int fd, const JobOptions *o,
                         sd_bus_error *error)
{
        g_autofree char *msg = NULL;
        Job *j = NULL;
        int copy, r;

        copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (copy < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot duplicate the fd: %m");
        r = jobs_start_save_fd(d->jobs, devices, copy,
                               &(JobSaveOptions) { .precopy = o->precopy, .downtime_ms = o->downtime_ms,
                                                   .plaintext = o->plaintext, .ticket = o->ticket,
                                                   .timeout_ms = o->timeout_ms }, &j, &msg);
        if (r < 0)
                return set_error(error, r, msg);
        return reply_job(m, j);
}

int bus_job_method_save_to_fd(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        VfmigDevice *dev = userdata;
        Daemon *d = current_daemon(m);
        g_autofree char *name = g_strdup(dev->name);
        const char *devices[] = { name, NULL };
        g_auto(JobOptions) o = {};
        int fd, r;

        r = read_fd_call(d, m, save_fd_keys, &fd, &o, error);
        if (r < 0)
                return r;
        r = bus_verify_method_async(m, VFMIG_DBUS_INTERFACE_DEVICE, name, &d->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;
        return start_save_fd(d, m, devices, fd, &o, error);
}

/* --- Manager.MigrateGroup ------------------------------------------------------ */

/* as devices (1..VFMIG_STREAM_MAX_DEVICES valid, distinct names), stream order. */
static int read_devices(sd_bus_message *m, char ***ret, sd_bus_error *error)
{
        g_auto(GStrv) v = NULL;
        guint n;
        int r;

        r = sd_bus_message_read_strv(m, &v);
        if (r < 0)
                return r;
        n = v ? g_strv_length(v) : 0;
        if (n == 0)
                return sd_bus_error_set(error, VFMIG_ERROR_INVALID_ARGS, "devices: at least one device is needed");
        if (n > VFMIG_STREAM_MAX_DEVICES)
                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "devices: %u devices, a stream carries at "
                                         "most %u", n, VFMIG_STREAM_MAX_DEVICES);
        for (guint i = 0; i < n; i++) {
                if (!vfmig_device_name_is_valid(v[i]))
                        return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "devices[%u]: \"%.64s\" is not a "
                                                 "valid device name (a PCI address or an mdev UUID, at most %d "
                                                 "characters of [A-Za-z0-9:._-])", i, v[i], VFMIG_NAME_MAX);
                for (guint k = 0; k < i; k++)
                        if (streq_ptr(v[k], v[i]))
                                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS, "devices: %s is given "
                                                         "twice", v[i]);
        }
        *ret = g_steal_pointer(&v);
        return 0;
}

/* polkit for a group: every device of it in the "device" detail. */
static int verify_group(Daemon *d, sd_bus_message *m, char **devices, sd_bus_error *error)
{
        g_autofree char *names = g_strjoinv(",", devices);

        return bus_verify_method_async(m, VFMIG_DBUS_INTERFACE_MANAGER, names, &d->polkit_registry, error);
}

int bus_job_method_migrate_group(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Daemon *d = current_daemon(m);
        g_auto(GStrv) devices = NULL;
        g_auto(JobOptions) o = {};
        const char *endpoint, *ticket;
        int r;

        r = require_jobs(d, error);
        if (r < 0)
                return r;
        r = read_devices(m, &devices, error);
        if (r < 0)
                return r;
        r = read_migrate_call(m, &endpoint, &ticket, &o, error);
        if (r < 0)
                return r;
        r = verify_group(d, m, devices, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;
        return start_migrate(d, m, (const char *const *) devices, endpoint, ticket, &o, error);
}

/* Manager.SaveGroupToFd: MigrateGroup's devices, SaveToFd's socket and options. */
int bus_job_method_save_group_to_fd(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Daemon *d = current_daemon(m);
        g_auto(GStrv) devices = NULL;
        g_auto(JobOptions) o = {};
        int fd, r;

        r = require_jobs(d, error);
        if (r < 0)
                return r;
        r = read_devices(m, &devices, error);
        if (r < 0)
                return r;
        r = read_fd_call(d, m, save_fd_keys, &fd, &o, error);
        if (r < 0)
                return r;
        r = verify_group(d, m, devices, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;
        return start_save_fd(d, m, (const char *const *) devices, fd, &o, error);
}

/* --- Reservation.PrepareIncoming / Reservation.ReceiveFromFd ------------------ */

static const char *const prepare_keys[] = { "address", "port", "resume-running", "group", "timeout-ms", NULL };
static const char *const receive_keys[] = { "plaintext", "ticket", "resume-running", "group", "timeout-ms", NULL };

/* res, then the reservations of option "group", in that order: stream
 * device i is received into element i.  NotReserved for one that is gone. */
static int resolve_set(Daemon *d, Reservation *res, const JobOptions *o, GPtrArray **ret, sd_bus_error *error)
{
        g_autoptr(GPtrArray) set = g_ptr_array_new();

        g_ptr_array_add(set, res);
        for (guint i = 0; o->group && i < o->group->len; i++) {
                Reservation *r = reservations_get(d->reservations, o->group->pdata[i]);

                if (!r)
                        return sd_bus_error_setf(error, VFMIG_ERROR_NOT_RESERVED, "option \"group\": no reservation "
                                                 "%s (it ended, or never existed)", (const char *) o->group->pdata[i]);
                g_ptr_array_add(set, r);
        }
        *ret = g_steal_pointer(&set);
        return 0;
}

/* The target devices of a set, "a,b,c": polkit's "device" detail. */
static char *set_targets(GPtrArray *set)
{
        g_autoptr(GString) t = g_string_new(NULL);

        for (guint i = 0; i < set->len; i++)
                g_string_append_printf(t, "%s%s", i ? "," : "", ((Reservation *) set->pdata[i])->target);
        return g_string_free(g_steal_pointer(&t), FALSE);
}

int bus_job_method_prepare_incoming(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Reservation *res = userdata;
        Daemon *d = current_daemon(m);
        g_autofree char *msg = NULL, *endpoint = NULL, *ticket = NULL, *targets = NULL;
        g_auto(JobOptions) o = { .address = "0.0.0.0" };
        g_autoptr(GPtrArray) set = NULL;
        Job *j = NULL;
        int r;

        r = require_jobs(d, error);
        if (r < 0)
                return r;
        r = read_options(m, &o, prepare_keys, error);
        if (r < 0)
                return r;
        r = check_timeout(&o, error);
        if (r < 0)
                return r;
        if (o.port > 65535)
                return sd_bus_error_setf(error, VFMIG_ERROR_INVALID_ARGS,
                                         "option \"port\": %" PRIu32 " is out of range, expected 0..65535 (0: any)",
                                         o.port);
        if (!vfmig_string_is_valid(o.address, 64) || strspn(o.address, "0123456789abcdefABCDEF.:") != strlen(o.address))
                return sd_bus_error_set(error, VFMIG_ERROR_INVALID_ARGS,
                                        "option \"address\": expected a numeric IPv4 or IPv6 address");

        /* The whole set is known before polkit is asked: every target is in
         * the "device" detail. */
        r = resolve_set(d, res, &o, &set, error);
        if (r < 0)
                return r;
        targets = set_targets(set);
        r = bus_verify_method_async(m, VFMIG_DBUS_INTERFACE_RESERVATION, targets, &d->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;
        r = jobs_prepare_incoming(d->jobs, (Reservation *const *) set->pdata, set->len, o.address, (uint16_t) o.port,
                                  &(JobReceiveOptions) { .resume_running = o.resume_running,
                                                         .timeout_ms = o.timeout_ms }, &endpoint, &ticket, &j,
                                  &msg);
        if (r < 0)
                return set_error(error, r, msg);
        if (job_state_is_final(j->state))
                return set_error(error, j->error, j->error_message);
        log_internal(LOG_INFO, "VFMIG_RESERVATION", res->id, "Reservation %s%s: receiving on %s (job %s) for %s",
                     res->id, set->len > 1 ? " and its group" : "", endpoint, j->id, sd_bus_message_get_sender(m));
        return sd_bus_reply_method_return(m, "ss", endpoint, ticket);
}

int bus_job_method_receive_from_fd(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Reservation *res = userdata;
        Daemon *d = current_daemon(m);
        g_autofree char *msg = NULL, *targets = NULL;
        g_auto(JobOptions) o = {};
        g_autoptr(GPtrArray) set = NULL;
        Job *j = NULL;
        int fd, copy, r;

        r = read_fd_call(d, m, receive_keys, &fd, &o, error);
        if (r < 0)
                return r;

        /* The whole set is known before polkit is asked: every target is in
         * the "device" detail. */
        r = resolve_set(d, res, &o, &set, error);
        if (r < 0)
                return r;
        targets = set_targets(set);
        r = bus_verify_method_async(m, VFMIG_DBUS_INTERFACE_RESERVATION, targets, &d->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;
        copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (copy < 0)
                return sd_bus_error_set_errnof(error, errno, "Cannot duplicate the fd: %m");
        r = jobs_start_receive_fd(d->jobs, (Reservation *const *) set->pdata, set->len, copy,
                                  &(JobReceiveOptions) { .resume_running = o.resume_running,
                                                         .plaintext = o.plaintext, .ticket = o.ticket,
                                                         .timeout_ms = o.timeout_ms }, &j, &msg);
        if (r < 0)
                return set_error(error, r, msg);
        return reply_job(m, j);
}

/* --- Job objects ---------------------------------------------------------------- */

typedef struct BusJob {
        uint64_t last_progress_usec;
        bool progress_pending;
} BusJob;

static const char *id_from_path(const char *path)
{
        const char *id;

        if (!g_str_has_prefix(path, VFMIG_DBUS_JOB_PREFIX "/"))
                return NULL;
        id = path + strlen(VFMIG_DBUS_JOB_PREFIX "/");
        return id[0] && strspn(id, "0123456789") == strlen(id) ? id : NULL;
}

static int job_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                    sd_bus_error *error)
{
        Daemon *d = userdata;
        Job *j = d->jobs ? jobs_get(d->jobs, id_from_path(path)) : NULL;

        if (!j)
                return 0;
        *found = j;
        return 1;
}

static int job_enumerate(sd_bus *bus, const char *prefix, void *userdata, char ***nodes, sd_bus_error *error)
{
        Daemon *d = userdata;
        g_autoptr(GPtrArray) l = d->jobs ? jobs_list(d->jobs) : g_ptr_array_new();
        char **v = calloc(l->len + 1, sizeof(char *));

        if (!v)
                return -ENOMEM;
        for (guint i = 0; i < l->len; i++) {
                if (asprintf(&v[i], VFMIG_DBUS_JOB_PREFIX "/%s", ((Job *) l->pdata[i])->id) < 0) {
                        for (guint k = 0; k < i; k++)
                                free(v[k]);
                        free(v);
                        return -ENOMEM;
                }
        }
        *nodes = v;
        return 0;
}

static int property_get_kind(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Job *j = userdata;

        return sd_bus_message_append(reply, "s", job_kind_to_string(j->kind));
}

static int property_get_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Job *j = userdata;

        return sd_bus_message_append(reply, "s", job_state_to_string(j->state));
}

static int property_get_devices(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        Job *j = userdata;

        return sd_bus_message_append_strv(reply, j->devices);
}

/* "org.vfmig1.Error.NAME: message" (the side is in the message), "" on success. */
static char *job_error_text(Job *j)
{
        const char *name;

        if (!j->error)
                return g_strdup("");
        name = error_name_of(j->error);
        return g_strdup_printf("%s: %s", name ? name : VFMIG_ERROR_FAILED, j->error_message);
}

static int property_get_error(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error)
{
        g_autofree char *t = job_error_text(userdata);

        return sd_bus_message_append(reply, "s", t);
}

static int method_cancel(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Job *j = userdata;
        Daemon *d = current_daemon(m);
        g_autofree char *id = g_strdup(j->id);
        int r;

        r = bus_verify_method_async(m, VFMIG_DBUS_INTERFACE_JOB, j->devices[0], &d->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;
        r = job_cancel(j, sd_bus_message_get_sender(m));
        if (r == -ESTALE)
                return sd_bus_error_setf(error, VFMIG_ERROR_BUSY, "Job %s has already %s", id,
                                         job_state_to_string(j->state));
        if (r == -EINPROGRESS && j->kind == JOB_RESTORE)
                return sd_bus_error_setf(error, VFMIG_ERROR_BUSY, "Job %s has taken the whole state and said so: "
                                         "the source's confirmation decides how it ends", id);
        if (r == -EINPROGRESS)
                return sd_bus_error_setf(error, VFMIG_ERROR_BUSY, "Job %s has sent the whole state: the target's "
                                         "answer decides how it ends", id);
        if (r < 0)
                return set_error(error, r, NULL);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_switchover(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
        Job *j = userdata;
        Daemon *d = current_daemon(m);
        int r;

        r = bus_verify_method_async(m, VFMIG_DBUS_INTERFACE_JOB, j->devices[0], &d->polkit_registry, error);
        if (r < 0)
                return r;
        if (r == 0)
                return 1;
        r = job_switchover(j);
        if (r == -EOPNOTSUPP)
                return sd_bus_error_setf(error, VFMIG_ERROR_NOT_SUPPORTED,
                                         "Job %s is a %s job: only the source switches over", j->id,
                                         job_kind_to_string(j->kind));
        if (r == -ESTALE)
                return sd_bus_reply_method_return(m, NULL);     /* already past it: a no-op */
        if (r == -EAGAIN)
                return sd_bus_error_setf(error, VFMIG_ERROR_BUSY, "Job %s is still connecting", j->id);
        if (r < 0)
                return set_error(error, r, j->error_message);
        return sd_bus_reply_method_return(m, NULL);
}

const sd_bus_vtable job_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "s", NULL, offsetof(Job, id), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Kind", "s", property_get_kind, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Devices", "as", property_get_devices, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        /* Counters: read them or follow the rate-limited Progress signal. */
        SD_BUS_PROPERTY("BytesTransferred", "t", NULL, offsetof(Job, bytes_transferred), 0),
        SD_BUS_PROPERTY("BytesEstimated", "t", NULL, offsetof(Job, bytes_estimated), 0),
        SD_BUS_PROPERTY("Throughput", "d", NULL, offsetof(Job, throughput), 0),
        SD_BUS_PROPERTY("PredictedDowntimeMs", "t", NULL, offsetof(Job, predicted_downtime_ms), 0),
        SD_BUS_PROPERTY("DowntimeMs", "t", NULL, offsetof(Job, downtime_ms), 0),
        SD_BUS_PROPERTY("Error", "s", property_get_error, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("Cancel", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_cancel,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Switchover", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_switchover,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("Progress",
                                SD_BUS_ARGS("t", bytes_transferred, "t", bytes_estimated, "d", throughput),
                                0),
        SD_BUS_SIGNAL_WITH_ARGS("Finished", SD_BUS_ARGS("s", state, "s", error), 0),
        SD_BUS_VTABLE_END
};

/* --- signals from the job set ----------------------------------------------------- */

static void emit_progress(Daemon *d, Job *j)
{
        g_autofree char *path = bus_job_path(j->id);
        BusJob *b = j->bus_data;

        if (b) {
                b->last_progress_usec = mono_usec();
                b->progress_pending = false;
        }
        (void) sd_bus_emit_signal(d->bus, path, VFMIG_DBUS_INTERFACE_JOB, "Progress", "ttd", j->bytes_transferred,
                                  j->bytes_estimated, j->throughput);
}

static void on_added(Jobs *s, Job *j, void *userdata)
{
        Daemon *d = userdata;
        g_autofree char *path = bus_job_path(j->id);

        j->bus_data = g_new0(BusJob, 1);
        if (d->bus)
                (void) sd_bus_emit_object_added(d->bus, path);
}

static void on_changed(Jobs *s, Job *j, void *userdata)
{
        Daemon *d = userdata;
        g_autofree char *path = bus_job_path(j->id);

        if (d->bus)
                (void) sd_bus_emit_properties_changed(d->bus, path, VFMIG_DBUS_INTERFACE_JOB, "State", "Error", NULL);
}

static void on_progress(Jobs *s, Job *j, void *userdata)
{
        Daemon *d = userdata;
        BusJob *b = j->bus_data;

        if (!d->bus || !b)
                return;
        if (mono_usec() - b->last_progress_usec < BUS_JOB_PROGRESS_INTERVAL_USEC) {
                b->progress_pending = true;
                return;
        }
        emit_progress(d, j);
}

static void on_finished(Jobs *s, Job *j, void *userdata)
{
        Daemon *d = userdata;
        g_autofree char *path = bus_job_path(j->id);
        g_autofree char *err = job_error_text(j);

        if (!d->bus)
                return;
        emit_progress(d, j);
        (void) sd_bus_emit_signal(d->bus, path, VFMIG_DBUS_INTERFACE_JOB, "Finished", "ss",
                                  job_state_to_string(j->state), err);
}

static void on_removed(Jobs *s, Job *j, bool shutdown, void *userdata)
{
        Daemon *d = userdata;
        g_autofree char *path = bus_job_path(j->id);

        if (d->bus && !shutdown)
                (void) sd_bus_emit_object_removed(d->bus, path);
        g_free(j->bus_data);
        j->bus_data = NULL;
}

static const JobsListener jobs_listener = {
        .added = on_added,
        .changed = on_changed,
        .progress = on_progress,
        .finished = on_finished,
        .removed = on_removed,
};

int bus_job_register(Daemon *d)
{
        int r;

        r = sd_bus_add_fallback_vtable(d->bus, NULL, VFMIG_DBUS_JOB_PREFIX, VFMIG_DBUS_INTERFACE_JOB, job_vtable,
                                       job_find, d);
        if (r < 0)
                return r;
        r = sd_bus_add_node_enumerator(d->bus, NULL, VFMIG_DBUS_JOB_PREFIX, job_enumerate, d);
        if (r < 0)
                return r;
        if (d->jobs)
                jobs_set_listener(d->jobs, &jobs_listener, d);
        return 0;
}
