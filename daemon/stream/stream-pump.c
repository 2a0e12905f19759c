/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* stream-pump.c — the source and target pumps (see stream-pump.h). */
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>

#include "stream-pump.h"
#include "stream-private.h"

typedef enum SenderState {
        SS_HANDSHAKE,
        SS_BEGIN,
        SS_RUNNING,
        SS_CLOSING,             /* ABORT queued: flush, then close our direction */
        SS_END_FLUSH,           /* END queued: flush it, our direction stays open */
        SS_WAIT_RESULT,
        SS_COMMIT,              /* the target answered 0: COMMIT queued; flush, close; nothing can fail now */
        SS_LINGER,              /* read until the target closes: a close with unread input resets the
                                 * connection, and could take the COMMIT with it */
        SS_DONE,
        SS_FAILED,
} SenderState;

struct VfmigStreamSender {
        VfmigStreamConn *conn;
        VfmigStreamWriter *writer;
        unsigned n_devices;
        VfmigVfioData *data[VFMIG_STREAM_MAX_DEVICES];
        bool ended[VFMIG_STREAM_MAX_DEVICES];
        unsigned n_ended;
        unsigned cursor;
        bool stopcopy;
        bool aborted;
        bool answered;                  /* the target's RESULT 0 was read */
        SenderState state;

        size_t record_size;
        uint8_t *frame;                 /* one data record */
        GByteArray *ctrl;               /* control records */
        const uint8_t *out;             /* what is being sent: frame or ctrl */
        size_t out_len, out_off;

        VfmigStreamParser *reply;
        uint64_t next_reply_poll;       /* data bytes after which to look for an answer */
        int error;
        char *message;
};

#define REPLY_POLL_BYTES (4u * 1024u * 1024u)

static int sender_fail(VfmigStreamSender *s, int error, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int sender_fail(VfmigStreamSender *s, int error, const char *fmt, ...)
{
        va_list ap;

        if (s->state == SS_FAILED)
                return s->error;
        g_free(s->message);
        va_start(ap, fmt);
        s->message = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        s->error = error;
        s->state = SS_FAILED;
        return error;
}

int vfmig_stream_sender_new(const VfmigStreamHeader *h, VfmigStreamConn *conn, size_t record_size,
                            VfmigStreamSender **ret)
{
        VfmigStreamSender *s;
        VfmigStreamWriter *w;
        int r;

        if (record_size == 0)
                record_size = VFMIG_STREAM_MAX_DATA;
        if (record_size < 4096 || record_size > VFMIG_STREAM_MAX_DATA || !conn)
                return -EINVAL;
        r = vfmig_stream_writer_new(h, &w);
        if (r < 0)
                return r;
        s = g_new0(VfmigStreamSender, 1);
        s->conn = conn;
        s->writer = w;
        s->n_devices = h->n_devices;
        s->stopcopy = !h->precopy;
        s->record_size = record_size;
        s->frame = g_malloc(record_size + VFMIG_STREAM_RECORD_OVERHEAD);
        s->ctrl = g_byte_array_new();
        s->reply = vfmig_stream_parser_new_reply();
        *ret = s;
        return 0;
}

void vfmig_stream_sender_free(VfmigStreamSender *s)
{
        if (!s)
                return;
        vfmig_stream_writer_free(s->writer);
        vfmig_stream_parser_free(s->reply);
        g_byte_array_unref(s->ctrl);
        g_free(s->frame);
        g_free(s->message);
        g_free(s);
}

int vfmig_stream_sender_attach(VfmigStreamSender *s, unsigned device, VfmigVfioData *data)
{
        if (device >= s->n_devices || !data)
                return -EINVAL;
        s->data[device] = data;
        return 0;
}

void vfmig_stream_sender_switchover(VfmigStreamSender *s)
{
        s->stopcopy = true;
}

static bool out_pending(VfmigStreamSender *s)
{
        return s->out_off < s->out_len;
}

static void out_ctrl(VfmigStreamSender *s)
{
        s->out = s->ctrl->data;
        s->out_len = s->ctrl->len;
        s->out_off = 0;
}

int vfmig_stream_sender_keepalive(VfmigStreamSender *s, uint64_t remaining)
{
        int r;

        if (s->state != SS_RUNNING || out_pending(s))
                return 0;
        g_byte_array_set_size(s->ctrl, 0);
        r = vfmig_stream_writer_progress(s->writer, remaining, s->ctrl);
        if (r < 0)
                return r;
        out_ctrl(s);
        return 0;
}

static int sender_poll_reply(VfmigStreamSender *s);

/* Streaming and blocked on the connection: what the target sends is read
 * then too (sender_blocked()), so the caller may wake for it. */
bool vfmig_stream_sender_wants_input(VfmigStreamSender *s)
{
        return !s->aborted && (s->state == SS_BEGIN || s->state == SS_RUNNING) &&
               !vfmig_stream_parser_done(s->reply);
}

/* The connection took nothing more: a target that ended the connection or
 * answered early (it gave up) is noticed now, not only when its window
 * opens again.  A target that died behind a middlebox or whose socket had
 * a zero window sends a FIN and no reset, so the socket would stay
 * unwritable until the stall timeout. */
static int sender_blocked(VfmigStreamSender *s, VfmigPumpStatus *ret)
{
        int r;

        if (vfmig_stream_sender_wants_input(s)) {
                char b;
                ssize_t n = recv(vfmig_stream_conn_fd(s->conn), &b, 1, MSG_PEEK | MSG_DONTWAIT);

                /* Usually nothing: then the connection is not touched (a read
                 * would leave its direction at POLLIN for the caller's wait). */
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ENOTSOCK)) {
                        *ret = VFMIG_PUMP_WAIT_IO;
                        return 0;
                }
                r = sender_poll_reply(s);
                if (r < 0)
                        return r;
                if (r > 0 && vfmig_stream_parser_done(s->reply))
                        return sender_fail(s, -EPROTO, "the target answered before the end of the stream");
        }
        *ret = VFMIG_PUMP_WAIT_IO;
        return 0;
}

