/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests for the inventory core: device model, change detection,
 * listener calls, sorted listings, name validators. */
#include <glib.h>

#include "inventory.h"
#include "util.h"
#include "vfmig-names.h"

typedef struct Events {
        int added, changed, removed, parents;
        char *last;
} Events;

static void ev_added(Inventory *inv, const VfmigDevice *d, void *u)
{
        Events *e = u;
        e->added++;
        g_free(e->last);
        e->last = g_strdup(d->name);
}

static void ev_changed(Inventory *inv, const VfmigDevice *d, void *u)
{
        ((Events *) u)->changed++;
}

static void ev_removed(Inventory *inv, const VfmigDevice *d, void *u)
{
        Events *e = u;
        /* The device is still reachable while the listener describes it. */
        g_assert_true(inventory_get_device(inv, d->name) == d);
        e->removed++;
}

static void ev_parents(Inventory *inv, void *u)
{
        ((Events *) u)->parents++;
}

static const InventoryListener listener = {
        .device_added = ev_added,
        .device_changed = ev_changed,
        .device_removed = ev_removed,
        .parents_changed = ev_parents,
};

static VfmigDevice *pci(const char *name, const char *driver)
{
        VfmigDevice *d = vfmig_device_new(name, VFMIG_DEVICE_PCI);
        g_free(d->driver);
        d->driver = g_strdup(driver);
        d->vendor_id = 0x15b3;
        return d;
}

static void test_put_change_remove(void)
{
        g_autoptr(Inventory) inv = inventory_new();
        Events e = {};
        VfmigDevice *d;

        inventory_set_listener(inv, &listener, &e);
        g_assert_cmpint(inventory_put_device(inv, pci("0000:17:00.2", "vfio-pci")), ==, 1);
        g_assert_cmpint(inventory_put_device(inv, pci("0000:17:00.1", "vfio-pci")), ==, 1);
        g_assert_cmpint(e.added, ==, 2);
        g_assert_cmpstr(e.last, ==, "0000:17:00.1");

        /* Identical: nothing happens. */
        g_assert_cmpint(inventory_put_device(inv, pci("0000:17:00.1", "vfio-pci")), ==, 0);
        g_assert_cmpint(e.changed, ==, 0);

        /* An attribute differs: changed, and the new value is in place. */
        d = pci("0000:17:00.1", "vfio-pci");
        g_hash_table_insert(d->attributes, g_strdup("fw_version"), g_strdup("28.41"));
        g_assert_cmpint(inventory_put_device(inv, d), ==, 2);
        g_assert_cmpint(e.changed, ==, 1);
        g_assert_cmpstr(g_hash_table_lookup(inventory_get_device(inv, "0000:17:00.1")->attributes, "fw_version"),
                        ==, "28.41");

        d = pci("0000:17:00.1", "mlx5_vfio_pci");
        g_assert_cmpint(inventory_put_device(inv, d), ==, 2);
        g_assert_cmpstr(inventory_get_device(inv, "0000:17:00.1")->driver, ==, "mlx5_vfio_pci");

        {
                g_autoptr(GPtrArray) l = inventory_list_devices(inv);
                g_assert_cmpuint(l->len, ==, 2);
                g_assert_cmpstr(((VfmigDevice *) l->pdata[0])->name, ==, "0000:17:00.1");
                g_assert_cmpstr(((VfmigDevice *) l->pdata[1])->name, ==, "0000:17:00.2");
        }

        g_assert_cmpint(inventory_remove_device(inv, "0000:17:00.1"), ==, 1);
        g_assert_cmpint(inventory_remove_device(inv, "0000:17:00.1"), ==, 0);
        g_assert_cmpint(e.removed, ==, 1);
        g_assert_null(inventory_get_device(inv, "0000:17:00.1"));
        g_assert_cmpuint(inventory_device_count(inv), ==, 1);
        g_free(e.last);
}

static VfmigMdevParent *parent(unsigned avail)
{
        VfmigMdevParent *p = vfmig_mdev_parent_new("0000:00:02.0");
        VfmigMdevType *b = vfmig_mdev_type_new("i915-GVTg_V5_8"), *a = vfmig_mdev_type_new("i915-GVTg_V5_4");

        a->available_instances = avail;
        g_ptr_array_add(p->types, b);
        g_ptr_array_add(p->types, a);
        return p;
}

