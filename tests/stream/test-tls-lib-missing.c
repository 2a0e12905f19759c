/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * test-tls-lib-missing — the stream code when GnuTLS cannot be loaded.
 *
 * Built from the stream sources themselves with VFMIG_TLS_LIB_SONAME set to
 * a library that does not exist (tests/stream/meson.build; vfmigd's own
 * build always loads libgnutls.so.30): every entry point that needs GnuTLS
 * fails with the typed error of vfmig_tls_lib_load() in its own style (a
 * negative errno, the reason logged once), the fd a TLS connection was to
 * take is closed, the failure sticks with the same message on every call,
 * and what needs no GnuTLS (decoding tickets, the replay set, wiping a PSK,
 * plaintext connections) goes on working without it.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "stream-conn.h"
#include "stream-ticket.h"
#include "tls-lib.h"

#define TICKET_A "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"

static void test_sticky(void)
{
        g_autofree char *e1 = NULL, *e2 = NULL;

        g_assert_cmpint(vfmig_tls_lib_load(&e1), ==, -ELIBACC);
        g_test_message("%s", e1);
        g_assert_nonnull(strstr(e1, "Cannot load " VFMIG_TLS_LIB_SONAME " (GnuTLS), which TLS migration streams need: "));
        g_assert_nonnull(strstr(e1, "cannot open shared object file"));
        for (unsigned i = 0; i < 3; i++) {
                g_clear_pointer(&e2, g_free);
                g_assert_cmpint(vfmig_tls_lib_load(&e2), ==, -ELIBACC);
                g_assert_cmpstr(e1, ==, e2);
        }
        g_assert_cmpint(vfmig_tls_lib_load(NULL), ==, -ELIBACC);
        g_assert_null(sym_gnutls_init);
        g_assert_null(sym_gnutls_malloc);
}

static void test_entry_points(void)
{
        g_autoptr(VfmigTicketSet) set = vfmig_ticket_set_new();
        g_autoptr(VfmigStreamConn) plain = NULL;
        VfmigStreamConn *c = NULL;
        uint8_t raw[VFMIG_TICKET_BYTES];
        char *ticket = NULL;
        VfmigPsk psk = {};
        int sv[2];

        /* The first one that needs GnuTLS logs why it is missing, once. */
        g_test_expect_message(NULL, G_LOG_LEVEL_WARNING, "Cannot load " VFMIG_TLS_LIB_SONAME " (GnuTLS)*");
        g_assert_cmpint(vfmig_ticket_new(&ticket), ==, -ELIBACC);
        g_test_assert_expected_messages();
        g_assert_null(ticket);

        /* A malformed ticket is still that; a good one needs GnuTLS. */
        g_assert_cmpint(vfmig_psk_derive("nope", NULL, &psk), ==, -EINVAL);
        g_assert_cmpint(vfmig_psk_derive(TICKET_A, NULL, &psk), ==, -ELIBACC);
        g_assert_cmpint(vfmig_ticket_new(&ticket), ==, -ELIBACC);

        /* The fd is taken on failure, as always. */
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), ==, 0);
        g_assert_cmpint(vfmig_stream_conn_new_tls(sv[0], false, &psk, &c), ==, -ELIBACC);
        g_assert_null(c);
        g_assert_cmpint(fcntl(sv[0], F_GETFD), ==, -1);
        g_assert_cmpint(errno, ==, EBADF);

        /* Without GnuTLS. */
        g_assert_cmpint(vfmig_ticket_decode(TICKET_A, raw), ==, 0);
        g_assert_cmpint(vfmig_ticket_decode("nope", raw), ==, -EINVAL);
        g_assert_cmpint(vfmig_ticket_set_use(set, TICKET_A, 0, 1), ==, 0);
        g_assert_cmpint(vfmig_ticket_set_use(set, TICKET_A, 0, 2), ==, -EALREADY);
        g_assert_true(vfmig_ticket_set_contains(set, TICKET_A));
        memset(psk.key, 0x5a, sizeof(psk.key));
        vfmig_psk_clear(&psk);
        for (size_t i = 0; i < sizeof(psk.key); i++)
                g_assert_cmpuint(psk.key[i], ==, 0);
        g_assert_cmpint(vfmig_stream_conn_new_plain(sv[1], &plain), ==, 0);
        g_assert_false(vfmig_stream_conn_is_tls(plain));
        g_assert_null(vfmig_stream_conn_cipher(plain));
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/stream/tls-lib-missing/sticky", test_sticky);
        g_test_add_func("/stream/tls-lib-missing/entry-points", test_entry_points);
        return g_test_run();
}
