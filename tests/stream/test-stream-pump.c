/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * test-stream-pump — end to end in one process with simulated devices:
 * source devices -> sender -> socketpair (plaintext or TLS) -> receiver ->
 * target devices, stop-copy and pre-copy with the device writing memory
 * between iterations; the target memory must equal the source's.  And a
 * target device that rejects the state: the source learns why.  And the
 * end: the source confirms a success answer with a COMMIT record, which the
 * target sees also when the source was killed before the target's own
 * close went out; without it, or with bytes that are not a valid COMMIT,
 * the target is not confirmed.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "stream-pump.h"
#include "stream-private.h"

#define NDEV 2
#define MEM (3u * 1024 * 1024 + 4099)

typedef struct Rig {
        VfmigVfioDevice *src[NDEV], *dst[NDEV];
        VfmigVfioData *sdata[NDEV], *ddata[NDEV];
        VfmigStreamConn *sconn, *rconn;
        VfmigStreamSender *sender;
        VfmigStreamReceiver *receiver;
        bool sender_done, receiver_done;
        bool replied;                   /* the receiver answered success (at END) */
        int sender_error, receiver_error;
        unsigned devices_done;
        bool bad_target;
} Rig;

static VfmigSimDeviceConfig sim_config(const char *name, uint64_t seed, uint64_t flags, const char *type)
{
        return (VfmigSimDeviceConfig) {
                .name = name,
                .migration_flags = flags,
                .memory_size = MEM,
                .stream_type = type,
                .stream_version = 1,
                .fill_seed = seed,
        };
}

static void rig_open(Rig *r, bool tls, bool precopy, bool bad_target)
{
        uint64_t flags = precopy ? VFMIG_MIGRATION_ALL : VFMIG_MIGRATION_STOP_COPY;
        VfmigStreamHeader h = { .n_devices = NDEV, .tls = tls, .precopy = precopy };
        int sv[2];

        memset(r, 0, sizeof(*r));
        r->bad_target = bad_target;
        for (unsigned i = 0; i < NDEV; i++) {
                VfmigSimDeviceConfig s = sim_config("src", 1000 + i, flags, "test-gpu");
                VfmigSimDeviceConfig d = sim_config("dst", 0, flags, bad_target ? "other-gpu" : "test-gpu");
                g_autoptr(JsonObject) prof = json_object_new();

                g_assert_cmpint(vfmig_vfio_sim_open(&s, &r->src[i]), ==, 0);
                g_assert_cmpint(vfmig_vfio_sim_open(&d, &r->dst[i]), ==, 0);
                json_object_set_string_member(prof, "type", "test-gpu");
                vfmig_stream_header_set_profile(&h, i, prof);
                h.devices[i].bytes_estimate = MEM;
        }

        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), ==, 0);
        if (tls) {
                g_autofree char *ticket = NULL;
                VfmigPsk psk;

                g_assert_cmpint(vfmig_ticket_new(&ticket), ==, 0);
                g_assert_cmpint(vfmig_psk_derive(ticket, "reservation-7", &psk), ==, 0);
                g_assert_cmpint(vfmig_stream_conn_new_tls(sv[0], false, &psk, &r->sconn), ==, 0);
                g_assert_cmpint(vfmig_stream_conn_new_tls(sv[1], true, &psk, &r->rconn), ==, 0);
                vfmig_psk_clear(&psk);
        } else {
                g_assert_cmpint(vfmig_stream_conn_new_plain(sv[0], &r->sconn), ==, 0);
                g_assert_cmpint(vfmig_stream_conn_new_plain(sv[1], &r->rconn), ==, 0);
        }
        g_assert_cmpint(vfmig_stream_sender_new(&h, r->sconn, 256 * 1024, &r->sender), ==, 0);
        g_assert_cmpint(vfmig_stream_receiver_new(r->rconn, &r->receiver), ==, 0);
        vfmig_stream_header_clear(&h);

        /* Source: into PRE_COPY (or STOP_COPY) with a data stream each. */
        for (unsigned i = 0; i < NDEV; i++) {
                g_assert_cmpint(vfmig_vfio_set_state(r->src[i], precopy ? VFMIG_MIG_PRE_COPY : VFMIG_MIG_STOP_COPY,
                                                     &r->sdata[i]), ==, 0);
                g_assert_nonnull(r->sdata[i]);
                g_assert_cmpint(vfmig_stream_sender_attach(r->sender, i, r->sdata[i]), ==, 0);
        }
}

