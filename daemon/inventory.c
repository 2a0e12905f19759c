/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <string.h>

#include "inventory.h"

struct Inventory {
        GHashTable *devices;   /* name -> VfmigDevice* */
        GHashTable *parents;   /* name -> VfmigMdevParent* */
        InventoryListener listener;
        void *userdata;
};

Inventory *inventory_new(void)
{
        Inventory *inv = g_new0(Inventory, 1);

        inv->devices = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                             (GDestroyNotify) vfmig_device_free);
        inv->parents = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                             (GDestroyNotify) vfmig_mdev_parent_free);
        return inv;
}

void inventory_free(Inventory *inv)
{
        if (!inv)
                return;
        g_hash_table_unref(inv->devices);
        g_hash_table_unref(inv->parents);
        g_free(inv);
}

void inventory_set_listener(Inventory *inv, const InventoryListener *l, void *userdata)
{
        if (l)
                inv->listener = *l;
        else
                memset(&inv->listener, 0, sizeof(inv->listener));
        inv->userdata = userdata;
}

int inventory_put_device(Inventory *inv, VfmigDevice *d)
{
        VfmigDevice *old = g_hash_table_lookup(inv->devices, d->name);

        if (old && vfmig_device_equal(old, d)) {
                vfmig_device_free(d);
                return 0;
        }
        /* The key points into the value, so replace both at once. */
        g_hash_table_replace(inv->devices, d->name, d);
        if (old) {
                if (inv->listener.device_changed)
                        inv->listener.device_changed(inv, d, inv->userdata);
                return 2;
        }
        if (inv->listener.device_added)
                inv->listener.device_added(inv, d, inv->userdata);
        return 1;
}

int inventory_remove_device(Inventory *inv, const char *name)
{
        VfmigDevice *d = g_hash_table_lookup(inv->devices, name);

        if (!d)
                return 0;
        /* Tell the listener while the device can still be looked up, so that
         * it can describe what goes away. */
        if (inv->listener.device_removed)
                inv->listener.device_removed(inv, d, inv->userdata);
        g_hash_table_remove(inv->devices, name);
        return 1;
}

int inventory_put_parent(Inventory *inv, VfmigMdevParent *p)
{
        VfmigMdevParent *old = g_hash_table_lookup(inv->parents, p->name);

        vfmig_mdev_parent_sort(p);
        if (old && vfmig_mdev_parent_equal(old, p)) {
                vfmig_mdev_parent_free(p);
                return 0;
        }
        g_hash_table_replace(inv->parents, p->name, p);
        if (inv->listener.parents_changed)
                inv->listener.parents_changed(inv, inv->userdata);
        return old ? 2 : 1;
}

int inventory_remove_parent(Inventory *inv, const char *name)
{
        if (!g_hash_table_remove(inv->parents, name))
                return 0;
        if (inv->listener.parents_changed)
                inv->listener.parents_changed(inv, inv->userdata);
        return 1;
}

VfmigDevice *inventory_get_device(Inventory *inv, const char *name)
{
        return g_hash_table_lookup(inv->devices, name);
}

VfmigMdevParent *inventory_get_parent(Inventory *inv, const char *name)
{
        return g_hash_table_lookup(inv->parents, name);
}

guint inventory_device_count(Inventory *inv)
{
        return g_hash_table_size(inv->devices);
}

static gint device_cmp(gconstpointer a, gconstpointer b)
{
        return strcmp((*(VfmigDevice * const *) a)->name, (*(VfmigDevice * const *) b)->name);
}

static gint parent_cmp(gconstpointer a, gconstpointer b)
{
        return strcmp((*(VfmigMdevParent * const *) a)->name,
                      (*(VfmigMdevParent * const *) b)->name);
}

static GPtrArray *sorted_values(GHashTable *h, GCompareFunc cmp)
{
        GPtrArray *a = g_ptr_array_sized_new(g_hash_table_size(h));
        GHashTableIter it;
        gpointer v;

        g_hash_table_iter_init(&it, h);
        while (g_hash_table_iter_next(&it, NULL, &v))
                g_ptr_array_add(a, v);
        g_ptr_array_sort(a, cmp);
        return a;
}

GPtrArray *inventory_list_devices(Inventory *inv)
{
        return sorted_values(inv->devices, device_cmp);
}

GPtrArray *inventory_list_parents(Inventory *inv)
{
        return sorted_values(inv->parents, parent_cmp);
}
