/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * test-stream-format — CRC32C vectors, the header JSON, writer -> parser
 * round trips in every segmentation, and every class of broken stream
 * turning into a typed error (never a crash, never a read past a record).
 */
#include <errno.h>
#include <string.h>

#include "crc32c.h"
#include "stream-private.h"
#include "stream.h"

/* ---- CRC32C ---- */

static void test_crc32c_vectors(void)
{
        /* RFC 3720 appendix B.4, and the common check value. */
        uint8_t buf[48];

        memset(buf, 0, 32);
        g_assert_cmphex(vfmig_crc32c(0, buf, 32), ==, 0x8a9136aa);
        g_assert_cmphex(vfmig_crc32c_sw(0, buf, 32), ==, 0x8a9136aa);
        memset(buf, 0xff, 32);
        g_assert_cmphex(vfmig_crc32c(0, buf, 32), ==, 0x62a8ab43);
        g_assert_cmphex(vfmig_crc32c_sw(0, buf, 32), ==, 0x62a8ab43);
        for (unsigned i = 0; i < 32; i++)
                buf[i] = (uint8_t) i;
        g_assert_cmphex(vfmig_crc32c(0, buf, 32), ==, 0x46dd794e);
        g_assert_cmphex(vfmig_crc32c_sw(0, buf, 32), ==, 0x46dd794e);
        for (unsigned i = 0; i < 32; i++)
                buf[i] = (uint8_t) (31 - i);
        g_assert_cmphex(vfmig_crc32c(0, buf, 32), ==, 0x113fdb5c);
        g_assert_cmphex(vfmig_crc32c_sw(0, buf, 32), ==, 0x113fdb5c);

        static const uint8_t iscsi_read[48] = {
                0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
                0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        };
        g_assert_cmphex(vfmig_crc32c(0, iscsi_read, 48), ==, 0xd9963a56);
        g_assert_cmphex(vfmig_crc32c_sw(0, iscsi_read, 48), ==, 0xd9963a56);
        g_assert_cmphex(vfmig_crc32c(0, "123456789", 9), ==, 0xe3069283);
        g_assert_cmphex(vfmig_crc32c(0, "", 0), ==, 0);
}

/* Every method this CPU has (the CRC32 instruction in three lanes of 4 KiB
 * joined by a table shift; carry-less multiply folding of 256-byte rounds,
 * 16-byte steps and a tail) must equal the table code at every length
 * around their strides, at every alignment, from any starting CRC. */
static void test_crc32c_lanes(void)
{
        static const size_t lens[] = {
                0, 1, 7, 8, 15, 16, 255, 256, 1023, 1024, 1025, 1039, 1040, 1280, 1281, 4095,
                4096, 8191, 12287, 12288, 12289, 12295, 12296, 16384, 24575, 24576, 24577,
                36864 + 13, 65536, 100000, 1048576 + 20,
        };
        const size_t max = 1048576 + 64;
        g_autofree uint8_t *buf = g_malloc(max);
        GRand *rnd = g_rand_new_with_seed(11);
        int top = vfmig_crc32c_hw_available();

        g_test_message("CRC32C methods up to %d", top);
        for (size_t i = 0; i < max; i++)
                buf[i] = (uint8_t) g_rand_int(rnd);
        for (int level = 0; level <= top; level++)
                for (size_t l = 0; l < G_N_ELEMENTS(lens); l++)
                        for (size_t off = 0; off < 9; off++) {
                                uint32_t seed = off == 0 ? 0 : g_rand_int(rnd);

                                g_assert_cmphex(vfmig_crc32c_level(level, seed, buf + off, lens[l]), ==,
                                                vfmig_crc32c_sw(seed, buf + off, lens[l]));
                        }
        g_assert_cmphex(vfmig_crc32c(0, buf, max), ==, vfmig_crc32c_level(top, 0, buf, max));
        /* All-ones and all-zero data (the shift tables' and the folds' extremes). */
        for (int level = 0; level <= top; level++) {
                memset(buf, 0xff, 3 * 4096);
                g_assert_cmphex(vfmig_crc32c_level(level, 0, buf, 3 * 4096), ==, vfmig_crc32c_sw(0, buf, 3 * 4096));
                memset(buf, 0, 3 * 4096);
                g_assert_cmphex(vfmig_crc32c_level(level, 0xffffffff, buf, 3 * 4096), ==,
                                vfmig_crc32c_sw(0xffffffff, buf, 3 * 4096));
        }
        g_rand_free(rnd);
}

static void test_crc32c_incremental(void)
{
        g_autofree uint8_t *big = g_malloc(100003);
        GRand *rnd = g_rand_new_with_seed(7);
        uint32_t whole, whole_sw;

        for (size_t i = 0; i < 100003; i++)
                big[i] = (uint8_t) g_rand_int(rnd);
        whole = vfmig_crc32c(0, big, 100003);
        whole_sw = vfmig_crc32c_sw(0, big, 100003);
        g_assert_cmphex(whole, ==, whole_sw);
        for (unsigned t = 0; t < 200; t++) {
                size_t cut = g_rand_int_range(rnd, 0, 100004);
                size_t off = g_rand_int_range(rnd, 0, 9);

                g_assert_cmphex(vfmig_crc32c(vfmig_crc32c(0, big, cut), big + cut, 100003 - cut), ==, whole);
                /* Unaligned starts agree with the table code. */
                g_assert_cmphex(vfmig_crc32c(0, big + off, 1000 - off), ==, vfmig_crc32c_sw(0, big + off, 1000 - off));
        }
        g_rand_free(rnd);
}

