/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>

#include "util.h"
#include "vfio-fsm.h"

/* Short names for the table below. */
#define E  VFMIG_MIG_ERROR
#define S  VFMIG_MIG_STOP
#define R  VFMIG_MIG_RUNNING
#define SC VFMIG_MIG_STOP_COPY
#define RS VFMIG_MIG_RESUMING
#define RP VFMIG_MIG_RUNNING_P2P
#define PC VFMIG_MIG_PRE_COPY
#define PP VFMIG_MIG_PRE_COPY_P2P
#define N_STATES _VFMIG_MIG_STATE_MAX

/*
 * step[cur][target]: the first state on the kernel's path from cur to target,
 * before optional states the device lacks are skipped.  Columns and rows are
 * in enum order: ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P,
 * PRE_COPY, PRE_COPY_P2P.  ERROR as a result means "blocked".
 */
static const unsigned char step[N_STATES][N_STATES] = {
        /*              E  S   R   SC  RS  RP  PC  PP */
        [E]  = {        E, E,  E,  E,  E,  E,  E,  E  },
        [S]  = {        E, S,  RP, SC, RS, RP, RP, RP },
        [R]  = {        E, RP, R,  RP, RP, RP, PC, RP },
        [SC] = {        E, S,  S,  SC, S,  S,  E,  E  },
        [RS] = {        E, S,  S,  S,  RS, S,  S,  S  },
        [RP] = {        E, S,  R,  S,  S,  RP, R,  PP },
        [PC] = {        E, R,  R,  PP, R,  R,  PC, PP },
        [PP] = {        E, RP, RP, SC, RP, RP, PC, PP },
};

/* Capabilities a state needs; ERROR needs more than any device has. */
static uint64_t state_needs(unsigned s)
{
        switch (s) {
        case S:
        case R:
        case SC:
        case RS:
                return VFMIG_MIGRATION_STOP_COPY;
        case RP:
                return VFMIG_MIGRATION_STOP_COPY | VFMIG_MIGRATION_P2P;
        case PC:
                return VFMIG_MIGRATION_STOP_COPY | VFMIG_MIGRATION_PRE_COPY;
        case PP:
                return VFMIG_MIGRATION_ALL;
        default:
                return UINT64_MAX;
        }
}

bool vfmig_mig_state_supported(uint64_t flags, unsigned s)
{
        uint64_t need = state_needs(s);

        return (flags & need) == need;
}

int vfmig_mig_next_state(uint64_t flags, unsigned cur, unsigned target, VfmigMigState *ret_next)
{
        unsigned next;

        if (!ret_next)
                return -EINVAL;
        if (!vfmig_mig_state_supported(flags, cur) || !vfmig_mig_state_supported(flags, target))
                return -EINVAL;

        /* Skip states the device lacks; a blocked step (ERROR) ends the walk.
         * (Kernels before the 2026 fix spin forever here on ERROR.) */
        next = step[cur][target];
        while (next != E && !vfmig_mig_state_supported(flags, next))
                next = step[next][target];
        if (next == E)
                return -EINVAL;

        *ret_next = (VfmigMigState) next;
        return 0;
}

bool vfmig_mig_arc_starts_session(VfmigMigState cur, VfmigMigState next)
{
        return (cur == S && (next == SC || next == RS)) ||
                (cur == R && next == PC) ||
                (cur == RP && next == PP);
}

bool vfmig_mig_state_is_saving(VfmigMigState s)
{
        return s == SC || s == PC || s == PP;
}

bool vfmig_mig_state_is_running(VfmigMigState s)
{
        return s == R || s == RP || s == PC || s == PP;
}
