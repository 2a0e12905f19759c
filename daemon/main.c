/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * main.c — vfmigd: command line, event loop, bus connection, start-up and
 * shutdown.  Everything the daemon knows lives in the core modules; this file
 * only wires them together.
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>

#include <systemd/sd-daemon.h>

#include "config.h"
#include "log.h"
#include "util.h"
#include "vfmigd.h"
#include "vfmig-names.h"

static const char *arg_simulate;
static bool arg_introspect;
static const char *arg_config = VFMIG_SYSCONFDIR "/vfmigd.conf";
static const char *arg_rules = VFMIG_DATADIR "/compat.d";
static const char *arg_admin_rules = VFMIG_SYSCONFDIR "/compat.d";
/* The start's enumeration: one summary line instead of one per device. */
static bool enumerating;

static void help(void)
{
        printf("Usage: vfmigd [OPTIONS]\n\n"
               "VFIO migration daemon: owns this host's VFIO devices and serves\n"
               "%s on the system bus.\n\n"
               "  -h --help            Show this help\n"
               "     --version         Show the version\n"
               "     --simulate=FILE   Run on the simulated host described by FILE\n"
               "                       (JSON, see data/sim/) instead of this host\n"
               "     --introspect      Print the D-Bus introspection XML and exit\n"
               "     --config=FILE     Read FILE instead of %s/vfmigd.conf\n"
               "     --rules=DIR       Vendor compatibility rules (default %s/compat.d)\n"
               "     --admin-rules=DIR Admin rules overriding them by file name\n"
               "                       (default %s/compat.d)\n"
               "  -d --debug           Log debug messages\n",
               VFMIG_BUS_NAME, VFMIG_SYSCONFDIR, VFMIG_DATADIR, VFMIG_SYSCONFDIR);
}