/* ---- helpers ---- */

static JsonObject *profile(const char *driver)
{
        JsonObject *o = json_object_new();

        json_object_set_string_member(o, "driver", driver);
        json_object_set_int_member(o, "version", 3);
        return o;
}

static void make_header(VfmigStreamHeader *h, unsigned n, bool precopy)
{
        memset(h, 0, sizeof(*h));
        h->n_devices = n;
        h->precopy = precopy;
        h->tls = true;
        h->downtime_budget_ms = 300;
        for (unsigned i = 0; i < n; i++) {
                g_autoptr(JsonObject) p = profile(i == 0 ? "mlx5_vfio_pci" : "sim");

                vfmig_stream_header_set_profile(h, i, p);
                h->devices[i].bytes_estimate = 1000 * (i + 1);
        }
}

typedef struct Script {
        GByteArray *stream;
        GByteArray *dev[2];     /* what each device sent */
} Script;

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
        for (size_t i = 0; i < n; i++)
                p[i] = (uint8_t) ((i * 131 + seed * 7) ^ (i >> 8));
}

/* A two-device stream: pre-copy, stop-copy with a multi-record chunk,
 * progress, device ends in reverse order, end. */
static Script make_stream(size_t big)
{
        VfmigStreamHeader h;
        g_autoptr(VfmigStreamWriter) w = NULL;
        Script s = { g_byte_array_new(), { g_byte_array_new(), g_byte_array_new() } };
        g_autofree uint8_t *buf = g_malloc(big + 5000);
        size_t lens[] = { 3000, 17, big, 1 };
        unsigned devs[] = { 0, 1, 0, 1 };
        bool pre[] = { true, true, false, false };

        make_header(&h, 2, true);
        g_assert_cmpint(vfmig_stream_writer_new(&h, &w), ==, 0);
        vfmig_stream_header_clear(&h);
        g_assert_cmpint(vfmig_stream_writer_begin(w, s.stream), ==, 0);
        for (unsigned i = 0; i < G_N_ELEMENTS(lens); i++) {
                fill(buf, lens[i], i);
                g_assert_cmpint(vfmig_stream_writer_data(w, pre[i], devs[i], buf, lens[i], s.stream), ==, 0);
                g_byte_array_append(s.dev[devs[i]], buf, (guint) lens[i]);
                if (i == 1)
                        g_assert_cmpint(vfmig_stream_writer_progress(w, 12345, s.stream), ==, 0);
        }
        g_assert_cmpint(vfmig_stream_writer_device_end(w, 1, s.stream), ==, 0);
        g_assert_cmpint(vfmig_stream_writer_device_end(w, 0, s.stream), ==, 0);
        g_assert_cmpint(vfmig_stream_writer_end(w, s.stream), ==, 0);
        g_assert_true(vfmig_stream_writer_finished(w));
        return s;
}

static void script_free(Script *s)
{
        g_byte_array_unref(s->stream);
        g_byte_array_unref(s->dev[0]);
        g_byte_array_unref(s->dev[1]);
}

typedef struct Outcome {
        int error;
        bool header, end;
        unsigned device_ends, progress;
        GByteArray *dev[2];
} Outcome;

static void outcome_clear(Outcome *o)
{
        g_clear_pointer(&o->dev[0], g_byte_array_unref);
        g_clear_pointer(&o->dev[1], g_byte_array_unref);
}

static void on_event(VfmigStreamParser *p, const VfmigStreamEvent *ev, Outcome *o)
{
        switch (ev->type) {
        case VFMIG_STREAM_EVENT_HEADER: {
                const VfmigStreamHeader *h = vfmig_stream_parser_header(p);

                g_assert_nonnull(h);
                g_assert_false(o->header);
                o->header = true;
                g_assert_cmpuint(h->n_devices, ==, 2);
                break;
        }
        case VFMIG_STREAM_EVENT_DATA:
                g_assert_true(o->header);
                g_assert_cmpuint(ev->device, <, 2);
                g_assert_cmpuint(ev->size, >, 0);
                g_assert_cmpuint(ev->size, <=, VFMIG_STREAM_MAX_DATA);
                g_byte_array_append(o->dev[ev->device], ev->data, (guint) ev->size);
                break;
        case VFMIG_STREAM_EVENT_DEVICE_END:
                g_assert_cmpuint(ev->bytes, ==, o->dev[ev->device]->len);
                o->device_ends++;
                break;
        case VFMIG_STREAM_EVENT_PROGRESS:
                g_assert_cmpuint(ev->remaining, ==, 12345);
                o->progress++;
                break;
        case VFMIG_STREAM_EVENT_END:
                o->end = true;
                break;
        default:
                break;
        }
}

/* Parse data cut by a segmentation rule: 0 = one byte at a time, 1 = random
 * chunks, 2 = exactly what the parser asks for (space/commit). */
