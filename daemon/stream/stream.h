/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * stream.h — the vfmig migration stream, format version 1: the header,
 * a writer and an incremental parser.  The byte-exact format is in
 * doc/stream-protocol.md; the constants below are the authoritative values.
 *
 *   preamble (16 bytes) | HEADER record (JSON) | data / control records ... |
 *   STREAM_END record   (or an ABORT record at any point)
 *
 * Every record: a 16-byte record header (type, flags, device, length,
 * sequence number, CRC32C of the first 12 bytes), the payload, and a 4-byte
 * CRC32C of the 16 header bytes followed by the payload.  The reverse
 * direction (target -> source) carries one RESULT record, without preamble.
 *
 * The writer and the parser do no I/O and keep no state proportional to the
 * device state size: the parser holds at most one record.  Errors are negative
 * errnos; the parser keeps a message saying what was wrong and at which byte
 * offset of the stream:
 *   -EBADMSG          corrupt: magic, checksum, flags, sequence, order,
 *                     malformed payload or header JSON, count mismatch,
 *                     bytes after the end
 *   -EPROTONOSUPPORT  a stream format version other than 1
 *   -EMSGSIZE         a record longer than its type allows
 *   -EPROTO           an unknown record type (a newer writer)
 *   -ENODATA          the stream ended early (vfmig_stream_parser_finish())
 * Not thread-safe; no sd-bus; GLib/json-glib for data only.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define VFMIG_STREAM_MAGIC              "VFMIGSTM"
#define VFMIG_STREAM_MAGIC_SIZE         8
#define VFMIG_STREAM_VERSION            1
#define VFMIG_STREAM_PREAMBLE_SIZE      16
#define VFMIG_STREAM_RECORD_HEADER_SIZE 16
#define VFMIG_STREAM_RECORD_TRAILER_SIZE 4
#define VFMIG_STREAM_RECORD_OVERHEAD    (VFMIG_STREAM_RECORD_HEADER_SIZE + VFMIG_STREAM_RECORD_TRAILER_SIZE)

#define VFMIG_STREAM_MAX_DATA           (1024u * 1024u)    /* payload of a data record */
#define VFMIG_STREAM_MAX_HEADER         (256u * 1024u)     /* JSON of the header record */
#define VFMIG_STREAM_MAX_REASON         4096u              /* reason text of ABORT/RESULT */
#define VFMIG_STREAM_MAX_DEVICES        64u
#define VFMIG_STREAM_NO_DEVICE          0xffffu            /* device field of stream-level records */

typedef enum VfmigStreamRecordType {
        VFMIG_STREAM_REC_HEADER = 0x01,
        VFMIG_STREAM_REC_PRECOPY = 0x02,
        VFMIG_STREAM_REC_STOPCOPY = 0x03,
        VFMIG_STREAM_REC_DEVICE_END = 0x04,
        VFMIG_STREAM_REC_END = 0x05,
        VFMIG_STREAM_REC_ABORT = 0x06,
        VFMIG_STREAM_REC_PROGRESS = 0x07,
        VFMIG_STREAM_REC_RESULT = 0x08,         /* reverse direction only */
        VFMIG_STREAM_REC_COMMIT = 0x09,         /* after END, once the source read a RESULT 0 */
} VfmigStreamRecordType;

/* "header", "precopy", ..., or NULL for an unknown type. */
const char *vfmig_stream_record_type_to_string(unsigned type);

/* ---- header ---- */

typedef struct VfmigStreamHeaderDevice {
        JsonObject *profile;            /* opaque here (the compat module checks it); a reference */
        uint64_t bytes_estimate;        /* 0 = unknown */
} VfmigStreamHeaderDevice;

typedef struct VfmigStreamHeader {
        unsigned n_devices;             /* 1..VFMIG_STREAM_MAX_DEVICES */
        VfmigStreamHeaderDevice devices[VFMIG_STREAM_MAX_DEVICES];
        bool tls;                       /* the transport the source uses: TLS or plaintext */
        bool precopy;                   /* PRECOPY records may follow */
        uint64_t downtime_budget_ms;    /* 0 = none given */
} VfmigStreamHeader;

