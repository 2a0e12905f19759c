/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfio-kernel.c — the real VFIO uAPI behind vfio.h.
 *
 * Two ways in, chosen per device at open:
 *   cdev    (>= 6.6): /dev/vfio/devices/vfioN (from sysfs "vfio-dev/vfioN"),
 *           bound to a private /dev/iommu context with one empty IOAS attached;
 *   legacy: /dev/vfio/vfio container + /dev/vfio/<group>, Type1 IOMMU, then
 *           VFIO_GROUP_GET_DEVICE_FD by name.  A group (and its container) can
 *           only be opened once, so devices of one group share it here.
 * Neither maps any memory for DMA: the daemon drives migration and hands the
 * device FD to the VMM, which sets up its own DMA.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"
#include "vfio-fsm.h"
#include "vfio-private.h"
#include "vfio-uapi.h"

typedef struct KernelGroup {
        int number;
        unsigned n_ref;
        int group_fd;
        int container_fd;
} KernelGroup;

typedef struct KernelDevice {
        VfmigVfioDevice base;
        int fd;
        KernelGroup *group;     /* legacy */
        int iommufd;            /* cdev */
} KernelDevice;

typedef struct KernelData {
        VfmigVfioData base;
        int fd;
} KernelData;

/* The groups this process has open (legacy path). */
static GPtrArray *open_groups;

static const VfmigVfioDeviceOps kernel_legacy_ops;
static const VfmigVfioDeviceOps kernel_cdev_ops;
static const VfmigVfioDataOps kernel_data_ops;

static KernelDevice *KDEV(VfmigVfioDevice *d)
{
        return (KernelDevice *) d;
}

static KernelGroup *group_find(int number)
{
        if (!open_groups)
                return NULL;
        for (guint i = 0; i < open_groups->len; i++) {
                KernelGroup *g = g_ptr_array_index(open_groups, i);
                if (g->number == number)
                        return g;
        }
        return NULL;
}

static void group_unref(KernelGroup *g)
{
        if (!g || --g->n_ref > 0)
                return;
        g_ptr_array_remove(open_groups, g);
        if (open_groups->len == 0)
                g_clear_pointer(&open_groups, g_ptr_array_unref);
        /* The group leaves the container when its fd closes; the container
         * goes when its last group is gone. */
        close(g->group_fd);
        close(g->container_fd);
        g_free(g);
}

static int group_get(int number, KernelGroup **ret)
{
        _cleanup_close_ int container = -1, group = -1;
        struct vfio_group_status status = { .argsz = sizeof(status) };
        char path[64];
        int iommu_type, r;
        KernelGroup *g;

        g = group_find(number);
        if (g) {
                g->n_ref++;
                *ret = g;
                return 0;
        }

        container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
        if (container < 0)
                return -errno;
        r = ioctl(container, VFIO_GET_API_VERSION);
        if (r != VFIO_API_VERSION)
                return -EPROTO;
        if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) > 0)
                iommu_type = VFIO_TYPE1v2_IOMMU;
        else if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) > 0)
                iommu_type = VFIO_TYPE1_IOMMU;
        else
                return -EOPNOTSUPP;

        snprintf(path, sizeof(path), "/dev/vfio/%d", number);
        group = open(path, O_RDWR | O_CLOEXEC);
        if (group < 0)
                return -errno;
        if (ioctl(group, VFIO_GROUP_GET_STATUS, &status) < 0)
                return -errno;
        /* -EPERM, as the kernel's own SET_CONTAINER says for a non-viable group. */
        if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE))
                return -EPERM;
        if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0)
                return -errno;
        if (ioctl(container, VFIO_SET_IOMMU, iommu_type) < 0)
                return -errno;

        g = g_new0(KernelGroup, 1);
        g->number = number;
        g->n_ref = 1;
        g->group_fd = steal_fd(&group);
        g->container_fd = steal_fd(&container);
        if (!open_groups)
                open_groups = g_ptr_array_new();
        g_ptr_array_add(open_groups, g);
        *ret = g;
        return 0;
}

static bool name_is_valid(const char *s)
{
        size_t n = strlen(s);

        if (n == 0 || n > 64)
                return false;
        return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:._-") == n &&
                s[0] != '.';
}

