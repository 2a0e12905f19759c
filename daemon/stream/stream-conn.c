/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* stream-conn.c — plaintext and TLS 1.3 PSK connections, fd checks, TCP. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "stream-conn.h"
#include "tls-lib.h"

/*
 * TLS moves bulk data in records of 16 KiB.  Handing each record to the
 * socket on its own costs a system call per record on the way out and two
 * (record header, then body) on the way in, which costs more than the
 * cipher.  So the TLS transport functions are ours: encrypted records
 * collect in an output buffer that goes to the socket in one send() when it
 * is full or the caller's bytes are all encrypted, and receiving reads ahead
 * up to a buffer's worth of ciphertext in one recv() and serves GnuTLS's
 * reads from it.  Fewer, larger socket calls also mean fewer wake-ups of
 * the peer, which cost more than the copies on a virtual machine.  Each
 * buffer starts small (handshake, the answer) and grows to TLS_BUF_MAX when
 * bulk data flows; memory stays bounded.
 */
#define TLS_BUF_MIN             (64u * 1024u)
#define TLS_BUF_MAX             (1024u * 1024u)
#define TLS_RECORD_WIRE_MAX     (16384u + 256u + 16u + 5u + 1u)  /* header, inner type, padding, tag */

/*
 * After the handshake the records are ours.  GnuTLS's TLS 1.3 record layer
 * moves every byte through buffers of its own on each side (bench-stream:
 * about a tenth of the CPU time per GiB, both sides, went with them).
 * GnuTLS exports the traffic keys of a
 * finished handshake for offloading the record layer (gnutls_record_get_state,
 * what kernel TLS uses); with them the connection seals each record from the
 * caller's buffer straight into its output buffer, and opens it from its
 * input buffer straight into the caller's (in place, then copied, only when
 * the caller asks for less than the record holds), with GnuTLS's AEAD
 * cipher: the same cipher code, no other copy.  The records are plain TLS
 * 1.3 records (RFC 8446 §5.2: outer type application_data, inner content
 * type, nonce = IV xor sequence number, the record header as additional
 * data), so any TLS 1.3
 * peer reads and writes them; a test checks both directions against GnuTLS's
 * own record layer.  Post-handshake messages are not taken: without session
 * tickets (GNUTLS_NO_TICKETS) the only one left is KeyUpdate, which our peer
 * never sends; instead a connection seals at most TLS_RECORDS_MAX records, the
 * AES-GCM limit of RFC 8446 §5.5 rounded down (256 GiB in full records).
 */
#define TLS_TAG                 16u
#define TLS_NONCE               12u
#define TLS_HEADER              5u
#define TLS_PLAINTEXT_MAX       16384u
#define TLS_CIPHERTEXT_MAX      (TLS_PLAINTEXT_MAX + 256u)
#define TLS_RECORDS_MAX         (UINT64_C(1) << 24)
#define TLS_CT_ALERT            21u
#define TLS_CT_HANDSHAKE        22u
#define TLS_CT_APPLICATION_DATA 23u

typedef struct TlsKeys {
        gnutls_aead_cipher_hd_t aead;
        uint8_t iv[TLS_NONCE];
        uint64_t seq;
} TlsKeys;

struct VfmigStreamConn {
        int fd;
        bool tls;
        bool server;
        bool connected;         /* the socket is connected (TCP connect finished) */
        bool handshaken;
        bool unknown_identity;  /* server: the client offered another PSK identity */
        bool bye_sent;
        bool peer_closed;       /* TLS: close_notify received */
        TlsKeys wr, rd;         /* TLS: traffic keys of each direction, once handshaken */
        size_t poff, pend;      /* TLS: opened plaintext ibuf[poff, pend) not yet handed out */
        int recv_errno;         /* TLS: what stopped receiving (sticky; the message is in error) */
        bool end_deferred;      /* TLS: the end or that error is known, not yet returned */
        short events;
        gnutls_session_t session;
        gnutls_psk_client_credentials_t ccred;
        gnutls_psk_server_credentials_t scred;
        VfmigPsk psk;

        uint8_t *obuf;          /* TLS: encrypted bytes [ooff, olen) not yet sent */
        size_t olen, ooff, osize;
        uint8_t *ibuf;          /* bytes [ioff, ilen) read ahead (TLS: ciphertext) */
        size_t ilen, ioff, isize;
        size_t last_fill;       /* bytes the last recv() brought */
        int send_errno;         /* the socket error that stopped sending, once */

        char *error;
};

