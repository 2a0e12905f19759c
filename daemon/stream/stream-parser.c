/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * stream-parser.c — incremental parser of the migration stream.  Bytes go in
 * any segmentation; the parser asks for at most the rest of the current
 * record, keeps one record (<= 1 MiB + 4 bytes) and checks everything a
 * record says before reporting it: checksums, sequence, order, counts.
 */
#include <errno.h>
#include <stdarg.h>

#include "stream-private.h"

typedef enum ParserState {
        PS_PREAMBLE,
        PS_RECORD_HEADER,
        PS_BODY,
        PS_DONE,
        PS_FAILED,
} ParserState;

typedef struct ParserDevice {
        uint64_t bytes;
        uint64_t records;
        bool stopcopy;
        bool ended;
} ParserDevice;

/* What a parser reads: the stream, the target's answer, or the source's
 * confirmation after the END of a stream. */
typedef enum ParserMode {
        PM_STREAM,
        PM_REPLY,                       /* reverse direction: one RESULT record */
        PM_COMMIT,                      /* after END: one COMMIT record */
} ParserMode;

struct VfmigStreamParser {
        ParserMode mode;
        bool reply;                     /* mode != PM_STREAM: one record, no preamble */
        ParserState state;
        uint8_t small[VFMIG_STREAM_RECORD_HEADER_SIZE];  /* preamble / record header */
        uint8_t *body;                  /* payload + trailer of the current record */
        size_t body_alloc;
        size_t have, need;
        uint64_t offset;                /* bytes consumed */
        uint64_t record_offset;         /* where the current record starts */
        uint32_t seq;                   /* expected sequence number */
        uint8_t type;
        uint16_t device;
        uint32_t len;
        uint32_t crc;                   /* record CRC over the header and body[0..crc_len) */
        size_t crc_len;

        bool have_header;
        bool ended;                     /* END (not ABORT) seen */
        VfmigStreamHeader header;
        ParserDevice dev[VFMIG_STREAM_MAX_DEVICES];
        unsigned n_ended;
        uint64_t total;

        char *reason;
        int error;
        char *message;
};

static VfmigStreamParser *parser_new(ParserMode mode)
{
        VfmigStreamParser *p = g_new0(VfmigStreamParser, 1);

        p->mode = mode;
        p->reply = mode != PM_STREAM;
        p->state = p->reply ? PS_RECORD_HEADER : PS_PREAMBLE;
        p->need = p->reply ? VFMIG_STREAM_RECORD_HEADER_SIZE : VFMIG_STREAM_PREAMBLE_SIZE;
        return p;
}

VfmigStreamParser *vfmig_stream_parser_new(void)
{
        return parser_new(PM_STREAM);
}

VfmigStreamParser *vfmig_stream_parser_new_reply(void)
{
        return parser_new(PM_REPLY);
}

VfmigStreamParser *vfmig_stream_parser_new_commit(const VfmigStreamParser *stream)
{
        VfmigStreamParser *p;

        g_return_val_if_fail(stream && stream->mode == PM_STREAM && stream->ended, NULL);
        p = parser_new(PM_COMMIT);
        p->seq = stream->seq;           /* numbered on from the END record */
        p->offset = stream->offset;     /* offsets in messages stay those of the stream */
        p->record_offset = stream->offset;
        return p;
}

void vfmig_stream_parser_free(VfmigStreamParser *p)
{
        if (!p)
                return;
        vfmig_stream_header_clear(&p->header);
        g_free(p->body);
        g_free(p->reason);
        g_free(p->message);
        g_free(p);
}

static int parser_fail(VfmigStreamParser *p, int error, uint64_t at, const char *fmt, ...) G_GNUC_PRINTF(4, 5);
static int parser_fail(VfmigStreamParser *p, int error, uint64_t at, const char *fmt, ...)
{
        g_autofree char *what = NULL;
        va_list ap;

        va_start(ap, fmt);
        what = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        g_free(p->message);
        p->message = g_strdup_printf("%s at stream offset %" PRIu64, what, at);
        p->error = error;
        p->state = PS_FAILED;
        return error;
}

