/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bus-strings.h — appending strings the daemon made itself to a reply.
 * Shared with bench/bench-query.c, whose floor service must build its reply
 * with exactly the calls vfmigd makes.
 */
#pragma once

#include <string.h>

#include <systemd/sd-bus.h>

/*
 * sd_bus_message_append_basic() checks every string as UTF-8 one character
 * at a time, a third of what a 16-result FindCompatibleTargets reply costs
 * to build.  A string of ASCII bytes is valid UTF-8 as it stands (and
 * strlen() leaves no NUL inside), so it is copied into the space sd-bus
 * reserves for it; anything else takes the checking path.
 */
static inline int vfmig_bus_append_own_string(sd_bus_message *reply, const char *s)
{
        size_t n = strlen(s);
        unsigned char high = 0;
        char *space;
        int r;

        for (size_t i = 0; i < n; i++)
                high |= (unsigned char) s[i];
        if (high & 0x80)
                return sd_bus_message_append_basic(reply, 's', s);
        r = sd_bus_message_append_string_space(reply, n, &space);
        if (r < 0)
                return r;
        memcpy(space, s, n);
        return 0;
}
