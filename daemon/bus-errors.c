/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>

#include <systemd/sd-bus.h>

#include "vfmigd.h"
#include "vfmig-names.h"

/* Core code returns a negative errno; the bus gets the typed error. */
const sd_bus_error_map vfmig_error_map[] = {
        SD_BUS_ERROR_MAP(VFMIG_ERROR_NO_SUCH_DEVICE, ENXIO),
        SD_BUS_ERROR_MAP(VFMIG_ERROR_INVALID_ARGS, EINVAL),
        SD_BUS_ERROR_MAP(VFMIG_ERROR_NOT_COMPATIBLE, EXDEV),
        SD_BUS_ERROR_MAP(VFMIG_ERROR_BUSY, EBUSY),
        SD_BUS_ERROR_MAP(VFMIG_ERROR_NOT_RESERVED, ENOLCK),
        SD_BUS_ERROR_MAP(VFMIG_ERROR_STREAM_INVALID, EBADMSG),
        SD_BUS_ERROR_MAP(VFMIG_ERROR_DEVICE_FAILED, EIO),
        SD_BUS_ERROR_MAP(VFMIG_ERROR_NOT_SUPPORTED, EOPNOTSUPP),
        SD_BUS_ERROR_MAP(VFMIG_ERROR_NOT_MANAGED, ENODEV),
        SD_BUS_ERROR_MAP(VFMIG_ERROR_ACCESS_DENIED, EACCES),
        SD_BUS_ERROR_MAP(VFMIG_ERROR_TIMED_OUT, ETIMEDOUT),
        SD_BUS_ERROR_MAP_END
};