static const char *type_name(unsigned type)
{
        const char *s = vfmig_stream_record_type_to_string(type);

        return s ? s : "unknown";
}

void *vfmig_stream_parser_space(VfmigStreamParser *p, size_t *ret_size)
{
        switch (p->state) {
        case PS_PREAMBLE:
        case PS_RECORD_HEADER:
                *ret_size = p->need - p->have;
                return p->small + p->have;
        case PS_BODY:
                *ret_size = p->need - p->have;
                return p->body + p->have;
        default:
                *ret_size = 0;
                return NULL;
        }
}

static void expect(VfmigStreamParser *p, ParserState st, size_t need)
{
        p->state = st;
        p->have = 0;
        p->need = need;
}

static int on_preamble(VfmigStreamParser *p)
{
        uint16_t version;

        if (memcmp(p->small, VFMIG_STREAM_MAGIC, VFMIG_STREAM_MAGIC_SIZE) != 0)
                return parser_fail(p, -EBADMSG, 0, "not a vfmig stream (bad magic)");
        version = get_le16(p->small + 8);
        if (version != VFMIG_STREAM_VERSION)
                return parser_fail(p, -EPROTONOSUPPORT, 8,
                                   "stream format version %u, this side reads only version %d",
                                   version, VFMIG_STREAM_VERSION);
        if (get_le32(p->small + 12) != vfmig_crc32c(0, p->small, 12))
                return parser_fail(p, -EBADMSG, 12, "preamble checksum mismatch");
        if (get_le16(p->small + 10) != 0)
                return parser_fail(p, -EBADMSG, 10, "preamble flags 0x%04x set (must be 0)",
                                   get_le16(p->small + 10));
        expect(p, PS_RECORD_HEADER, VFMIG_STREAM_RECORD_HEADER_SIZE);
        return 0;
}