static char *find_sysfs_path(const char *name)
{
        static const char *const buses[] = { "/sys/bus/pci/devices/", "/sys/bus/mdev/devices/" };

        for (size_t i = 0; i < ELEMENTSOF(buses); i++) {
                g_autofree char *p = g_strconcat(buses[i], name, NULL);
                if (access(p, F_OK) == 0)
                        return g_steal_pointer(&p);
        }
        return NULL;
}

static int read_iommu_group(const char *syspath)
{
        g_autofree char *link = g_build_filename(syspath, "iommu_group", NULL);
        g_autofree char *target = g_file_read_link(link, NULL);
        g_autofree char *base = NULL;
        char *end;
        long n;

        if (!target)
                return -ENOENT;
        base = g_path_get_basename(target);
        errno = 0;
        n = strtol(base, &end, 10);
        if (errno != 0 || *end != '\0' || n < 0 || n > INT_MAX)
                return -EINVAL;
        return (int) n;
}

/* The device's cdev node name ("vfio3") from its sysfs "vfio-dev" directory. */
static char *find_cdev_name(const char *syspath)
{
        g_autofree char *dir = g_build_filename(syspath, "vfio-dev", NULL);
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *e;

        if (!d)
                return NULL;
        while ((e = g_dir_read_name(d)))
                if (g_str_has_prefix(e, "vfio") && e[4] && strspn(e + 4, "0123456789") == strlen(e + 4))
                        return g_strdup(e);
        return NULL;
}

static int open_cdev(KernelDevice *d, const char *syspath)
{
        _cleanup_close_ int fd = -1, iommufd = -1;
        g_autofree char *node = NULL, *path = NULL;
        struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
        struct iommu_ioas_alloc ioas = { .size = sizeof(ioas) };
        struct vfio_device_attach_iommufd_pt attach = { .argsz = sizeof(attach) };

        node = find_cdev_name(syspath);
        if (!node)
                return -ENOENT;
        path = g_build_filename("/dev/vfio/devices", node, NULL);

        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
        if (iommufd < 0)
                return -errno;

        bind.iommufd = iommufd;
        if (ioctl(fd, VFIO_DEVICE_BIND_IOMMUFD, &bind) < 0)
                return -errno;
        if (ioctl(iommufd, IOMMU_IOAS_ALLOC, &ioas) < 0)
                return -errno;
        attach.pt_id = ioas.out_ioas_id;
        if (ioctl(fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach) < 0)
                return -errno;

        d->fd = steal_fd(&fd);
        d->iommufd = steal_fd(&iommufd);
        d->base.ops = &kernel_cdev_ops;
        return 0;
}

static int open_legacy(KernelDevice *d, const char *name, int group_number)
{
        KernelGroup *g = NULL;
        int r, fd;

        r = group_get(group_number, &g);
        if (r < 0)
                return r;
        fd = ioctl(g->group_fd, VFIO_GROUP_GET_DEVICE_FD, name);
        if (fd < 0) {
                r = -errno;
                group_unref(g);
                return r;
        }
        d->fd = fd;
        d->group = g;
        d->base.ops = &kernel_legacy_ops;
        return 0;
}

static void kernel_close(VfmigVfioDevice *base)
{
        KernelDevice *d = KDEV(base);

        if (d->fd >= 0)
                close(d->fd);
        if (d->iommufd >= 0)
                close(d->iommufd);
        group_unref(d->group);
        g_free(d->base.name);
        g_free(d);
}

int vfmig_vfio_kernel_open(const char *name, int iommu_group, const char *sysfs_path, VfmigVfioDevice **ret)
{
        g_autofree char *syspath = NULL;
        KernelDevice *d;
        int r = -ENOENT;

        if (!name || !ret || !name_is_valid(name))
                return -EINVAL;

        syspath = sysfs_path ? g_strdup(sysfs_path) : find_sysfs_path(name);
        if (iommu_group < 0) {
                if (!syspath)
                        return -ENOENT;
                iommu_group = read_iommu_group(syspath);
                if (iommu_group < 0)
                        return iommu_group;
        }

        d = g_new0(KernelDevice, 1);
        d->base.name = g_strdup(name);
        d->fd = -1;
        d->iommufd = -1;

        /* A group this process already holds through the legacy path blocks
         * the cdev path for its devices (the kernel says -EBUSY). */
        if (syspath && !group_find(iommu_group) &&
            access("/dev/vfio/devices", F_OK) == 0 && access("/dev/iommu", F_OK) == 0) {
                r = open_cdev(d, syspath);
                if (r < 0 && r != -ENOENT && r != -ENOTTY && r != -ENODEV) {
                        kernel_close(&d->base);
                        return r;
                }
        }
        if (r < 0)
                r = open_legacy(d, name, iommu_group);
        if (r < 0) {
                kernel_close(&d->base);
                return r;
        }

        *ret = &d->base;
        return 0;
}

