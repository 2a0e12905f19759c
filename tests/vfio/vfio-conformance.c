/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfio-conformance — one test suite for every back end of vfio.h.
 *
 *   vfio-conformance [--sim-flags=N] [--sim-no-data-size]
 *       creates its own simulated devices (default);
 *   vfio-conformance --backend=kernel --device=NAME --group=N
 *       [--peer=NAME2 --peer-group=M] [--incompatible=NAME3 --incompatible-group=K]
 *       runs against real devices (VM tier).
 *
 * The tests talk to devices only through vfio.h.  The one thing vfio.h does
 * not offer — reading and writing "device memory" to plant and check a pattern
 * — sits behind the MemoryAccess abstraction: the sim's memfd (the dup'd
 * device FD) or a real device's region 0 through the device FD.
 *
 * Nothing is skipped.  A test of a capability a back end may lack (P2P,
 * PRE_COPY, MIG_DATA_SIZE, a device that goes to ERROR when it rejects a
 * stream) is told by --absent=LIST which ones this back end is known to
 * lack (6.1 has no PRE_COPY and no MIG_DATA_SIZE): then it checks that the
 * device indeed reports the capability absent and passes; a capability that
 * is missing without being listed, or present although listed, fails the
 * test.  A role device (--peer, --incompatible) that was not given fails too.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vfio.h"

typedef enum Role {
        ROLE_MAIN,
        ROLE_PEER,
        ROLE_INCOMPATIBLE,
} Role;

static struct {
        char *backend;
        char *device, *peer, *incompatible;
        int group, peer_group, incompatible_group;
        int sim_flags;
        gboolean sim_no_data_size;
        char *absent;
} opt = {
        .group = -1, .peer_group = -1, .incompatible_group = -1,
        .sim_flags = 7,
};

static bool is_sim(void)
{
        return !opt.backend || g_str_equal(opt.backend, "sim");
}

/* ---- device memory access, per back end ---- */

/* Where a device's memory lives in the FD vfmig_vfio_dup_fd() returns. */
static int memory_window(int fd, uint64_t *ret_offset, uint64_t *ret_size)
{
        struct vfio_region_info info = { .argsz = sizeof(info), .index = 0 };
        struct stat st;

        if (is_sim()) {
                if (fstat(fd, &st) < 0)
                        return -errno;
                *ret_offset = 0;
                *ret_size = (uint64_t) st.st_size;
                return 0;
        }
        if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &info) < 0)
                return -errno;
        *ret_offset = info.offset;
        *ret_size = info.size;
        return 0;
}

static uint64_t memory_size(VfmigVfioDevice *d)
{
        uint64_t off, size;
        int fd = vfmig_vfio_dup_fd(d);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(memory_window(fd, &off, &size), ==, 0);
        close(fd);
        return size;
}

static void memory_io(VfmigVfioDevice *d, uint64_t offset, void *buf, size_t n, bool write)
{
        uint64_t base, size;
        size_t done = 0;
        int fd = vfmig_vfio_dup_fd(d);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(memory_window(fd, &base, &size), ==, 0);
        g_assert_cmpuint(offset + n, <=, size);
        while (done < n) {
                ssize_t k = write ? pwrite(fd, (uint8_t *) buf + done, n - done, (off_t) (base + offset + done))
                                  : pread(fd, (uint8_t *) buf + done, n - done, (off_t) (base + offset + done));
                g_assert_cmpint(k, >, 0);
                done += (size_t) k;
        }
        close(fd);
}

static GByteArray *memory_dump(VfmigVfioDevice *d)
{
        uint64_t size = memory_size(d);
        GByteArray *a = g_byte_array_sized_new((guint) size);

        g_byte_array_set_size(a, (guint) size);
        memory_io(d, 0, a->data, size, false);
        return a;
}

/* The device changing its own memory while it runs: the sim is told so it can
 * track the change; a real device's driver tracks writes itself. */
static void device_activity(VfmigVfioDevice *d, uint64_t offset, const void *buf, size_t n)
{
        if (is_sim())
                g_assert_cmpint(vfmig_vfio_sim_write_memory(d, offset, buf, n), ==, 0);
        else
                memory_io(d, offset, (void *) buf, n, true);
}

/* ---- opening devices ---- */

static int open_device(Role role, VfmigVfioDevice **ret)
{
        VfmigSimDeviceConfig cfg = {
                .migration_flags = (uint64_t) opt.sim_flags,
                .dma_logging = true,
                .no_data_size = opt.sim_no_data_size,
                .memory_size = 256 * 1024 + 1000,
                .stream_type = "vfmig-conformance",
                .stream_version = 2,
        };
        const char *name = NULL;
        int group = -1;

        if (is_sim()) {
                switch (role) {
                case ROLE_MAIN:
                        cfg.name = "sim-main";
                        cfg.fill_seed = 1;
                        break;
                case ROLE_PEER:
                        cfg.name = "sim-peer";
                        cfg.fill_seed = 2;
                        break;
                case ROLE_INCOMPATIBLE:
                        cfg.name = "sim-incompatible";
                        cfg.stream_type = "vfmig-other";
                        break;
                }
                return vfmig_vfio_sim_open(&cfg, ret);
        }

        switch (role) {
        case ROLE_MAIN:
                name = opt.device, group = opt.group;
                break;
        case ROLE_PEER:
                name = opt.peer, group = opt.peer_group;
                break;
        case ROLE_INCOMPATIBLE:
                name = opt.incompatible, group = opt.incompatible_group;
                break;
        }
        if (!name)
                return -ENXIO;
        return vfmig_vfio_kernel_open(name, group, NULL, ret);
}