static int set_error(char **where, int r, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int set_error(char **where, int r, const char *fmt, ...)
{
        va_list ap;

        if (where) {
                g_free(*where);
                va_start(ap, fmt);
                *where = g_strdup_vprintf(fmt, ap);
                va_end(ap);
        }
        return r;
}

static const char *file_kind(mode_t m)
{
        if (S_ISREG(m))
                return "a regular file";
        if (S_ISFIFO(m))
                return "a pipe or FIFO";
        if (S_ISCHR(m))
                return "a character device";
        if (S_ISBLK(m))
                return "a block device";
        if (S_ISDIR(m))
                return "a directory";
        return "not a socket";
}

int vfmig_stream_fd_check(int fd, VfmigStreamFdInfo *ret_info, char **ret_error)
{
        VfmigStreamFdInfo info = {};
        struct sockaddr_storage peer;
        socklen_t len;
        struct stat st;
        int type = 0, family = 0, fl;

        if (fd < 0)
                return set_error(ret_error, -EBADF, "no file descriptor");
        if (fstat(fd, &st) < 0)
                return set_error(ret_error, -errno, "cannot fstat the file descriptor: %s", g_strerror(errno));
        if (!S_ISSOCK(st.st_mode))
                return set_error(ret_error, -ENOTSOCK, "the file descriptor is %s, a connected stream socket is needed",
                                 file_kind(st.st_mode));
        len = sizeof(type);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
                return set_error(ret_error, -errno, "cannot read the socket type: %s", g_strerror(errno));
        if (type != SOCK_STREAM)
                return set_error(ret_error, -ESOCKTNOSUPPORT,
                                 "the socket is a %s socket, a stream socket (TCP or AF_UNIX stream) is needed",
                                 type == SOCK_DGRAM ? "datagram (UDP)" : type == SOCK_SEQPACKET ? "seqpacket" : "non-stream");
        len = sizeof(family);
        if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) < 0)
                return set_error(ret_error, -errno, "cannot read the socket family: %s", g_strerror(errno));
        if (family != AF_UNIX && family != AF_INET && family != AF_INET6)
                return set_error(ret_error, -EAFNOSUPPORT, "socket family %d is not AF_UNIX, AF_INET or AF_INET6", family);
        len = sizeof(peer);
        if (getpeername(fd, (struct sockaddr *) &peer, &len) < 0)
                return set_error(ret_error, -errno, "the socket has no peer: %s", g_strerror(errno));
        info.family = family;
        if (family == AF_UNIX) {
                struct ucred cred;

                len = sizeof(cred);
                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                        return set_error(ret_error, -errno, "cannot read the peer credentials: %s", g_strerror(errno));
                info.have_peer_cred = true;
                info.peer_pid = cred.pid;
                info.peer_uid = cred.uid;
                info.peer_gid = cred.gid;
        }
        fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
            fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                return set_error(ret_error, -errno, "cannot make the socket non-blocking: %s", g_strerror(errno));
        if (ret_info)
                *ret_info = info;
        return 0;
}

int vfmig_stream_parse_endpoint(const char *endpoint, struct sockaddr_storage *ret, socklen_t *ret_len)
{
        struct addrinfo hints = {
                .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
                .ai_socktype = SOCK_STREAM,
        }, *res = NULL;
        g_autofree char *host = NULL;
        const char *colon, *port;
        char *end;
        unsigned long pn;

        if (!endpoint || strlen(endpoint) > 256)
                return -EINVAL;
        if (endpoint[0] == '[') {
                const char *close = strchr(endpoint, ']');

                if (!close || close[1] != ':')
                        return -EINVAL;
                host = g_strndup(endpoint + 1, (gsize) (close - endpoint - 1));
                port = close + 2;
        } else {
                colon = strrchr(endpoint, ':');
                if (!colon || strchr(endpoint, ':') != colon)
                        return -EINVAL;
                host = g_strndup(endpoint, (gsize) (colon - endpoint));
                port = colon + 1;
        }
        errno = 0;
        pn = strtoul(port, &end, 10);
        if (!*port || *end || errno || pn < 1 || pn > 65535 || !g_ascii_isdigit(*port))
                return -EINVAL;
        if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
                return -EINVAL;
        memcpy(ret, res->ai_addr, res->ai_addrlen);
        *ret_len = res->ai_addrlen;
        freeaddrinfo(res);
        return 0;
}

static void set_nodelay(int fd)
{
        int one = 1;

        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int vfmig_stream_tcp_listen(const char *address, uint16_t port, int *ret_fd, uint16_t *ret_port)
{
        struct sockaddr_storage ss = {};
        socklen_t len;
        int fd, one = 1, zero = 0, r;

        if (!address || strchr(address, ':')) {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *) &ss;

                a->sin6_family = AF_INET6;
                a->sin6_port = htons(port);
                if (address && inet_pton(AF_INET6, address, &a->sin6_addr) != 1)
                        return -EINVAL;
                if (!address)
                        a->sin6_addr = in6addr_any;
                len = sizeof(*a);
        } else {
                struct sockaddr_in *a = (struct sockaddr_in *) &ss;

                a->sin_family = AF_INET;
                a->sin_port = htons(port);
                if (inet_pton(AF_INET, address, &a->sin_addr) != 1)
                        return -EINVAL;
                len = sizeof(*a);
        }
        fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (!address)
                (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
        if (bind(fd, (struct sockaddr *) &ss, len) < 0 || listen(fd, 16) < 0)
                goto fail;
        len = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0)
                goto fail;
        *ret_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &ss)->sin6_port
                                                    : ((struct sockaddr_in *) &ss)->sin_port);
        *ret_fd = fd;
        return 0;
fail:
        r = -errno;
        close(fd);
        return r;
}

int vfmig_stream_tcp_accept(int listen_fd)
{
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        set_nodelay(fd);
        return fd;
}

int vfmig_stream_tcp_connect(const char *endpoint, int *ret_fd)
{
        struct sockaddr_storage ss;
        socklen_t len;
        int fd, r;

        r = vfmig_stream_parse_endpoint(endpoint, &ss, &len);
        if (r < 0)
                return r;
        fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        set_nodelay(fd);
        if (connect(fd, (struct sockaddr *) &ss, len) < 0 && errno != EINPROGRESS) {
                r = -errno;
                close(fd);
                return r;
        }
        *ret_fd = fd;
        return 0;
}

