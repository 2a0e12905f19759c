/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mdev-create.c — mdev instances created (and removed) for reservations of
 * creatable types.  See mdev-create.h for the contract.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "mdev-create.h"
#include "util.h"

struct MdevCreator {
        sd_event *event;
        Inventory *inv;
        SimHost *sim;
        char *sysfs_root;
        /* Real host: finished removals come back through this socket pair
         * (the worker threads send their job, the event loop logs it). */
        int done_fds[2];
        sd_event_source *done_source;
        guint pending;
};

typedef struct RemoveJob {
        char *name;
        char *created_from;
        char *path;               /* .../remove */
        int result;               /* 0 or -errno of the write */
        int fd;                   /* a dup of done_fds[1]: where to report */
        uint64_t started_usec;
} RemoveJob;

static void remove_job_free(RemoveJob *j)
{
        if (!j)
                return;
        if (j->fd >= 0)
                close(j->fd);
        g_free(j->name);
        g_free(j->created_from);
        g_free(j->path);
        g_free(j);
}

bool mdev_creatable_key_is_valid(const char *key)
{
        const char *slash = key ? strchr(key, '/') : NULL;
        g_autofree char *parent = NULL;

        if (!slash || strchr(slash + 1, '/'))
                return false;
        parent = g_strndup(key, slash - key);
        /* The type becomes a sysfs path component: no ".", "..", hidden names. */
        return vfmig_device_name_is_valid(parent) && vfmig_device_name_is_valid(slash + 1) &&
               parent[0] != '.' && slash[1] != '.';
}

/* "PARENT/TYPE" into its halves, or -EINVAL with *error. */
static int split_key(const char *key, char **parent, char **type, char **error)
{
        const char *slash;

        if (!mdev_creatable_key_is_valid(key)) {
                if (error)
                        *error = g_strdup_printf("\"%.64s\" is not a creatable mdev type: expected PARENT/TYPE, "
                                                 "e.g. 0000:3b:00.0/nvidia-223 (see ListMdevTypes)",
                                                 key ? key : "");
                return -EINVAL;
        }
        slash = strchr(key, '/');
        *parent = g_strndup(key, slash - key);
        *type = g_strdup(slash + 1);
        return 0;
}

static VfmigMdevType *parent_type(VfmigMdevParent *p, const char *type)
{
        for (guint i = 0; p && i < p->types->len; i++) {
                VfmigMdevType *t = p->types->pdata[i];
                if (streq_ptr(t->id, type))
                        return t;
        }
        return NULL;
}

static int no_such_type(const char *parent, const char *type, bool parent_known, char **error)
{
        if (error)
                *error = parent_known
                         ? g_strdup_printf("mdev parent %s offers no type \"%s\" (see ListMdevTypes)", parent, type)
                         : g_strdup_printf("No mdev parent \"%s\" on this host (see ListMdevTypes)", parent);
        return -ENXIO;
}

static VfmigMdevParent *parent_copy(const VfmigMdevParent *p)
{
        VfmigMdevParent *n = vfmig_mdev_parent_new(p->name);

        g_free(n->driver);
        n->driver = g_strdup(p->driver);
        g_free(n->sysfs_path);
        n->sysfs_path = g_strdup(p->sysfs_path);
        for (guint i = 0; i < p->types->len; i++) {
                const VfmigMdevType *t = p->types->pdata[i];
                VfmigMdevType *c = vfmig_mdev_type_new(t->id);

                g_free(c->name);
                c->name = g_strdup(t->name);
                g_free(c->device_api);
                c->device_api = g_strdup(t->device_api);
                g_free(c->description);
                c->description = g_strdup(t->description);
                c->available_instances = t->available_instances;
                g_ptr_array_add(n->types, c);
        }
        return n;
}

/* Simulated host: the parent again, with type's available instances moved by delta. */
static void sim_adjust_available(MdevCreator *c, const char *parent, const char *type, int delta)
{
        VfmigMdevParent *p = inventory_get_parent(c->inv, parent);
        VfmigMdevParent *n;
        VfmigMdevType *t;

        if (!p || !parent_type(p, type))
                return;
        n = parent_copy(p);
        t = parent_type(n, type);
        if (delta < 0 && t->available_instances > 0)
                t->available_instances--;
        else if (delta > 0)
                t->available_instances++;
        inventory_put_parent(c->inv, n);
}

/* --- reading sysfs -------------------------------------------------------- */

