/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * test-tls-lib — GnuTLS is loaded on first use (daemon/stream/tls-lib.c).
 *
 * This program links the stream library and not GnuTLS (tests/stream/
 * meson.build), as vfmigd does: GnuTLS is not mapped before the first load;
 * the load works from several threads at once, maps it, fills the sym_
 * pointers and is idempotent; a TLS connection works through the loaded
 * library; a library that is not there, or lacks a symbol, is reported with
 * -ELIBACC and a message naming the library (and the symbol).  Then the
 * built vfmigd: --version and --introspect load no GnuTLS (LD_DEBUG=libs),
 * and a vfmigd that serves on a private system bus has no GnuTLS mapped
 * (/proc/PID/maps).  Each of these fails if vfmigd or the stream library
 * links GnuTLS again, or loads it at start.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "stream-conn.h"
#include "stream-ticket.h"
#include "tls-lib.h"

#define GNUTLS_MAPPED "/libgnutls.so"

static bool gnutls_mapped_at_start;

static bool maps_have(pid_t pid, const char *needle)
{
        g_autofree char *path = g_strdup_printf("/proc/%d/maps", (int) pid);
        g_autofree char *text = NULL;
        g_autoptr(GError) err = NULL;

        g_assert_true(g_file_get_contents(path, &text, NULL, &err));
        return strstr(text, needle) != NULL;
}

/* ---- this process ---- */

static void test_not_linked(void)
{
        /* Checked first thing in main(): nothing linked GnuTLS in. */
        g_assert_false(gnutls_mapped_at_start);
}

#define THREADS 8

static gpointer load_thread(gpointer data)
{
        char **error = data;

        return GINT_TO_POINTER(vfmig_tls_lib_load(error));
}

static void test_load_concurrent(void)
{
        GThread *th[THREADS];
        char *errors[THREADS] = {};

        for (unsigned i = 0; i < THREADS; i++)
                th[i] = g_thread_new("load", load_thread, &errors[i]);
        for (unsigned i = 0; i < THREADS; i++) {
                g_assert_cmpint(GPOINTER_TO_INT(g_thread_join(th[i])), ==, 0);
                g_assert_null(errors[i]);
        }
        g_assert_true(maps_have(getpid(), GNUTLS_MAPPED));
        g_assert_nonnull(sym_gnutls_init);
        g_assert_nonnull(sym_gnutls_rnd);
        g_assert_nonnull(sym_gnutls_transport_set_push_function);
        g_assert_nonnull(sym_gnutls_check_version(VFMIG_TLS_LIB_MIN_VERSION));
        g_test_message("loaded GnuTLS %s", sym_gnutls_check_version(NULL));
}

static void test_load_idempotent(void)
{
        typeof(sym_gnutls_init) init;
        typeof(sym_gnutls_malloc) mallocp;
        char *error = NULL;
        void *p;

        g_assert_cmpint(vfmig_tls_lib_load(&error), ==, 0);
        g_assert_null(error);
        init = sym_gnutls_init;
        mallocp = sym_gnutls_malloc;
        for (unsigned i = 0; i < 100; i++) {
                g_assert_cmpint(vfmig_tls_lib_load(NULL), ==, 0);
                g_assert_cmpint(vfmig_tls_lib_require(), ==, 0);
        }
        g_assert_true(sym_gnutls_init == init);
        g_assert_true(sym_gnutls_malloc == mallocp);

        /* gnutls_malloc is GnuTLS's variable holding its allocator:
         * sym_gnutls_malloc points to that variable, which holds malloc()
         * unless someone set other allocators. */
        g_assert_true(*sym_gnutls_malloc == malloc);
        p = (*sym_gnutls_malloc)(64);
        g_assert_nonnull(p);
        memset(p, 0xa5, 64);
        free(p);
}

/* A TLS connection through the loaded library: the PSK from a new ticket,
 * the handshake (the server's PSK callback hands GnuTLS a key allocated
 * with (*sym_gnutls_malloc), which GnuTLS frees), bytes both ways. */
