/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * test-stream-conn — tickets and PSK derivation, replay and expiry helpers,
 * TLS 1.3 PSK over a socketpair and TCP loopback (right ticket works, a wrong
 * one fails the handshake on both sides, a plaintext peer is refused), and
 * the checks on fds handed in.  The records after the handshake are the
 * connection's own (stream-conn.c): they are checked against GnuTLS's own
 * record layer as the peer, in both roles and both directions, and a
 * tampered, replayed or cut record is refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <sys/uio.h>

#include "stream-conn.h"
#include "stream-ticket.h"
#include "stream.h"

static void test_ticket(void)
{
        g_autofree char *t1 = NULL, *t2 = NULL;
        uint8_t raw[VFMIG_TICKET_BYTES];
        VfmigPsk a, b, c, d;

        g_assert_cmpint(vfmig_ticket_new(&t1), ==, 0);
        g_assert_cmpint(vfmig_ticket_new(&t2), ==, 0);
        g_assert_cmpuint(strlen(t1), ==, VFMIG_TICKET_STRLEN);
        g_assert_cmpstr(t1, !=, t2);
        for (const char *p = t1; *p; p++)
                g_assert_true(g_ascii_isalnum(*p) || *p == '-' || *p == '_');
        g_assert_cmpint(vfmig_ticket_decode(t1, raw), ==, 0);

        g_assert_cmpint(vfmig_ticket_decode("", raw), ==, -EINVAL);
        g_assert_cmpint(vfmig_ticket_decode(NULL, raw), ==, -EINVAL);
        g_assert_cmpint(vfmig_ticket_decode("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", raw), ==, -EINVAL);   /* 42 */
        g_assert_cmpint(vfmig_ticket_decode("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+", raw), ==, -EINVAL);  /* not url-safe */
        g_assert_cmpint(vfmig_ticket_decode("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB", raw), ==, -EINVAL);  /* spare bits */
        g_assert_cmpint(vfmig_ticket_decode("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE", raw), ==, 0);

        g_assert_cmpint(vfmig_psk_derive(t1, "res-1", &a), ==, 0);
        g_assert_cmpint(vfmig_psk_derive(t1, "res-1", &b), ==, 0);
        g_assert_cmpint(vfmig_psk_derive(t2, "res-1", &c), ==, 0);
        g_assert_cmpint(vfmig_psk_derive(t1, "res-2", &d), ==, 0);
        g_assert_cmpmem(&a, sizeof(a), &b, sizeof(b));
        g_assert_true(g_str_has_prefix(a.identity, "vfmig1-"));
        g_assert_cmpuint(strlen(a.identity), ==, 7 + 24);
        g_assert_cmpstr(a.identity, !=, c.identity);
        g_assert_cmpstr(a.identity, !=, d.identity);
        g_assert_true(memcmp(a.key, c.key, sizeof(a.key)) != 0);
        g_assert_true(memcmp(a.key, d.key, sizeof(a.key)) != 0);
        g_assert_null(strstr(a.identity, t1));
        g_assert_cmpint(vfmig_psk_derive("nope", NULL, &d), ==, -EINVAL);
}

static void test_ticket_set(void)
{
        g_autoptr(VfmigTicketSet) set = vfmig_ticket_set_new();
        g_autofree char *t1 = NULL, *t2 = NULL;

        g_assert_cmpint(vfmig_ticket_new(&t1), ==, 0);
        g_assert_cmpint(vfmig_ticket_new(&t2), ==, 0);
        g_assert_false(vfmig_ticket_expired(0, 5));
        g_assert_false(vfmig_ticket_expired(10, 9));
        g_assert_true(vfmig_ticket_expired(10, 10));

        g_assert_cmpint(vfmig_ticket_set_use(set, t1, 1000, 10), ==, 0);
        g_assert_true(vfmig_ticket_set_contains(set, t1));
        g_assert_cmpint(vfmig_ticket_set_use(set, t1, 1000, 20), ==, -EALREADY);       /* replay */
        g_assert_cmpint(vfmig_ticket_set_use(set, t2, 100, 200), ==, -EKEYEXPIRED);
        g_assert_false(vfmig_ticket_set_contains(set, t2));
        g_assert_cmpint(vfmig_ticket_set_use(set, "bad", 0, 0), ==, -EINVAL);
        /* After its expiry the entry is forgotten; the ticket is refused as expired. */
        g_assert_cmpint(vfmig_ticket_set_use(set, t1, 1000, 2000), ==, -EKEYEXPIRED);
        g_assert_false(vfmig_ticket_set_contains(set, t1));
}

/* ---- TLS ---- */

static void pair(int sv[2])
{
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), ==, 0);
}

/* Run both handshakes to completion or failure. */
static void handshake_both(VfmigStreamConn *a, VfmigStreamConn *b, int *ra, int *rb)
{
        *ra = *rb = -EAGAIN;
        for (unsigned i = 0; i < 400 && (*ra == -EAGAIN || *rb == -EAGAIN); i++) {
                struct pollfd p[2] = {
                        { vfmig_stream_conn_fd(a), vfmig_stream_conn_events(a), 0 },
                        { vfmig_stream_conn_fd(b), vfmig_stream_conn_events(b), 0 },
                };

                if (*ra == -EAGAIN)
                        *ra = vfmig_stream_conn_handshake(a);
                if (*rb == -EAGAIN)
                        *rb = vfmig_stream_conn_handshake(b);
                if (*ra == -EAGAIN || *rb == -EAGAIN)
                        (void) poll(p, 2, 50);
        }
}