static Outcome parse(const uint8_t *data, size_t n, int mode, GRand *rnd)
{
        g_autoptr(VfmigStreamParser) p = vfmig_stream_parser_new();
        Outcome o = { .dev = { g_byte_array_new(), g_byte_array_new() } };
        size_t at = 0;

        while (at < n) {
                VfmigStreamEvent ev;

                if (mode == 2) {
                        size_t room;
                        void *dst = vfmig_stream_parser_space(p, &room);
                        size_t k;

                        if (!dst) {     /* complete: the rest is not consumed */
                                ssize_t r = vfmig_stream_parser_push(p, data + at, n - at, &ev);

                                g_assert_cmpint(r, <, 0);
                                o.error = (int) r;
                                return o;
                        }
                        g_assert_cmpuint(room, >, 0);
                        k = MIN(room, n - at);
                        memcpy(dst, data + at, k);
                        o.error = vfmig_stream_parser_commit(p, k, &ev);
                        if (o.error < 0)
                                return o;
                        at += k;
                } else {
                        size_t want = mode == 0 ? 1 : (size_t) g_rand_int_range(rnd, 1, 70000);
                        size_t k = MIN(want, n - at);
                        ssize_t r = vfmig_stream_parser_push(p, data + at, k, &ev);

                        if (r < 0) {
                                o.error = (int) r;
                                g_assert_nonnull(vfmig_stream_parser_error_message(p));
                                return o;
                        }
                        g_assert_cmpint(r, <=, (ssize_t) k);
                        if (r == 0) {
                                g_assert_cmpint(ev.type, ==, VFMIG_STREAM_EVENT_NONE);
                                g_assert_not_reached();
                        }
                        at += (size_t) r;
                }
                on_event(p, &ev, &o);
        }
        o.error = vfmig_stream_parser_finish(p);
        if (o.error < 0)
                g_assert_nonnull(vfmig_stream_parser_error_message(p));
        return o;
}

static void assert_complete(Outcome *o, Script *s)
{
        g_assert_cmpint(o->error, ==, 0);
        g_assert_true(o->header);
        g_assert_true(o->end);
        g_assert_cmpuint(o->device_ends, ==, 2);
        g_assert_cmpuint(o->progress, ==, 1);
        for (unsigned i = 0; i < 2; i++) {
                g_assert_cmpuint(o->dev[i]->len, ==, s->dev[i]->len);
                g_assert_cmpmem(o->dev[i]->data, o->dev[i]->len, s->dev[i]->data, s->dev[i]->len);
        }
}

/* ---- round trips ---- */

static void test_header_json(void)
{
        VfmigStreamHeader h, back;
        g_autofree char *json = NULL, *err = NULL;

        make_header(&h, 3, true);
        g_assert_cmpint(vfmig_stream_header_to_json(&h, &json), ==, 0);
        g_assert_cmpint(vfmig_stream_header_from_json(json, strlen(json), &back, &err), ==, 0);
        g_assert_null(err);
        g_assert_cmpuint(back.n_devices, ==, 3);
        g_assert_true(back.precopy);
        g_assert_true(back.tls);
        g_assert_cmpuint(back.downtime_budget_ms, ==, 300);
        g_assert_cmpuint(back.devices[2].bytes_estimate, ==, 3000);
        g_assert_cmpstr(json_object_get_string_member(back.devices[0].profile, "driver"), ==, "mlx5_vfio_pci");
        vfmig_stream_header_clear(&back);

        static const char *const bad[] = {
                "", "[]", "{}", "nul\x01", "{\"format\":\"vfmig-stream\",\"version\":2,\"device-count\":1}",
                "{\"format\":\"vfmig-stream\",\"version\":1,\"device-count\":0,\"devices\":[]}",
                "{\"format\":\"vfmig-stream\",\"version\":1,\"device-count\":65,\"devices\":[]}",
                "{\"format\":\"vfmig-stream\",\"version\":1,\"device-count\":2,\"devices\":[{\"index\":0,\"profile\":{}}]}",
                "{\"format\":\"vfmig-stream\",\"version\":1,\"device-count\":1,\"devices\":[{\"index\":1,\"profile\":{}}]}",
                "{\"format\":\"vfmig-stream\",\"version\":1,\"device-count\":1,\"devices\":[{\"index\":0,\"profile\":3}]}",
                "{\"format\":\"vfmig-stream\",\"version\":1,\"device-count\":1,\"devices\":[{\"index\":0,\"profile\":{}}],\"options\":{\"transport\":\"udp\"}}",
                "{\"format\":\"vfmig-stream\",\"version\":1,\"device-count\":1,\"devices\":[{\"index\":0,\"profile\":{}}],\"options\":{\"precopy\":1}}",
                "{\"format\":\"vfmig-stream\",\"version\":1,\"device-count\":1,\"devices\":[{\"index\":0,\"profile\":{},\"bytes-estimate\":-1}]}",
        };
        for (unsigned i = 0; i < G_N_ELEMENTS(bad); i++) {
                g_autofree char *e = NULL;

                g_assert_cmpint(vfmig_stream_header_from_json(bad[i], strlen(bad[i]), &back, &e), ==, -EBADMSG);
                g_assert_nonnull(e);
        }
        vfmig_stream_header_clear(&h);
}