/* Everything the record header alone lets us check, before reading the payload. */
static int on_record_header(VfmigStreamParser *p)
{
        const uint8_t *h = p->small;
        uint64_t at = p->record_offset;
        uint32_t min, max, seq;
        ParserDevice *d = NULL;

        if (get_le32(h + 12) != vfmig_crc32c(0, h, 12))
                return parser_fail(p, -EBADMSG, at, "record header checksum mismatch");
        p->type = h[0];
        p->device = get_le16(h + 2);
        p->len = get_le32(h + 4);
        seq = get_le32(h + 8);
        if (h[1] != 0)
                return parser_fail(p, -EBADMSG, at + 1, "record flags 0x%02x set (must be 0)", h[1]);
        if (!stream_record_limits(p->type, &min, &max))
                return parser_fail(p, -EPROTO, at, "unknown record type 0x%02x", p->type);
        if (p->len > max)
                return parser_fail(p, -EMSGSIZE, at + 4, "%s record of %" PRIu32 " bytes exceeds the limit of %" PRIu32,
                                   type_name(p->type), p->len, max);
        if (p->len < min)
                return parser_fail(p, -EBADMSG, at + 4, "%s record of %" PRIu32 " bytes is shorter than %" PRIu32,
                                   type_name(p->type), p->len, min);
        if (seq != p->seq)
                return parser_fail(p, -EBADMSG, at + 8,
                                   "record sequence number %" PRIu32 " where %" PRIu32 " was due (record missing, repeated or out of order)",
                                   seq, p->seq);

        /* Which device the record is about, and whether it may come now. */
        if (p->reply) {
                uint8_t due = p->mode == PM_COMMIT ? VFMIG_STREAM_REC_COMMIT : VFMIG_STREAM_REC_RESULT;

                if (p->type != due || p->device != VFMIG_STREAM_NO_DEVICE)
                        return parser_fail(p, -EBADMSG, at, "%s record where a %s record was due",
                                           type_name(p->type), type_name(due));
                goto ok;
        }
        switch (p->type) {
        case VFMIG_STREAM_REC_PRECOPY:
        case VFMIG_STREAM_REC_STOPCOPY:
        case VFMIG_STREAM_REC_DEVICE_END:
                if (!p->have_header)
                        break;
                if (p->device >= p->header.n_devices)
                        return parser_fail(p, -EBADMSG, at + 2, "%s record for device %u of a %u-device stream",
                                           type_name(p->type), p->device, p->header.n_devices);
                d = &p->dev[p->device];
                if (d->ended)
                        return parser_fail(p, -EBADMSG, at, "%s record for device %u after its end record",
                                           type_name(p->type), p->device);
                if (p->type == VFMIG_STREAM_REC_PRECOPY && !p->header.precopy)
                        return parser_fail(p, -EBADMSG, at, "precopy record in a stream whose header has no precopy");
                if (p->type == VFMIG_STREAM_REC_PRECOPY && d->stopcopy)
                        return parser_fail(p, -EBADMSG, at, "precopy record for device %u after its stop-copy data",
                                           p->device);
                goto ok;
        case VFMIG_STREAM_REC_HEADER:
                if (p->have_header)
                        break;
                if (p->device != VFMIG_STREAM_NO_DEVICE)
                        return parser_fail(p, -EBADMSG, at + 2, "header record with device %u", p->device);
                goto ok;
        case VFMIG_STREAM_REC_END:
        case VFMIG_STREAM_REC_PROGRESS:
                if (!p->have_header)
                        break;
                if (p->device != VFMIG_STREAM_NO_DEVICE)
                        return parser_fail(p, -EBADMSG, at + 2, "%s record with device %u",
                                           type_name(p->type), p->device);
                if (p->type == VFMIG_STREAM_REC_END && p->n_ended != p->header.n_devices)
                        return parser_fail(p, -EBADMSG, at, "end record before the end of every device (%u of %u ended)",
                                           p->n_ended, p->header.n_devices);
                goto ok;
        case VFMIG_STREAM_REC_ABORT:
                if (p->device != VFMIG_STREAM_NO_DEVICE &&
                    (!p->have_header || p->device >= p->header.n_devices))
                        return parser_fail(p, -EBADMSG, at + 2, "abort record for unknown device %u", p->device);
                goto ok;
        case VFMIG_STREAM_REC_RESULT:
        case VFMIG_STREAM_REC_COMMIT:
                break;
        }
        return parser_fail(p, -EBADMSG, at, "%s record out of order (%s)", type_name(p->type),
                           p->have_header ? "after the header" : "before the header");
ok:
        if (p->body_alloc < (size_t) p->len + VFMIG_STREAM_RECORD_TRAILER_SIZE) {
                p->body_alloc = (size_t) p->len + VFMIG_STREAM_RECORD_TRAILER_SIZE;
                g_free(p->body);
                p->body = g_malloc(p->body_alloc);
        }
        /* The record CRC runs as the payload arrives, over bytes still in the cache. */
        p->crc = vfmig_crc32c(0, p->small, VFMIG_STREAM_RECORD_HEADER_SIZE);
        p->crc_len = 0;
        expect(p, PS_BODY, (size_t) p->len + VFMIG_STREAM_RECORD_TRAILER_SIZE);
        return 0;
}

static int on_status(VfmigStreamParser *p, VfmigStreamEvent *ev, uint32_t max_error)
{
        uint32_t e = get_le32(p->body);

        if (e > max_error || (p->type == VFMIG_STREAM_REC_ABORT && e == 0))
                return parser_fail(p, -EBADMSG, p->record_offset + VFMIG_STREAM_RECORD_HEADER_SIZE,
                                   "%s record with error code %" PRIu32, type_name(p->type), e);
        g_free(p->reason);
        p->reason = stream_reason_sanitize((const char *) p->body + 4, p->len - 4);
        ev->error = (int) e;
        ev->reason = p->reason;
        ev->device = p->device;
        return 0;
}

