/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: migration profiles as JSON (vfmigctl check/targets read
 * them from files or stdin; peers send them).  Any input must give a valid
 * profile that survives a round trip, or a refusal that says why. */
#include <stddef.h>
#include <stdint.h>

#include "profile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        g_autoptr(VfmigProfile) p = NULL, q = NULL;
        g_autofree char *error = NULL, *json = NULL;

        if (vfmig_profile_from_json((const char *) data, (gssize) size, &p, &error) < 0) {
                if (!error || p)
                        __builtin_trap();   /* every refusal must say why */
                return 0;
        }
        if (vfmig_profile_validate(p, NULL) < 0)
                __builtin_trap();
        json = vfmig_profile_to_json(p);
        if (vfmig_profile_from_json(json, -1, &q, NULL) < 0)
                __builtin_trap();           /* what we write, we read */
        /* state-size above 2^63 cannot be written as a JSON integer */
        if (!(p->has_state_size && p->state_size > (uint64_t) G_MAXINT64) && !vfmig_profile_equal(p, q))
                __builtin_trap();
        return 0;
}
