/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * test-vfio-sim — unit tests of what the conformance suite cannot see from
 * outside: the state machine's exact paths, the sim's stream format and its
 * rejection rules, dirty tracking, and the small helpers of vfio.h.
 */
#include <endian.h>
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vfio-fsm.h"
#include "vfio.h"

#define KIB 1024u
#define MIB (1024u * 1024u)

static VfmigSimDeviceConfig base_config(void)
{
        return (VfmigSimDeviceConfig) {
                .name = "t",
                .migration_flags = VFMIG_MIGRATION_ALL,
                .memory_size = 200 * KIB + 3,
                .stream_type = "unit-type",
                .stream_version = 2,
                .fill_seed = 42,
        };
}

static VfmigVfioDevice *open_sim(const VfmigSimDeviceConfig *cfg)
{
        VfmigVfioDevice *d = NULL;

        g_assert_cmpint(vfmig_vfio_sim_open(cfg, &d), ==, 0);
        return d;
}

static VfmigMigState state_of(VfmigVfioDevice *d)
{
        VfmigMigState st = VFMIG_MIG_ERROR;

        g_assert_cmpint(vfmig_vfio_get_state(d, &st), ==, 0);
        return st;
}

static void read_all(VfmigVfioData *s, GByteArray *out, bool stop_at_enomsg)
{
        uint8_t buf[7001];

        for (;;) {
                ssize_t k = vfmig_vfio_data_read(s, buf, sizeof(buf));
                if (k == -ENOMSG && stop_at_enomsg)
                        return;
                g_assert_cmpint(k, >=, 0);
                if (k == 0)
                        return;
                g_byte_array_append(out, buf, (guint) k);
        }
}

static GByteArray *save_stop_copy(VfmigVfioDevice *d)
{
        GByteArray *a = g_byte_array_new();
        g_autoptr(VfmigVfioData) s = NULL;

        g_assert_cmpint(vfmig_vfio_set_state(d, VFMIG_MIG_STOP_COPY, &s), ==, 0);
        g_assert_nonnull(s);
        read_all(s, a, false);
        g_assert_cmpint(vfmig_vfio_set_state(d, VFMIG_MIG_STOP, NULL), ==, 0);
        return a;
}

/* Resume a stream: the result of leaving RESUMING. */
static int load(VfmigVfioDevice *d, const GByteArray *a)
{
        g_autoptr(VfmigVfioData) s = NULL;
        size_t done = 0;

        g_assert_cmpint(vfmig_vfio_set_state(d, VFMIG_MIG_RESUMING, &s), ==, 0);
        while (done < a->len) {
                ssize_t k = vfmig_vfio_data_write(s, a->data + done, MIN(a->len - done, (size_t) 4099));
                if (k < 0)
                        break;
                done += (size_t) k;
        }
        return vfmig_vfio_set_state(d, VFMIG_MIG_STOP, NULL);
}

static GByteArray *memory_of(VfmigVfioDevice *d, uint64_t size)
{
        GByteArray *a = g_byte_array_sized_new((guint) size);
        int fd = vfmig_vfio_dup_fd(d);

        g_assert_cmpint(fd, >=, 0);
        g_byte_array_set_size(a, (guint) size);
        g_assert_cmpint(pread(fd, a->data, size, 0), ==, (ssize_t) size);
        close(fd);
        return a;
}

static void test_state_strings(void)
{
        for (unsigned s = 0; s < _VFMIG_MIG_STATE_MAX; s++) {
                const char *name = vfmig_mig_state_to_string((VfmigMigState) s);
                VfmigMigState back;

                g_assert_nonnull(name);
                g_assert_cmpint(vfmig_mig_state_from_string(name, &back), ==, 0);
                g_assert_cmpint(back, ==, s);
        }
        g_assert_cmpstr(vfmig_mig_state_to_string(VFMIG_MIG_STOP_COPY), ==, "stop-copy");
        g_assert_cmpstr(vfmig_mig_state_to_string(VFMIG_MIG_PRE_COPY_P2P), ==, "pre-copy-p2p");
        g_assert_null(vfmig_mig_state_to_string((VfmigMigState) 8));
        g_assert_cmpint(vfmig_mig_state_from_string("Running", &(VfmigMigState) { 0 }), ==, -EINVAL);
        g_assert_cmpint(vfmig_mig_state_from_string(NULL, &(VfmigMigState) { 0 }), ==, -EINVAL);
}

