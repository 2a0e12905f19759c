/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * inventory.h — the live set of VFIO devices and mdev parents on this host.
 *
 * Sources (inventory-udev.c for the real host, sim-host.c for a simulated
 * one) call the put/remove functions; the inventory decides whether anything
 * changed and tells its listener (the bus adapter) exactly once per change.
 * put functions take ownership of what they are given.  Knows nothing of
 * D-Bus.
 */
#pragma once

#include "device.h"

typedef struct Inventory Inventory;

typedef struct InventoryListener {
        void (*device_added)(Inventory *inv, const VfmigDevice *d, void *userdata);
        void (*device_changed)(Inventory *inv, const VfmigDevice *d, void *userdata);
        void (*device_removed)(Inventory *inv, const VfmigDevice *d, void *userdata);
        void (*parents_changed)(Inventory *inv, void *userdata);
} InventoryListener;

Inventory *inventory_new(void);
void inventory_free(Inventory *inv);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Inventory, inventory_free)

void inventory_set_listener(Inventory *inv, const InventoryListener *l, void *userdata);

/* Add or replace a device.  Returns 1 if added, 2 if changed, 0 if identical. */
int inventory_put_device(Inventory *inv, VfmigDevice *d);
/* Returns 1 if a device of that name was removed, 0 if there was none. */
int inventory_remove_device(Inventory *inv, const char *name);

int inventory_put_parent(Inventory *inv, VfmigMdevParent *p);
int inventory_remove_parent(Inventory *inv, const char *name);

VfmigDevice *inventory_get_device(Inventory *inv, const char *name);
VfmigMdevParent *inventory_get_parent(Inventory *inv, const char *name);
guint inventory_device_count(Inventory *inv);

/* Borrowed pointers, sorted by name; free the array only. */
GPtrArray *inventory_list_devices(Inventory *inv);
GPtrArray *inventory_list_parents(Inventory *inv);
