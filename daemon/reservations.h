/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * reservations.h — exclusive, leased claims on target devices (DESIGN §1
 * step 3).  No D-Bus: the bus adapter (bus-reservation.c) validates and
 * authorizes calls, tracks owners and turns the listener calls into signals.
 *
 * - A device name is reserved at most once, and never while the job hook
 *   says it is busy (reservations_is_busy()).
 * - Every reservation has a lease: it ends when the lease runs out (a
 *   CLOCK_BOOTTIME timer, so suspend counts and wall-clock jumps do not),
 *   when it is released, or when its owner goes away and it does not persist.
 *   CreatedAt/ExpiresAt are CLOCK_REALTIME µs, the only time that means
 *   anything across a restart.
 * - The set is written to STATE_DIR/reservations.json after every change
 *   (temporary file, fsync, rename, fsync of the directory) and read back at
 *   start: expired entries are dropped, a broken file is moved aside as
 *   reservations.json.corrupt and the daemon starts empty.  Which restored
 *   entries stay is the adapter's decision (see bus_reservation_register():
 *   non-persistent ones stay only while their owner is verifiably still
 *   connected to the same bus instance).
 * - Targets are names of existing devices.  A creatable mdev type as target
 *   is resolved by the adapter: it creates an instance (mdev-create.c),
 *   reserves the instance's name here with created_from = "PARENT/TYPE", and
 *   removes the instance when the removed() listener call reports the end.
 *   created_from is persisted ("created-from" in the state file), so the
 *   instance is removed after a restart too; entries with created_from that
 *   expired while vfmigd was not running are kept aside by
 *   reservations_load() for the adapter (reservations_steal_expired_created()).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <json-glib/json-glib.h>
#include <systemd/sd-event.h>

#define RESERVATION_LEASE_DEFAULT_SEC  300u
#define RESERVATION_LEASE_MIN_SEC      1u
#define RESERVATION_LEASE_MAX_SEC      86400u
#define RESERVATION_ID_LEN             32     /* lowercase hex, 128 random bits */
#define RESERVATIONS_STATE_FILE        "reservations.json"
#define RESERVATIONS_STATE_DIR_DEFAULT "/var/lib/vfmig"

typedef enum ReservationState {
        RESERVATION_ACTIVE,        /* "active": claimed, nothing moving */
        RESERVATION_RECEIVING,     /* "receiving": an incoming stream is being resumed into it */
        _RESERVATION_STATE_MAX,
} ReservationState;

typedef enum ReservationEnd {
        RESERVATION_END_RELEASED,   /* "released": Release() */
        RESERVATION_END_EXPIRED,    /* "expired": the lease ran out */
        RESERVATION_END_OWNER_GONE, /* "owner-gone": its owner's connection closed */
        RESERVATION_END_RESTART,    /* "restart": its owner could not be verified after a restart */
        _RESERVATION_END_MAX,
} ReservationEnd;

const char *reservation_state_to_string(ReservationState s);
int reservation_state_from_string(const char *s);
const char *reservation_end_to_string(ReservationEnd e);

typedef struct Reservations Reservations;

typedef struct Reservation {
        char *id;                  /* RESERVATION_ID_LEN hex digits: also the object path element */
        char *target;              /* device name */
        char *created_from;        /* "PARENT/TYPE" when vfmigd created target for it, else "" */
        char *owner;               /* unique bus name of the creator */
        bool persist;              /* survives its owner's disconnect */
        uint32_t lease_sec;        /* of the last Reserve/Renew */
        uint64_t created_usec;     /* CLOCK_REALTIME */
        uint64_t expires_usec;     /* CLOCK_REALTIME */
        ReservationState state;
        JsonNode *profile;         /* the source profile, a JSON object; never NULL */
        void *bus_data;            /* the adapter's (owner tracking); freed by its detach() */

        /* private */
        sd_event_source *timer;
        Reservations *set;
} Reservation;

typedef struct ReservationsListener {
        void (*added)(Reservations *s, Reservation *r, void *userdata);
        /* ExpiresAt, LeaseSeconds or State changed. */
        void (*changed)(Reservations *s, Reservation *r, void *userdata);
        /* r ends (not at shutdown); r is still complete, freed afterwards. */
        void (*removed)(Reservations *s, Reservation *r, ReservationEnd why, void *userdata);
        /* r is about to be freed (end or shutdown): drop bus_data. */
        void (*detach)(Reservations *s, Reservation *r, void *userdata);
} ReservationsListener;

