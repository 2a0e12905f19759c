/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-device.h>

#include "inventory-udev.h"
#include "log.h"
#include "util.h"

/* The compat class under which the kernel links every registered mdev parent. */
#define MDEV_BUS_CLASS_DIR "/sys/class/mdev_bus"

struct UdevSource {
        Inventory *inv;
        sd_device_monitor *monitor;
};

#define _cleanup_device_ _cleanup_(sd_device_unrefp)

static void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

static const char *attr(sd_device *d, const char *name)
{
        const char *v = NULL;

        if (sd_device_get_sysattr_value(d, name, &v) < 0)
                return NULL;
        return v;
}

static uint32_t attr_hex(sd_device *d, const char *name, uint32_t max)
{
        const char *v = attr(d, name);
        char *end = NULL;
        unsigned long x;

        if (!v)
                return 0;
        errno = 0;
        x = strtoul(v, &end, 16);
        if (errno || end == v || x > max)
                return 0;
        return (uint32_t) x;
}

static int32_t attr_int(sd_device *d, const char *name)
{
        const char *v = attr(d, name);
        char *end = NULL;
        long x;

        if (!v)
                return -1;
        errno = 0;
        x = strtol(v, &end, 10);
        if (errno || end == v || x < INT32_MIN || x > INT32_MAX)
                return -1;
        return (int32_t) x;
}

/* The last path component a symlink in the device directory points to. */
static char *link_basename(const char *syspath, const char *link)
{
        _cleanup_free_ char *p = NULL;
        char target[PATH_MAX];
        ssize_t n;

        if (asprintf(&p, "%s/%s", syspath, link) < 0)
                return NULL;
        n = readlink(p, target, sizeof(target) - 1);
        if (n <= 0)
                return NULL;
        target[n] = '\0';
        return g_path_get_basename(target);
}

static int32_t iommu_group_of(const char *syspath)
{
        g_autofree char *b = link_basename(syspath, "iommu_group");
        char *end = NULL;
        long x;

        if (!b)
                return -1;
        x = strtol(b, &end, 10);
        if (*end || x < 0 || x > INT32_MAX)
                return -1;
        return (int32_t) x;
}