static int on_body(VfmigStreamParser *p, VfmigStreamEvent *ev)
{
        uint64_t at = p->record_offset, pl_at = at + VFMIG_STREAM_RECORD_HEADER_SIZE;
        const uint8_t *b = p->body;
        ParserDevice *d;
        int r;

        g_assert(p->crc_len == p->len);
        if (p->crc != get_le32(b + p->len))
                return parser_fail(p, -EBADMSG, pl_at + p->len, "%s record checksum mismatch (record at %" PRIu64 ")",
                                   type_name(p->type), at);

        switch (p->type) {
        case VFMIG_STREAM_REC_HEADER: {
                g_autofree char *err = NULL;

                r = vfmig_stream_header_from_json((const char *) b, p->len, &p->header, &err);
                if (r < 0)
                        return parser_fail(p, r, pl_at, "%s", err);
                p->have_header = true;
                ev->type = VFMIG_STREAM_EVENT_HEADER;
                ev->device = VFMIG_STREAM_NO_DEVICE;
                break;
        }
        case VFMIG_STREAM_REC_PRECOPY:
        case VFMIG_STREAM_REC_STOPCOPY:
                d = &p->dev[p->device];
                d->bytes += p->len;
                d->records++;
                p->total += p->len;
                if (p->type == VFMIG_STREAM_REC_STOPCOPY)
                        d->stopcopy = true;
                ev->type = VFMIG_STREAM_EVENT_DATA;
                ev->device = p->device;
                ev->precopy = p->type == VFMIG_STREAM_REC_PRECOPY;
                ev->data = b;
                ev->size = p->len;
                break;
        case VFMIG_STREAM_REC_DEVICE_END:
                d = &p->dev[p->device];
                if (get_le64(b) != d->bytes || get_le64(b + 8) != d->records)
                        return parser_fail(p, -EBADMSG, pl_at,
                                           "device %u end record says %" PRIu64 " bytes in %" PRIu64 " records, the stream carried %" PRIu64 " in %" PRIu64,
                                           p->device, get_le64(b), get_le64(b + 8), d->bytes, d->records);
                d->ended = true;
                p->n_ended++;
                ev->type = VFMIG_STREAM_EVENT_DEVICE_END;
                ev->device = p->device;
                ev->bytes = d->bytes;
                ev->records = d->records;
                break;
        case VFMIG_STREAM_REC_PROGRESS:
                if (get_le64(b) != p->total)
                        return parser_fail(p, -EBADMSG, pl_at, "progress record says %" PRIu64 " bytes sent, the stream carried %" PRIu64,
                                           get_le64(b), p->total);
                ev->type = VFMIG_STREAM_EVENT_PROGRESS;
                ev->device = VFMIG_STREAM_NO_DEVICE;
                ev->bytes = p->total;
                ev->remaining = get_le64(b + 8);
                break;
        case VFMIG_STREAM_REC_END: {
                uint32_t n = get_le32(b);

                if (n != p->header.n_devices || p->len != 8 + 16 * n)
                        return parser_fail(p, -EBADMSG, pl_at, "end record for %" PRIu32 " devices, the header announced %u",
                                           n, p->header.n_devices);
                if (get_le32(b + 4) != 0)
                        return parser_fail(p, -EBADMSG, pl_at + 4, "end record reserved field set");
                for (unsigned i = 0; i < n; i++) {
                        uint64_t bytes = get_le64(b + 8 + 16 * i), records = get_le64(b + 16 + 16 * i);

                        if (bytes != p->dev[i].bytes || records != p->dev[i].records)
                                return parser_fail(p, -EBADMSG, pl_at + 8 + 16 * i,
                                                   "end record says device %u sent %" PRIu64 " bytes in %" PRIu64 " records, the stream carried %" PRIu64 " in %" PRIu64,
                                                   i, bytes, records, p->dev[i].bytes, p->dev[i].records);
                }
                ev->type = VFMIG_STREAM_EVENT_END;
                ev->device = VFMIG_STREAM_NO_DEVICE;
                ev->bytes = p->total;
                p->state = PS_DONE;
                p->ended = true;
                break;
        }
        case VFMIG_STREAM_REC_COMMIT:
                if (get_le32(b) != 0)
                        return parser_fail(p, -EBADMSG, pl_at, "commit record reserved field set");
                ev->type = VFMIG_STREAM_EVENT_COMMIT;
                ev->device = VFMIG_STREAM_NO_DEVICE;
                p->state = PS_DONE;
                break;
        case VFMIG_STREAM_REC_ABORT:
                r = on_status(p, ev, 4095);
                if (r < 0)
                        return r;
                ev->type = VFMIG_STREAM_EVENT_ABORT;
                p->state = PS_DONE;
                break;
        case VFMIG_STREAM_REC_RESULT:
                r = on_status(p, ev, 4095);
                if (r < 0)
                        return r;
                ev->type = VFMIG_STREAM_EVENT_RESULT;
                p->state = PS_DONE;
                break;
        }

        p->seq++;
        if (p->state != PS_DONE)
                expect(p, PS_RECORD_HEADER, VFMIG_STREAM_RECORD_HEADER_SIZE);
        p->record_offset = p->offset;
        return 0;
}

