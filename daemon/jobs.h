/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * jobs.h — migration jobs (DESIGN §1 steps 4-6, §5): the state machine that
 * moves one device's state to a peer vfmigd, and the unwind on every failure.
 * No D-Bus: bus-job.c validates and authorizes calls and turns the listener
 * calls into objects and signals.
 *
 * A job moves one device, or a group of devices of one VM (MigrateGroup) in
 * one stream: stream device i is the job's devices[i] on the source and is
 * received into reservations[i] on the target.
 *
 * Source (kind "save"): connect (TCP, or an fd handed in), finish the TLS
 * handshake — a wrong ticket is refused here, before any device moves —
 * then RUNNING [-> PRE_COPY while the pump sends pre-copy data, until the
 * predicted stop-copy time fits the downtime budget or Switchover()] ->
 * STOP_COPY -> stream -> wait for the target's RESULT -> STOP.  A group
 * (every device has P2P, checked at the start) stops in two phases: every
 * device to RUNNING_P2P (PRE_COPY_P2P with pre-copy), read back, and only
 * when all are in a P2P state does any go on to STOP_COPY.  Pre-copy is used
 * for a group only when every device has it.  The devices stay in STOP after
 * a success (the VMM decides what comes next).  On any failure the devices
 * go back to RUNNING (a group through RUNNING_P2P first; reset if that fails
 * or a device is in ERROR).  A connection that makes no progress for the
 * stall timeout (the target stopped reading, or does not answer) fails the
 * job with -ETIMEDOUT.
 *
 * Target (kind "restore"): listen (PrepareIncoming) or take an fd
 * (ReceiveFromFd) for a set of reservations, TLS handshake with the
 * single-use ticket, then the header is checked — as many devices as
 * reservations, a valid profile for each whose migration type is the one its
 * reservation was made for, and the compatibility rules for its reserved
 * target (matrix_check) — BEFORE any device is moved to RESUMING; then
 * write, STOP at each device's end record (RUNNING when asked), RESULT 0.
 * On any failure every device that left RUNNING is reset and every
 * reservation is kept (its State back to "active").
 *
 * Everything runs on the sd-event loop: io sources on the connection, a defer
 * source between bounded batches of pump steps, timers for handshakes,
 * pre-copy polling, ticket expiry and the retention of finished jobs.
 * Errors are negative errnos with a message naming the side that failed:
 *   -EBADMSG (StreamInvalid), -EXDEV (NotCompatible), -EIO (DeviceFailed),
 *   -EACCES (ticket / handshake), -ECANCELED, -ETIMEDOUT, the socket's.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <systemd/sd-event.h>

#include "compat-service.h"
#include "device-access.h"
#include "reservations.h"

/* Finished jobs stay visible this long (then removed() and freed). */
#define JOB_RETENTION_USEC      (300ULL * 1000000ULL)
#define JOB_HANDSHAKE_USEC      (30ULL * 1000000ULL)
#define JOB_DRAIN_USEC          (5ULL * 1000000ULL)
#define JOB_PRECOPY_POLL_USEC   (20ULL * 1000ULL)
/* Source: the connection may make no progress this long (default of the
 * "timeout-ms" option, and its bounds). */
#define JOB_STALL_DEFAULT_MS    60000u
#define JOB_STALL_MIN_MS        100u
#define JOB_STALL_MAX_MS        3600000u
/* Unfinished jobs at once; finished ones kept visible, at most. */
#define JOBS_MAX                256
#define JOBS_RETAINED_MAX       1024

typedef enum JobKind {
        JOB_SAVE,               /* "save": the source */
        JOB_RESTORE,            /* "restore": the target */
        _JOB_KIND_MAX,
} JobKind;

typedef enum JobState {
        JOB_PREPARING,          /* source: connecting, TLS handshake */
        JOB_WAITING,            /* target: listening / handshake / waiting for the header */
        JOB_STREAMING,          /* data moving while the device runs (pre-copy) or resumes (target) */
        JOB_SWITCHOVER,         /* source: the device is stopped, its remaining state is sent */
        JOB_COMPLETED,
        JOB_FAILED,
        JOB_CANCELLED,
        _JOB_STATE_MAX,
} JobState;

const char *job_kind_to_string(JobKind k);
const char *job_state_to_string(JobState s);
bool job_state_is_final(JobState s);

typedef struct Jobs Jobs;
typedef struct JobPrivate JobPrivate;