static void rig_close(Rig *r)
{
        vfmig_stream_sender_free(r->sender);
        vfmig_stream_receiver_free(r->receiver);
        vfmig_stream_conn_free(r->sconn);
        vfmig_stream_conn_free(r->rconn);
        for (unsigned i = 0; i < NDEV; i++) {
                vfmig_vfio_data_close(r->sdata[i]);
                vfmig_vfio_data_close(r->ddata[i]);
                vfmig_vfio_close(r->src[i]);
                vfmig_vfio_close(r->dst[i]);
        }
}

/* What the target job does on each receiver status. */
static void on_receiver(Rig *r, VfmigPumpStatus st, unsigned device)
{
        switch (st) {
        case VFMIG_PUMP_HEADER: {
                const VfmigStreamHeader *h = vfmig_stream_receiver_header(r->receiver);

                g_assert_nonnull(h);
                g_assert_cmpuint(h->n_devices, ==, NDEV);
                for (unsigned i = 0; i < NDEV; i++) {
                        g_assert_cmpstr(json_object_get_string_member(h->devices[i].profile, "type"), ==, "test-gpu");
                        g_assert_cmpint(vfmig_vfio_set_state(r->dst[i], VFMIG_MIG_RESUMING, &r->ddata[i]), ==, 0);
                        g_assert_cmpint(vfmig_stream_receiver_attach(r->receiver, i, r->ddata[i]), ==, 0);
                }
                break;
        }
        case VFMIG_PUMP_DEVICE_DONE:
                g_assert_cmpint(vfmig_stream_receiver_attach(r->receiver, device, NULL), ==, 0);
                g_clear_pointer(&r->ddata[device], vfmig_vfio_data_close);
                g_assert_cmpint(vfmig_vfio_set_state(r->dst[device], VFMIG_MIG_STOP, NULL), ==, 0);
                r->devices_done++;
                break;
        case VFMIG_PUMP_END:
                g_assert_cmpuint(r->devices_done, ==, NDEV);
                g_assert_cmpint(vfmig_stream_receiver_reply(r->receiver, 0, NULL), ==, 0);
                r->replied = true;
                break;
        case VFMIG_PUMP_DONE:
                r->receiver_done = true;
                break;
        default:
                break;
        }
}

/* Run both pumps until the sender is idle (pre-copy) or both are done. */
static VfmigPumpStatus run(Rig *r)
{
        for (unsigned spins = 0; spins < 1000000; spins++) {
                VfmigPumpStatus ss = VFMIG_PUMP_DONE, rs = VFMIG_PUMP_DONE;
                unsigned dev = 0;
                int e;

                if (!r->sender_done && r->sender_error == 0) {
                        e = vfmig_stream_sender_step(r->sender, &ss);
                        if (e < 0) {
                                r->sender_error = e;
                                g_test_message("sender: %s", vfmig_stream_sender_error_message(r->sender));
                                /* A failed job drops its connection. */
                                (void) shutdown(vfmig_stream_conn_fd(r->sconn), SHUT_RDWR);
                        } else if (ss == VFMIG_PUMP_DONE)
                                r->sender_done = true;
                        else if (ss == VFMIG_PUMP_IDLE)
                                return ss;
                }
                if (!r->receiver_done) {
                        e = vfmig_stream_receiver_step(r->receiver, &rs, &dev);
                        if (e < 0) {
                                g_test_message("receiver: %s", vfmig_stream_receiver_error_message(r->receiver));
                                r->receiver_error = e;
                                g_assert_cmpint(vfmig_stream_receiver_reply(r->receiver, -e,
                                                vfmig_stream_receiver_error_message(r->receiver)), ==, 0);
                        } else
                                on_receiver(r, rs, dev);
                }
                if ((r->sender_done || r->sender_error) && r->receiver_done)
                        return VFMIG_PUMP_DONE;
                if ((ss == VFMIG_PUMP_WAIT_IO || r->sender_done || r->sender_error) &&
                    (rs == VFMIG_PUMP_WAIT_IO || r->receiver_done)) {
                        struct pollfd p[2] = {
                                { vfmig_stream_conn_fd(r->sconn), vfmig_stream_conn_events(r->sconn), 0 },
                                { vfmig_stream_conn_fd(r->rconn), vfmig_stream_conn_events(r->rconn), 0 },
                        };

                        (void) poll(p, 2, 100);
                }
        }
        g_assert_not_reached();
}