static int read_small_file(const char *path, char *buf, size_t size)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                return -errno;
        n = read(fd, buf, size - 1);
        if (n < 0)
                return -errno;
        buf[n] = 0;
        g_strchomp(buf);
        return 0;
}

/* One write(2) of value to a sysfs attribute: 0 or -errno. */
static int write_attribute(const char *path, const char *value)
{
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
        size_t len = strlen(value);
        ssize_t n;

        if (fd < 0)
                return -errno;
        do
                n = write(fd, value, len);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        return (size_t) n == len ? 0 : -EIO;
}

static char *type_dir(VfmigMdevParent *p, const char *type)
{
        return g_strdup_printf("%s/mdev_supported_types/%s", p->sysfs_path, type);
}

/* The last component of what path (a symlink) points to, or NULL. */
static char *link_basename(const char *path)
{
        g_autofree char *target = g_file_read_link(path, NULL);

        return target ? g_path_get_basename(target) : NULL;
}

/* --- available ------------------------------------------------------------ */

static int real_available(MdevCreator *c, const char *parent, const char *type, uint32_t *ret, char **error)
{
        VfmigMdevParent *p = inventory_get_parent(c->inv, parent);
        g_autofree char *dir = NULL, *path = NULL;
        char buf[64], *end = NULL;
        guint64 v;
        int r;

        if (!p || !p->sysfs_path[0])
                return no_such_type(parent, type, false, error);
        if (!parent_type(p, type))
                return no_such_type(parent, type, true, error);
        dir = type_dir(p, type);
        if (!g_file_test(dir, G_FILE_TEST_IS_DIR))
                return no_such_type(parent, type, true, error);
        path = g_build_filename(dir, "available_instances", NULL);
        r = read_small_file(path, buf, sizeof(buf));
        if (r < 0) {
                if (error)
                        *error = g_strdup_printf("Cannot read %s: %s", path, g_strerror(-r));
                return r;
        }
        v = g_ascii_strtoull(buf, &end, 10);
        if (end == buf || *end || v > UINT32_MAX) {
                if (error)
                        *error = g_strdup_printf("%s says \"%s\", not a number", path, buf);
                return -EIO;
        }
        *ret = (uint32_t) v;
        return 0;
}

int mdev_creator_available(MdevCreator *c, const char *key, uint32_t *ret, char **error)
{
        g_autofree char *parent = NULL, *type = NULL;
        VfmigMdevParent *p;
        VfmigMdevType *t;
        int r;

        r = split_key(key, &parent, &type, error);
        if (r < 0)
                return r;
        if (!c->sim)
                return real_available(c, parent, type, ret, error);
        p = inventory_get_parent(c->inv, parent);
        t = parent_type(p, type);
        if (!t)
                return no_such_type(parent, type, p != NULL, error);
        *ret = t->available_instances;
        return 0;
}

static int none_available(const char *key, char **error)
{
        if (error)
                *error = g_strdup_printf("No instance of %s can be created: the type has 0 available instances "
                                         "(every slot is in use; release one or choose another type, see "
                                         "ListMdevTypes)", key);
        return -EBUSY;
}

/* --- create --------------------------------------------------------------- */

static char *new_uuid(MdevCreator *c)
{
        for (;;) {
                char *u = g_uuid_string_random();

                if (!inventory_get_device(c->inv, u))
                        return u;
                g_free(u);
        }
}

int mdev_creator_create(MdevCreator *c, const char *key, char **ret_name, char **error)
{
        g_autofree char *parent = NULL, *type = NULL, *uuid = NULL;
        uint32_t avail = 0;
        int r;

        r = split_key(key, &parent, &type, error);
        if (r < 0)
                return r;
        r = mdev_creator_available(c, key, &avail, error);
        if (r < 0)
                return r;
        if (avail == 0)
                return none_available(key, error);
        uuid = new_uuid(c);

        if (c->sim) {
                VfmigMdevParent *p = inventory_get_parent(c->inv, parent);
                VfmigDevice *d = sim_host_new_instance(c->sim, p, type, uuid);

                /* As the kernel does it: the instance appears, then the slot is gone. */
                inventory_put_device(c->inv, d);
                sim_adjust_available(c, parent, type, -1);
        } else {
                VfmigMdevParent *p = inventory_get_parent(c->inv, parent);
                g_autofree char *dir = type_dir(p, type);
                g_autofree char *path = g_build_filename(dir, "create", NULL);

                r = write_attribute(path, uuid);
                if (r < 0) {
                        if (error)
                                *error = g_strdup_printf("The kernel refused to create an instance of %s: "
                                                         "writing %s to %s: %s", key, uuid, path, g_strerror(-r));
                        log_warning("Creating an instance of %s failed: writing %s: %s", key, path,
                                    g_strerror(-r));
                        return -EIO;
                }
        }
        log_device(LOG_INFO, uuid, "Created mdev instance %s of %s", uuid, key);
        *ret_name = g_steal_pointer(&uuid);
        return 0;
}