/* Returns 1 to continue, 0 to exit successfully, <0 on error. */
static int parse_argv(int argc, char *argv[])
{
        enum { ARG_VERSION = 0x100, ARG_SIMULATE, ARG_INTROSPECT, ARG_CONFIG, ARG_RULES, ARG_ADMIN_RULES };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "simulate", required_argument, NULL, ARG_SIMULATE },
                { "introspect", no_argument, NULL, ARG_INTROSPECT },
                { "config", required_argument, NULL, ARG_CONFIG },
                { "rules", required_argument, NULL, ARG_RULES },
                { "admin-rules", required_argument, NULL, ARG_ADMIN_RULES },
                { "debug", no_argument, NULL, 'd' },
                {}
        };
        int c;

        while ((c = getopt_long(argc, argv, "hd", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("vfmigd %s\n", VFMIG_VERSION);
                        return 0;
                case ARG_SIMULATE:
                        arg_simulate = optarg;
                        break;
                case ARG_INTROSPECT:
                        arg_introspect = true;
                        break;
                case ARG_CONFIG:
                        arg_config = optarg;
                        break;
                case ARG_RULES:
                        arg_rules = optarg;
                        break;
                case ARG_ADMIN_RULES:
                        arg_admin_rules = optarg;
                        break;
                case 'd':
                        log_set_max_level(LOG_DEBUG);
                        break;
                default:
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                log_error("Unexpected argument: %s", argv[optind]);
                return -EINVAL;
        }
        return 1;
}

/*
 * A device not ready yet when its uevent came (a new mdev: its VFIO group,
 * node and place in the group come with the driver's probe, after the
 * device's own uevent, and no later event need follow): opened again after 50, 100,
 * 200 ... ms, six times at most.  Nothing is announced unless it works.
 */
#define REOPEN_FIRST_USEC       (50 * 1000ULL)
#define REOPEN_TRIES            6

typedef struct Reopen {
        Daemon *daemon;
        char *name;
        sd_event_source *timer;
        unsigned tries;
} Reopen;

static void reopen_free(Reopen *ro)
{
        sd_event_source_disable_unref(ro->timer);
        g_free(ro->name);
        g_free(ro);
}

static int on_reopen(sd_event_source *s, uint64_t usec, void *userdata)
{
        Reopen *ro = userdata;
        Daemon *d = ro->daemon;
        VfmigDevice *dev = inventory_get_device(d->inventory, ro->name);
        ManagedDevice *m = dev ? dev->managed : NULL;

        if (m && device_access_retry(d->access, dev)) {
                compat_service_device_updated(d->compat, dev, m->migration_flags, m->dma_logging);
                bus_device_emit_changed(d, dev);
        } else if (m && managed_device_not_ready(m) && ++ro->tries < REOPEN_TRIES) {
                (void) sd_event_source_set_time_relative(s, REOPEN_FIRST_USEC << ro->tries);
                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
                return 0;
        } else if (m && m->status == ACCESS_UNAVAILABLE)
                log_device(LOG_WARNING, ro->name, "not managed: %s", m->status_message);
        g_hash_table_remove(d->reopens, ro->name);      /* frees ro and its timer */
        return 0;
}

static void schedule_reopen(Daemon *d, const VfmigDevice *dev, const ManagedDevice *m)
{
        Reopen *ro;

        if (arg_simulate || !managed_device_not_ready(m) || g_hash_table_contains(d->reopens, dev->name))
                return;
        ro = g_new0(Reopen, 1);
        ro->daemon = d;
        ro->name = g_strdup(dev->name);
        if (sd_event_add_time_relative(d->event, &ro->timer, CLOCK_MONOTONIC, REOPEN_FIRST_USEC, 0, on_reopen,
                                       ro) < 0) {
                reopen_free(ro);
                return;
        }
        g_hash_table_insert(d->reopens, ro->name, ro);
}

/* Inventory changes: keep device ownership current, then tell the bus. */
static void on_device_added(Inventory *inv, const VfmigDevice *dev, void *userdata)
{
        Daemon *d = userdata;

        ManagedDevice *m = device_access_update(d->access, dev);

        ((VfmigDevice *) dev)->managed = m;
        log_device(enumerating ? LOG_DEBUG : LOG_INFO, dev->name, "VFIO device appeared (%s, driver %s)",
                   vfmig_device_kind_to_string(dev->kind), dev->driver);
        compat_service_device_updated(d->compat, dev, m->migration_flags, m->dma_logging);
        bus_device_emit_added(d, dev);
        schedule_reopen(d, dev, m);
}

static void on_device_changed(Inventory *inv, const VfmigDevice *dev, void *userdata)
{
        Daemon *d = userdata;

        ManagedDevice *m = device_access_update(d->access, dev);

        ((VfmigDevice *) dev)->managed = m;
        log_device(LOG_DEBUG, dev->name, "VFIO device changed");
        compat_service_device_updated(d->compat, dev, m->migration_flags, m->dma_logging);
        bus_device_emit_changed(d, dev);
        schedule_reopen(d, dev, m);
}

static void on_device_removed(Inventory *inv, const VfmigDevice *dev, void *userdata)
{
        Daemon *d = userdata;

        log_device(LOG_INFO, dev->name, "VFIO device disappeared");
        bus_device_emit_removed(d, dev);
        compat_service_device_removed(d->compat, dev->name);
        ((VfmigDevice *) dev)->managed = NULL;
        device_access_remove(d->access, dev->name);
}

static void on_parents_changed(Inventory *inv, void *userdata)
{
        Daemon *d = userdata;
        g_autoptr(GPtrArray) parents = inventory_list_parents(inv);

        /* On a real host, re-read the parents' own identities (driver, ids). */
        if (d->identities) {
                g_hash_table_remove_all(d->identities);
                for (guint i = 0; i < parents->len; i++) {
                        VfmigMdevParent *p = parents->pdata[i];
                        VfmigDevice *id = p->sysfs_path[0] ? udev_identity(p->sysfs_path) : NULL;
                        if (id)
                                g_hash_table_replace(d->identities, id->name, id);
                }
        }
        compat_service_parents_updated(d->compat, parents);
        bus_manager_emit_types_changed(d);
}

static const VfmigDevice *identity_of(const char *name, void *userdata)
{
        Daemon *d = userdata;

        if (d->sim)
                return sim_host_identity(d->sim, name);
        return d->identities ? g_hash_table_lookup(d->identities, name) : NULL;
}

/* A target vfmigd cannot hand out: a device it does not hold (excluded by
 * vfmigd.conf, group in use, ...).  Reservations and jobs add to this. */
static bool target_is_busy(const char *key, void *userdata)
{
        Daemon *d = userdata;
        VfmigDevice *dev;
        ManagedDevice *m;

        if (strchr(key, '/'))
                return false;   /* a creatable mdev type */
        if (d->reservations && reservations_is_busy(d->reservations, key, NULL))
                return true;
        dev = inventory_get_device(d->inventory, key);
        m = dev ? dev->managed : NULL;
        return !m || m->status != ACCESS_MANAGED;
}

static void on_matrix_changed(uint64_t generation, void *userdata)
{
        bus_manager_emit_matrix_changed(userdata, generation);
        bus_device_emit_profile_changes(userdata);
}

static void on_device_released(ManagedDevice *m, void *userdata)
{
        Daemon *d = userdata;
        VfmigDevice *dev = inventory_get_device(d->inventory, m->name);

        if (dev)
                bus_device_emit_changed(d, dev);
}

static const InventoryListener inventory_listener = {
        .device_added = on_device_added,
        .device_changed = on_device_changed,
        .device_removed = on_device_removed,
        .parents_changed = on_parents_changed,
};

static void daemon_done(Daemon *d)
{
        if (d->reopens)
                g_hash_table_destroy(d->reopens);
        if (d->told_profiles)
                g_hash_table_destroy(d->told_profiles);
        udev_source_free(d->udev);
        polkit_registry_free(d->polkit_registry);
        if (d->reservations)
                reservations_set_busy_hook(d->reservations, NULL, NULL);
        jobs_free(d->jobs);                     /* unwinds running jobs; before reservations and devices */
        reservations_free(d->reservations);     /* before the bus: drops the owner tracks */
        mdev_creator_free(d->mdev);             /* pending removals finish when devices close */
        if (d->bus) {
                sd_bus_flush(d->bus);
                sd_bus_flush_close_unref(d->bus);
        }
        inventory_free(d->inventory);
        compat_service_free(d->compat);
        compat_preload_free(d->preload);
        device_access_free(d->access);
        if (d->identities)
                g_hash_table_unref(d->identities);
        g_free(d->host_name);
        sim_host_free(d->sim);
        sd_event_unref(d->event);
        g_free(d->backend);
}

/* The cache directory systemd gives us (the first, if several). */
static char *cache_directory(void)
{
        const char *e = getenv("CACHE_DIRECTORY");

        if (!e || !*e)
                return NULL;
        return g_strndup(e, strcspn(e, ":"));
}

static int setup_compat(Daemon *d, const char *kernel_release)
{
        g_autofree char *cache = cache_directory();
        CompatConfig cfg = {
                .vendor_dir = arg_rules,
                .admin_dir = arg_admin_rules,
                .cache_dir = cache,
                .host_name = d->host_name,
                .kernel_release = kernel_release,
                /* Simulated devices have no driver to ask. */
                .kernel_hook = arg_simulate == NULL,
                .identity = identity_of,
                .changed = on_matrix_changed,
                .userdata = d,
                .preload = g_steal_pointer(&d->preload),
        };

        if (!cache)
                log_info("CACHE_DIRECTORY is not set: the host matrix is not cached across restarts");
        return compat_service_new(d->event, &cfg, &d->compat);
}

static void enumeration_begin(Daemon *d)
{
        enumerating = true;
        device_access_set_quiet(d->access, true);
}

static void enumeration_end(Daemon *d)
{
        enumerating = false;
        device_access_set_quiet(d->access, false);
        log_info("%u VFIO devices found, %u of them managed (per device: --debug)",
                 inventory_device_count(d->inventory), device_access_count_managed(d->access));
}

static int setup_inventory(Daemon *d)
{
        _cleanup_(access_config_done) AccessConfig config = {};
        g_autofree char *config_error = NULL;

        if (access_config_load(arg_config, &config, &config_error) < 0) {
                log_error("Refusing configuration %s", config_error);
                return -EINVAL;
        }
        d->access = device_access_new(&config, arg_simulate != NULL, d->event, on_device_released, d);
        d->is_busy = target_is_busy;
        d->inventory = inventory_new();
        d->reopens = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify) reopen_free);
        inventory_set_listener(d->inventory, &inventory_listener, d);

        if (arg_simulate) {
                g_autofree char *error = NULL;
                int r = sim_host_load(arg_simulate, &d->sim, &error);

                if (r < 0) {
                        log_error("Refusing simulated host file %s", error);
                        return r;
                }
                d->backend = g_strdup_printf("simulated:%s", d->sim->host_name);
                d->host_name = g_strdup(d->sim->host_name);
                r = setup_compat(d, d->sim->kernel_release);
                if (r < 0)
                        return r;
                enumeration_begin(d);
                sim_host_populate(d->sim, d->inventory);
                enumeration_end(d);
        } else {
                struct utsname u;
                int r;

                d->backend = g_strdup("host");
                d->identities = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                                      (GDestroyNotify) vfmig_device_free);
                (void) uname(&u);
                d->host_name = g_strdup(u.nodename);
                r = setup_compat(d, u.release);
                if (r < 0)
                        return r;
                enumeration_begin(d);
                r = udev_source_new(d->event, d->inventory, &d->udev);
                enumeration_end(d);
                if (r < 0)
                        return r;
        }
        compat_service_start(d->compat);
        return 0;
}