static void assert_memory_equal(Rig *r)
{
        for (unsigned i = 0; i < NDEV; i++) {
                g_autofree uint8_t *a = g_malloc(MEM), *b = g_malloc(MEM);
                int fa = vfmig_vfio_dup_fd(r->src[i]), fb = vfmig_vfio_dup_fd(r->dst[i]);

                g_assert_cmpint(fa, >=, 0);
                g_assert_cmpint(fb, >=, 0);
                g_assert_cmpint(pread(fa, a, MEM, 0), ==, MEM);
                g_assert_cmpint(pread(fb, b, MEM, 0), ==, MEM);
                g_assert_true(memcmp(a, b, MEM) == 0);
                close(fa);
                close(fb);
        }
}

static void stop_copy(gconstpointer tls)
{
        Rig r;

        rig_open(&r, GPOINTER_TO_INT(tls), false, false);
        g_assert_cmpint(run(&r), ==, VFMIG_PUMP_DONE);
        g_assert_cmpint(r.sender_error, ==, 0);
        g_assert_cmpint(r.receiver_error, ==, 0);
        g_assert_cmpuint(vfmig_stream_receiver_bytes(r.receiver), ==, vfmig_stream_sender_bytes(r.sender));
        g_assert_cmpuint(vfmig_stream_sender_bytes(r.sender), >, (uint64_t) NDEV * MEM);
        /* the source read the success answer and confirmed the end */
        g_assert_true(vfmig_stream_sender_answered(r.sender));
        g_assert_true(vfmig_stream_receiver_committed(r.receiver));
        for (unsigned i = 0; i < NDEV; i++)
                g_assert_cmpint(vfmig_vfio_set_state(r.src[i], VFMIG_MIG_STOP, NULL), ==, 0);
        assert_memory_equal(&r);
        rig_close(&r);
}

static void pre_copy(gconstpointer tls)
{
        Rig r;
        uint8_t pattern[5000];

        rig_open(&r, GPOINTER_TO_INT(tls), true, false);
        for (unsigned iter = 0; iter < 4; iter++) {
                g_assert_cmpint(run(&r), ==, VFMIG_PUMP_IDLE);
                g_assert_cmpint(r.sender_error, ==, 0);
                /* The running device changes memory between iterations. */
                memset(pattern, 0xa0 + iter, sizeof(pattern));
                for (unsigned i = 0; i < NDEV; i++)
                        g_assert_cmpint(vfmig_vfio_sim_write_memory(r.src[i], (uint64_t) iter * 700000 + i * 13,
                                                                   pattern, sizeof(pattern)), ==, 0);
                g_assert_cmpint(vfmig_stream_sender_keepalive(r.sender, 12345), ==, 0);
        }
        for (unsigned i = 0; i < NDEV; i++)
                g_assert_cmpint(vfmig_vfio_set_state(r.src[i], VFMIG_MIG_STOP_COPY, NULL), ==, 0);
        vfmig_stream_sender_switchover(r.sender);
        g_assert_cmpint(run(&r), ==, VFMIG_PUMP_DONE);
        g_assert_cmpint(r.sender_error, ==, 0);
        g_assert_cmpint(r.receiver_error, ==, 0);
        g_assert_cmpuint(vfmig_stream_receiver_remaining(r.receiver), ==, 12345);
        for (unsigned i = 0; i < NDEV; i++)
                g_assert_cmpint(vfmig_vfio_set_state(r.src[i], VFMIG_MIG_STOP, NULL), ==, 0);
        assert_memory_equal(&r);
        rig_close(&r);
}

static void target_rejects(void)
{
        Rig r;

        rig_open(&r, true, false, true);
        g_assert_cmpint(run(&r), ==, VFMIG_PUMP_DONE);
        g_assert_cmpint(r.receiver_error, ==, -EINVAL);
        g_assert_cmpint(r.sender_error, ==, -EINVAL);
        g_assert_nonnull(strstr(vfmig_stream_sender_error_message(r.sender), "the target failed: device 0 rejected"));
        g_assert_false(vfmig_stream_sender_answered(r.sender));
        g_assert_false(vfmig_stream_receiver_committed(r.receiver));
        rig_close(&r);
}

