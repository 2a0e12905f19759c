/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: the value lists of migration/compatible_* attributes,
 * which vfmigd reads from a target's driver in sysfs (daemon/compat/
 * kcompat.c).  Input: the source's value, a newline, then the list as the
 * file holds it.  Any input must be admitted, not admitted, or refused as
 * not understood with a reason; never read past the list's length; and the
 * answer must not depend on the order of the items. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *nl = memchr(data, '\n', size);
        g_autofree char *value = NULL, *why = NULL, *why2 = NULL, *rev = NULL, *list = NULL;
        size_t len;
        int r, r2;

        if (!nl)
                return 0;
        value = g_strndup((const char *) data, (size_t) (nl - (const char *) data));
        if (strlen(value) != (size_t) (nl - (const char *) data))
                return 0;       /* a NUL in the value: profiles cannot hold one */
        len = size - (size_t) (nl - (const char *) data) - 1;
        /* an exact-size copy, so that ASan sees a read past len */
        list = g_malloc(len ? len : 1);
        memcpy(list, nl + 1, len);
        r = vfmig_compatible_list_admits(list, len, value, &why);
        if (r != 1 && r != 0 && r != -EINVAL)
                __builtin_trap();
        if ((r == -EINVAL) != (why != NULL))
                __builtin_trap();   /* a refusal to understand says why, and only then */
        if (vfmig_compatible_list_admits(list, len, NULL, NULL) == 1)
                __builtin_trap();   /* a source that says nothing is never admitted */
        /* the items reversed: the same answer */
        /* (a newline inside the list is refused there, but would be stripped
         * at its end, so such lists are not reversed) */
        if (len > 0 && !memchr(list, '\0', len)) {
                g_autofree char *text = g_strndup(list, len);
                size_t n_text = len;
                g_auto(GStrv) items = NULL;

                /* strip what the parser strips at the end, and nothing else */
                while (n_text > 0 && strchr("\n \t", text[n_text - 1]))
                        text[--n_text] = '\0';
                if (strchr(text, '\n'))
                        return 0;
                items = g_strsplit(text, ",", -1);
                guint n;

                n = g_strv_length(items);

                for (guint i = 0; i < n / 2; i++) {
                        char *t = items[i];
                        items[i] = items[n - 1 - i];
                        items[n - 1 - i] = t;
                }
                rev = g_strjoinv(",", items);
                r2 = vfmig_compatible_list_admits(rev, strlen(rev), value, &why2);
                if (r2 != r)
                        __builtin_trap();
        }
        return 0;
}
