/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * sim-host.h — a simulated host read from a JSON file (data/sim/NAME.json, schema
 * in doc/sim-host.md): its VFIO devices, non-VFIO devices (which the daemon
 * must ignore exactly as on a real host) and mdev parents with their types.
 *
 * sim_host_load() validates the whole file before anything is used; on error
 * it returns -EINVAL and *error says "FILE:LINE:COL: reason" or
 * "FILE: json.path: reason".  No D-Bus, no sd-event.
 */
#pragma once

#include "inventory.h"
#include "vfio.h"

/* What a simulated device does, from its "migration" object; kept in the
 * VfmigDevice's backend_data. */
typedef struct SimDeviceSpec {
        VfmigSimDeviceConfig config;    /* config.stream_type points at stream_type */
        char stream_type[32];           /* the stream header holds at most 31 characters */
        int open_error;                 /* 0, -EBUSY (group held elsewhere), -EPERM (group not viable) */
} SimDeviceSpec;

typedef struct SimHost {
        char *path;
        char *host_name;
        char *kernel_release;
        GPtrArray *devices;     /* VfmigDevice*: every device in the file, VFIO or not */
        GPtrArray *parents;     /* VfmigMdevParent* */
        GHashTable *templates;  /* "PARENT/TYPE" -> what an instance created from it is like */
        int32_t next_iommu_group;   /* for created instances: above every group in the file */
} SimHost;

int sim_host_load(const char *path, SimHost **ret, char **error);
void sim_host_free(SimHost *h);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SimHost, sim_host_free)

/* Move the host's VFIO devices (filtered like the udev source) and its
 * parents into the inventory. */
void sim_host_populate(SimHost *h, Inventory *inv);

/* A device of the file that is not a VFIO device (an mdev parent, a PF), by
 * name, or NULL: the identity the compatibility rules read for mdevs. */
const VfmigDevice *sim_host_identity(SimHost *h, const char *name);

/*
 * A new mdev instance uuid of p's type type_id, as the simulated kernel would
 * create it (not yet in any inventory): the parent's PCI identity and NUMA
 * node, its own IOMMU group, and the migration behaviour of the type — the
 * type's "migration" object in the file; without one, that of an instance of
 * the same PARENT/TYPE listed in the file; without one, stop-copy and p2p
 * with a 1 MiB state and the type id as stream type.  The driver is that
 * listed instance's, else "vfio_mdev".  Never NULL.
 */
VfmigDevice *sim_host_new_instance(SimHost *h, const VfmigMdevParent *p, const char *type_id, const char *uuid);
