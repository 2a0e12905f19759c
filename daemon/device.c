/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <string.h>

#include "device.h"
#include "util.h"
#include "vfmig-names.h"

/* Thousands of devices are made at every start of a large host: one
 * allocation for a device and its strings instead of six. */
static char *put_string(char **at, const char *s, size_t n)
{
        char *r = *at;

        memcpy(r, s, n);
        *at += n;
        return r;
}

VfmigDevice *vfmig_device_new_fixed(const char *name, VfmigDeviceKind kind, const char *driver,
                                    const char *mdev_type, const char *parent, GHashTable *attributes)
{
        size_t nn, nd, nt, np;
        VfmigDevice *d;
        char *at;

        driver = driver ? driver : "";
        mdev_type = mdev_type ? mdev_type : "";
        parent = parent ? parent : "";
        nn = strlen(name) + 1;
        nd = strlen(driver) + 1;
        nt = strlen(mdev_type) + 1;
        np = strlen(parent) + 1;
        d = g_malloc0(sizeof(VfmigDevice) + nn + nd + nt + np + 1);
        at = (char *) (d + 1);
        d->name = put_string(&at, name, nn);
        d->kind = kind;
        d->driver = put_string(&at, driver, nd);
        d->mdev_type = put_string(&at, mdev_type, nt);
        d->parent = put_string(&at, parent, np);
        d->sysfs_path = put_string(&at, "", 1);
        d->strings_end = at;
        d->iommu_group = -1;
        d->numa_node = -1;
        d->attributes = attributes ? attributes
                                   : g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        return d;
}

VfmigDevice *vfmig_device_new_full(const char *name, VfmigDeviceKind kind, const char *driver,
                                   const char *mdev_type, const char *parent)
{
        return vfmig_device_new_fixed(name, kind, driver, mdev_type, parent, NULL);
}

VfmigDevice *vfmig_device_new(const char *name, VfmigDeviceKind kind)
{
        VfmigDevice *d = g_new0(VfmigDevice, 1);

        d->name = g_strdup(name);
        d->kind = kind;
        d->driver = g_strdup("");
        d->mdev_type = g_strdup("");
        d->parent = g_strdup("");
        d->sysfs_path = g_strdup("");
        d->iommu_group = -1;
        d->numa_node = -1;
        d->attributes = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        return d;
}

/* A string of the device's own allocation (not to be freed on its own). */
static bool string_is_inline(const VfmigDevice *d, const char *s)
{
        uintptr_t p = (uintptr_t) s;

        return p >= (uintptr_t) (d + 1) && p < (uintptr_t) d->strings_end;
}

static void free_string(const VfmigDevice *d, char *s)
{
        if (!string_is_inline(d, s))
                g_free(s);
}

void vfmig_device_take_string(VfmigDevice *d, char **field, char *value)
{
        free_string(d, *field);
        *field = value;
}

void vfmig_device_set_string(VfmigDevice *d, char **field, const char *value)
{
        vfmig_device_take_string(d, field, g_strdup(value ? value : ""));
}

void vfmig_device_free(VfmigDevice *d)
{
        if (!d)
                return;
        free_string(d, d->name);
        free_string(d, d->driver);
        free_string(d, d->mdev_type);
        free_string(d, d->parent);
        free_string(d, d->sysfs_path);
        g_hash_table_unref(d->attributes);
        if (d->backend_free)
                d->backend_free(d->backend_data);
        g_free(d);
}

static bool attributes_equal(GHashTable *a, GHashTable *b)
{
        GHashTableIter it;
        gpointer k, v;

        if (g_hash_table_size(a) != g_hash_table_size(b))
                return false;
        g_hash_table_iter_init(&it, a);
        while (g_hash_table_iter_next(&it, &k, &v))
                if (!streq_ptr(v, g_hash_table_lookup(b, k)))
                        return false;
        return true;
}

bool vfmig_device_equal(const VfmigDevice *a, const VfmigDevice *b)
{
        return streq_ptr(a->name, b->name) &&
               a->kind == b->kind &&
               streq_ptr(a->driver, b->driver) &&
               a->vendor_id == b->vendor_id &&
               a->device_id == b->device_id &&
               a->subsystem_vendor_id == b->subsystem_vendor_id &&
               a->subsystem_device_id == b->subsystem_device_id &&
               a->revision == b->revision &&
               a->iommu_group == b->iommu_group &&
               a->numa_node == b->numa_node &&
               streq_ptr(a->mdev_type, b->mdev_type) &&
               streq_ptr(a->parent, b->parent) &&
               streq_ptr(a->sysfs_path, b->sysfs_path) &&
               attributes_equal(a->attributes, b->attributes);
}

const char *vfmig_device_kind_to_string(VfmigDeviceKind k)
{
        return k == VFMIG_DEVICE_MDEV ? VFMIG_KIND_MDEV : VFMIG_KIND_PCI;
}

bool vfmig_driver_is_vfio_pci(const char *driver)
{
        static const char suffix[] = "_vfio_pci";
        size_t n;

        if (!driver)
                return false;
        if (strcmp(driver, "vfio-pci") == 0)
                return true;
        n = strlen(driver);
        return n > strlen(suffix) && strcmp(driver + n - strlen(suffix), suffix) == 0;
}

VfmigMdevType *vfmig_mdev_type_new(const char *id)
{
        VfmigMdevType *t = g_new0(VfmigMdevType, 1);

        t->id = g_strdup(id);
        t->name = g_strdup("");
        t->device_api = g_strdup("");
        t->description = g_strdup("");
        return t;
}

void vfmig_mdev_type_free(VfmigMdevType *t)
{
        if (!t)
                return;
        g_free(t->id);
        g_free(t->name);
        g_free(t->device_api);
        g_free(t->description);
        g_free(t);
}

VfmigMdevParent *vfmig_mdev_parent_new(const char *name)
{
        VfmigMdevParent *p = g_new0(VfmigMdevParent, 1);

        p->name = g_strdup(name);
        p->driver = g_strdup("");
        p->sysfs_path = g_strdup("");
        p->types = g_ptr_array_new_with_free_func((GDestroyNotify) vfmig_mdev_type_free);
        return p;
}

void vfmig_mdev_parent_free(VfmigMdevParent *p)
{
        if (!p)
                return;
        g_free(p->name);
        g_free(p->driver);
        g_free(p->sysfs_path);
        g_ptr_array_unref(p->types);
        g_free(p);
}

static gint type_cmp(gconstpointer a, gconstpointer b)
{
        const VfmigMdevType *x = *(VfmigMdevType * const *) a;
        const VfmigMdevType *y = *(VfmigMdevType * const *) b;

        return strcmp(x->id, y->id);
}

void vfmig_mdev_parent_sort(VfmigMdevParent *p)
{
        g_ptr_array_sort(p->types, type_cmp);
}

bool vfmig_mdev_parent_equal(const VfmigMdevParent *a, const VfmigMdevParent *b)
{
        if (!streq_ptr(a->name, b->name) || !streq_ptr(a->driver, b->driver) ||
            !streq_ptr(a->sysfs_path, b->sysfs_path) || a->types->len != b->types->len)
                return false;
        for (guint i = 0; i < a->types->len; i++) {
                const VfmigMdevType *x = a->types->pdata[i], *y = b->types->pdata[i];
                if (!streq_ptr(x->id, y->id) || !streq_ptr(x->name, y->name) ||
                    !streq_ptr(x->device_api, y->device_api) ||
                    !streq_ptr(x->description, y->description) ||
                    x->available_instances != y->available_instances)
                        return false;
        }
        return true;
}