/* --- remove --------------------------------------------------------------- */

static int not_created_from(const char *name, const char *key, const char *what, char **error)
{
        if (error)
                *error = g_strdup_printf("%s is not an instance of %s (%s); left alone", name, key, what);
        return -EPERM;
}

static int sim_remove(MdevCreator *c, const char *name, const char *parent, const char *type, const char *key,
                      char **error)
{
        VfmigDevice *d = inventory_get_device(c->inv, name);

        if (!d) {
                if (error)
                        *error = g_strdup_printf("mdev instance %s is gone already", name);
                return -ENOENT;
        }
        if (d->kind != VFMIG_DEVICE_MDEV || !streq_ptr(d->parent, parent) || !streq_ptr(d->mdev_type, type))
                return not_created_from(name, key, "parent or type differ", error);
        inventory_remove_device(c->inv, name);
        sim_adjust_available(c, parent, type, +1);
        log_device(LOG_INFO, name, "Removed mdev instance %s of %s", name, key);
        return 0;
}

static gpointer remove_thread(gpointer data)
{
        RemoveJob *j = data;
        ssize_t n;

        /* Returns once every holder closed the device: vfmigd closes its own
         * when the kernel's request eventfd fires, a VMM when it lets go. */
        j->result = write_attribute(j->path, "1");
        n = send(j->fd, &j, sizeof(j), MSG_NOSIGNAL);
        if (n != (ssize_t) sizeof(j))
                remove_job_free(j);     /* nobody listens any more */
        return NULL;
}

static int on_remove_done(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
        MdevCreator *c = userdata;
        RemoveJob *j = NULL;

        while (recv(fd, &j, sizeof(j), MSG_DONTWAIT) == (ssize_t) sizeof(j)) {
                uint64_t ms = (g_get_monotonic_time() - j->started_usec) / 1000;

                if (c->pending > 0)
                        c->pending--;
                if (j->result == 0)
                        log_device(LOG_INFO, j->name, "Removed mdev instance %s of %s (%" G_GUINT64_FORMAT " ms)",
                                   j->name, j->created_from, ms);
                else if (j->result == -ENOENT || j->result == -ENODEV)
                        log_device(LOG_INFO, j->name, "mdev instance %s of %s was gone before its removal",
                                   j->name, j->created_from);
                else
                        log_device(LOG_WARNING, j->name, "Removing mdev instance %s of %s failed: writing %s: %s",
                                   j->name, j->created_from, j->path, g_strerror(-j->result));
                remove_job_free(j);
        }
        return 0;
}

static int real_remove(MdevCreator *c, const char *name, const char *parent, const char *type, const char *key,
                       char **error)
{
        g_autofree char *dir = g_strdup_printf("%s/bus/mdev/devices/%s", c->sysfs_root, name);
        g_autofree char *type_link = g_build_filename(dir, "mdev_type", NULL);
        g_autofree char *real = NULL, *real_parent_dir = NULL, *real_parent = NULL, *have_type = NULL;
        g_autoptr(GError) gerr = NULL;
        RemoveJob *j;
        GThread *t;

        if (!vfmig_uuid_is_valid(name))
                return not_created_from(name, key, "not an mdev UUID", error);
        real = realpath(dir, NULL);
        if (!real) {
                if (error)
                        *error = g_strdup_printf("mdev instance %s is gone already", name);
                return -ENOENT;
        }
        /* The instance's device directory sits in its parent's. */
        real_parent_dir = g_path_get_dirname(real);
        real_parent = g_path_get_basename(real_parent_dir);
        have_type = link_basename(type_link);
        if (!streq_ptr(real_parent, parent) || !have_type || !streq_ptr(have_type, type))
                return not_created_from(name, key, "its parent or type differ", error);

        j = g_new0(RemoveJob, 1);
        j->fd = -1;
        j->name = g_strdup(name);
        j->created_from = g_strdup(key);
        /* Under /sys/devices, which the hardened unit leaves writable
         * (ReadWritePaths=) while ProtectKernelTunables= makes /sys read-only. */
        j->path = g_build_filename(real, "remove", NULL);
        j->started_usec = g_get_monotonic_time();
        if (c->done_fds[1] >= 0) {
                j->fd = fcntl(c->done_fds[1], F_DUPFD_CLOEXEC, 3);
                if (j->fd < 0) {
                        int r = -errno;
                        remove_job_free(j);
                        if (error)
                                *error = g_strdup_printf("Cannot start removing %s: %s", name, g_strerror(-r));
                        return r;
                }
        }
        t = g_thread_try_new("mdev-remove", remove_thread, j, &gerr);
        if (!t) {
                remove_job_free(j);
                if (error)
                        *error = g_strdup_printf("Cannot start removing %s: %s", name, gerr->message);
                return -EAGAIN;
        }
        g_thread_unref(t);
        c->pending++;
        log_device(LOG_INFO, name, "Removing mdev instance %s of %s", name, key);
        return 0;
}