/* ---- connections ---- */

/* Send the pending encrypted bytes: 0 when all are out, -EAGAIN, or -errno. */
static int tls_flush_buffer(VfmigStreamConn *c)
{
        while (c->ooff < c->olen) {
                ssize_t k = send(c->fd, c->obuf + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return -EAGAIN;
                        c->send_errno = errno;
                        return -errno;
                }
                c->ooff += (size_t) k;
        }
        c->ooff = c->olen = 0;
        return 0;
}

static ssize_t tls_push(gnutls_transport_ptr_t ptr, const void *data, size_t n)
{
        VfmigStreamConn *c = ptr;
        int r;

        if (c->send_errno) {
                sym_gnutls_transport_set_errno(c->session, c->send_errno);
                return -1;
        }
        if (c->osize - c->olen < n) {
                r = tls_flush_buffer(c);
                if (r < 0 && r != -EAGAIN) {
                        sym_gnutls_transport_set_errno(c->session, -r);
                        return -1;
                }
                if (c->ooff > 0) {      /* make the free space contiguous */
                        memmove(c->obuf, c->obuf + c->ooff, c->olen - c->ooff);
                        c->olen -= c->ooff;
                        c->ooff = 0;
                }
                if (c->osize - c->olen < n) {
                        if (c->olen > 0) {
                                sym_gnutls_transport_set_errno(c->session, EAGAIN);
                                return -1;
                        }
                        /* Larger than the whole buffer (not a record): straight out. */
                        for (;;) {
                                ssize_t k = send(c->fd, data, n, MSG_NOSIGNAL);

                                if (k < 0 && errno == EINTR)
                                        continue;
                                if (k < 0)
                                        sym_gnutls_transport_set_errno(c->session, errno);
                                return k;
                        }
                }
        }
        memcpy(c->obuf + c->olen, data, n);
        c->olen += n;
        return (ssize_t) n;
}

static ssize_t tls_pull(gnutls_transport_ptr_t ptr, void *data, size_t n)
{
        VfmigStreamConn *c = ptr;
        size_t k;

        if (c->ioff == c->ilen) {
                ssize_t got;

                c->ioff = c->ilen = 0;
                if (c->last_fill == c->isize && c->isize < TLS_BUF_MAX) {
                        /* The last read filled the buffer: bulk data, read more at once. */
                        c->isize *= 2;
                        g_free(c->ibuf);
                        c->ibuf = g_malloc(c->isize);
                }
                do
                        got = recv(c->fd, c->ibuf, c->isize, 0);
                while (got < 0 && errno == EINTR);
                if (got < 0) {
                        sym_gnutls_transport_set_errno(c->session, errno);
                        return -1;
                }
                if (got == 0)
                        return 0;
                c->ilen = c->last_fill = (size_t) got;
        }
        k = MIN(n, c->ilen - c->ioff);
        memcpy(data, c->ibuf + c->ioff, k);
        c->ioff += k;
        return (ssize_t) k;
}

const char *vfmig_stream_tls_priority(void)
{
#if defined(__x86_64__) || defined(__i386__)
        /* Without AES-NI and carry-less multiply AES-GCM is slow (and its
         * table code leaks timing): ChaCha20-Poly1305 first then. */
        if (!__builtin_cpu_supports("aes") || !__builtin_cpu_supports("pclmul"))
                return VFMIG_STREAM_TLS_PRIORITY_NO_AES;
#endif
        return VFMIG_STREAM_TLS_PRIORITY;
}

static int psk_server_cb(gnutls_session_t session, const gnutls_datum_t *username, gnutls_datum_t *key)
{
        VfmigStreamConn *c = sym_gnutls_session_get_ptr(session);
        size_t idlen = strlen(c->psk.identity);

        if (username->size != idlen || memcmp(username->data, c->psk.identity, idlen) != 0) {
                c->unknown_identity = true;
                return -1;
        }
        key->data = (*sym_gnutls_malloc)(VFMIG_PSK_KEY_BYTES);    /* GnuTLS frees it */
        if (!key->data)
                return -1;
        memcpy(key->data, c->psk.key, VFMIG_PSK_KEY_BYTES);
        key->size = VFMIG_PSK_KEY_BYTES;
        return 0;
}

static VfmigStreamConn *conn_new(int fd)
{
        VfmigStreamConn *c = g_new0(VfmigStreamConn, 1);

        c->fd = fd;
        return c;
}

int vfmig_stream_conn_new_plain(int fd, VfmigStreamConn **ret)
{
        if (fd < 0)
                return -EBADF;
        *ret = conn_new(fd);
        return 0;
}