/* The capabilities --absent may name. */
static const char *const capability_names[] = { "p2p", "pre-copy", "data-size", "reject-to-error", NULL };

static bool absent_expected(const char *cap)
{
        g_auto(GStrv) l = opt.absent ? g_strsplit(opt.absent, ",", -1) : NULL;

        return l && g_strv_contains((const char *const *) l, cap);
}

/*
 * Whether the test of capability cap goes on: true when the device has it
 * (and it is not listed absent); false when it lacks it as --absent says,
 * which is this test's verdict; a mismatch fails the test.
 */
static bool capability(const char *cap, bool have)
{
        if (have && absent_expected(cap)) {
                g_test_fail_printf("--absent lists %s but the device has it", cap);
                return false;
        }
        if (!have && !absent_expected(cap)) {
                g_test_fail_printf("the device lacks %s; pass --absent=%s if this back end is known to lack it",
                                   cap, cap);
                return false;
        }
        if (!have)
                g_test_message("%s is absent, as --absent says, and the device reports it absent", cap);
        return have;
}

/* Open a device for a test, reset to RUNNING; NULL (and a failure) when the
 * role was not given on the command line. */
static VfmigVfioDevice *get_device(Role role)
{
        static const char *const what[] = { "main", "--peer", "--incompatible" };
        VfmigVfioDevice *d = NULL;
        VfmigMigState st;
        int r;

        r = open_device(role, &d);
        if (r == -ENXIO && role != ROLE_MAIN) {
                g_test_fail_printf("no %s device given: this test needs one", what[role]);
                return NULL;
        }
        if (r < 0)
                g_error("opening %s device: %s", what[role], g_strerror(-r));
        g_assert_cmpint(vfmig_vfio_reset(d), ==, 0);
        g_assert_cmpint(vfmig_vfio_get_state(d, &st), ==, 0);
        g_assert_cmpint(st, ==, VFMIG_MIG_RUNNING);
        return d;
}

static uint64_t device_flags(VfmigVfioDevice *d)
{
        uint64_t flags = 0;

        g_assert_cmpint(vfmig_vfio_get_migration_flags(d, &flags), ==, 0);
        return flags;
}

/* ---- state helpers ---- */

static bool state_supported(uint64_t flags, VfmigMigState s)
{
        switch (s) {
        case VFMIG_MIG_STOP:
        case VFMIG_MIG_RUNNING:
        case VFMIG_MIG_STOP_COPY:
        case VFMIG_MIG_RESUMING:
                return true;
        case VFMIG_MIG_RUNNING_P2P:
                return flags & VFMIG_MIGRATION_P2P;
        case VFMIG_MIG_PRE_COPY:
                return flags & VFMIG_MIGRATION_PRE_COPY;
        case VFMIG_MIG_PRE_COPY_P2P:
                return (flags & VFMIG_MIGRATION_P2P) && (flags & VFMIG_MIGRATION_PRE_COPY);
        default:
                return false;
        }
}

static bool saving(VfmigMigState s)
{
        return s == VFMIG_MIG_STOP_COPY || s == VFMIG_MIG_PRE_COPY || s == VFMIG_MIG_PRE_COPY_P2P;
}

/* The uAPI's rule for which requests hand out a new data stream. */
static bool expect_stream(VfmigMigState cur, VfmigMigState target)
{
        if (cur == target)
                return false;
        return target == VFMIG_MIG_RESUMING || (saving(target) && !saving(cur));
}

static bool blocked(VfmigMigState cur, VfmigMigState target)
{
        return cur == VFMIG_MIG_STOP_COPY && (target == VFMIG_MIG_PRE_COPY || target == VFMIG_MIG_PRE_COPY_P2P);
}

static void assert_state(VfmigVfioDevice *d, VfmigMigState want)
{
        VfmigMigState st = VFMIG_MIG_ERROR;

        g_assert_cmpint(vfmig_vfio_get_state(d, &st), ==, 0);
        if (st != want)
                g_error("device %s is in %s, expected %s", vfmig_vfio_name(d),
                        vfmig_mig_state_to_string(st), vfmig_mig_state_to_string(want));
}

static VfmigVfioData *set_data(VfmigVfioDevice *d, VfmigMigState target)
{
        VfmigVfioData *data = NULL;
        int r = vfmig_vfio_set_state(d, target, &data);

        if (r < 0)
                g_error("SET %s on %s: %s", vfmig_mig_state_to_string(target), vfmig_vfio_name(d), g_strerror(-r));
        assert_state(d, target);
        return data;
}

/* The same for a request whose stream (if any) is not needed. */
static void set_ok(VfmigVfioDevice *d, VfmigMigState target)
{
        vfmig_vfio_data_close(set_data(d, target));
}

/* Read a saving stream until its permanent end (ENOMSG allowed only when
 * allow_enomsg, and then it stops the reading). */
static void read_stream(VfmigVfioData *s, GByteArray *out, bool stop_at_enomsg)
{
        uint8_t buf[4093];      /* odd on purpose: framing must not matter */

        for (unsigned guard = 0; guard < 1000000; guard++) {
                ssize_t k = vfmig_vfio_data_read(s, buf, sizeof(buf));

                if (k == -ENOMSG && stop_at_enomsg)
                        return;
                if (k < 0)
                        g_error("reading the data stream: %s", g_strerror((int) -k));
                if (k == 0)
                        return;
                g_byte_array_append(out, buf, (guint) k);
        }
        g_error("data stream never ended");
}