/* Reservations from $STATE_DIRECTORY (or /var/lib/vfmig); a broken state
 * file is logged and moved aside, never fatal. */
static void setup_reservations(Daemon *d)
{
        d->reservations = reservations_new(d->event, NULL);
        (void) reservations_load(d->reservations);
        /* Instances created for reservations of creatable mdev types. */
        d->mdev = mdev_creator_new(d->event, d->inventory, d->sim, NULL);
        /* Migration jobs; devices in a job are busy for reservations. */
        d->jobs = jobs_new(d->event, d->access, d->reservations, d->compat, d->host_name);
        reservations_set_busy_hook(d->reservations, jobs_busy_hook, d->jobs);
}

static int setup_bus(Daemon *d)
{
        int r;

        r = sd_bus_default_system(&d->bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %m");
        r = sd_bus_add_object_vtable(d->bus, NULL, VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER,
                                     manager_vtable, d);
        if (r < 0)
                return log_error_errno(r, "Failed to add manager object: %m");
        r = bus_device_register(d);
        if (r < 0)
                return log_error_errno(r, "Failed to add device objects: %m");
        r = bus_reservation_register(d);
        if (r < 0)
                return log_error_errno(r, "Failed to add reservation objects: %m");
        r = bus_job_register(d);
        if (r < 0)
                return log_error_errno(r, "Failed to add job objects: %m");
        (void) jobs_recover(d->jobs);   /* jobs a killed vfmigd left: devices reset, reported failed */
        r = sd_bus_add_object_manager(d->bus, NULL, VFMIG_DBUS_PATH);
        if (r < 0)
                return log_error_errno(r, "Failed to add object manager: %m");
        r = sd_bus_attach_event(d->bus, d->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Failed to attach bus to event loop: %m");
        r = sd_bus_request_name(d->bus, VFMIG_BUS_NAME, 0);
        if (r < 0)
                return log_error_errno(r, "Failed to acquire bus name %s: %m", VFMIG_BUS_NAME);
        return 0;
}

/* vfmigd holds one FD (or more) per VFIO device: a host with thousands of
 * functions needs more than the usual soft limit of 1024. */
static void raise_fd_limit(void)
{
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        log_warning_errno(-errno, "Cannot raise the open-file limit: %m");
        }
}

/*
 * While starting, large blocks come from the heap rather than from mmap():
 * start-up frees big blocks (the simulated host's text, about 2 MB for
 * 4096 devices) before it builds the inventory and the matrix, and what it
 * builds then reuses those pages instead of faulting in new ones (each
 * fault is a trip through the kernel: on the 4096-target bench host this
 * saved 550 of 2300 page faults, 1.2 ms of a 16 ms warm start).  After
 * READY, glibc's initial threshold again; its dynamic adjustment stays off,
 * so blocks of 128 KiB and more (stream buffers) go back to the kernel when
 * freed.
 */
#define START_MMAP_THRESHOLD (32 * 1024 * 1024)
#define SERVING_MMAP_THRESHOLD (128 * 1024)

int main(int argc, char *argv[])
{
        _cleanup_(daemon_done) Daemon d = {};
        sigset_t mask;
        int r;

        (void) mallopt(M_MMAP_THRESHOLD, START_MMAP_THRESHOLD);
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? 2 : 0;

        if (arg_introspect) {
                g_autofree char *xml = bus_introspect_all();
                fputs(xml, stdout);
                return 0;
        }

        raise_fd_limit();

        r = sd_bus_error_add_map(vfmig_error_map);
        if (r < 0)
                return log_error_errno(r, "Failed to register error map: %m"), 1;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);

        r = sd_event_default(&d.event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m"), 1;
        (void) sd_event_add_signal(d.event, NULL, SIGTERM, NULL, NULL);
        (void) sd_event_add_signal(d.event, NULL, SIGINT, NULL, NULL);
        (void) sd_event_set_watchdog(d.event, true);

        /* The rules and the cache file are read on another thread while
         * this one reads the host. */
        {
                g_autofree char *cache = cache_directory();
                d.preload = compat_preload_start(arg_rules, arg_admin_rules, cache);
        }
        r = setup_inventory(&d);
        if (r < 0)
                return 1;
        setup_reservations(&d);
        r = setup_bus(&d);
        if (r < 0)
                return 1;

        log_info("vfmigd %s serving %s (%s, %u VFIO devices)", VFMIG_VERSION, VFMIG_BUS_NAME,
                 d.backend, inventory_device_count(d.inventory));
        (void) sd_notifyf(false, "READY=1\nSTATUS=Serving %u VFIO devices (%s)",
                          inventory_device_count(d.inventory), d.backend);
        (void) mallopt(M_MMAP_THRESHOLD, SERVING_MMAP_THRESHOLD);

        r = sd_event_loop(d.event);
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Shutting down");
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m"), 1;
        return 0;
}
