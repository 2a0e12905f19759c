/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * fuzz-tls-records — the TLS record layer of stream-conn.c (the records
 * after the handshake are opened by vfmigd's own code) on what a peer can
 * send.  Each input runs a real TLS 1.3 PSK handshake between a stream
 * connection (the target, TLS server) and a plain GnuTLS client on a
 * socketpair; then the input is a list of chunks, each one of:
 *   op 0: raw bytes onto the wire (what anyone without the key can send);
 *   op 1: one authentic record: the chunk is the inner plaintext (content,
 *         content type, padding, as the fuzzer wrote it), sealed with the
 *         client's traffic key and next sequence number, so the code behind
 *         authentication (padding, content types, alerts) is reached too;
 *   op 2: the end of the client's side of the connection.
 * Between chunks the connection is read with a room the op byte picks
 * (16k + 1 bytes, some 4000 more: odd sizes, next to a record's).
 * Checked: what it hands out is exactly the data of the authentic
 * application records written before any raw byte, in order (nothing is
 * forged or lost); it never returns more than asked; after -EAGAIN it does
 * not claim to have pending bytes; an error has a message and sticks.
 *
 * Input: repeated [op u8][length u16 le][length bytes].
 */
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "stream-conn.h"
#include "stream-ticket.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ZERO_TICKET "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#define MAX_OUT (1u << 20)

typedef struct Peer {
        gnutls_session_t session;
        gnutls_psk_client_credentials_t cred;
        gnutls_aead_cipher_hd_t aead;
        uint8_t iv[12];
        uint64_t seq;
} Peer;

static VfmigPsk psk;
static uint8_t expected[MAX_OUT], got[MAX_OUT], rec[5 + 65536 + 16];

static void peer_done(Peer *p)
{
        if (p->aead)
                gnutls_aead_cipher_deinit(p->aead);
        if (p->session)
                gnutls_deinit(p->session);
        if (p->cred)
                gnutls_psk_free_client_credentials(p->cred);
}

/* Both handshakes, the client's write keys taken: true when all went well. */
static bool handshake(VfmigStreamConn *c, Peer *p, int fd)
{
        gnutls_datum_t key = { psk.key, VFMIG_PSK_KEY_BYTES }, mac, iv, k;
        unsigned char seq[8];
        int rc = GNUTLS_E_AGAIN, rs = -EAGAIN;

        if (gnutls_init(&p->session, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_TICKETS) < 0 ||
            gnutls_priority_set_direct(p->session, vfmig_stream_tls_priority(), NULL) < 0 ||
            gnutls_psk_allocate_client_credentials(&p->cred) < 0 ||
            gnutls_psk_set_client_credentials(p->cred, psk.identity, &key, GNUTLS_PSK_KEY_RAW) < 0 ||
            gnutls_credentials_set(p->session, GNUTLS_CRD_PSK, p->cred) < 0)
                return false;
        gnutls_transport_set_int(p->session, fd);
        for (unsigned i = 0; i < 1000 && (rc == GNUTLS_E_AGAIN || rs == -EAGAIN); i++) {
                if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED)
                        rc = gnutls_handshake(p->session);
                if (rs == -EAGAIN)
                        rs = vfmig_stream_conn_handshake(c);
        }
        if (rc < 0 || rs < 0)
                return false;
        if (gnutls_record_get_state(p->session, 0, &mac, &iv, &k, seq) < 0 || iv.size != 12 ||
            gnutls_aead_cipher_init(&p->aead, gnutls_cipher_get(p->session), &k) < 0)
                return false;
        memcpy(p->iv, iv.data, 12);
        for (unsigned i = 0; i < 8; i++)
                p->seq = p->seq << 8 | seq[i];
        return true;
}

/* One authentic TLS 1.3 record around the inner plaintext in[0, n). */
static size_t seal(Peer *p, const uint8_t *in, size_t n)
{
        uint8_t nonce[12];
        size_t clen = n + 16;

        rec[0] = 23;
        rec[1] = 3;
        rec[2] = 3;
        rec[3] = (uint8_t) (clen >> 8);
        rec[4] = (uint8_t) clen;
        memcpy(nonce, p->iv, 12);
        for (unsigned i = 0; i < 8; i++)
                nonce[11 - i] ^= (uint8_t) (p->seq >> (8 * i));
        if (gnutls_aead_cipher_encrypt(p->aead, nonce, 12, rec, 5, 16, in, n, rec + 5, &clen) < 0)
                __builtin_trap();
        p->seq++;
        return 5 + clen;
}

/* Write it all, reading the connection whenever the socket is full. */
static void put(int fd, const uint8_t *b, size_t n, VfmigStreamConn *c)
{
        while (n > 0) {
                ssize_t k = write(fd, b, n);

                if (k < 0) {
                        uint8_t sink[4096];

                        if (errno != EAGAIN || vfmig_stream_conn_recv(c, sink, sizeof(sink)) < 0)
                                return;         /* the reader has failed: nothing more gets in */
                        continue;
                }
                b += k;
                n -= (size_t) k;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static bool init;
        VfmigStreamConn *c = NULL;
        Peer peer = {};
        size_t at = 0, n_expected = 0, n_got = 0;
        bool forged = false, closed = false;
        int sv[2], err = 0;

        if (!init) {
                if (vfmig_psk_derive(ZERO_TICKET, NULL, &psk) < 0)
                        __builtin_trap();
                init = true;
        }
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                return 0;
        if (vfmig_stream_conn_new_tls(sv[0], true, &psk, &c) < 0) {
                close(sv[0]);
                close(sv[1]);
                return 0;
        }
        if (!handshake(c, &peer, sv[1]))
                __builtin_trap();       /* the right key must always work */

        while (at + 3 <= size && !closed) {
                unsigned op = data[at];
                size_t len = (size_t) data[at + 1] | (size_t) data[at + 2] << 8, room = 16u * (op >> 2) + 1 + (op >> 7) * 4000;

                at += 3;
                if (len > size - at)
                        len = size - at;
                switch (op & 3) {
                case 0:
                        put(sv[1], data + at, len, c);
                        forged |= len > 0;
                        break;
                case 1:
                        if (len > 16384 + 256)
                                len = 16384 + 256;
                        if (!forged && !err) {
                                /* What the connection must hand out of it. */
                                size_t m = len;

                                while (m > 0 && data[at + m - 1] == 0)
                                        m--;
                                if (m > 0 && data[at + m - 1] == 23 && len <= 16384 + 1 &&
                                    n_expected + m - 1 <= MAX_OUT) {
                                        memcpy(expected + n_expected, data + at, m - 1);
                                        n_expected += m - 1;
                                }
                        }
                        put(sv[1], rec, seal(&peer, data + at, len), c);
                        break;
                default:
                        shutdown(sv[1], SHUT_WR);
                        closed = true;
                        break;
                }
                at += len;

                /* Read what is there, into a buffer of exactly room bytes
                 * (ASan sees a write past it). */
                for (;;) {
                        uint8_t *buf;
                        ssize_t k;

                        if (n_got + room > MAX_OUT)
                                room = MAX_OUT - n_got;
                        if (room == 0)
                                break;
                        buf = malloc(room);
                        if (!buf)
                                break;
                        k = vfmig_stream_conn_recv(c, buf, room);
                        if (k > 0 && k <= (ssize_t) room)
                                memcpy(got + n_got, buf, (size_t) k);
                        free(buf);
                        if (k == -EAGAIN) {
                                if (vfmig_stream_conn_pending(c))
                                        __builtin_trap();       /* it would spin its caller */
                                break;
                        }
                        if (k > (ssize_t) room)
                                __builtin_trap();
                        if (k <= 0) {
                                if (k < 0) {
                                        if (!vfmig_stream_conn_error(c))
                                                __builtin_trap();
                                        if (err && k != err)
                                                __builtin_trap();       /* errors stick */
                                        err = (int) k;
                                }
                                if (vfmig_stream_conn_recv(c, got + n_got, room) != k)
                                        __builtin_trap();
                                break;
                        }
                        n_got += (size_t) k;
                }
                if (err)
                        break;
        }
        /* Only authentic application data, in order, nothing else. */
        if (n_got > n_expected && !forged)
                __builtin_trap();
        if (memcmp(got, expected, n_got < n_expected ? n_got : n_expected) != 0)
                __builtin_trap();
        if (forged && n_got > n_expected)
                __builtin_trap();
        vfmig_stream_conn_free(c);
        close(sv[1]);
        peer_done(&peer);
        return 0;
}