static void write_stream(VfmigVfioData *s, const uint8_t *p, size_t n)
{
        size_t done = 0;

        while (done < n) {
                size_t piece = MIN(n - done, (size_t) 5003);
                ssize_t k = vfmig_vfio_data_write(s, p + done, piece);

                if (k <= 0)
                        g_error("writing the data stream: %s", k < 0 ? g_strerror((int) -k) : "short");
                done += (size_t) k;
        }
}

/* Save d's state from RUNNING through STOP_COPY; leaves d in STOP. */
static GByteArray *save(VfmigVfioDevice *d)
{
        GByteArray *a = g_byte_array_new();
        g_autoptr(VfmigVfioData) s = set_data(d, VFMIG_MIG_STOP_COPY);

        g_assert_nonnull(s);
        read_stream(s, a, false);
        g_clear_pointer(&s, vfmig_vfio_data_close);
        set_ok(d, VFMIG_MIG_STOP);
        return a;
}

/* RESUMING, write the whole stream, close it; the caller leaves RESUMING. */
static void resume_with(VfmigVfioDevice *d, GByteArray *stream)
{
        g_autoptr(VfmigVfioData) s = set_data(d, VFMIG_MIG_RESUMING);

        g_assert_nonnull(s);
        write_stream(s, stream->data, stream->len);
}

/* Bring a freshly reset d into state st (a valid stream is kept written when
 * st is RESUMING, so leaving it works). */
static void go_to(VfmigVfioDevice *d, VfmigMigState st, GByteArray *own_stream)
{
        g_assert_cmpint(vfmig_vfio_reset(d), ==, 0);
        if (st == VFMIG_MIG_RESUMING)
                resume_with(d, own_stream);
        else if (st != VFMIG_MIG_RUNNING)
                set_ok(d, st);
        assert_state(d, st);
}

static const VfmigMigState all_states[] = {
        VFMIG_MIG_STOP, VFMIG_MIG_RUNNING, VFMIG_MIG_STOP_COPY, VFMIG_MIG_RESUMING,
        VFMIG_MIG_RUNNING_P2P, VFMIG_MIG_PRE_COPY, VFMIG_MIG_PRE_COPY_P2P,
};

/* ---- tests ---- */

static void test_basics(void)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        g_auto(GStrv) names = NULL;
        g_autofree char *joined = NULL;
        uint64_t flags = device_flags(d);
        const char *backend = vfmig_vfio_backend(d);

        g_assert_true(flags & VFMIG_MIGRATION_STOP_COPY);
        g_assert_cmpuint(flags & ~(uint64_t) VFMIG_MIGRATION_ALL, ==, 0);
        names = vfmig_mig_flags_to_strv(flags, vfmig_vfio_has_dma_logging(d));
        joined = g_strjoinv(",", names);
        g_test_message("backend %s, flags 0x%" G_GINT64_MODIFIER "x (%s)", backend, flags, joined);
        if (is_sim())
                g_assert_cmpstr(backend, ==, "sim");
        else
                g_assert_true(g_str_equal(backend, "kernel-legacy") || g_str_equal(backend, "kernel-cdev"));
        g_assert_cmpuint(memory_size(d), >, 0);
        assert_state(d, VFMIG_MIG_RUNNING);
}

/* Every pair of supported states: final state, and a stream exactly when the
 * uAPI says one starts.  single = only pairs one arc apart. */
static void check_arcs(bool single)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        uint64_t flags = device_flags(d);
        bool p2p = flags & VFMIG_MIGRATION_P2P, pre = flags & VFMIG_MIGRATION_PRE_COPY;
        g_autoptr(GByteArray) own = save(d);
        unsigned n = 0;

        for (size_t i = 0; i < G_N_ELEMENTS(all_states); i++)
                for (size_t j = 0; j < G_N_ELEMENTS(all_states); j++) {
                        VfmigMigState cur = all_states[i], target = all_states[j];
                        g_autoptr(VfmigVfioData) s = NULL;
                        bool is_single;
                        int r;

                        if (!state_supported(flags, cur) || !state_supported(flags, target) ||
                            cur == target || blocked(cur, target))
                                continue;

                        /* The single arcs of the uAPI text for these flags. */
                        is_single =
                                (cur == VFMIG_MIG_RESUMING && target == VFMIG_MIG_STOP) ||
                                (cur == VFMIG_MIG_STOP && (target == VFMIG_MIG_RESUMING || target == VFMIG_MIG_STOP_COPY)) ||
                                (cur == VFMIG_MIG_STOP_COPY && target == VFMIG_MIG_STOP) ||
                                (!p2p && ((cur == VFMIG_MIG_RUNNING && target == VFMIG_MIG_STOP) ||
                                          (cur == VFMIG_MIG_STOP && target == VFMIG_MIG_RUNNING))) ||
                                (p2p && ((cur == VFMIG_MIG_RUNNING && target == VFMIG_MIG_RUNNING_P2P) ||
                                         (cur == VFMIG_MIG_RUNNING_P2P && (target == VFMIG_MIG_RUNNING || target == VFMIG_MIG_STOP)) ||
                                         (cur == VFMIG_MIG_STOP && target == VFMIG_MIG_RUNNING_P2P))) ||
                                (pre && ((cur == VFMIG_MIG_RUNNING && target == VFMIG_MIG_PRE_COPY) ||
                                         (cur == VFMIG_MIG_PRE_COPY && target == VFMIG_MIG_RUNNING))) ||
                                (pre && !p2p && cur == VFMIG_MIG_PRE_COPY && target == VFMIG_MIG_STOP_COPY) ||
                                (pre && p2p && ((cur == VFMIG_MIG_PRE_COPY && target == VFMIG_MIG_PRE_COPY_P2P) ||
                                                (cur == VFMIG_MIG_PRE_COPY_P2P && (target == VFMIG_MIG_PRE_COPY ||
                                                                                  target == VFMIG_MIG_RUNNING_P2P ||
                                                                                  target == VFMIG_MIG_STOP_COPY)) ||
                                                (cur == VFMIG_MIG_RUNNING_P2P && target == VFMIG_MIG_PRE_COPY_P2P)));
                        if (is_single != single)
                                continue;

                        go_to(d, cur, own);
                        r = vfmig_vfio_set_state(d, target, &s);
                        if (r < 0)
                                g_error("%s -> %s failed: %s", vfmig_mig_state_to_string(cur),
                                        vfmig_mig_state_to_string(target), g_strerror(-r));
                        assert_state(d, target);
                        if (expect_stream(cur, target) != (s != NULL))
                                g_error("%s -> %s: data stream %s", vfmig_mig_state_to_string(cur),
                                        vfmig_mig_state_to_string(target), s ? "unexpected" : "missing");
                        n++;
                }
        g_test_message("%u %s arcs checked", n, single ? "single" : "combination");
        g_assert_cmpuint(n, >, 0);
}