static void test_flags_strv(void)
{
        g_auto(GStrv) all = vfmig_mig_flags_to_strv(VFMIG_MIGRATION_ALL | 0x100, true);
        g_auto(GStrv) none = vfmig_mig_flags_to_strv(0, false);
        g_auto(GStrv) some = vfmig_mig_flags_to_strv(VFMIG_MIGRATION_STOP_COPY | VFMIG_MIGRATION_P2P, false);
        const char *const want_all[] = { "stop-copy", "p2p", "pre-copy", "dma-logging", NULL };
        const char *const want_some[] = { "stop-copy", "p2p", NULL };

        g_assert_true(g_strv_equal((const char *const *) all, want_all));
        g_assert_true(g_strv_equal((const char *const *) some, want_some));
        g_assert_nonnull(none);
        g_assert_null(none[0]);
}

/* The whole path the kernel walks for cur -> target, as "a>b>c". */
static char *path(uint64_t flags, VfmigMigState cur, VfmigMigState target)
{
        GString *p = g_string_new(vfmig_mig_state_to_string(cur));

        while (cur != target) {
                VfmigMigState next;

                if (vfmig_mig_next_state(flags, cur, target, &next) < 0) {
                        g_string_append(p, ">BLOCKED");
                        break;
                }
                g_string_append_printf(p, ">%s", vfmig_mig_state_to_string(next));
                cur = next;
        }
        return g_string_free(p, false);
}

/* The combination transitions the kernel documents for a device with every
 * optional feature (drivers/vfio/vfio_main.c, vfio_mig_get_next_state()). */
static const char *const kernel_paths_all[] = {
        "pre-copy>pre-copy-p2p>stop-copy",
        "pre-copy>running>running-p2p",
        "pre-copy>running>running-p2p>stop",
        "pre-copy>running>running-p2p>stop>resuming",
        "pre-copy-p2p>running-p2p>running",
        "pre-copy-p2p>running-p2p>stop",
        "pre-copy-p2p>running-p2p>stop>resuming",
        "resuming>stop>running-p2p",
        "resuming>stop>running-p2p>pre-copy-p2p",
        "resuming>stop>running-p2p>running",
        "resuming>stop>running-p2p>running>pre-copy",
        "resuming>stop>stop-copy",
        "running>running-p2p>pre-copy-p2p",
        "running>running-p2p>stop",
        "running>running-p2p>stop>resuming",
        "running>running-p2p>stop>stop-copy",
        "running-p2p>running>pre-copy",
        "running-p2p>stop>resuming",
        "running-p2p>stop>stop-copy",
        "stop>running-p2p>pre-copy-p2p",
        "stop>running-p2p>running",
        "stop>running-p2p>running>pre-copy",
        "stop-copy>stop>resuming",
        "stop-copy>stop>running-p2p",
        "stop-copy>stop>running-p2p>running",
        "stop-copy>pre-copy>BLOCKED",
        "stop-copy>pre-copy-p2p>BLOCKED",
};

static void test_fsm_kernel_paths(void)
{
        unsigned multi = 0;

        for (size_t i = 0; i < G_N_ELEMENTS(kernel_paths_all); i++) {
                g_auto(GStrv) parts = g_strsplit(kernel_paths_all[i], ">", -1);
                guint n = g_strv_length(parts);
                VfmigMigState cur, target;
                g_autofree char *got = NULL;
                g_autofree char *want = NULL;

                g_assert_cmpint(vfmig_mig_state_from_string(parts[0], &cur), ==, 0);
                if (g_str_equal(parts[n - 1], "BLOCKED")) {
                        g_assert_cmpint(vfmig_mig_state_from_string(parts[n - 2], &target), ==, 0);
                        got = path(VFMIG_MIGRATION_ALL, cur, target);
                        want = g_strdup_printf("%s>BLOCKED", parts[0]);
                } else {
                        g_assert_cmpint(vfmig_mig_state_from_string(parts[n - 1], &target), ==, 0);
                        got = path(VFMIG_MIGRATION_ALL, cur, target);
                        want = g_strdup(kernel_paths_all[i]);
                }
                g_assert_cmpstr(got, ==, want);
        }

        /* Every other pair is one arc; only STOP_COPY -> PRE_COPY* is blocked. */
        for (unsigned c = 1; c < _VFMIG_MIG_STATE_MAX; c++)
                for (unsigned t = 1; t < _VFMIG_MIG_STATE_MAX; t++) {
                        g_autofree char *p = path(VFMIG_MIGRATION_ALL, c, t);
                        unsigned arcs = 0;

                        if (g_str_has_suffix(p, ">BLOCKED")) {
                                g_assert_cmpuint(c, ==, VFMIG_MIG_STOP_COPY);
                                g_assert_true(t == VFMIG_MIG_PRE_COPY || t == VFMIG_MIG_PRE_COPY_P2P);
                                continue;
                        }
                        for (const char *q = p; *q; q++)
                                arcs += *q == '>';
                        if (arcs > 1) {
                                bool listed = false;
                                for (size_t i = 0; i < G_N_ELEMENTS(kernel_paths_all); i++)
                                        listed = listed || g_str_equal(p, kernel_paths_all[i]);
                                g_assert_true(listed);
                                multi++;
                        } else
                                g_assert_cmpuint(arcs, ==, c == t ? 0 : 1);
                }
        g_assert_cmpuint(multi, >=, 25);
}