bool vfmig_stream_sender_end_queued(VfmigStreamSender *s)
{
        return !s->aborted && (s->state == SS_END_FLUSH || s->state == SS_WAIT_RESULT || s->state == SS_COMMIT ||
                               s->state == SS_LINGER || s->state == SS_DONE) &&
               vfmig_stream_writer_finished(s->writer);
}

bool vfmig_stream_sender_answered(VfmigStreamSender *s)
{
        return s->answered;
}

int vfmig_stream_sender_abort(VfmigStreamSender *s, int error, const char *reason)
{
        int r;

        if (s->state == SS_FAILED || s->state == SS_DONE || s->state == SS_COMMIT || s->state == SS_LINGER ||
            s->aborted)
                return 0;
        if (error <= 0)
                return -EINVAL;
        s->aborted = true;
        if (s->state == SS_HANDSHAKE || s->state == SS_CLOSING || s->state == SS_END_FLUSH ||
            s->state == SS_WAIT_RESULT) {
                /* Nothing can be sent before the handshake, and after the end there
                 * is nothing to abort: close, without the COMMIT. */
                s->state = SS_CLOSING;
                if (!vfmig_stream_writer_finished(s->writer))
                        s->out_len = s->out_off = 0;
                return 0;
        }
        /* A partly sent record must go out whole first; the abort follows it. */
        if (out_pending(s) && s->out == s->frame) {
                size_t left = s->out_len - s->out_off;

                g_byte_array_set_size(s->ctrl, 0);
                g_byte_array_append(s->ctrl, s->frame + s->out_off, (guint) left);
        } else if (!out_pending(s))
                g_byte_array_set_size(s->ctrl, 0);
        else    /* ctrl is being sent: keep its unsent part */
                g_byte_array_remove_range(s->ctrl, 0, (guint) s->out_off);
        r = vfmig_stream_writer_abort(s->writer, error, reason, s->ctrl);
        if (r < 0)
                return r;
        out_ctrl(s);
        s->state = SS_CLOSING;
        return 0;
}