int vfmig_stream_parser_commit(VfmigStreamParser *p, size_t n, VfmigStreamEvent *ev)
{
        *ev = (VfmigStreamEvent) { .type = VFMIG_STREAM_EVENT_NONE };

        if (p->state == PS_FAILED)
                return p->error;
        if (n == 0)
                return 0;
        if (p->state == PS_DONE)
                return parser_fail(p, -EBADMSG, p->offset, "%zu bytes after the end of the stream", n);
        g_return_val_if_fail(n <= p->need - p->have, -EINVAL);

        p->have += n;
        p->offset += n;
        if (p->state == PS_BODY && p->crc_len < p->len) {
                size_t upto = MIN(p->have, (size_t) p->len);

                if (upto > p->crc_len) {
                        p->crc = vfmig_crc32c(p->crc, p->body + p->crc_len, upto - p->crc_len);
                        p->crc_len = upto;
                }
        }
        if (p->have < p->need)
                return 0;

        switch (p->state) {
        case PS_PREAMBLE: {
                int r = on_preamble(p);

                p->record_offset = p->offset;
                return r;
        }
        case PS_RECORD_HEADER:
                return on_record_header(p);
        case PS_BODY:
                return on_body(p, ev);
        default:
                g_assert_not_reached();
        }
}

ssize_t vfmig_stream_parser_push(VfmigStreamParser *p, const void *buf, size_t n, VfmigStreamEvent *ev)
{
        const uint8_t *in = buf;
        size_t used = 0;

        *ev = (VfmigStreamEvent) { .type = VFMIG_STREAM_EVENT_NONE };
        if (p->state == PS_FAILED)
                return p->error;

        while (used < n) {
                size_t room, k;
                void *dst = vfmig_stream_parser_space(p, &room);
                int r;

                if (!dst)
                        return vfmig_stream_parser_commit(p, n - used, ev);   /* trailing bytes: an error */
                k = MIN(room, n - used);
                memcpy(dst, in + used, k);
                used += k;
                r = vfmig_stream_parser_commit(p, k, ev);
                if (r < 0)
                        return r;
                if (ev->type != VFMIG_STREAM_EVENT_NONE)
                        break;
        }
        return (ssize_t) used;
}

int vfmig_stream_parser_finish(VfmigStreamParser *p)
{
        if (p->state == PS_FAILED)
                return p->error;
        if (p->state == PS_DONE)
                return 0;
        if (p->state == PS_BODY || p->have > 0)
                return parser_fail(p, -ENODATA, p->offset, "stream truncated inside a %s",
                                   p->state == PS_PREAMBLE ? "preamble" :
                                   p->state == PS_RECORD_HEADER ? "record header" : type_name(p->type));
        return parser_fail(p, -ENODATA, p->offset, "stream ended before its %s",
                           p->mode == PM_REPLY ? "result record" :
                           p->mode == PM_COMMIT ? "commit record" :
                           p->state == PS_PREAMBLE ? "preamble" :
                           p->have_header ? "end record" : "header record");
}

const VfmigStreamHeader *vfmig_stream_parser_header(VfmigStreamParser *p)
{
        return p->have_header ? &p->header : NULL;
}

int vfmig_stream_parser_error(VfmigStreamParser *p)
{
        return p->state == PS_FAILED ? p->error : 0;
}

const char *vfmig_stream_parser_error_message(VfmigStreamParser *p)
{
        return p->state == PS_FAILED ? p->message : NULL;
}

uint64_t vfmig_stream_parser_offset(VfmigStreamParser *p)
{
        return p->offset;
}

bool vfmig_stream_parser_done(VfmigStreamParser *p)
{
        return p->state == PS_DONE;
}