/* Optional states are skipped over where the device lacks them. */
static void test_fsm_skips(void)
{
        const uint64_t sc = VFMIG_MIGRATION_STOP_COPY, p2p = sc | VFMIG_MIGRATION_P2P,
                pre = sc | VFMIG_MIGRATION_PRE_COPY;
        struct {
                uint64_t flags;
                VfmigMigState cur, target;
                const char *want;
        } cases[] = {
                { sc, VFMIG_MIG_RUNNING, VFMIG_MIG_STOP_COPY, "running>stop>stop-copy" },
                { sc, VFMIG_MIG_STOP_COPY, VFMIG_MIG_RUNNING, "stop-copy>stop>running" },
                { sc, VFMIG_MIG_RESUMING, VFMIG_MIG_RUNNING, "resuming>stop>running" },
                { sc, VFMIG_MIG_RUNNING, VFMIG_MIG_RUNNING_P2P, "running>BLOCKED" },
                { sc, VFMIG_MIG_RUNNING, VFMIG_MIG_PRE_COPY, "running>BLOCKED" },
                { p2p, VFMIG_MIG_RUNNING, VFMIG_MIG_STOP_COPY, "running>running-p2p>stop>stop-copy" },
                { p2p, VFMIG_MIG_RUNNING, VFMIG_MIG_PRE_COPY_P2P, "running>BLOCKED" },
                { pre, VFMIG_MIG_PRE_COPY, VFMIG_MIG_STOP_COPY, "pre-copy>stop-copy" },
                { pre, VFMIG_MIG_PRE_COPY, VFMIG_MIG_STOP, "pre-copy>running>stop" },
                { pre, VFMIG_MIG_STOP, VFMIG_MIG_PRE_COPY, "stop>running>pre-copy" },
                { pre, VFMIG_MIG_RESUMING, VFMIG_MIG_PRE_COPY, "resuming>stop>running>pre-copy" },
                { pre, VFMIG_MIG_STOP_COPY, VFMIG_MIG_PRE_COPY, "stop-copy>BLOCKED" },
                { VFMIG_MIGRATION_ALL, VFMIG_MIG_RUNNING, VFMIG_MIG_ERROR, "running>BLOCKED" },
                { VFMIG_MIGRATION_ALL, VFMIG_MIG_ERROR, VFMIG_MIG_RUNNING, "error>BLOCKED" },
        };
        VfmigMigState next;

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *p = path(cases[i].flags, cases[i].cur, cases[i].target);
                g_assert_cmpstr(p, ==, cases[i].want);
        }
        g_assert_cmpint(vfmig_mig_next_state(VFMIG_MIGRATION_ALL, VFMIG_MIG_RUNNING, 8, &next), ==, -EINVAL);
        g_assert_cmpint(vfmig_mig_next_state(VFMIG_MIGRATION_ALL, 99, VFMIG_MIG_STOP, &next), ==, -EINVAL);
}

static void test_config_validation(void)
{
        VfmigSimDeviceConfig c;
        VfmigVfioDevice *d = NULL;

        c = base_config(), c.migration_flags = VFMIG_MIGRATION_P2P;
        g_assert_cmpint(vfmig_vfio_sim_open(&c, &d), ==, -EINVAL);
        c = base_config(), c.migration_flags = VFMIG_MIGRATION_STOP_COPY | 0x8;
        g_assert_cmpint(vfmig_vfio_sim_open(&c, &d), ==, -EINVAL);
        c = base_config(), c.memory_size = 0;
        g_assert_cmpint(vfmig_vfio_sim_open(&c, &d), ==, -EINVAL);
        c = base_config(), c.stream_type = "";
        g_assert_cmpint(vfmig_vfio_sim_open(&c, &d), ==, -EINVAL);
        c = base_config(), c.stream_type = "0123456789012345678901234567890123";
        g_assert_cmpint(vfmig_vfio_sim_open(&c, &d), ==, -EINVAL);
        c = base_config(), c.name = NULL;
        g_assert_cmpint(vfmig_vfio_sim_open(&c, &d), ==, -EINVAL);
        g_assert_null(d);

        c = base_config(), c.stream_type = "0123456789012345678901234567890";   /* 31: fits */
        d = open_sim(&c);
        g_assert_cmpstr(vfmig_vfio_backend(d), ==, "sim");
        g_assert_cmpstr(vfmig_vfio_name(d), ==, "t");
        vfmig_vfio_close(d);
        vfmig_vfio_close(NULL);
        vfmig_vfio_data_close(NULL);
}