int mdev_creator_remove(MdevCreator *c, const char *name, const char *created_from, char **error)
{
        g_autofree char *parent = NULL, *type = NULL;
        int r;

        r = split_key(created_from, &parent, &type, error);
        if (r < 0)
                return r;
        if (c->sim)
                return sim_remove(c, name, parent, type, created_from, error);
        return real_remove(c, name, parent, type, created_from, error);
}

int mdev_creator_restore(MdevCreator *c, const char *name, const char *created_from, char **error)
{
        g_autofree char *parent = NULL, *type = NULL;
        VfmigDevice *d;
        VfmigMdevParent *p;
        VfmigMdevType *t;
        int r;

        r = split_key(created_from, &parent, &type, error);
        if (r < 0)
                return r;
        if (!c->sim)
                return 0;
        d = inventory_get_device(c->inv, name);
        if (d) {
                if (d->kind != VFMIG_DEVICE_MDEV || !streq_ptr(d->parent, parent) ||
                    !streq_ptr(d->mdev_type, type))
                        return not_created_from(name, created_from, "parent or type differ", error);
                return 0;
        }
        if (!vfmig_uuid_is_valid(name))
                return not_created_from(name, created_from, "not an mdev UUID", error);
        p = inventory_get_parent(c->inv, parent);
        t = parent_type(p, type);
        if (!t)
                return no_such_type(parent, type, p != NULL, error);
        if (t->available_instances == 0)
                return none_available(created_from, error);
        inventory_put_device(c->inv, sim_host_new_instance(c->sim, p, type, name));
        sim_adjust_available(c, parent, type, -1);
        log_device(LOG_INFO, name, "Simulated mdev instance %s of %s is back (it outlives vfmigd, as on a real host)",
                   name, created_from);
        return 0;
}

guint mdev_creator_pending(MdevCreator *c)
{
        return c->pending;
}

/* --- lifetime ------------------------------------------------------------- */

MdevCreator *mdev_creator_new(sd_event *event, Inventory *inv, SimHost *sim, const char *sysfs_root)
{
        MdevCreator *c = g_new0(MdevCreator, 1);

        c->event = event ? sd_event_ref(event) : NULL;
        c->inv = inv;
        c->sim = sim;
        c->sysfs_root = g_strdup(sysfs_root ? sysfs_root : "/sys");
        c->done_fds[0] = c->done_fds[1] = -1;
        if (!sim && event) {
                int r;

                if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, c->done_fds) < 0) {
                        log_warning_errno(-errno, "Cannot create the mdev removal channel: %m; removals will "
                                          "not be reported");
                        c->done_fds[0] = c->done_fds[1] = -1;
                } else {
                        r = sd_event_add_io(event, &c->done_source, c->done_fds[0], EPOLLIN, on_remove_done, c);
                        if (r < 0)
                                log_warning_errno(r, "Cannot watch the mdev removal channel: %m");
                        else
                                (void) sd_event_source_set_description(c->done_source, "mdev-remove-done");
                }
        }
        return c;
}

void mdev_creator_free(MdevCreator *c)
{
        if (!c)
                return;
        /* Workers still blocked in a remove write finish when the device is
         * closed; their report then fails and they free their job. */
        sd_event_source_disable_unref(c->done_source);
        if (c->done_fds[0] >= 0)
                close(c->done_fds[0]);
        if (c->done_fds[1] >= 0)
                close(c->done_fds[1]);
        sd_event_unref(c->event);
        g_free(c->sysfs_root);
        g_free(c);
}
