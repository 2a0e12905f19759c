/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* stream-writer.c — frames records; enforces the order the parser checks. */
#include <errno.h>

#include "stream-private.h"

typedef struct WriterDevice {
        uint64_t bytes;
        uint64_t records;
        bool stopcopy;          /* a STOPCOPY record was written */
        bool ended;
} WriterDevice;

struct VfmigStreamWriter {
        VfmigStreamHeader header;
        WriterDevice dev[VFMIG_STREAM_MAX_DEVICES];
        uint32_t seq;
        uint64_t total;
        bool begun;
        bool finished;
        bool ended;             /* END (not ABORT) written */
        bool committed;
        unsigned n_ended;
};

int vfmig_stream_writer_new(const VfmigStreamHeader *h, VfmigStreamWriter **ret)
{
        VfmigStreamWriter *w;

        if (h->n_devices < 1 || h->n_devices > VFMIG_STREAM_MAX_DEVICES)
                return -EINVAL;
        for (unsigned i = 0; i < h->n_devices; i++)
                if (!h->devices[i].profile)
                        return -EINVAL;

        w = g_new0(VfmigStreamWriter, 1);
        w->header = *h;
        memset(w->header.devices, 0, sizeof(w->header.devices));
        for (unsigned i = 0; i < h->n_devices; i++) {
                w->header.devices[i].bytes_estimate = h->devices[i].bytes_estimate;
                vfmig_stream_header_set_profile(&w->header, i, h->devices[i].profile);
        }
        *ret = w;
        return 0;
}

void vfmig_stream_writer_free(VfmigStreamWriter *w)
{
        if (!w)
                return;
        vfmig_stream_header_clear(&w->header);
        g_free(w);
}

static void append_preamble(GByteArray *out)
{
        uint8_t p[VFMIG_STREAM_PREAMBLE_SIZE];

        stream_preamble(p);
        g_byte_array_append(out, p, sizeof(p));
}

int vfmig_stream_writer_begin(VfmigStreamWriter *w, GByteArray *out)
{
        g_autofree char *json = NULL;
        int r;

        if (w->begun || w->finished)
                return -EPROTO;
        r = vfmig_stream_header_to_json(&w->header, &json);
        if (r < 0)
                return r;
        append_preamble(out);
        stream_append_record(out, VFMIG_STREAM_REC_HEADER, VFMIG_STREAM_NO_DEVICE, json,
                             (uint32_t) strlen(json), w->seq++);
        w->begun = true;
        return 0;
}

static int check_data(VfmigStreamWriter *w, bool precopy, unsigned device, size_t len)
{
        if (device >= w->header.n_devices || len < 1 || len > VFMIG_STREAM_MAX_DATA)
                return -EINVAL;
        if (!w->begun || w->finished || w->dev[device].ended)
                return -EPROTO;
        if (precopy && (!w->header.precopy || w->dev[device].stopcopy))
                return -EPROTO;
        return 0;
}

static void count_data(VfmigStreamWriter *w, bool precopy, unsigned device, size_t len)
{
        w->dev[device].bytes += len;
        w->dev[device].records++;
        if (!precopy)
                w->dev[device].stopcopy = true;
        w->total += len;
}

ssize_t vfmig_stream_writer_frame_data(VfmigStreamWriter *w, bool precopy, unsigned device,
                                       uint8_t *frame, size_t payload_len)
{
        int r = check_data(w, precopy, device, payload_len);

        if (r < 0)
                return r;
        count_data(w, precopy, device, payload_len);
        return (ssize_t) stream_frame_record(frame,
                                             precopy ? VFMIG_STREAM_REC_PRECOPY : VFMIG_STREAM_REC_STOPCOPY,
                                             (uint16_t) device, (uint32_t) payload_len, w->seq++);
}

int vfmig_stream_writer_data(VfmigStreamWriter *w, bool precopy, unsigned device,
                             const void *buf, size_t n, GByteArray *out)
{
        const uint8_t *p = buf;

        if (n == 0)
                return 0;
        while (n > 0) {
                size_t k = MIN(n, (size_t) VFMIG_STREAM_MAX_DATA);
                int r = check_data(w, precopy, device, k);

                if (r < 0)
                        return r;
                count_data(w, precopy, device, k);
                stream_append_record(out, precopy ? VFMIG_STREAM_REC_PRECOPY : VFMIG_STREAM_REC_STOPCOPY,
                                     (uint16_t) device, p, (uint32_t) k, w->seq++);
                p += k;
                n -= k;
        }
        return 0;
}