/* Drop the profile references; the struct can be reused. */
void vfmig_stream_header_clear(VfmigStreamHeader *h);

/* Set device i's profile (takes a new reference). */
void vfmig_stream_header_set_profile(VfmigStreamHeader *h, unsigned i, JsonObject *profile);

/* Serialize to the header record's JSON text (a new string).  -EINVAL for a
 * device count out of range or a missing profile. */
int vfmig_stream_header_to_json(const VfmigStreamHeader *h, char **ret);

/* Parse and check the header record's JSON (len bytes, need not be NUL
 * terminated).  -EBADMSG with *ret_error set (may be NULL) when malformed. */
int vfmig_stream_header_from_json(const char *json, size_t len, VfmigStreamHeader *ret, char **ret_error);

/* ---- writer ---- */

typedef struct VfmigStreamWriter VfmigStreamWriter;

/* A writer for this header (copied).  -EINVAL for an invalid header. */
int vfmig_stream_writer_new(const VfmigStreamHeader *h, VfmigStreamWriter **ret);
void vfmig_stream_writer_free(VfmigStreamWriter *w);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfmigStreamWriter, vfmig_stream_writer_free)

/* Append the preamble and the HEADER record to out.  Once, first. */
int vfmig_stream_writer_begin(VfmigStreamWriter *w, GByteArray *out);

/*
 * Frame a data record in place (no copy): frame holds
 * VFMIG_STREAM_RECORD_HEADER_SIZE bytes of room, then the payload_len payload
 * bytes (1..VFMIG_STREAM_MAX_DATA), then VFMIG_STREAM_RECORD_TRAILER_SIZE
 * bytes of room; header and trailer are filled.  Returns the frame size.
 * -EINVAL for a bad device or length, -EPROTO when the record is out of order
 * (before begin, after the device's end, PRECOPY without header.precopy or
 * after that device's first STOPCOPY record, after the stream end).
 */
ssize_t vfmig_stream_writer_frame_data(VfmigStreamWriter *w, bool precopy, unsigned device,
                                       uint8_t *frame, size_t payload_len);

/* The same from a buffer of any size (split into records), appended to out. */
int vfmig_stream_writer_data(VfmigStreamWriter *w, bool precopy, unsigned device,
                             const void *buf, size_t n, GByteArray *out);

/* DEVICE_END for device (its byte and record counts); once per device. */
int vfmig_stream_writer_device_end(VfmigStreamWriter *w, unsigned device, GByteArray *out);

/* PROGRESS: data bytes written so far and the source's estimate of what is
 * left (UINT64_MAX = unknown); also a keepalive. */
int vfmig_stream_writer_progress(VfmigStreamWriter *w, uint64_t remaining, GByteArray *out);

/* STREAM_END with every device's counts; all devices must have ended. */
int vfmig_stream_writer_end(VfmigStreamWriter *w, GByteArray *out);

/* COMMIT: after END, when the target answered RESULT 0; the source will not
 * resume its devices.  -EPROTO before END or after ABORT; once. */
int vfmig_stream_writer_commit(VfmigStreamWriter *w, GByteArray *out);

/* ABORT (error > 0, an errno; reason <= VFMIG_STREAM_MAX_REASON bytes of
 * UTF-8, truncated otherwise); allowed at any point before the end, also
 * before begin (the preamble is written first then). */
int vfmig_stream_writer_abort(VfmigStreamWriter *w, int error, const char *reason, GByteArray *out);

/* Whether END or ABORT was written. */
bool vfmig_stream_writer_finished(VfmigStreamWriter *w);

/* Payload bytes / data records written for device so far. */
uint64_t vfmig_stream_writer_device_bytes(VfmigStreamWriter *w, unsigned device);
uint64_t vfmig_stream_writer_total_bytes(VfmigStreamWriter *w);

/* The reverse direction's one RESULT record: error 0 = success, else an
 * errno > 0 and a reason. */
int vfmig_stream_result_record(int error, const char *reason, GByteArray *out);

