/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfio-fsm.h — the kernel's migration state machine as a pure function, so the
 * sim walks exactly the kernel's paths and the daemon can predict them.
 *
 * The rules (learned from the kernel's vfio_mig_get_next_state() in
 * drivers/vfio/vfio_main.c and the uAPI text in include/uapi/linux/vfio.h):
 * a state is usable only when the device's flags include every capability it
 * needs (STOP, RUNNING, STOP_COPY, RESUMING: STOP_COPY; RUNNING_P2P: +P2P;
 * PRE_COPY: +PRE_COPY; PRE_COPY_P2P: +P2P +PRE_COPY; ERROR never); a request
 * is split into single arcs along a fixed shortest path on which the saving
 * states (PRE_COPY*, STOP_COPY) are never interior, skipping states the
 * device lacks; STOP_COPY -> PRE_COPY(_P2P) is blocked.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vfio.h"

/* Whether a device with these VFMIG_MIGRATION_* flags supports state s as a
 * target (ERROR never is; values outside the enum never are). */
bool vfmig_mig_state_supported(uint64_t flags, unsigned s);

/*
 * The next single arc from cur towards target: 0 and *ret_next, or -EINVAL
 * when cur or target is unsupported (or ERROR) or the request is blocked.
 * cur == target gives *ret_next = cur.
 */
int vfmig_mig_next_state(uint64_t flags, unsigned cur, unsigned target, VfmigMigState *ret_next);

/* Whether the single arc cur -> next starts a new data transfer session
 * (returns a data fd): STOP->STOP_COPY, STOP->RESUMING, RUNNING->PRE_COPY,
 * RUNNING_P2P->PRE_COPY_P2P. */
bool vfmig_mig_arc_starts_session(VfmigMigState cur, VfmigMigState next);

/* Whether s is one of the saving group (PRE_COPY, PRE_COPY_P2P, STOP_COPY). */
bool vfmig_mig_state_is_saving(VfmigMigState s);

/* Whether the device may change its own state in s (RUNNING, RUNNING_P2P,
 * PRE_COPY, PRE_COPY_P2P). */
bool vfmig_mig_state_is_running(VfmigMigState s);
