/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * compat-service.h — the daemon's compatibility state: the rules in force,
 * the host matrix fed from inventory events, its cache in CACHE_DIRECTORY
 * (saved shortly after changes), rules reloads that keep the last good rules
 * when a file is broken, and the kernel hook that asks a target driver
 * (migration_version write-and-test).  sd-event for the save timer; no D-Bus.
 */
#pragma once

#include <systemd/sd-event.h>

#include "matrix.h"
#include "profile.h"
#include "rules.h"

typedef struct CompatService CompatService;

typedef struct CompatConfig {
        const char *vendor_dir;       /* data/compat.d */
        const char *admin_dir;        /* /etc/vfmig/compat.d */
        const char *cache_dir;        /* NULL: no cache */
        const char *host_name;
        const char *kernel_release;
        bool kernel_hook;             /* ask real drivers through sysfs */
        /* The identity of a non-VFIO device (an mdev parent) by name; borrowed. */
        const VfmigDevice *(*identity)(const char *name, void *userdata);
        /* The matrix's generation moved. */
        void (*changed)(uint64_t generation, void *userdata);
        void *userdata;
} CompatConfig;

/* Loads the rules (a broken file is logged and skipped) and starts deferred:
 * feed the inventory, then call compat_service_start(). */
int compat_service_new(sd_event *event, const CompatConfig *cfg, CompatService **ret);
void compat_service_free(CompatService *s);

/* Warm start from the cache when its fingerprint matches, else cold. */
void compat_service_start(CompatService *s);

/* Inventory events.  flags: the VFIO layer's migration flags (+dma logging). */
void compat_service_device_updated(CompatService *s, const VfmigDevice *dev, uint64_t vfio_flags, bool dma_logging);
void compat_service_device_removed(CompatService *s, const char *name);
/* The parents as they are now (VfmigMdevParent*); parents not listed are removed. */
void compat_service_parents_updated(CompatService *s, GPtrArray *parents);

/* Re-read the rules.  On success 0 and the matrix is re-evaluated.  If any
 * file is broken, -EINVAL, *errors lists them (one line each), and the last
 * good rules stay in force. */
int compat_service_reload(CompatService *s, char **errors);

Matrix *compat_service_matrix(CompatService *s);
VfmigRuleSet *compat_service_rules(CompatService *s);
const VfmigKernelHook *compat_service_hook(CompatService *s);

/* The profile of a local device: 0, or -ENOENT (no rule) / -EOPNOTSUPP (no
 * migration) / -EINVAL with *why saying which rule and what is missing. */
int compat_service_profile_for(CompatService *s, const VfmigDevice *dev, uint64_t vfio_flags, bool dma_logging,
                               VfmigProfile **ret, char **why);