/* Look for the target's answer without blocking: 1 when it is complete. */
static int sender_poll_reply(VfmigStreamSender *s)
{
        for (;;) {
                VfmigStreamEvent ev;
                size_t room;
                void *dst = vfmig_stream_parser_space(s->reply, &room);
                ssize_t k;
                int r;

                if (!dst)
                        break;
                k = vfmig_stream_conn_recv(s->conn, dst, room);
                if (k == -EAGAIN)
                        return 0;
                if (k == 0)
                        return sender_fail(s, -ECONNRESET, "the target closed the connection without an answer");
                if (k < 0)
                        return sender_fail(s, (int) k, "the target's answer: %s", vfmig_stream_conn_error(s->conn));
                r = vfmig_stream_parser_commit(s->reply, (size_t) k, &ev);
                if (r < 0)
                        return sender_fail(s, r, "the target's answer is invalid: %s",
                                           vfmig_stream_parser_error_message(s->reply));
                if (ev.type == VFMIG_STREAM_EVENT_RESULT) {
                        if (ev.error != 0)
                                return sender_fail(s, -ev.error, "the target failed: %s", ev.reason);
                        return 1;
                }
        }
        return 1;
}

/* Read the next record from the devices, round robin: 1 when a record or a
 * device end is queued, 0 when no device has data now. */
static int sender_produce(VfmigStreamSender *s)
{
        int r;

        for (unsigned tried = 0; tried < s->n_devices; tried++) {
                unsigned i = (s->cursor + tried) % s->n_devices;
                ssize_t k;

                if (s->ended[i])
                        continue;
                k = vfmig_vfio_data_read(s->data[i], s->frame + VFMIG_STREAM_RECORD_HEADER_SIZE, s->record_size);
                if (k > 0) {
                        ssize_t f = vfmig_stream_writer_frame_data(s->writer, !s->stopcopy, i, s->frame, (size_t) k);

                        if (f < 0)
                                return sender_fail(s, (int) f, "framing device %u data: %s", i, g_strerror((int) -f));
                        s->out = s->frame;
                        s->out_len = (size_t) f;
                        s->out_off = 0;
                        s->cursor = (i + 1) % s->n_devices;
                        return 1;
                }
                if (k == 0 && s->stopcopy) {
                        g_byte_array_set_size(s->ctrl, 0);
                        r = vfmig_stream_writer_device_end(s->writer, i, s->ctrl);
                        if (r < 0)
                                return sender_fail(s, r, "ending device %u: %s", i, g_strerror(-r));
                        out_ctrl(s);
                        s->ended[i] = true;
                        s->n_ended++;
                        s->cursor = (i + 1) % s->n_devices;
                        return 1;
                }
                if (k == 0 || k == -ENOMSG || k == -EAGAIN)
                        continue;
                return sender_fail(s, (int) k, "reading the state of device %u: %s", i, g_strerror((int) -k));
        }
        if (s->n_ended == s->n_devices) {
                g_byte_array_set_size(s->ctrl, 0);
                r = vfmig_stream_writer_end(s->writer, s->ctrl);
                if (r < 0)
                        return sender_fail(s, r, "ending the stream: %s", g_strerror(-r));
                out_ctrl(s);
                s->state = SS_END_FLUSH;
                return 1;
        }
        return 0;
}