static void source_aborts(void)
{
        Rig r;
        VfmigPumpStatus st;

        rig_open(&r, false, false, false);
        for (unsigned i = 0; i < 5; i++)
                g_assert_cmpint(vfmig_stream_sender_step(r.sender, &st), ==, 0);
        g_assert_cmpint(vfmig_stream_sender_abort(r.sender, ECANCELED, "cancelled by the operator"), ==, 0);
        g_assert_cmpint(run(&r), ==, VFMIG_PUMP_DONE);
        g_assert_cmpint(r.sender_error, ==, 0);
        g_assert_cmpint(r.receiver_error, ==, -ECONNABORTED);
        g_assert_nonnull(strstr(vfmig_stream_receiver_error_message(r.receiver), "cancelled by the operator"));
        g_assert_false(vfmig_stream_sender_answered(r.sender));
        rig_close(&r);
}

static void truncated(void)
{
        Rig r;
        VfmigPumpStatus st;
        unsigned dev;
        int e = 0;

        rig_open(&r, false, false, false);
        for (unsigned i = 0; i < 8; i++)
                g_assert_cmpint(vfmig_stream_sender_step(r.sender, &st), ==, 0);
        /* The source dies mid-stream. */
        g_clear_pointer(&r.sender, vfmig_stream_sender_free);
        g_clear_pointer(&r.sconn, vfmig_stream_conn_free);
        for (unsigned i = 0; i < 100000 && e == 0; i++) {
                e = vfmig_stream_receiver_step(r.receiver, &st, &dev);
                if (e == 0)
                        on_receiver(&r, st, dev);
        }
        g_test_message("%s", vfmig_stream_receiver_error_message(r.receiver));
        g_assert_cmpint(e, ==, -ENODATA);
        g_assert_nonnull(strstr(vfmig_stream_receiver_error_message(r.receiver), "truncated"));
        rig_close(&r);
}

/* Step the receiver until it has answered success and sent the answer. */
static void until_answered(Rig *r)
{
        for (unsigned spins = 0; spins < 1000000 && !r->replied; spins++) {
                VfmigPumpStatus ss, rs;
                unsigned dev = 0;

                g_assert_cmpint(vfmig_stream_sender_step(r->sender, &ss), ==, 0);
                g_assert_cmpint(vfmig_stream_receiver_step(r->receiver, &rs, &dev), ==, 0);
                on_receiver(r, rs, dev);
                if (ss == VFMIG_PUMP_WAIT_IO && rs == VFMIG_PUMP_WAIT_IO) {
                        struct pollfd p[2] = {
                                { vfmig_stream_conn_fd(r->sconn), vfmig_stream_conn_events(r->sconn), 0 },
                                { vfmig_stream_conn_fd(r->rconn), vfmig_stream_conn_events(r->rconn), 0 },
                        };

                        (void) poll(p, 2, 100);
                }
        }
        g_assert_true(r->replied);
}

/* Step the receiver until DONE (the sender is not stepped). */
static void receiver_until_done(Rig *r)
{
        VfmigPumpStatus st = VFMIG_PUMP_AGAIN;
        unsigned dev;

        for (unsigned i = 0; i < 100000 && st != VFMIG_PUMP_DONE; i++) {
                g_assert_cmpint(vfmig_stream_receiver_step(r->receiver, &st, &dev), ==, 0);
                if (st == VFMIG_PUMP_WAIT_IO) {
                        struct pollfd p = { vfmig_stream_conn_fd(r->rconn), vfmig_stream_conn_events(r->rconn), 0 };

                        (void) poll(&p, 1, 100);
                }
        }
        g_assert_cmpint(st, ==, VFMIG_PUMP_DONE);
}

/*
 * The answer goes out; the source reads it, sends its COMMIT, closes its
 * direction and waits for the target's close (it lingers) — and is then
 * killed: its socket goes away before the target has sent its own close.
 * Over TLS the target's close_notify then fails (EPIPE), and the COMMIT,
 * already in the target's receive buffer, must count all the same.
 */