static void test_round_trip(void)
{
        Script s = make_stream(2 * VFMIG_STREAM_MAX_DATA + 777);
        GRand *rnd = g_rand_new_with_seed(1);

        for (int mode = 0; mode < 3; mode++) {
                for (int rep = 0; rep < (mode == 1 ? 20 : 1); rep++) {
                        Outcome o = parse(s.stream->data, s.stream->len, mode, rnd);

                        assert_complete(&o, &s);
                        outcome_clear(&o);
                }
        }
        g_rand_free(rnd);
        script_free(&s);
}

static void test_writer_order(void)
{
        VfmigStreamHeader h;
        g_autoptr(VfmigStreamWriter) w = NULL;
        g_autoptr(GByteArray) out = g_byte_array_new();
        uint8_t frame[64];

        make_header(&h, 1, false);
        g_assert_cmpint(vfmig_stream_writer_new(&h, &w), ==, 0);
        g_assert_cmpint(vfmig_stream_writer_data(w, false, 0, "x", 1, out), ==, -EPROTO);      /* before begin */
        g_assert_cmpint(vfmig_stream_writer_begin(w, out), ==, 0);
        g_assert_cmpint(vfmig_stream_writer_begin(w, out), ==, -EPROTO);
        g_assert_cmpint(vfmig_stream_writer_data(w, true, 0, "x", 1, out), ==, -EPROTO);       /* no precopy */
        g_assert_cmpint(vfmig_stream_writer_data(w, false, 1, "x", 1, out), ==, -EINVAL);
        g_assert_cmpint(vfmig_stream_writer_frame_data(w, false, 0, frame, 0), ==, -EINVAL);
        g_assert_cmpint(vfmig_stream_writer_frame_data(w, false, 0, frame, VFMIG_STREAM_MAX_DATA + 1), ==, -EINVAL);
        g_assert_cmpint(vfmig_stream_writer_frame_data(w, false, 0, frame, 8), ==, 8 + VFMIG_STREAM_RECORD_OVERHEAD);
        g_assert_cmpint(vfmig_stream_writer_end(w, out), ==, -EPROTO);                         /* device not ended */
        g_assert_cmpint(vfmig_stream_writer_device_end(w, 0, out), ==, 0);
        g_assert_cmpint(vfmig_stream_writer_device_end(w, 0, out), ==, -EPROTO);
        g_assert_cmpint(vfmig_stream_writer_data(w, false, 0, "x", 1, out), ==, -EPROTO);
        g_assert_cmpint(vfmig_stream_writer_end(w, out), ==, 0);
        g_assert_cmpint(vfmig_stream_writer_abort(w, EIO, "late", out), ==, -EPROTO);
        g_assert_cmpuint(vfmig_stream_writer_device_bytes(w, 0), ==, 8);
        vfmig_stream_header_clear(&h);
}

/* ---- broken streams ---- */

static bool typed(int e)
{
        return e == -EBADMSG || e == -EPROTONOSUPPORT || e == -EMSGSIZE || e == -EPROTO || e == -ENODATA;
}

static void test_bit_flips(void)
{
        Script s = make_stream(40);
        g_autoptr(GByteArray) copy = g_byte_array_sized_new(s.stream->len);

        g_byte_array_append(copy, s.stream->data, s.stream->len);
        for (size_t at = 0; at < s.stream->len; at++)
                for (unsigned bit = 0; bit < 8; bit++) {
                        Outcome o;

                        copy->data[at] ^= (uint8_t) (1u << bit);
                        o = parse(copy->data, copy->len, 0, NULL);
                        copy->data[at] ^= (uint8_t) (1u << bit);
                        if (!typed(o.error))
                                g_error("bit %u of byte %zu: error %d", bit, at, o.error);
                        outcome_clear(&o);
                }
        script_free(&s);
}

static void test_truncation(void)
{
        Script s = make_stream(40);

        for (size_t n = 0; n < s.stream->len; n++) {
                Outcome o = parse(s.stream->data, n, 2, NULL);

                g_assert_cmpint(o.error, ==, -ENODATA);
                g_assert_false(o.end);
                outcome_clear(&o);
        }
        script_free(&s);
}

static void test_trailing(void)
{
        Script s = make_stream(40);
        g_autoptr(VfmigStreamParser) p = vfmig_stream_parser_new();
        VfmigStreamEvent ev;
        size_t at = 0;
        ssize_t r;

        g_byte_array_append(s.stream, (const uint8_t *) "extra", 5);
        /* The parser stops exactly at the end record; then refuses more. */
        for (;;) {
                r = vfmig_stream_parser_push(p, s.stream->data + at, s.stream->len - at, &ev);
                g_assert_cmpint(r, >, 0);
                at += (size_t) r;
                if (ev.type == VFMIG_STREAM_EVENT_END)
                        break;
        }
        g_assert_cmpuint(at, ==, s.stream->len - 5);
        g_assert_true(vfmig_stream_parser_done(p));
        g_assert_cmpint(vfmig_stream_parser_push(p, s.stream->data + at, 5, &ev), ==, -EBADMSG);
        g_assert_nonnull(strstr(vfmig_stream_parser_error_message(p), "after the end"));
        script_free(&s);
}

/* A stream built record by record, with control over every field. */
typedef struct Crafter {
        GByteArray *b;
        uint32_t seq;
} Crafter;