static void test_arcs_single(void)
{
        check_arcs(true);
}

static void test_arcs_combination(void)
{
        check_arcs(false);
}

static void expect_refused(VfmigVfioDevice *d, VfmigMigState cur, unsigned target)
{
        VfmigVfioData *s = NULL;
        int r = vfmig_vfio_set_state(d, (VfmigMigState) target, &s);

        if (r != -EINVAL)
                g_error("%s -> %u: expected -EINVAL, got %d", vfmig_mig_state_to_string(cur), target, r);
        g_assert_null(s);
        assert_state(d, cur);    /* a refused request changes nothing */
}

/* Requests the kernel refuses with -EINVAL and no state change: ERROR as a
 * target, unknown states, states the device lacks, STOP_COPY -> PRE_COPY*. */
static void test_arcs_illegal(void)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        uint64_t flags = device_flags(d);
        g_autoptr(GByteArray) own = save(d);

        for (size_t i = 0; i < G_N_ELEMENTS(all_states); i++) {
                VfmigMigState cur = all_states[i];

                if (!state_supported(flags, cur))
                        continue;
                go_to(d, cur, own);
                expect_refused(d, cur, VFMIG_MIG_ERROR);
                expect_refused(d, cur, 8);
                expect_refused(d, cur, 1000);
                for (size_t j = 0; j < G_N_ELEMENTS(all_states); j++)
                        if (!state_supported(flags, all_states[j]) || blocked(cur, all_states[j]))
                                expect_refused(d, cur, all_states[j]);
        }
}

/* Drive d into ERROR through a stream it must reject; false (and the verdict on "reject-to-error") when
 * the device chose to stay in RESUMING, which the uAPI allows. */
static bool make_error(VfmigVfioDevice *d)
{
        g_autoptr(VfmigVfioData) s = set_data(d, VFMIG_MIG_RESUMING);
        uint8_t garbage[4096];
        VfmigMigState st;
        int r;

        memset(garbage, 0xa5, sizeof(garbage));
        (void) vfmig_vfio_data_write(s, garbage, sizeof(garbage));   /* may refuse at once */
        g_clear_pointer(&s, vfmig_vfio_data_close);

        r = vfmig_vfio_set_state(d, VFMIG_MIG_STOP, NULL);
        g_assert_cmpint(r, <, 0);
        g_assert_cmpint(vfmig_vfio_get_state(d, &st), ==, 0);
        if (st == VFMIG_MIG_ERROR)
                return capability("reject-to-error", true);
        g_assert_cmpint(st, ==, VFMIG_MIG_RESUMING);
        g_assert_false(is_sim());
        /* Allowed by the uAPI (mtty does it); ERROR is then out of reach. */
        (void) capability("reject-to-error", false);
        return false;
}

static void test_error_and_reset(void)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        uint64_t flags = device_flags(d);
        g_autoptr(GByteArray) again = NULL;
        int r;

        if (!make_error(d))
                return;

        /* ERROR is left only by reset.  (Each such request makes the kernel
         * WARN, so the kernel run tries two, the sim all.) */
        for (size_t i = 0; i < G_N_ELEMENTS(all_states); i++) {
                VfmigMigState t = all_states[i];

                if (!state_supported(flags, t) || (!is_sim() && t != VFMIG_MIG_RUNNING && t != VFMIG_MIG_STOP))
                        continue;
                expect_refused(d, VFMIG_MIG_ERROR, t);
        }

        /* ERROR -> ERROR is the drivers' "already there" no-op. */
        r = vfmig_vfio_set_state(d, VFMIG_MIG_ERROR, NULL);
        if (is_sim())
                g_assert_cmpint(r, ==, 0);
        else
                g_test_message("SET ERROR while in ERROR: %d", r);
        assert_state(d, VFMIG_MIG_ERROR);

        g_assert_cmpint(vfmig_vfio_reset(d), ==, 0);
        assert_state(d, VFMIG_MIG_RUNNING);
        again = save(d);
        g_assert_cmpuint(again->len, >, 0);
        set_ok(d, VFMIG_MIG_RUNNING);
}