int vfmig_stream_conn_new_tls(int fd, bool server, const VfmigPsk *psk, VfmigStreamConn **ret)
{
        g_autoptr(VfmigStreamConn) c = NULL;
        gnutls_datum_t key = { (unsigned char *) psk->key, VFMIG_PSK_KEY_BYTES };
        const char *err_pos = NULL;
        int r;

        if (fd < 0)
                return -EBADF;
        c = conn_new(fd);
        r = vfmig_tls_lib_require();    /* GnuTLS is loaded on the first TLS connection */
        if (r < 0)
                return r;               /* c and its fd are freed, as on every failure below */
        c->tls = true;
        c->server = server;
        c->psk = *psk;

        r = sym_gnutls_init(&c->session, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) |
                            GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL | GNUTLS_NO_TICKETS);
        if (r < 0) {
                c->session = NULL;
                return -ENOMEM;
        }
        sym_gnutls_session_set_ptr(c->session, c);
        r = sym_gnutls_priority_set_direct(c->session, vfmig_stream_tls_priority(), &err_pos);
        if (r < 0)
                return -EINVAL;
        if (server) {
                if (sym_gnutls_psk_allocate_server_credentials(&c->scred) < 0)
                        return -ENOMEM;
                sym_gnutls_psk_set_server_credentials_function2(c->scred, psk_server_cb);
                r = sym_gnutls_credentials_set(c->session, GNUTLS_CRD_PSK, c->scred);
        } else {
                if (sym_gnutls_psk_allocate_client_credentials(&c->ccred) < 0)
                        return -ENOMEM;
                r = sym_gnutls_psk_set_client_credentials(c->ccred, psk->identity, &key, GNUTLS_PSK_KEY_RAW);
                if (r < 0)
                        return -EINVAL;
                r = sym_gnutls_credentials_set(c->session, GNUTLS_CRD_PSK, c->ccred);
        }
        if (r < 0)
                return -EINVAL;
        c->osize = c->isize = TLS_BUF_MIN;
        c->obuf = g_malloc(c->osize);
        c->ibuf = g_malloc(c->isize);
        sym_gnutls_transport_set_ptr(c->session, c);
        sym_gnutls_transport_set_push_function(c->session, tls_push);
        sym_gnutls_transport_set_pull_function(c->session, tls_pull);
        sym_gnutls_handshake_set_timeout(c->session, 0);    /* the caller's event loop times out */
        *ret = g_steal_pointer(&c);
        return 0;
}

void vfmig_stream_conn_free(VfmigStreamConn *c)
{
        if (!c)
                return;
        if (c->session)
                sym_gnutls_deinit(c->session);
        if (c->wr.aead)
                sym_gnutls_aead_cipher_deinit(c->wr.aead);
        if (c->rd.aead)
                sym_gnutls_aead_cipher_deinit(c->rd.aead);
        explicit_bzero(c->wr.iv, sizeof(c->wr.iv));     /* the IVs are traffic secrets too */
        explicit_bzero(c->rd.iv, sizeof(c->rd.iv));
        if (c->ccred)
                sym_gnutls_psk_free_client_credentials(c->ccred);
        if (c->scred)
                sym_gnutls_psk_free_server_credentials(c->scred);
        vfmig_psk_clear(&c->psk);
        if (c->fd >= 0)
                close(c->fd);
        g_free(c->obuf);
        g_free(c->ibuf);
        g_free(c->error);
        g_free(c);
}