static void test_no_migration(void)
{
        VfmigSimDeviceConfig c = base_config();
        g_autoptr(VfmigVfioDevice) d = NULL;
        uint64_t v;
        VfmigMigState st;
        int fd;

        c.migration_flags = 0;
        d = open_sim(&c);
        g_assert_cmpint(vfmig_vfio_get_migration_flags(d, &v), ==, -ENOTTY);
        g_assert_cmpint(vfmig_vfio_get_state(d, &st), ==, -ENOTTY);
        g_assert_cmpint(vfmig_vfio_set_state(d, VFMIG_MIG_STOP, NULL), ==, -ENOTTY);
        g_assert_cmpint(vfmig_vfio_get_data_size(d, &v), ==, -EOPNOTSUPP);
        g_assert_false(vfmig_vfio_has_dma_logging(d));
        g_assert_cmpint(vfmig_vfio_reset(d), ==, 0);
        fd = vfmig_vfio_dup_fd(d);
        g_assert_cmpint(fd, >=, 0);
        close(fd);
}

static void test_stream_format(void)
{
        VfmigSimDeviceConfig c = base_config();
        g_autoptr(VfmigVfioDevice) d = NULL;
        g_autoptr(GByteArray) a = NULL, mem = NULL;
        uint8_t want_type[32] = "unit-type";
        const char poke[] = "written through the dup'd fd";
        int fd;

        c.stream_version = 0x01020304;
        c.memory_size = 3 * 65536 + 5;
        d = open_sim(&c);

        fd = vfmig_vfio_dup_fd(d);
        g_assert_cmpint(pwrite(fd, poke, sizeof(poke), 65530), ==, sizeof(poke));
        close(fd);

        a = save_stop_copy(d);
        mem = memory_of(d, c.memory_size);
        g_assert_cmpuint(a->len, ==, 52 + c.memory_size);
        g_assert_cmpmem(a->data, 8, "VFMIGDEV", 8);
        g_assert_cmpmem(a->data + 8, 4, "\x04\x03\x02\x01", 4);
        g_assert_cmpmem(a->data + 12, 32, want_type, 32);
        g_assert_cmpmem(a->data + 44, 8, "\x05\x00\x03\x00\x00\x00\x00\x00", 8);
        g_assert_cmpmem(a->data + 52, c.memory_size, mem->data, mem->len);
        g_assert_cmpmem(a->data + 52 + 65530, sizeof(poke), poke, sizeof(poke));
        /* The fill pattern is not trivially zero. */
        g_assert_cmpuint(mem->data[0] | mem->data[1] | mem->data[2] | mem->data[3], !=, 0);
}

