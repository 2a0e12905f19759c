/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* tls-lib.c — GnuTLS through dlopen() on first use (see tls-lib.h). */
#include <dlfcn.h>
#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <stdarg.h>

#include "tls-lib.h"

/* typeof(gnutls_init) *sym_gnutls_init = NULL; ... */
#define DEFINE_SYM(name) typeof(name) *sym_##name = NULL;
VFMIG_TLS_LIB_SYMBOLS(DEFINE_SYM)
#undef DEFINE_SYM

/* What one try resolved; it becomes the sym_ pointers only when complete. */
typedef struct TlsLibTable {
#define TABLE_ENTRY(name) typeof(name) *name;
        VFMIG_TLS_LIB_SYMBOLS(TABLE_ENTRY)
#undef TABLE_ENTRY
} TlsLibTable;

static int fail(char **error, int r, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int fail(char **error, int r, const char *fmt, ...)
{
        va_list ap;

        if (error) {
                g_free(*error);
                va_start(ap, fmt);
                *error = g_strdup_vprintf(fmt, ap);
                va_end(ap);
        }
        return r;
}

/*
 * dlopen() soname and look up every symbol into *t: 0, or a negative errno
 * with the reason in *error.  Keeps no state of its own; on success the
 * handle is returned in *ret_dl.  RTLD_NODELETE: GnuTLS's constructor ran
 * and it may have registered handlers, so the code must never be unmapped,
 * even when a handle is closed.
 */
static int tls_lib_open(const char *soname, TlsLibTable *t, void **ret_dl, char **error)
{
        const char *e, *have;
        void *dl;
        int r;

        (void) dlerror();
        dl = dlopen(soname, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
        if (!dl) {
                e = dlerror();
                return fail(error, -ELIBACC, "Cannot load %s (GnuTLS), which TLS migration streams need: %s",
                            soname, e ? e : "dlopen() failed");
        }

#define RESOLVE(name)                                                                           \
        do {                                                                                    \
                (void) dlerror();                                                               \
                t->name = (typeof(name) *) dlsym(dl, #name);                                    \
                if (!t->name) {                                                                 \
                        e = dlerror();                                                          \
                        r = fail(error, -ELIBACC, "%s has no symbol %s, which TLS migration "   \
                                 "streams need (GnuTLS %s or newer): %s", soname, #name,        \
                                 VFMIG_TLS_LIB_MIN_VERSION, e ? e : "its address is NULL");     \
                        goto close_lib;                                                         \
                }                                                                               \
        } while (0);
        VFMIG_TLS_LIB_SYMBOLS(RESOLVE)
#undef RESOLVE

        if (!t->gnutls_check_version(VFMIG_TLS_LIB_MIN_VERSION)) {
                have = t->gnutls_check_version(NULL);
                r = fail(error, -EOPNOTSUPP, "%s is GnuTLS %s, TLS migration streams need GnuTLS %s or newer",
                         soname, have ? have : "(of unknown version)", VFMIG_TLS_LIB_MIN_VERSION);
                goto close_lib;
        }
        *ret_dl = dl;
        return 0;

close_lib:
        *t = (TlsLibTable) {};
        (void) dlclose(dl);
        return r;
}

static pthread_once_t tls_lib_once = PTHREAD_ONCE_INIT;
static int tls_lib_result;
static char *tls_lib_error;     /* the message of a failure, kept for every later call */
static void *tls_lib_dl;        /* never closed */

static void tls_lib_load_once(void)
{
        TlsLibTable t = {};

        tls_lib_result = tls_lib_open(VFMIG_TLS_LIB_SONAME, &t, &tls_lib_dl, &tls_lib_error);
        if (tls_lib_result < 0)
                return;
#define PUBLISH(name) sym_##name = t.name;
        VFMIG_TLS_LIB_SYMBOLS(PUBLISH)
#undef PUBLISH
}

int vfmig_tls_lib_load(char **error)
{
        /* pthread_once() orders the stores above before every return here,
         * in any thread: the sym_ pointers need no other synchronisation. */
        int r = pthread_once(&tls_lib_once, tls_lib_load_once);

        if (r != 0)
                return fail(error, -r, "Cannot load %s (GnuTLS): pthread_once: %s", VFMIG_TLS_LIB_SONAME,
                            g_strerror(r));
        if (tls_lib_result < 0)
                return fail(error, tls_lib_result, "%s", tls_lib_error);
        return 0;
}

int vfmig_tls_lib_require(void)
{
        static gint warned;
        g_autofree char *error = NULL;
        int r;

        r = vfmig_tls_lib_load(&error);
        if (r < 0 && g_atomic_int_compare_and_exchange(&warned, 0, 1))
                g_warning("%s", error);
        return r;
}

int vfmig_tls_lib_load_from(const char *soname, char **error)
{
        TlsLibTable t = {};
        void *dl = NULL;
        int r;

        r = tls_lib_open(soname, &t, &dl, error);
        if (r < 0)
                return r;
        (void) dlclose(dl);
        return 0;
}