/*
 * Whether the job module holds device: a newly allocated one-line
 * description of the holder ("job /org/vfmig1/job/3"), or NULL when free.
 */
typedef char *(*ReservationsBusyFn)(const char *device, void *userdata);

/* state_dir NULL: the first entry of $STATE_DIRECTORY, else
 * RESERVATIONS_STATE_DIR_DEFAULT.  Nothing is read until reservations_load(). */
Reservations *reservations_new(sd_event *event, const char *state_dir);
/* Frees every reservation without ending it (the state file keeps them). */
void reservations_free(Reservations *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Reservations, reservations_free)

void reservations_set_listener(Reservations *s, const ReservationsListener *l, void *userdata);
void reservations_set_busy_hook(Reservations *s, ReservationsBusyFn fn, void *userdata);
const char *reservations_state_path(Reservations *s);

/*
 * Read the state file.  A missing file is an empty set.  A broken file is
 * logged, moved aside and an empty set: never fatal.  Entries whose lease
 * ran out while vfmigd was not running, and malformed entries, are dropped
 * (logged).  Timers are armed for the rest.  Returns the number restored.
 * Calls no listener.
 */
int reservations_load(Reservations *s);
/*
 * The entries reservations_load() dropped because their lease ran out while
 * vfmigd was not running and whose target vfmigd had created (created_from
 * set): their instances are to be removed.  Returns them (Reservation*, not
 * in the set, no timer; free the array to free them) and forgets them.
 */
GPtrArray *reservations_steal_expired_created(Reservations *s);
/* The bus instance id recorded with the restored set ("" if none), and the
 * one to record from now on (sd_bus_get_bus_id() of the current bus). */
const char *reservations_get_bus_id(Reservations *s);
void reservations_set_bus_id(Reservations *s, const char *bus_id);

/*
 * Reserve target for owner.  profile: a JSON object, copied.  lease_sec:
 * RESERVATION_LEASE_MIN_SEC..MAX_SEC.  Errors, with *error a message for
 * people: -EINVAL (lease out of range), -EBUSY (reserved, or the job hook
 * says busy: the message names the holder), or a negative errno when the
 * state could not be written (nothing is reserved then).
 */
int reservations_add(Reservations *s, const char *target, const char *owner, JsonNode *profile,
                     uint32_t lease_sec, bool persist, Reservation **ret, char **error);
/* The same for an instance vfmigd created for the reservation: created_from
 * is the creatable type's key "PARENT/TYPE" (NULL or "": like reservations_add). */
int reservations_add_created(Reservations *s, const char *target, const char *created_from, const char *owner,
                             JsonNode *profile, uint32_t lease_sec, bool persist, Reservation **ret,
                             char **error);

/* Write the state file now (after changes the adapter made, e.g. the bus id). */
int reservations_flush(Reservations *s);

/* Extend the lease to now + lease_sec (0: the reservation's lease). */
int reservation_renew(Reservation *r, uint32_t lease_sec, char **error);
/* End r: removed() and detach() are called, r is freed. */
void reservation_release(Reservation *r, ReservationEnd why);
/* The owner's connection closed: ends r unless it persists. */
void reservation_owner_gone(Reservation *r);
/* For the job module: "receiving" while a stream is resumed into it. */
void reservation_set_state(Reservation *r, ReservationState state);

Reservation *reservations_get(Reservations *s, const char *id);
Reservation *reservations_get_by_target(Reservations *s, const char *target);
guint reservations_count(Reservations *s);
/* Borrowed pointers sorted by target; free the array only. */
GPtrArray *reservations_list(Reservations *s);

/*
 * 1 if device is reserved or held by a job, with *holder (if not NULL) a
 * one-line description for messages; 0 if free.
 */
int reservations_is_busy(Reservations *s, const char *device, char **holder);

bool reservation_id_is_valid(const char *id);
/* "" or "PARENT/TYPE" with both halves valid device names. */
bool reservation_created_from_is_valid(const char *created_from);
