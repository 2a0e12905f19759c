/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfmigctl.h — what the verbs of vfmigctl share: the run context, the exit
 * statuses scripts rely on, bus helpers that turn a D-Bus error into a one-line
 * message plus an exit status, and output helpers (aligned tables, JSON).
 *
 * A verb is `int verb_x(VfmigCtl *ctl, int argc, char **argv)` in its own
 * file client/vfmigctl-<group>.c, listed in the verb table of vfmigctl.c.  It
 * returns an exit status (VFMIGCTL_EXIT_*).  Helpers that talk to the bus
 * return 0 on success; on failure they have already printed the error and
 * return the exit status the verb should return.
 */
#pragma once

#include <stdbool.h>

#include <glib.h>
#include <json-glib/json-glib.h>
#include <systemd/sd-bus.h>

#include "util.h"

/* Standard interfaces (not vfmig names, so not in vfmig-names.h). */
#define DBUS_PROPERTIES_INTERFACE     "org.freedesktop.DBus.Properties"
#define DBUS_OBJECT_MANAGER_INTERFACE "org.freedesktop.DBus.ObjectManager"

/* Exit statuses: part of the CLI contract, documented in vfmigctl(1). */
enum {
        VFMIGCTL_EXIT_OK = 0,
        VFMIGCTL_EXIT_FAILURE = 1,        /* anything not listed below */
        VFMIGCTL_EXIT_USAGE = 2,          /* bad command line, or InvalidArgs from the daemon */
        VFMIGCTL_EXIT_NO_SUCH_DEVICE = 3, /* org.vfmig1.Error.NoSuchDevice */
        VFMIGCTL_EXIT_ACCESS_DENIED = 4,  /* bus policy or polkit said no */
        VFMIGCTL_EXIT_NOT_RUNNING = 5,    /* org.vfmig1 has no owner, or no bus */
        VFMIGCTL_EXIT_NOT_COMPATIBLE = 6, /* org.vfmig1.Error.NotCompatible */
        VFMIGCTL_EXIT_BUSY = 7,           /* org.vfmig1.Error.Busy */
        VFMIGCTL_EXIT_NOT_RESERVED = 8,   /* org.vfmig1.Error.NotReserved */
};

typedef enum {
        VFMIGCTL_JSON_OFF,
        VFMIGCTL_JSON_SHORT,
        VFMIGCTL_JSON_PRETTY,
} VfmigCtlJson;

typedef struct {
        sd_bus *bus;
        VfmigCtlJson json;
        bool legend;
        bool verbose;
        const char *profile, *lease;      /* --profile, --lease (reserve, renew) */
        bool persist;                     /* --persist (reserve) */
        const char *to, *ticket;          /* --to, --ticket (migrate) */
} VfmigCtl;

/* Verbs, one group per file. */
int verb_devices(VfmigCtl *ctl, int argc, char **argv); /* vfmigctl-devices.c */
int verb_show(VfmigCtl *ctl, int argc, char **argv);    /* vfmigctl-devices.c */
int verb_types(VfmigCtl *ctl, int argc, char **argv);   /* vfmigctl-types.c */
int verb_status(VfmigCtl *ctl, int argc, char **argv);  /* vfmigctl-status.c */
int verb_reset(VfmigCtl *ctl, int argc, char **argv);   /* vfmigctl-reset.c */
int verb_profile(VfmigCtl *ctl, int argc, char **argv); /* vfmigctl-compat.c */
int verb_check(VfmigCtl *ctl, int argc, char **argv);   /* vfmigctl-compat.c */
int verb_targets(VfmigCtl *ctl, int argc, char **argv); /* vfmigctl-compat.c */
int verb_matrix(VfmigCtl *ctl, int argc, char **argv);  /* vfmigctl-compat.c */
int verb_reserve(VfmigCtl *ctl, int argc, char **argv); /* vfmigctl-reservations.c */
int verb_reservations(VfmigCtl *ctl, int argc, char **argv); /* vfmigctl-reservations.c */
int verb_renew(VfmigCtl *ctl, int argc, char **argv);   /* vfmigctl-reservations.c */
int verb_release(VfmigCtl *ctl, int argc, char **argv); /* vfmigctl-reservations.c */
int verb_migrate(VfmigCtl *ctl, int argc, char **argv); /* vfmigctl-jobs.c */
int verb_receive(VfmigCtl *ctl, int argc, char **argv); /* vfmigctl-reservations.c */
int verb_jobs(VfmigCtl *ctl, int argc, char **argv);    /* vfmigctl-jobs.c */
int verb_watch(VfmigCtl *ctl, int argc, char **argv);   /* vfmigctl-jobs.c */
int verb_cancel(VfmigCtl *ctl, int argc, char **argv);  /* vfmigctl-jobs.c */

