/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * stream-pump.h — moves VFIO device data streams through a connection:
 * device reads -> writer -> connection (source), connection -> parser ->
 * device writes (target).
 *
 * Event-loop driven, no threads: each *_step() call does a bounded amount of
 * work (at most one device read or write of one record, <= record_size, and
 * one send or receive) and says what to wait for.  Memory is one record
 * buffer per pump, whatever the state size.  A kernel data fd may block in
 * read() while the driver produces the next chunk; a step then waits for the
 * device for at most one record's worth of data.  If a driver proves slower
 * than the loop can bear, the same pump runs unchanged on a worker thread
 * (one pump belongs to one thread at a time).
 *
 * Neither pump owns the connection or the data streams.  The job (the lead's
 * code) drives the device states: the source moves devices to STOP_COPY and
 * then calls vfmig_stream_sender_switchover(); the target checks the header,
 * moves its devices to RESUMING and attaches their streams, closes each
 * stream and moves the device to STOP at DEVICE_DONE, and answers with
 * vfmig_stream_receiver_reply() — the source's last step reports that answer
 * and, when it is a success, confirms it with a COMMIT record, which the
 * target sees as vfmig_stream_receiver_committed() (doc/stream-protocol.md,
 * "The end").
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "stream-conn.h"
#include "stream.h"
#include "vfio.h"

typedef enum VfmigPumpStatus {
        VFMIG_PUMP_AGAIN,       /* did some work: call again (dispatch other events in between) */
        VFMIG_PUMP_WAIT_IO,     /* wait for vfmig_stream_conn_events() on the connection's fd */
        VFMIG_PUMP_IDLE,        /* source, pre-copy: no device has data now; call again later */
        VFMIG_PUMP_HEADER,      /* target: the header arrived: check it, attach devices, call again */
        VFMIG_PUMP_DEVICE_DONE, /* target: *ret_device got its (verified) end record */
        VFMIG_PUMP_END,         /* target: the whole stream arrived and checked: finish devices, reply */
        VFMIG_PUMP_DONE,        /* finished: source got a success answer (and sent COMMIT) / target sent its
                                 * answer and the source closed (vfmig_stream_receiver_committed()) */
} VfmigPumpStatus;

/* ---- source ---- */

typedef struct VfmigStreamSender VfmigStreamSender;

/* A sender for this header on conn (not owned; handshake done or not — the
 * first steps finish it).  record_size: data bytes per record, 4 KiB ..
 * VFMIG_STREAM_MAX_DATA (0 = the maximum). */
int vfmig_stream_sender_new(const VfmigStreamHeader *h, VfmigStreamConn *conn, size_t record_size,
                            VfmigStreamSender **ret);
void vfmig_stream_sender_free(VfmigStreamSender *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfmigStreamSender, vfmig_stream_sender_free)

/* Device i's saving stream (not owned).  All devices before the first step. */
int vfmig_stream_sender_attach(VfmigStreamSender *s, unsigned device, VfmigVfioData *data);

/* The devices are in STOP_COPY now: the next records are stop-copy data and a
 * read returning 0 ends a device.  Before this (with header.precopy), reads
 * giving 0 or -ENOMSG mean "nothing now" (VFMIG_PUMP_IDLE). */
void vfmig_stream_sender_switchover(VfmigStreamSender *s);

/* Queue a PROGRESS record (a keepalive while idle) if nothing is pending. */
int vfmig_stream_sender_keepalive(VfmigStreamSender *s, uint64_t remaining);

/* Give up: queue an ABORT record (error > 0); the next steps send it and end
 * with DONE. */
int vfmig_stream_sender_abort(VfmigStreamSender *s, int error, const char *reason);

/* Whether the END record is queued (the whole state is on its way and the
 * target may take it): from then on only the target's answer can say how
 * the migration ends, and an abort would tell the target nothing. */
bool vfmig_stream_sender_end_queued(VfmigStreamSender *s);
/* Whether the target's success answer was read: the migration succeeded,
 * the COMMIT is on its way, and the source devices must never run again
 * (the target may start its own on that COMMIT). */
bool vfmig_stream_sender_answered(VfmigStreamSender *s);
/* While it streams, a sender that returned WAIT_IO is blocked on output
 * and reads what the target sends (an early answer, the end of the
 * connection) at its next step: wake it when the connection is writable or
 * readable (vfmig_stream_conn_events() then says only POLLIN). */
bool vfmig_stream_sender_wants_input(VfmigStreamSender *s);

/* One step.  0 with *ret set, or a negative errno (with a message): the
 * device, the connection, or the target's answer (its errno). */
int vfmig_stream_sender_step(VfmigStreamSender *s, VfmigPumpStatus *ret);

const char *vfmig_stream_sender_error_message(VfmigStreamSender *s);
uint64_t vfmig_stream_sender_bytes(VfmigStreamSender *s);                  /* device bytes sent in records */
uint64_t vfmig_stream_sender_device_bytes(VfmigStreamSender *s, unsigned device);

/* ---- target ---- */

typedef struct VfmigStreamReceiver VfmigStreamReceiver;

int vfmig_stream_receiver_new(VfmigStreamConn *conn, VfmigStreamReceiver **ret);
void vfmig_stream_receiver_free(VfmigStreamReceiver *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfmigStreamReceiver, vfmig_stream_receiver_free)

/* After HEADER: the header (owned by the receiver). */
const VfmigStreamHeader *vfmig_stream_receiver_header(VfmigStreamReceiver *r);

/* Device i's resuming stream (not owned); data for a device without one is
 * an error.  Detach with data = NULL (e.g. at DEVICE_DONE before closing it). */
int vfmig_stream_receiver_attach(VfmigStreamReceiver *r, unsigned device, VfmigVfioData *data);

/* One step; *ret_device is set for DEVICE_DONE.  Errors: the parser's
 * (-EBADMSG, ...), the connection's, the device's (its write error),
 * -ECONNABORTED when the source sent ABORT (the message has its reason). */
int vfmig_stream_receiver_step(VfmigStreamReceiver *r, VfmigPumpStatus *ret, unsigned *ret_device);

/* Answer the source: 0 = the devices took the state, else an errno > 0 and
 * a reason (a refused header, a failed stream or device).  Steps then send
 * it, close our direction, read until the source closes, and end with DONE. */
int vfmig_stream_receiver_reply(VfmigStreamReceiver *r, int error, const char *reason);

/* After a success answer: whether the source's COMMIT arrived (it read the
 * answer and will not resume its devices).  Final once the steps say DONE. */
bool vfmig_stream_receiver_committed(VfmigStreamReceiver *r);

const char *vfmig_stream_receiver_error_message(VfmigStreamReceiver *r);
uint64_t vfmig_stream_receiver_bytes(VfmigStreamReceiver *r);              /* device bytes written */
uint64_t vfmig_stream_receiver_remaining(VfmigStreamReceiver *r);          /* last PROGRESS estimate */