static Crafter craft_begin(bool with_header, unsigned n_devices, bool precopy)
{
        Crafter c = { g_byte_array_new(), 0 };
        uint8_t pre[VFMIG_STREAM_PREAMBLE_SIZE];

        stream_preamble(pre);
        g_byte_array_append(c.b, pre, sizeof(pre));
        if (with_header) {
                VfmigStreamHeader h;
                g_autofree char *json = NULL;

                make_header(&h, n_devices, precopy);
                g_assert_cmpint(vfmig_stream_header_to_json(&h, &json), ==, 0);
                stream_append_record(c.b, VFMIG_STREAM_REC_HEADER, VFMIG_STREAM_NO_DEVICE, json,
                                     (uint32_t) strlen(json), c.seq++);
                vfmig_stream_header_clear(&h);
        }
        return c;
}

static void craft(Crafter *c, uint8_t type, uint16_t dev, const void *pl, uint32_t len)
{
        stream_append_record(c->b, type, dev, pl, len, c->seq++);
}

static void craft_counts(Crafter *c, uint8_t type, uint16_t dev, uint64_t a, uint64_t b)
{
        uint8_t pl[16];

        put_le64(pl, a);
        put_le64(pl + 8, b);
        craft(c, type, dev, pl, 16);
}

static void craft_end(Crafter *c, unsigned n, const uint64_t *bytes, const uint64_t *records)
{
        uint8_t pl[8 + 16 * 4];

        put_le32(pl, n);
        put_le32(pl + 4, 0);
        for (unsigned i = 0; i < n; i++) {
                put_le64(pl + 8 + 16 * i, bytes[i]);
                put_le64(pl + 16 + 16 * i, records[i]);
        }
        craft(c, VFMIG_STREAM_REC_END, VFMIG_STREAM_NO_DEVICE, pl, 8 + 16 * n);
}

static int craft_parse(Crafter *c, const char *expect_in_message)
{
        g_autoptr(VfmigStreamParser) p = vfmig_stream_parser_new();
        VfmigStreamEvent ev;
        size_t at = 0;
        int e = 0;

        while (at < c->b->len) {
                ssize_t r = vfmig_stream_parser_push(p, c->b->data + at, c->b->len - at, &ev);

                if (r < 0) {
                        e = (int) r;
                        break;
                }
                at += (size_t) r;
        }
        if (e == 0)
                e = vfmig_stream_parser_finish(p);
        if (e < 0 && expect_in_message && !strstr(vfmig_stream_parser_error_message(p), expect_in_message))
                g_error("message \"%s\" lacks \"%s\"", vfmig_stream_parser_error_message(p), expect_in_message);
        g_byte_array_unref(c->b);
        return e;
}

/* Overwrite the record header of the record at off and fix its header CRC
 * (the payload CRC is then wrong, but the header is checked first). */
static void patch_len(GByteArray *b, size_t off, uint32_t len)
{
        put_le32(b->data + off + 4, len);
        put_le32(b->data + off + 12, vfmig_crc32c(0, b->data + off, 12));
}