/* Which headers a target takes: same type and size, version <= its own. */
static void test_resume_rules(void)
{
        VfmigSimDeviceConfig sc = base_config(), tc = base_config();
        g_autoptr(VfmigVfioDevice) src = NULL, dst = NULL;
        g_autoptr(GByteArray) a = NULL;
        g_autoptr(VfmigVfioData) s = NULL;
        uint8_t hdr[52];
        ssize_t k;

        sc.stream_version = 1;
        tc.fill_seed = 7;
        src = open_sim(&sc);
        dst = open_sim(&tc);
        a = save_stop_copy(src);

        /* Older version: accepted, memory carried over. */
        g_assert_cmpint(load(dst, a), ==, 0);
        {
                g_autoptr(GByteArray) m1 = memory_of(src, sc.memory_size), m2 = memory_of(dst, tc.memory_size);
                g_assert_cmpmem(m1->data, m1->len, m2->data, m2->len);
        }

        /* Newer version: refused, and the write that completes the header
         * already says so. */
        g_assert_cmpint(vfmig_vfio_reset(dst), ==, 0);
        a->data[8] = 3;
        g_assert_cmpint(vfmig_vfio_set_state(dst, VFMIG_MIG_RESUMING, &s), ==, 0);
        memcpy(hdr, a->data, sizeof(hdr));
        g_assert_cmpint(vfmig_vfio_data_write(s, hdr, 51), ==, 51);
        g_assert_cmpint(vfmig_vfio_data_write(s, hdr + 51, 1), ==, -EINVAL);
        g_assert_cmpint(vfmig_vfio_data_write(s, hdr, 1), ==, -EINVAL);
        g_assert_cmpint(vfmig_vfio_set_state(dst, VFMIG_MIG_STOP, NULL), ==, -EINVAL);
        g_assert_cmpint(state_of(dst), ==, VFMIG_MIG_ERROR);
        /* The stream ended with RESUMING. */
        k = vfmig_vfio_data_write(s, hdr, 1);
        g_assert_cmpint(k, ==, -ENODEV);
        g_clear_pointer(&s, vfmig_vfio_data_close);
        a->data[8] = 1;

        /* Type, size and magic must match. */
        g_assert_cmpint(vfmig_vfio_reset(dst), ==, 0);
        a->data[12] ^= 1;
        g_assert_cmpint(load(dst, a), ==, -EINVAL);
        a->data[12] ^= 1;
        g_assert_cmpint(vfmig_vfio_reset(dst), ==, 0);
        a->data[44] ^= 1;
        g_assert_cmpint(load(dst, a), ==, -EINVAL);
        a->data[44] ^= 1;
        g_assert_cmpint(vfmig_vfio_reset(dst), ==, 0);
        a->data[0] = 'X';
        g_assert_cmpint(load(dst, a), ==, -EINVAL);
        a->data[0] = 'V';

        /* And the intact stream still goes in. */
        g_assert_cmpint(vfmig_vfio_reset(dst), ==, 0);
        g_assert_cmpint(load(dst, a), ==, 0);
        g_assert_cmpint(state_of(dst), ==, VFMIG_MIG_STOP);
}

/* A pre-copy stream's records are checked too. */
static void test_resume_bad_record(void)
{
        VfmigSimDeviceConfig c = base_config();
        g_autoptr(VfmigVfioDevice) src = open_sim(&c), dst = NULL;
        g_autoptr(GByteArray) a = g_byte_array_new();
        g_autoptr(VfmigVfioData) s = NULL;
        uint64_t off;

        c.fill_seed = 9;
        dst = open_sim(&c);
        g_assert_cmpint(vfmig_vfio_set_state(src, VFMIG_MIG_PRE_COPY, &s), ==, 0);
        read_all(s, a, true);
        g_assert_cmpint(vfmig_vfio_set_state(src, VFMIG_MIG_STOP_COPY, NULL), ==, 0);
        read_all(s, a, false);
        g_assert_cmpmem(a->data, 8, "VFMIGDPC", 8);

        g_assert_cmpint(load(dst, a), ==, 0);
        {
                g_autoptr(GByteArray) m1 = memory_of(src, c.memory_size), m2 = memory_of(dst, c.memory_size);
                g_assert_cmpmem(m1->data, m1->len, m2->data, m2->len);
        }

        /* First record's offset pointed past the memory. */
        memcpy(&off, a->data + 52, 8);
        g_assert_cmpuint(off, ==, 0);
        off = GUINT64_TO_LE(c.memory_size);
        memcpy(a->data + 52, &off, 8);
        g_assert_cmpint(vfmig_vfio_reset(dst), ==, 0);
        g_assert_cmpint(load(dst, a), ==, -EINVAL);
        g_assert_cmpint(state_of(dst), ==, VFMIG_MIG_ERROR);

        /* Without the end record the stream is incomplete. */
        off = 0;
        memcpy(a->data + 52, &off, 8);
        g_byte_array_set_size(a, a->len - 16);
        g_assert_cmpint(vfmig_vfio_reset(dst), ==, 0);
        g_assert_cmpint(load(dst, a), ==, -EINVAL);
}

/* A device that rewrites its memory while running: pre-copy keeps up, the
 * final state matches byte for byte. */
static void test_precopy_dirty_rate(void)
{
        VfmigSimDeviceConfig c = base_config();
        g_autoptr(VfmigVfioDevice) src = NULL, dst = NULL;
        g_autoptr(VfmigVfioData) s = NULL;
        g_autoptr(GByteArray) a = g_byte_array_new();
        uint64_t initial = 0, dirty = 0;
        bool saw_dirty = false;

        c.memory_size = 1 * MIB;
        c.dirty_rate = 256 * MIB;
        src = open_sim(&c);
        c.dirty_rate = 0;
        c.fill_seed = 5;
        dst = open_sim(&c);

        g_assert_cmpint(vfmig_vfio_set_state(src, VFMIG_MIG_PRE_COPY, &s), ==, 0);
        g_assert_cmpint(vfmig_vfio_data_precopy_info(s, &initial, &dirty), ==, 0);
        g_assert_cmpuint(initial, >=, c.memory_size);
        for (int round = 0; round < 20 && !saw_dirty; round++) {
                read_all(s, a, true);
                g_usleep(2000);
                g_assert_cmpint(vfmig_vfio_data_precopy_info(s, &initial, &dirty), ==, 0);
                g_assert_cmpuint(initial, ==, 0);
                saw_dirty = dirty > 0;
        }
        g_assert_true(saw_dirty);

        g_assert_cmpint(vfmig_vfio_set_state(src, VFMIG_MIG_STOP_COPY, NULL), ==, 0);
        read_all(s, a, false);
        g_assert_cmpint(load(dst, a), ==, 0);
        {
                g_autoptr(GByteArray) m1 = memory_of(src, c.memory_size), m2 = memory_of(dst, c.memory_size);
                g_assert_cmpmem(m1->data, m1->len, m2->data, m2->len);
        }
}

