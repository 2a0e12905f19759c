/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfio-sim.c — the simulated VFIO migration device.
 *
 * State machine: the kernel's (vfio-fsm.c), walked one arc at a time the way
 * the kernel's drivers do (while cur != target: next arc, execute, commit), so
 * a failing arc leaves the device where the kernel's drivers would.
 *
 * Device memory is mapped here; it is the whole device state.  It is made on
 * first use (a host has thousands of devices that are never touched; its
 * content then is exactly what it would have been since the open: the fill
 * pattern, plus the device's own activity since), as anonymous memory, and
 * moves into a memfd (same address, same bytes) when its fd is first asked
 * for: a device holds a file descriptor only once someone wanted one.  At
 * most one data transfer session exists, owned by the device; a VfmigVfioData
 * is a handle on it that turns into -ENODEV once the session ends.  Handles
 * hold a reference on the device so a handle outliving its device is safe.
 *
 * Stream formats (all integers little-endian):
 *   header  "VFMIGDEV" | "VFMIGDPC" (8), version u32, type char[32] NUL-padded,
 *           memory size u64                                   = 52 bytes
 *   VFMIGDEV (STOP -> STOP_COPY): header, then memory_size raw bytes.
 *   VFMIGDPC (a session that began in PRE_COPY): header, then records
 *           { offset u64, length u64, bytes }: first every chunk in order (the
 *           initial pass), then chunks dirtied since they were sent, and once
 *           in STOP_COPY an end record { UINT64_MAX, 0 }.
 * Nothing is buffered beyond the 52-byte header and one 16-byte record header.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "util.h"
#include "vfio-fsm.h"
#include "vfio-private.h"

#define SIM_MAGIC_RAW     "VFMIGDEV"
#define SIM_MAGIC_PRECOPY "VFMIGDPC"
#define SIM_MAGIC_SIZE    8
#define SIM_TYPE_SIZE     32
#define SIM_HEADER_SIZE   (SIM_MAGIC_SIZE + 4 + SIM_TYPE_SIZE + 8)
#define SIM_RECORD_SIZE   16
#define SIM_CHUNK_SIZE    UINT64_C(65536)
#define SIM_END_OFFSET    UINT64_MAX

typedef enum XferKind {
        XFER_NONE,
        XFER_SAVE_RAW,
        XFER_SAVE_PRECOPY,
        XFER_RESUME,
} XferKind;

typedef struct SimDevice {
        VfmigVfioDevice base;
        unsigned n_ref;
        bool closed;

        uint64_t flags;
        bool dma_logging;
        bool no_data_size;
        uint64_t memory_size;
        uint64_t dirty_rate;
        uint64_t fill_seed;
        uint32_t version;
        char type[SIM_TYPE_SIZE];

        int memfd;
        uint8_t *mem;
        size_t n_chunks;

        VfmigMigState state;

        /* The device's own activity while running (dirty_rate). */
        uint64_t last_ns;
        uint64_t dirty_carry;
        uint64_t rng;

        /* One pending injected fault. */
        VfmigMigState fault_step;
        int fault_error;
        bool fault_to_error;

        /* The data transfer session. */
        XferKind xfer;
        uint64_t xfer_id;               /* bumped whenever a session starts or ends */
        uint8_t hdr[SIM_HEADER_SIZE];
        uint64_t pos;                   /* header bytes done; SAVE_RAW: all stream bytes done */

        /* Records (SAVE_PRECOPY produces them, RESUME of VFMIGDPC parses them). */
        uint8_t rec[SIM_RECORD_SIZE];
        uint64_t rec_off, rec_len, rec_pos;     /* rec_pos counts header + data bytes */
        bool rec_active;

        /* SAVE_PRECOPY */
        uint64_t *dirty;                /* one bit per chunk already (being) sent */
        size_t n_dirty;
        size_t scan;
        size_t init_next;               /* first chunk the initial pass has not started */
        bool rec_initial;
        bool end_sent;

        /* RESUME */
        bool rx_raw;
        uint64_t rx_off;
        bool rx_complete;
        int rx_error;
} SimDevice;

typedef struct SimData {
        VfmigVfioData base;
        SimDevice *dev;
        uint64_t xfer_id;
        bool saving;
} SimData;

static const VfmigVfioDeviceOps sim_ops;
static const VfmigVfioDataOps sim_data_ops;

static SimDevice *SIM(VfmigVfioDevice *d)
{
        return (SimDevice *) d;
}

bool vfmig_vfio_is_sim(VfmigVfioDevice *d)
{
        return d && d->ops == &sim_ops;
}

static uint64_t now_ns(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * UINT64_C(1000000000) + (uint64_t) ts.tv_nsec;
}

/* splitmix64: a position-addressable pattern and the activity's randomness. */
static uint64_t mix64(uint64_t x)
{
        x += UINT64_C(0x9e3779b97f4a7c15);
        x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
        return x ^ (x >> 31);
}

static uint64_t rng_next(SimDevice *d)
{
        d->rng = mix64(d->rng);
        return d->rng;
}

static void fill_memory(SimDevice *d)
{
        uint64_t i;

        if (d->fill_seed == 0) {
                memset(d->mem, 0, d->memory_size);
                return;
        }
        for (i = 0; i + 8 <= d->memory_size; i += 8) {
                uint64_t w = htole64(mix64(d->fill_seed ^ (i / 8)));
                memcpy(d->mem + i, &w, 8);
        }
        for (; i < d->memory_size; i++)
                d->mem[i] = (uint8_t) mix64(d->fill_seed ^ i);
}

/* The device memory, made and filled the first time it is needed (before
 * any activity is applied to it): anonymous memory, which holds no file
 * descriptor; sim_dup_fd() moves it into a memfd when one is asked for.
 * 0, or -errno when it cannot be made. */
static int ensure_memory(SimDevice *d)
{
        void *mem;

        if (d->mem)
                return 0;
        mem = mmap(NULL, d->memory_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
                return -errno;
        d->mem = mem;
        if (d->fill_seed != 0)
                fill_memory(d);
        return 0;
}

/* The memory in a memfd, for sim_dup_fd(): its content copied there, and
 * the memfd mapped in place of the anonymous memory (same address). */
static int ensure_memfd(SimDevice *d)
{
        g_autofree char *memfd_name = NULL;
        uint64_t done = 0;
        int fd, r;

        if (d->memfd >= 0)
                return 0;
        r = ensure_memory(d);
        if (r < 0)
                return r;
        memfd_name = g_strdup_printf("vfmig-sim:%s", d->base.name);
        fd = memfd_create(memfd_name, MFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (ftruncate(fd, (off_t) d->memory_size) < 0)
                goto fail;
        while (done < d->memory_size) {
                ssize_t k = pwrite(fd, d->mem + done, (size_t) MIN(d->memory_size - done, (uint64_t) (1 << 20)),
                                   (off_t) done);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        goto fail;
                done += (uint64_t) k;
        }
        if (mmap(d->mem, d->memory_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
                goto fail;
        d->memfd = fd;
        return 0;
fail:
        r = errno ? -errno : -EIO;
        close(fd);
        return r;
}

static uint64_t chunk_len(SimDevice *d, size_t idx)
{
        uint64_t off = (uint64_t) idx * SIM_CHUNK_SIZE;

        return MIN(SIM_CHUNK_SIZE, d->memory_size - off);
}

static bool bit_test(const uint64_t *map, size_t i)
{
        return map[i / 64] & (UINT64_C(1) << (i % 64));
}

/* Chunk idx changed: if the pre-copy session already sent (or is sending) it,
 * it has to go again. */
static void mark_dirty(SimDevice *d, size_t idx)
{
        if (d->xfer != XFER_SAVE_PRECOPY || idx >= d->init_next || bit_test(d->dirty, idx))
                return;
        d->dirty[idx / 64] |= UINT64_C(1) << (idx % 64);
        d->n_dirty++;
}

static void mark_dirty_range(SimDevice *d, uint64_t off, uint64_t len)
{
        if (len == 0)
                return;
        for (uint64_t i = off / SIM_CHUNK_SIZE; i <= (off + len - 1) / SIM_CHUNK_SIZE; i++)
                mark_dirty(d, (size_t) i);
}

/* Catch up with the device's own activity since the last call: while running
 * it rewrites dirty_rate bytes per second, a chunk at a time. */
static void sim_activity(SimDevice *d)
{
        uint64_t now = now_ns(), elapsed = now - d->last_ns, n;
        unsigned __int128 bytes;

        d->last_ns = now;
        if (d->dirty_rate == 0 || !vfmig_mig_state_is_running(d->state)) {
                d->dirty_carry = 0;
                return;
        }

        g_assert(d->mem);   /* every caller made it first */
        bytes = (unsigned __int128) elapsed * d->dirty_rate / 1000000000u + d->dirty_carry;
        n = (uint64_t) MIN(bytes / SIM_CHUNK_SIZE, (unsigned __int128) d->n_chunks * 2);
        d->dirty_carry = (uint64_t) (bytes % SIM_CHUNK_SIZE);

        for (uint64_t k = 0; k < n; k++) {
                size_t idx = (size_t) (rng_next(d) % d->n_chunks);
                uint64_t len = chunk_len(d, idx), off = (uint64_t) idx * SIM_CHUNK_SIZE;
                uint64_t v = rng_next(d);

                if (len >= 8) {
                        off += (rng_next(d) % (len / 8)) * 8;
                        memcpy(d->mem + off, &v, 8);
                } else
                        d->mem[off] = (uint8_t) v;
                mark_dirty(d, idx);
        }
}

static void sim_ref(SimDevice *d)
{
        d->n_ref++;
}

static void sim_unref(SimDevice *d)
{
        if (--d->n_ref > 0)
                return;
        if (d->mem)
                munmap(d->mem, d->memory_size);
        if (d->memfd >= 0)
                close(d->memfd);
        g_free(d->dirty);
        g_free(d->base.name);
        g_free(d);
}

static void end_session(SimDevice *d)
{
        if (d->xfer == XFER_NONE)
                return;
        g_clear_pointer(&d->dirty, g_free);
        d->xfer = XFER_NONE;
        d->xfer_id++;
}

static void begin_session(SimDevice *d, XferKind kind)
{
        end_session(d);
        d->xfer = kind;
        d->xfer_id++;
        d->pos = 0;
        d->rec_active = false;
        d->rec_pos = 0;
        d->n_dirty = 0;
        d->scan = 0;
        d->init_next = 0;
        d->end_sent = false;
        d->rx_off = 0;
        d->rx_complete = false;
        d->rx_error = 0;

        if (kind == XFER_SAVE_RAW || kind == XFER_SAVE_PRECOPY) {
                uint32_t v = htole32(d->version);
                uint64_t sz = htole64(d->memory_size);

                memcpy(d->hdr, kind == XFER_SAVE_RAW ? SIM_MAGIC_RAW : SIM_MAGIC_PRECOPY, SIM_MAGIC_SIZE);
                memcpy(d->hdr + 8, &v, 4);
                memcpy(d->hdr + 12, d->type, SIM_TYPE_SIZE);
                memcpy(d->hdr + 44, &sz, 8);
        }
        if (kind == XFER_SAVE_PRECOPY)
                d->dirty = g_new0(uint64_t, (d->n_chunks + 63) / 64);
}

static void start_record(SimDevice *d, uint64_t off, uint64_t len)
{
        uint64_t o = htole64(off), l = htole64(len);

        memcpy(d->rec, &o, 8);
        memcpy(d->rec + 8, &l, 8);
        d->rec_off = off;
        d->rec_len = len;
        d->rec_pos = 0;
        d->rec_active = true;
}

/* Pick what the pre-copy session sends next; false when nothing is due. */
static bool next_record(SimDevice *d)
{
        if (d->init_next < d->n_chunks) {
                size_t idx = d->init_next++;

                start_record(d, (uint64_t) idx * SIM_CHUNK_SIZE, chunk_len(d, idx));
                d->rec_initial = true;
                return true;
        }

        if (d->n_dirty > 0) {
                size_t idx = d->scan;

                while (!bit_test(d->dirty, idx))
                        idx = (idx + 1) % d->n_chunks;
                d->dirty[idx / 64] &= ~(UINT64_C(1) << (idx % 64));
                d->n_dirty--;
                d->scan = (idx + 1) % d->n_chunks;
                start_record(d, (uint64_t) idx * SIM_CHUNK_SIZE, chunk_len(d, idx));
                d->rec_initial = false;
                return true;
        }

        if (d->state == VFMIG_MIG_STOP_COPY && !d->end_sent) {
                start_record(d, SIM_END_OFFSET, 0);
                d->rec_initial = false;
                d->end_sent = true;
                return true;
        }

        return false;
}

static size_t copy_out(uint8_t *dst, const uint8_t *src, uint64_t avail, size_t want)
{
        size_t k = (size_t) MIN((uint64_t) want, avail);

        memcpy(dst, src, k);
        return k;
}

static ssize_t save_raw_read(SimDevice *d, uint8_t *buf, size_t n)
{
        uint64_t total = SIM_HEADER_SIZE + d->memory_size;
        size_t done = 0;

        while (done < n && d->pos < total) {
                size_t k;

                if (d->pos < SIM_HEADER_SIZE)
                        k = copy_out(buf + done, d->hdr + d->pos, SIM_HEADER_SIZE - d->pos, n - done);
                else
                        k = copy_out(buf + done, d->mem + (d->pos - SIM_HEADER_SIZE), total - d->pos, n - done);
                d->pos += k;
                done += k;
        }
        return (ssize_t) done;
}

static ssize_t save_precopy_read(SimDevice *d, uint8_t *buf, size_t n)
{
        size_t done = 0;

        while (done < n) {
                size_t k;

                if (d->pos < SIM_HEADER_SIZE) {
                        k = copy_out(buf + done, d->hdr + d->pos, SIM_HEADER_SIZE - d->pos, n - done);
                        d->pos += k;
                        done += k;
                        continue;
                }

                if (!d->rec_active && !next_record(d))
                        break;

                if (d->rec_pos < SIM_RECORD_SIZE)
                        k = copy_out(buf + done, d->rec + d->rec_pos, SIM_RECORD_SIZE - d->rec_pos, n - done);
                else {
                        uint64_t in = d->rec_pos - SIM_RECORD_SIZE;

                        k = copy_out(buf + done, d->mem + d->rec_off + in, d->rec_len - in, n - done);
                }
                d->rec_pos += k;
                done += k;
                if (d->rec_pos == SIM_RECORD_SIZE + d->rec_len)
                        d->rec_active = false;
        }

        if (done > 0)
                return (ssize_t) done;
        /* Nothing due: a permanent end in STOP_COPY, a temporary one before. */
        return d->state == VFMIG_MIG_STOP_COPY ? 0 : -ENOMSG;
}

/* Bytes of initial and of dirty data the pre-copy session has still to send. */
static void precopy_remaining(SimDevice *d, uint64_t *ret_initial, uint64_t *ret_dirty)
{
        uint64_t initial = 0, dirty = 0, rec_left = 0;
        size_t left = d->n_chunks - d->init_next;

        if (d->pos < SIM_HEADER_SIZE)
                initial += SIM_HEADER_SIZE - d->pos;
        if (d->rec_active)
                rec_left = SIM_RECORD_SIZE + d->rec_len - d->rec_pos;
        if (d->rec_active && d->rec_initial)
                initial += rec_left;
        else if (d->rec_active && !d->end_sent)
                dirty += rec_left;
        if (left > 0)
                initial += left * SIM_RECORD_SIZE + (d->memory_size - (uint64_t) d->init_next * SIM_CHUNK_SIZE);

        dirty += d->n_dirty * (SIM_RECORD_SIZE + SIM_CHUNK_SIZE);
        if (d->n_dirty > 0 && bit_test(d->dirty, d->n_chunks - 1))
                dirty -= SIM_CHUNK_SIZE - chunk_len(d, d->n_chunks - 1);

        *ret_initial = initial;
        *ret_dirty = dirty;
}

static int check_header(SimDevice *d)
{
        uint32_t version;
        uint64_t size;

        if (memcmp(d->hdr, SIM_MAGIC_RAW, SIM_MAGIC_SIZE) == 0)
                d->rx_raw = true;
        else if (memcmp(d->hdr, SIM_MAGIC_PRECOPY, SIM_MAGIC_SIZE) == 0)
                d->rx_raw = false;
        else
                return -EINVAL;

        memcpy(&version, d->hdr + 8, 4);
        memcpy(&size, d->hdr + 44, 8);
        if (le32toh(version) > d->version)
                return -EINVAL;
        if (memcmp(d->hdr + 12, d->type, SIM_TYPE_SIZE) != 0)
                return -EINVAL;
        if (le64toh(size) != d->memory_size)
                return -EINVAL;
        return 0;
}

/* Consume one piece of a record stream; returns bytes taken or -EINVAL. */
static ssize_t resume_record(SimDevice *d, const uint8_t *buf, size_t n)
{
        size_t k;

        if (d->rec_pos < SIM_RECORD_SIZE) {
                uint64_t off, len;

                k = MIN(n, (size_t) (SIM_RECORD_SIZE - d->rec_pos));
                memcpy(d->rec + d->rec_pos, buf, k);
                d->rec_pos += k;
                if (d->rec_pos < SIM_RECORD_SIZE)
                        return (ssize_t) k;

                memcpy(&off, d->rec, 8);
                memcpy(&len, d->rec + 8, 8);
                off = le64toh(off);
                len = le64toh(len);
                if (off == SIM_END_OFFSET && len == 0) {
                        d->rx_complete = true;
                        d->rec_pos = 0;
                        return (ssize_t) k;
                }
                if (len == 0 || off > d->memory_size || len > d->memory_size - off)
                        return -EINVAL;
                d->rec_off = off;
                d->rec_len = len;
                return (ssize_t) k;
        }

        k = (size_t) MIN((uint64_t) n, SIM_RECORD_SIZE + d->rec_len - d->rec_pos);
        memcpy(d->mem + d->rec_off + (d->rec_pos - SIM_RECORD_SIZE), buf, k);
        d->rec_pos += k;
        if (d->rec_pos == SIM_RECORD_SIZE + d->rec_len)
                d->rec_pos = 0;
        return (ssize_t) k;
}

static ssize_t resume_write(SimDevice *d, const uint8_t *buf, size_t n)
{
        size_t done = 0;

        if (d->rx_error < 0)
                return d->rx_error;

        while (done < n) {
                ssize_t k;

                if (d->pos < SIM_HEADER_SIZE) {
                        k = (ssize_t) MIN(n - done, (size_t) (SIM_HEADER_SIZE - d->pos));
                        memcpy(d->hdr + d->pos, buf + done, (size_t) k);
                        d->pos += (uint64_t) k;
                        if (d->pos == SIM_HEADER_SIZE) {
                                int r = check_header(d);
                                if (r < 0)
                                        return (d->rx_error = r);
                        }
                } else if (d->rx_complete)
                        return (d->rx_error = -EINVAL);   /* bytes past the end */
                else if (d->rx_raw) {
                        k = (ssize_t) MIN((uint64_t) (n - done), d->memory_size - d->rx_off);
                        memcpy(d->mem + d->rx_off, buf + done, (size_t) k);
                        d->rx_off += (uint64_t) k;
                        d->rx_complete = d->rx_off == d->memory_size;
                } else {
                        k = resume_record(d, buf + done, n - done);
                        if (k < 0)
                                return (d->rx_error = (int) k);
                }
                done += (size_t) k;
        }
        return (ssize_t) done;
}

/* Execute one arc.  On failure the device stays in the arc's start state, or
 * goes to ERROR. */
static int sim_step(SimDevice *d, VfmigMigState next, bool *ret_new_session)
{
        VfmigMigState cur = d->state;

        *ret_new_session = false;

        if (d->fault_step != VFMIG_MIG_ERROR && d->fault_step == next) {
                int error = d->fault_error;

                d->fault_step = VFMIG_MIG_ERROR;
                if (d->fault_to_error) {
                        end_session(d);
                        d->state = VFMIG_MIG_ERROR;
                }
                return -error;
        }

        if (cur == VFMIG_MIG_RESUMING) {
                bool ok = d->xfer == XFER_RESUME && d->rx_error == 0 && d->rx_complete;

                end_session(d);
                if (!ok) {
                        d->state = VFMIG_MIG_ERROR;
                        return -EINVAL;
                }
        }

        if (vfmig_mig_arc_starts_session(cur, next)) {
                begin_session(d, next == VFMIG_MIG_STOP_COPY ? XFER_SAVE_RAW :
                                 next == VFMIG_MIG_RESUMING ? XFER_RESUME : XFER_SAVE_PRECOPY);
                *ret_new_session = true;
        } else if (vfmig_mig_state_is_saving(cur) && !vfmig_mig_state_is_saving(next))
                end_session(d);

        d->state = next;
        return 0;
}

static SimData *data_new(SimDevice *d)
{
        SimData *s = g_new0(SimData, 1);

        s->base.ops = &sim_data_ops;
        s->dev = d;
        s->xfer_id = d->xfer_id;
        s->saving = d->xfer != XFER_RESUME;
        sim_ref(d);
        return s;
}

static int sim_set_state(VfmigVfioDevice *base, VfmigMigState target, VfmigVfioData **ret_data)
{
        SimDevice *d = SIM(base);
        bool new_session = false;

        int k;

        if (d->flags == 0)
                return -ENOTTY;

        k = ensure_memory(d);
        if (k < 0)
                return k;
        sim_activity(d);
        while (d->state != target) {
                VfmigMigState next;
                int r;

                r = vfmig_mig_next_state(d->flags, d->state, target, &next);
                if (r < 0)
                        return r;
                r = sim_step(d, next, &new_session);
                if (r < 0)
                        return r;
        }

        if (new_session)
                *ret_data = &data_new(d)->base;
        return 0;
}

static int sim_get_state(VfmigVfioDevice *base, VfmigMigState *ret)
{
        SimDevice *d = SIM(base);

        if (d->flags == 0)
                return -ENOTTY;
        *ret = d->state;
        return 0;
}

static int sim_get_migration_flags(VfmigVfioDevice *base, uint64_t *ret)
{
        SimDevice *d = SIM(base);

        if (d->flags == 0)
                return -ENOTTY;
        *ret = d->flags;
        return 0;
}

static bool sim_has_dma_logging(VfmigVfioDevice *base)
{
        return SIM(base)->dma_logging;
}

static int sim_get_data_size(VfmigVfioDevice *base, uint64_t *ret)
{
        SimDevice *d = SIM(base);
        uint64_t initial, dirty;

        int k;

        if (d->flags == 0 || d->no_data_size)
                return -EOPNOTSUPP;

        k = ensure_memory(d);
        if (k < 0)
                return k;
        sim_activity(d);
        switch (d->xfer) {
        case XFER_SAVE_PRECOPY:
                precopy_remaining(d, &initial, &dirty);
                *ret = initial + dirty;
                if (!d->end_sent)
                        *ret += SIM_RECORD_SIZE;
                else if (d->rec_active)
                        *ret += SIM_RECORD_SIZE - d->rec_pos;
                break;
        case XFER_SAVE_RAW:
                *ret = SIM_HEADER_SIZE + d->memory_size - d->pos;
                break;
        default:
                *ret = SIM_HEADER_SIZE + d->memory_size;
        }
        return 0;
}

static int sim_reset(VfmigVfioDevice *base)
{
        SimDevice *d = SIM(base);

        end_session(d);
        d->state = VFMIG_MIG_RUNNING;
        d->fault_step = VFMIG_MIG_ERROR;
        d->dirty_carry = 0;
        d->last_ns = now_ns();
        if (d->mem)
                fill_memory(d);   /* else it is filled when first made */
        return 0;
}

static int sim_dup_fd(VfmigVfioDevice *base)
{
        SimDevice *d = SIM(base);
        int fd, k;

        k = ensure_memfd(d);
        if (k < 0)
                return k;
        fd = fcntl(d->memfd, F_DUPFD_CLOEXEC, 3);
        return fd < 0 ? -errno : fd;
}

static void sim_close(VfmigVfioDevice *base)
{
        SimDevice *d = SIM(base);

        d->closed = true;
        end_session(d);
        sim_unref(d);
}

int vfmig_vfio_sim_write_memory_impl(VfmigVfioDevice *base, uint64_t offset, const void *buf, size_t n)
{
        SimDevice *d = SIM(base);
        int k = ensure_memory(d);

        if (k < 0)
                return k;
        sim_activity(d);
        if (!vfmig_mig_state_is_running(d->state))
                return -EBUSY;
        if (offset > d->memory_size || n > d->memory_size - offset)
                return -ERANGE;
        memcpy(d->mem + offset, buf, n);
        mark_dirty_range(d, offset, n);
        return 0;
}

int vfmig_vfio_sim_inject_fault_impl(VfmigVfioDevice *base, VfmigMigState step_to, int error, bool to_error)
{
        SimDevice *d = SIM(base);

        d->fault_step = step_to;
        d->fault_error = error;
        d->fault_to_error = to_error;
        return 0;
}

static SimDevice *data_device(SimData *s)
{
        if (s->dev->closed || s->dev->xfer_id != s->xfer_id)
                return NULL;
        return s->dev;
}

static ssize_t sim_data_read(VfmigVfioData *base, void *buf, size_t n)
{
        SimData *s = (SimData *) base;
        SimDevice *d;

        if (!s->saving)
                return -EBADF;
        d = data_device(s);
        if (!d)
                return -ENODEV;

        sim_activity(d);
        if (d->xfer == XFER_SAVE_RAW)
                return save_raw_read(d, buf, n);
        return save_precopy_read(d, buf, n);
}

static ssize_t sim_data_write(VfmigVfioData *base, const void *buf, size_t n)
{
        SimData *s = (SimData *) base;
        SimDevice *d;

        if (s->saving)
                return -EBADF;
        d = data_device(s);
        if (!d)
                return -ENODEV;
        return resume_write(d, buf, n);
}

static int sim_data_precopy_info(VfmigVfioData *base, uint64_t *initial, uint64_t *dirty)
{
        SimData *s = (SimData *) base;
        SimDevice *d;

        if (!(s->dev->flags & VFMIG_MIGRATION_PRE_COPY) || !s->saving)
                return -ENOTTY;
        d = data_device(s);
        if (!d)
                return -ENODEV;
        if (d->state != VFMIG_MIG_PRE_COPY && d->state != VFMIG_MIG_PRE_COPY_P2P)
                return -EINVAL;

        sim_activity(d);
        precopy_remaining(d, initial, dirty);
        return 0;
}

static int sim_data_fd(VfmigVfioData *base)
{
        return -1;
}

static void sim_data_close(VfmigVfioData *base)
{
        SimData *s = (SimData *) base;

        sim_unref(s->dev);
        g_free(s);
}

static const VfmigVfioDeviceOps sim_ops = {
        .backend = "sim",
        .close = sim_close,
        .get_migration_flags = sim_get_migration_flags,
        .has_dma_logging = sim_has_dma_logging,
        .get_state = sim_get_state,
        .set_state = sim_set_state,
        .get_data_size = sim_get_data_size,
        .reset = sim_reset,
        .dup_fd = sim_dup_fd,
};

static const VfmigVfioDataOps sim_data_ops = {
        .read = sim_data_read,
        .write = sim_data_write,
        .precopy_info = sim_data_precopy_info,
        .fd = sim_data_fd,
        .close = sim_data_close,
};

static bool flags_valid(uint64_t flags)
{
        if (flags == 0)
                return true;
        return (flags & VFMIG_MIGRATION_STOP_COPY) && !(flags & ~VFMIG_MIGRATION_ALL);
}

int vfmig_vfio_sim_open(const VfmigSimDeviceConfig *cfg, VfmigVfioDevice **ret)
{
        SimDevice *d;
        size_t type_len;

        if (!cfg || !ret || !cfg->name || !cfg->stream_type)
                return -EINVAL;
        type_len = strlen(cfg->stream_type);
        if (type_len == 0 || type_len >= SIM_TYPE_SIZE)
                return -EINVAL;
        if (!flags_valid(cfg->migration_flags))
                return -EINVAL;
        if (cfg->memory_size == 0 || cfg->memory_size > SIZE_MAX / 2)
                return -EINVAL;

        d = g_new0(SimDevice, 1);
        d->base.ops = &sim_ops;
        d->base.name = g_strdup(cfg->name);
        d->n_ref = 1;
        d->memfd = -1;
        d->flags = cfg->migration_flags;
        d->dma_logging = cfg->dma_logging;
        d->no_data_size = cfg->no_data_size;
        d->memory_size = cfg->memory_size;
        d->dirty_rate = cfg->dirty_rate;
        d->fill_seed = cfg->fill_seed;
        d->version = cfg->stream_version;
        memcpy(d->type, cfg->stream_type, type_len);
        d->n_chunks = (size_t) ((cfg->memory_size + SIM_CHUNK_SIZE - 1) / SIM_CHUNK_SIZE);
        d->rng = mix64(cfg->fill_seed ^ UINT64_C(0x5653494d));
        d->fault_step = VFMIG_MIG_ERROR;
        d->state = VFMIG_MIG_RUNNING;
        d->last_ns = now_ns();

        *ret = &d->base;
        return 0;
}