/* Move n bytes from a to b (both directions used by the caller). */
static void transfer(VfmigStreamConn *from, VfmigStreamConn *to, size_t n)
{
        g_autofree uint8_t *src = g_malloc(n), *dst = g_malloc(n);
        size_t sent = 0, got = 0;

        for (size_t i = 0; i < n; i++)
                src[i] = (uint8_t) (i * 7 + 3);
        while (got < n) {
                struct pollfd p[2] = {
                        { vfmig_stream_conn_fd(from), POLLOUT, 0 },
                        { vfmig_stream_conn_fd(to), POLLIN, 0 },
                };
                bool progress = false;

                if (sent < n) {
                        ssize_t k = vfmig_stream_conn_send(from, src + sent, n - sent);

                        g_assert_true(k > 0 || k == -EAGAIN);
                        if (k > 0) {
                                sent += (size_t) k;
                                progress = true;
                        }
                } else {
                        /* TLS may hold encrypted bytes the socket did not take yet. */
                        int r = vfmig_stream_conn_flush(from);

                        g_assert_true(r == 0 || r == -EAGAIN);
                }
                for (;;) {
                        ssize_t k = vfmig_stream_conn_recv(to, dst + got, n - got);

                        if (k == -EAGAIN)
                                break;
                        g_assert_cmpint(k, >, 0);
                        got += (size_t) k;
                        progress = true;
                        if (got == n)
                                break;
                }
                if (!progress)
                        (void) poll(p, 2, 50);
        }
        g_assert_cmpmem(src, n, dst, n);
}

static void tls_pair(const char *client_ticket, const char *server_ticket,
                     VfmigStreamConn **ret_client, VfmigStreamConn **ret_server)
{
        VfmigPsk cp, sp;
        int sv[2];

        pair(sv);
        g_assert_cmpint(vfmig_psk_derive(client_ticket, "res", &cp), ==, 0);
        g_assert_cmpint(vfmig_psk_derive(server_ticket, "res", &sp), ==, 0);
        g_assert_cmpint(vfmig_stream_conn_new_tls(sv[0], false, &cp, ret_client), ==, 0);
        g_assert_cmpint(vfmig_stream_conn_new_tls(sv[1], true, &sp, ret_server), ==, 0);
        vfmig_psk_clear(&cp);
        vfmig_psk_clear(&sp);
}

static void test_tls_right_ticket(void)
{
        g_autofree char *t = NULL;
        g_autoptr(VfmigStreamConn) c = NULL, s = NULL;
        int rc, rs;

        g_assert_cmpint(vfmig_ticket_new(&t), ==, 0);
        tls_pair(t, t, &c, &s);
        handshake_both(c, s, &rc, &rs);
        g_assert_cmpint(rc, ==, 0);
        g_assert_cmpint(rs, ==, 0);
        g_assert_true(vfmig_stream_conn_is_tls(c));
        transfer(c, s, 3 * 1024 * 1024 + 5);
        transfer(s, c, 1000);
        /* A clean close: close_notify reads as 0. */
        g_assert_cmpint(vfmig_stream_conn_shutdown(c), ==, 0);
        for (unsigned i = 0; i < 100; i++) {
                uint8_t b;
                ssize_t k = vfmig_stream_conn_recv(s, &b, 1);

                if (k == -EAGAIN) {
                        g_usleep(1000);
                        continue;
                }
                g_assert_cmpint(k, ==, 0);
                break;
        }
}

/* The cipher: AES-128-GCM where the CPU has AES instructions (the fastest
 * there), ChaCha20-Poly1305 where it has not. */
static void test_tls_cipher(void)
{
        g_autofree char *t = NULL;
        g_autoptr(VfmigStreamConn) c = NULL, s = NULL;
        const char *want = "AES-128-GCM";
        int rc, rs;

#if defined(__x86_64__)
        if (!__builtin_cpu_supports("aes") || !__builtin_cpu_supports("pclmul"))
                want = "CHACHA20-POLY1305";
#endif
        g_assert_cmpstr(vfmig_stream_tls_priority(), ==,
                        strcmp(want, "AES-128-GCM") == 0 ? VFMIG_STREAM_TLS_PRIORITY : VFMIG_STREAM_TLS_PRIORITY_NO_AES);
        g_assert_cmpint(vfmig_ticket_new(&t), ==, 0);
        tls_pair(t, t, &c, &s);
        g_assert_null(vfmig_stream_conn_cipher(c));
        handshake_both(c, s, &rc, &rs);
        g_assert_cmpint(rc, ==, 0);
        g_assert_cmpint(rs, ==, 0);
        g_assert_cmpstr(vfmig_stream_conn_cipher(c), ==, want);
        g_assert_cmpstr(vfmig_stream_conn_cipher(s), ==, want);
}

