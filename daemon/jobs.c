/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * jobs.c — migration jobs on the sd-event loop (see jobs.h).  No D-Bus.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jobs.h"
#include "log.h"
#include "matrix.h"
#include "stream-conn.h"
#include "stream-pump.h"
#include "stream-ticket.h"
#include "tls-lib.h"
#include "util.h"
#include "json-reader.h"

/* Pump steps per dispatch before yielding to other event sources. */
#define JOB_STEPS_PER_DISPATCH  64
#define JOB_DISPATCH_USEC       (5ULL * 1000ULL)
/*
 * Event priorities: the bus (SD_EVENT_PRIORITY_NORMAL) before any job, so
 * that queries and new Migrate calls are answered while many jobs stream;
 * a job still connecting before the ones streaming, so that a new job's
 * handshake does not wait a whole round of 5 ms slices behind them.
 */
#define JOB_PRIORITY_CONNECTING (SD_EVENT_PRIORITY_NORMAL + 5)
#define JOB_PRIORITY_STREAMING  (SD_EVENT_PRIORITY_NORMAL + 10)

/* How often a running pre-copy refreshes PredictedDowntimeMs. */
#define JOB_PREDICT_USEC        (100ULL * 1000ULL)

struct Jobs {
        sd_event *event;
        DeviceAccess *access;
        Reservations *reservations;
        CompatService *compat;
        char *host_name;
        GHashTable *jobs;               /* id -> Job* */
        GHashTable *live;               /* id -> Job*: the unfinished ones (busy devices are looked up here:
                                         * up to a thousand finished jobs stay visible for minutes) */
        char *state_path;               /* jobs.json: the unfinished jobs, for crash recovery */
        VfmigTicketSet *used_tickets;
        unsigned next_id;
        const JobsListener *listener;
        void *userdata;
};

/* One device of a job: its data stream and what we did to it. */
typedef struct JobDev {
        VfmigVfioData *data;
        bool moved;                     /* left RUNNING because of us */
} JobDev;

struct JobPrivate {
        Jobs *set;
        unsigned n_dev;                 /* = length of Job.devices */
        JobDev *dev;
        char *names;                    /* "a, b, c" for messages */
        /* options */
        bool precopy, plaintext, resume_running, tcp;
        uint32_t downtime_budget_ms;
        uint64_t stall_usec;            /* no progress on the connection this long fails the job (a target
                                         * that answered success: ends its wait for the COMMIT) */
        char *ticket;
        uint64_t ticket_expires_usec;
        VfmigPsk psk;
        /* transport */
        int listen_fd;
        sd_event_source *listen_src;
        VfmigStreamConn *conn;
        sd_event_source *io_src;
        bool handshaken;
        /* pumps */
        VfmigStreamSender *sender;
        VfmigStreamReceiver *receiver;
        bool stopped;                   /* source: STOP_COPY reached */
        bool replied;                   /* target: RESULT queued */
        bool end_seen;                  /* target: END handled */
        bool cancel_requested;
        bool answered;                  /* source: read the target's RESULT 0 (kept when the sender is freed) */
        int pending_error;              /* target: the error being reported (>0) while draining */
        char *pending_message;
        /* time */
        uint64_t start_usec, first_byte_usec, stop_usec;
        /* sources */
        sd_event_source *defer_src;
        sd_event_source *timer_src;     /* handshake / drain / pre-copy poll */
        sd_event_source *expiry_src;    /* target: ticket expiry */
        sd_event_source *retention_src;
        sd_event_source *stall_src;     /* source: the connection made no progress */
        uint64_t last_progress_bytes;
        uint64_t last_predict_usec;
};

static const char *const kind_names[_JOB_KIND_MAX] = { "save", "restore" };
static const char *const state_names[_JOB_STATE_MAX] = {
        "preparing", "waiting", "streaming", "switchover", "completed", "failed", "cancelled",
};

const char *job_kind_to_string(JobKind k)
{
        return k < _JOB_KIND_MAX ? kind_names[k] : NULL;
}

const char *job_state_to_string(JobState s)
{
        return s < _JOB_STATE_MAX ? state_names[s] : NULL;
}

bool job_state_is_final(JobState s)
{
        return s == JOB_COMPLETED || s == JOB_FAILED || s == JOB_CANCELLED;
}