/* One VFIO_DEVICE_FEATURE call; data (size bytes) goes in and comes back. */
static int device_feature(int fd, uint32_t flags, void *data, size_t size)
{
        uint64_t buf[(sizeof(struct vfio_device_feature) + 64) / 8] = {};
        struct vfio_device_feature *f = (struct vfio_device_feature *) buf;

        g_assert(size <= 64);
        f->argsz = (uint32_t) (sizeof(*f) + size);
        f->flags = flags;
        if (size > 0)
                memcpy(f->data, data, size);
        if (ioctl(fd, VFIO_DEVICE_FEATURE, f) < 0)
                return -errno;
        if (size > 0)
                memcpy(data, f->data, size);
        return 0;
}

static int kernel_get_migration_flags(VfmigVfioDevice *base, uint64_t *ret)
{
        struct vfio_device_feature_migration mig = {};
        int r;

        r = device_feature(KDEV(base)->fd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION,
                           &mig, sizeof(mig));
        if (r < 0)
                return r;
        *ret = mig.flags;
        return 0;
}

static bool kernel_has_dma_logging(VfmigVfioDevice *base)
{
        return device_feature(KDEV(base)->fd,
                              VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET |
                              VFIO_DEVICE_FEATURE_DMA_LOGGING_START, NULL, 0) == 0;
}

static int kernel_get_state(VfmigVfioDevice *base, VfmigMigState *ret)
{
        struct vfio_device_feature_mig_state st = { .data_fd = -1 };
        int r;

        r = device_feature(KDEV(base)->fd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
                           &st, sizeof(st));
        if (r < 0)
                return r;
        *ret = (VfmigMigState) st.device_state;
        return 0;
}

static int kernel_set_state(VfmigVfioDevice *base, VfmigMigState new_state, VfmigVfioData **ret_data)
{
        struct vfio_device_feature_mig_state st = { .device_state = (uint32_t) new_state, .data_fd = -1 };
        KernelData *s;
        int r;

        /* STOP_COPY -> PRE_COPY(_P2P) is blocked, but kernels without the 2026
         * fix to vfio_mig_get_next_state() spin forever on it for a
         * precopy-capable device instead of failing: never send it. */
        if (new_state == VFMIG_MIG_PRE_COPY || new_state == VFMIG_MIG_PRE_COPY_P2P) {
                VfmigMigState cur;

                r = kernel_get_state(base, &cur);
                if (r < 0)
                        return r;
                if (cur == VFMIG_MIG_STOP_COPY)
                        return -EINVAL;
        }

        r = device_feature(KDEV(base)->fd, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
                           &st, sizeof(st));
        if (r < 0)
                return r;
        if (st.data_fd < 0)
                return 0;

        s = g_new0(KernelData, 1);
        s->base.ops = &kernel_data_ops;
        s->fd = st.data_fd;
        *ret_data = &s->base;
        return 0;
}

static int kernel_get_data_size(VfmigVfioDevice *base, uint64_t *ret)
{
        struct vfio_device_feature_mig_data_size ds = {};
        int r;

        r = device_feature(KDEV(base)->fd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
                           &ds, sizeof(ds));
        if (r == -ENOTTY)
                return -EOPNOTSUPP;
        if (r < 0)
                return r;
        *ret = ds.stop_copy_length;
        return 0;
}

static int kernel_reset(VfmigVfioDevice *base)
{
        return ioctl(KDEV(base)->fd, VFIO_DEVICE_RESET) < 0 ? -errno : 0;
}

static int kernel_dup_fd(VfmigVfioDevice *base)
{
        int fd = fcntl(KDEV(base)->fd, F_DUPFD_CLOEXEC, 3);

        return fd < 0 ? -errno : fd;
}

