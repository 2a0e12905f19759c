/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfmigd.h — the daemon's top-level context: the event loop, the bus
 * connection and the core modules.  Only main.c and the bus-* adapters see
 * this struct; core modules get just what they need.
 */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bus-polkit.h"
#include "compat-service.h"
#include "device-access.h"
#include "inventory-udev.h"
#include "inventory.h"
#include "jobs.h"
#include "mdev-create.h"
#include "reservations.h"
#include "sim-host.h"

typedef struct Daemon {
        sd_event *event;
        sd_bus *bus;
        Inventory *inventory;
        UdevSource *udev;          /* real host */
        SimHost *sim;              /* simulated host (--simulate) */
        char *backend;             /* "host" or "simulated:<host name>" */
        DeviceAccess *access;
        PolkitRegistry *polkit_registry;   /* calls parked while polkit answers */
        CompatService *compat;
        CompatPreload *preload;         /* rules and cache being read, until compat is set up */
        Reservations *reservations;        /* leased claims on devices (reservations.c) */
        MdevCreator *mdev;                 /* instances created for reservations (mdev-create.c) */
        Jobs *jobs;                        /* migration jobs (jobs.c) */
        char *host_name;
        GHashTable *identities;            /* real host: parent name -> VfmigDevice* */
        GHashTable *reopens;               /* device name -> its pending second open (main.c) */
        /* device name -> a copy of the Profile a client last read (NULL: none
         * then), so that a matrix change can invalidate it (bus-compat.c) */
        GHashTable *told_profiles;
        /* Targets that must not be offered (reserved, in a job). */
        bool (*is_busy)(const char *key, void *userdata);
} Daemon;

/* bus-manager.c */
extern const sd_bus_vtable manager_vtable[];
/* bus-device.c */
extern const sd_bus_vtable device_vtable[];
int bus_device_register(Daemon *d);
char *bus_device_path(const char *name);
/* Signals for inventory changes. */
void bus_device_emit_added(Daemon *d, const VfmigDevice *dev);
void bus_device_emit_removed(Daemon *d, const VfmigDevice *dev);
void bus_device_emit_changed(Daemon *d, const VfmigDevice *dev);
void bus_manager_emit_types_changed(Daemon *d);

/* bus-compat.c */
int bus_method_get_migration_profile(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_check_compatibility(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_find_compatible_targets(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_export_matrix(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_reload(sd_bus_message *m, void *userdata, sd_bus_error *error);
/* After a matrix change: PropertiesChanged (Profile invalidated) for every
 * device whose Profile a client has read and which differs now. */
void bus_device_emit_profile_changes(Daemon *d);
int bus_property_get_matrix_generation(sd_bus *bus, const char *path, const char *interface, const char *property,
                                       sd_bus_message *reply, void *userdata, sd_bus_error *error);
int bus_property_get_profile(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error);
void bus_manager_emit_matrix_changed(Daemon *d, uint64_t generation);

/* bus-reservation.c */
extern const sd_bus_vtable reservation_vtable[];
int bus_reservation_register(Daemon *d);
char *bus_reservation_path(const char *id);
int bus_reservation_method_reserve(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_reservation_method_list(sd_bus_message *m, void *userdata, sd_bus_error *error);

/* bus-job.c: Job objects, and the bodies of the methods that start jobs */
extern const sd_bus_vtable job_vtable[];
int bus_job_register(Daemon *d);
char *bus_job_path(const char *id);
int bus_job_method_migrate(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_job_method_save_to_fd(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_job_method_migrate_group(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_job_method_save_group_to_fd(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_job_method_prepare_incoming(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_job_method_receive_from_fd(sd_bus_message *m, void *userdata, sd_bus_error *error);

/* bus-errors.c */
extern const sd_bus_error_map vfmig_error_map[];

/* bus-introspect.c: the introspection XML of one interface from its vtable. */
char *bus_introspect_interface(const char *interface, const sd_bus_vtable *vtable);
/* All interfaces the daemon implements, as one document. */
char *bus_introspect_all(void);
