/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfio.h — the daemon's one narrow interface to a VFIO device and its
 * migration state machine (the kernel's "migration protocol v2").
 *
 * Two back ends sit behind it:
 *   - kernel: the real uAPI, through the legacy group/container path or the
 *     device cdev + iommufd path (chosen at run time);
 *   - sim: an in-process device with the kernel's exact state machine rules,
 *     for --simulate hosts and the fast tests.
 *
 * Every call returns a negative errno on failure, like the kernel does; the
 * errno values of the state machine are the kernel's (see vfio-fsm.h).  None
 * of the calls block on anything but the device itself.  Not thread-safe: a
 * device and its data streams belong to one thread (the daemon's event loop).
 * No sd-bus, no main loop: GLib is used for types and auto-cleanup only.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* The device states; the numbers are the kernel's enum vfio_device_mig_state. */
typedef enum VfmigMigState {
        VFMIG_MIG_ERROR = 0,
        VFMIG_MIG_STOP = 1,
        VFMIG_MIG_RUNNING = 2,
        VFMIG_MIG_STOP_COPY = 3,
        VFMIG_MIG_RESUMING = 4,
        VFMIG_MIG_RUNNING_P2P = 5,
        VFMIG_MIG_PRE_COPY = 6,
        VFMIG_MIG_PRE_COPY_P2P = 7,
        _VFMIG_MIG_STATE_MAX,
} VfmigMigState;

/* Migration capability bits; the values are the kernel's VFIO_MIGRATION_*. */
#define VFMIG_MIGRATION_STOP_COPY UINT64_C(0x1)
#define VFMIG_MIGRATION_P2P       UINT64_C(0x2)
#define VFMIG_MIGRATION_PRE_COPY  UINT64_C(0x4)
#define VFMIG_MIGRATION_ALL (VFMIG_MIGRATION_STOP_COPY | VFMIG_MIGRATION_P2P | VFMIG_MIGRATION_PRE_COPY)

/* "error", "stop", "running", "stop-copy", "resuming", "running-p2p",
 * "pre-copy", "pre-copy-p2p"; NULL for a value outside the enum. */
const char *vfmig_mig_state_to_string(VfmigMigState state);

/* The inverse of vfmig_mig_state_to_string(): 0, or -EINVAL for an unknown
 * (or NULL) string. */
int vfmig_mig_state_from_string(const char *s, VfmigMigState *ret);

/* Migration capabilities as strings for the bus, in this order:
 * "stop-copy", "p2p", "pre-copy", "dma-logging".  Unknown bits are left out.
 * Never NULL; free with g_strfreev(). */
char **vfmig_mig_flags_to_strv(uint64_t flags, bool dma_logging);

typedef struct VfmigVfioDevice VfmigVfioDevice;   /* opaque, one per device */
typedef struct VfmigVfioData VfmigVfioData;       /* one migration data stream */

/*
 * Open a real VFIO device by its kernel name: a PCI address ("0000:01:00.1")
 * or an mdev UUID.  iommu_group is its IOMMU group number, or -1 to read it
 * from sysfs.  sysfs_path is the device's sysfs directory, or NULL for
 * /sys/bus/pci/devices/NAME, then /sys/bus/mdev/devices/NAME.
 *
 * The device cdev + iommufd path is used when /dev/vfio/devices/, /dev/iommu
 * and the device's "vfio-dev/vfioN" sysfs entry all exist; otherwise (or when
 * that path reports -ENOTTY/-ENODEV/-ENOENT) the legacy group/container path,
 * with the container shared by every device of one group in this process.
 * -EINVAL for a malformed name, -ENOENT when no such device or group node,
 * -EPERM when the group is not viable (a member is bound to a host driver),
 * -EBUSY when the group or device is already held by another process, -EPROTO for an unknown VFIO API version,
 * -EOPNOTSUPP when no Type1 IOMMU is available; other errnos as the kernel
 * gives them.
 */
int vfmig_vfio_kernel_open(const char *name, int iommu_group, const char *sysfs_path, VfmigVfioDevice **ret);

/*
 * A simulated device.  Its "device memory" (memory_size bytes) is its whole
 * state: a memfd mapped into this process, filled from fill_seed (0 = zeros).
 * The saved stream is the sim's own format (see vfio-sim.c):
 *   STOP -> STOP_COPY:  "VFMIGDEV", u32 LE version, 32-byte NUL-padded type,
 *                       u64 LE memory size, then the raw memory bytes;
 *   via PRE_COPY:       the same header with magic "VFMIGDPC", then records
 *                       (u64 LE offset, u64 LE length, bytes) and an end record
 *                       (offset UINT64_MAX, length 0).
 * A target accepts either form when its type and memory size match and the
 * stream's version is <= its own stream_version.
 */
typedef struct VfmigSimDeviceConfig {
        const char *name;               /* any printable name, for vfmig_vfio_name() */
        uint64_t migration_flags;       /* VFMIG_MIGRATION_* bits; 0 = no migration support */
        bool dma_logging;               /* answer the DMA logging probe */
        bool no_data_size;              /* behave like 6.1: MIG_DATA_SIZE absent */
        uint64_t memory_size;           /* bytes of device memory, > 0 */
        uint64_t dirty_rate;            /* bytes/s rewritten while running (RUNNING*, PRE_COPY*) */
        const char *stream_type;        /* <= 31 characters, written in the stream header */
        uint32_t stream_version;        /* written in the header; a target accepts <= its own */
        uint64_t fill_seed;             /* initial memory pattern; 0 = all zero */
} VfmigSimDeviceConfig;

/* Create a simulated device in RUNNING.  -EINVAL for a config the kernel could
 * not present (flags other than the documented combinations, zero memory, a
 * missing or over-long stream_type), -ENOMEM / memfd errors otherwise. */
int vfmig_vfio_sim_open(const VfmigSimDeviceConfig *cfg, VfmigVfioDevice **ret);

/* Close the device (NULL is fine).  Open data streams stay valid objects but
 * every call on them then fails with -ENODEV; close them as usual. */
void vfmig_vfio_close(VfmigVfioDevice *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfmigVfioDevice, vfmig_vfio_close)

/* "kernel-legacy", "kernel-cdev" or "sim". */
const char *vfmig_vfio_backend(VfmigVfioDevice *d);

/* The name the device was opened with. */
const char *vfmig_vfio_name(VfmigVfioDevice *d);

/* VFIO_DEVICE_FEATURE_MIGRATION: the VFMIG_MIGRATION_* bits.  -ENOTTY when the
 * device has no migration support. */
int vfmig_vfio_get_migration_flags(VfmigVfioDevice *d, uint64_t *ret_flags);

/* Whether the device supports DMA logging (feature 6 answers a PROBE). */
bool vfmig_vfio_has_dma_logging(VfmigVfioDevice *d);

/* VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE GET.  -ENOTTY without migration. */
int vfmig_vfio_get_state(VfmigVfioDevice *d, VfmigMigState *ret);

/*
 * VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE SET: move to new_state; the device walks
 * combination arcs itself.  When the last arc starts a data transfer session
 * (-> STOP_COPY from STOP, -> PRE_COPY(_P2P) from RUNNING(_P2P), -> RESUMING)
 * its stream is returned in *ret_data (closed at once if ret_data is NULL);
 * otherwise *ret_data is NULL.  Moving within the saving group
 * (PRE_COPY -> STOP_COPY, ...) keeps the existing stream; leaving a saving or
 * resuming state ends its stream (calls on it then fail with -ENODEV).
 *
 * Errors are the kernel's: -EINVAL for ERROR, an unknown or unsupported state,
 * STOP_COPY -> PRE_COPY(_P2P), or any request while in ERROR (except ERROR
 * itself, a no-op); -ENOTTY without migration; leaving RESUMING with a stream
 * the device rejects fails (the sim: -EINVAL, device in ERROR).  After a
 * failure the device may be in its original state, any state along the path,
 * or ERROR: read it back with vfmig_vfio_get_state().
 */
int vfmig_vfio_set_state(VfmigVfioDevice *d, VfmigMigState new_state, VfmigVfioData **ret_data);

/* VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: the estimated bytes still to come for a
 * stop-copy.  -EOPNOTSUPP when the kernel or device lacks it (6.1). */
int vfmig_vfio_get_data_size(VfmigVfioDevice *d, uint64_t *ret_stop_copy_length);

/* VFIO_DEVICE_RESET: the device returns to RUNNING (also from ERROR); every
 * open stream ends. */
int vfmig_vfio_reset(VfmigVfioDevice *d);

/* A new non-blocking eventfd that the kernel signals when it wants the device
 * back (driver unbind, mdev removal: the device request IRQ).  The owner must
 * then close the device, or the kernel's unbind/remove waits.  The caller
 * owns the fd.  -EOPNOTSUPP when the device has no request channel (the sim). */
int vfmig_vfio_request_eventfd(VfmigVfioDevice *d);

/* A new O_CLOEXEC duplicate of the device FD, for a VMM (OpenDevice); for the
 * sim a duplicate of its memory memfd.  The caller owns it. */
int vfmig_vfio_dup_fd(VfmigVfioDevice *d);

/*
 * Read from a saving stream: bytes read, 0 at the end of the stream
 * (STOP_COPY, permanent), -ENOMSG at a temporary end (PRE_COPY: no data right
 * now, more may come), -ENODEV once the session ended, -EBADF on a resuming
 * stream, other -errno from the kernel.  n must be > 0.
 */
ssize_t vfmig_vfio_data_read(VfmigVfioData *s, void *buf, size_t n);

/* Write to a resuming stream: bytes accepted (may be short), -EINVAL when the
 * device already rejects what it got (the sim checks the header as soon as it
 * is complete), -ENODEV once the session ended, -EBADF on a saving stream. */
ssize_t vfmig_vfio_data_write(VfmigVfioData *s, const void *buf, size_t n);

/* VFIO_MIG_GET_PRECOPY_INFO: bytes of initial and dirty data available now.
 * -ENOTTY when the device/kernel lacks it, -EINVAL when the device is not in a
 * PRE_COPY state, -ENODEV once the session ended. */
int vfmig_vfio_data_precopy_info(VfmigVfioData *s, uint64_t *ret_initial_bytes, uint64_t *ret_dirty_bytes);

/* The stream's real fd (kernel back end; for poll()), or -1 for the sim.
 * Still owned by the stream. */
int vfmig_vfio_data_fd(VfmigVfioData *s);

/* Close the stream (NULL is fine).  Closing a saving stream early is allowed;
 * closing a resuming stream before it is complete makes leaving RESUMING fail. */
void vfmig_vfio_data_close(VfmigVfioData *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfmigVfioData, vfmig_vfio_data_close)

/*
 * Sim-only seams (-EOPNOTSUPP on a kernel device).
 *
 * vfmig_vfio_sim_write_memory(): the device's own activity — write bytes into
 * its memory and mark them dirty for PRE_COPY, as a running device (or a VMM
 * through the device) would.  -EBUSY unless the device is running (RUNNING,
 * RUNNING_P2P, PRE_COPY, PRE_COPY_P2P), -ERANGE outside the memory.
 *
 * vfmig_vfio_sim_inject_fault(): the next arc into step_to fails with -error;
 * the device is left in the arc's starting state, or in ERROR when to_error.
 * Fires once.  step_to = VFMIG_MIG_ERROR clears a pending fault.
 */
int vfmig_vfio_sim_write_memory(VfmigVfioDevice *d, uint64_t offset, const void *buf, size_t n);
int vfmig_vfio_sim_inject_fault(VfmigVfioDevice *d, VfmigMigState step_to, int error, bool to_error);