/* MIG_DATA_SIZE is exact for the sim, also in the middle of a pre-copy. */
static void test_data_size(void)
{
        VfmigSimDeviceConfig c = base_config();
        g_autoptr(VfmigVfioDevice) d = open_sim(&c);
        g_autoptr(VfmigVfioData) s = NULL;
        g_autoptr(GByteArray) a = g_byte_array_new();
        uint8_t buf[1000], change[10] = { 1 };
        uint64_t size;

        g_assert_cmpint(vfmig_vfio_get_data_size(d, &size), ==, 0);
        g_assert_cmpuint(size, ==, 52 + c.memory_size);

        g_assert_cmpint(vfmig_vfio_set_state(d, VFMIG_MIG_PRE_COPY, &s), ==, 0);
        g_assert_cmpint(vfmig_vfio_data_read(s, buf, sizeof(buf)), ==, sizeof(buf));
        g_assert_cmpint(vfmig_vfio_sim_write_memory(d, 0, change, sizeof(change)), ==, 0);
        g_assert_cmpint(vfmig_vfio_get_data_size(d, &size), ==, 0);
        g_assert_cmpint(vfmig_vfio_set_state(d, VFMIG_MIG_STOP_COPY, NULL), ==, 0);
        read_all(s, a, false);
        g_assert_cmpuint(size, ==, a->len);

        /* No ENOMSG in STOP_COPY, and precopy info is over. */
        g_assert_cmpint(vfmig_vfio_data_read(s, buf, 1), ==, 0);
        g_assert_cmpint(vfmig_vfio_data_precopy_info(s, NULL, NULL), ==, -EINVAL);
}

static void test_precopy_info_rules(void)
{
        VfmigSimDeviceConfig c = base_config();
        g_autoptr(VfmigVfioDevice) d = NULL, e = NULL;
        g_autoptr(VfmigVfioData) s = NULL, r = NULL;

        c.migration_flags = VFMIG_MIGRATION_STOP_COPY | VFMIG_MIGRATION_P2P;
        d = open_sim(&c);
        g_assert_cmpint(vfmig_vfio_set_state(d, VFMIG_MIG_STOP_COPY, &s), ==, 0);
        g_assert_cmpint(vfmig_vfio_data_precopy_info(s, NULL, NULL), ==, -ENOTTY);
        g_assert_cmpint(vfmig_vfio_data_fd(s), ==, -1);

        c.migration_flags = VFMIG_MIGRATION_ALL;
        e = open_sim(&c);
        g_assert_cmpint(vfmig_vfio_set_state(e, VFMIG_MIG_RESUMING, &r), ==, 0);
        g_assert_cmpint(vfmig_vfio_data_precopy_info(r, NULL, NULL), ==, -ENOTTY);
        g_assert_cmpint(vfmig_vfio_data_read(r, (uint8_t[1]) { 0 }, 1), ==, -EBADF);
        g_assert_cmpint(vfmig_vfio_data_write(s, "x", 1), ==, -EBADF);
}

/* A stream handle may outlive its device. */
static void test_data_outlives_device(void)
{
        VfmigSimDeviceConfig c = base_config();
        VfmigVfioDevice *d = open_sim(&c);
        VfmigVfioData *s = NULL;
        uint8_t buf[16];

        g_assert_cmpint(vfmig_vfio_set_state(d, VFMIG_MIG_STOP_COPY, &s), ==, 0);
        g_assert_cmpint(vfmig_vfio_data_read(s, buf, sizeof(buf)), ==, sizeof(buf));
        vfmig_vfio_close(d);
        g_assert_cmpint(vfmig_vfio_data_read(s, buf, sizeof(buf)), ==, -ENODEV);
        vfmig_vfio_data_close(s);
}

