/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fnmatch.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "device-access.h"
#include "log.h"
#include "sim-host.h"
#include "util.h"

struct DeviceAccess {
        AccessConfig config;
        bool simulate;
        sd_event *event;
        DeviceReleasedFn on_released;
        void *userdata;
        GHashTable *entries;   /* name -> ManagedDevice* */
        /* "open (BACKEND)" by backend name (a static string): the message of
         * every managed device, one copy for thousands of them */
        GHashTable *open_messages;
        bool quiet;            /* the start's enumeration: "managed" lines at debug level */
};

static const char *const status_names[_ACCESS_STATUS_MAX] = {
        [ACCESS_MANAGED] = "managed",
        [ACCESS_EXCLUDED] = "excluded",
        [ACCESS_GROUP_NOT_VIABLE] = "group-not-viable",
        [ACCESS_GROUP_IN_USE] = "group-in-use",
        [ACCESS_UNAVAILABLE] = "unavailable",
        [ACCESS_RELEASED] = "released",
};

const char *access_status_to_string(AccessStatus s)
{
        return s < _ACCESS_STATUS_MAX ? status_names[s] : NULL;
}

static bool patterns_valid(char **l)
{
        for (char **p = l; p && *p; p++)
                if (!**p || !vfmig_string_is_valid(*p, 256))
                        return false;
        return true;
}

int access_config_load(const char *path, AccessConfig *ret, char **error)
{
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autoptr(GError) err = NULL;
        AccessConfig c = {};

        *ret = (AccessConfig) {};
        if (!g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, &err)) {
                if (g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_NOENT))
                        return 0;
                *error = g_strdup_printf("%s: %s", path, err->message);
                return -EINVAL;
        }
        c.allow = g_key_file_get_string_list(kf, "Devices", "Allow", NULL, NULL);
        c.deny = g_key_file_get_string_list(kf, "Devices", "Deny", NULL, NULL);
        if (!patterns_valid(c.allow) || !patterns_valid(c.deny)) {
                *error = g_strdup_printf("%s: [Devices] Allow=/Deny= must be ;-separated non-empty patterns "
                                         "of printable characters", path);
                access_config_done(&c);
                return -EINVAL;
        }
        *ret = c;
        return 0;
}

void access_config_done(AccessConfig *c)
{
        g_strfreev(c->allow);
        g_strfreev(c->deny);
        *c = (AccessConfig) {};
}

static bool matches(char **patterns, const VfmigDevice *d)
{
        g_autofree char *drv = NULL, *type = NULL;

        if (!patterns || !*patterns)
                return false;   /* most configurations: nothing to build the strings for */
        drv = g_strconcat("driver:", d->driver, NULL);
        type = g_strconcat("type:", d->mdev_type, NULL);
        for (char **p = patterns; p && *p; p++)
                if (fnmatch(*p, d->name, 0) == 0 || fnmatch(*p, drv, 0) == 0 ||
                    (d->mdev_type[0] && fnmatch(*p, type, 0) == 0))
                        return true;
        return false;
}

bool access_config_allows(const AccessConfig *c, const VfmigDevice *d)
{
        if (c->allow && !matches(c->allow, d))
                return false;
        return !matches(c->deny, d);
}

static void close_vfio(ManagedDevice *m)
{
        m->request = sd_event_source_disable_unref(m->request);
        vfmig_vfio_close(steal_ptr(&m->vfio));
}

static void managed_device_free(ManagedDevice *m)
{
        if (!m)
                return;
        close_vfio(m);
        if (m->driver != m->driver_slot)
                g_free(m->driver);
        if (!m->status_message_shared)
                g_free(m->status_message);
        g_free(m);
}

DeviceAccess *device_access_new(const AccessConfig *config, bool simulate, sd_event *event,
                                DeviceReleasedFn on_released, void *userdata)
{
        DeviceAccess *a = g_new0(DeviceAccess, 1);

        a->event = event ? sd_event_ref(event) : NULL;
        a->on_released = on_released;
        a->userdata = userdata;
        a->config.allow = g_strdupv(config ? config->allow : NULL);
        a->config.deny = g_strdupv(config ? config->deny : NULL);
        a->simulate = simulate;
        a->entries = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                           (GDestroyNotify) managed_device_free);
        a->open_messages = g_hash_table_new_full(NULL, NULL, NULL, g_free);
        return a;
}