static bool has_mdev_types(sd_device *d)
{
        const char *syspath;
        _cleanup_free_ char *p = NULL;
        struct stat st;

        if (sd_device_get_syspath(d, &syspath) < 0)
                return false;
        if (asprintf(&p, "%s/mdev_supported_types", syspath) < 0)
                return false;
        return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void copy_attr(VfmigDevice *v, sd_device *d, const char *name)
{
        const char *s = attr(d, name);

        if (s && vfmig_string_is_valid(s, 256))
                g_hash_table_replace(v->attributes, g_strdup(name), g_strdup(s));
}

static void copy_attr_as(VfmigDevice *v, sd_device *d, const char *name, const char *as)
{
        const char *s = attr(d, name);

        if (s && vfmig_string_is_valid(s, 256))
                g_hash_table_replace(v->attributes, g_strdup(as), g_strdup(s));
}

/* Build the model of d if it is a VFIO device, else NULL. */
static VfmigDevice *device_from_sd(sd_device *d)
{
        const char *subsystem = NULL, *sysname = NULL, *syspath = NULL, *driver = NULL;
        g_autoptr(VfmigDevice) v = NULL;
        bool is_mdev;

        if (sd_device_get_subsystem(d, &subsystem) < 0 ||
            sd_device_get_sysname(d, &sysname) < 0 ||
            sd_device_get_syspath(d, &syspath) < 0)
                return NULL;
        (void) sd_device_get_driver(d, &driver);

        is_mdev = strcmp(subsystem, "mdev") == 0;
        if (!is_mdev && !(strcmp(subsystem, "pci") == 0 && vfmig_driver_is_vfio_pci(driver)))
                return NULL;
        if (!vfmig_device_name_is_valid(sysname))
                return NULL;

        v = vfmig_device_new(sysname, is_mdev ? VFMIG_DEVICE_MDEV : VFMIG_DEVICE_PCI);
        vfmig_device_set_string(v, &v->driver, driver);
        vfmig_device_set_string(v, &v->sysfs_path, syspath);
        v->iommu_group = iommu_group_of(syspath);

        if (is_mdev) {
                sd_device *parent = NULL;
                const char *pname = NULL;
                char *type = link_basename(syspath, "mdev_type");

                if (type)
                        vfmig_device_take_string(v, &v->mdev_type, type);
                if (sd_device_get_parent(d, &parent) >= 0 &&
                    sd_device_get_sysname(parent, &pname) >= 0) {
                        vfmig_device_set_string(v, &v->parent, pname);
                        /* An mdev inherits the identity of its parent function. */
                        v->vendor_id = attr_hex(parent, "vendor", 0xffff);
                        v->device_id = attr_hex(parent, "device", 0xffff);
                        v->subsystem_vendor_id = attr_hex(parent, "subsystem_vendor", 0xffff);
                        v->subsystem_device_id = attr_hex(parent, "subsystem_device", 0xffff);
                        v->revision = attr_hex(parent, "revision", 0xff);
                        v->numa_node = attr_int(parent, "numa_node");
                }
                copy_attr(v, d, "migration_version");
                /* The 2020-style migration/ group, when the driver offers it. */
                copy_attr_as(v, d, "migration/software_version", "software_version");
        } else {
                v->vendor_id = attr_hex(d, "vendor", 0xffff);
                v->device_id = attr_hex(d, "device", 0xffff);
                v->subsystem_vendor_id = attr_hex(d, "subsystem_vendor", 0xffff);
                v->subsystem_device_id = attr_hex(d, "subsystem_device", 0xffff);
                v->revision = attr_hex(d, "revision", 0xff);
                v->numa_node = attr_int(d, "numa_node");
        }
        return g_steal_pointer(&v);
}

static char *type_attr(sd_device *d, const char *type, const char *name)
{
        g_autofree char *path = g_strdup_printf("mdev_supported_types/%s/%s", type, name);
        const char *v = attr(d, path);

        if (!v || !vfmig_text_is_valid(v, 1024))
                return g_strdup("");
        return g_strdup(v);
}

/* Build the model of d as an mdev parent if it offers mdev types, else NULL. */
static VfmigMdevParent *parent_from_sd(sd_device *d)
{
        const char *sysname = NULL, *syspath = NULL, *driver = NULL;
        g_autoptr(VfmigMdevParent) p = NULL;
        _cleanup_(closedirp) DIR *dir = NULL;
        _cleanup_free_ char *types_dir = NULL;
        struct dirent *de;

        if (!has_mdev_types(d) ||
            sd_device_get_sysname(d, &sysname) < 0 ||
            sd_device_get_syspath(d, &syspath) < 0 ||
            !vfmig_device_name_is_valid(sysname))
                return NULL;
        (void) sd_device_get_driver(d, &driver);

        p = vfmig_mdev_parent_new(sysname);
        g_free(p->driver);
        p->driver = g_strdup(driver ? driver : "");
        g_free(p->sysfs_path);
        p->sysfs_path = g_strdup(syspath);

        if (asprintf(&types_dir, "%s/mdev_supported_types", syspath) < 0)
                return NULL;
        /* The types are plain kobjects, not devices: sd-device has no view of them. */
        dir = opendir(types_dir);
        if (!dir)
                return NULL;
        while ((de = readdir(dir))) {
                VfmigMdevType *t;
                g_autofree char *avail = NULL;

                if (de->d_name[0] == '.' || !vfmig_device_name_is_valid(de->d_name))
                        continue;
                t = vfmig_mdev_type_new(de->d_name);
                g_free(t->name);
                t->name = type_attr(d, de->d_name, "name");
                g_free(t->device_api);
                t->device_api = type_attr(d, de->d_name, "device_api");
                g_free(t->description);
                t->description = type_attr(d, de->d_name, "description");
                avail = type_attr(d, de->d_name, "available_instances");
                t->available_instances = (uint32_t) g_ascii_strtoull(avail, NULL, 10);
                g_ptr_array_add(p->types, t);
        }
        return g_steal_pointer(&p);
}

/* Re-read one device from sysfs (fresh, uncached) and update the inventory. */
static void refresh_syspath(UdevSource *s, const char *syspath, const char *sysname)
{
        _cleanup_device_ sd_device *d = NULL;
        VfmigDevice *v = NULL;
        VfmigMdevParent *p = NULL;

        if (sd_device_new_from_syspath(&d, syspath) >= 0) {
                v = device_from_sd(d);
                p = parent_from_sd(d);
        }
        if (v)
                inventory_put_device(s->inv, v);
        else
                inventory_remove_device(s->inv, sysname);
        if (p)
                inventory_put_parent(s->inv, p);
        else
                inventory_remove_parent(s->inv, sysname);
}

/* available_instances of a parent's types change when its mdevs come and go. */
static void refresh_parent_of(UdevSource *s, sd_device *d)
{
        sd_device *parent = NULL;
        const char *syspath = NULL, *sysname = NULL;

        if (sd_device_get_parent(d, &parent) < 0 ||
            sd_device_get_syspath(parent, &syspath) < 0 ||
            sd_device_get_sysname(parent, &sysname) < 0)
                return;
        if (inventory_get_parent(s->inv, sysname))
                refresh_syspath(s, syspath, sysname);
}

static int on_uevent(sd_device_monitor *m, sd_device *d, void *userdata)
{
        UdevSource *s = userdata;
        const char *syspath = NULL, *sysname = NULL, *subsystem = NULL;
        sd_device_action_t action = _SD_DEVICE_ACTION_INVALID;

        if (sd_device_get_syspath(d, &syspath) < 0 || sd_device_get_sysname(d, &sysname) < 0)
                return 0;
        (void) sd_device_get_action(d, &action);
        (void) sd_device_get_subsystem(d, &subsystem);
        log_debug("uevent %d %s", (int) action, syspath);

        if (action == SD_DEVICE_REMOVE) {
                inventory_remove_device(s->inv, sysname);
                inventory_remove_parent(s->inv, sysname);
        } else {
                /* The event's own properties may be stale (DRIVER= after an
                 * unbind); sysfs is the truth. */
                refresh_syspath(s, syspath, sysname);
        }
        if (subsystem && strcmp(subsystem, "mdev") == 0)
                refresh_parent_of(s, d);
        return 0;
}

static int enumerate_subsystem(UdevSource *s, const char *subsystem)
{
        sd_device_enumerator *e = NULL;
        int r;

        r = sd_device_enumerator_new(&e);
        if (r < 0)
                return r;
        r = sd_device_enumerator_add_match_subsystem(e, subsystem, true);
        if (r >= 0)
                for (sd_device *d = sd_device_enumerator_get_device_first(e); d;
                     d = sd_device_enumerator_get_device_next(e)) {
                        VfmigDevice *v = device_from_sd(d);
                        if (v)
                                inventory_put_device(s->inv, v);
                }
        sd_device_enumerator_unref(e);
        return r < 0 ? r : 0;
}

static void enumerate_parents(UdevSource *s)
{
        _cleanup_(closedirp) DIR *dir = opendir(MDEV_BUS_CLASS_DIR);
        struct dirent *de;

        if (!dir)
                return;   /* no mdev module loaded: no parents */
        while ((de = readdir(dir))) {
                _cleanup_device_ sd_device *d = NULL;
                _cleanup_free_ char *path = NULL;
                VfmigMdevParent *p;

                if (de->d_name[0] == '.')
                        continue;
                if (asprintf(&path, "%s/%s", MDEV_BUS_CLASS_DIR, de->d_name) < 0)
                        continue;
                if (sd_device_new_from_syspath(&d, path) < 0)
                        continue;
                p = parent_from_sd(d);
                if (p)
                        inventory_put_parent(s->inv, p);
        }
}

static void udev_source_freep(UdevSource **s)
{
        udev_source_free(*s);
}

int udev_source_new(sd_event *event, Inventory *inv, UdevSource **ret)
{
        _cleanup_(udev_source_freep) UdevSource *s = g_new0(UdevSource, 1);
        int r;

        s->inv = inv;

        /* sd-device monitors listen to udev's netlink group: without
         * systemd-udevd there are no events after the first enumeration. */
        if (access("/run/udev/control", F_OK) < 0)
                log_warning("systemd-udevd is not running (no /run/udev/control): devices that appear, "
                            "disappear or change driver after start-up will not be seen");

        /* Monitor first, so nothing that happens during enumeration is lost. */
        r = sd_device_monitor_new(&s->monitor);
        if (r < 0)
                return log_error_errno(r, "Failed to create device monitor: %m");
        r = sd_device_monitor_attach_event(s->monitor, event);
        if (r < 0)
                return log_error_errno(r, "Failed to attach device monitor: %m");
        r = sd_device_monitor_start(s->monitor, on_uevent, s);
        if (r < 0)
                return log_error_errno(r, "Failed to start device monitor: %m");

        r = enumerate_subsystem(s, "pci");
        if (r >= 0)
                r = enumerate_subsystem(s, "mdev");
        if (r < 0)
                return log_error_errno(r, "Failed to enumerate devices: %m");
        enumerate_parents(s);

        *ret = steal_ptr(&s);
        return 0;
}

VfmigDevice *udev_identity(const char *syspath)
{
        _cleanup_device_ sd_device *d = NULL;
        const char *sysname = NULL, *driver = NULL, *subsystem = NULL;
        VfmigDevice *v;

        if (sd_device_new_from_syspath(&d, syspath) < 0 || sd_device_get_sysname(d, &sysname) < 0 ||
            !vfmig_device_name_is_valid(sysname))
                return NULL;
        (void) sd_device_get_driver(d, &driver);
        (void) sd_device_get_subsystem(d, &subsystem);
        v = vfmig_device_new(sysname, VFMIG_DEVICE_PCI);
        vfmig_device_set_string(v, &v->driver, driver);
        vfmig_device_set_string(v, &v->sysfs_path, syspath);
        if (subsystem && strcmp(subsystem, "pci") == 0) {
                v->vendor_id = attr_hex(d, "vendor", 0xffff);
                v->device_id = attr_hex(d, "device", 0xffff);
                v->subsystem_vendor_id = attr_hex(d, "subsystem_vendor", 0xffff);
                v->subsystem_device_id = attr_hex(d, "subsystem_device", 0xffff);
                v->revision = attr_hex(d, "revision", 0xff);
        }
        v->numa_node = attr_int(d, "numa_node");
        /* What a type of this parent would report once created (the
         * 2020-style migration/ group on the parent, when offered). */
        copy_attr_as(v, d, "migration/software_version", "software_version");
        return v;
}

void udev_source_free(UdevSource *s)
{
        if (!s)
                return;
        sd_device_monitor_unref(s->monitor);
        g_free(s);
}
