/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * stream-ticket.h — single-use tickets and the TLS PSK derived from them.
 *
 * A ticket is 32 random bytes, written as 43 characters of unpadded base64url.
 * The target hands it out with an endpoint (PrepareIncoming); both peers
 * derive from it, with HKDF-SHA256, the 32-byte TLS 1.3 PSK and the PSK
 * identity (which travels in clear in the ClientHello and reveals nothing of
 * the key).  A wrong ticket gives a different identity and key: the handshake
 * fails on both sides before any stream byte moves.
 *
 *   PRK      = HKDF-Extract(salt = "vfmig-stream-psk-v1", IKM = ticket bytes)
 *   key      = HKDF-Expand(PRK, "vfmig psk key"      || 0x00 || context, 32)
 *   identity = "vfmig1-" || base64url(HKDF-Expand(PRK, "vfmig psk identity" || 0x00 || context, 18))
 *
 * context is a byte string both peers know beforehand ("" when none).
 * vfmigd's jobs use VFMIG_PSK_CONTEXT, the empty context, on both sides:
 * the source knows nothing of the target but the endpoint and the ticket, so
 * a context such as the reservation id would have to travel with the ticket
 * and would bind nothing the ticket does not already bind.  The ticket is 256
 * random bits made for one listener (PrepareIncoming) or handed to both
 * peers for one socket (fd mode), used once (the replay set), and it expires
 * with the reservation(s) it was made for: that is the binding.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#define VFMIG_TICKET_BYTES   32
#define VFMIG_TICKET_STRLEN  43         /* unpadded base64url of 32 bytes */
#define VFMIG_PSK_KEY_BYTES  32
#define VFMIG_PSK_IDENTITY_MAX 64
#define VFMIG_PSK_CONTEXT      ""       /* what jobs derive with (see above) */

typedef struct VfmigPsk {
        char identity[VFMIG_PSK_IDENTITY_MAX];  /* NUL-terminated, printable */
        uint8_t key[VFMIG_PSK_KEY_BYTES];
} VfmigPsk;

/* A new random ticket (GnuTLS key-level randomness), a new string.
 * -ELIBACC / -EOPNOTSUPP when GnuTLS cannot be loaded (tls-lib.h: its first
 * use loads it; the reason is logged), -EIO when it fails. */
int vfmig_ticket_new(char **ret);

/* Decode a ticket string: -EINVAL unless exactly 43 base64url characters
 * (canonical: the unused low bits of the last character are zero). */
int vfmig_ticket_decode(const char *ticket, uint8_t ret[VFMIG_TICKET_BYTES]);

/* Derive the PSK and identity from a ticket string and a context (NULL = "").
 * -EINVAL for a malformed ticket, -ELIBACC / -EOPNOTSUPP when GnuTLS cannot
 * be loaded (as vfmig_ticket_new()), -EIO when GnuTLS fails. */
int vfmig_psk_derive(const char *ticket, const char *context, VfmigPsk *ret);

/* Wipe a PSK.  Wiping, decoding (above) and the replay set (below) need no
 * GnuTLS and do not load it. */
void vfmig_psk_clear(VfmigPsk *psk);

/* Whether a ticket expiring at expires_usec (CLOCK_REALTIME µs; 0 = never)
 * has expired at now_usec. */
bool vfmig_ticket_expired(uint64_t expires_usec, uint64_t now_usec);

/*
 * Replay protection: the set of tickets already used.  It keeps a SHA-256 of
 * each ticket (never the ticket) until the ticket's expiry, then forgets it
 * (an expired ticket is refused by its expiry anyway).
 */
typedef struct VfmigTicketSet VfmigTicketSet;

VfmigTicketSet *vfmig_ticket_set_new(void);
void vfmig_ticket_set_free(VfmigTicketSet *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfmigTicketSet, vfmig_ticket_set_free)

/* Use a ticket once: 0 the first time, -EALREADY when it was used before,
 * -EKEYEXPIRED when expired, -EINVAL when malformed, -ENOSPC when the set
 * holds VFMIG_TICKET_SET_MAX live entries. */
#define VFMIG_TICKET_SET_MAX 65536
int vfmig_ticket_set_use(VfmigTicketSet *s, const char *ticket, uint64_t expires_usec, uint64_t now_usec);

/* Whether the ticket was used (and is still remembered). */
bool vfmig_ticket_set_contains(VfmigTicketSet *s, const char *ticket);