void device_access_free(DeviceAccess *a)
{
        if (!a)
                return;
        g_hash_table_unref(a->entries);
        g_hash_table_unref(a->open_messages);   /* after the entries that point at them */
        access_config_done(&a->config);
        sd_event_unref(a->event);
        g_free(a);
}

static void set_status(ManagedDevice *m, AccessStatus s, char *message)
{
        m->status = s;
        if (!m->status_message_shared)
                g_free(m->status_message);
        m->status_message = message;
        m->status_message_shared = false;
}

static void set_status_open(DeviceAccess *a, ManagedDevice *m, const char *backend)
{
        char *msg = g_hash_table_lookup(a->open_messages, backend);

        if (!msg) {
                msg = g_strconcat("open (", backend, ")", NULL);
                g_hash_table_insert(a->open_messages, (gpointer) backend, msg);
        }
        set_status(m, ACCESS_MANAGED, msg);
        m->status_message_shared = true;
}

/* The simulator's stand-in for a device without migration support. */
static const VfmigSimDeviceConfig no_migration_config = {
        .memory_size = 4096,
        .stream_type = "none",
        .stream_version = 1,
};

static int open_vfio(DeviceAccess *a, const VfmigDevice *d, VfmigVfioDevice **ret)
{
        if (a->simulate) {
                const SimDeviceSpec *spec = d->backend_data;
                VfmigSimDeviceConfig named = spec ? spec->config : no_migration_config;

                if (spec && spec->open_error)
                        return spec->open_error;
                named.name = d->name;
                return vfmig_vfio_sim_open(&named, ret);
        }
        return vfmig_vfio_kernel_open(d->name, d->iommu_group,
                                      d->sysfs_path[0] ? d->sysfs_path : NULL, ret);
}

static int on_request(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        ManagedDevice *m = userdata;
        uint64_t n;

        (void) read(fd, &n, sizeof(n));
        /* The kernel waits in unbind/remove until the last holder closes. */
        log_device(LOG_NOTICE, m->name, "the kernel asked for the device back; releasing it");
        close_vfio(m);
        m->migration_flags = 0;
        m->dma_logging = false;
        set_status(m, ACCESS_RELEASED,
                   g_strdup("given back to the kernel on its request (driver unbind or mdev removal)"));
        if (m->access->on_released)
                m->access->on_released(m, m->access->userdata);
        return 0;
}

/* Watch the device request eventfd, if the device has one. */
static void watch_request(DeviceAccess *a, ManagedDevice *m)
{
        int fd, r;

        if (!a->event)
                return;
        fd = vfmig_vfio_request_eventfd(m->vfio);
        if (fd < 0) {
                if (fd != -EOPNOTSUPP)
                        log_device(LOG_WARNING, m->name, "no device request channel: %s", strerror(-fd));
                return;
        }
        r = sd_event_add_io(a->event, &m->request, fd, EPOLLIN, on_request, m);
        if (r < 0) {
                close(fd);
                log_device(LOG_WARNING, m->name, "cannot watch the device request channel: %s", strerror(-r));
                return;
        }
        (void) sd_event_source_set_io_fd_own(m->request, true);
}

static void entry_opened(DeviceAccess *a, ManagedDevice *m, const VfmigDevice *d, VfmigVfioDevice *v)
{
        m->vfio = v;
        m->open_error = 0;
        if (vfmig_vfio_get_migration_flags(v, &m->migration_flags) < 0)
                m->migration_flags = 0;
        m->dma_logging = vfmig_vfio_has_dma_logging(v);
        watch_request(a, m);
        set_status_open(a, m, vfmig_vfio_backend(v));
        log_device(a->quiet ? LOG_DEBUG : LOG_INFO, d->name, "managed through %s", vfmig_vfio_backend(v));
}