/* Bulk data: one send call takes many TLS records, which reach the socket
 * only on flush (or when the buffer fills); one receive call returns every
 * record that has arrived, not one 16 KiB record at a time. */
static void test_tls_batching(void)
{
        g_autofree char *t = NULL;
        g_autoptr(VfmigStreamConn) c = NULL, s = NULL;
        const size_t n = 100 * 1024;
        g_autofree uint8_t *src = g_malloc(n), *dst = g_malloc(2 * n);
        size_t got = 0;
        ssize_t k;
        int rc, rs, r;

        for (size_t i = 0; i < n; i++)
                src[i] = (uint8_t) (i * 13 + 1);
        g_assert_cmpint(vfmig_ticket_new(&t), ==, 0);
        tls_pair(t, t, &c, &s);
        handshake_both(c, s, &rc, &rs);
        g_assert_cmpint(rc, ==, 0);
        g_assert_cmpint(rs, ==, 0);

        g_assert_cmpint(vfmig_stream_conn_send(c, src, n), ==, n);     /* 7 records in one call */
        for (unsigned i = 0; (r = vfmig_stream_conn_flush(c)) == -EAGAIN && i < 100; i++) {
                /* the peer reads to make room */
                k = vfmig_stream_conn_recv(s, dst + got, 2 * n - got);
                if (k > 0)
                        got += (size_t) k;
                g_usleep(1000);
        }
        g_assert_cmpint(r, ==, 0);
        g_assert_cmpint(vfmig_stream_conn_flush(c), ==, 0);
        for (unsigned i = 0; got < n && i < 1000; i++) {
                k = vfmig_stream_conn_recv(s, dst + got, 2 * n - got);
                if (k == -EAGAIN) {
                        g_usleep(1000);
                        continue;
                }
                g_assert_cmpint(k, >, 0);
                if (got == 0)   /* everything was in the socket: one call takes it all */
                        g_assert_cmpint(k, ==, n);
                got += (size_t) k;
        }
        g_assert_cmpuint(got, ==, n);
        g_assert_cmpmem(src, n, dst, n);
        g_assert_cmpint(vfmig_stream_conn_recv(s, dst, n), ==, -EAGAIN);
        g_assert_false(vfmig_stream_conn_pending(s));
}

static void test_tls_wrong_ticket(void)
{
        g_autofree char *t1 = NULL, *t2 = NULL;
        g_autoptr(VfmigStreamConn) c = NULL, s = NULL;
        int rc, rs;

        g_assert_cmpint(vfmig_ticket_new(&t1), ==, 0);
        g_assert_cmpint(vfmig_ticket_new(&t2), ==, 0);
        tls_pair(t1, t2, &c, &s);
        handshake_both(c, s, &rc, &rs);
        g_test_message("client: %d %s", rc, vfmig_stream_conn_error(c));
        g_test_message("server: %d %s", rs, vfmig_stream_conn_error(s));
        g_assert_cmpint(rc, <, 0);
        g_assert_cmpint(rc, !=, -EAGAIN);
        g_assert_cmpint(rs, ==, -EACCES);
        g_assert_nonnull(strstr(vfmig_stream_conn_error(s), "unknown PSK identity"));
        /* No application data can move. */
        g_assert_cmpint(vfmig_stream_conn_send(c, "x", 1), ==, -ENOTCONN);
        g_assert_cmpint(vfmig_stream_conn_recv(s, (char[1]) {}, 1), ==, -ENOTCONN);
}

/* Same identity, different key: only possible with a forged identity; the
 * binder check fails the handshake. */
static void test_tls_wrong_key_same_identity(void)
{
        g_autofree char *t = NULL;
        g_autoptr(VfmigStreamConn) c = NULL, s = NULL;
        VfmigPsk cp, sp;
        int sv[2], rc, rs;

        g_assert_cmpint(vfmig_ticket_new(&t), ==, 0);
        g_assert_cmpint(vfmig_psk_derive(t, "res", &cp), ==, 0);
        sp = cp;
        sp.key[0] ^= 1;
        pair(sv);
        g_assert_cmpint(vfmig_stream_conn_new_tls(sv[0], false, &cp, &c), ==, 0);
        g_assert_cmpint(vfmig_stream_conn_new_tls(sv[1], true, &sp, &s), ==, 0);
        handshake_both(c, s, &rc, &rs);
        g_test_message("client: %d %s", rc, vfmig_stream_conn_error(c));
        g_test_message("server: %d %s", rs, vfmig_stream_conn_error(s));
        g_assert_cmpint(rc, <, 0);
        g_assert_cmpint(rc, !=, -EAGAIN);
        g_assert_cmpint(rs, <, 0);
        g_assert_cmpint(rs, !=, -EAGAIN);
}