static void test_tls_connection(void)
{
        g_autoptr(VfmigStreamConn) c = NULL, s = NULL;
        g_autofree char *ticket = NULL;
        static const char msg[] = "loaded on first use";
        VfmigStreamConn *conns[2];
        int sv[2], done[2] = { -EAGAIN, -EAGAIN };
        char buf[64];
        size_t got = 0;
        ssize_t k;
        VfmigPsk psk;

        g_assert_cmpint(vfmig_ticket_new(&ticket), ==, 0);
        g_assert_cmpint(vfmig_psk_derive(ticket, "tls-lib", &psk), ==, 0);
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), ==, 0);
        g_assert_cmpint(vfmig_stream_conn_new_tls(sv[0], false, &psk, &c), ==, 0);
        g_assert_cmpint(vfmig_stream_conn_new_tls(sv[1], true, &psk, &s), ==, 0);
        vfmig_psk_clear(&psk);
        conns[0] = c;
        conns[1] = s;

        for (unsigned round = 0; round < 2000 && (done[0] < 0 || done[1] < 0); round++) {
                struct pollfd p[2];
                nfds_t n = 0;

                for (unsigned i = 0; i < 2; i++) {
                        if (done[i] == 0)
                                continue;
                        done[i] = vfmig_stream_conn_handshake(conns[i]);
                        if (done[i] != 0 && done[i] != -EAGAIN)
                                g_error("handshake (%s): %s", i ? "server" : "client",
                                        vfmig_stream_conn_error(conns[i]));
                        if (done[i] == -EAGAIN)
                                p[n++] = (struct pollfd) { .fd = vfmig_stream_conn_fd(conns[i]),
                                                           .events = vfmig_stream_conn_events(conns[i]) };
                }
                if (n == 2)     /* both wait for the other: one of them gets something */
                        (void) poll(p, n, 1000);
        }
        g_assert_cmpint(done[0], ==, 0);
        g_assert_cmpint(done[1], ==, 0);
        g_assert_nonnull(vfmig_stream_conn_cipher(c));

        g_assert_cmpint(vfmig_stream_conn_send(c, msg, sizeof(msg)), ==, (ssize_t) sizeof(msg));
        for (unsigned round = 0; round < 1000 && vfmig_stream_conn_flush(c) == -EAGAIN; round++)
                g_usleep(1000);
        for (unsigned round = 0; round < 1000 && got < sizeof(msg); round++) {
                k = vfmig_stream_conn_recv(s, buf + got, sizeof(buf) - got);
                if (k == -EAGAIN) {
                        struct pollfd p = { .fd = vfmig_stream_conn_fd(s), .events = POLLIN };

                        (void) poll(&p, 1, 1000);
                        continue;
                }
                g_assert_cmpint(k, >, 0);
                got += (size_t) k;
        }
        g_assert_cmpmem(buf, got, msg, sizeof(msg));
}

/* ---- the failure reports (vfmig_tls_lib_load_from(): nothing is kept) ---- */

#define NO_SUCH_LIBRARY "libvfmig-test-no-such-library.so.0"

static void test_missing_library(void)
{
        typeof(sym_gnutls_init) init = sym_gnutls_init;
        g_autofree char *e1 = NULL, *e2 = NULL;

        g_assert_cmpint(vfmig_tls_lib_load_from(NO_SUCH_LIBRARY, &e1), ==, -ELIBACC);
        g_test_message("%s", e1);
        g_assert_nonnull(strstr(e1, "Cannot load " NO_SUCH_LIBRARY " (GnuTLS)"));
        g_assert_nonnull(strstr(e1, "cannot open shared object file"));
        g_assert_cmpint(vfmig_tls_lib_load_from(NO_SUCH_LIBRARY, &e2), ==, -ELIBACC);
        g_assert_cmpstr(e1, ==, e2);
        g_assert_cmpint(vfmig_tls_lib_load_from(NO_SUCH_LIBRARY, NULL), ==, -ELIBACC);

        /* The loaded library is left alone. */
        g_assert_true(sym_gnutls_init == init);
        g_assert_cmpint(vfmig_tls_lib_load(NULL), ==, 0);
}

static void test_missing_symbol(void)
{
        g_autofree char *error = NULL;

        /* A library that is there and has none of GnuTLS's symbols. */
        g_assert_cmpint(vfmig_tls_lib_load_from("libc.so.6", &error), ==, -ELIBACC);
        g_test_message("%s", error);
        g_assert_nonnull(strstr(error, "libc.so.6 has no symbol gnutls_aead_cipher_decrypt, "));
        g_assert_nonnull(strstr(error, "GnuTLS " VFMIG_TLS_LIB_MIN_VERSION " or newer"));
        g_assert_cmpint(vfmig_tls_lib_load(NULL), ==, 0);
}