static void commit_after_source_gone(gconstpointer tls)
{
        Rig r;
        VfmigPumpStatus st = VFMIG_PUMP_AGAIN;
        unsigned dev;

        rig_open(&r, GPOINTER_TO_INT(tls), false, false);
        until_answered(&r);
        /* one step sends the answer; the next would close our direction */
        g_assert_cmpint(vfmig_stream_receiver_step(r.receiver, &st, &dev), ==, 0);
        for (unsigned i = 0; i < 100000 && !(vfmig_stream_sender_answered(r.sender) && st == VFMIG_PUMP_WAIT_IO); i++) {
                g_assert_cmpint(vfmig_stream_sender_step(r.sender, &st), ==, 0);
                g_assert_cmpint(st, !=, VFMIG_PUMP_DONE);       /* it waits for the target's close */
                if (st == VFMIG_PUMP_WAIT_IO && !vfmig_stream_sender_answered(r.sender)) {
                        struct pollfd p = { vfmig_stream_conn_fd(r.sconn), vfmig_stream_conn_events(r.sconn), 0 };

                        (void) poll(&p, 1, 100);
                }
        }
        g_assert_true(vfmig_stream_sender_answered(r.sender));
        g_assert_cmpint(shutdown(vfmig_stream_conn_fd(r.sconn), SHUT_RDWR), ==, 0);
        receiver_until_done(&r);
        g_assert_true(vfmig_stream_receiver_committed(r.receiver));
        rig_close(&r);
}

/* The source goes away after the END without reading the answer: no
 * COMMIT, and the target says so. */
static void no_commit(gconstpointer tls)
{
        Rig r;

        rig_open(&r, GPOINTER_TO_INT(tls), false, false);
        until_answered(&r);
        g_clear_pointer(&r.sender, vfmig_stream_sender_free);
        g_clear_pointer(&r.sconn, vfmig_stream_conn_free);
        receiver_until_done(&r);
        g_assert_false(vfmig_stream_receiver_committed(r.receiver));
        rig_close(&r);
}

/* Bytes after the answer that are not a valid COMMIT (a damaged one, or
 * another record) do not count. */
static void forged_commit(void)
{
        static const struct { uint8_t type; bool damage; } cases[] = {
                { VFMIG_STREAM_REC_COMMIT, true }, { VFMIG_STREAM_REC_RESULT, false }, { VFMIG_STREAM_REC_END, false },
        };

        for (unsigned c = 0; c < G_N_ELEMENTS(cases); c++) {
                g_autoptr(GByteArray) b = g_byte_array_new();
                uint8_t pl[24] = { 0 };
                Rig r;
                int fd;

                rig_open(&r, false, false, false);
                until_answered(&r);
                /* numbered 0: a damaged record or another type is refused whatever its number */
                stream_append_record(b, cases[c].type, VFMIG_STREAM_NO_DEVICE, pl,
                                     cases[c].type == VFMIG_STREAM_REC_END ? 24 : 4, 0);
                if (cases[c].damage)
                        b->data[b->len - 1] ^= 1;
                /* the source's side of the socket, written behind the sender's back */
                fd = vfmig_stream_conn_fd(r.sconn);
                g_assert_cmpint(write(fd, b->data, b->len), ==, (ssize_t) b->len);
                g_assert_cmpint(shutdown(fd, SHUT_WR), ==, 0);
                receiver_until_done(&r);
                g_assert_false(vfmig_stream_receiver_committed(r.receiver));
                rig_close(&r);
        }
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_data_func("/stream/pump/stop-copy/plain", GINT_TO_POINTER(0), stop_copy);
        g_test_add_data_func("/stream/pump/stop-copy/tls", GINT_TO_POINTER(1), stop_copy);
        g_test_add_data_func("/stream/pump/pre-copy/plain", GINT_TO_POINTER(0), pre_copy);
        g_test_add_data_func("/stream/pump/pre-copy/tls", GINT_TO_POINTER(1), pre_copy);
        g_test_add_func("/stream/pump/target-rejects", target_rejects);
        g_test_add_func("/stream/pump/source-aborts", source_aborts);
        g_test_add_func("/stream/pump/truncated", truncated);
        g_test_add_data_func("/stream/pump/commit-after-source-gone/plain", GINT_TO_POINTER(0),
                             commit_after_source_gone);
        g_test_add_data_func("/stream/pump/commit-after-source-gone/tls", GINT_TO_POINTER(1),
                             commit_after_source_gone);
        g_test_add_func("/stream/pump/forged-commit", forged_commit);
        g_test_add_data_func("/stream/pump/no-commit/plain", GINT_TO_POINTER(0), no_commit);
        g_test_add_data_func("/stream/pump/no-commit/tls", GINT_TO_POINTER(1), no_commit);
        return g_test_run();
}