static uint64_t now_usec(clockid_t c)
{
        struct timespec ts;

        clock_gettime(c, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

/* The device names, "a, b, c", for messages. */
static const char *job_device(Job *j)
{
        return j->priv->names;
}

static ManagedDevice *job_managed_at(Job *j, unsigned i)
{
        ManagedDevice *m = device_access_get(j->priv->set->access, j->devices[i]);

        return m && m->status == ACCESS_MANAGED && m->vfio ? m : NULL;
}

static bool mig_state_is_p2p(VfmigMigState st)
{
        return st == VFMIG_MIG_RUNNING_P2P || st == VFMIG_MIG_PRE_COPY_P2P;
}

static const char *mig_state_name(VfmigMigState st)
{
        const char *n = vfmig_mig_state_to_string(st);

        return n ? n : "?";
}

/* --- lifecycle ------------------------------------------------------------ */

static void job_release_transport(Job *j)
{
        JobPrivate *p = j->priv;

        p->defer_src = sd_event_source_disable_unref(p->defer_src);
        p->timer_src = sd_event_source_disable_unref(p->timer_src);
        p->stall_src = sd_event_source_disable_unref(p->stall_src);
        p->expiry_src = sd_event_source_disable_unref(p->expiry_src);
        p->io_src = sd_event_source_disable_unref(p->io_src);
        p->listen_src = sd_event_source_disable_unref(p->listen_src);
        if (p->listen_fd >= 0) {
                close(p->listen_fd);
                p->listen_fd = -1;
        }
        if (p->sender && vfmig_stream_sender_answered(p->sender))
                p->answered = true;
        g_clear_pointer(&p->sender, vfmig_stream_sender_free);
        g_clear_pointer(&p->receiver, vfmig_stream_receiver_free);
        g_clear_pointer(&p->conn, vfmig_stream_conn_free);
        for (unsigned i = 0; i < p->n_dev; i++)
                g_clear_pointer(&p->dev[i].data, vfmig_vfio_data_close);
}

/*
 * Devices that must stay as they are whatever ends the job: a source's once
 * it read the target's success answer (the target may run the state as soon
 * as the COMMIT arrives), a target's once it answered success (the source
 * may have completed: they may hold the only copy).
 */
static bool job_holds_state(Job *j)
{
        JobPrivate *p = j->priv;

        if (j->kind == JOB_SAVE)
                return p->answered || (p->sender && vfmig_stream_sender_answered(p->sender));
        return p->replied && !p->pending_error;
}

static void job_free(Job *j)
{
        if (!j)
                return;
        job_release_transport(j);
        j->priv->retention_src = sd_event_source_disable_unref(j->priv->retention_src);
        vfmig_psk_clear(&j->priv->psk);
        if (j->priv->ticket)
                memset(j->priv->ticket, 0, strlen(j->priv->ticket));
        g_free(j->priv->ticket);
        g_free(j->priv->pending_message);
        g_free(j->priv->dev);
        g_free(j->priv->names);
        g_free(j->priv);
        g_strfreev(j->devices);
        g_strfreev(j->reservations);
        g_free(j->reservation_id);
        g_free(j->error_message);
        g_free(j->id);
        g_free(j);
}

static char *jobs_state_path(void);
static void jobs_save_state(Jobs *s);
static int on_retention(sd_event_source *src, uint64_t usec, void *userdata);

Jobs *jobs_new(sd_event *event, DeviceAccess *access, Reservations *reservations, CompatService *compat,
               const char *host_name)
{
        Jobs *s = g_new0(Jobs, 1);

        s->event = sd_event_ref(event);
        s->access = access;
        s->reservations = reservations;
        s->compat = compat;
        s->host_name = g_strdup(host_name);
        s->jobs = g_hash_table_new(g_str_hash, g_str_equal);
        s->live = g_hash_table_new(g_str_hash, g_str_equal);
        s->used_tickets = vfmig_ticket_set_new();
        s->next_id = 1;
        s->state_path = jobs_state_path();
        return s;
}

void jobs_set_listener(Jobs *s, const JobsListener *l, void *userdata)
{
        s->listener = l;
        s->userdata = userdata;
}

static void unwind_devices(Job *j);
static void job_reservations_active(Job *j);
static void source_done(Job *j);
static void target_answered_end(Job *j, bool timed_out);

void jobs_free(Jobs *s)
{
        GHashTableIter it;
        Job *j;

        if (!s)
                return;
        g_hash_table_remove_all(s->live);
        g_hash_table_iter_init(&it, s->jobs);
        while (g_hash_table_iter_next(&it, NULL, (void **) &j)) {
                if (!job_state_is_final(j->state)) {
                        job_release_transport(j);
                        unwind_devices(j);
                        job_reservations_active(j);
                }
                if (s->listener && s->listener->removed)
                        s->listener->removed(s, j, true, s->userdata);
                job_free(j);
        }
        g_hash_table_remove_all(s->jobs);
        jobs_save_state(s);            /* the running jobs were unwound: nothing to recover */
        g_hash_table_unref(s->jobs);
        g_hash_table_unref(s->live);
        g_free(s->state_path);
        vfmig_ticket_set_free(s->used_tickets);
        sd_event_unref(s->event);
        g_free(s->host_name);
        g_free(s);
}

Job *jobs_get(Jobs *s, const char *id)
{
        return id ? g_hash_table_lookup(s->jobs, id) : NULL;
}

static gint cmp_job(gconstpointer a, gconstpointer b)
{
        const Job *x = *(Job **) a, *y = *(Job **) b;
        unsigned long ix = strtoul(x->id, NULL, 10), iy = strtoul(y->id, NULL, 10);

        return ix < iy ? -1 : ix > iy;
}

GPtrArray *jobs_list(Jobs *s)
{
        GPtrArray *l = g_ptr_array_new();
        GHashTableIter it;
        Job *j;

        g_hash_table_iter_init(&it, s->jobs);
        while (g_hash_table_iter_next(&it, NULL, (void **) &j))
                g_ptr_array_add(l, j);
        g_ptr_array_sort(l, cmp_job);
        return l;
}

char *jobs_busy_hook(const char *device, void *userdata)
{
        Jobs *s = userdata;
        GHashTableIter it;
        Job *j;

        if (!s || !device || g_hash_table_size(s->live) == 0)
                return NULL;    /* asked of every FindCompatibleTargets candidate */
        g_hash_table_iter_init(&it, s->live);
        while (g_hash_table_iter_next(&it, NULL, (void **) &j))
                if (g_strv_contains((const char *const *) j->devices, device))
                        return g_strdup_printf("job %s (%s, %s)", j->id, job_kind_to_string(j->kind),
                                               job_state_to_string(j->state));
        return NULL;
}

static Job *job_new(Jobs *s, JobKind kind, const char *const *devices)
{
        Job *j = g_new0(Job, 1);

        j->id = g_strdup_printf("%u", s->next_id++);
        j->kind = kind;
        j->devices = g_strdupv((char **) devices);
        j->error_message = g_strdup("");
        j->priv = g_new0(JobPrivate, 1);
        j->priv->set = s;
        j->priv->n_dev = g_strv_length(j->devices);
        j->priv->dev = g_new0(JobDev, j->priv->n_dev);
        j->priv->names = g_strjoinv(", ", j->devices);
        j->priv->stall_usec = (uint64_t) JOB_STALL_DEFAULT_MS * 1000ULL;
        j->priv->listen_fd = -1;
        j->priv->start_usec = now_usec(CLOCK_MONOTONIC);
        j->state = kind == JOB_SAVE ? JOB_PREPARING : JOB_WAITING;
        g_hash_table_insert(s->jobs, j->id, j);
        g_hash_table_insert(s->live, j->id, j);
        return j;
}

static void job_announce(Job *j)
{
        Jobs *s = j->priv->set;

        log_internal(LOG_INFO, "VFMIG_JOB", j->id, "Job %s: %s of %s started", j->id, job_kind_to_string(j->kind),
                     job_device(j));
        jobs_save_state(s);
        if (s->listener && s->listener->added)
                s->listener->added(s, j, s->userdata);
}

static void job_set_state(Job *j, JobState st)
{
        Jobs *s = j->priv->set;

        if (j->state == st)
                return;
        j->state = st;
        if (job_state_is_final(st))
                g_hash_table_remove(s->live, j->id);
        if (s->listener && s->listener->changed)
                s->listener->changed(s, j, s->userdata);
}

static void update_counters(Job *j)
{
        JobPrivate *p = j->priv;
        Jobs *s = p->set;
        uint64_t b = p->sender ? vfmig_stream_sender_bytes(p->sender) :
                     p->receiver ? vfmig_stream_receiver_bytes(p->receiver) : j->bytes_transferred;
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        if (b > 0 && !p->first_byte_usec)
                p->first_byte_usec = now;
        j->bytes_transferred = b;
        if (p->first_byte_usec && now > p->first_byte_usec)
                j->throughput = (double) b * 1e6 / (double) (now - p->first_byte_usec);
        if (b != p->last_progress_bytes) {
                p->last_progress_bytes = b;
                if (s->listener && s->listener->progress)
                        s->listener->progress(s, j, s->userdata);
        }
}

static int on_retention(sd_event_source *src, uint64_t usec, void *userdata)
{
        Job *j = userdata;
        Jobs *s = j->priv->set;

        g_hash_table_remove(s->jobs, j->id);
        if (s->listener && s->listener->removed)
                s->listener->removed(s, j, false, s->userdata);
        job_free(j);
        return 0;
}

/*
 * Room for one more job: at most JOBS_MAX unfinished ones.  Finished jobs
 * stay visible for JOB_RETENTION_USEC but never stand in the way: past
 * JOBS_RETAINED_MAX objects the oldest finished one goes early.
 */
static int jobs_make_room(Jobs *s)
{
        GHashTableIter it;
        Job *j, *oldest = NULL;
        unsigned active = 0;

        g_hash_table_iter_init(&it, s->jobs);
        while (g_hash_table_iter_next(&it, NULL, (gpointer *) &j)) {
                if (!job_state_is_final(j->state))
                        active++;
                else if (!oldest || strtoul(j->id, NULL, 10) < strtoul(oldest->id, NULL, 10))
                        oldest = j;
        }
        if (active >= JOBS_MAX)
                return -EBUSY;
        if (oldest && g_hash_table_size(s->jobs) >= JOBS_RETAINED_MAX)
                (void) on_retention(NULL, 0, oldest);
        return 0;
}

/* Put device i back: source RUNNING, target reset (when it moved). */
static void unwind_one(Job *j, unsigned i)
{
        JobPrivate *p = j->priv;
        const char *name = j->devices[i];
        ManagedDevice *m = job_managed_at(j, i);
        VfmigMigState st = VFMIG_MIG_ERROR;
        int r;

        g_clear_pointer(&p->dev[i].data, vfmig_vfio_data_close);
        if (!m)
                return;
        if (managed_device_get_state(m, &st) < 0)
                st = VFMIG_MIG_ERROR;
        if (j->kind == JOB_SAVE) {
                if (st == VFMIG_MIG_RUNNING)
                        return;
                if (st != VFMIG_MIG_ERROR) {
                        r = vfmig_vfio_set_state(m->vfio, VFMIG_MIG_RUNNING, NULL);
                        if (r >= 0) {
                                log_device(LOG_INFO, name, "Job %s: source device back in running", j->id);
                                return;
                        }
                        log_device(LOG_WARNING, name, "Job %s: cannot return the device to running "
                                   "(%s), resetting it", j->id, strerror(-r));
                }
        } else if (st == VFMIG_MIG_RUNNING && !p->dev[i].moved)
                return;
        r = managed_device_reset(m);
        if (r < 0)
                log_device(LOG_ERR, name, "Job %s: reset of the device failed: %s", j->id, strerror(-r));
        else
                log_device(LOG_INFO, name, "Job %s: device reset", j->id);
}

/* Every device back.  A source group restarts the way it stopped, in
 * reverse: the stopped devices to RUNNING_P2P first, then each to RUNNING,
 * so no device runs while a peer is still stopped. */
static void unwind_devices(Job *j)
{
        JobPrivate *p = j->priv;

        if (job_holds_state(j)) {
                for (unsigned i = 0; i < p->n_dev; i++) {
                        g_clear_pointer(&p->dev[i].data, vfmig_vfio_data_close);
                        p->dev[i].moved = false;
                }
                return;
        }

        if (j->kind == JOB_SAVE && p->n_dev > 1)
                for (unsigned i = 0; i < p->n_dev; i++) {
                        ManagedDevice *m = job_managed_at(j, i);
                        VfmigMigState st;

                        if (!m || !(m->migration_flags & VFMIG_MIGRATION_P2P) ||
                            managed_device_get_state(m, &st) < 0)
                                continue;
                        if (st != VFMIG_MIG_STOP && st != VFMIG_MIG_STOP_COPY && st != VFMIG_MIG_PRE_COPY_P2P)
                                continue;
                        g_clear_pointer(&p->dev[i].data, vfmig_vfio_data_close);
                        (void) vfmig_vfio_set_state(m->vfio, VFMIG_MIG_RUNNING_P2P, NULL);
                }
        for (unsigned i = 0; i < p->n_dev; i++) {
                unwind_one(j, i);
                p->dev[i].moved = false;
        }
}

/* Restore: every reservation received into is "active" again. */
static void job_reservations_active(Job *j)
{
        Jobs *s = j->priv->set;

        for (char **id = j->reservations; id && *id; id++) {
                Reservation *res = reservations_get(s->reservations, *id);

                if (res)
                        reservation_set_state(res, RESERVATION_ACTIVE);
        }
}

static void job_finish(Job *j, JobState st, int error, const char *message)
{
        JobPrivate *p = j->priv;
        Jobs *s = p->set;
        int r;

        if (job_state_is_final(j->state))
                return;
        update_counters(j);
        job_release_transport(j);
        if (st != JOB_COMPLETED)
                unwind_devices(j);
        if (j->kind == JOB_RESTORE)
                job_reservations_active(j);
        j->error = st == JOB_COMPLETED ? 0 : (error > 0 ? error : -error);
        g_free(j->error_message);
        j->error_message = g_strdup(message ? message : "");
        if (st == JOB_COMPLETED)
                log_internal(LOG_INFO, "VFMIG_JOB", j->id, "Job %s: %s of %s completed, %" PRIu64 " bytes, "
                             "%.1f MB/s, downtime %" PRIu64 " ms", j->id, job_kind_to_string(j->kind),
                             job_device(j), j->bytes_transferred, j->throughput / 1e6, j->downtime_ms);
        else
                log_internal(LOG_WARNING, "VFMIG_JOB", j->id, "Job %s: %s of %s %s: %s", j->id,
                             job_kind_to_string(j->kind), job_device(j), job_state_to_string(st), j->error_message);
        job_set_state(j, st);
        jobs_save_state(s);
        if (s->listener && s->listener->finished)
                s->listener->finished(s, j, s->userdata);
        r = sd_event_add_time_relative(s->event, &p->retention_src, CLOCK_MONOTONIC, JOB_RETENTION_USEC, 0,
                                       on_retention, j);
        if (r < 0)
                log_warning_errno(r, "Job %s: cannot arm the retention timer: %m", j->id);
}

static void job_fail(Job *j, int error, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static void job_fail(Job *j, int error, const char *fmt, ...)
{
        g_autofree char *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        job_finish(j, j->priv->cancel_requested ? JOB_CANCELLED : JOB_FAILED, error, msg);
}


/* --- crash recovery: $STATE_DIRECTORY/jobs.json -------------------------------- */

#define JOBS_STATE_FILE         "jobs.json"
#define JOBS_STATE_DIR_DEFAULT  "/var/lib/vfmig"

static char *jobs_state_path(void)
{
        const char *e = getenv("STATE_DIRECTORY");
        g_autofree char *dir = NULL;

        /* systemd passes a colon-separated list when several are configured. */
        if (e && e[0] == '/') {
                const char *colon = strchr(e, ':');
                dir = colon ? g_strndup(e, colon - e) : g_strdup(e);
        } else
                dir = g_strdup(JOBS_STATE_DIR_DEFAULT);
        return g_build_filename(dir, JOBS_STATE_FILE, NULL);
}

/* Record the unfinished jobs (atomically: temporary file, fsync, rename), or
 * remove the file when there are none.  Called when a job starts and ends. */
static void jobs_save_state(Jobs *s)
{
        g_autoptr(JsonBuilder) b = NULL;
        g_autoptr(JsonGenerator) gen = NULL;
        g_autoptr(JsonNode) root = NULL;
        g_autoptr(GPtrArray) l = NULL;
        g_autoptr(GError) err = NULL;
        g_autofree char *data = NULL, *dir = NULL;
        unsigned n = 0;
        gsize len;

        if (!s->state_path)
                return;
        b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "format");
        json_builder_add_int_value(b, 1);
        json_builder_set_member_name(b, "jobs");
        json_builder_begin_array(b);
        l = jobs_list(s);
        for (guint i = 0; i < l->len; i++) {
                Job *j = l->pdata[i];

                if (job_state_is_final(j->state))
                        continue;
                json_builder_begin_object(b);
                json_builder_set_member_name(b, "id");
                json_builder_add_string_value(b, j->id);
                json_builder_set_member_name(b, "kind");
                json_builder_add_string_value(b, job_kind_to_string(j->kind));
                json_builder_set_member_name(b, "devices");
                json_builder_begin_array(b);
                for (char **d = j->devices; *d; d++)
                        json_builder_add_string_value(b, *d);
                json_builder_end_array(b);
                if (j->reservation_id) {
                        json_builder_set_member_name(b, "reservation");
                        json_builder_add_string_value(b, j->reservation_id);
                }
                if (j->reservations) {
                        json_builder_set_member_name(b, "reservations");
                        json_builder_begin_array(b);
                        for (char **r = j->reservations; *r; r++)
                                json_builder_add_string_value(b, *r);
                        json_builder_end_array(b);
                }
                json_builder_end_object(b);
                n++;
        }
        json_builder_end_array(b);
        json_builder_end_object(b);
        if (n == 0) {
                if (unlink(s->state_path) < 0 && errno != ENOENT)
                        log_warning_errno(-errno, "Cannot remove %s: %m", s->state_path);
                return;
        }
        root = json_builder_get_root(b);
        gen = json_generator_new();
        json_generator_set_root(gen, root);
        data = json_generator_to_data(gen, &len);
        dir = g_path_get_dirname(s->state_path);
        if (g_mkdir_with_parents(dir, 0700) < 0 ||
            !g_file_set_contents_full(s->state_path, data, (gssize) len,
                                      G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE, 0600, &err))
                log_warning("Cannot write %s, a crash during the running jobs will not be recovered: %s",
                            s->state_path, err ? err->message : g_strerror(errno));
}

static void recover_one(Jobs *s, JsonObject *o)
{
        const char *kind = json_object_has_member(o, "kind") ? json_object_get_string_member(o, "kind") : NULL;
        const char *old_id = json_object_has_member(o, "id") ? json_object_get_string_member(o, "id") : "?";
        const char *res_id = json_object_has_member(o, "reservation") ?
                             json_object_get_string_member(o, "reservation") : NULL;
        JsonNode *dn = json_object_get_member(o, "devices");
        JsonNode *rn = json_object_get_member(o, "reservations");
        JsonArray *devs = dn && JSON_NODE_HOLDS_ARRAY(dn) ? json_node_get_array(dn) : NULL;
        JsonArray *ress = rn && JSON_NODE_HOLDS_ARRAY(rn) ? json_node_get_array(rn) : NULL;
        guint n = devs ? json_array_get_length(devs) : 0;
        g_autoptr(GPtrArray) names = g_ptr_array_new();
        JobKind k = streq_ptr(kind, "restore") ? JOB_RESTORE : JOB_SAVE;
        ManagedDevice *m;
        Job *j;
        int r;

        for (guint i = 0; i < n; i++) {
                JsonNode *e = json_array_get_element(devs, i);
                const char *name = JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING ?
                                   json_node_get_string(e) : NULL;

                if (!name || !vfmig_device_name_is_valid(name)) {
                        n = 0;
                        break;
                }
                g_ptr_array_add(names, (char *) name);
        }
        if (n == 0 || n > VFMIG_STREAM_MAX_DEVICES || (!streq_ptr(kind, "save") && !streq_ptr(kind, "restore"))) {
                log_warning("%s: skipping a malformed job record", s->state_path);
                return;
        }
        g_ptr_array_add(names, NULL);
        for (guint i = 0; i < n; i++) {
                const char *name = names->pdata[i];

                m = name ? device_access_get(s->access, name) : NULL;
                if (!m || m->status != ACCESS_MANAGED || !m->vfio) {
                        log_device(LOG_WARNING, name ? name : "?", "Job %s (before the restart): device not "
                                   "managed now, not reset", old_id);
                        continue;
                }
                r = managed_device_reset(m);
                if (r < 0)
                        log_device(LOG_ERR, name, "Job %s (before the restart): reset of the device failed: %s",
                                   old_id, strerror(-r));
        }
        j = job_new(s, k, (const char *const *) names->pdata);
        if (ress) {
                g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);

                for (guint i = 0; i < json_array_get_length(ress); i++) {
                        JsonNode *e = json_array_get_element(ress, i);

                        if (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING &&
                            reservation_id_is_valid(json_node_get_string(e)))
                                g_ptr_array_add(ids, g_strdup(json_node_get_string(e)));
                }
                g_ptr_array_add(ids, NULL);
                j->reservations = (char **) g_ptr_array_steal(ids, NULL);
        } else if (res_id && reservation_id_is_valid(res_id)) {
                char *v[] = { (char *) res_id, NULL };

                j->reservations = g_strdupv(v);
        }
        if (j->reservations && j->reservations[0])
                j->reservation_id = g_strdup(j->reservations[0]);
        job_reservations_active(j);
        j->state = JOB_FAILED;
        g_hash_table_remove(s->live, j->id);
        j->error = EIO;
        g_free(j->error_message);
        j->error_message = g_strdup("daemon restarted during the job; devices reset");
        log_internal(LOG_WARNING, "VFMIG_JOB", j->id, "Job %s: %s of %s interrupted by a restart (job %s before "
                     "it): devices reset, reported failed", j->id, kind, job_device(j), old_id);
        if (s->listener && s->listener->added)
                s->listener->added(s, j, s->userdata);
        r = sd_event_add_time_relative(s->event, &j->priv->retention_src, CLOCK_MONOTONIC, JOB_RETENTION_USEC, 0,
                                       on_retention, j);
        if (r < 0)
                log_warning_errno(r, "Job %s: cannot arm the retention timer: %m", j->id);
}

int jobs_recover(Jobs *s)
{
        g_autoptr(JsonParser) parser = json_parser_new();
        g_autofree char *text = NULL, *why = NULL;
        gsize len = 0;
        g_autoptr(GError) err = NULL;
        JsonNode *root;
        JsonArray *a;
        unsigned n;

        if (!s->state_path || !g_file_test(s->state_path, G_FILE_TEST_EXISTS))
                return 0;
        if (g_file_get_contents(s->state_path, &text, &len, &err) && !jv_check(text, len, &why))
                g_set_error(&err, JSON_PARSER_ERROR, JSON_PARSER_ERROR_PARSE, "not JSON: %s", why);
        if (err || !json_parser_load_from_data(parser, text, (gssize) len, &err) ||
            !(root = json_parser_get_root(parser)) || !JSON_NODE_HOLDS_OBJECT(root) ||
            !json_object_has_member(json_node_get_object(root), "jobs") ||
            !JSON_NODE_HOLDS_ARRAY(json_object_get_member(json_node_get_object(root), "jobs"))) {
                log_warning("%s is not valid (%s), ignoring it", s->state_path, err ? err->message : "no jobs array");
                (void) unlink(s->state_path);
                return -EINVAL;
        }
        a = json_object_get_array_member(json_node_get_object(root), "jobs");
        n = json_array_get_length(a);
        for (guint i = 0; i < n; i++) {
                JsonNode *e = json_array_get_element(a, i);

                if (JSON_NODE_HOLDS_OBJECT(e))
                        recover_one(s, json_node_get_object(e));
        }
        jobs_save_state(s);            /* none unfinished now: removes the file */
        return (int) n;
}

/* --- driving ---------------------------------------------------------------- */

static void job_run(Job *j);

static int on_defer(sd_event_source *src, void *userdata)
{
        job_run(userdata);
        return 0;
}

static int on_io(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
        Job *j = userdata;

        (void) sd_event_source_set_enabled(src, SD_EVENT_OFF);
        /* the connection moved: the stall clock starts again at the next wait */
        if (j->priv->stall_src)
                (void) sd_event_source_set_enabled(j->priv->stall_src, SD_EVENT_OFF);
        job_run(j);
        return 0;
}

static int on_stall(sd_event_source *src, uint64_t usec, void *userdata)
{
        Job *j = userdata;
        JobPrivate *p = j->priv;

        if (job_state_is_final(j->state))
                return 0;
        if (j->kind == JOB_RESTORE) {
                if (p->replied && !p->pending_error && !p->cancel_requested)
                        target_answered_end(j, true);   /* no COMMIT, no close */
                else if (p->pending_error)
                        job_fail(j, p->pending_error, "%s", p->pending_message);   /* draining after a refusal */
                else
                        job_fail(j, ETIMEDOUT, "connection: no progress for %" PRIu64 " ms: the source stopped "
                                 "sending", (uint64_t) (p->stall_usec / 1000ULL));
                return 0;
        }
        if (p->sender && vfmig_stream_sender_answered(p->sender)) {
                /* only the COMMIT is stuck: the migration succeeded */
                source_done(j);
                return 0;
        }
        job_fail(j, ETIMEDOUT, "connection: no progress for %" PRIu64 " ms: the target stopped reading the "
                 "stream or did not answer", (uint64_t) (p->stall_usec / 1000ULL));
        return 0;
}

/* After the handshake, about to wait on the connection: fail when it makes
 * no progress for stall_usec (re-armed at every wait).  A source whose
 * target stops reading or answering; a target whose source stops sending
 * (a host gone without a FIN or reset) or, after the success answer, does
 * not confirm. */
static void arm_stall(Job *j)
{
        JobPrivate *p = j->priv;
        int r;

        if (!p->handshaken)
                return;
        if (!p->stall_src) {
                r = sd_event_add_time_relative(p->set->event, &p->stall_src, CLOCK_MONOTONIC, p->stall_usec, 1000,
                                               on_stall, j);
                if (r < 0)
                        log_warning_errno(r, "Job %s: cannot arm the stall timer: %m", j->id);
                return;
        }
        r = sd_event_source_set_time_relative(p->stall_src, p->stall_usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(p->stall_src, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Job %s: cannot arm the stall timer: %m", j->id);
}

static int64_t job_priority(Job *j)
{
        return j->priv->handshaken ? JOB_PRIORITY_STREAMING : JOB_PRIORITY_CONNECTING;
}

static void schedule_again(Job *j)
{
        JobPrivate *p = j->priv;
        int r;

        if (!p->defer_src) {
                r = sd_event_add_defer(p->set->event, &p->defer_src, on_defer, j);
                if (r < 0) {
                        job_fail(j, -r, "internal: cannot schedule the job: %s", strerror(-r));
                        return;
                }
        }
        (void) sd_event_source_set_priority(p->defer_src, job_priority(j));
        (void) sd_event_source_set_enabled(p->defer_src, SD_EVENT_ONESHOT);
}

static void wait_io(Job *j)
{
        JobPrivate *p = j->priv;
        short ev = vfmig_stream_conn_events(p->conn);
        uint32_t e = ((ev & POLLIN) ? EPOLLIN : 0) | ((ev & POLLOUT) ? EPOLLOUT : 0);
        int r;

        if (!e)
                e = EPOLLIN;
        /* A source blocked on a full socket still sees the target end or
         * answer.  (Its look at the input leaves the connection's last
         * direction at POLLIN; it is blocked on output all the same.) */
        if (j->kind == JOB_SAVE && p->sender && vfmig_stream_sender_wants_input(p->sender))
                e = EPOLLIN | EPOLLOUT;
        if (vfmig_stream_conn_pending(p->conn) && (ev & POLLIN)) {
                schedule_again(j);
                return;
        }
        if (!p->io_src) {
                r = sd_event_add_io(p->set->event, &p->io_src, vfmig_stream_conn_fd(p->conn), e, on_io, j);
                if (r < 0) {
                        job_fail(j, -r, "internal: cannot watch the connection: %s", strerror(-r));
                        return;
                }
        } else
                (void) sd_event_source_set_io_events(p->io_src, e);
        (void) sd_event_source_set_priority(p->io_src, job_priority(j));
        (void) sd_event_source_set_enabled(p->io_src, SD_EVENT_ON);
        arm_stall(j);
}

static uint64_t job_handshake_usec(Job *j);

static int on_timer_expired(sd_event_source *src, uint64_t usec, void *userdata)
{
        Job *j = userdata;
        JobPrivate *p = j->priv;

        p->timer_src = sd_event_source_disable_unref(p->timer_src);
        if (!p->handshaken) {
                if (j->kind == JOB_RESTORE && p->tcp) {
                        /* a peer that never finished: drop it, keep listening */
                        log_internal(LOG_WARNING, "VFMIG_JOB", j->id, "Job %s: the TLS handshake timed out, "
                                     "waiting for another connection", j->id);
                        p->io_src = sd_event_source_disable_unref(p->io_src);
                        g_clear_pointer(&p->conn, vfmig_stream_conn_free);
                        (void) sd_event_source_set_enabled(p->listen_src, SD_EVENT_ON);
                        return 0;
                }
                job_fail(j, ETIMEDOUT, "connection: the peer did not complete the connection and TLS handshake "
                         "within %" PRIu64 " ms", (uint64_t) (job_handshake_usec(j) / 1000ULL));
                return 0;
        }
        if (p->pending_error || p->cancel_requested) {
                /* draining after our answer / abort: the peer did not close */
                job_fail(j, p->pending_error ? p->pending_error : ECANCELED, "%s",
                         p->pending_message ? p->pending_message : "cancelled");
                return 0;
        }
        /* pre-copy poll */
        job_run(j);
        return 0;
}

/* The source's handshake is bounded by its stall timeout when that is shorter. */
static uint64_t job_handshake_usec(Job *j)
{
        return j->kind == JOB_SAVE ? MIN(JOB_HANDSHAKE_USEC, j->priv->stall_usec) : JOB_HANDSHAKE_USEC;
}

static void arm_timer(Job *j, uint64_t usec)
{
        JobPrivate *p = j->priv;
        int r;

        p->timer_src = sd_event_source_disable_unref(p->timer_src);
        r = sd_event_add_time_relative(p->set->event, &p->timer_src, CLOCK_MONOTONIC, usec, 1000,
                                       on_timer_expired, j);
        if (r < 0)
                log_warning_errno(r, "Job %s: cannot arm a timer: %m", j->id);
}

/* --- source ----------------------------------------------------------------- */

/* Every device of a group in a P2P state, read back from the devices, before
 * any goes on to STOP_COPY; the log line lists what they said. */
static int source_check_p2p(Job *j)
{
        JobPrivate *p = j->priv;
        g_autoptr(GString) states = g_string_new(NULL);

        for (unsigned i = 0; i < p->n_dev; i++) {
                ManagedDevice *m = job_managed_at(j, i);
                VfmigMigState st = VFMIG_MIG_ERROR;

                if (!m || managed_device_get_state(m, &st) < 0 || !mig_state_is_p2p(st)) {
                        job_fail(j, EIO, "source: device %s is in %s, not in a p2p state, before the group "
                                 "stops", j->devices[i], mig_state_name(st));
                        return -EIO;
                }
                g_string_append_printf(states, "%s%s %s", i ? ", " : "", j->devices[i], mig_state_name(st));
        }
        log_internal(LOG_INFO, "VFMIG_JOB", j->id, "Job %s: all %u devices in a p2p state (%s), stopping them",
                     j->id, p->n_dev, states->str);
        return 0;
}

/* Move every device to state (a group: one device after the other).  The
 * data streams of the arcs that start one are kept. */
static int source_move_all(Job *j, VfmigMigState state)
{
        JobPrivate *p = j->priv;

        for (unsigned i = 0; i < p->n_dev; i++) {
                ManagedDevice *m = job_managed_at(j, i);
                VfmigVfioData *data = NULL;
                int r;

                if (!m) {
                        job_fail(j, ENODEV, "source: device %s is no longer managed by vfmigd", j->devices[i]);
                        return -ENODEV;
                }
                p->dev[i].moved = true;
                r = vfmig_vfio_set_state(m->vfio, state, &data);
                if (data) {
                        g_clear_pointer(&p->dev[i].data, vfmig_vfio_data_close);
                        p->dev[i].data = data;
                }
                if (r < 0) {
                        job_fail(j, EIO, "source: device %s refused to enter %s: %s", j->devices[i],
                                 mig_state_name(state), strerror(-r));
                        return -EIO;
                }
                if (p->n_dev > 1)
                        log_device(LOG_DEBUG, j->devices[i], "Job %s: device in %s", j->id, mig_state_name(state));
        }
        return 0;
}

/* Stop every device: a group goes through a P2P state first (all of them),
 * then to STOP_COPY. */
static int source_stop_all(Job *j)
{
        JobPrivate *p = j->priv;
        int r;

        if (p->n_dev > 1) {
                r = source_move_all(j, p->precopy ? VFMIG_MIG_PRE_COPY_P2P : VFMIG_MIG_RUNNING_P2P);
                if (r < 0)
                        return r;
                r = source_check_p2p(j);
                if (r < 0)
                        return r;
        }
        r = source_move_all(j, VFMIG_MIG_STOP_COPY);
        if (r < 0)
                return r;
        for (unsigned i = 0; i < p->n_dev; i++)
                if (!p->dev[i].data) {
                        job_fail(j, EIO, "source: device %s gave no data stream in stop-copy", j->devices[i]);
                        return -EIO;
                }
        p->stopped = true;
        p->stop_usec = now_usec(CLOCK_MONOTONIC);
        return 0;
}

/* The data all devices have left to send now (their MIG_DATA_SIZE); false
 * when a device cannot say. */
static bool source_data_size(Job *j, uint64_t *ret)
{
        uint64_t total = 0;

        for (unsigned i = 0; i < j->priv->n_dev; i++) {
                ManagedDevice *m = job_managed_at(j, i);
                uint64_t size = 0;

                if (!m || vfmig_vfio_get_data_size(m->vfio, &size) < 0)
                        return false;
                total += size;
        }
        *ret = total;
        return true;
}

static int source_start_device(Job *j)
{
        JobPrivate *p = j->priv;
        Jobs *s = p->set;
        VfmigStreamHeader h = { .n_devices = p->n_dev };
        int r;

        /* everything known before the first device moves */
        for (unsigned i = 0; i < p->n_dev; i++) {
                ManagedDevice *m = job_managed_at(j, i);
                MatrixEntry *e = matrix_lookup(compat_service_matrix(s->compat), j->devices[i]);
                const VfmigProfile *prof = e ? matrix_entry_get_profile(e) : NULL;
                g_autoptr(VfmigProfile) copy = NULL;
                g_autoptr(JsonBuilder) b = json_builder_new();
                g_autoptr(JsonNode) node = NULL;

                if (!m) {
                        vfmig_stream_header_clear(&h);
                        job_fail(j, ENODEV, "source: device %s is no longer managed by vfmigd", j->devices[i]);
                        return -ENODEV;
                }
                if (!prof) {
                        vfmig_stream_header_clear(&h);
                        job_fail(j, EOPNOTSUPP, "source: device %s has no migration profile any more",
                                 j->devices[i]);
                        return -EOPNOTSUPP;
                }
                if (!(m->migration_flags & VFMIG_MIGRATION_PRE_COPY))
                        p->precopy = false;     /* pre-copy for all or none */
                copy = vfmig_profile_copy(prof);
                g_free(copy->source_host);
                copy->source_host = g_strdup(s->host_name);
                g_free(copy->source_device);
                copy->source_device = g_strdup(j->devices[i]);
                vfmig_profile_build_json(copy, b);
                node = json_builder_get_root(b);
                vfmig_stream_header_set_profile(&h, i, json_node_get_object(node));
                h.devices[i].bytes_estimate = prof->has_state_size ? prof->state_size : 0;
        }

        r = p->precopy ? source_move_all(j, VFMIG_MIG_PRE_COPY) : source_stop_all(j);
        if (r < 0) {
                vfmig_stream_header_clear(&h);
                return r;
        }
        j->bytes_estimated = 0;
        for (unsigned i = 0; i < p->n_dev; i++) {
                ManagedDevice *m = job_managed_at(j, i);
                uint64_t size = 0;

                if (!p->dev[i].data) {
                        vfmig_stream_header_clear(&h);
                        job_fail(j, EIO, "source: device %s gave no data stream", j->devices[i]);
                        return -EIO;
                }
                if (m && vfmig_vfio_get_data_size(m->vfio, &size) >= 0 && size > 0)
                        h.devices[i].bytes_estimate = size;
                j->bytes_estimated += h.devices[i].bytes_estimate;
        }

        h.tls = vfmig_stream_conn_is_tls(p->conn);
        h.precopy = p->precopy;
        h.downtime_budget_ms = p->downtime_budget_ms;
        r = vfmig_stream_sender_new(&h, p->conn, 0, &p->sender);
        vfmig_stream_header_clear(&h);
        if (r < 0) {
                job_fail(j, -r, "source: cannot start the stream: %s", strerror(-r));
                return r;
        }
        for (unsigned i = 0; i < p->n_dev; i++)
                (void) vfmig_stream_sender_attach(p->sender, i, p->dev[i].data);
        log_internal(LOG_INFO, "VFMIG_JOB", j->id, "Job %s: %s in %s, streaming about %" PRIu64 " bytes", j->id,
                     job_device(j), p->precopy ? "pre-copy" : "stop-copy", j->bytes_estimated);
        job_set_state(j, p->precopy ? JOB_STREAMING : JOB_SWITCHOVER);
        return 0;
}

static int source_do_switchover(Job *j, const char *why)
{
        JobPrivate *p = j->priv;
        uint64_t size = 0;
        int r;

        if (p->stopped)
                return 0;
        if (source_data_size(j, &size) && j->throughput > 0)
                j->predicted_downtime_ms = (uint64_t) ((double) size * 1000.0 / j->throughput);
        r = source_stop_all(j);
        if (r < 0)
                return r;
        vfmig_stream_sender_switchover(p->sender);
        log_internal(LOG_INFO, "VFMIG_JOB", j->id, "Job %s: switchover of %s (%s), %" PRIu64 " bytes left, "
                     "predicted downtime %" PRIu64 " ms", j->id, job_device(j), why, size, j->predicted_downtime_ms);
        job_set_state(j, JOB_SWITCHOVER);
        return 0;
}

/* Pre-copy idle: switch over when the predicted stop-copy time fits. */
/* The predicted stop-copy time from what the devices still hold and the
 * measured throughput; false when either is unknown. */
static bool source_predict(Job *j, double *ret_ms)
{
        uint64_t size = 0;

        if (!source_data_size(j, &size) || j->throughput <= 0)
                return false;
        *ret_ms = (double) size * 1000.0 / j->throughput;
        j->predicted_downtime_ms = (uint64_t) *ret_ms;
        return true;
}

/* PredictedDowntimeMs follows the job (at most every JOB_PREDICT_USEC):
 * while pre-copy runs, from what the devices still hold, so that an
 * orchestrator can decide on Switchover() even when the data never runs
 * out; in a stop-copy job the devices are stopped from the start, so the
 * whole estimated stream is downtime.  0 while unknown (no throughput yet,
 * or a kernel that cannot tell the data size). */
static void source_refresh_prediction(Job *j)
{
        JobPrivate *p = j->priv;
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        double ms;

        if (now - p->last_predict_usec < JOB_PREDICT_USEC)
                return;
        p->last_predict_usec = now;
        if (p->precopy && !p->stopped)
                (void) source_predict(j, &ms);
        else if (!p->precopy && j->bytes_estimated > 0 && j->throughput > 0)
                j->predicted_downtime_ms = (uint64_t) ((double) j->bytes_estimated * 1000.0 / j->throughput);
}

static bool source_should_switch(Job *j)
{
        double ms;

        if (j->priv->downtime_budget_ms == 0)
                return true;
        return source_predict(j, &ms) && ms <= (double) j->priv->downtime_budget_ms;
}

static void source_done(Job *j)
{
        JobPrivate *p = j->priv;

        update_counters(j);
        j->downtime_ms = (now_usec(CLOCK_MONOTONIC) - p->stop_usec) / 1000ULL;
        for (unsigned i = 0; i < p->n_dev; i++) {
                ManagedDevice *m = job_managed_at(j, i);
                int r;

                g_clear_pointer(&p->dev[i].data, vfmig_vfio_data_close);
                r = m ? vfmig_vfio_set_state(m->vfio, VFMIG_MIG_STOP, NULL) : -ENODEV;
                if (r < 0)
                        /* The target has the state; the source only failed to settle. */
                        log_device(LOG_WARNING, j->devices[i], "Job %s: the target took the state but the source "
                                   "device did not reach stop: %s", j->id, strerror(-r));
        }
        job_finish(j, JOB_COMPLETED, 0, NULL);
}

static void source_run(Job *j)
{
        JobPrivate *p = j->priv;
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + JOB_DISPATCH_USEC;
        int r;

        if (!p->handshaken) {
                r = vfmig_stream_conn_handshake(p->conn);
                if (r == -EAGAIN) {
                        wait_io(j);
                        return;
                }
                if (r < 0) {
                        const char *m = vfmig_stream_conn_error(p->conn);
                        job_fail(j, r == -EACCES ? EACCES : -r, "connection: %s%s%s",
                                 r == -EACCES ? "the target refused the ticket (TLS handshake failed): " : "",
                                 m ? m : strerror(-r), "");
                        return;
                }
                p->handshaken = true;
                p->timer_src = sd_event_source_disable_unref(p->timer_src);
                if (p->cancel_requested) {
                        job_fail(j, ECANCELED, "cancelled before the device was stopped");
                        return;
                }
                if (source_start_device(j) < 0)
                        return;
        }

        source_refresh_prediction(j);
        for (unsigned i = 0; i < JOB_STEPS_PER_DISPATCH; i++) {
                VfmigPumpStatus st;

                r = vfmig_stream_sender_step(p->sender, &st);
                if (r < 0) {
                        const char *m = vfmig_stream_sender_error_message(p->sender);
                        bool target = r == -EXDEV || r == -EBADMSG || r == -ECANCELED || r == -EIO ||
                                      r == -ENOLCK || r == -EKEYEXPIRED;
                        if (!m)
                                m = strerror(-r);
                        /* The target's own reason already says "target: ...". */
                        if (target && g_str_has_prefix(m, "the target failed: target: "))
                                m += strlen("the target failed: ");
                        if (p->cancel_requested)
                                job_fail(j, ECANCELED, "cancelled");
                        else if (g_str_has_prefix(m, "target: "))
                                job_fail(j, -r, "%s", m);
                        else
                                job_fail(j, -r, "%s: %s", target ? "target" : "source/connection", m);
                        return;
                }
                update_counters(j);
                switch (st) {
                case VFMIG_PUMP_AGAIN:
                        break;
                case VFMIG_PUMP_WAIT_IO:
                        wait_io(j);
                        return;
                case VFMIG_PUMP_IDLE:
                        if (!p->cancel_requested && source_should_switch(j)) {
                                if (source_do_switchover(j, p->downtime_budget_ms ? "fits the downtime budget" :
                                                         "pre-copy data sent") < 0)
                                        return;
                                break;
                        }
                        (void) vfmig_stream_sender_keepalive(p->sender, j->bytes_estimated > j->bytes_transferred ?
                                                            j->bytes_estimated - j->bytes_transferred : 0);
                        arm_timer(j, JOB_PRECOPY_POLL_USEC);
                        return;
                case VFMIG_PUMP_DONE:
                        if (p->cancel_requested) {
                                job_fail(j, ECANCELED, "cancelled");
                                return;
                        }
                        source_done(j);
                        return;
                default:
                        job_fail(j, EPROTO, "source: unexpected pump status %d", (int) st);
                        return;
                }
                if (now_usec(CLOCK_MONOTONIC) >= deadline)
                        break;
        }
        schedule_again(j);
}

/* --- target ----------------------------------------------------------------- */

/* Queue our answer and drain until the source closes (or the drain timer). */
static void target_refuse(Job *j, int error, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static void target_refuse(Job *j, int error, const char *fmt, ...)
{
        JobPrivate *p = j->priv;
        bool moved = false;
        va_list ap;

        g_free(p->pending_message);
        va_start(ap, fmt);
        p->pending_message = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        p->pending_error = error;
        log_internal(LOG_WARNING, "VFMIG_JOB", j->id, "Job %s: refusing the stream: %s", j->id, p->pending_message);
        /* the devices go back before we wait for the source */
        for (unsigned i = 0; i < p->n_dev; i++)
                if (p->dev[i].moved) {
                        (void) vfmig_stream_receiver_attach(p->receiver, i, NULL);
                        moved = true;
                }
        if (moved)
                unwind_devices(j);
        if (p->replied || vfmig_stream_receiver_reply(p->receiver, error, p->pending_message) < 0) {
                job_fail(j, error, "%s", p->pending_message);
                return;
        }
        p->replied = true;
        arm_timer(j, JOB_DRAIN_USEC);
}

/* The migration type a reservation was made for (its SourceProfile's), or NULL. */
static const char *reservation_migration_type(Reservation *res)
{
        JsonObject *o = res->profile && JSON_NODE_HOLDS_OBJECT(res->profile) ? json_node_get_object(res->profile)
                                                                            : NULL;
        JsonNode *n = o ? json_object_get_member(o, "migration-type") : NULL;

        return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING ?
               json_node_get_string(n) : NULL;
}

/* Stream device i against reservation res: a valid profile, of the migration
 * type res was made for, that the rules let res's target resume.  0, or
 * target_refuse() was called. */
static int target_check_device(Job *j, const VfmigStreamHeader *h, unsigned i, Reservation *res)
{
        Jobs *s = j->priv->set;
        g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), h->devices[i].profile);
        g_autoptr(VfmigProfile) src = NULL;
        g_autofree char *why = NULL;
        g_auto(VfmigVerdict) v = { 0 };   /* matrix_check() fills it */
        const char *want = reservation_migration_type(res);

        if (vfmig_profile_from_json_node(node, &src, &why) < 0) {
                target_refuse(j, EBADMSG, "target: the stream header's profile of device %u is invalid: %s", i, why);
                return -EBADMSG;
        }
        if (want && !streq_ptr(want, src->migration_type)) {
                target_refuse(j, EXDEV, "target: stream device %u (%s from %s) is not of the migration type %s "
                              "reservation %s was made for", i, src->migration_type ? src->migration_type : "?",
                              src->source_device ? src->source_device : "?", want, res->id);
                return -EXDEV;
        }
        if (!matrix_check(compat_service_matrix(s->compat), src, res->target, compat_service_hook(s->compat), &v)) {
                g_autofree char *reasons = vfmig_verdict_reasons_text(&v);
                target_refuse(j, EXDEV, "target: %s cannot resume the stream's device %u (%s from %s): %s",
                              res->target, i, src->migration_type ? src->migration_type : "?",
                              src->source_device ? src->source_device : "?", reasons);
                return -EXDEV;
        }
        log_device(LOG_INFO, res->target, "Job %s: stream device %u accepted (%s from %s on %s)", j->id, i,
                   src->migration_type, src->source_device ? src->source_device : "?",
                   src->source_host ? src->source_host : "?");
        return 0;
}

static void target_header(Job *j)
{
        JobPrivate *p = j->priv;
        Jobs *s = p->set;
        const VfmigStreamHeader *h = vfmig_stream_receiver_header(p->receiver);
        g_autofree Reservation **res = g_new0(Reservation *, p->n_dev);
        int r;

        for (unsigned i = 0; i < p->n_dev; i++) {
                res[i] = reservations_get(s->reservations, j->reservations[i]);
                if (!res[i]) {
                        target_refuse(j, ENOLCK, "target: reservation %s ended before the stream arrived",
                                      j->reservations[i]);
                        return;
                }
        }
        if (h->n_devices != p->n_dev) {
                target_refuse(j, EBADMSG, "target: the stream carries %u device%s, %s %u reservation%s "
                              "(%s)", h->n_devices, h->n_devices == 1 ? "" : "s",
                              p->n_dev == 1 ? "this job receives into" : "this group job receives into",
                              p->n_dev, p->n_dev == 1 ? "" : "s", job_device(j));
                return;
        }
        /* every device checked before any moves */
        for (unsigned i = 0; i < p->n_dev; i++)
                if (target_check_device(j, h, i, res[i]) < 0)
                        return;
        for (unsigned i = 0; i < p->n_dev; i++) {
                ManagedDevice *m = job_managed_at(j, i);
                VfmigMigState st = VFMIG_MIG_ERROR;

                if (!m) {
                        target_refuse(j, ENODEV, "target: device %s is no longer managed by vfmigd", j->devices[i]);
                        return;
                }
                if (managed_device_get_state(m, &st) < 0 || st != VFMIG_MIG_RUNNING) {
                        target_refuse(j, EBUSY, "target: device %s is in state %s, not running", j->devices[i],
                                      mig_state_name(st));
                        return;
                }
        }
        j->bytes_estimated = 0;
        for (unsigned i = 0; i < p->n_dev; i++) {
                ManagedDevice *m = job_managed_at(j, i);

                j->bytes_estimated += h->devices[i].bytes_estimate;
                p->dev[i].moved = true;
                r = vfmig_vfio_set_state(m->vfio, VFMIG_MIG_RESUMING, &p->dev[i].data);
                if (r < 0 || !p->dev[i].data) {
                        target_refuse(j, EIO, "target: device %s refused to enter resuming: %s", j->devices[i],
                                      strerror(r < 0 ? -r : EIO));
                        return;
                }
        }
        for (unsigned i = 0; i < p->n_dev; i++)
                (void) vfmig_stream_receiver_attach(p->receiver, i, p->dev[i].data);
        log_internal(LOG_INFO, "VFMIG_JOB", j->id, "Job %s: stream header accepted, %s resuming", j->id,
                     job_device(j));
        job_set_state(j, JOB_STREAMING);
}

static void target_device_done(Job *j, unsigned dev)
{
        JobPrivate *p = j->priv;
        ManagedDevice *m;
        int r;

        if (dev >= p->n_dev) {
                target_refuse(j, EBADMSG, "target: an end record for device %u of %u", dev, p->n_dev);
                return;
        }
        m = job_managed_at(j, dev);
        (void) vfmig_stream_receiver_attach(p->receiver, dev, NULL);
        g_clear_pointer(&p->dev[dev].data, vfmig_vfio_data_close);
        r = m ? vfmig_vfio_set_state(m->vfio, VFMIG_MIG_STOP, NULL) : -ENODEV;
        if (r < 0)
                target_refuse(j, EIO, "target: device %s rejected the state (leaving resuming failed: %s)",
                              j->devices[dev], strerror(-r));
}

static void target_end(Job *j)
{
        JobPrivate *p = j->priv;
        int r;

        p->end_seen = true;
        r = vfmig_stream_receiver_reply(p->receiver, 0, NULL);
        if (r < 0) {
                job_fail(j, -r, "target: cannot answer the source: %s", strerror(-r));
                return;
        }
        p->replied = true;
        /* With resume-running the devices start when the source's COMMIT
         * says it will not resume its own.  The wait is bounded by the stall
         * timer: a source host that dies now leaves no close behind. */
}

/*
 * The target answered that its devices took the state, and the source did
 * not confirm (no COMMIT before the connection ended or the stall timer
 * fired): the source may have read the answer and stopped for good, or
 * may not have and resumed its devices.  Either way the devices here keep
 * the state, stopped: not reset (it may be the only copy), not started (the
 * source may run).  The orchestrator decides from the source's devices.
 */
static void target_not_confirmed(Job *j, const char *why)
{
        /* not unwound (job_holds_state()): they hold the state */
        job_fail(j, ENOLINK, "target: %s, so its devices were not started; they hold the whole state, "
                 "stopped: start them unless the source's devices run again, reset them if they do", why);
}

/*
 * The source confirmed the end: start the devices (resume-running).  A
 * group as a source group stops, in reverse: every P2P device to
 * RUNNING_P2P first, then each to RUNNING, so none runs while a peer cannot
 * take its DMA yet.  A device that does not start: the others go back to
 * STOP and nothing is reset (the source has completed; the state is here).
 */
static void target_commit(Job *j)
{
        JobPrivate *p = j->priv;
        const VfmigMigState steps[] = { VFMIG_MIG_RUNNING_P2P, VFMIG_MIG_RUNNING };

        for (unsigned s = p->n_dev > 1 ? 0 : 1; s < G_N_ELEMENTS(steps); s++)
                for (unsigned i = 0; i < p->n_dev; i++) {
                        ManagedDevice *m = job_managed_at(j, i);
                        int r;

                        if (steps[s] == VFMIG_MIG_RUNNING_P2P && m && !(m->migration_flags & VFMIG_MIGRATION_P2P))
                                continue;
                        r = m ? vfmig_vfio_set_state(m->vfio, steps[s], NULL) : -ENODEV;
                        if (r < 0) {
                                for (unsigned k = 0; k < p->n_dev; k++) {
                                        ManagedDevice *o = job_managed_at(j, k);

                                        if (o && k != i)
                                                (void) vfmig_vfio_set_state(o->vfio, VFMIG_MIG_STOP, NULL);
                                }
                                job_fail(j, EIO, "target: device %s took the state but did not start running (%s); "
                                         "no device was reset: the others hold the state, stopped (the source has "
                                         "completed)", j->devices[i], strerror(-r));
                                return;
                        }
                        if (p->n_dev > 1)
                                log_device(LOG_INFO, j->devices[i], "Job %s: device in %s", j->id,
                                           mig_state_name(steps[s]));
                }
        job_finish(j, JOB_COMPLETED, 0, NULL);
}

/* After our success answer: the COMMIT, the source's close, or the timer. */
static void target_answered_end(Job *j, bool timed_out)
{
        JobPrivate *p = j->priv;

        if (!p->resume_running)
                job_finish(j, JOB_COMPLETED, 0, NULL);     /* the devices stay in STOP either way */
        else if (vfmig_stream_receiver_committed(p->receiver))
                target_commit(j);
        else if (timed_out) {
                g_autofree char *why = g_strdup_printf("the source did not confirm the end within %" PRIu64 " ms",
                                                       (uint64_t) (p->stall_usec / 1000ULL));
                target_not_confirmed(j, why);
        } else
                target_not_confirmed(j, "the source closed the connection without confirming the end");
}

static void target_run(Job *j)
{
        JobPrivate *p = j->priv;
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + JOB_DISPATCH_USEC;
        int r;

        if (!p->handshaken) {
                r = vfmig_stream_conn_handshake(p->conn);
                if (r == -EAGAIN) {
                        wait_io(j);
                        return;
                }
                if (r >= 0 && p->ticket) {
                        r = vfmig_ticket_set_use(p->set->used_tickets, p->ticket, p->ticket_expires_usec,
                                                 now_usec(CLOCK_REALTIME));
                        if (r < 0)
                                log_internal(LOG_WARNING, "VFMIG_JOB", j->id, "Job %s: ticket refused: %s", j->id,
                                             r == -EALREADY ? "already used" : r == -EKEYEXPIRED ? "expired" :
                                             strerror(-r));
                }
                if (r < 0) {
                        const char *m = vfmig_stream_conn_error(p->conn);

                        if (p->tcp && r != -EKEYEXPIRED) {
                                /* a wrong ticket: refused before anything moved; keep listening */
                                log_internal(LOG_WARNING, "VFMIG_JOB", j->id, "Job %s: connection refused (%s), "
                                             "waiting for another", j->id, m ? m : strerror(-r));
                                p->timer_src = sd_event_source_disable_unref(p->timer_src);
                                p->io_src = sd_event_source_disable_unref(p->io_src);
                                g_clear_pointer(&p->conn, vfmig_stream_conn_free);
                                (void) sd_event_source_set_enabled(p->listen_src, SD_EVENT_ON);
                                return;
                        }
                        job_fail(j, r == -EKEYEXPIRED ? EKEYEXPIRED : EACCES, "target: connection refused: %s",
                                 r == -EKEYEXPIRED ? "the ticket expired" : m ? m : strerror(-r));
                        return;
                }
                p->handshaken = true;
                p->timer_src = sd_event_source_disable_unref(p->timer_src);
                p->listen_src = sd_event_source_disable_unref(p->listen_src);
                if (p->listen_fd >= 0) {
                        close(p->listen_fd);
                        p->listen_fd = -1;
                }
                r = vfmig_stream_receiver_new(p->conn, &p->receiver);
                if (r < 0) {
                        job_fail(j, -r, "target: cannot start the receiver: %s", strerror(-r));
                        return;
                }
        }

        for (unsigned i = 0; i < JOB_STEPS_PER_DISPATCH; i++) {
                VfmigPumpStatus st;
                unsigned dev = 0;

                r = vfmig_stream_receiver_step(p->receiver, &st, &dev);
                if (r < 0) {
                        const char *m = vfmig_stream_receiver_error_message(p->receiver);

                        if (p->pending_error)
                                job_fail(j, p->pending_error, "%s", p->pending_message);
                        else if (p->cancel_requested)
                                job_fail(j, ECANCELED, "cancelled");
                        else if (m && sscanf(m, "device %u ", &dev) == 1 && dev < p->n_dev &&
                                 p->dev[dev].moved && p->dev[dev].data && strstr(m, " rejected ")) {
                                /* the device refused what it was given: DeviceFailed, naming it; the
                                 * devices are reset and the source told (when the answer still goes out) */
                                g_autofree char *why = g_strdup(m);

                                target_refuse(j, EIO, "target: device %s rejected the state: %s",
                                              j->devices[dev], why);
                                if (!job_state_is_final(j->state))
                                        schedule_again(j);
                        } else
                                job_fail(j, -r, "%s: %s", r == -ECONNABORTED ? "source aborted" :
                                         /* the connection broke off (the source went away): not the
                                          * target's fault, say so */
                                         m && (g_str_has_prefix(m, "the source closed the connection") ||
                                               g_str_has_prefix(m, "receiving the stream")) ?
                                         "source/connection" :
                                         (r == -EBADMSG || r == -ENODATA || r == -EPROTO || r == -EMSGSIZE ||
                                          r == -EPROTONOSUPPORT) ? "target: invalid stream" : "target",
                                         m ? m : strerror(-r));
                        return;
                }
                update_counters(j);
                /* resume-running: start on the COMMIT, not only at the close */
                if (p->resume_running && p->replied && !p->pending_error && !p->cancel_requested &&
                    vfmig_stream_receiver_committed(p->receiver)) {
                        target_commit(j);
                        return;
                }
                switch (st) {
                case VFMIG_PUMP_AGAIN:
                        break;
                case VFMIG_PUMP_WAIT_IO:
                        wait_io(j);
                        return;
                case VFMIG_PUMP_HEADER:
                        target_header(j);
                        break;
                case VFMIG_PUMP_DEVICE_DONE:
                        target_device_done(j, dev);
                        break;
                case VFMIG_PUMP_END:
                        if (!p->replied)
                                target_end(j);
                        break;
                case VFMIG_PUMP_DONE:
                        if (p->pending_error)
                                job_fail(j, p->pending_error, "%s", p->pending_message);
                        else if (p->cancel_requested)
                                job_fail(j, ECANCELED, "cancelled");
                        else
                                target_answered_end(j, false);
                        return;
                default:
                        job_fail(j, EPROTO, "target: unexpected pump status %d", (int) st);
                        return;
                }
                if (job_state_is_final(j->state))
                        return;
                if (now_usec(CLOCK_MONOTONIC) >= deadline)
                        break;
        }
        schedule_again(j);
}

static void job_run(Job *j)
{
        if (job_state_is_final(j->state))
                return;
        if (j->kind == JOB_SAVE)
                source_run(j);
        else
                target_run(j);
}

/* --- starting ----------------------------------------------------------------- */

/* A job's timeout-ms: 0 (the default) or JOB_STALL_MIN_MS..JOB_STALL_MAX_MS. */
static bool timeout_ms_valid(uint32_t ms, char **error)
{
        if (ms == 0 || (ms >= JOB_STALL_MIN_MS && ms <= JOB_STALL_MAX_MS))
                return true;
        *error = g_strdup_printf("timeout-ms: %u is out of range, expected %u..%u", ms, JOB_STALL_MIN_MS,
                                 JOB_STALL_MAX_MS);
        return false;
}

static int check_source(Jobs *s, const char *device, char **error)
{
        ManagedDevice *m = device_access_get(s->access, device);
        MatrixEntry *e;
        g_autofree char *holder = NULL;
        VfmigMigState st;

        if (!m)
                return *error = g_strdup_printf("No VFIO device \"%s\" on this host", device), -ENXIO;
        if (m->status != ACCESS_MANAGED || !m->vfio)
                return *error = g_strdup_printf("Device %s is not managed by vfmigd (status %s)", device,
                                                access_status_to_string(m->status)), -ENODEV;
        if (!(m->migration_flags & VFMIG_MIGRATION_STOP_COPY))
                return *error = g_strdup_printf("Device %s has no migration support", device), -EOPNOTSUPP;
        e = matrix_lookup(compat_service_matrix(s->compat), device);
        if (!e || !matrix_entry_get_profile(e))
                return *error = g_strdup_printf("Device %s has no migration profile (see GetMigrationProfile)",
                                                device), -EOPNOTSUPP;
        if (reservations_is_busy(s->reservations, device, &holder))
                return *error = g_strdup_printf("Device %s is held by %s", device, holder), -EBUSY;
        if (managed_device_get_state(m, &st) < 0 || st != VFMIG_MIG_RUNNING)
                return *error = g_strdup_printf("Device %s is in migration state %s; a migration starts from running "
                                                "(Reset it first)", device,
                                                vfmig_mig_state_to_string(st) ? vfmig_mig_state_to_string(st) : "?"),
                       -EBUSY;
        if (jobs_make_room(s) < 0)
                return *error = g_strdup_printf("Too many unfinished jobs (%d); try again when one has ended",
                                                JOBS_MAX), -EBUSY;
        return 0;
}

/* A source group: 1..VFMIG_STREAM_MAX_DEVICES distinct devices, each one
 * fit to migrate, and in a group of several each one with P2P states (so
 * all can be quiesced before any stops).  Nothing has changed on refusal. */
static int check_sources(Jobs *s, const char *const *devices, char **error)
{
        unsigned n = devices ? g_strv_length((char **) devices) : 0;
        int r;

        if (n == 0)
                return *error = g_strdup("devices: at least one device is needed"), -EINVAL;
        if (n > VFMIG_STREAM_MAX_DEVICES)
                return *error = g_strdup_printf("devices: %u devices, a stream carries at most %u", n,
                                                VFMIG_STREAM_MAX_DEVICES), -EINVAL;
        for (unsigned i = 0; i < n; i++) {
                for (unsigned k = 0; k < i; k++)
                        if (streq_ptr(devices[k], devices[i]))
                                return *error = g_strdup_printf("devices: %s is given twice", devices[i]), -EINVAL;
        }
        for (unsigned i = 0; i < n; i++) {
                ManagedDevice *m;

                r = check_source(s, devices[i], error);
                if (r < 0)
                        return r;
                m = device_access_get(s->access, devices[i]);
                if (n > 1 && !(m->migration_flags & VFMIG_MIGRATION_P2P))
                        return *error = g_strdup_printf("Device %s has no P2P migration states: it cannot move in a "
                                                        "group (all devices of a group are quiesced in a P2P state "
                                                        "before any stops)", devices[i]), -EXDEV;
        }
        return 0;
}

static int start_conn(Job *j, VfmigStreamConn *conn)
{
        JobPrivate *p = j->priv;

        p->conn = conn;
        arm_timer(j, job_handshake_usec(j));
        job_announce(j);
        schedule_again(j);
        return 0;
}

static int make_conn(int fd, bool server, bool plaintext, const char *ticket, VfmigPsk *psk,
                     VfmigStreamConn **ret, char **error)
{
        int r;

        if (plaintext)
                r = vfmig_stream_conn_new_plain(fd, ret);
        else {
                g_autofree char *why = NULL;

                /* GnuTLS is loaded on first use: its absence is not a bad ticket. */
                r = vfmig_tls_lib_load(&why);
                if (r < 0) {
                        close(fd);
                        return *error = g_strdup_printf("TLS is not available: %s", why), r;
                }
                r = vfmig_psk_derive(ticket, VFMIG_PSK_CONTEXT, psk);
                if (r < 0) {
                        close(fd);
                        return *error = g_strdup("The ticket is not valid: expected 43 characters of base64url"),
                               -EINVAL;
                }
                r = vfmig_stream_conn_new_tls(fd, server, psk, ret);
        }
        if (r < 0)
                *error = g_strdup_printf("Cannot set up the connection: %s", strerror(-r));
        return r;
}

static int start_save(Jobs *s, const char *const *devices, int fd, bool tcp, const JobSaveOptions *o, Job **ret,
                      char **error)
{
        VfmigStreamConn *conn = NULL;
        VfmigPsk psk = {};
        Job *j;
        int r;

        r = check_sources(s, devices, error);
        if (r < 0) {
                close(fd);
                return r;
        }
        r = make_conn(fd, false, o->plaintext, o->ticket, &psk, &conn, error);
        vfmig_psk_clear(&psk);
        if (r < 0)
                return r;
        j = job_new(s, JOB_SAVE, devices);
        j->priv->precopy = o->precopy;
        j->priv->downtime_budget_ms = o->downtime_ms;
        if (o->timeout_ms)
                j->priv->stall_usec = (uint64_t) o->timeout_ms * 1000ULL;
        j->priv->plaintext = o->plaintext;
        j->priv->tcp = tcp;
        start_conn(j, conn);
        *ret = j;
        return 0;
}

int jobs_start_migrate(Jobs *s, const char *const *devices, const char *endpoint, const JobSaveOptions *o,
                       Job **ret, char **error)
{
        uint8_t raw[VFMIG_TICKET_BYTES];
        struct sockaddr_storage sa;
        socklen_t salen;
        JobSaveOptions opt = *o;
        int fd, r;

        if (vfmig_stream_parse_endpoint(endpoint, &sa, &salen) < 0)
                return *error = g_strdup_printf("endpoint \"%.64s\" is not valid: expected a numeric HOST:PORT or "
                                                "[IPV6]:PORT", endpoint), -EINVAL;
        if (!o->ticket || vfmig_ticket_decode(o->ticket, raw) < 0)
                return *error = g_strdup("ticket: expected the 43 characters PrepareIncoming returned"), -EINVAL;
        memset(raw, 0, sizeof raw);
        if (!timeout_ms_valid(o->timeout_ms, error))
                return -EINVAL;
        r = check_sources(s, devices, error);
        if (r < 0)
                return r;
        {
                g_autofree char *why = NULL;

                /* Before connecting: a target would see a connection come and go. */
                r = vfmig_tls_lib_load(&why);
                if (r < 0)
                        return *error = g_strdup_printf("TLS is not available: %s", why), r;
        }
        r = vfmig_stream_tcp_connect(endpoint, &fd);
        if (r < 0)
                return *error = g_strdup_printf("Cannot connect to %s: %s", endpoint, strerror(-r)), r;
        opt.plaintext = false;
        return start_save(s, devices, fd, true, &opt, ret, error);
}

int jobs_start_save_fd(Jobs *s, const char *const *devices, int fd, const JobSaveOptions *o, Job **ret,
                       char **error)
{
        g_autofree char *why = NULL;
        int r;

        if (!timeout_ms_valid(o->timeout_ms, error)) {
                close(fd);
                return -EINVAL;
        }
        r = vfmig_stream_fd_check(fd, NULL, &why);
        if (r < 0) {
                close(fd);
                return *error = g_strdup_printf("fd: %s", why ? why : strerror(-r)), -EINVAL;
        }
        if (!o->plaintext && (!o->ticket || !o->ticket[0])) {
                close(fd);
                return *error = g_strdup("option \"ticket\" is required for TLS (or ask for \"plaintext\")"), -EINVAL;
        }
        return start_save(s, devices, fd, false, o, ret, error);
}

static int check_target_res(Jobs *s, Reservation *r, char **error)
{
        g_autofree char *holder = jobs_busy_hook(r->target, s);
        ManagedDevice *m = device_access_get(s->access, r->target);

        if (r->state != RESERVATION_ACTIVE)
                return *error = g_strdup_printf("Reservation %s is already %s", r->id,
                                                reservation_state_to_string(r->state)), -EBUSY;
        if (holder)
                return *error = g_strdup_printf("Device %s is held by %s", r->target, holder), -EBUSY;
        if (!m || m->status != ACCESS_MANAGED || !m->vfio)
                return *error = g_strdup_printf("Device %s is not managed by vfmigd", r->target), -ENODEV;
        if (!(m->migration_flags & VFMIG_MIGRATION_STOP_COPY))
                return *error = g_strdup_printf("Device %s has no migration support", r->target), -EOPNOTSUPP;
        if (jobs_make_room(s) < 0)
                return *error = g_strdup_printf("Too many unfinished jobs (%d); try again when one has ended",
                                                JOBS_MAX), -EBUSY;
        return 0;
}

/* A set of 1..VFMIG_STREAM_MAX_DEVICES distinct reservations, each free to
 * receive.  Nothing has changed on refusal. */
static int check_target_set(Jobs *s, Reservation *const *res, unsigned n, char **error)
{
        int r;

        if (n == 0)
                return *error = g_strdup("at least one reservation is needed"), -EINVAL;
        if (n > VFMIG_STREAM_MAX_DEVICES)
                return *error = g_strdup_printf("group: %u reservations, a stream carries at most %u devices", n,
                                                VFMIG_STREAM_MAX_DEVICES), -EINVAL;
        for (unsigned i = 0; i < n; i++)
                for (unsigned k = 0; k < i; k++)
                        if (res[k] == res[i])
                                return *error = g_strdup_printf("group: reservation %s is given twice", res[i]->id),
                                       -EINVAL;
        for (unsigned i = 0; i < n; i++) {
                r = check_target_res(s, res[i], error);
                if (r < 0)
                        return r;
        }
        return 0;
}

static Job *new_restore(Jobs *s, Reservation *const *res, unsigned n, const JobReceiveOptions *o)
{
        g_autofree const char **targets = g_new0(const char *, n + 1);
        Job *j;

        for (unsigned i = 0; i < n; i++)
                targets[i] = res[i]->target;
        j = job_new(s, JOB_RESTORE, targets);
        j->reservations = g_new0(char *, n + 1);
        for (unsigned i = 0; i < n; i++)
                j->reservations[i] = g_strdup(res[i]->id);
        j->reservation_id = g_strdup(res[0]->id);
        j->priv->resume_running = o->resume_running;
        if (o->timeout_ms)
                j->priv->stall_usec = (uint64_t) o->timeout_ms * 1000ULL;
        /* the ticket lives as long as the first reservation of the set to end */
        j->priv->ticket_expires_usec = res[0]->expires_usec;
        for (unsigned i = 0; i < n; i++) {
                j->priv->ticket_expires_usec = MIN(j->priv->ticket_expires_usec, res[i]->expires_usec);
                reservation_set_state(res[i], RESERVATION_RECEIVING);
        }
        return j;
}

static int on_ticket_expiry(sd_event_source *src, uint64_t usec, void *userdata)
{
        Job *j = userdata;

        if (!j->priv->handshaken)
                job_fail(j, EKEYEXPIRED, "target: the ticket expired with %s %s before a source connected",
                         j->reservations[1] ? "a reservation of the group" : "reservation",
                         j->reservations[1] ? job_device(j) : j->reservation_id);
        return 0;
}

static int on_accept(sd_event_source *src, int fd, uint32_t revents, void *userdata)
{
        Job *j = userdata;
        JobPrivate *p = j->priv;
        g_autofree char *why = NULL;
        int cfd, r;

        cfd = vfmig_stream_tcp_accept(p->listen_fd);
        if (cfd == -EAGAIN)
                return 0;
        if (cfd < 0) {
                log_warning_errno(cfd, "Job %s: accept failed: %m", j->id);
                return 0;
        }
        if (p->conn) {          /* one peer at a time */
                close(cfd);
                return 0;
        }
        r = vfmig_stream_fd_check(cfd, NULL, &why);
        if (r < 0) {
                close(cfd);
                return 0;
        }
        r = vfmig_stream_conn_new_tls(cfd, true, &p->psk, &p->conn);
        if (r < 0) {
                log_warning_errno(r, "Job %s: cannot start TLS: %m", j->id);
                return 0;
        }
        (void) sd_event_source_set_enabled(p->listen_src, SD_EVENT_OFF);
        arm_timer(j, JOB_HANDSHAKE_USEC);
        job_run(j);
        return 0;
}

int jobs_prepare_incoming(Jobs *s, Reservation *const *res, unsigned n, const char *address, uint16_t port,
                          const JobReceiveOptions *o, char **ret_endpoint, char **ret_ticket, Job **ret,
                          char **error)
{
        g_autofree char *ticket = NULL;
        uint16_t bound = 0;
        int lfd = -1, r;
        Job *j;

        if (!timeout_ms_valid(o->timeout_ms, error))
                return -EINVAL;
        r = check_target_set(s, res, n, error);
        if (r < 0)
                return r;
        {
                g_autofree char *why = NULL;

                r = vfmig_tls_lib_load(&why);
                if (r < 0)
                        return *error = g_strdup_printf("TLS is not available: %s", why), r;
        }
        r = vfmig_stream_tcp_listen(address, port, &lfd, &bound);
        if (r < 0)
                return *error = g_strdup_printf("Cannot listen on %s port %u: %s", address, port, strerror(-r)), r;
        r = vfmig_ticket_new(&ticket);
        if (r < 0) {
                close(lfd);
                return *error = g_strdup_printf("Cannot make a ticket: %s", strerror(-r)), r;
        }
        j = new_restore(s, res, n, o);
        j->priv->tcp = true;
        j->priv->listen_fd = lfd;
        j->priv->ticket = g_strdup(ticket);
        (void) vfmig_psk_derive(ticket, VFMIG_PSK_CONTEXT, &j->priv->psk);
        r = sd_event_add_io(s->event, &j->priv->listen_src, lfd, EPOLLIN, on_accept, j);
        if (r >= 0)
                r = sd_event_source_set_priority(j->priv->listen_src, JOB_PRIORITY_CONNECTING);
        if (r >= 0)
                r = sd_event_add_time(s->event, &j->priv->expiry_src, CLOCK_REALTIME, j->priv->ticket_expires_usec,
                                      1000000,
                                      on_ticket_expiry, j);
        job_announce(j);
        if (r < 0) {
                job_fail(j, -r, "target: cannot watch the listening socket: %s", strerror(-r));
                *ret = j;
                return 0;
        }
        *ret_endpoint = strchr(address, ':') ? g_strdup_printf("[%s]:%u", address, bound)
                                             : g_strdup_printf("%s:%u", address, bound);
        *ret_ticket = g_steal_pointer(&ticket);
        *ret = j;
        return 0;
}

int jobs_start_receive_fd(Jobs *s, Reservation *const *res, unsigned n, int fd, const JobReceiveOptions *o,
                          Job **ret, char **error)
{
        g_autofree char *why = NULL;
        VfmigStreamConn *conn = NULL;
        Job *j;
        int r;

        if (!timeout_ms_valid(o->timeout_ms, error)) {
                close(fd);
                return -EINVAL;
        }
        r = vfmig_stream_fd_check(fd, NULL, &why);
        if (r < 0) {
                close(fd);
                return *error = g_strdup_printf("fd: %s", why ? why : strerror(-r)), -EINVAL;
        }
        if (!o->plaintext && (!o->ticket || !o->ticket[0])) {
                close(fd);
                return *error = g_strdup("option \"ticket\" is required for TLS (or ask for \"plaintext\")"), -EINVAL;
        }
        r = check_target_set(s, res, n, error);
        if (r < 0) {
                close(fd);
                return r;
        }
        j = NULL;
        {
                VfmigPsk psk = {};

                r = make_conn(fd, true, o->plaintext, o->ticket, &psk, &conn, error);
                if (r < 0)
                        return r;
                j = new_restore(s, res, n, o);
                j->priv->psk = psk;
                vfmig_psk_clear(&psk);
        }
        j->priv->plaintext = o->plaintext;
        j->priv->ticket = o->plaintext ? NULL : g_strdup(o->ticket);
        start_conn(j, conn);
        *ret = j;
        return 0;
}

/* --- control ---------------------------------------------------------------- */

int job_cancel(Job *j, const char *why)
{
        JobPrivate *p = j->priv;

        if (job_state_is_final(j->state))
                return -ESTALE;
        /* After END the target may already hold (and, with resume-running,
         * run) the state: resuming the source now could leave the devices
         * running on both hosts.  Only the target's answer ends it. */
        if (j->kind == JOB_SAVE && p->sender && vfmig_stream_sender_end_queued(p->sender))
                return -EINPROGRESS;
        /* A target that answered that it took the state: the source may have
         * completed (its devices stay stopped), so resetting these could lose
         * the only copy.  Only the source's confirmation (or its absence)
         * ends it. */
        if (j->kind == JOB_RESTORE && p->replied && !p->pending_error)
                return -EINPROGRESS;
        if (p->cancel_requested)
                return 0;
        p->cancel_requested = true;
        log_internal(LOG_INFO, "VFMIG_JOB", j->id, "Job %s: cancel requested by %s", j->id, why);
        if (j->kind == JOB_SAVE && p->sender && !p->stopped) {
                /* the target learns why; the steps send it and end */
                if (vfmig_stream_sender_abort(p->sender, ECANCELED, "cancelled on the source") >= 0) {
                        arm_timer(j, JOB_DRAIN_USEC);
                        schedule_again(j);
                        return 0;
                }
        }
        if (j->kind == JOB_SAVE && p->sender && p->stopped) {
                if (vfmig_stream_sender_abort(p->sender, ECANCELED, "cancelled on the source") >= 0) {
                        arm_timer(j, JOB_DRAIN_USEC);
                        schedule_again(j);
                        return 0;
                }
        }
        if (j->kind == JOB_RESTORE && p->receiver && !p->replied) {
                target_refuse(j, ECANCELED, "target: cancelled on the target");
                if (!job_state_is_final(j->state))
                        schedule_again(j);
                return 0;
        }
        job_finish(j, JOB_CANCELLED, ECANCELED, "cancelled");
        return 0;
}

int job_switchover(Job *j)
{
        JobPrivate *p = j->priv;

        if (job_state_is_final(j->state))
                return -ESTALE;
        if (j->kind != JOB_SAVE)
                return -EOPNOTSUPP;
        if (p->stopped)
                return -ESTALE;
        if (!p->sender)
                return -EAGAIN;
        if (source_do_switchover(j, "Switchover() called") < 0)
                return -EIO;
        schedule_again(j);
        return 0;
}