static int conn_fail(VfmigStreamConn *c, int r, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int conn_fail(VfmigStreamConn *c, int r, const char *fmt, ...)
{
        va_list ap;

        g_free(c->error);
        va_start(ap, fmt);
        c->error = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        return r;
}

static int wait_tls(VfmigStreamConn *c)
{
        c->events = sym_gnutls_record_get_direction(c->session) ? POLLOUT : POLLIN;
        if (c->ooff < c->olen)  /* our own bytes wait for the socket too */
                c->events |= POLLOUT;
        return -EAGAIN;
}

/* A GnuTLS error of the handshake as an errno with a message. */
static int handshake_error(VfmigStreamConn *c, int g)
{
        const char *side = c->server ? "server" : "client";

        /* Tell the peer (best effort) and end the connection, so that its
         * handshake fails now rather than at its timeout. */
        (void) sym_gnutls_alert_send_appropriate(c->session, g);
        (void) tls_flush_buffer(c);
        (void) shutdown(c->fd, SHUT_RDWR);

        switch (g) {
        case GNUTLS_E_UNEXPECTED_PACKET_LENGTH:
        case GNUTLS_E_UNEXPECTED_PACKET:
        case GNUTLS_E_UNSUPPORTED_VERSION_PACKET:
        case GNUTLS_E_UNEXPECTED_HANDSHAKE_PACKET:
                return conn_fail(c, -EPROTO, "TLS handshake (%s) failed, the peer does not speak TLS 1.3: %s",
                                 side, sym_gnutls_strerror(g));
        case GNUTLS_E_PREMATURE_TERMINATION:
        case GNUTLS_E_PULL_ERROR:
        case GNUTLS_E_PUSH_ERROR:
                return conn_fail(c, -ECONNRESET, "TLS handshake (%s) failed, the connection was closed: %s",
                                 side, sym_gnutls_strerror(g));
        case GNUTLS_E_FATAL_ALERT_RECEIVED:
                return conn_fail(c, -EACCES, "TLS handshake (%s) refused by the peer (alert: %s): wrong or stale ticket?",
                                 side, sym_gnutls_alert_get_name(sym_gnutls_alert_get(c->session)));
        default:
                if (c->unknown_identity)
                        return conn_fail(c, -EACCES, "TLS handshake (server) refused: the client offered an unknown PSK identity (wrong ticket)");
                return conn_fail(c, -EACCES, "TLS handshake (%s) failed: %s (wrong ticket?)", side, sym_gnutls_strerror(g));
        }
}

/* ---- TLS records after the handshake (see the top of the file) ---- */

static ssize_t send_error(VfmigStreamConn *c, int e)
{
        return conn_fail(c, -e, "send: %s", g_strerror(e));
}

static int tls_keys_take(VfmigStreamConn *c, unsigned read, TlsKeys *k)
{
        gnutls_cipher_algorithm_t alg = sym_gnutls_cipher_get(c->session);
        gnutls_datum_t mac = {}, iv = {}, key = {};
        unsigned char seq[8];
        int r;

        r = sym_gnutls_record_get_state(c->session, read, &mac, &iv, &key, seq);
        if (r < 0)
                return conn_fail(c, -EPROTO, "TLS: cannot take the traffic keys: %s", sym_gnutls_strerror(r));
        if (iv.size != TLS_NONCE || sym_gnutls_cipher_get_tag_size(alg) != TLS_TAG)
                return conn_fail(c, -EPROTO, "TLS: cipher %s has no %u-byte nonce and %u-byte tag",
                                 sym_gnutls_cipher_get_name(alg), TLS_NONCE, TLS_TAG);
        r = sym_gnutls_aead_cipher_init(&k->aead, alg, &key);
        if (r < 0) {
                k->aead = NULL;
                return conn_fail(c, -EPROTO, "TLS: cannot set up %s: %s", sym_gnutls_cipher_get_name(alg), sym_gnutls_strerror(r));
        }
        memcpy(k->iv, iv.data, TLS_NONCE);
        k->seq = 0;
        for (unsigned i = 0; i < 8; i++)
                k->seq = k->seq << 8 | seq[i];
        return 0;
}

/* The handshake is done: from now on records are sealed and opened here.
 * Bytes that came after the handshake's last record are in ibuf already
 * (tls_pull reads ahead into it, and GnuTLS asks for whole records only). */
static int tls_take_records(VfmigStreamConn *c)
{
        int r;

        if (sym_gnutls_record_check_pending(c->session) > 0)
                return conn_fail(c, -EPROTO, "TLS: application data inside the handshake");
        r = tls_keys_take(c, 0, &c->wr);
        if (r >= 0)
                r = tls_keys_take(c, 1, &c->rd);
        return r;
}

/* RFC 8446 §5.3: the per-record nonce is the static IV xor the sequence
 * number, left-padded to the IV's length. */
static void tls_nonce(const TlsKeys *k, uint8_t nonce[TLS_NONCE])
{
        memcpy(nonce, k->iv, TLS_NONCE);
        for (unsigned i = 0; i < 8; i++)
                nonce[TLS_NONCE - 1 - i] ^= (uint8_t) (k->seq >> (8 * i));
}

/* Seal one record of n <= TLS_PLAINTEXT_MAX bytes of content type `type`
 * at the end of obuf; the caller made room for n + TLS_HEADER + 1 + TLS_TAG. */
static int tls_seal(VfmigStreamConn *c, uint8_t type, const void *data, size_t n)
{
        uint8_t *rec = c->obuf + c->olen, nonce[TLS_NONCE];
        size_t inner = n + 1, clen = inner + TLS_TAG;
        giovec_t aad = { rec, TLS_HEADER }, in[2] = { { (void *) data, n }, { &type, 1 } };
        int r;

        g_assert(n <= TLS_PLAINTEXT_MAX && c->osize - c->olen >= TLS_HEADER + clen);
        if (c->wr.seq >= TLS_RECORDS_MAX)
                return conn_fail(c, -EMSGSIZE, "TLS send: this connection has sealed the most records one key may "
                                 "(%" PRIu64 ", RFC 8446 §5.5)", TLS_RECORDS_MAX);
        rec[0] = TLS_CT_APPLICATION_DATA;       /* every protected record says so outside */
        rec[1] = 3;
        rec[2] = 3;
        rec[3] = (uint8_t) (clen >> 8);
        rec[4] = (uint8_t) clen;
        tls_nonce(&c->wr, nonce);
        /* The content and its type byte sealed straight from the caller's
         * buffer into ours, ciphertext then tag: no copy of the plaintext. */
        r = sym_gnutls_aead_cipher_encryptv(c->wr.aead, nonce, TLS_NONCE, &aad, 1, TLS_TAG, in, 2,
                                            rec + TLS_HEADER, &clen);
        if (r < 0)
                return conn_fail(c, -EPROTO, "TLS send: sealing a record: %s", sym_gnutls_strerror(r));
        c->wr.seq++;
        c->olen += TLS_HEADER + clen;
        return 0;
}

/* Room for one more record of n bytes in obuf, sending what is there when
 * needed: 0, -EAGAIN (the socket is full), or -errno. */
static int tls_room(VfmigStreamConn *c, size_t n)
{
        size_t need = n + TLS_HEADER + 1 + TLS_TAG;
        int r;

        if (c->osize - c->olen >= need)
                return 0;
        r = tls_flush_buffer(c);
        if (r < 0 && r != -EAGAIN)
                return r;
        if (c->ooff > 0) {      /* make the free space contiguous */
                memmove(c->obuf, c->obuf + c->ooff, c->olen - c->ooff);
                c->olen -= c->ooff;
                c->ooff = 0;
        }
        return c->osize - c->olen >= need ? 0 : -EAGAIN;
}

static ssize_t tls_send_records(VfmigStreamConn *c, const uint8_t *p, size_t n)
{
        size_t done = 0;
        int r;

        if (n > c->osize / 2 && c->osize < TLS_BUF_MAX) {
                /* Bulk data: a larger buffer, fewer calls. */
                c->osize = MIN(TLS_BUF_MAX, c->osize * 4);
                c->obuf = g_realloc(c->obuf, c->osize);
        }
        /* Seal record after record into the buffer; send it whenever it fills up. */
        while (done < n) {
                size_t k = MIN(n - done, TLS_PLAINTEXT_MAX);

                r = tls_room(c, k);
                if (r == -EAGAIN)
                        break;
                if (r < 0)
                        return send_error(c, -r);
                r = tls_seal(c, TLS_CT_APPLICATION_DATA, p + done, k);
                if (r < 0)
                        return r;
                done += k;
        }
        /* What is sealed goes out now if the socket takes it (else at the
         * next send, flush or shutdown). */
        r = tls_flush_buffer(c);
        if (r < 0 && r != -EAGAIN)
                return send_error(c, -r);
        if (done == 0) {
                c->events = POLLOUT;
                return -EAGAIN;
        }
        return (ssize_t) done;
}

/* The ciphertext length of the record whose header h is, or 0 when no
 * protected TLS 1.3 record may start so (another outer type, a length under
 * a tag or over 2^14 + 256: record_overflow). */
static size_t tls_header_length(const uint8_t *h)
{
        size_t clen = (size_t) h[3] << 8 | h[4];

        if (h[0] != TLS_CT_APPLICATION_DATA || clen > TLS_CIPHERTEXT_MAX || clen < 1 + TLS_TAG)
                return 0;
        return clen;
}

/* A failure of receiving: conn_fail(), and it sticks (recv_errno). */
#define tls_recv_fail(c, e, ...) ((c)->recv_errno = -(e), conn_fail((c), (e), __VA_ARGS__))

/* More ciphertext into ibuf (nothing opened is pending there): 0, -EAGAIN,
 * or an error (an end of the connection before close_notify among them). */
static int tls_fill(VfmigStreamConn *c)
{
        ssize_t got;
        size_t space;

        c->poff = c->pend = 0;
        if (c->ioff == c->ilen)
                c->ioff = c->ilen = 0;
        else if (c->ioff > 0 && c->isize - c->ilen < TLS_RECORD_WIRE_MAX) {
                memmove(c->ibuf, c->ibuf + c->ioff, c->ilen - c->ioff);
                c->ilen -= c->ioff;
                c->ioff = 0;
        }
        space = c->isize - c->ilen;
        if (c->last_fill == space && c->isize < TLS_BUF_MAX) {
                /* The last read filled all it was given: bulk data, read more at once. */
                c->isize = MIN(TLS_BUF_MAX, c->isize * 2);
                c->ibuf = g_realloc(c->ibuf, c->isize);
                space = c->isize - c->ilen;
        }
        do
                got = recv(c->fd, c->ibuf + c->ilen, space, 0);
        while (got < 0 && errno == EINTR);
        if (got < 0 && errno == EAGAIN)
                return -EAGAIN;
        if (got < 0)
                return tls_recv_fail(c, -errno, "TLS receive: %s", g_strerror(errno));
        if (got == 0)
                return tls_recv_fail(c, -ECONNRESET, "TLS receive: the connection ended without close_notify%s",
                                     c->ioff < c->ilen ? ", inside a record" : "");
        c->ilen += (size_t) got;
        c->last_fill = (size_t) got == space ? (size_t) got : 0;
        return 0;
}

/*
 * Open the next record: its data straight into dst when it fits in room
 * (the count is returned), else in place in ibuf (0; ibuf[poff, pend)).
 * 0 also for a record without data and for close_notify (peer_closed).
 * -EAGAIN when the record is not all here and the socket has no more.
 */
static ssize_t tls_open(VfmigStreamConn *c, uint8_t *dst, size_t room)
{
        uint8_t nonce[TLS_NONCE], *hdr, *out, type;
        size_t clen, plen;
        int r;

        for (;;) {
                size_t avail = c->ilen - c->ioff;

                hdr = c->ibuf + c->ioff;
                if (avail >= TLS_HEADER) {
                        clen = tls_header_length(hdr);
                        if (clen == 0 && hdr[0] != TLS_CT_APPLICATION_DATA)
                                return tls_recv_fail(c, -EPROTO, "TLS receive: an unprotected record (type %u) "
                                                     "after the handshake", hdr[0]);
                        if (clen == 0)
                                return tls_recv_fail(c, -EPROTO, "TLS receive: a record of %u bytes (record_overflow)",
                                                     (unsigned) hdr[3] << 8 | hdr[4]);
                        if (avail >= TLS_HEADER + clen)
                                break;
                }
                r = tls_fill(c);
                if (r < 0)
                        return r;
        }
        plen = clen - TLS_TAG;  /* content, type and padding: all of it lands in out */
        out = room >= plen ? dst : hdr + TLS_HEADER;
        tls_nonce(&c->rd, nonce);
        r = sym_gnutls_aead_cipher_decrypt(c->rd.aead, nonce, TLS_NONCE, hdr, TLS_HEADER, TLS_TAG,
                                           hdr + TLS_HEADER, clen, out, &plen);
        if (r < 0)
                return tls_recv_fail(c, -EPROTO, "TLS receive: record %" PRIu64 " failed authentication "
                                     "(bad_record_mac): %s", c->rd.seq, sym_gnutls_strerror(r));
        c->rd.seq++;
        c->ioff += TLS_HEADER + clen;
        if (plen > TLS_PLAINTEXT_MAX + 1)       /* RFC 8446 §5.4: content, type and padding */
                return tls_recv_fail(c, -EPROTO, "TLS receive: a record of %zu bytes inside (record_overflow)", plen);
        while (plen > 0 && out[plen - 1] == 0)  /* padding */
                plen--;
        if (plen == 0)
                return tls_recv_fail(c, -EPROTO, "TLS receive: a record without a content type");
        type = out[--plen];
        switch (type) {
        case TLS_CT_APPLICATION_DATA:
                if (out == dst)
                        return (ssize_t) plen;
                c->poff = (size_t) (out - c->ibuf);
                c->pend = c->poff + plen;
                return 0;
        case TLS_CT_ALERT:
                if (plen == 2 && out[1] == GNUTLS_A_CLOSE_NOTIFY) {
                        c->peer_closed = true;
                        return 0;
                }
                return tls_recv_fail(c, plen == 2 && out[0] == GNUTLS_AL_FATAL ? -ECONNABORTED : -EPROTO,
                                     "TLS receive: the peer sent alert %s",
                                     plen == 2 ? sym_gnutls_alert_get_strname((gnutls_alert_description_t) out[1]) : "(malformed)");
        case TLS_CT_HANDSHAKE:
                return tls_recv_fail(c, -EPROTO, "TLS receive: a post-handshake message (type %u), which this "
                                     "connection does not take", plen > 0 ? out[0] : 0);
        default:
                return tls_recv_fail(c, -EPROTO, "TLS receive: a record of content type %u", type);
        }
}

static ssize_t tls_recv_records(VfmigStreamConn *c, uint8_t *p, size_t n)
{
        size_t done = 0;
        ssize_t k = 0;

        while (done < n && !c->peer_closed && !c->recv_errno) {
                if (c->poff < c->pend) {
                        k = (ssize_t) MIN(n - done, c->pend - c->poff);
                        memcpy(p + done, c->ibuf + c->poff, (size_t) k);
                        c->poff += (size_t) k;
                        done += (size_t) k;
                        continue;
                }
                k = tls_open(c, p + done, n - done);
                if (k < 0)
                        break;
                done += (size_t) k;
        }
        if (c->ooff < c->olen)  /* our own bytes still waiting */
                (void) tls_flush_buffer(c);
        /* Bytes first; an error or the end at the next call. */
        c->end_deferred = done > 0 && (c->peer_closed || c->recv_errno);
        if (done > 0)
                return (ssize_t) done;
        if (c->peer_closed)
                return 0;
        if (c->recv_errno)
                return -c->recv_errno;
        c->events = POLLIN | (c->ooff < c->olen ? POLLOUT : 0);
        return -EAGAIN;
}

/*
 * Whether a receive would return without the socket: opened bytes, an end
 * or error not yet returned, or a whole record in ibuf (or a header already
 * known to be bad).  Not a part of a record: the rest has to come through
 * the socket, and the caller waits for it.
 */
static bool tls_pending(VfmigStreamConn *c)
{
        size_t avail = c->ilen - c->ioff, clen;

        if (c->poff < c->pend || c->end_deferred)
                return true;
        if (c->peer_closed || c->recv_errno || avail < TLS_HEADER)
                return false;
        clen = tls_header_length(c->ibuf + c->ioff);
        return clen == 0 || avail >= TLS_HEADER + clen;
}

/* close_notify: 0 once sealed, -EAGAIN when the buffer has no room yet. */
static int tls_seal_close_notify(VfmigStreamConn *c)
{
        static const uint8_t alert[2] = { GNUTLS_AL_WARNING, GNUTLS_A_CLOSE_NOTIFY };
        int r = tls_room(c, sizeof(alert));

        if (r == -EAGAIN) {
                c->events = POLLOUT;
                return r;
        }
        if (r < 0)
                return conn_fail(c, -EPIPE, "TLS close: %s", g_strerror(-r));
        return tls_seal(c, TLS_CT_ALERT, alert, sizeof(alert));
}

int vfmig_stream_conn_handshake(VfmigStreamConn *c)
{
        int r, f;

        if (!c->connected) {
                struct pollfd p = { .fd = c->fd, .events = POLLOUT };
                int err = 0;
                socklen_t len = sizeof(err);
                struct sockaddr_storage ss;

                r = poll(&p, 1, 0);
                if (r < 0)
                        return conn_fail(c, -errno, "poll: %s", g_strerror(errno));
                if (r == 0) {
                        c->events = POLLOUT;
                        return -EAGAIN;
                }
                if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                        err = errno;
                if (err != 0)
                        return conn_fail(c, -err, "connect failed: %s", g_strerror(err));
                len = sizeof(ss);
                if (getpeername(c->fd, (struct sockaddr *) &ss, &len) < 0)
                        return conn_fail(c, -errno, "the socket is not connected: %s", g_strerror(errno));
                c->connected = true;
        }
        if (!c->tls)
                return 0;
        if (c->handshaken)      /* done, but our last flight was still waiting */
                return vfmig_stream_conn_flush(c);

        do
                r = sym_gnutls_handshake(c->session);
        while (r == GNUTLS_E_INTERRUPTED);
        f = tls_flush_buffer(c);
        if (r == GNUTLS_E_AGAIN && (f == 0 || f == -EAGAIN))
                return wait_tls(c);
        if (r < 0 && r != GNUTLS_E_AGAIN)
                return handshake_error(c, r);
        if (f < 0 && f != -EAGAIN)
                return conn_fail(c, f, "TLS handshake (%s) failed, sending: %s", c->server ? "server" : "client",
                                 g_strerror(-f));
        r = tls_take_records(c);
        if (r < 0)
                return r;
        c->handshaken = true;
        if (f == -EAGAIN) {
                c->events = POLLOUT;
                return -EAGAIN;
        }
        return 0;
}

int vfmig_stream_conn_flush(VfmigStreamConn *c)
{
        int r;

        if (!c->tls)
                return 0;
        r = tls_flush_buffer(c);
        if (r == -EAGAIN) {
                c->events = POLLOUT;
                return r;
        }
        if (r < 0)
                return (int) send_error(c, -r);
        return 0;
}

ssize_t vfmig_stream_conn_send(VfmigStreamConn *c, const void *buf, size_t n)
{
        ssize_t k;

        if (!c->connected || (c->tls && !c->handshaken))
                return conn_fail(c, -ENOTCONN, "send before the connection is established");
        if (!c->tls) {
                k = send(c->fd, buf, n, MSG_NOSIGNAL);
                if (k >= 0)
                        return k;
                if (errno == EAGAIN || errno == EINTR) {
                        c->events = POLLOUT;
                        return -EAGAIN;
                }
                return conn_fail(c, -errno, "send: %s", g_strerror(errno));
        }
        if (c->send_errno)
                return send_error(c, c->send_errno);
        return tls_send_records(c, buf, n);
}

/*
 * Plaintext: a stream reader asks for a record header (16 bytes), then for
 * the rest of the record.  The header alone would cost a system call per
 * record, and every call that frees socket buffer space may wake the peer.
 * So a large read also takes up to PLAIN_AHEAD bytes that follow it (the
 * next header and the start of its payload) into a small buffer, from which
 * the next reads are served: about one call per record, like a plain copy
 * of the bytes.
 */
#define PLAIN_AHEAD             (64u * 1024u)
#define PLAIN_SMALL_READ        4096u

static ssize_t plain_recv(VfmigStreamConn *c, void *buf, size_t n)
{
        struct iovec iov[2];
        struct msghdr mh = { .msg_iov = iov };
        ssize_t k;

        if (c->ioff < c->ilen) {
                k = (ssize_t) MIN(n, c->ilen - c->ioff);
                memcpy(buf, c->ibuf + c->ioff, (size_t) k);
                c->ioff += (size_t) k;
                return k;
        }
        if (!c->ibuf) {
                c->isize = PLAIN_AHEAD;
                c->ibuf = g_malloc(c->isize);
        }
        c->ioff = c->ilen = 0;
        if (n < PLAIN_SMALL_READ) {
                iov[0] = (struct iovec) { c->ibuf, c->isize };
                mh.msg_iovlen = 1;
        } else {
                iov[0] = (struct iovec) { buf, n };
                iov[1] = (struct iovec) { c->ibuf, c->isize };
                mh.msg_iovlen = 2;
        }
        do
                k = recvmsg(c->fd, &mh, 0);
        while (k < 0 && errno == EINTR);
        if (k < 0) {
                if (errno == EAGAIN) {
                        c->events = POLLIN;
                        return -EAGAIN;
                }
                return conn_fail(c, -errno, "receive: %s", g_strerror(errno));
        }
        if (n < PLAIN_SMALL_READ) {
                c->ilen = (size_t) k;
                return k == 0 ? 0 : plain_recv(c, buf, n);
        }
        if ((size_t) k > n) {
                c->ilen = (size_t) k - n;
                k = (ssize_t) n;
        }
        return k;
}

ssize_t vfmig_stream_conn_recv(VfmigStreamConn *c, void *buf, size_t n)
{
        if (!c->connected || (c->tls && !c->handshaken))
                return conn_fail(c, -ENOTCONN, "receive before the connection is established");
        if (!c->tls)
                return plain_recv(c, buf, n);
        return tls_recv_records(c, buf, n);
}

bool vfmig_stream_conn_pending(VfmigStreamConn *c)
{
        if (!c->tls)
                return c->ioff < c->ilen;
        return c->handshaken && tls_pending(c);
}

int vfmig_stream_conn_shutdown(VfmigStreamConn *c)
{
        if (c->tls && c->handshaken) {
                int r;

                if (!c->bye_sent) {
                        if (c->send_errno)
                                return conn_fail(c, -EPIPE, "TLS close: %s", g_strerror(c->send_errno));
                        r = tls_seal_close_notify(c);
                        if (r < 0)
                                return r;
                        c->bye_sent = true;
                }
                /* Everything queued, close_notify last, before the FIN. */
                r = vfmig_stream_conn_flush(c);
                if (r < 0)
                        return r == -EAGAIN ? r : conn_fail(c, -EPIPE, "TLS close: %s", g_strerror(-r));
        }
        if (shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN)
                return conn_fail(c, -errno, "shutdown: %s", g_strerror(errno));
        return 0;
}

short vfmig_stream_conn_events(VfmigStreamConn *c)
{
        return c->events ? c->events : POLLIN;
}

int vfmig_stream_conn_fd(VfmigStreamConn *c)
{
        return c->fd;
}

bool vfmig_stream_conn_is_tls(VfmigStreamConn *c)
{
        return c->tls;
}

const char *vfmig_stream_conn_error(VfmigStreamConn *c)
{
        return c->error;
}

const char *vfmig_stream_conn_cipher(VfmigStreamConn *c)
{
        if (!c->tls || !c->handshaken)
                return NULL;
        return sym_gnutls_cipher_get_name(sym_gnutls_cipher_get(c->session));
}