static void test_corrupt_classes(void)
{
        Crafter c;
        size_t off;
        uint64_t bytes[2] = { 3, 0 }, records[2] = { 1, 0 };

        /* A valid crafted stream, as the baseline. */
        c = craft_begin(true, 1, false);
        craft(&c, VFMIG_STREAM_REC_STOPCOPY, 0, "abc", 3);
        craft_counts(&c, VFMIG_STREAM_REC_DEVICE_END, 0, 3, 1);
        craft_end(&c, 1, bytes, records);
        g_assert_cmpint(craft_parse(&c, NULL), ==, 0);

        /* Wrong magic, wrong version. */
        c = craft_begin(true, 1, false);
        c.b->data[0] = 'X';
        g_assert_cmpint(craft_parse(&c, "magic"), ==, -EBADMSG);
        c = craft_begin(true, 1, false);
        put_le16(c.b->data + 8, 2);
        put_le32(c.b->data + 12, vfmig_crc32c(0, c.b->data, 12));
        g_assert_cmpint(craft_parse(&c, "version 2"), ==, -EPROTONOSUPPORT);
        c = craft_begin(true, 1, false);
        put_le16(c.b->data + 10, 1);
        put_le32(c.b->data + 12, vfmig_crc32c(0, c.b->data, 12));
        g_assert_cmpint(craft_parse(&c, "flags"), ==, -EBADMSG);

        /* Oversized length (header CRC valid): refused before any payload. */
        c = craft_begin(true, 1, false);
        off = c.b->len;
        craft(&c, VFMIG_STREAM_REC_STOPCOPY, 0, "abc", 3);
        patch_len(c.b, off, VFMIG_STREAM_MAX_DATA + 1);
        g_assert_cmpint(craft_parse(&c, "exceeds"), ==, -EMSGSIZE);
        c = craft_begin(true, 1, false);
        off = c.b->len;
        craft(&c, VFMIG_STREAM_REC_STOPCOPY, 0, "abc", 3);
        patch_len(c.b, off, UINT32_MAX);
        g_assert_cmpint(craft_parse(&c, "exceeds"), ==, -EMSGSIZE);
        c = craft_begin(true, 1, false);
        craft(&c, VFMIG_STREAM_REC_STOPCOPY, 0, "", 0);
        g_assert_cmpint(craft_parse(&c, "shorter"), ==, -EBADMSG);

        /* Unknown type. */
        c = craft_begin(true, 1, false);
        craft(&c, 0x42, 0, "abc", 3);
        g_assert_cmpint(craft_parse(&c, "unknown record type 0x42"), ==, -EPROTO);

        /* Out of order: data before the header, a second header, sequence gaps,
         * precopy without the option / after stop-copy, data after the device end,
         * end before device ends, a result record in the forward stream. */
        c = craft_begin(false, 1, false);
        craft(&c, VFMIG_STREAM_REC_STOPCOPY, 0, "abc", 3);
        g_assert_cmpint(craft_parse(&c, "before the header"), ==, -EBADMSG);
        c = craft_begin(true, 1, false);
        craft(&c, VFMIG_STREAM_REC_HEADER, VFMIG_STREAM_NO_DEVICE, "{}", 2);
        g_assert_cmpint(craft_parse(&c, "out of order"), ==, -EBADMSG);
        c = craft_begin(true, 1, false);
        c.seq++;
        craft(&c, VFMIG_STREAM_REC_STOPCOPY, 0, "abc", 3);
        g_assert_cmpint(craft_parse(&c, "sequence number 2 where 1"), ==, -EBADMSG);
        c = craft_begin(true, 1, false);
        craft(&c, VFMIG_STREAM_REC_PRECOPY, 0, "abc", 3);
        g_assert_cmpint(craft_parse(&c, "no precopy"), ==, -EBADMSG);
        c = craft_begin(true, 1, true);
        craft(&c, VFMIG_STREAM_REC_STOPCOPY, 0, "abc", 3);
        craft(&c, VFMIG_STREAM_REC_PRECOPY, 0, "abc", 3);
        g_assert_cmpint(craft_parse(&c, "after its stop-copy"), ==, -EBADMSG);
        c = craft_begin(true, 1, false);
        craft_counts(&c, VFMIG_STREAM_REC_DEVICE_END, 0, 0, 0);
        craft(&c, VFMIG_STREAM_REC_STOPCOPY, 0, "abc", 3);
        g_assert_cmpint(craft_parse(&c, "after its end"), ==, -EBADMSG);
        c = craft_begin(true, 2, false);
        craft_counts(&c, VFMIG_STREAM_REC_DEVICE_END, 0, 0, 0);
        craft_end(&c, 2, bytes, records);
        g_assert_cmpint(craft_parse(&c, "1 of 2 ended"), ==, -EBADMSG);
        c = craft_begin(true, 1, false);
        craft(&c, VFMIG_STREAM_REC_RESULT, VFMIG_STREAM_NO_DEVICE, "\0\0\0\0", 4);
        g_assert_cmpint(craft_parse(&c, "out of order"), ==, -EBADMSG);
        c = craft_begin(true, 1, false);
        craft(&c, VFMIG_STREAM_REC_STOPCOPY, 1, "abc", 3);
        g_assert_cmpint(craft_parse(&c, "device 1 of a 1-device"), ==, -EBADMSG);

        /* Byte and record count mismatches. */
        c = craft_begin(true, 1, false);
        craft(&c, VFMIG_STREAM_REC_STOPCOPY, 0, "abc", 3);
        craft_counts(&c, VFMIG_STREAM_REC_DEVICE_END, 0, 4, 1);
        g_assert_cmpint(craft_parse(&c, "says 4 bytes"), ==, -EBADMSG);
        c = craft_begin(true, 1, false);
        craft(&c, VFMIG_STREAM_REC_STOPCOPY, 0, "abc", 3);
        craft_counts(&c, VFMIG_STREAM_REC_DEVICE_END, 0, 3, 1);
        bytes[0] = 2;
        craft_end(&c, 1, bytes, records);
        bytes[0] = 3;
        g_assert_cmpint(craft_parse(&c, "sent 2 bytes"), ==, -EBADMSG);
        c = craft_begin(true, 1, false);
        craft(&c, VFMIG_STREAM_REC_STOPCOPY, 0, "abc", 3);
        craft_counts(&c, VFMIG_STREAM_REC_PROGRESS, VFMIG_STREAM_NO_DEVICE, 99, 0);
        g_assert_cmpint(craft_parse(&c, "progress record says 99"), ==, -EBADMSG);

        /* Missing end record. */
        c = craft_begin(true, 1, false);
        craft(&c, VFMIG_STREAM_REC_STOPCOPY, 0, "abc", 3);
        craft_counts(&c, VFMIG_STREAM_REC_DEVICE_END, 0, 3, 1);
        g_assert_cmpint(craft_parse(&c, "before its end record"), ==, -ENODATA);

        /* Checksum of the payload. */
        c = craft_begin(true, 1, false);
        craft(&c, VFMIG_STREAM_REC_STOPCOPY, 0, "abc", 3);
        c.b->data[c.b->len - 5] ^= 1;
        g_assert_cmpint(craft_parse(&c, "checksum mismatch"), ==, -EBADMSG);

        /* An abort is an event, not an error, and ends the stream. */
        c = craft_begin(true, 1, false);
        {
                uint8_t pl[4 + 6];

                put_le32(pl, EIO);
                memcpy(pl + 4, "broken", 6);
                craft(&c, VFMIG_STREAM_REC_ABORT, VFMIG_STREAM_NO_DEVICE, pl, sizeof(pl));
        }
        g_assert_cmpint(craft_parse(&c, NULL), ==, 0);
        c = craft_begin(true, 1, false);
        craft(&c, VFMIG_STREAM_REC_ABORT, VFMIG_STREAM_NO_DEVICE, "\0\0\0\0", 4);
        g_assert_cmpint(craft_parse(&c, "error code 0"), ==, -EBADMSG);
}

