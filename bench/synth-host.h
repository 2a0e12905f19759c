/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A synthetic host for the matrix benchmark and tests: blocks of 128
 * targets, each block one NVIDIA vGPU parent (16 creatable types + 4
 * instances), one i915 GVT-g parent (4 types + 1 instance), one test-driver
 * parent (2 types + 1 instance) and 100 PCI VFs: 50 ConnectX-7 (three
 * firmware levels), 10 ConnectX-6 Dx, 8 each of hisi_acc, pds, qat, virtio,
 * and 8 on plain vfio-pci that no rule matches.  Deterministic.
 */
#pragma once

#include <stdio.h>

#include "matrix.h"

typedef struct SynthHost {
        GPtrArray *devices;     /* VfmigDevice*: VFIO devices (PCI VFs and mdev instances) */
        GArray *flags;          /* uint64_t per device */
        GPtrArray *parents;     /* VfmigMdevParent* */
        GPtrArray *parent_ids;  /* VfmigDevice*: the parents' own identities, same order */
        guint targets;          /* devices + creatable types */
} SynthHost;

static inline VfmigDevice *synth_pci(const char *name, const char *driver, guint16 vid, guint16 did)
{
        VfmigDevice *d = vfmig_device_new(name, VFMIG_DEVICE_PCI);

        g_free(d->driver);
        d->driver = g_strdup(driver);
        d->vendor_id = vid;
        d->device_id = did;
        d->subsystem_vendor_id = vid;
        return d;
}

static inline void synth_attr(VfmigDevice *d, const char *k, const char *v)
{
        g_hash_table_replace(d->attributes, g_strdup(k), g_strdup(v));
}

static inline VfmigDevice *synth_mdev(guint block, guint i, const VfmigDevice *parent, const char *type)
{
        g_autofree char *name = g_strdup_printf("%08x-0000-4000-8000-%012x", block, i);
        VfmigDevice *d = vfmig_device_new(name, VFMIG_DEVICE_MDEV);

        g_free(d->driver);
        d->driver = g_strdup("vfio_mdev");
        d->vendor_id = parent->vendor_id;
        d->device_id = parent->device_id;
        d->subsystem_vendor_id = parent->subsystem_vendor_id;
        d->subsystem_device_id = parent->subsystem_device_id;
        d->revision = parent->revision;
        g_free(d->mdev_type);
        d->mdev_type = g_strdup(type);
        g_free(d->parent);
        d->parent = g_strdup(parent->name);
        return d;
}

static inline void synth_add(SynthHost *h, VfmigDevice *d, uint64_t flags)
{
        g_ptr_array_add(h->devices, d);
        g_array_append_val(h->flags, flags);
        h->targets++;
}

static inline void synth_parent(SynthHost *h, VfmigDevice *id, const char *driver, const char *prefix,
                                const char *const *types, guint ntypes, guint avail)
{
        VfmigMdevParent *p = vfmig_mdev_parent_new(id->name);

        g_free(p->driver);
        p->driver = g_strdup(driver);
        for (guint i = 0; i < ntypes; i++) {
                VfmigMdevType *t = vfmig_mdev_type_new(types ? types[i] : NULL);
                if (!types) {
                        g_free(t->id);
                        t->id = g_strdup_printf("%s%u", prefix, 222 + i);
                }
                t->available_instances = (i % 5 == 4) ? 0 : avail;   /* every fifth type is full */
                g_ptr_array_add(p->types, t);
        }
        vfmig_mdev_parent_sort(p);
        g_ptr_array_add(h->parents, p);
        g_ptr_array_add(h->parent_ids, id);
        h->targets += ntypes;
}

#define SYNTH_SC  ((uint64_t) VFMIG_COMPAT_FLAG_STOP_COPY)
#define SYNTH_P2P ((uint64_t) VFMIG_COMPAT_FLAG_P2P)
#define SYNTH_PRE ((uint64_t) VFMIG_COMPAT_FLAG_PRE_COPY)

