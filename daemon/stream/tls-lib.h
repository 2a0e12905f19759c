/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tls-lib.h — GnuTLS, loaded when the stream first needs it.
 *
 * Loading libgnutls and its eight libraries (p11-kit, nettle, hogweed, gmp,
 * idn2, unistring, tasn1) and running its constructor costs every start of
 * vfmigd about 3 ms, and most runs use no TLS before their first migration.
 * So vfmigd does not link GnuTLS: the stream code includes its headers only
 * for the types and constants, and calls every GnuTLS function through the
 * sym_ pointer of the same name below, which vfmig_tls_lib_load() fills from
 * dlopen("libgnutls.so.30") the first time it is called.
 *
 * Every public entry point of the stream code that may reach GnuTLS calls
 * vfmig_tls_lib_load() first (directly or through vfmig_tls_lib_require());
 * code that runs only on a TLS object made there (a VfmigStreamConn with a
 * session) may use the pointers without it.
 *
 * To use another GnuTLS function: add it to VFMIG_TLS_LIB_SYMBOLS, which
 * declares sym_<name> and has it resolved; call it as sym_<name>(...).
 */
#pragma once

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

/* The library vfmigd loads: GnuTLS 3.x (ABI 30).  Only a test build of the
 * stream sources defines another one (tests/stream/meson.build). */
#ifndef VFMIG_TLS_LIB_SONAME
#define VFMIG_TLS_LIB_SONAME "libgnutls.so.30"
#endif
/* The oldest GnuTLS the stream code works with (gnutls_check_version()). */
#define VFMIG_TLS_LIB_MIN_VERSION "3.7.0"

/*
 * Every GnuTLS symbol the stream code uses.  All are functions except
 * gnutls_malloc: GnuTLS exports it as a variable holding its allocator
 * (extern gnutls_alloc_function gnutls_malloc), so dlsym() returns the
 * address of that variable, and sym_gnutls_malloc, of type
 * typeof(gnutls_malloc) *, points to it: call (*sym_gnutls_malloc)(n), which
 * reads the variable at the time of the call, as GnuTLS's own code does.
 */
#define VFMIG_TLS_LIB_SYMBOLS(X)                                \
        X(gnutls_aead_cipher_decrypt)                           \
        X(gnutls_aead_cipher_deinit)                            \
        X(gnutls_aead_cipher_encryptv)                          \
        X(gnutls_aead_cipher_init)                              \
        X(gnutls_alert_get)                                     \
        X(gnutls_alert_get_name)                                \
        X(gnutls_alert_get_strname)                             \
        X(gnutls_alert_send_appropriate)                        \
        X(gnutls_check_version)                                 \
        X(gnutls_cipher_get)                                    \
        X(gnutls_cipher_get_name)                               \
        X(gnutls_cipher_get_tag_size)                           \
        X(gnutls_credentials_set)                               \
        X(gnutls_deinit)                                        \
        X(gnutls_handshake)                                     \
        X(gnutls_handshake_set_timeout)                         \
        X(gnutls_hkdf_expand)                                   \
        X(gnutls_hkdf_extract)                                  \
        X(gnutls_init)                                          \
        X(gnutls_malloc)                                        \
        X(gnutls_priority_set_direct)                           \
        X(gnutls_psk_allocate_client_credentials)               \
        X(gnutls_psk_allocate_server_credentials)               \
        X(gnutls_psk_free_client_credentials)                   \
        X(gnutls_psk_free_server_credentials)                   \
        X(gnutls_psk_set_client_credentials)                    \
        X(gnutls_psk_set_server_credentials_function2)          \
        X(gnutls_record_check_pending)                          \
        X(gnutls_record_get_direction)                          \
        X(gnutls_record_get_state)                              \
        X(gnutls_rnd)                                           \
        X(gnutls_session_get_ptr)                               \
        X(gnutls_session_set_ptr)                               \
        X(gnutls_strerror)                                      \
        X(gnutls_transport_set_errno)                           \
        X(gnutls_transport_set_ptr)                             \
        X(gnutls_transport_set_pull_function)                   \
        X(gnutls_transport_set_push_function)

/* extern typeof(gnutls_init) *sym_gnutls_init; ... for each of them.  NULL
 * until vfmig_tls_lib_load() succeeded, then never changed. */
#define VFMIG_TLS_LIB_DECLARE(name) extern typeof(name) *sym_##name;
VFMIG_TLS_LIB_SYMBOLS(VFMIG_TLS_LIB_DECLARE)
#undef VFMIG_TLS_LIB_DECLARE

/*
 * Load GnuTLS and resolve every symbol above: 0 when all are there (at once
 * after the first success).  Thread-safe; only the first call tries, and its
 * outcome is kept: a failure is returned the same way by every later call,
 * with the same message in *error (a new string; error may be NULL):
 *   -ELIBACC      libgnutls.so.30 cannot be loaded, or lacks a symbol
 *                 (the message names the library and the dlerror() / symbol)
 *   -EOPNOTSUPP   it is older than 3.7.0 (the message gives its version)
 */
int vfmig_tls_lib_load(char **error);

/*
 * vfmig_tls_lib_load() for an entry point that reports errors only as a
 * negative errno: on failure the message is logged (g_warning(), once per
 * process) and the errno returned.
 */
int vfmig_tls_lib_require(void);

/*
 * Build-internal, for the tests of the failure reports: what the first
 * vfmig_tls_lib_load() does, with soname instead of libgnutls.so.30, but
 * nothing is kept: each call tries again, and the sym_ pointers are left
 * alone (a library that was loaded stays mapped; its handle is closed).
 * Same return values and messages.
 */
int vfmig_tls_lib_load_from(const char *soname, char **error);
