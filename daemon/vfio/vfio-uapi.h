/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfio-uapi.h — the VFIO and iommufd uAPI the kernel back end uses, on top of
 * whatever <linux/vfio.h> the build machine has (Debian 12: 6.1).  Everything
 * newer is defined here, each under the guard of its own ioctl/flag macro, so
 * a newer header wins and an older one still builds; the run time probes
 * whether the kernel has it.  Values and layouts are the kernel's ABI
 * (include/uapi/linux/vfio.h, include/uapi/linux/iommufd.h).
 */
#pragma once

#include <linux/types.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>

#if __has_include(<linux/iommufd.h>)
#include <linux/iommufd.h>
#endif

/* 6.2: PRE_COPY states and capability. */
#ifndef VFIO_MIGRATION_PRE_COPY
#define VFIO_MIGRATION_PRE_COPY (1 << 2)
#endif

/* 6.2: VFIO_MIG_GET_PRECOPY_INFO on a saving data fd. */
#ifndef VFIO_MIG_GET_PRECOPY_INFO
struct vfio_precopy_info {
        __u32 argsz;
        __u32 flags;
        __aligned_u64 initial_bytes;
        __aligned_u64 dirty_bytes;
};
#define VFIO_MIG_GET_PRECOPY_INFO _IO(VFIO_TYPE, VFIO_BASE + 21)
#endif

/* 6.1 already has the DMA logging features (6, 7, 8); 6.0 did not. */
#ifndef VFIO_DEVICE_FEATURE_DMA_LOGGING_START
#define VFIO_DEVICE_FEATURE_DMA_LOGGING_START 6
#endif

/* 6.2: estimated stop-copy length. */
#ifndef VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
struct vfio_device_feature_mig_data_size {
        __aligned_u64 stop_copy_length;
};
#define VFIO_DEVICE_FEATURE_MIG_DATA_SIZE 9
#endif

/* 6.6: device cdev bound to an iommufd. */
#ifndef VFIO_DEVICE_BIND_IOMMUFD
struct vfio_device_bind_iommufd {
        __u32 argsz;
        __u32 flags;
        __s32 iommufd;
        __u32 out_devid;
};
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
#endif

#ifndef VFIO_DEVICE_ATTACH_IOMMUFD_PT
struct vfio_device_attach_iommufd_pt {
        __u32 argsz;
        __u32 flags;
        __u32 pt_id;
};
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)
#endif

/* 6.2: iommufd I/O address space allocation on /dev/iommu. */
#ifndef IOMMU_IOAS_ALLOC
#define VFMIG_IOMMUFD_TYPE ';'
#define VFMIG_IOMMUFD_CMD_IOAS_ALLOC 0x81
struct iommu_ioas_alloc {
        __u32 size;
        __u32 flags;
        __u32 out_ioas_id;
};
#define IOMMU_IOAS_ALLOC _IO(VFMIG_IOMMUFD_TYPE, VFMIG_IOMMUFD_CMD_IOAS_ALLOC)
#endif