/* ---- parser ---- */

typedef enum VfmigStreamEventType {
        VFMIG_STREAM_EVENT_NONE,        /* more bytes needed */
        VFMIG_STREAM_EVENT_HEADER,      /* header: vfmig_stream_parser_header() */
        VFMIG_STREAM_EVENT_DATA,        /* device, precopy, data, size */
        VFMIG_STREAM_EVENT_DEVICE_END,  /* device, bytes, records (verified) */
        VFMIG_STREAM_EVENT_PROGRESS,    /* bytes, remaining */
        VFMIG_STREAM_EVENT_END,         /* the stream is complete and its counts verified */
        VFMIG_STREAM_EVENT_ABORT,       /* device (or NO_DEVICE), error, reason: the peer gave up */
        VFMIG_STREAM_EVENT_RESULT,      /* reply parser: error (0 = success), reason */
        VFMIG_STREAM_EVENT_COMMIT,      /* commit parser: the source confirmed the end */
} VfmigStreamEventType;

typedef struct VfmigStreamEvent {
        VfmigStreamEventType type;
        unsigned device;
        bool precopy;
        const uint8_t *data;            /* DATA: valid until the next parser call */
        size_t size;
        uint64_t bytes;                 /* DEVICE_END, PROGRESS */
        uint64_t records;               /* DEVICE_END */
        uint64_t remaining;             /* PROGRESS */
        int error;                      /* ABORT, RESULT: a positive errno (0 = success) */
        const char *reason;             /* ABORT, RESULT: valid until the next parser call */
} VfmigStreamEvent;

typedef struct VfmigStreamParser VfmigStreamParser;

/* A parser for the forward stream. */
VfmigStreamParser *vfmig_stream_parser_new(void);
/* A parser for the reverse direction: exactly one RESULT record. */
VfmigStreamParser *vfmig_stream_parser_new_reply(void);
/* A parser for what may follow the END record that stream (a parser that
 * reported END) ended with: exactly one COMMIT record, numbered next. */
VfmigStreamParser *vfmig_stream_parser_new_commit(const VfmigStreamParser *stream);
void vfmig_stream_parser_free(VfmigStreamParser *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfmigStreamParser, vfmig_stream_parser_free)

/*
 * Zero-copy input: where the next bytes of the stream go, and how many at
 * most (never more than what remains of the current record, so a reader that
 * asks for exactly this never consumes bytes past a record).  NULL and 0 once
 * the stream is complete or failed.  Then vfmig_stream_parser_commit() with
 * the number of bytes put there; it fills *ret with at most one event.
 */
void *vfmig_stream_parser_space(VfmigStreamParser *p, size_t *ret_size);
int vfmig_stream_parser_commit(VfmigStreamParser *p, size_t n, VfmigStreamEvent *ret);

/* Copying input: take bytes from buf until one event is complete or buf is
 * used up; returns the number of bytes taken (call again with the rest), or a
 * negative errno.  Bytes after the end of the stream are an error. */
ssize_t vfmig_stream_parser_push(VfmigStreamParser *p, const void *buf, size_t n, VfmigStreamEvent *ret);

/* The input has ended (EOF): 0 when the stream is complete (END, ABORT, or
 * RESULT in a reply parser, COMMIT in a commit parser), else -ENODATA
 * (truncated). */
int vfmig_stream_parser_finish(VfmigStreamParser *p);

/* After HEADER: the parsed header (owned by the parser). */
const VfmigStreamHeader *vfmig_stream_parser_header(VfmigStreamParser *p);

/* The error (negative errno, 0 = none) and its message (NULL = none). */
int vfmig_stream_parser_error(VfmigStreamParser *p);
const char *vfmig_stream_parser_error_message(VfmigStreamParser *p);

/* Bytes of the stream consumed so far. */
uint64_t vfmig_stream_parser_offset(VfmigStreamParser *p);

/* Whether the stream is complete (END/ABORT seen, or RESULT, or COMMIT). */
bool vfmig_stream_parser_done(VfmigStreamParser *p);