static int kernel_request_eventfd(VfmigVfioDevice *base)
{
        KernelDevice *d = KDEV(base);
        struct vfio_device_info info = { .argsz = sizeof(info) };
        struct vfio_irq_info irq = { .argsz = sizeof(irq), .index = VFIO_PCI_REQ_IRQ_INDEX };
        union {
                struct vfio_irq_set set;
                uint8_t buf[sizeof(struct vfio_irq_set) + sizeof(int32_t)];
        } u = {};
        _cleanup_close_ int efd = -1;
        int32_t fd32;

        /* The request IRQ is how the kernel asks the owner to let go (driver
         * unbind, mdev removal); vfio-pci puts it at VFIO_PCI_REQ_IRQ_INDEX
         * and mdev drivers with a vfio-pci device API follow it. */
        if (ioctl(d->fd, VFIO_DEVICE_GET_INFO, &info) < 0)
                return -errno;
        if (info.num_irqs <= VFIO_PCI_REQ_IRQ_INDEX)
                return -EOPNOTSUPP;
        if (ioctl(d->fd, VFIO_DEVICE_GET_IRQ_INFO, &irq) < 0)
                return -errno;
        if (irq.count < 1 || !(irq.flags & VFIO_IRQ_INFO_EVENTFD))
                return -EOPNOTSUPP;
        efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (efd < 0)
                return -errno;
        u.set.argsz = sizeof(u.buf);
        u.set.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
        u.set.index = VFIO_PCI_REQ_IRQ_INDEX;
        u.set.start = 0;
        u.set.count = 1;
        fd32 = efd;
        memcpy(u.set.data, &fd32, sizeof(fd32));
        if (ioctl(d->fd, VFIO_DEVICE_SET_IRQS, &u.set) < 0)
                return -errno;
        return steal_fd(&efd);
}

static ssize_t kernel_data_read(VfmigVfioData *base, void *buf, size_t n)
{
        for (;;) {
                ssize_t k = read(((KernelData *) base)->fd, buf, n);
                if (k >= 0)
                        return k;
                if (errno != EINTR)
                        return -errno;
        }
}

static ssize_t kernel_data_write(VfmigVfioData *base, const void *buf, size_t n)
{
        for (;;) {
                ssize_t k = write(((KernelData *) base)->fd, buf, n);
                if (k >= 0)
                        return k;
                if (errno != EINTR)
                        return -errno;
        }
}

static int kernel_data_precopy_info(VfmigVfioData *base, uint64_t *initial, uint64_t *dirty)
{
        struct vfio_precopy_info info = { .argsz = sizeof(info) };

        if (ioctl(((KernelData *) base)->fd, VFIO_MIG_GET_PRECOPY_INFO, &info) < 0)
                return -errno;
        *initial = info.initial_bytes;
        *dirty = info.dirty_bytes;
        return 0;
}

static int kernel_data_fd(VfmigVfioData *base)
{
        return ((KernelData *) base)->fd;
}

static void kernel_data_close(VfmigVfioData *base)
{
        close(((KernelData *) base)->fd);
        g_free(base);
}

#define KERNEL_DEVICE_OPS(name)                                         \
        {                                                               \
                .backend = name,                                        \
                .close = kernel_close,                                  \
                .get_migration_flags = kernel_get_migration_flags,      \
                .has_dma_logging = kernel_has_dma_logging,              \
                .get_state = kernel_get_state,                          \
                .set_state = kernel_set_state,                          \
                .get_data_size = kernel_get_data_size,                  \
                .reset = kernel_reset,                                  \
                .dup_fd = kernel_dup_fd,                                \
                .request_eventfd = kernel_request_eventfd,              \
        }

static const VfmigVfioDeviceOps kernel_legacy_ops = KERNEL_DEVICE_OPS("kernel-legacy");
static const VfmigVfioDeviceOps kernel_cdev_ops = KERNEL_DEVICE_OPS("kernel-cdev");

static const VfmigVfioDataOps kernel_data_ops = {
        .read = kernel_data_read,
        .write = kernel_data_write,
        .precopy_info = kernel_data_precopy_info,
        .fd = kernel_data_fd,
        .close = kernel_data_close,
};