static void test_parents(void)
{
        g_autoptr(Inventory) inv = inventory_new();
        Events e = {};

        inventory_set_listener(inv, &listener, &e);
        g_assert_cmpint(inventory_put_parent(inv, parent(2)), ==, 1);
        g_assert_cmpint(inventory_put_parent(inv, parent(2)), ==, 0);
        g_assert_cmpint(inventory_put_parent(inv, parent(1)), ==, 2);
        g_assert_cmpint(e.parents, ==, 2);
        /* Types come out sorted by id. */
        g_assert_cmpstr(((VfmigMdevType *) inventory_get_parent(inv, "0000:00:02.0")->types->pdata[0])->id,
                        ==, "i915-GVTg_V5_4");
        g_assert_cmpint(inventory_remove_parent(inv, "0000:00:02.0"), ==, 1);
        g_assert_cmpint(inventory_remove_parent(inv, "0000:00:02.0"), ==, 0);
        g_assert_cmpint(e.parents, ==, 3);
}

static void test_vfio_drivers(void)
{
        g_assert_true(vfmig_driver_is_vfio_pci("vfio-pci"));
        g_assert_true(vfmig_driver_is_vfio_pci("mlx5_vfio_pci"));
        g_assert_true(vfmig_driver_is_vfio_pci("hisi_acc_vfio_pci"));
        g_assert_false(vfmig_driver_is_vfio_pci("_vfio_pci"));
        g_assert_false(vfmig_driver_is_vfio_pci("nvme"));
        g_assert_false(vfmig_driver_is_vfio_pci("vfio-pci-evil"));
        g_assert_false(vfmig_driver_is_vfio_pci(""));
        g_assert_false(vfmig_driver_is_vfio_pci(NULL));
}

static void test_validators(void)
{
        g_autofree char *long_name = g_strnfill(VFMIG_NAME_MAX + 1, 'a');
        g_autofree char *max_name = g_strnfill(VFMIG_NAME_MAX, 'a');

        g_assert_true(vfmig_device_name_is_valid("0000:17:00.1"));
        g_assert_true(vfmig_device_name_is_valid("6f1a3c52-4b0e-4c1e-9a55-0d2b8e5f7a01"));
        g_assert_true(vfmig_device_name_is_valid(max_name));
        g_assert_false(vfmig_device_name_is_valid(long_name));
        g_assert_false(vfmig_device_name_is_valid(""));
        g_assert_false(vfmig_device_name_is_valid("../x"));
        g_assert_false(vfmig_device_name_is_valid("a b"));

        g_assert_true(vfmig_pci_address_is_valid("0000:17:00.1"));
        g_assert_false(vfmig_pci_address_is_valid("0000:17:00.8"));
        g_assert_false(vfmig_pci_address_is_valid("0000:17:00.1x"));
        g_assert_false(vfmig_pci_address_is_valid("000:17:00.1"));

        g_assert_true(vfmig_uuid_is_valid("6f1a3c52-4b0e-4c1e-9a55-0d2b8e5f7a01"));
        g_assert_false(vfmig_uuid_is_valid("6f1a3c52-4b0e-4c1e-9a55-0d2b8e5f7a0"));
        g_assert_false(vfmig_uuid_is_valid("6f1a3c52x4b0e-4c1e-9a55-0d2b8e5f7a01"));

        g_assert_true(vfmig_string_is_valid("abc", 3));
        g_assert_false(vfmig_string_is_valid("abcd", 3));
        g_assert_false(vfmig_string_is_valid("a\nb", 10));
        g_assert_true(vfmig_text_is_valid("a\nb", 10));
        g_assert_false(vfmig_text_is_valid("a\x01", 10));
}

int main(int argc, char *argv[])
{
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/inventory/put-change-remove", test_put_change_remove);
        g_test_add_func("/inventory/parents", test_parents);
        g_test_add_func("/device/vfio-drivers", test_vfio_drivers);
        g_test_add_func("/util/validators", test_validators);
        return g_test_run();
}