int vfmig_stream_sender_step(VfmigStreamSender *s, VfmigPumpStatus *ret)
{
        ssize_t k;
        int r;

        *ret = VFMIG_PUMP_AGAIN;
        switch (s->state) {
        case SS_FAILED:
                return s->error;
        case SS_DONE:
                *ret = VFMIG_PUMP_DONE;
                return 0;
        case SS_HANDSHAKE:
                r = vfmig_stream_conn_handshake(s->conn);
                if (r == -EAGAIN) {
                        *ret = VFMIG_PUMP_WAIT_IO;
                        return 0;
                }
                if (r < 0)
                        return sender_fail(s, r, "%s", vfmig_stream_conn_error(s->conn));
                for (unsigned i = 0; i < s->n_devices; i++)
                        if (!s->data[i])
                                return sender_fail(s, -EINVAL, "device %u has no data stream attached", i);
                s->state = s->aborted ? SS_CLOSING : SS_BEGIN;
                return 0;
        default:
                break;
        }

        if (out_pending(s)) {
                k = vfmig_stream_conn_send(s->conn, s->out + s->out_off, s->out_len - s->out_off);
                if (k == -EAGAIN)
                        return sender_blocked(s, ret);
                if (k < 0 && (s->state == SS_COMMIT || s->state == SS_LINGER)) {
                        /* The target answered 0: the migration succeeded whether
                         * or not the COMMIT arrives (without it the target keeps
                         * its devices stopped). */
                        s->state = SS_DONE;
                        *ret = VFMIG_PUMP_DONE;
                        return 0;
                }
                if (k < 0) {
                        int e = (int) k;
                        g_autofree char *msg = g_strdup(vfmig_stream_conn_error(s->conn));

                        /* The target may have said why before it closed. */
                        r = sender_poll_reply(s);
                        if (r < 0)
                                return r;
                        return sender_fail(s, e, "sending the stream: %s", msg);
                }
                s->out_off += (size_t) k;
                return 0;
        }

        switch (s->state) {
        case SS_BEGIN:
                g_byte_array_set_size(s->ctrl, 0);
                r = vfmig_stream_writer_begin(s->writer, s->ctrl);
                if (r < 0)
                        return sender_fail(s, r, "writing the header: %s", g_strerror(-r));
                out_ctrl(s);
                s->state = SS_RUNNING;
                return 0;
        case SS_RUNNING:
                /* An early answer means the target gave up: stop soon.  Looked
                 * for every REPLY_POLL_BYTES of data and whenever the sender has
                 * nothing to send (a receive call per record would cost as much
                 * as the sending). */
                if (vfmig_stream_writer_total_bytes(s->writer) >= s->next_reply_poll) {
                        s->next_reply_poll = vfmig_stream_writer_total_bytes(s->writer) + REPLY_POLL_BYTES;
                        r = sender_poll_reply(s);
                        if (r < 0)
                                return r;
                        if (r > 0 && vfmig_stream_parser_done(s->reply))
                                return sender_fail(s, -EPROTO, "the target answered before the end of the stream");
                }
                r = sender_produce(s);
                if (r < 0)
                        return r;
                if (r == 0) {
                        s->next_reply_poll = 0;
                        /* Nothing to read now: what the connection queued goes out first. */
                        r = vfmig_stream_conn_flush(s->conn);
                        if (r == -EAGAIN)
                                return sender_blocked(s, ret);
                        if (r < 0)
                                return sender_fail(s, r, "sending the stream: %s", vfmig_stream_conn_error(s->conn));
                        *ret = VFMIG_PUMP_IDLE;
                }
                return 0;
        case SS_CLOSING:
                /* after ABORT: the target learns why, and nothing more */
                r = vfmig_stream_conn_shutdown(s->conn);
                if (r == -EAGAIN) {
                        *ret = VFMIG_PUMP_WAIT_IO;
                        return 0;
                }
                s->state = SS_DONE;
                *ret = VFMIG_PUMP_DONE;
                return 0;
        case SS_END_FLUSH:
                /* Our direction stays open for the COMMIT. */
                r = vfmig_stream_conn_flush(s->conn);
                if (r == -EAGAIN) {
                        *ret = VFMIG_PUMP_WAIT_IO;
                        return 0;
                }
                if (r < 0)
                        return sender_fail(s, r, "sending the stream: %s", vfmig_stream_conn_error(s->conn));
                s->state = SS_WAIT_RESULT;
                return 0;
        case SS_WAIT_RESULT:
                r = sender_poll_reply(s);
                if (r < 0)
                        return r;
                if (r == 0) {
                        *ret = VFMIG_PUMP_WAIT_IO;
                        return 0;
                }
                /* The target took the state: it may start its devices once it
                 * reads the COMMIT, which says this side will not resume. */
                s->answered = true;
                g_byte_array_set_size(s->ctrl, 0);
                r = vfmig_stream_writer_commit(s->writer, s->ctrl);
                if (r < 0)
                        return sender_fail(s, r, "confirming the end: %s", g_strerror(-r));
                out_ctrl(s);
                s->state = SS_COMMIT;
                return 0;
        case SS_COMMIT:
                r = vfmig_stream_conn_shutdown(s->conn);
                if (r == -EAGAIN) {
                        *ret = VFMIG_PUMP_WAIT_IO;
                        return 0;
                }
                s->state = SS_LINGER;
                return 0;
        case SS_LINGER: {
                uint8_t rest[256];

                k = vfmig_stream_conn_recv(s->conn, rest, sizeof(rest));
                if (k == -EAGAIN) {
                        *ret = VFMIG_PUMP_WAIT_IO;
                        return 0;
                }
                if (k > 0)
                        return 0;
                s->state = SS_DONE;
                *ret = VFMIG_PUMP_DONE;
                return 0;
        }
        default:
                g_assert_not_reached();
        }
}