static void test_load_from_gnutls(void)
{
        g_autofree char *error = NULL;

        g_assert_cmpint(vfmig_tls_lib_load_from(VFMIG_TLS_LIB_SONAME, &error), ==, 0);
        g_assert_null(error);
}

/* ---- the built vfmigd ---- */

static const char *vfmigd_or_skip(void)
{
        const char *v = g_getenv("VFMIG_TEST_VFMIGD");

        if (!v || !*v)
                g_test_skip("VFMIG_TEST_VFMIGD is not set (run through meson test)");
        return v && *v ? v : NULL;
}

/* vfmigd ARG under LD_DEBUG=libs: every library the dynamic linker loads,
 * at start or by dlopen(), is in its stderr. */
static void check_vfmigd_libs(const char *arg)
{
        const char *vfmigd = vfmigd_or_skip();
        g_auto(GStrv) env = NULL;
        g_autofree char *out = NULL, *err = NULL;
        g_autoptr(GError) error = NULL;
        int status;

        if (!vfmigd)
                return;
        env = g_environ_setenv(g_get_environ(), "LD_DEBUG", "libs", true);
        env = g_environ_unsetenv(env, "LD_DEBUG_OUTPUT");
        g_assert_true(g_spawn_sync(NULL, (char *[]) { (char *) vfmigd, (char *) arg, NULL }, env, 0, NULL, NULL,
                                   &out, &err, &status, &error));
        g_assert_no_error(error);
        g_assert_true(g_spawn_check_wait_status(status, NULL));
        g_assert_cmpuint(strlen(out), >, 0);
        /* The check sees the libraries: glib is one of them ... */
        g_assert_nonnull(strstr(err, "find library=libglib-2.0.so"));
        /* ... and GnuTLS is none of them. */
        if (strstr(err, "libgnutls"))
                g_error("vfmigd %s loads GnuTLS:\n%s", arg, err);
}

static void test_vfmigd_version(void)
{
        check_vfmigd_libs("--version");
}

static void test_vfmigd_introspect(void)
{
        check_vfmigd_libs("--introspect");
}

/* Read from fd into buf until buf holds needle: buf->str then, or NULL at
 * the end of fd, an error or after timeout_ms. */
static char *read_until(int fd, GString *buf, const char *needle, int timeout_ms)
{
        gint64 deadline = g_get_monotonic_time() + (gint64) timeout_ms * 1000;

        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                gint64 left = (deadline - g_get_monotonic_time()) / 1000;
                char chunk[4096];
                ssize_t k;

                if (strstr(buf->str, needle))
                        return buf->str;
                if (left <= 0 || poll(&p, 1, (int) left) <= 0)
                        return NULL;
                k = read(fd, chunk, sizeof(chunk));
                if (k <= 0)
                        return NULL;
                g_string_append_len(buf, chunk, k);
        }
}

static void remove_tree(const char *dir)
{
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *name;

        while (d && (name = g_dir_read_name(d))) {
                g_autofree char *path = g_build_filename(dir, name, NULL);

                if (g_file_test(path, G_FILE_TEST_IS_DIR) && !g_file_test(path, G_FILE_TEST_IS_SYMLINK))
                        remove_tree(path);
                else
                        (void) g_unlink(path);
        }
        (void) g_rmdir(dir);
}

static void stop(GPid pid)
{
        int status;

        (void) kill(pid, SIGTERM);
        for (unsigned i = 0; i < 200; i++) {
                if (waitpid(pid, &status, WNOHANG) == pid)
                        return;
                g_usleep(50 * 1000);
        }
        (void) kill(pid, SIGKILL);
        (void) waitpid(pid, &status, 0);
}

/* vfmigd serving a simulated host on a private system bus (the bus
 * tests' configuration): up and serving, with no GnuTLS mapped. */
