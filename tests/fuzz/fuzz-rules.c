/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: a rules file (data/compat.d, /etc/vfmig/compat.d).
 * Any input must load or be reported with its path, never crash or leak;
 * whatever loads is then evaluated against a few fixed devices. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static GHashTable *attrs(const char *k1, const char *v1, const char *k2, const char *v2)
{
        GHashTable *h = g_hash_table_new(g_str_hash, g_str_equal);

        if (k1)
                g_hash_table_insert(h, (char *) k1, (char *) v1);
        if (k2)
                g_hash_table_insert(h, (char *) k2, (char *) v2);
        return h;
}

static void evaluate(VfmigRuleSet *rs)
{
        g_autoptr(GHashTable) a1 = attrs("fw_version", "28.39.1002", "aggregator", "2");
        g_autoptr(GHashTable) a2 = attrs("fw_version", "28.41.1000", "software_version", "3");
        VfmigDevice devs[] = {
                { .name = (char *) "0000:17:00.1", .kind = VFMIG_DEVICE_PCI, .driver = (char *) "mlx5_vfio_pci",
                  .vendor_id = 0x15b3, .device_id = 0x101e, .mdev_type = (char *) "", .parent = (char *) "",
                  .attributes = a1 },
                { .name = (char *) "0000:31:00.1", .kind = VFMIG_DEVICE_PCI, .driver = (char *) "x_vfio_pci",
                  .vendor_id = 0x1234, .device_id = 0x0001, .mdev_type = (char *) "", .parent = (char *) "",
                  .attributes = a2 },
                { .name = (char *) "c3d1e9a0-7f2b-4e8d-b1a4-5e6f7a8b9c0d", .kind = VFMIG_DEVICE_MDEV,
                  .driver = (char *) "vfio_mdev", .vendor_id = 0x8086, .device_id = 0x3e92,
                  .mdev_type = (char *) "i915-GVTg_V5_4", .parent = (char *) "0000:00:02.0", .attributes = a1 },
        };
        VfmigDevice parent = { .name = (char *) "0000:00:02.0", .kind = VFMIG_DEVICE_PCI, .driver = (char *) "i915",
                               .vendor_id = 0x8086, .device_id = 0x3e92, .mdev_type = (char *) "",
                               .parent = (char *) "", .attributes = a2 };

        for (size_t i = 0; i < G_N_ELEMENTS(devs); i++) {
                g_autoptr(VfmigProfile) p = NULL;
                g_autofree char *why = NULL;
                const VfmigDevice *par = devs[i].kind == VFMIG_DEVICE_MDEV ? &parent : NULL;

                if (vfmig_rules_profile_for(rs, &devs[i], par, VFMIG_COMPAT_FLAG_STOP_COPY, &p, &why) < 0) {
                        if (!why)
                                __builtin_trap();
                        continue;
                }
                for (size_t j = 0; j < G_N_ELEMENTS(devs); j++) {
                        g_auto(VfmigVerdict) v = { 0 };
                        const VfmigDevice *tp = devs[j].kind == VFMIG_DEVICE_MDEV ? &parent : NULL;
                        if (!vfmig_rules_check(rs, p, &devs[j], tp, VFMIG_COMPAT_FLAG_STOP_COPY, NULL, &v) &&
                            v.reasons->len == 0)
                                __builtin_trap();   /* every "no" says why */
                }
                {
                        g_auto(VfmigVerdict) v = { 0 };
                        vfmig_rules_check_mdev_type(rs, p, &parent, "i915-GVTg_V5_8", VFMIG_COMPAT_FLAG_UNKNOWN,
                                                    NULL, &v);
                }
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static char *dir;
        g_autofree char *path = NULL;
        g_autoptr(GPtrArray) errors = NULL;
        g_autoptr(VfmigRuleSet) rs = NULL;

        if (!dir) {
                dir = g_dir_make_tmp("fuzz-rules-XXXXXX", NULL);
                if (!dir)
                        return 0;
        }
        path = g_build_filename(dir, "fuzz.json", NULL);
        if (!g_file_set_contents(path, (const char *) data, (gssize) size, NULL))
                return 0;
        rs = vfmig_rules_load(dir, NULL, &errors);
        if (!rs || !errors)
                __builtin_trap();
        for (guint i = 0; i < errors->len; i++)
                if (!g_str_has_prefix(errors->pdata[i], path))
                        __builtin_trap();   /* every error names its file */
        evaluate(rs);
        g_unlink(path);
        return 0;
}