const char *vfmig_stream_sender_error_message(VfmigStreamSender *s)
{
        return s->message;
}

uint64_t vfmig_stream_sender_bytes(VfmigStreamSender *s)
{
        return vfmig_stream_writer_total_bytes(s->writer);
}

uint64_t vfmig_stream_sender_device_bytes(VfmigStreamSender *s, unsigned device)
{
        return vfmig_stream_writer_device_bytes(s->writer, device);
}

/* ---- target ---- */

typedef enum ReceiverState {
        RS_HANDSHAKE,
        RS_RECEIVING,
        RS_END,                 /* END seen: waiting for the caller's reply */
        RS_REPLYING,            /* sending the answer */
        RS_CLOSING,
        RS_DRAINING,            /* reading until the source closes */
        RS_DONE,
        RS_FAILED,              /* waiting for the caller's reply */
} ReceiverState;

struct VfmigStreamReceiver {
        VfmigStreamConn *conn;
        VfmigStreamParser *parser;
        VfmigVfioData *data[VFMIG_STREAM_MAX_DEVICES];
        ReceiverState state;
        bool replied;

        const uint8_t *pend;            /* payload still to write to pend_device */
        size_t pend_len, pend_off;
        unsigned pend_device;

        uint64_t written;
        uint64_t remaining;

        GByteArray *answer;
        size_t answer_off;
        VfmigStreamParser *commit;      /* after a success answer: the source's COMMIT */
        bool committed;
        uint8_t drain[4096];

        int error;
        char *message;
};