static void test_tls_plaintext_peer(void)
{
        g_autofree char *t = NULL;
        g_autoptr(VfmigStreamConn) plain = NULL, s = NULL, c = NULL, plain_server = NULL;
        g_autoptr(VfmigStreamParser) parser = vfmig_stream_parser_new();
        VfmigPsk psk;
        int sv[2], rc, rs;
        uint8_t pre[64];

        g_assert_cmpint(vfmig_ticket_new(&t), ==, 0);
        g_assert_cmpint(vfmig_psk_derive(t, NULL, &psk), ==, 0);

        /* A plaintext source talking to a TLS target. */
        pair(sv);
        g_assert_cmpint(vfmig_stream_conn_new_plain(sv[0], &plain), ==, 0);
        g_assert_cmpint(vfmig_stream_conn_new_tls(sv[1], true, &psk, &s), ==, 0);
        g_assert_cmpint(vfmig_stream_conn_handshake(plain), ==, 0);
        memset(pre, 0, sizeof(pre));
        memcpy(pre, VFMIG_STREAM_MAGIC, VFMIG_STREAM_MAGIC_SIZE);
        g_assert_cmpint(vfmig_stream_conn_send(plain, pre, sizeof(pre)), ==, sizeof(pre));
        rs = -EAGAIN;
        for (unsigned i = 0; i < 1000 && rs == -EAGAIN; i++) {
                rs = vfmig_stream_conn_handshake(s);
                if (rs == -EAGAIN)
                        g_usleep(1000);
        }
        g_test_message("server: %d %s", rs, vfmig_stream_conn_error(s));
        g_assert_cmpint(rs, ==, -EPROTO);

        /* A TLS source talking to a plaintext target: its parser refuses. */
        pair(sv);
        g_assert_cmpint(vfmig_stream_conn_new_tls(sv[0], false, &psk, &c), ==, 0);
        g_assert_cmpint(vfmig_stream_conn_new_plain(sv[1], &plain_server), ==, 0);
        g_assert_cmpint(vfmig_stream_conn_handshake(plain_server), ==, 0);
        rc = vfmig_stream_conn_handshake(c);
        g_assert_cmpint(rc, ==, -EAGAIN);               /* ClientHello sent */
        {
                uint8_t buf[VFMIG_STREAM_PREAMBLE_SIZE];
                VfmigStreamEvent ev;
                ssize_t k = -EAGAIN;

                for (unsigned i = 0; i < 1000 && k == -EAGAIN; i++)
                        if ((k = vfmig_stream_conn_recv(plain_server, buf, sizeof(buf))) == -EAGAIN)
                                g_usleep(1000);
                g_assert_cmpint(k, ==, sizeof(buf));
                g_assert_cmpint(vfmig_stream_parser_push(parser, buf, sizeof(buf), &ev), ==, -EBADMSG);
                g_assert_nonnull(strstr(vfmig_stream_parser_error_message(parser), "magic"));
        }
        vfmig_psk_clear(&psk);
}

/* ---- the records against GnuTLS's own record layer ---- */

typedef struct GnutlsPeer {
        int fd;                 /* blocking */
        bool server;
        const VfmigPsk *psk;
        size_t expect, reply;   /* bytes to read from us, then to send back */
        bool read_ok, saw_close_notify;
        int error;              /* a GnuTLS error, 0 */
} GnutlsPeer;

static int peer_psk_cb(gnutls_session_t session, const char *username, gnutls_datum_t *key)
{
        const VfmigPsk *psk = gnutls_session_get_ptr(session);

        if (strcmp(username, psk->identity) != 0)
                return -1;
        key->data = gnutls_malloc(VFMIG_PSK_KEY_BYTES);
        key->size = VFMIG_PSK_KEY_BYTES;
        memcpy(key->data, psk->key, VFMIG_PSK_KEY_BYTES);
        return 0;
}

static uint8_t pattern(size_t i, unsigned seed)
{
        return (uint8_t) (i * 31 + seed + (i >> 14));
}

/* A TLS 1.3 PSK peer that uses nothing of ours but the priority string:
 * GnuTLS's record layer reads our records and writes the ones we read. */
