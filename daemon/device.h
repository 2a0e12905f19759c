/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * device.h — the inventory's data model: a VFIO device (a PCI function bound
 * to vfio-pci or a *_vfio_pci variant driver, or an mdev instance), an mdev
 * parent and the mdev types it offers.  Plain data, owned by the inventory;
 * sources (sd-device, simulated host files) fill these in.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

typedef enum {
        VFMIG_DEVICE_PCI,
        VFMIG_DEVICE_MDEV,
} VfmigDeviceKind;

typedef struct VfmigDevice {
        char *name;               /* PCI address or mdev UUID: the key */
        VfmigDeviceKind kind;
        char *driver;             /* bound driver, "" if none */
        uint16_t vendor_id, device_id;
        uint16_t subsystem_vendor_id, subsystem_device_id;
        uint8_t revision;
        int32_t iommu_group;      /* -1 when unknown */
        int32_t numa_node;        /* -1 when unknown */
        char *mdev_type;          /* mdev: type id (e.g. "i915-GVTg_V5_4"); "" for PCI */
        char *parent;             /* mdev: parent device name; "" for PCI */
        char *sysfs_path;         /* "" on a simulated host */
        GHashTable *attributes;   /* extra sysfs/sim attributes: name -> value */
        void *managed;            /* the device-access entry (ManagedDevice*), set by the daemon */
        void *backend_data;       /* opaque per-source data (e.g. sim config), freed with backend_free */
        void (*backend_free)(void *);
        /* vfmig_device_new_full()/_fixed(): the five strings above as made
         * share the device's allocation, up to here (NULL: none do). */
        const char *strings_end;
} VfmigDevice;

typedef struct VfmigMdevType {
        char *id;                 /* sysfs directory name, e.g. "i915-GVTg_V5_4" */
        char *name;               /* "name" attribute, may be "" */
        char *device_api;         /* "vfio-pci", ... */
        char *description;
        uint32_t available_instances;
} VfmigMdevType;

typedef struct VfmigMdevParent {
        char *name;               /* device name of the parent */
        char *driver;
        char *sysfs_path;
        GPtrArray *types;         /* VfmigMdevType*, sorted by id */
} VfmigMdevParent;

/* Its strings allocated each on its own: a field may be g_free()d and replaced. */
VfmigDevice *vfmig_device_new(const char *name, VfmigDeviceKind kind);
/* The same with its driver, mdev type and parent (NULL: ""), in one
 * allocation with the device (thousands are made at a start): a field is
 * replaced only with vfmig_device_set_string()/_take_string(). */
VfmigDevice *vfmig_device_new_full(const char *name, VfmigDeviceKind kind, const char *driver,
                                   const char *mdev_type, const char *parent);
/* The same with the attributes table given (its reference taken; NULL: a
 * new empty one): a host file's devices share a table between those of the
 * same attributes, which are then not to be changed. */
VfmigDevice *vfmig_device_new_fixed(const char *name, VfmigDeviceKind kind, const char *driver,
                                    const char *mdev_type, const char *parent, GHashTable *attributes);
void vfmig_device_free(VfmigDevice *d);
/* Replace one of d's string fields (&d->driver, ...) with a copy of value
 * (NULL: ""), or with value itself, which must come from g_malloc(). */
void vfmig_device_set_string(VfmigDevice *d, char **field, const char *value);
void vfmig_device_take_string(VfmigDevice *d, char **field, char *value);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfmigDevice, vfmig_device_free)

/* True when both describe the same device in every field the bus exposes. */
bool vfmig_device_equal(const VfmigDevice *a, const VfmigDevice *b);

const char *vfmig_device_kind_to_string(VfmigDeviceKind k);

/* A driver that makes a PCI function a VFIO device: vfio-pci or *_vfio_pci. */
bool vfmig_driver_is_vfio_pci(const char *driver);

VfmigMdevType *vfmig_mdev_type_new(const char *id);
void vfmig_mdev_type_free(VfmigMdevType *t);

VfmigMdevParent *vfmig_mdev_parent_new(const char *name);
void vfmig_mdev_parent_free(VfmigMdevParent *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfmigMdevParent, vfmig_mdev_parent_free)
bool vfmig_mdev_parent_equal(const VfmigMdevParent *a, const VfmigMdevParent *b);
/* Sort the types by id (call after filling them in). */
void vfmig_mdev_parent_sort(VfmigMdevParent *p);