static void open_entry(DeviceAccess *a, ManagedDevice *m, const VfmigDevice *d)
{
        VfmigVfioDevice *v = NULL;
        int r;

        close_vfio(m);
        m->migration_flags = 0;
        m->dma_logging = false;
        m->open_error = 0;

        if (!access_config_allows(&a->config, d)) {
                set_status(m, ACCESS_EXCLUDED, g_strdup("excluded by the Allow=/Deny= lists of vfmigd.conf"));
                log_device(LOG_INFO, d->name, "not managed: excluded by configuration");
                return;
        }
        r = open_vfio(a, d, &v);
        if (r == -EPERM) {
                set_status(m, ACCESS_GROUP_NOT_VIABLE,
                           g_strdup_printf("IOMMU group %d is not viable: every device of the group must be "
                                           "bound to a VFIO driver (or to none)", d->iommu_group));
                log_device(LOG_WARNING, d->name, "not managed: %s", m->status_message);
                return;
        }
        if (r == -EBUSY) {
                set_status(m, ACCESS_GROUP_IN_USE,
                           g_strdup_printf("IOMMU group %d (or the device) is held by another process; "
                                           "vfmigd must be the only owner of VFIO devices", d->iommu_group));
                log_device(LOG_WARNING, d->name, "not managed: %s", m->status_message);
                return;
        }
        if (r < 0) {
                errno = -r;
                m->open_error = r;
                set_status(m, ACCESS_UNAVAILABLE, g_strdup_printf("cannot open the VFIO device: %m"));
                log_device(managed_device_not_ready(m) ? LOG_NOTICE : LOG_WARNING, d->name, "not managed: %s%s",
                           m->status_message, managed_device_not_ready(m) && !a->simulate ? " (trying again shortly)" : "");
                return;
        }
        entry_opened(a, m, d, v);
}

bool device_access_retry(DeviceAccess *a, const VfmigDevice *d)
{
        ManagedDevice *m = g_hash_table_lookup(a->entries, d->name);
        VfmigVfioDevice *v = NULL;

        if (!m || !managed_device_not_ready(m))
                return false;
        if (open_vfio(a, d, &v) < 0)
                return false;
        entry_opened(a, m, d, v);
        return true;
}

ManagedDevice *device_access_update(DeviceAccess *a, const VfmigDevice *d)
{
        ManagedDevice *m = g_hash_table_lookup(a->entries, d->name);

        if (m && streq_ptr(m->driver, d->driver) && m->iommu_group == d->iommu_group)
                return m;
        if (!m) {
                size_t n = strlen(d->name) + 1, nd = d->driver ? strlen(d->driver) + 1 : 1;

                m = g_malloc0(sizeof(ManagedDevice) + n + nd);
                m->name = memcpy(m + 1, d->name, n);
                m->driver_slot = m->name + n;
                m->driver_slot_size = nd;
                m->access = a;
                g_hash_table_insert(a->entries, m->name, m);
        }
        if (m->driver != m->driver_slot)
                g_free(m->driver);
        if (d->driver && strlen(d->driver) < m->driver_slot_size)
                m->driver = strcpy(m->driver_slot, d->driver);
        else
                m->driver = g_strdup(d->driver);
        m->iommu_group = d->iommu_group;
        open_entry(a, m, d);
        return m;
}

void device_access_set_quiet(DeviceAccess *a, bool quiet)
{
        a->quiet = quiet;
}

guint device_access_count_managed(DeviceAccess *a)
{
        GHashTableIter it;
        gpointer v;
        guint n = 0;

        g_hash_table_iter_init(&it, a->entries);
        while (g_hash_table_iter_next(&it, NULL, &v))
                n += ((ManagedDevice *) v)->status == ACCESS_MANAGED;
        return n;
}

void device_access_remove(DeviceAccess *a, const char *name)
{
        g_hash_table_remove(a->entries, name);
}

ManagedDevice *device_access_get(DeviceAccess *a, const char *name)
{
        return g_hash_table_lookup(a->entries, name);
}

int managed_device_get_state(ManagedDevice *m, VfmigMigState *ret)
{
        if (!m || !m->vfio)
                return -ENODEV;
        return vfmig_vfio_get_state(m->vfio, ret);
}

int managed_device_reset(ManagedDevice *m)
{
        if (!m || !m->vfio)
                return -ENODEV;
        return vfmig_vfio_reset(m->vfio);
}

int managed_device_open_fd(ManagedDevice *m)
{
        if (!m || !m->vfio)
                return -ENODEV;
        return vfmig_vfio_dup_fd(m->vfio);
}