static void test_vfmigd_serving(void)
{
        const char *vfmigd = vfmigd_or_skip(), *conf = g_getenv("VFMIG_TEST_BUS_CONFIG");
        const char *source = g_getenv("VFMIG_TEST_SOURCE_ROOT");
        g_autofree char *dbus_daemon = g_find_program_in_path("dbus-daemon");
        g_autofree char *state = NULL, *conf_arg = NULL, *host = NULL, *rules = NULL, *address = NULL;
        g_autoptr(GString) bus_out = g_string_new(NULL), log = g_string_new(NULL);
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) env = NULL;
        GPid bus = 0, daemon = 0;
        int bus_fd = -1, log_fd = -1;
        bool serving, gnutls_mapped, glib_mapped;

        if (!vfmigd)
                return;
        if (!conf || !source || !dbus_daemon) {
                g_test_skip("needs dbus-daemon, VFMIG_TEST_BUS_CONFIG and VFMIG_TEST_SOURCE_ROOT");
                return;
        }
        state = g_dir_make_tmp("vfmig-tls-lib-XXXXXX", &error);
        g_assert_no_error(error);
        conf_arg = g_strconcat("--config-file=", conf, NULL);
        g_assert_true(g_spawn_async_with_pipes(NULL, (char *[]) { dbus_daemon, conf_arg, "--nofork", "--print-address", NULL },
                                               NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &bus, NULL, &bus_fd,
                                               NULL, &error));
        g_assert_no_error(error);
        g_assert_nonnull(read_until(bus_fd, bus_out, "\n", 10000));
        address = g_strndup(bus_out->str, strcspn(bus_out->str, "\n"));

        host = g_build_filename(source, "data", "sim", "host-a.json", NULL);
        rules = g_build_filename(source, "data", "compat.d", NULL);
        env = g_environ_setenv(g_get_environ(), "DBUS_SYSTEM_BUS_ADDRESS", address, true);
        env = g_environ_setenv(env, "STATE_DIRECTORY", state, true);
        env = g_environ_unsetenv(env, "CACHE_DIRECTORY");
        env = g_environ_unsetenv(env, "JOURNAL_STREAM");
        g_assert_true(g_spawn_async_with_pipes(NULL, (char *[]) { (char *) vfmigd, "--simulate", host,
                                                                 "--config", "/nonexistent/vfmigd.conf",
                                                                 "--rules", rules,
                                                                 "--admin-rules", "/nonexistent/compat.d", NULL },
                                               env, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &daemon, NULL, NULL,
                                               &log_fd, &error));
        g_assert_no_error(error);

        /* "vfmigd 0.1.0 serving org.vfmig1 ...": the start is over. */
        serving = read_until(log_fd, log, " serving ", 60000) != NULL;
        gnutls_mapped = serving && maps_have(daemon, GNUTLS_MAPPED);
        glib_mapped = serving && maps_have(daemon, "/libglib-2.0.so");
        stop(daemon);
        stop(bus);
        close(log_fd);
        close(bus_fd);
        remove_tree(state);

        g_test_message("vfmigd said:\n%s", log->str);
        g_assert_true(serving);
        g_assert_true(glib_mapped);     /* the check sees vfmigd's libraries */
        g_assert_false(gnutls_mapped);
}

int main(int argc, char **argv)
{
        /* Before anything could load it. */
        gnutls_mapped_at_start = maps_have(getpid(), GNUTLS_MAPPED);

        g_test_init(&argc, &argv, NULL);
        /* In this order: the first ones see GnuTLS not loaded yet. */
        g_test_add_func("/stream/tls-lib/not-linked", test_not_linked);
        g_test_add_func("/stream/tls-lib/load-concurrent", test_load_concurrent);
        g_test_add_func("/stream/tls-lib/load-idempotent", test_load_idempotent);
        g_test_add_func("/stream/tls-lib/tls-connection", test_tls_connection);
        g_test_add_func("/stream/tls-lib/missing-library", test_missing_library);
        g_test_add_func("/stream/tls-lib/missing-symbol", test_missing_symbol);
        g_test_add_func("/stream/tls-lib/load-from-gnutls", test_load_from_gnutls);
        g_test_add_func("/stream/tls-lib/vfmigd-version", test_vfmigd_version);
        g_test_add_func("/stream/tls-lib/vfmigd-introspect", test_vfmigd_introspect);
        g_test_add_func("/stream/tls-lib/vfmigd-serving", test_vfmigd_serving);
        return g_test_run();
}