static void test_write_memory(void)
{
        VfmigSimDeviceConfig c = base_config();
        g_autoptr(VfmigVfioDevice) d = open_sim(&c);
        uint8_t b[8] = { 0 };

        g_assert_cmpint(vfmig_vfio_sim_write_memory(d, c.memory_size - 8, b, 8), ==, 0);
        g_assert_cmpint(vfmig_vfio_sim_write_memory(d, c.memory_size - 7, b, 8), ==, -ERANGE);
        g_assert_cmpint(vfmig_vfio_sim_write_memory(d, UINT64_MAX, b, 8), ==, -ERANGE);
        g_assert_cmpint(vfmig_vfio_set_state(d, VFMIG_MIG_STOP, NULL), ==, 0);
        g_assert_cmpint(vfmig_vfio_sim_write_memory(d, 0, b, 8), ==, -EBUSY);
        g_assert_cmpint(vfmig_vfio_set_state(d, VFMIG_MIG_RUNNING_P2P, NULL), ==, 0);
        g_assert_cmpint(vfmig_vfio_sim_write_memory(d, 0, b, 8), ==, 0);
}

/* Reset puts the device back to its initial memory and RUNNING. */
static void test_reset(void)
{
        VfmigSimDeviceConfig c = base_config();
        g_autoptr(VfmigVfioDevice) d = open_sim(&c);
        g_autoptr(GByteArray) before = memory_of(d, c.memory_size), after = NULL;
        uint8_t junk[100];

        memset(junk, 0xee, sizeof(junk));
        g_assert_cmpint(vfmig_vfio_sim_write_memory(d, 1000, junk, sizeof(junk)), ==, 0);
        g_assert_cmpint(vfmig_vfio_set_state(d, VFMIG_MIG_STOP_COPY, NULL), ==, 0);
        g_assert_cmpint(vfmig_vfio_reset(d), ==, 0);
        g_assert_cmpint(state_of(d), ==, VFMIG_MIG_RUNNING);
        after = memory_of(d, c.memory_size);
        g_assert_cmpmem(after->data, after->len, before->data, before->len);
}

static guint open_fds(void)
{
        g_autoptr(GDir) d = g_dir_open("/proc/self/fd", 0, NULL);
        guint n = 0;

        g_assert_nonnull(d);
        while (g_dir_read_name(d))
                n++;
        return n;
}

/* The fill pattern, computed here on its own: splitmix64 of seed ^ word index. */
static uint64_t pattern_word(uint64_t seed, uint64_t i)
{
        uint64_t x = (seed ^ i) + UINT64_C(0x9e3779b97f4a7c15);

        x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
        return x ^ (x >> 31);
}

/* Device memory is made on first use, not at open (a host opens thousands
 * of devices); when it is made its content is what it would have been:
 * the pattern, and a reset before still means the pattern. */