static void test_abort_and_result(void)
{
        VfmigStreamHeader h;
        g_autoptr(VfmigStreamWriter) w = NULL;
        g_autoptr(GByteArray) out = g_byte_array_new();
        g_autoptr(VfmigStreamParser) p = vfmig_stream_parser_new();
        g_autoptr(VfmigStreamParser) rp = vfmig_stream_parser_new_reply();
        g_autofree char *longreason = g_strnfill(5000, 'x');
        VfmigStreamEvent ev;
        ssize_t r;

        /* Abort before begin still makes a parseable stream. */
        make_header(&h, 1, false);
        g_assert_cmpint(vfmig_stream_writer_new(&h, &w), ==, 0);
        vfmig_stream_header_clear(&h);
        g_assert_cmpint(vfmig_stream_writer_abort(w, ECANCELED, longreason, out), ==, 0);
        r = vfmig_stream_parser_push(p, out->data, out->len, &ev);
        g_assert_cmpint(r, ==, (ssize_t) out->len);
        g_assert_cmpint(ev.type, ==, VFMIG_STREAM_EVENT_ABORT);
        g_assert_cmpint(ev.error, ==, ECANCELED);
        g_assert_cmpuint(strlen(ev.reason), ==, VFMIG_STREAM_MAX_REASON);
        g_assert_cmpint(vfmig_stream_parser_finish(p), ==, 0);

        g_byte_array_set_size(out, 0);
        g_assert_cmpint(vfmig_stream_result_record(0, "ok", out), ==, 0);
        r = vfmig_stream_parser_push(rp, out->data, out->len, &ev);
        g_assert_cmpint(r, ==, (ssize_t) out->len);
        g_assert_cmpint(ev.type, ==, VFMIG_STREAM_EVENT_RESULT);
        g_assert_cmpint(ev.error, ==, 0);
        g_assert_cmpstr(ev.reason, ==, "ok");
}

/* The COMMIT after END: written once, only after END; read by a commit
 * parser numbered on from the stream's; the stream parser still refuses
 * anything after END. */
