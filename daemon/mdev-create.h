/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mdev-create.h — creating and removing mdev instances for reservations of a
 * creatable type ("PARENT/TYPE", the matrix's key of a creatable entry).
 *
 * Real host: create writes a new random UUID to
 * <parent sysfs>/mdev_supported_types/<type>/create (synchronous: the kernel
 * has the instance when the write returns; the inventory learns of it from
 * the uevent); remove writes "1" to /sys/bus/mdev/devices/<uuid>/remove from
 * a worker thread, because the kernel makes that write wait until every
 * holder has closed the device — vfmigd itself among them, which gives it
 * back when the device request eventfd fires (device-access.c) on this very
 * event loop.  The result is logged when the write returns.
 *
 * Simulated host: the instance is put into the inventory at once (its
 * migration behaviour from the host file, sim_host_new_instance()) and the
 * type's available instances go down by one; remove takes it out and gives
 * the slot back.
 *
 * Only instances whose parent and type are what the caller says they were
 * created from are removed: a name that is now something else is left alone.
 * sd-event (completion of removals), no D-Bus.
 */
#pragma once

#include <systemd/sd-event.h>

#include "inventory.h"
#include "sim-host.h"

typedef struct MdevCreator MdevCreator;

/* sim NULL: the real host (sysfs_root "/sys" unless given).  inv: the
 * daemon's inventory (borrowed).  event: where removals report back (may be
 * NULL: reported by nobody). */
MdevCreator *mdev_creator_new(sd_event *event, Inventory *inv, SimHost *sim, const char *sysfs_root);
/* Pending removals on a real host carry on; their results are not logged. */
void mdev_creator_free(MdevCreator *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MdevCreator, mdev_creator_free)

/* Whether key has the shape "PARENT/TYPE" (both valid device names). */
bool mdev_creatable_key_is_valid(const char *key);

/*
 * The instances of key's type that can still be created: from sysfs on a
 * real host (fresh), from the inventory on a simulated one.  -ENXIO (with
 * *error) when the parent or the type is unknown.
 */
int mdev_creator_available(MdevCreator *c, const char *key, uint32_t *ret, char **error);

/*
 * Create one instance of key.  0 and *ret_name (its UUID, newly allocated);
 * or, with *error a message for people: -EINVAL (malformed key), -ENXIO
 * (no such parent or type), -EBUSY (no instance available), -EIO (the
 * kernel refused the create write: *error quotes its errno text), or another
 * negative errno when sysfs could not be read.
 */
int mdev_creator_create(MdevCreator *c, const char *key, char **ret_name, char **error);

/*
 * Remove the instance name that vfmigd created from created_from
 * ("PARENT/TYPE").  0: removed (simulated host) or removal started (real
 * host); -ENOENT: there is no such instance any more (nothing to do);
 * -EPERM: name is not an instance of created_from (left alone); other
 * negative errno: the removal could not be started.  *error (may be NULL)
 * says why on failure.
 */
int mdev_creator_remove(MdevCreator *c, const char *name, const char *created_from, char **error);

/*
 * A restored reservation says vfmigd created name from created_from.  Real
 * host: nothing to do — the kernel kept the instance (the inventory has it
 * if it still exists).  Simulated host: the simulated kernel keeps instances
 * across vfmigd restarts too, so the instance is put back (same name, the
 * type's behaviour, one slot less) unless it is there already.  0; -EPERM
 * when a device of that name is something else (left alone); -ENXIO when the
 * parent or type is gone; -EBUSY when no slot is left.
 */
int mdev_creator_restore(MdevCreator *c, const char *name, const char *created_from, char **error);

/* Real host: removals started and not finished yet. */
guint mdev_creator_pending(MdevCreator *c);
