/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * stream-conn.h — the byte pipe a stream travels on: a connected stream
 * socket, in plaintext or under TLS 1.3 with a PSK (stream-ticket.h).
 *
 * Everything is non-blocking and fits sd-event: a call that would block
 * returns -EAGAIN; then wait for vfmig_stream_conn_events() (POLLIN/POLLOUT)
 * on vfmig_stream_conn_fd() and call again.  After -EAGAIN from send, call
 * send again with the same bytes (TLS requires it).  TLS keeps a bounded
 * amount of encrypted output (up to 1 MiB) that the socket did not take yet:
 * call vfmig_stream_conn_flush() before waiting for the peer with nothing
 * more to send (vfmig_stream_conn_shutdown() flushes too).  The connection
 * owns its fd.  Errors are negative errnos with a message (vfmig_stream_conn_error()):
 *   -EACCES      TLS handshake refused: wrong key / unknown PSK identity
 *   -EPROTO      the peer does not speak TLS (or broke the protocol)
 *   -ECONNRESET, -EPIPE, ...  the socket's own errors
 * Not thread-safe.  No sd-bus.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "stream-ticket.h"

/* The TLS priority string: TLS 1.3 only, PSK key exchange only (ECDHE-PSK
 * or DHE-PSK for forward secrecy, plain PSK last), AEAD ciphers, the fastest
 * first: AES-128-GCM where the CPU has AES instructions (the client's order
 * decides), ChaCha20-Poly1305 first where it has not (..._NO_AES). */
#define VFMIG_STREAM_TLS_PRIORITY_KX "NONE:+VERS-TLS1.3:+ECDHE-PSK:+DHE-PSK:+PSK:"
#define VFMIG_STREAM_TLS_PRIORITY_REST \
        ":+AEAD:+SHA256:+SHA384:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-FFDHE2048:+SIGN-ALL:+CTYPE-ALL:+COMP-NULL"
#define VFMIG_STREAM_TLS_PRIORITY VFMIG_STREAM_TLS_PRIORITY_KX \
        "+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305" VFMIG_STREAM_TLS_PRIORITY_REST
#define VFMIG_STREAM_TLS_PRIORITY_NO_AES VFMIG_STREAM_TLS_PRIORITY_KX \
        "+CHACHA20-POLY1305:+AES-128-GCM:+AES-256-GCM" VFMIG_STREAM_TLS_PRIORITY_REST

/* The priority string this CPU gets (one of the two above). */
const char *vfmig_stream_tls_priority(void);

typedef struct VfmigStreamConn VfmigStreamConn;

/* ---- fds handed in (DESIGN §6: untrusted) ---- */

typedef struct VfmigStreamFdInfo {
        int family;             /* AF_UNIX, AF_INET, AF_INET6 */
        bool have_peer_cred;    /* AF_UNIX: SO_PEERCRED below is valid */
        pid_t peer_pid;
        uid_t peer_uid;
        gid_t peer_gid;
} VfmigStreamFdInfo;

/*
 * Check an fd handed in from outside and make it O_NONBLOCK (and FD_CLOEXEC):
 * it must be a socket (-ENOTSOCK: a pipe, a regular file, a tty ...), of type
 * SOCK_STREAM (-ESOCKTNOSUPPORT: UDP, datagram or seqpacket), of family
 * AF_UNIX/AF_INET/AF_INET6 (-EAFNOSUPPORT), and connected (-ENOTCONN).  For
 * AF_UNIX the peer credentials are returned; the policy on them is the
 * caller's.  *ret_error (may be NULL) gets a message on failure.
 */
int vfmig_stream_fd_check(int fd, VfmigStreamFdInfo *ret_info, char **ret_error);

/* ---- TCP ---- */

/* Parse "HOST:PORT" / "[V6]:PORT" with a numeric host (names must be resolved
 * by the caller: DNS would block the loop).  -EINVAL when malformed. */
int vfmig_stream_parse_endpoint(const char *endpoint, struct sockaddr_storage *ret, socklen_t *ret_len);

/* A non-blocking listening TCP socket on address (numeric; NULL = "::" dual
 * stack, port 0 = any).  *ret_port gets the bound port. */
int vfmig_stream_tcp_listen(const char *address, uint16_t port, int *ret_fd, uint16_t *ret_port);

/* Accept one connection (non-blocking, close-on-exec): the fd, or -EAGAIN. */
int vfmig_stream_tcp_accept(int listen_fd);

/* Start a non-blocking connect to endpoint; the fd is returned at once and
 * the connection completes during vfmig_stream_conn_handshake(). */
int vfmig_stream_tcp_connect(const char *endpoint, int *ret_fd);

/* ---- connections ---- */

/* Plaintext over fd (taken).  Use only when explicitly asked for. */
int vfmig_stream_conn_new_plain(int fd, VfmigStreamConn **ret);

/* TLS 1.3 PSK over fd (taken), as client (the source, which connects) or
 * server (the target).  The server accepts only psk->identity.  The first
 * one loads GnuTLS (tls-lib.h): -ELIBACC / -EOPNOTSUPP when that fails (the
 * reason is logged; fd is closed, as on every failure). */
int vfmig_stream_conn_new_tls(int fd, bool server, const VfmigPsk *psk, VfmigStreamConn **ret);

void vfmig_stream_conn_free(VfmigStreamConn *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfmigStreamConn, vfmig_stream_conn_free)

/* Finish connecting (TCP connect in progress, TLS handshake): 0 when done
 * (at once for a connected plaintext socket), -EAGAIN, or an error. */
int vfmig_stream_conn_handshake(VfmigStreamConn *c);

/* n > 0 bytes: the number sent (> 0), or -EAGAIN / an error.  TLS: the
 * number taken (encrypted), possibly still queued for the socket. */
ssize_t vfmig_stream_conn_send(VfmigStreamConn *c, const void *buf, size_t n);

/* Send what the connection queued: 0 when nothing is left, -EAGAIN (wait
 * for POLLOUT), or an error.  At once 0 in plaintext, which queues nothing. */
int vfmig_stream_conn_flush(VfmigStreamConn *c);

/* n > 0: bytes received (> 0), 0 at a clean end (TLS: close_notify; plain:
 * EOF), -EAGAIN, or an error (TLS: an EOF without close_notify is -ECONNRESET).
 * TLS fills buf with as many records as have arrived. */
ssize_t vfmig_stream_conn_recv(VfmigStreamConn *c, void *buf, size_t n);

/* Whether received bytes are waiting inside the connection (read ahead;
 * TLS: also decrypted): then recv may succeed without the fd being
 * readable. */
bool vfmig_stream_conn_pending(VfmigStreamConn *c);

/* End our direction (TLS close_notify, then SHUT_WR): 0, -EAGAIN, or error. */
int vfmig_stream_conn_shutdown(VfmigStreamConn *c);

/* POLLIN and/or POLLOUT: what the last -EAGAIN was waiting for. */
short vfmig_stream_conn_events(VfmigStreamConn *c);

int vfmig_stream_conn_fd(VfmigStreamConn *c);
bool vfmig_stream_conn_is_tls(VfmigStreamConn *c);

/* The message of the last error (NULL when none). */
const char *vfmig_stream_conn_error(VfmigStreamConn *c);

/* TLS after the handshake: the negotiated cipher, e.g. "AES-128-GCM"; NULL
 * in plaintext or before. */
const char *vfmig_stream_conn_cipher(VfmigStreamConn *c);