static void *gnutls_peer(void *userdata)
{
        GnutlsPeer *p = userdata;
        gnutls_session_t s;
        gnutls_psk_server_credentials_t sc = NULL;
        gnutls_psk_client_credentials_t cc = NULL;
        gnutls_datum_t key = { (unsigned char *) p->psk->key, VFMIG_PSK_KEY_BYTES };
        g_autofree uint8_t *buf = g_malloc(65536);
        size_t got = 0;
        ssize_t k;
        int r;

        g_assert_cmpint(gnutls_init(&s, (p->server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_TICKETS), ==, 0);
        gnutls_session_set_ptr(s, (void *) p->psk);
        g_assert_cmpint(gnutls_priority_set_direct(s, vfmig_stream_tls_priority(), NULL), ==, 0);
        if (p->server) {
                g_assert_cmpint(gnutls_psk_allocate_server_credentials(&sc), ==, 0);
                gnutls_psk_set_server_credentials_function(sc, peer_psk_cb);
                g_assert_cmpint(gnutls_credentials_set(s, GNUTLS_CRD_PSK, sc), ==, 0);
        } else {
                g_assert_cmpint(gnutls_psk_allocate_client_credentials(&cc), ==, 0);
                g_assert_cmpint(gnutls_psk_set_client_credentials(cc, p->psk->identity, &key, GNUTLS_PSK_KEY_RAW), ==, 0);
                g_assert_cmpint(gnutls_credentials_set(s, GNUTLS_CRD_PSK, cc), ==, 0);
        }
        gnutls_transport_set_int(s, p->fd);
        do
                r = gnutls_handshake(s);
        while (r < 0 && !gnutls_error_is_fatal(r));
        if (r < 0) {
                p->error = r;
                goto out;
        }
        p->read_ok = true;
        while (got < p->expect) {
                k = gnutls_record_recv(s, buf, MIN(65536, p->expect - got));
                if (k <= 0) {
                        p->error = k < 0 ? (int) k : GNUTLS_E_PREMATURE_TERMINATION;
                        p->read_ok = false;
                        goto out;
                }
                for (ssize_t i = 0; i < k; i++)
                        if (buf[i] != pattern(got + (size_t) i, 1))
                                p->read_ok = false;
                got += (size_t) k;
        }
        for (size_t sent = 0; sent < p->reply; sent += (size_t) k) {
                size_t n = MIN(65536, p->reply - sent);

                for (size_t i = 0; i < n; i++)
                        buf[i] = pattern(sent + i, 2);
                k = gnutls_record_send(s, buf, n);
                if (k < 0) {
                        p->error = (int) k;
                        goto out;
                }
        }
        g_assert_cmpint(gnutls_bye(s, GNUTLS_SHUT_WR), ==, 0);
        k = gnutls_record_recv(s, buf, 1);      /* our close_notify: 0 */
        p->saw_close_notify = k == 0;
        if (k < 0)
                p->error = (int) k;
out:
        gnutls_deinit(s);
        if (sc)
                gnutls_psk_free_server_credentials(sc);
        if (cc)
                gnutls_psk_free_client_credentials(cc);
        return NULL;
}

static void wait_conn(VfmigStreamConn *c)
{
        struct pollfd p = { vfmig_stream_conn_fd(c), vfmig_stream_conn_events(c), 0 };

        (void) poll(&p, 1, 100);
}

static void interop(bool we_are_server)
{
        g_autofree char *t = NULL;
        g_autoptr(VfmigStreamConn) c = NULL;
        const size_t up = 5 * 1024 * 1024 + 77, down = 300 * 1024 + 3;
        g_autofree uint8_t *src = g_malloc(up), *dst = g_malloc(down + 1);  /* reads ask for one more */
        size_t sent = 0, got = 0;
        GnutlsPeer peer = { .server = !we_are_server, .expect = up, .reply = down };
        VfmigPsk psk;
        pthread_t th;
        int sv[2], r = -EAGAIN;
        ssize_t k;

        g_assert_cmpint(vfmig_ticket_new(&t), ==, 0);
        g_assert_cmpint(vfmig_psk_derive(t, "res", &psk), ==, 0);
        pair(sv);
        g_assert_cmpint(fcntl(sv[1], F_SETFL, 0), ==, 0);      /* the peer blocks */
        peer.fd = sv[1];
        peer.psk = &psk;
        g_assert_cmpint(vfmig_stream_conn_new_tls(sv[0], we_are_server, &psk, &c), ==, 0);
        pthread_create(&th, NULL, gnutls_peer, &peer);

        for (unsigned i = 0; i < 200 && r == -EAGAIN; i++)
                if ((r = vfmig_stream_conn_handshake(c)) == -EAGAIN)
                        wait_conn(c);
        g_assert_cmpint(r, ==, 0);
        for (size_t i = 0; i < up; i++)
                src[i] = pattern(i, 1);
        /* Odd sizes: records of every length, not only full ones. */
        for (unsigned i = 0; sent < up && i < 100000; i++) {
                k = vfmig_stream_conn_send(c, src + sent, MIN(up - sent, 1000 + 7919 * (size_t) (i % 23)));
                if (k == -EAGAIN)
                        wait_conn(c);
                else {
                        g_assert_cmpint(k, >, 0);
                        sent += (size_t) k;
                }
        }
        while ((r = vfmig_stream_conn_flush(c)) == -EAGAIN)
                wait_conn(c);
        g_assert_cmpint(r, ==, 0);
        for (unsigned i = 0; i < 100000; i++) {
                k = vfmig_stream_conn_recv(c, dst + got, MIN(down - got + 1, 20000));
                if (k == -EAGAIN) {
                        wait_conn(c);
                        continue;
                }
                if (k == 0)     /* the peer's close_notify, after all its bytes */
                        break;
                g_assert_cmpint(k, >, 0);
                got += (size_t) k;
        }
        g_assert_cmpuint(got, ==, down);
        for (size_t i = 0; i < down; i++)
                g_assert_cmpuint(dst[i], ==, pattern(i, 2));
        while ((r = vfmig_stream_conn_shutdown(c)) == -EAGAIN)
                wait_conn(c);
        g_assert_cmpint(r, ==, 0);
        pthread_join(th, NULL);
        g_test_message("peer: error %d (%s)", peer.error, peer.error ? gnutls_strerror(peer.error) : "none");
        g_assert_cmpint(peer.error, ==, 0);
        g_assert_true(peer.read_ok);
        g_assert_true(peer.saw_close_notify);
        close(sv[1]);
        vfmig_psk_clear(&psk);
}

static void test_tls_records_against_gnutls_server(void)
{
        interop(false);
}

static void test_tls_records_against_gnutls_client(void)
{
        interop(true);
}

/* Read everything the socket holds now (after a short wait for more). */
static size_t drain(int fd, uint8_t *buf, size_t size)
{
        size_t n = 0;

        for (unsigned quiet = 0; quiet < 20 && n < size; ) {
                ssize_t k = read(fd, buf + n, size - n);

                if (k > 0) {
                        n += (size_t) k;
                        quiet = 0;
                } else {
                        g_usleep(1000);
                        quiet++;
                }
        }
        return n;
}

/* A handshake between our client and server through the test's hands (two
 * socketpairs, bytes passed on as they come), then records the test has
 * taken off the wire changed before they reach the server. */
typedef struct Relayed {
        VfmigStreamConn *c, *s;
        int c_wire, s_wire;     /* the test's ends */
} Relayed;

static void relay_some(int from, int to)
{
        uint8_t buf[65536];
        ssize_t k = read(from, buf, sizeof(buf));

        if (k > 0)
                g_assert_cmpint(write(to, buf, (size_t) k), ==, k);
}

static void relayed_pair(Relayed *x)
{
        g_autofree char *t = NULL;
        VfmigPsk psk;
        int a[2], b[2], rc = -EAGAIN, rs = -EAGAIN;

        g_assert_cmpint(vfmig_ticket_new(&t), ==, 0);
        g_assert_cmpint(vfmig_psk_derive(t, "res", &psk), ==, 0);
        pair(a);
        pair(b);
        g_assert_cmpint(vfmig_stream_conn_new_tls(a[0], false, &psk, &x->c), ==, 0);
        g_assert_cmpint(vfmig_stream_conn_new_tls(b[0], true, &psk, &x->s), ==, 0);
        x->c_wire = a[1];
        x->s_wire = b[1];
        for (unsigned i = 0; i < 400 && (rc == -EAGAIN || rs == -EAGAIN); i++) {
                if (rc == -EAGAIN)
                        rc = vfmig_stream_conn_handshake(x->c);
                if (rs == -EAGAIN)
                        rs = vfmig_stream_conn_handshake(x->s);
                relay_some(x->c_wire, x->s_wire);
                relay_some(x->s_wire, x->c_wire);
                g_usleep(500);
        }
        g_assert_cmpint(rc, ==, 0);
        g_assert_cmpint(rs, ==, 0);
        vfmig_psk_clear(&psk);
}

static void relayed_done(Relayed *x)
{
        vfmig_stream_conn_free(x->c);
        vfmig_stream_conn_free(x->s);
        close(x->c_wire);
        close(x->s_wire);
}

/* What the server makes of the wire bytes w[0, n): the bytes it hands out
 * before it stops, and how it stops. */
static ssize_t server_reads(Relayed *x, const uint8_t *w, size_t n, bool close_after, size_t *ret_got)
{
        uint8_t buf[65536];
        ssize_t k = -EAGAIN;

        g_assert_cmpint(write(x->s_wire, w, n), ==, (ssize_t) n);
        if (close_after)
                shutdown(x->s_wire, SHUT_WR);
        *ret_got = 0;
        for (unsigned i = 0; i < 200; i++) {
                k = vfmig_stream_conn_recv(x->s, buf, sizeof(buf));
                if (k > 0) {
                        *ret_got += (size_t) k;
                        continue;
                }
                if (k != -EAGAIN)
                        break;
                g_usleep(1000);
        }
        return k;
}

static void test_tls_records_refused(void)
{
        const size_t n = 40000;         /* three records: 16384, 16384, 7232 bytes */
        const size_t R = 5 + 16384 + 1 + 16;    /* a full record on the wire */
        g_autofree uint8_t *data = g_malloc(n), *w = g_malloc(4 * n), *v = g_malloc(4 * n);
        size_t wn, got;
        ssize_t k;

        for (size_t i = 0; i < n; i++)
                data[i] = pattern(i, 3);

        /* Untouched: all of it, then the end. */
        {
                Relayed x;

                relayed_pair(&x);
                g_assert_cmpint(vfmig_stream_conn_send(x.c, data, n), ==, n);
                g_assert_cmpint(vfmig_stream_conn_shutdown(x.c), ==, 0);
                wn = drain(x.c_wire, w, 4 * n);
                g_assert_cmpuint(wn, ==, n + 3 * (5 + 1 + 16) + (5 + 3 + 16));
                g_assert_cmpint(server_reads(&x, w, wn, true, &got), ==, 0);
                g_assert_cmpuint(got, ==, n);
                relayed_done(&x);
        }
        /* One bit changed in the second record's ciphertext, its tag, its
         * header (authenticated too): the first record's bytes, then
         * bad_record_mac, and it sticks. */
        for (unsigned where = 0; where < 3; where++) {
                size_t at = where == 0 ? R + 5 + 100 : where == 1 ? 2 * R - 1 : R + 4;
                Relayed x;

                relayed_pair(&x);
                g_assert_cmpint(vfmig_stream_conn_send(x.c, data, n), ==, n);
                wn = drain(x.c_wire, w, 4 * n);
                g_assert_cmpuint(wn, ==, n + 3 * (5 + 1 + 16));
                w[at] ^= 0x01;
                k = server_reads(&x, w, wn, false, &got);
                g_test_message("changed byte %zu: %zd %s", at, k, vfmig_stream_conn_error(x.s));
                g_assert_cmpint(k, ==, -EPROTO);
                g_assert_nonnull(strstr(vfmig_stream_conn_error(x.s), "failed authentication"));
                g_assert_cmpuint(got, ==, 16384);
                g_assert_cmpint(vfmig_stream_conn_recv(x.s, w, 16), ==, -EPROTO);
                relayed_done(&x);
        }
        /* The first record twice (a replay inside the connection), or the
         * third in place of the second: the sequence number is in the
         * nonce, so neither opens. */
        for (unsigned swap = 0; swap < 2; swap++) {
                Relayed x;
                size_t vn;

                relayed_pair(&x);
                g_assert_cmpint(vfmig_stream_conn_send(x.c, data, n), ==, n);
                wn = drain(x.c_wire, w, 4 * n);
                memcpy(v, w, R);
                if (swap) {
                        memcpy(v + R, w + 2 * R, wn - 2 * R);
                        vn = R + (wn - 2 * R);
                } else {
                        memcpy(v + R, w, R);
                        vn = 2 * R;
                }
                k = server_reads(&x, v, vn, false, &got);
                g_assert_cmpint(k, ==, -EPROTO);
                g_assert_cmpuint(got, ==, 16384);
                relayed_done(&x);
        }
        /* Part of a record read ahead is not "pending": the caller must wait
         * for the socket (else its event loop spins on it); the rest of the
         * record then opens. */
        {
                Relayed x;
                uint8_t buf[65536];

                relayed_pair(&x);
                g_assert_cmpint(vfmig_stream_conn_send(x.c, data, n), ==, n);
                wn = drain(x.c_wire, w, 4 * n);
                g_assert_cmpint(write(x.s_wire, w, R + 1000), ==, (ssize_t) (R + 1000));
                g_usleep(2000);
                g_assert_cmpint(vfmig_stream_conn_recv(x.s, buf, 100), ==, 100);
                g_assert_true(vfmig_stream_conn_pending(x.s));          /* the opened record's rest */
                g_assert_cmpint(vfmig_stream_conn_recv(x.s, buf, sizeof(buf)), ==, 16384 - 100);
                g_assert_cmpint(vfmig_stream_conn_recv(x.s, buf, sizeof(buf)), ==, -EAGAIN);
                g_assert_false(vfmig_stream_conn_pending(x.s));         /* 1000 bytes of the next one */
                g_assert_cmpint(write(x.s_wire, w + R + 1000, wn - R - 1000), ==, (ssize_t) (wn - R - 1000));
                g_usleep(2000);
                g_assert_cmpint(vfmig_stream_conn_recv(x.s, buf, sizeof(buf)), ==, n - 16384);
                relayed_done(&x);
        }
        /* Cut inside the second record, then the end of the connection: the
         * first record's bytes, then an end without close_notify. */
        {
                Relayed x;

                relayed_pair(&x);
                g_assert_cmpint(vfmig_stream_conn_send(x.c, data, n), ==, n);
                wn = drain(x.c_wire, w, 4 * n);
                k = server_reads(&x, w, R + 1000, true, &got);
                g_assert_cmpint(k, ==, -ECONNRESET);
                g_assert_nonnull(strstr(vfmig_stream_conn_error(x.s), "without close_notify"));
                g_assert_cmpuint(got, ==, 16384);
                relayed_done(&x);
        }
}

static void test_tcp_loopback(void)
{
        g_autofree char *t = NULL, *ep = NULL;
        g_autoptr(VfmigStreamConn) c = NULL, s = NULL;
        VfmigPsk psk;
        int lfd, cfd, sfd = -EAGAIN, rc, rs;
        uint16_t port;

        g_assert_cmpint(vfmig_stream_tcp_listen("127.0.0.1", 0, &lfd, &port), ==, 0);
        g_assert_cmpuint(port, >, 0);
        ep = g_strdup_printf("127.0.0.1:%u", port);
        g_assert_cmpint(vfmig_stream_tcp_connect(ep, &cfd), ==, 0);
        for (unsigned i = 0; i < 1000 && sfd == -EAGAIN; i++)
                if ((sfd = vfmig_stream_tcp_accept(lfd)) == -EAGAIN)
                        g_usleep(1000);
        g_assert_cmpint(sfd, >=, 0);
        close(lfd);
        g_assert_cmpint(vfmig_stream_fd_check(sfd, NULL, NULL), ==, 0);

        g_assert_cmpint(vfmig_ticket_new(&t), ==, 0);
        g_assert_cmpint(vfmig_psk_derive(t, "r", &psk), ==, 0);
        g_assert_cmpint(vfmig_stream_conn_new_tls(cfd, false, &psk, &c), ==, 0);
        g_assert_cmpint(vfmig_stream_conn_new_tls(sfd, true, &psk, &s), ==, 0);
        handshake_both(c, s, &rc, &rs);
        g_assert_cmpint(rc, ==, 0);
        g_assert_cmpint(rs, ==, 0);
        transfer(c, s, 2 * 1024 * 1024);
        vfmig_psk_clear(&psk);

        /* Connecting to a closed port fails in the handshake step. */
        {
                g_autoptr(VfmigStreamConn) x = NULL;
                int fd, r = -EAGAIN;

                g_assert_cmpint(vfmig_stream_tcp_listen("127.0.0.1", 0, &lfd, &port), ==, 0);
                close(lfd);
                g_free(ep);
                ep = g_strdup_printf("127.0.0.1:%u", port);
                g_assert_cmpint(vfmig_stream_tcp_connect(ep, &fd), ==, 0);
                g_assert_cmpint(vfmig_stream_conn_new_plain(fd, &x), ==, 0);
                for (unsigned i = 0; i < 1000 && r == -EAGAIN; i++)
                        if ((r = vfmig_stream_conn_handshake(x)) == -EAGAIN)
                                g_usleep(1000);
                g_assert_cmpint(r, ==, -ECONNREFUSED);
        }
}

static void test_endpoint(void)
{
        struct sockaddr_storage ss;
        socklen_t len;

        g_assert_cmpint(vfmig_stream_parse_endpoint("127.0.0.1:80", &ss, &len), ==, 0);
        g_assert_cmpint(ss.ss_family, ==, AF_INET);
        g_assert_cmpint(vfmig_stream_parse_endpoint("[::1]:443", &ss, &len), ==, 0);
        g_assert_cmpint(ss.ss_family, ==, AF_INET6);
        static const char *const bad[] = {
                "", "host:80", "1.2.3.4", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:-1", "::1:80",
                "[::1]80", "1.2.3.4:8x", "1.2.3.4: 80",
        };
        for (unsigned i = 0; i < G_N_ELEMENTS(bad); i++)
                g_assert_cmpint(vfmig_stream_parse_endpoint(bad[i], &ss, &len), ==, -EINVAL);
}

/* ---- fds handed in ---- */

static void expect_refused(int fd, int error, const char *words)
{
        g_autofree char *msg = NULL;

        g_assert_cmpint(vfmig_stream_fd_check(fd, NULL, &msg), ==, error);
        g_test_message("%s", msg);
        g_assert_nonnull(msg);
        g_assert_nonnull(strstr(msg, words));
}

static void test_fd_checks(void)
{
        VfmigStreamFdInfo info;
        int p[2], sv[2], udp, tcp;
        FILE *f = tmpfile();

        g_assert_cmpint(pipe(p), ==, 0);
        expect_refused(p[0], -ENOTSOCK, "a pipe");
        expect_refused(fileno(f), -ENOTSOCK, "a regular file");
        udp = socket(AF_INET, SOCK_DGRAM, 0);
        expect_refused(udp, -ESOCKTNOSUPPORT, "datagram");
        tcp = socket(AF_INET, SOCK_STREAM, 0);
        expect_refused(tcp, -ENOTCONN, "no peer");
        expect_refused(-1, -EBADF, "no file descriptor");

        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
        g_assert_cmpint(vfmig_stream_fd_check(sv[0], &info, NULL), ==, 0);
        g_assert_cmpint(info.family, ==, AF_UNIX);
        g_assert_true(info.have_peer_cred);
        g_assert_cmpint(info.peer_uid, ==, getuid());
        g_assert_cmpint(info.peer_pid, ==, getpid());
        g_assert_true(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
        g_assert_true(fcntl(sv[0], F_GETFD) & FD_CLOEXEC);
        {
                int sq[2];

                g_assert_cmpint(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sq), ==, 0);
                expect_refused(sq[0], -ESOCKTNOSUPPORT, "seqpacket");
                close(sq[0]);
                close(sq[1]);
        }
        close(p[0]);
        close(p[1]);
        close(udp);
        close(tcp);
        close(sv[0]);
        close(sv[1]);
        fclose(f);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/stream/ticket/derive", test_ticket);
        g_test_add_func("/stream/ticket/replay-expiry", test_ticket_set);
        g_test_add_func("/stream/tls/right-ticket", test_tls_right_ticket);
        g_test_add_func("/stream/tls/wrong-ticket", test_tls_wrong_ticket);
        g_test_add_func("/stream/tls/cipher", test_tls_cipher);
        g_test_add_func("/stream/tls/batching", test_tls_batching);
        g_test_add_func("/stream/tls/wrong-key-same-identity", test_tls_wrong_key_same_identity);
        g_test_add_func("/stream/tls/plaintext-peer", test_tls_plaintext_peer);
        g_test_add_func("/stream/tls/records-vs-gnutls-server", test_tls_records_against_gnutls_server);
        g_test_add_func("/stream/tls/records-vs-gnutls-client", test_tls_records_against_gnutls_client);
        g_test_add_func("/stream/tls/records-refused", test_tls_records_refused);
        g_test_add_func("/stream/tls/tcp-loopback", test_tcp_loopback);
        g_test_add_func("/stream/endpoint", test_endpoint);
        g_test_add_func("/stream/fd-checks", test_fd_checks);
        return g_test_run();
}