static inline SynthHost *synth_host_new(guint blocks)
{
        static const char *const cx7_fw[] = { "28.39.1002", "28.41.1000", "28.43.2026" };
        static const char *const gvt[] = { "i915-GVTg_V5_1", "i915-GVTg_V5_2", "i915-GVTg_V5_4", "i915-GVTg_V5_8" };
        static const char *const tm[] = { "vfmig_testmdev-large", "vfmig_testmdev-small" };
        SynthHost *h = g_new0(SynthHost, 1);

        h->devices = g_ptr_array_new_with_free_func((GDestroyNotify) vfmig_device_free);
        h->flags = g_array_new(false, false, sizeof(uint64_t));
        h->parents = g_ptr_array_new_with_free_func((GDestroyNotify) vfmig_mdev_parent_free);
        h->parent_ids = g_ptr_array_new_with_free_func((GDestroyNotify) vfmig_device_free);
        for (guint b = 0; b < blocks; b++) {
                char name[32];
                VfmigDevice *nv, *gpu, *tmp;

                /* Parents and their instances. */
                g_snprintf(name, sizeof name, "0001:%02x:00.0", b);
                nv = synth_pci(name, "nvidia", 0x10de, 0x1eb8);
                synth_attr(nv, "vgpu_driver_version", b % 2 ? "550.54.14" : "535.129.03");
                synth_parent(h, nv, "nvidia", "nvidia-", NULL, 16, 8);
                for (guint i = 0; i < 4; i++)
                        synth_add(h, synth_mdev(b, i, nv, "nvidia-223"), SYNTH_SC | SYNTH_P2P);
                g_snprintf(name, sizeof name, "0001:%02x:01.0", b);
                gpu = synth_pci(name, "i915", 0x8086, 0x3e92);
                synth_parent(h, gpu, "i915", NULL, gvt, 4, 2);
                synth_add(h, synth_mdev(b, 10, gpu, "i915-GVTg_V5_4"), SYNTH_SC);
                g_snprintf(name, sizeof name, "0001:%02x:02.0", b);
                tmp = synth_pci(name, "vfmig_testmdev", 0x1b36, 0x0100);
                synth_attr(tmp, "software_version", b % 2 ? "2" : "1");
                synth_parent(h, tmp, "vfmig_testmdev", NULL, tm, 2, 4);
                synth_add(h, synth_mdev(b, 20, tmp, "vfmig_testmdev-small"), SYNTH_SC);

                /* 100 PCI VFs. */
                for (guint i = 0; i < 100; i++) {
                        VfmigDevice *d;
                        uint64_t fl = SYNTH_SC | SYNTH_P2P;
                        g_snprintf(name, sizeof name, "0000:%02x:%02x.%x", b, i / 8, i % 8);
                        if (i < 50) {
                                d = synth_pci(name, "mlx5_vfio_pci", 0x15b3, 0x101e);
                                synth_attr(d, "fw_version", cx7_fw[(b + i) % 3]);
                                fl |= SYNTH_PRE | VFMIG_COMPAT_FLAG_DMA_LOGGING;
                        } else if (i < 60) {
                                d = synth_pci(name, "mlx5_vfio_pci", 0x15b3, 0x101e);
                                synth_attr(d, "fw_version", "22.36.1010");
                        } else if (i < 68) {
                                d = synth_pci(name, "hisi_acc_vfio_pci", 0x19e5, 0xa256);
                                d->revision = 0x21;
                                synth_attr(d, "qp_num", "64");
                        } else if (i < 76) {
                                d = synth_pci(name, "pds_vfio_pci", 0x1dd8, 0x1003);
                                d->subsystem_device_id = 0x5007;
                                synth_attr(d, "fw_version", b % 4 ? "1.60.0" : "1.62.1");
                        } else if (i < 84) {
                                d = synth_pci(name, "qat_vfio_pci", 0x8086, 0x4941);
                                synth_attr(d, "capabilities_mask", "0x3f");
                        } else if (i < 92) {
                                d = synth_pci(name, "virtio_vfio_pci", 0x1af4, 0x1041);
                                synth_attr(d, "features", "0x130ff");
                        } else {
                                d = synth_pci(name, "vfio-pci", 0x15b3, 0x101e);
                                synth_attr(d, "fw_version", "28.39.1002");
                                fl = 0;
                        }
                        synth_attr(d, "driver_version", "6.1.0");
                        synth_add(h, d, fl);
                }
        }
        return h;
}

static inline void synth_host_free(SynthHost *h)
{
        g_ptr_array_unref(h->devices);
        g_array_unref(h->flags);
        g_ptr_array_unref(h->parents);
        g_ptr_array_unref(h->parent_ids);
        g_free(h);
}

static inline const VfmigDevice *synth_parent_id(const SynthHost *h, const char *name)
{
        for (guint i = 0; i < h->parent_ids->len; i++)
                if (strcmp(((VfmigDevice *) h->parent_ids->pdata[i])->name, name) == 0)
                        return h->parent_ids->pdata[i];
        return NULL;
}

/* Feed the whole host to m: parents first (their identities), then devices. */
static inline void synth_populate(const SynthHost *h, Matrix *m)
{
        for (guint i = 0; i < h->parents->len; i++)
                matrix_update_parent(m, h->parents->pdata[i], h->parent_ids->pdata[i]);
        for (guint i = 0; i < h->devices->len; i++)
                matrix_update_device(m, h->devices->pdata[i], NULL, g_array_index(h->flags, uint64_t, i));
}