static void test_stop_copy_read_to_eof(void)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        g_autoptr(GByteArray) mem = memory_dump(d);
        g_autoptr(GByteArray) a = g_byte_array_new();
        g_autoptr(VfmigVfioData) s = set_data(d, VFMIG_MIG_STOP_COPY);
        uint8_t byte;
        uint32_t version;
        uint64_t size;

        g_assert_nonnull(s);
        read_stream(s, a, false);
        /* The end is permanent. */
        g_assert_cmpint(vfmig_vfio_data_read(s, &byte, 1), ==, 0);
        g_assert_cmpint(vfmig_vfio_data_read(s, &byte, 1), ==, 0);

        /* The shared device format: magic, version, type, size, raw memory. */
        g_assert_cmpuint(a->len, ==, 52 + mem->len);
        g_assert_cmpmem(a->data, 8, "VFMIGDEV", 8);
        memcpy(&version, a->data + 8, 4);
        memcpy(&size, a->data + 44, 8);
        g_assert_cmpuint(GUINT64_FROM_LE(size), ==, mem->len);
        g_assert_cmpuint(a->data[12 + 31], ==, 0);
        g_test_message("stream type \"%s\", version %u", (const char *) a->data + 12, GUINT32_FROM_LE(version));
        g_assert_cmpmem(a->data + 52, a->len - 52, mem->data, mem->len);

        g_clear_pointer(&s, vfmig_vfio_data_close);
        set_ok(d, VFMIG_MIG_STOP);
        set_ok(d, VFMIG_MIG_RUNNING);
}

static void test_stop_copy_data_size(void)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        g_autoptr(GByteArray) a = g_byte_array_new();
        g_autoptr(VfmigVfioData) s = NULL;
        uint64_t before = 0, during = 0;
        int r;

        r = vfmig_vfio_get_data_size(d, &before);
        if (!capability("data-size", r != -EOPNOTSUPP))
                return;
        g_assert_cmpint(r, ==, 0);
        g_assert_cmpuint(before, >, 0);

        s = set_data(d, VFMIG_MIG_STOP_COPY);
        g_assert_cmpint(vfmig_vfio_get_data_size(d, &during), ==, 0);
        read_stream(s, a, false);
        g_test_message("estimate %" G_GUINT64_FORMAT " (running), %" G_GUINT64_FORMAT " (stop-copy), actual %u",
                       before, during, a->len);
        if (is_sim()) {
                g_assert_cmpuint(before, ==, a->len);
                g_assert_cmpuint(during, ==, a->len);
        }
}

static void test_stop_copy_closed_early(void)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        g_autoptr(VfmigVfioData) s = set_data(d, VFMIG_MIG_STOP_COPY);
        g_autoptr(GByteArray) full = NULL;
        uint8_t buf[100];

        g_assert_cmpint(vfmig_vfio_data_read(s, buf, sizeof(buf)), >, 0);
        g_clear_pointer(&s, vfmig_vfio_data_close);
        assert_state(d, VFMIG_MIG_STOP_COPY);
        set_ok(d, VFMIG_MIG_STOP);
        set_ok(d, VFMIG_MIG_RUNNING);

        /* A new session starts from the beginning. */
        full = save(d);
        g_assert_cmpuint(full->len, ==, 52 + memory_size(d));
        set_ok(d, VFMIG_MIG_RUNNING);
}

/* Leaving the saving states ends the stream under a reader's feet. */
static void test_stop_copy_session_ended(void)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        g_autoptr(VfmigVfioData) s = set_data(d, VFMIG_MIG_STOP_COPY);
        uint8_t buf[100];
        ssize_t k;

        g_assert_cmpint(vfmig_vfio_data_read(s, buf, sizeof(buf)), >, 0);
        set_ok(d, VFMIG_MIG_STOP);
        k = vfmig_vfio_data_read(s, buf, sizeof(buf));
        if (is_sim())
                g_assert_cmpint(k, ==, -ENODEV);
        else
                g_assert_cmpint(k, <=, 0);
        g_assert_cmpint(vfmig_vfio_data_write(s, buf, sizeof(buf)), <, 0);
        set_ok(d, VFMIG_MIG_RUNNING);
}

static void test_resume_valid(void)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        g_autoptr(GByteArray) mem = memory_dump(d);
        g_autoptr(GByteArray) stream = save(d);
        g_autoptr(GByteArray) after = NULL;

        resume_with(d, stream);
        set_ok(d, VFMIG_MIG_STOP);
        set_ok(d, VFMIG_MIG_RUNNING);
        after = memory_dump(d);
        g_assert_cmpmem(after->data, after->len, mem->data, mem->len);
}