static int receiver_fail(VfmigStreamReceiver *r, int error, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int receiver_fail(VfmigStreamReceiver *r, int error, const char *fmt, ...)
{
        va_list ap;

        if (r->state == RS_FAILED)
                return r->error;
        g_free(r->message);
        va_start(ap, fmt);
        r->message = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        r->error = error;
        if (!r->replied)
                r->state = RS_FAILED;
        return error;
}

int vfmig_stream_receiver_new(VfmigStreamConn *conn, VfmigStreamReceiver **ret)
{
        VfmigStreamReceiver *r;

        if (!conn)
                return -EINVAL;
        r = g_new0(VfmigStreamReceiver, 1);
        r->conn = conn;
        r->parser = vfmig_stream_parser_new();
        r->answer = g_byte_array_new();
        r->remaining = UINT64_MAX;
        *ret = r;
        return 0;
}

void vfmig_stream_receiver_free(VfmigStreamReceiver *r)
{
        if (!r)
                return;
        vfmig_stream_parser_free(r->parser);
        vfmig_stream_parser_free(r->commit);
        g_byte_array_unref(r->answer);
        g_free(r->message);
        g_free(r);
}

const VfmigStreamHeader *vfmig_stream_receiver_header(VfmigStreamReceiver *r)
{
        return vfmig_stream_parser_header(r->parser);
}

int vfmig_stream_receiver_attach(VfmigStreamReceiver *r, unsigned device, VfmigVfioData *data)
{
        const VfmigStreamHeader *h = vfmig_stream_parser_header(r->parser);

        if (!h || device >= h->n_devices)
                return -EINVAL;
        if (!data && r->pend && r->pend_device == device)
                return -EBUSY;
        r->data[device] = data;
        return 0;
}

int vfmig_stream_receiver_reply(VfmigStreamReceiver *r, int error, const char *reason)
{
        int k;

        if (r->replied)
                return -EALREADY;
        if (error < 0 || (error == 0 && r->state != RS_END))
                return -EINVAL;
        if (r->state == RS_HANDSHAKE) {         /* nobody to answer */
                r->replied = true;
                r->state = RS_DONE;
                return 0;
        }
        g_byte_array_set_size(r->answer, 0);
        k = vfmig_stream_result_record(error, reason, r->answer);
        if (k < 0)
                return k;
        if (error == 0)
                r->commit = vfmig_stream_parser_new_commit(r->parser);
        r->answer_off = 0;
        r->pend = NULL;
        r->replied = true;
        r->state = RS_REPLYING;
        return 0;
}

static int receiver_wait(VfmigStreamReceiver *r, VfmigPumpStatus *ret)
{
        *ret = VFMIG_PUMP_WAIT_IO;
        return 0;
}

/* After the answer: a failure of the connection only ends the job. */
static int receiver_finish(VfmigStreamReceiver *r, VfmigPumpStatus *ret)
{
        r->state = RS_DONE;
        *ret = VFMIG_PUMP_DONE;
        return 0;
}

static int receiver_write(VfmigStreamReceiver *r)
{
        ssize_t k = vfmig_vfio_data_write(r->data[r->pend_device], r->pend + r->pend_off, r->pend_len - r->pend_off);

        if (k < 0)
                return receiver_fail(r, (int) k, "device %u rejected its state at stream offset %" PRIu64 ": %s",
                                     r->pend_device, vfmig_stream_parser_offset(r->parser), g_strerror((int) -k));
        if (k == 0)
                return receiver_fail(r, -EIO, "device %u accepted no bytes", r->pend_device);
        r->pend_off += (size_t) k;
        r->written += (uint64_t) k;
        if (r->pend_off == r->pend_len)
                r->pend = NULL;
        return 0;
}

int vfmig_stream_receiver_step(VfmigStreamReceiver *r, VfmigPumpStatus *ret, unsigned *ret_device)
{
        VfmigStreamEvent ev;
        size_t room;
        void *dst;
        ssize_t k;
        int e;

        *ret = VFMIG_PUMP_AGAIN;
        switch (r->state) {
        case RS_FAILED:
                return r->error;
        case RS_DONE:
                *ret = VFMIG_PUMP_DONE;
                return 0;
        case RS_END:
                *ret = VFMIG_PUMP_END;
                return 0;
        case RS_HANDSHAKE:
                e = vfmig_stream_conn_handshake(r->conn);
                if (e == -EAGAIN)
                        return receiver_wait(r, ret);
                if (e < 0)
                        return receiver_fail(r, e, "%s", vfmig_stream_conn_error(r->conn));
                r->state = RS_RECEIVING;
                return 0;
        case RS_REPLYING:
                if (r->answer_off < r->answer->len) {
                        k = vfmig_stream_conn_send(r->conn, r->answer->data + r->answer_off, r->answer->len - r->answer_off);
                        if (k == -EAGAIN)
                                return receiver_wait(r, ret);
                        if (k < 0) {
                                /* What the source sent is read all the same */
                                r->state = RS_DRAINING;
                                return 0;
                        }
                        r->answer_off += (size_t) k;
                        return 0;
                }
                r->state = RS_CLOSING;
                return 0;
        case RS_CLOSING:
                e = vfmig_stream_conn_shutdown(r->conn);
                if (e == -EAGAIN)
                        return receiver_wait(r, ret);
                /* Failed or not: a source that read the answer may have sent
                 * its COMMIT and closed before our close_notify went out
                 * (EPIPE here); what it sent is still there to read. */
                r->state = RS_DRAINING;
                return 0;
        case RS_DRAINING: {
                /* After a success answer the source's COMMIT comes first;
                 * anything else (or after it) is read and dropped. */
                VfmigStreamEvent cev;
                size_t want = 0;
                void *into = r->commit && !vfmig_stream_parser_error(r->commit) ?
                             vfmig_stream_parser_space(r->commit, &want) : NULL;

                k = into ? vfmig_stream_conn_recv(r->conn, into, want)
                         : vfmig_stream_conn_recv(r->conn, r->drain, sizeof(r->drain));
                if (k == -EAGAIN)
                        return receiver_wait(r, ret);
                if (k <= 0)
                        return receiver_finish(r, ret);
                if (into && vfmig_stream_parser_commit(r->commit, (size_t) k, &cev) >= 0 &&
                    cev.type == VFMIG_STREAM_EVENT_COMMIT)
                        r->committed = true;
                return 0;
        }
        case RS_RECEIVING:
                break;
        }

        if (r->pend)
                return receiver_write(r);

        dst = vfmig_stream_parser_space(r->parser, &room);
        g_assert(dst);
        k = vfmig_stream_conn_recv(r->conn, dst, room);
        if (k == -EAGAIN)
                return receiver_wait(r, ret);
        if (k == 0) {
                e = vfmig_stream_parser_finish(r->parser);
                return receiver_fail(r, e < 0 ? e : -EPROTO, "the source closed the connection: %s",
                                     vfmig_stream_parser_error_message(r->parser));
        }
        if (k < 0)
                return receiver_fail(r, (int) k, "receiving the stream at offset %" PRIu64 ": %s",
                                     vfmig_stream_parser_offset(r->parser), vfmig_stream_conn_error(r->conn));
        e = vfmig_stream_parser_commit(r->parser, (size_t) k, &ev);
        if (e < 0)
                return receiver_fail(r, e, "invalid stream: %s", vfmig_stream_parser_error_message(r->parser));

        switch (ev.type) {
        case VFMIG_STREAM_EVENT_NONE:
        case VFMIG_STREAM_EVENT_RESULT:
        case VFMIG_STREAM_EVENT_COMMIT:         /* not from a stream parser */
                return 0;
        case VFMIG_STREAM_EVENT_HEADER:
                *ret = VFMIG_PUMP_HEADER;
                return 0;
        case VFMIG_STREAM_EVENT_DATA:
                if (!r->data[ev.device])
                        return receiver_fail(r, -EINVAL, "data for device %u, which has no resuming stream attached",
                                             ev.device);
                r->pend = ev.data;
                r->pend_len = ev.size;
                r->pend_off = 0;
                r->pend_device = ev.device;
                return receiver_write(r);
        case VFMIG_STREAM_EVENT_DEVICE_END:
                *ret = VFMIG_PUMP_DEVICE_DONE;
                if (ret_device)
                        *ret_device = ev.device;
                return 0;
        case VFMIG_STREAM_EVENT_PROGRESS:
                r->remaining = ev.remaining;
                return 0;
        case VFMIG_STREAM_EVENT_END:
                r->state = RS_END;
                *ret = VFMIG_PUMP_END;
                return 0;
        case VFMIG_STREAM_EVENT_ABORT:
                return receiver_fail(r, -ECONNABORTED, "the source aborted the migration: %s (%s)",
                                     ev.reason, g_strerror(ev.error));
        }
        return 0;
}

const char *vfmig_stream_receiver_error_message(VfmigStreamReceiver *r)
{
        return r->message;
}

bool vfmig_stream_receiver_committed(VfmigStreamReceiver *r)
{
        return r->committed;
}

uint64_t vfmig_stream_receiver_bytes(VfmigStreamReceiver *r)
{
        return r->written;
}

uint64_t vfmig_stream_receiver_remaining(VfmigStreamReceiver *r)
{
        return r->remaining;
}
