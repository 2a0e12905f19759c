/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * test-stream-conn — tickets and PSK derivation, replay and expiry helpers,
 * TLS 1.3 PSK over a socketpair and TCP loopback (right ticket works, a wrong
 * one fails the handshake on both sides, a plaintext peer is refused), and
 * the checks on fds handed in.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
        g_test_add_func("/stream/tls/tcp-loopback", test_tcp_loopback);
        g_test_add_func("/stream/endpoint", test_endpoint);
        g_test_add_func("/stream/fd-checks", test_fd_checks);
        return g_test_run();
}
