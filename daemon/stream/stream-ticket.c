/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <string.h>

#include "stream-ticket.h"
#include "tls-lib.h"

#define PSK_SALT "vfmig-stream-psk-v1"
#define IDENTITY_PREFIX "vfmig1-"
#define IDENTITY_RAW_BYTES 18

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Unpadded base64url of n bytes into out (4*ceil(n/3) + 1 bytes of room). */
static void b64url_encode(const uint8_t *in, size_t n, char *out)
{
        size_t i = 0;
        char *o = out;

        for (; i + 3 <= n; i += 3) {
                uint32_t v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8 | in[i + 2];

                *o++ = b64url[v >> 18];
                *o++ = b64url[(v >> 12) & 63];
                *o++ = b64url[(v >> 6) & 63];
                *o++ = b64url[v & 63];
        }
        if (n - i == 1) {
                uint32_t v = (uint32_t) in[i] << 16;

                *o++ = b64url[v >> 18];
                *o++ = b64url[(v >> 12) & 63];
        } else if (n - i == 2) {
                uint32_t v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8;

                *o++ = b64url[v >> 18];
                *o++ = b64url[(v >> 12) & 63];
                *o++ = b64url[(v >> 6) & 63];
        }
        *o = 0;
}

static int b64url_value(char c)
{
        const char *p = c ? strchr(b64url, c) : NULL;

        return p ? (int) (p - b64url) : -1;
}

int vfmig_ticket_decode(const char *ticket, uint8_t ret[VFMIG_TICKET_BYTES])
{
        uint8_t out[VFMIG_TICKET_BYTES];
        uint32_t acc = 0;
        unsigned bits = 0;
        size_t o = 0;

        if (!ticket || strlen(ticket) != VFMIG_TICKET_STRLEN)
                return -EINVAL;
        for (size_t i = 0; i < VFMIG_TICKET_STRLEN; i++) {
                int v = b64url_value(ticket[i]);

                if (v < 0)
                        return -EINVAL;
                acc = (acc << 6) | (uint32_t) v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[o++] = (uint8_t) (acc >> bits);
                        acc &= (1u << bits) - 1;
                }
        }
        if (o != VFMIG_TICKET_BYTES || acc != 0)        /* 43*6 = 258 bits: 2 spare bits must be 0 */
                return -EINVAL;
        memcpy(ret, out, sizeof(out));
        explicit_bzero(out, sizeof(out));
        return 0;
}

int vfmig_ticket_new(char **ret)
{
        uint8_t raw[VFMIG_TICKET_BYTES];
        char s[VFMIG_TICKET_STRLEN + 2];
        int r;

        r = vfmig_tls_lib_require();
        if (r < 0)
                return r;
        if (sym_gnutls_rnd(GNUTLS_RND_KEY, raw, sizeof(raw)) < 0)
                return -EIO;
        b64url_encode(raw, sizeof(raw), s);
        explicit_bzero(raw, sizeof(raw));
        *ret = g_strdup(s);
        explicit_bzero(s, sizeof(s));
        return 0;
}

static int expand(const uint8_t prk[32], const char *label, const char *context, uint8_t *out, size_t n)
{
        size_t ll = strlen(label), cl = strlen(context);
        g_autofree uint8_t *info = g_malloc(ll + 1 + cl);
        gnutls_datum_t key = { (unsigned char *) prk, 32 }, inf;
        int r;

        memcpy(info, label, ll);
        info[ll] = 0;
        memcpy(info + ll + 1, context, cl);
        inf = (gnutls_datum_t) { info, (unsigned) (ll + 1 + cl) };
        r = sym_gnutls_hkdf_expand(GNUTLS_MAC_SHA256, &key, &inf, out, n);
        return r < 0 ? -EIO : 0;
}

int vfmig_psk_derive(const char *ticket, const char *context, VfmigPsk *ret)
{
        uint8_t raw[VFMIG_TICKET_BYTES], prk[32], id[IDENTITY_RAW_BYTES];
        gnutls_datum_t ikm = { raw, sizeof(raw) }, salt = { (unsigned char *) PSK_SALT, strlen(PSK_SALT) };
        VfmigPsk psk = {};
        int r;

        r = vfmig_ticket_decode(ticket, raw);
        if (r < 0)
                return r;
        r = vfmig_tls_lib_require();
        if (r < 0) {
                explicit_bzero(raw, sizeof(raw));
                return r;
        }
        if (!context)
                context = "";
        r = sym_gnutls_hkdf_extract(GNUTLS_MAC_SHA256, &ikm, &salt, prk) < 0 ? -EIO : 0;
        if (r == 0)
                r = expand(prk, "vfmig psk key", context, psk.key, sizeof(psk.key));
        if (r == 0)
                r = expand(prk, "vfmig psk identity", context, id, sizeof(id));
        explicit_bzero(raw, sizeof(raw));
        explicit_bzero(prk, sizeof(prk));
        if (r < 0) {
                vfmig_psk_clear(&psk);
                return r;
        }
        memcpy(psk.identity, IDENTITY_PREFIX, strlen(IDENTITY_PREFIX));
        b64url_encode(id, sizeof(id), psk.identity + strlen(IDENTITY_PREFIX));
        *ret = psk;
        vfmig_psk_clear(&psk);
        return 0;
}

void vfmig_psk_clear(VfmigPsk *psk)
{
        explicit_bzero(psk, sizeof(*psk));
}

bool vfmig_ticket_expired(uint64_t expires_usec, uint64_t now_usec)
{
        return expires_usec != 0 && now_usec >= expires_usec;
}

struct VfmigTicketSet {
        GHashTable *used;       /* hex SHA-256 -> expiry (µs, boxed in a pointer-sized slot) */
};

VfmigTicketSet *vfmig_ticket_set_new(void)
{
        VfmigTicketSet *s = g_new0(VfmigTicketSet, 1);

        s->used = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        return s;
}

void vfmig_ticket_set_free(VfmigTicketSet *s)
{
        if (!s)
                return;
        g_hash_table_unref(s->used);
        g_free(s);
}

static char *ticket_digest(const char *ticket)
{
        return g_compute_checksum_for_string(G_CHECKSUM_SHA256, ticket, -1);
}

static gboolean is_expired(gpointer key, gpointer value, gpointer now)
{
        return vfmig_ticket_expired(*(uint64_t *) value, *(uint64_t *) now);
}

int vfmig_ticket_set_use(VfmigTicketSet *s, const char *ticket, uint64_t expires_usec, uint64_t now_usec)
{
        uint8_t raw[VFMIG_TICKET_BYTES];
        g_autofree char *digest = NULL;
        uint64_t *exp;

        if (vfmig_ticket_decode(ticket, raw) < 0)
                return -EINVAL;
        explicit_bzero(raw, sizeof(raw));
        g_hash_table_foreach_remove(s->used, is_expired, &now_usec);
        digest = ticket_digest(ticket);
        if (g_hash_table_contains(s->used, digest))
                return -EALREADY;
        if (vfmig_ticket_expired(expires_usec, now_usec))
                return -EKEYEXPIRED;
        if (g_hash_table_size(s->used) >= VFMIG_TICKET_SET_MAX)
                return -ENOSPC;
        exp = g_new(uint64_t, 1);
        *exp = expires_usec;
        g_hash_table_insert(s->used, g_steal_pointer(&digest), exp);
        return 0;
}

bool vfmig_ticket_set_contains(VfmigTicketSet *s, const char *ticket)
{
        g_autofree char *digest = ticket_digest(ticket);

        return g_hash_table_contains(s->used, digest);
}