/* --- bus helpers (vfmigctl-bus.c) --------------------------------------- */

/* Exit status for a failed call: from the D-Bus error name, else from r. */
int vfmigctl_exit_status(const sd_bus_error *error, int r);

/*
 * Print "vfmigctl: WHAT: <the daemon's message>" on one line to stderr and
 * return the matching exit status.
 */
int vfmigctl_log_error(const sd_bus_error *error, int r, const char *what);

/* Log a failure to parse a reply; returns VFMIGCTL_EXIT_FAILURE. */
int vfmigctl_log_parse_error(int r, const char *what);

/* Call a method on org.vfmig1; WHAT names the action in error messages. */
int vfmigctl_call(VfmigCtl *ctl, const char *what, const char *path, const char *interface,
                  const char *member, sd_bus_message **reply, const char *types, ...);

/*
 * Read an a{sv} of properties from M (positioned at the array) into an object
 * keyed by the D-Bus property names.  Returns 0 or a negative errno.
 */
int vfmigctl_read_properties(sd_bus_message *m, JsonObject **ret);

/* Properties.GetAll(INTERFACE) on PATH of org.vfmig1. */
int vfmigctl_get_all(VfmigCtl *ctl, const char *what, const char *path, const char *interface,
                     JsonObject **ret);

/*
 * ObjectManager.GetManagedObjects() on the root, keeping the properties of
 * INTERFACE: a table object path → JsonObject (D-Bus property names).
 */
int vfmigctl_get_managed_objects(VfmigCtl *ctl, const char *what, const char *interface,
                                 GHashTable **ret);

/* --- output helpers (vfmigctl-output.c) --------------------------------- */

/* "SubsystemVendorId" → "subsystem-vendor-id": the stable JSON key. */
char *vfmigctl_json_key(const char *dbus_name);

/* A copy of O with every key turned into its JSON key. */
JsonObject *vfmigctl_json_object_from_properties(JsonObject *o);

/* Print NODE to stdout as --json asked. */
void vfmigctl_print_json(VfmigCtl *ctl, JsonNode *node);

/* Member accessors that tolerate a missing or mistyped member. */
const char *vfmigctl_get_string(JsonObject *o, const char *member);
gint64 vfmigctl_get_int(JsonObject *o, const char *member, gint64 fallback);

/* A printable one-line copy: control characters become spaces. */
char *vfmigctl_one_line(const char *s);

/* How `show` and `status` print a property they know. */
typedef enum {
        VFMIGCTL_FORMAT_STRING,
        VFMIGCTL_FORMAT_NUMBER,
        VFMIGCTL_FORMAT_INDEX,      /* -1 prints as "unknown" */
        VFMIGCTL_FORMAT_PCI_ID,     /* 0x15b3; "-" when not a PCI device */
        VFMIGCTL_FORMAT_PCI_REVISION, /* 0x01; "-" when not a PCI device */
        VFMIGCTL_FORMAT_LIST,       /* ["a","b"] prints as "a, b" */
} VfmigCtlFormat;

typedef struct {
        const char *name;  /* D-Bus property name */
        const char *label; /* for people */
        VfmigCtlFormat format;
} VfmigCtlProperty;

/*
 * Column-aligned tables: cells are added left to right, a row ends after as
 * many cells as there are headers.  A NULL or empty cell prints as "-".
 */
typedef struct VfmigCtlTable VfmigCtlTable;

VfmigCtlTable *vfmigctl_table_new(const char *const *headers); /* NULL-terminated */
void vfmigctl_table_add(VfmigCtlTable *t, const char *cell);
void vfmigctl_table_take(VfmigCtlTable *t, char *cell);          /* g_free'd by the table */
/* Header line (unless --no-legend), then the rows. */
void vfmigctl_table_print(VfmigCtl *ctl, VfmigCtlTable *t);
/* A two-column table as "Label: value" lines, labels right-aligned. */
void vfmigctl_table_print_fields(VfmigCtlTable *t);
void vfmigctl_table_free(VfmigCtlTable *t);

/*
 * Add "label, value" rows to a two-column table: the KNOWN properties in
 * their order and format, then any other property of PROPS under its D-Bus
 * name (a property the daemon added after this client was built).
 */
void vfmigctl_table_add_properties(VfmigCtlTable *t, JsonObject *props, const VfmigCtlProperty *known,
                                   size_t n_known, bool pci);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfmigCtlTable, vfmigctl_table_free)