static void test_commit(void)
{
        VfmigStreamHeader h;
        g_autoptr(VfmigStreamWriter) w = NULL, wa = NULL;
        g_autoptr(GByteArray) out = g_byte_array_new(), commit = g_byte_array_new(), bad = g_byte_array_new();
        g_autoptr(VfmigStreamParser) p = vfmig_stream_parser_new();
        g_autoptr(VfmigStreamParser) cp = NULL;
        uint8_t data[100], pl[24] = { 0 };
        VfmigStreamEvent ev;
        ssize_t r;

        fill(data, sizeof(data), 3);
        make_header(&h, 1, false);
        g_assert_cmpint(vfmig_stream_writer_new(&h, &w), ==, 0);
        g_assert_cmpint(vfmig_stream_writer_new(&h, &wa), ==, 0);
        vfmig_stream_header_clear(&h);
        g_assert_cmpint(vfmig_stream_writer_commit(w, commit), ==, -EPROTO);     /* before begin */
        g_assert_cmpint(vfmig_stream_writer_begin(w, out), ==, 0);
        g_assert_cmpint(vfmig_stream_writer_data(w, false, 0, data, sizeof(data), out), ==, 0);
        g_assert_cmpint(vfmig_stream_writer_device_end(w, 0, out), ==, 0);
        g_assert_cmpint(vfmig_stream_writer_commit(w, commit), ==, -EPROTO);     /* before END */
        g_assert_cmpint(vfmig_stream_writer_end(w, out), ==, 0);
        g_assert_cmpint(vfmig_stream_writer_commit(w, commit), ==, 0);
        g_assert_cmpuint(commit->len, ==, VFMIG_STREAM_RECORD_OVERHEAD + 4);
        g_assert_cmpint(vfmig_stream_writer_commit(w, bad), ==, -EPROTO);        /* once */
        g_assert_cmpuint(bad->len, ==, 0);
        g_assert_cmpint(vfmig_stream_writer_abort(wa, ECANCELED, "x", bad), ==, 0);
        g_assert_cmpint(vfmig_stream_writer_commit(wa, bad), ==, -EPROTO);       /* after ABORT */

        /* the stream, then the commit parser */
        for (size_t at = 0; at < out->len; at += (size_t) r) {
                r = vfmig_stream_parser_push(p, out->data + at, out->len - at, &ev);
                g_assert_cmpint(r, >, 0);
        }
        g_assert_cmpint(ev.type, ==, VFMIG_STREAM_EVENT_END);
        cp = vfmig_stream_parser_new_commit(p);
        g_assert_nonnull(cp);
        g_assert_false(vfmig_stream_parser_done(cp));
        r = vfmig_stream_parser_push(cp, commit->data, commit->len, &ev);
        g_assert_cmpint(r, ==, (ssize_t) commit->len);
        g_assert_cmpint(ev.type, ==, VFMIG_STREAM_EVENT_COMMIT);
        g_assert_true(vfmig_stream_parser_done(cp));
        g_assert_cmpint(vfmig_stream_parser_finish(cp), ==, 0);
        /* nothing after it, and the stream parser takes nothing after END */
        g_assert_cmpint(vfmig_stream_parser_push(cp, commit->data, 1, &ev), ==, -EBADMSG);
        g_assert_cmpint(vfmig_stream_parser_push(p, commit->data, commit->len, &ev), ==, -EBADMSG);

        /* what a commit parser refuses: the record number (END's is 3), type,
         * reserved field, a cut record, a flipped bit anywhere */
        {
                static const struct { uint8_t type; uint32_t seq; uint32_t reserved; const char *what; } bads[] = {
                        { VFMIG_STREAM_REC_COMMIT, 5, 0, "sequence number" },
                        { VFMIG_STREAM_REC_COMMIT, 3, 0, "sequence number" },
                        { VFMIG_STREAM_REC_RESULT, 4, 0, "where a commit record was due" },
                        { VFMIG_STREAM_REC_END, 4, 0, "where a commit record was due" },
                        { VFMIG_STREAM_REC_COMMIT, 4, 1, "reserved" },
                };

                for (unsigned i = 0; i < G_N_ELEMENTS(bads); i++) {
                        g_autoptr(VfmigStreamParser) q = vfmig_stream_parser_new_commit(p);

                        g_byte_array_set_size(bad, 0);
                        put_le32(pl, bads[i].reserved);
                        stream_append_record(bad, bads[i].type, VFMIG_STREAM_NO_DEVICE, pl,
                                             bads[i].type == VFMIG_STREAM_REC_END ? 24 : 4, bads[i].seq);
                        r = vfmig_stream_parser_push(q, bad->data, bad->len, &ev);
                        g_assert_cmpint(r, <, 0);
                        g_assert_nonnull(strstr(vfmig_stream_parser_error_message(q), bads[i].what));
                }
        }
        for (guint cut = 0; cut < commit->len; cut++) {
                g_autoptr(VfmigStreamParser) q = vfmig_stream_parser_new_commit(p);

                if (cut > 0)
                        g_assert_cmpint(vfmig_stream_parser_push(q, commit->data, cut, &ev), ==, (ssize_t) cut);
                g_assert_cmpint(vfmig_stream_parser_finish(q), ==, -ENODATA);
                g_assert_nonnull(strstr(vfmig_stream_parser_error_message(q), cut ? "truncated" : "commit record"));
        }
        for (guint bit = 0; bit < commit->len * 8; bit++) {
                g_autoptr(VfmigStreamParser) q = vfmig_stream_parser_new_commit(p);
                g_autoptr(GByteArray) flipped = g_byte_array_new();

                g_byte_array_append(flipped, commit->data, commit->len);
                flipped->data[bit / 8] ^= (uint8_t) (1u << (bit % 8));
                r = vfmig_stream_parser_push(q, flipped->data, flipped->len, &ev);
                g_assert_true(r < 0 || ev.type != VFMIG_STREAM_EVENT_COMMIT);
        }
}

/* Memory: the parser's buffer never exceeds one record whatever the stream. */
static void test_space_bounded(void)
{
        Script s = make_stream(3 * VFMIG_STREAM_MAX_DATA);
        g_autoptr(VfmigStreamParser) p = vfmig_stream_parser_new();
        size_t at = 0, max_room = 0;

        while (at < s.stream->len) {
                VfmigStreamEvent ev;
                size_t room;
                void *dst = vfmig_stream_parser_space(p, &room);

                g_assert_nonnull(dst);
                max_room = MAX(max_room, room);
                memcpy(dst, s.stream->data + at, room);
                g_assert_cmpint(vfmig_stream_parser_commit(p, room, &ev), ==, 0);
                at += room;
        }
        g_assert_true(vfmig_stream_parser_done(p));
        g_assert_cmpuint(max_room, ==, VFMIG_STREAM_MAX_DATA + VFMIG_STREAM_RECORD_TRAILER_SIZE);
        script_free(&s);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/stream/crc32c/vectors", test_crc32c_vectors);
        g_test_add_func("/stream/crc32c/incremental", test_crc32c_incremental);
        g_test_add_func("/stream/crc32c/lanes", test_crc32c_lanes);
        g_test_add_func("/stream/header/json", test_header_json);
        g_test_add_func("/stream/round-trip", test_round_trip);
        g_test_add_func("/stream/writer/order", test_writer_order);
        g_test_add_func("/stream/broken/bit-flips", test_bit_flips);
        g_test_add_func("/stream/broken/truncation", test_truncation);
        g_test_add_func("/stream/broken/trailing", test_trailing);
        g_test_add_func("/stream/broken/classes", test_corrupt_classes);
        g_test_add_func("/stream/abort-and-result", test_abort_and_result);
        g_test_add_func("/stream/commit", test_commit);
        g_test_add_func("/stream/space-bounded", test_space_bounded);
        return g_test_run();
}