static void check_rejected(VfmigVfioDevice *d, const uint8_t *p, size_t n, const char *what)
{
        g_autoptr(VfmigVfioData) s = set_data(d, VFMIG_MIG_RESUMING);
        g_autoptr(GByteArray) ok = NULL;
        VfmigMigState st;
        size_t done = 0;
        int r;

        while (done < n) {
                ssize_t k = vfmig_vfio_data_write(s, p + done, n - done);
                if (k <= 0)
                        break;          /* the device may refuse at once */
                done += (size_t) k;
        }
        g_clear_pointer(&s, vfmig_vfio_data_close);

        r = vfmig_vfio_set_state(d, VFMIG_MIG_STOP, NULL);
        if (r >= 0)
                g_error("device accepted a %s stream", what);
        g_assert_cmpint(vfmig_vfio_get_state(d, &st), ==, 0);
        g_test_message("%s stream: SET STOP %s, device now %s", what, g_strerror(-r), vfmig_mig_state_to_string(st));
        if (is_sim())
                g_assert_cmpint(st, ==, VFMIG_MIG_ERROR);
        else
                g_assert_true(st == VFMIG_MIG_ERROR || st == VFMIG_MIG_RESUMING);

        g_assert_cmpint(vfmig_vfio_reset(d), ==, 0);
        assert_state(d, VFMIG_MIG_RUNNING);
        ok = save(d);
        set_ok(d, VFMIG_MIG_RUNNING);
}

static void test_resume_garbage(void)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        g_autoptr(GByteArray) stream = save(d);
        uint8_t garbage[8192];

        set_ok(d, VFMIG_MIG_RUNNING);
        for (size_t i = 0; i < sizeof(garbage); i++)
                garbage[i] = (uint8_t) (i * 131 + 7);
        check_rejected(d, garbage, sizeof(garbage), "garbage");

        /* A good header followed by garbage of the wrong length. */
        g_byte_array_set_size(stream, stream->len + 17);
        check_rejected(d, stream->data, stream->len, "over-long");
}

static void test_resume_truncated(void)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        g_autoptr(GByteArray) stream = save(d);

        set_ok(d, VFMIG_MIG_RUNNING);
        check_rejected(d, stream->data, stream->len / 2, "truncated");
        check_rejected(d, stream->data, 30, "header-only");
}

static void test_resume_incompatible(void)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        g_autoptr(VfmigVfioDevice) other = get_device(ROLE_INCOMPATIBLE);
        g_autoptr(GByteArray) stream = NULL;

        if (!other)
                return;
        stream = save(d);
        check_rejected(other, stream->data, stream->len, "incompatible");
}

/* After a failed SET the state read back is where the device really is. */
static void test_failed_set_readback(void)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        uint64_t flags = device_flags(d);
        VfmigMigState st;
        int r;

        /* A refused request: nothing moved. */
        expect_refused(d, VFMIG_MIG_RUNNING, VFMIG_MIG_ERROR);

        /* An arc failing in the middle of a combination: the device is left
         * on the kernel's path (the sim can be told to fail an arc). */
        r = vfmig_vfio_sim_inject_fault(d, VFMIG_MIG_STOP, EIO, false);
        if (r == -EOPNOTSUPP) {
                g_test_message("mid-path failure needs fault injection: sim only");
                return;
        }
        g_assert_cmpint(r, ==, 0);
        g_assert_cmpint(vfmig_vfio_set_state(d, VFMIG_MIG_STOP_COPY, NULL), ==, -EIO);
        g_assert_cmpint(vfmig_vfio_get_state(d, &st), ==, 0);
        g_assert_cmpint(st, ==, (flags & VFMIG_MIGRATION_P2P) ? VFMIG_MIG_RUNNING_P2P : VFMIG_MIG_RUNNING);

        /* ... and the same request again goes through. */
        set_ok(d, VFMIG_MIG_STOP_COPY);

        g_assert_cmpint(vfmig_vfio_sim_inject_fault(d, VFMIG_MIG_RUNNING_P2P, ENOMEM, true), ==, 0);
        g_assert_cmpint(vfmig_vfio_reset(d), ==, 0);     /* reset clears a pending fault */
        g_assert_cmpint(vfmig_vfio_sim_inject_fault(d, VFMIG_MIG_STOP, ENOMEM, true), ==, 0);
        g_assert_cmpint(vfmig_vfio_set_state(d, VFMIG_MIG_STOP, NULL), ==, -ENOMEM);
        assert_state(d, VFMIG_MIG_ERROR);
}

static void fill_pattern(uint8_t *p, size_t n, unsigned seed)
{
        for (size_t i = 0; i < n; i++)
                p[i] = (uint8_t) ((i * 2654435761u) >> 13) ^ (uint8_t) seed;
}

/* A memory pattern saved on one device comes back on another. */
static void test_migrate_pattern(void)
{
        g_autoptr(VfmigVfioDevice) src = get_device(ROLE_MAIN);
        g_autoptr(VfmigVfioDevice) dst = get_device(ROLE_PEER);
        g_autoptr(GByteArray) stream = NULL, got = NULL;
        g_autofree uint8_t *pattern = NULL;
        uint64_t size;

        if (!dst)
                return;
        size = memory_size(src);
        g_assert_cmpuint(memory_size(dst), ==, size);
        pattern = g_malloc(size);
        fill_pattern(pattern, size, 0x5a);
        memory_io(src, 0, pattern, size, true);

        stream = save(src);
        resume_with(dst, stream);
        set_ok(dst, VFMIG_MIG_STOP);
        set_ok(dst, VFMIG_MIG_RUNNING);
        got = memory_dump(dst);
        g_assert_cmpmem(got->data, got->len, pattern, size);

        /* The source gives up and runs on. */
        set_ok(src, VFMIG_MIG_RUNNING);
}