int vfmig_stream_writer_device_end(VfmigStreamWriter *w, unsigned device, GByteArray *out)
{
        uint8_t pl[16];

        if (device >= w->header.n_devices)
                return -EINVAL;
        if (!w->begun || w->finished || w->dev[device].ended)
                return -EPROTO;
        put_le64(pl, w->dev[device].bytes);
        put_le64(pl + 8, w->dev[device].records);
        stream_append_record(out, VFMIG_STREAM_REC_DEVICE_END, (uint16_t) device, pl, sizeof(pl), w->seq++);
        w->dev[device].ended = true;
        w->n_ended++;
        return 0;
}

int vfmig_stream_writer_progress(VfmigStreamWriter *w, uint64_t remaining, GByteArray *out)
{
        uint8_t pl[16];

        if (!w->begun || w->finished)
                return -EPROTO;
        put_le64(pl, w->total);
        put_le64(pl + 8, remaining);
        stream_append_record(out, VFMIG_STREAM_REC_PROGRESS, VFMIG_STREAM_NO_DEVICE, pl, sizeof(pl), w->seq++);
        return 0;
}

int vfmig_stream_writer_end(VfmigStreamWriter *w, GByteArray *out)
{
        uint8_t pl[8 + 16 * VFMIG_STREAM_MAX_DEVICES];
        unsigned n = w->header.n_devices;

        if (!w->begun || w->finished || w->n_ended != n)
                return -EPROTO;
        put_le32(pl, n);
        put_le32(pl + 4, 0);
        for (unsigned i = 0; i < n; i++) {
                put_le64(pl + 8 + 16 * i, w->dev[i].bytes);
                put_le64(pl + 8 + 16 * i + 8, w->dev[i].records);
        }
        stream_append_record(out, VFMIG_STREAM_REC_END, VFMIG_STREAM_NO_DEVICE, pl, 8 + 16 * n, w->seq++);
        w->finished = true;
        w->ended = true;
        return 0;
}

int vfmig_stream_writer_commit(VfmigStreamWriter *w, GByteArray *out)
{
        uint8_t pl[4];

        if (!w->ended || w->committed)
                return -EPROTO;
        put_le32(pl, 0);
        stream_append_record(out, VFMIG_STREAM_REC_COMMIT, VFMIG_STREAM_NO_DEVICE, pl, sizeof(pl), w->seq++);
        w->committed = true;
        return 0;
}

static void append_status_record(GByteArray *out, uint8_t type, int error, const char *reason, uint32_t seq)
{
        g_autofree char *text = stream_reason_sanitize(reason, reason ? strlen(reason) : 0);
        size_t len = strlen(text);
        g_autofree uint8_t *pl = g_malloc(4 + len);

        put_le32(pl, (uint32_t) error);
        memcpy(pl + 4, text, len);
        stream_append_record(out, type, VFMIG_STREAM_NO_DEVICE, pl, (uint32_t) (4 + len), seq);
}

int vfmig_stream_writer_abort(VfmigStreamWriter *w, int error, const char *reason, GByteArray *out)
{
        if (error <= 0 || error > 4095)
                return -EINVAL;
        if (w->finished)
                return -EPROTO;
        if (!w->begun) {
                append_preamble(out);
                w->begun = true;
        }
        append_status_record(out, VFMIG_STREAM_REC_ABORT, error, reason, w->seq++);
        w->finished = true;
        return 0;
}

int vfmig_stream_result_record(int error, const char *reason, GByteArray *out)
{
        if (error < 0 || error > 4095)
                return -EINVAL;
        append_status_record(out, VFMIG_STREAM_REC_RESULT, error, reason, 0);
        return 0;
}

bool vfmig_stream_writer_finished(VfmigStreamWriter *w)
{
        return w->finished;
}

uint64_t vfmig_stream_writer_device_bytes(VfmigStreamWriter *w, unsigned device)
{
        return device < w->header.n_devices ? w->dev[device].bytes : 0;
}

uint64_t vfmig_stream_writer_total_bytes(VfmigStreamWriter *w)
{
        return w->total;
}
