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
typedef struct CompatPreload CompatPreload;

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
        CompatPreload *preload;       /* NULL, or taken over by compat_service_new() */
} CompatConfig;

/*
 * What a start can read before it knows the host: the rules and the cache
 * file (checked against the host later, by compat_service_start()).  Read
 * on a thread of its own while the main thread enumerates the devices;
 * the thread touches nothing else and logs nothing.  Start it after
 * blocking the signals the event loop takes (the thread inherits the mask).
 * cache_dir NULL: no cache.
 */
CompatPreload *compat_preload_start(const char *vendor_dir, const char *admin_dir, const char *cache_dir);
/* Waits for the thread; for a start that fails before compat_service_new(). */
void compat_preload_free(CompatPreload *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CompatPreload, compat_preload_free)

/* Loads the rules (a broken file is logged and skipped) and starts deferred:
 * feed the inventory, then call compat_service_start().  With cfg->preload
 * (its directories must be cfg's), the rules and cache file it read are
 * taken over (and the preload freed) rather than read again. */
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