/* Two devices of one VM: both quiesce P2P before either stops. */
static void test_migrate_p2p_pair(void)
{
        g_autoptr(VfmigVfioDevice) a = get_device(ROLE_MAIN);
        g_autoptr(VfmigVfioDevice) b = get_device(ROLE_PEER);
        g_autoptr(GByteArray) sa = g_byte_array_new(), sb = g_byte_array_new();
        g_autoptr(VfmigVfioData) da = NULL, db = NULL;

        if (!b)
                return;
        if (!capability("p2p", device_flags(a) & device_flags(b) & VFMIG_MIGRATION_P2P))
                return;
        set_ok(a, VFMIG_MIG_RUNNING_P2P);
        set_ok(b, VFMIG_MIG_RUNNING_P2P);
        da = set_data(a, VFMIG_MIG_STOP_COPY);
        db = set_data(b, VFMIG_MIG_STOP_COPY);
        g_assert_nonnull(da);
        g_assert_nonnull(db);
        read_stream(da, sa, false);
        read_stream(db, sb, false);
        g_assert_cmpuint(sa->len, >, 52);
        g_assert_cmpuint(sb->len, >, 52);
        set_ok(a, VFMIG_MIG_STOP);
        set_ok(b, VFMIG_MIG_STOP);
        set_ok(a, VFMIG_MIG_RUNNING);
        set_ok(b, VFMIG_MIG_RUNNING);
}

static void read_until_enomsg(VfmigVfioData *s, GByteArray *out)
{
        read_stream(s, out, true);
}

static void test_precopy(void)
{
        g_autoptr(VfmigVfioDevice) src = get_device(ROLE_MAIN);
        g_autoptr(VfmigVfioDevice) dst = NULL;
        g_autoptr(VfmigVfioData) s = NULL, again = NULL;
        g_autoptr(GByteArray) stream = g_byte_array_new();
        g_autoptr(GByteArray) src_mem = NULL, dst_mem = NULL;
        uint64_t initial = 0, dirty = 0, size;
        uint8_t change[3000], byte;
        guint before;
        int r;

        if (!capability("pre-copy", device_flags(src) & VFMIG_MIGRATION_PRE_COPY))
                return;
        size = memory_size(src);

        s = set_data(src, VFMIG_MIG_PRE_COPY);
        g_assert_nonnull(s);
        r = vfmig_vfio_data_precopy_info(s, &initial, &dirty);
        g_assert_cmpint(r, ==, 0);   /* mandatory with PRE_COPY */
        g_assert_cmpuint(initial, >, 0);

        read_until_enomsg(s, stream);
        g_assert_cmpuint(stream->len, >, 0);
        g_assert_cmpint(vfmig_vfio_data_precopy_info(s, &initial, &dirty), ==, 0);
        g_assert_cmpuint(initial, ==, 0);
        g_assert_cmpuint(dirty, ==, 0);
        g_assert_cmpint(vfmig_vfio_data_read(s, &byte, 1), ==, -ENOMSG);

        /* The running device changes memory it already sent. */
        memset(change, 0xc3, sizeof(change));
        device_activity(src, size / 3, change, sizeof(change));
        g_assert_cmpint(vfmig_vfio_data_precopy_info(s, &initial, &dirty), ==, 0);
        g_assert_cmpuint(dirty, >=, sizeof(change));
        before = stream->len;
        read_until_enomsg(s, stream);
        g_assert_cmpuint(stream->len, >, before);

        /* P2P quiesce in between when there is one; the stream goes on. */
        if (device_flags(src) & VFMIG_MIGRATION_P2P) {
                again = set_data(src, VFMIG_MIG_PRE_COPY_P2P);
                g_assert_null(again);
                g_assert_cmpint(vfmig_vfio_data_precopy_info(s, &initial, &dirty), ==, 0);
        }

        /* Switch over: the same stream, now with a permanent end. */
        memset(change, 0x3c, sizeof(change));
        device_activity(src, 0, change, sizeof(change));
        again = set_data(src, VFMIG_MIG_STOP_COPY);
        g_assert_null(again);
        g_assert_cmpint(vfmig_vfio_data_precopy_info(s, &initial, &dirty), ==, -EINVAL);
        read_stream(s, stream, false);
        g_assert_cmpint(vfmig_vfio_data_read(s, &byte, 1), ==, 0);
        src_mem = memory_dump(src);
        g_clear_pointer(&s, vfmig_vfio_data_close);
        set_ok(src, VFMIG_MIG_STOP);

        dst = get_device(ROLE_PEER);
        if (!dst)
                return;
        resume_with(dst, stream);
        set_ok(dst, VFMIG_MIG_STOP);
        dst_mem = memory_dump(dst);
        g_assert_cmpmem(dst_mem->data, dst_mem->len, src_mem->data, src_mem->len);
        set_ok(src, VFMIG_MIG_RUNNING);
}

/* Leaving PRE_COPY for RUNNING abandons the stream; a new one starts over. */
static void test_precopy_abandon(void)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        g_autoptr(VfmigVfioData) s = NULL, s2 = NULL;
        uint8_t buf[64];

        if (!capability("pre-copy", device_flags(d) & VFMIG_MIGRATION_PRE_COPY))
                return;
        s = set_data(d, VFMIG_MIG_PRE_COPY);
        g_assert_cmpint(vfmig_vfio_data_read(s, buf, sizeof(buf)), ==, sizeof(buf));
        set_ok(d, VFMIG_MIG_RUNNING);
        g_assert_cmpint(vfmig_vfio_data_read(s, buf, sizeof(buf)), <, 0);
        s2 = set_data(d, VFMIG_MIG_PRE_COPY);
        g_assert_nonnull(s2);
        g_assert_cmpint(vfmig_vfio_data_read(s2, buf, sizeof(buf)), ==, sizeof(buf));
        set_ok(d, VFMIG_MIG_RUNNING);
}