static void test_memory_on_first_use(void)
{
        VfmigSimDeviceConfig c = base_config();
        VfmigVfioDevice *many[64];
        g_autoptr(VfmigVfioDevice) d = NULL, e = NULL;
        g_autoptr(GByteArray) m = NULL, m2 = NULL;
        guint before = open_fds();
        uint64_t flags = 0;

        for (guint i = 0; i < G_N_ELEMENTS(many); i++)
                many[i] = open_sim(&c);
        g_assert_cmpuint(open_fds(), ==, before);
        /* what only reads the device's description does not make it either */
        g_assert_cmpint(vfmig_vfio_get_migration_flags(many[0], &flags), ==, 0);
        g_assert_cmpint(state_of(many[0]), ==, VFMIG_MIG_RUNNING);
        g_assert_cmpuint(open_fds(), ==, before);
        for (guint i = 0; i < G_N_ELEMENTS(many); i++)
                vfmig_vfio_close(many[i]);

        c.memory_size = 64 * KIB;
        d = open_sim(&c);
        m = memory_of(d, c.memory_size);
        for (uint64_t i = 0; i < c.memory_size / 8; i++) {
                uint64_t w;
                memcpy(&w, m->data + 8 * i, 8);
                g_assert_cmphex(le64toh(w), ==, pattern_word(c.fill_seed, i));
        }
        /* states and data move without any fd; the fd, when asked for, shows
         * the memory as the device has it, and writes through it are the device's */
        {
                g_autoptr(VfmigVfioDevice) f = open_sim(&c);
                g_autoptr(GByteArray) saved = NULL, viafd = NULL;
                guint fds = open_fds();
                uint8_t mark[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
                int fd;

                g_assert_cmpint(vfmig_vfio_sim_write_memory(f, 4096, mark, sizeof mark), ==, 0);
                saved = save_stop_copy(f);
                g_assert_cmpuint(open_fds(), ==, fds);
                g_assert_cmpmem(saved->data + 52 + 4096, 8, mark, 8);
                viafd = memory_of(f, c.memory_size);
                g_assert_cmpmem(viafd->data, viafd->len, saved->data + 52, saved->len - 52);
                fd = vfmig_vfio_dup_fd(f);
                g_assert_cmpint(fd, >=, 0);
                g_assert_cmpint(pwrite(fd, "\xaa", 1, 0), ==, 1);
                close(fd);
                g_assert_cmpint(vfmig_vfio_set_state(f, VFMIG_MIG_RUNNING, NULL), ==, 0);
                g_clear_pointer(&saved, g_byte_array_unref);
                saved = save_stop_copy(f);
                g_assert_cmpuint(saved->data[52], ==, 0xaa);
        }
        /* reset of a device whose memory was never made, then made: the pattern */
        e = open_sim(&c);
        g_assert_cmpint(vfmig_vfio_reset(e), ==, 0);
        m2 = memory_of(e, c.memory_size);
        g_assert_cmpmem(m2->data, m2->len, m->data, m->len);
}

/* Saving a big device goes through a small buffer without growing memory:
 * the stream is produced from device memory on demand. */
static void test_big_device(void)
{
        VfmigSimDeviceConfig c = base_config();
        g_autoptr(VfmigVfioDevice) d = NULL;
        g_autoptr(VfmigVfioData) s = NULL;
        uint8_t buf[65536];
        uint64_t total = 0;
        ssize_t k;

        c.memory_size = 256 * MIB;
        c.fill_seed = 0;
        d = open_sim(&c);
        g_assert_cmpint(vfmig_vfio_set_state(d, VFMIG_MIG_STOP_COPY, &s), ==, 0);
        while ((k = vfmig_vfio_data_read(s, buf, sizeof(buf))) > 0)
                total += (uint64_t) k;
        g_assert_cmpint(k, ==, 0);
        g_assert_cmpuint(total, ==, 52 + c.memory_size);
}

static void test_seams_on_kernel_and_errors(void)
{
        VfmigVfioDevice *d = NULL;

        g_assert_cmpint(vfmig_vfio_kernel_open("../etc", 1, NULL, &d), ==, -EINVAL);
        g_assert_cmpint(vfmig_vfio_kernel_open("", 1, NULL, &d), ==, -EINVAL);
        g_assert_cmpint(vfmig_vfio_kernel_open("0000:ff:1f.7", -1, "/nonexistent", &d), ==, -ENOENT);
        g_assert_cmpint(vfmig_vfio_kernel_open("0000:ff:1f.7", 987654, "/nonexistent", &d), <, 0);
        g_assert_null(d);
        g_assert_cmpint(vfmig_vfio_sim_inject_fault(NULL, VFMIG_MIG_STOP, EIO, false), ==, -EINVAL);
        g_assert_cmpint(vfmig_vfio_set_state(NULL, VFMIG_MIG_STOP, NULL), ==, -EINVAL);
}

int main(int argc, char **argv)
{
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/vfio/sim/state-strings", test_state_strings);
        g_test_add_func("/vfio/sim/flags-strv", test_flags_strv);
        g_test_add_func("/vfio/sim/fsm/kernel-paths", test_fsm_kernel_paths);
        g_test_add_func("/vfio/sim/fsm/skips", test_fsm_skips);
        g_test_add_func("/vfio/sim/config-validation", test_config_validation);
        g_test_add_func("/vfio/sim/no-migration", test_no_migration);
        g_test_add_func("/vfio/sim/stream-format", test_stream_format);
        g_test_add_func("/vfio/sim/resume-rules", test_resume_rules);
        g_test_add_func("/vfio/sim/resume-bad-record", test_resume_bad_record);
        g_test_add_func("/vfio/sim/precopy-dirty-rate", test_precopy_dirty_rate);
        g_test_add_func("/vfio/sim/data-size", test_data_size);
        g_test_add_func("/vfio/sim/precopy-info-rules", test_precopy_info_rules);
        g_test_add_func("/vfio/sim/data-outlives-device", test_data_outlives_device);
        g_test_add_func("/vfio/sim/write-memory", test_write_memory);
        g_test_add_func("/vfio/sim/reset", test_reset);
        g_test_add_func("/vfio/sim/memory-on-first-use", test_memory_on_first_use);
        g_test_add_func("/vfio/sim/big-device", test_big_device);
        g_test_add_func("/vfio/sim/errors", test_seams_on_kernel_and_errors);

        return g_test_run();
}