typedef struct Job {
        char *id;                       /* decimal, also the object path element */
        JobKind kind;
        char **devices;                 /* the devices in stream order (NULL-terminated) */
        char *reservation_id;           /* restore: the first reservation (reservations[0]) */
        char **reservations;            /* restore: reservation ids, i receives stream device i; save: NULL */
        JobState state;
        uint64_t bytes_transferred;     /* device data bytes sent / written */
        uint64_t bytes_estimated;       /* 0 = unknown */
        double throughput;              /* bytes/s since the first data byte */
        uint64_t predicted_downtime_ms; /* at switchover; 0 = not predicted */
        uint64_t downtime_ms;           /* source: STOP_COPY until the target's RESULT */
        int error;                      /* positive errno, 0 = none */
        char *error_message;            /* "" = none; names the side that failed */
        void *bus_data;                 /* the adapter's */
        JobPrivate *priv;
} Job;

typedef struct JobsListener {
        void (*added)(Jobs *s, Job *j, void *userdata);
        /* State changed (and error set when final). */
        void (*changed)(Jobs *s, Job *j, void *userdata);
        /* Bytes moved (called often: rate-limit). */
        void (*progress)(Jobs *s, Job *j, void *userdata);
        /* Reached a final state (after changed()). */
        void (*finished)(Jobs *s, Job *j, void *userdata);
        /* About to be freed (retention over, or shutdown when shutdown is true). */
        void (*removed)(Jobs *s, Job *j, bool shutdown, void *userdata);
} JobsListener;

typedef struct JobSaveOptions {
        bool precopy;                   /* use PRE_COPY when the device has it */
        uint32_t downtime_ms;           /* budget for the switchover decision; 0 = at the first idle */
        bool plaintext;                 /* fd mode only: no TLS */
        const char *ticket;             /* TLS: the target's ticket */
        uint32_t timeout_ms;            /* stall timeout (and handshake bound); 0 = JOB_STALL_DEFAULT_MS */
} JobSaveOptions;

typedef struct JobReceiveOptions {
        bool resume_running;            /* target -> RUNNING after STOP (on the source's COMMIT) */
        uint32_t timeout_ms;            /* stall timeout: the source stops sending, or does not confirm after our
                                         * success answer; 0 = JOB_STALL_DEFAULT_MS */
        bool plaintext;                 /* fd mode only */
        const char *ticket;             /* fd mode with TLS: the ticket both sides were given */
} JobReceiveOptions;

Jobs *jobs_new(sd_event *event, DeviceAccess *access, Reservations *reservations, CompatService *compat,
               const char *host_name);
/* Shutdown: unwinds running jobs (devices back), frees all. */
void jobs_free(Jobs *s);
void jobs_set_listener(Jobs *s, const JobsListener *l, void *userdata);

/* Crash recovery, once at start after the listener is set: jobs.json in
 * $STATE_DIRECTORY records the unfinished jobs (written when a job starts and
 * when it ends).  For each job a previous vfmigd left unfinished (killed), its
 * devices are reset, its reservation made active again, and a Job in state
 * "failed" (EIO, "daemon restarted during the job; devices reset") is added.
 * Returns the number of jobs recovered, or -EINVAL for an unreadable file
 * (logged and removed). */
int jobs_recover(Jobs *s);

/* ReservationsBusyFn: "job N (state)" when device is in an unfinished job. */
char *jobs_busy_hook(const char *device, void *userdata);
Job *jobs_get(Jobs *s, const char *id);
/* Borrowed, by id. */
GPtrArray *jobs_list(Jobs *s);

/* Source, devices: a NULL-terminated list, 1..VFMIG_STREAM_MAX_DEVICES
 * names, stream order.  Nothing changes on refusal: -EINVAL empty, too many
 * or duplicate devices, bad endpoint/ticket; -ENXIO no such device; -ENODEV
 * not managed; -EOPNOTSUPP no migration/profile; -EXDEV a device of a group
 * without P2P states; -EBUSY busy or not running; -EAGAIN too many jobs. */
int jobs_start_migrate(Jobs *s, const char *const *devices, const char *endpoint, const JobSaveOptions *o,
                       Job **ret, char **error);
/* fd is taken (closed on failure too). */
int jobs_start_save_fd(Jobs *s, const char *const *devices, int fd, const JobSaveOptions *o, Job **ret,
                       char **error);

/* Target, into res[0..n-1] (stream device i into res[i]), n =
 * 1..VFMIG_STREAM_MAX_DEVICES.  -EINVAL a reservation twice or too many,
 * -EBUSY when one is already receiving or its device is in a job. */
int jobs_prepare_incoming(Jobs *s, Reservation *const *res, unsigned n, const char *address, uint16_t port,
                          const JobReceiveOptions *o, char **ret_endpoint, char **ret_ticket, Job **ret,
                          char **error);
int jobs_start_receive_fd(Jobs *s, Reservation *const *res, unsigned n, int fd, const JobReceiveOptions *o,
                          Job **ret, char **error);

/* -ESTALE when already finished. */
int job_cancel(Job *j, const char *why);
/* Source with pre-copy only: -EOPNOTSUPP otherwise, -ESTALE when past it. */
int job_switchover(Job *j);