static void test_dup_fd(void)
{
        g_autoptr(VfmigVfioDevice) d = get_device(ROLE_MAIN);
        int fd = vfmig_vfio_dup_fd(d), fd2 = vfmig_vfio_dup_fd(d);
        struct stat a, b;

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(fd2, >=, 0);
        g_assert_cmpint(fd, !=, fd2);
        g_assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        g_assert_cmpint(fstat(fd, &a), ==, 0);
        g_assert_cmpint(fstat(fd2, &b), ==, 0);
        g_assert_cmpuint(a.st_ino, ==, b.st_ino);
        close(fd);
        close(fd2);
        /* The daemon's own copy still works. */
        assert_state(d, VFMIG_MIG_RUNNING);
}

int main(int argc, char **argv)
{
        GOptionEntry entries[] = {
                { "backend", 0, 0, G_OPTION_ARG_STRING, &opt.backend, "sim (default) or kernel", "NAME" },
                { "device", 0, 0, G_OPTION_ARG_STRING, &opt.device, "kernel device (PCI address or mdev UUID)", "NAME" },
                { "group", 0, 0, G_OPTION_ARG_INT, &opt.group, "its IOMMU group (default: from sysfs)", "N" },
                { "peer", 0, 0, G_OPTION_ARG_STRING, &opt.peer, "a second compatible device", "NAME" },
                { "peer-group", 0, 0, G_OPTION_ARG_INT, &opt.peer_group, "its IOMMU group", "N" },
                { "incompatible", 0, 0, G_OPTION_ARG_STRING, &opt.incompatible, "a device that must reject the main device's stream", "NAME" },
                { "incompatible-group", 0, 0, G_OPTION_ARG_INT, &opt.incompatible_group, "its IOMMU group", "N" },
                { "sim-flags", 0, 0, G_OPTION_ARG_INT, &opt.sim_flags, "sim migration flags (default 7)", "N" },
                { "sim-no-data-size", 0, 0, G_OPTION_ARG_NONE, &opt.sim_no_data_size, "sim without MIG_DATA_SIZE", NULL },
                { "absent", 0, 0, G_OPTION_ARG_STRING, &opt.absent,
                  "capabilities this back end is known to lack: p2p, pre-copy, data-size, reject-to-error", "LIST" },
                {}
        };
        g_autoptr(GOptionContext) ctx = g_option_context_new("- VFIO back end conformance");
        g_autoptr(GError) error = NULL;

        g_test_init(&argc, &argv, NULL);
        g_option_context_add_main_entries(ctx, entries, NULL);
        if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
                g_printerr("%s\n", error->message);
                return 2;
        }
        if (opt.absent) {
                g_auto(GStrv) l = g_strsplit(opt.absent, ",", -1);
                for (char **c = l; *c; c++)
                        if (!g_strv_contains(capability_names, *c)) {
                                g_printerr("--absent: unknown capability \"%s\"\n", *c);
                                return 2;
                        }
        }
        if (!is_sim() && (!g_str_equal(opt.backend, "kernel") || !opt.device)) {
                g_printerr("--backend=kernel needs --device=NAME\n");
                return 2;
        }

        g_test_add_func("/vfio/conformance/basics", test_basics);
        g_test_add_func("/vfio/conformance/arcs/single", test_arcs_single);
        g_test_add_func("/vfio/conformance/arcs/combination", test_arcs_combination);
        g_test_add_func("/vfio/conformance/arcs/illegal", test_arcs_illegal);
        g_test_add_func("/vfio/conformance/error-and-reset", test_error_and_reset);
        g_test_add_func("/vfio/conformance/failed-set-readback", test_failed_set_readback);
        g_test_add_func("/vfio/conformance/stop-copy/read-to-eof", test_stop_copy_read_to_eof);
        g_test_add_func("/vfio/conformance/stop-copy/data-size", test_stop_copy_data_size);
        g_test_add_func("/vfio/conformance/stop-copy/closed-early", test_stop_copy_closed_early);
        g_test_add_func("/vfio/conformance/stop-copy/session-ended", test_stop_copy_session_ended);
        g_test_add_func("/vfio/conformance/resume/valid", test_resume_valid);
        g_test_add_func("/vfio/conformance/resume/garbage", test_resume_garbage);
        g_test_add_func("/vfio/conformance/resume/truncated", test_resume_truncated);
        g_test_add_func("/vfio/conformance/resume/incompatible", test_resume_incompatible);
        g_test_add_func("/vfio/conformance/migrate/pattern", test_migrate_pattern);
        g_test_add_func("/vfio/conformance/migrate/p2p-pair", test_migrate_p2p_pair);
        g_test_add_func("/vfio/conformance/precopy/enomsg-and-dirty", test_precopy);
        g_test_add_func("/vfio/conformance/precopy/abandon", test_precopy_abandon);
        g_test_add_func("/vfio/conformance/dup-fd", test_dup_fd);

        return g_test_run();
}
