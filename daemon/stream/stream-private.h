/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* stream-private.h — little-endian helpers and record framing shared by the
 * writer and the parser. */
#pragma once

#include <endian.h>
#include <inttypes.h>
#include <string.h>

#include "crc32c.h"
#include "stream.h"

static inline void put_le16(uint8_t *p, uint16_t v)
{
        v = htole16(v);
        memcpy(p, &v, sizeof(v));
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
        v = htole32(v);
        memcpy(p, &v, sizeof(v));
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
        v = htole64(v);
        memcpy(p, &v, sizeof(v));
}

static inline uint16_t get_le16(const uint8_t *p)
{
        uint16_t v;

        memcpy(&v, p, sizeof(v));
        return le16toh(v);
}

static inline uint32_t get_le32(const uint8_t *p)
{
        uint32_t v;

        memcpy(&v, p, sizeof(v));
        return le32toh(v);
}

static inline uint64_t get_le64(const uint8_t *p)
{
        uint64_t v;

        memcpy(&v, p, sizeof(v));
        return le64toh(v);
}

/* Fill the record header at frame[0..15] and the trailer after the payload
 * (which is at frame + 16, len bytes).  Returns the frame size. */
static inline size_t stream_frame_record(uint8_t *frame, uint8_t type, uint16_t device,
                                         uint32_t len, uint32_t seq)
{
        uint32_t crc;

        frame[0] = type;
        frame[1] = 0;
        put_le16(frame + 2, device);
        put_le32(frame + 4, len);
        put_le32(frame + 8, seq);
        put_le32(frame + 12, vfmig_crc32c(0, frame, 12));
        crc = vfmig_crc32c(0, frame, VFMIG_STREAM_RECORD_HEADER_SIZE);
        crc = vfmig_crc32c(crc, frame + VFMIG_STREAM_RECORD_HEADER_SIZE, len);
        put_le32(frame + VFMIG_STREAM_RECORD_HEADER_SIZE + len, crc);
        return VFMIG_STREAM_RECORD_OVERHEAD + (size_t) len;
}

/* Append a whole record with the payload copied from payload. */
static inline void stream_append_record(GByteArray *out, uint8_t type, uint16_t device,
                                        const void *payload, uint32_t len, uint32_t seq)
{
        guint at = out->len;

        g_byte_array_set_size(out, at + VFMIG_STREAM_RECORD_OVERHEAD + len);
        if (len > 0)
                memcpy(out->data + at + VFMIG_STREAM_RECORD_HEADER_SIZE, payload, len);
        stream_frame_record(out->data + at, type, device, len, seq);
}

/* The preamble: magic, u16 version, u16 flags (0), u32 CRC32C of bytes 0..11. */
static inline void stream_preamble(uint8_t p[VFMIG_STREAM_PREAMBLE_SIZE])
{
        memcpy(p, VFMIG_STREAM_MAGIC, VFMIG_STREAM_MAGIC_SIZE);
        put_le16(p + 8, VFMIG_STREAM_VERSION);
        put_le16(p + 10, 0);
        put_le32(p + 12, vfmig_crc32c(0, p, 12));
}

/* Payload size limits per type (minimum, maximum); false for an unknown type. */
static inline bool stream_record_limits(unsigned type, uint32_t *ret_min, uint32_t *ret_max)
{
        switch (type) {
        case VFMIG_STREAM_REC_HEADER:
                *ret_min = 2, *ret_max = VFMIG_STREAM_MAX_HEADER;
                return true;
        case VFMIG_STREAM_REC_PRECOPY:
        case VFMIG_STREAM_REC_STOPCOPY:
                *ret_min = 1, *ret_max = VFMIG_STREAM_MAX_DATA;
                return true;
        case VFMIG_STREAM_REC_DEVICE_END:
        case VFMIG_STREAM_REC_PROGRESS:
                *ret_min = *ret_max = 16;
                return true;
        case VFMIG_STREAM_REC_END:
                *ret_min = 8 + 16, *ret_max = 8 + 16 * VFMIG_STREAM_MAX_DEVICES;
                return true;
        case VFMIG_STREAM_REC_COMMIT:
                *ret_min = *ret_max = 4;
                return true;
        case VFMIG_STREAM_REC_ABORT:
        case VFMIG_STREAM_REC_RESULT:
                *ret_min = 4, *ret_max = 4 + VFMIG_STREAM_MAX_REASON;
                return true;
        default:
                return false;
        }
}

/* The reason text of ABORT/RESULT: at most max bytes, cut at a UTF-8
 * character boundary, invalid UTF-8 replaced; a new string. */
char *stream_reason_sanitize(const char *reason, size_t len);
