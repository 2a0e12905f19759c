/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kcompat.c — the value lists of the 2020-style migration/compatible_*
 * attributes (seed 000): what a target's driver says it accepts for one
 * field of a source, as text the daemon reads from sysfs.  Outside input:
 * strict, bounded, and every refusal to understand says why.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "rules.h"

#define ITEM_MAX 256

static bool is_printable_word(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (s[i] <= ' ' || s[i] > '~')
                        return false;
        return n > 0;
}

/* s[0..n) as a decimal number without sign, at most 19 digits (no overflow). */
static bool parse_decimal(const char *s, size_t n, uint64_t *out)
{
        uint64_t x = 0;

        if (n == 0 || n > 19)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                x = x * 10 + (uint64_t) (s[i] - '0');
        }
        *out = x;
        return true;
}

/* An item "A-B" of two decimal numbers: an inclusive range. */
static bool parse_range(const char *s, size_t n, uint64_t *lo, uint64_t *hi)
{
        const char *dash = memchr(s, '-', n);

        if (!dash)
                return false;
        return parse_decimal(s, (size_t) (dash - s), lo) &&
               parse_decimal(dash + 1, n - (size_t) (dash - s) - 1, hi);
}

static size_t trim(const char **s, size_t n)
{
        while (n > 0 && (**s == ' ' || **s == '\t')) {
                (*s)++;
                n--;
        }
        while (n > 0 && ((*s)[n - 1] == ' ' || (*s)[n - 1] == '\t'))
                n--;
        return n;
}

int vfmig_compatible_list_admits(const char *list, size_t len, const char *value, char **why)
{
        uint64_t v = 0;
        bool v_numeric;
        bool admitted = false;
        size_t pos = 0, index = 1;

        /* sysfs ends a value with a newline */
        while (len > 0 && (list[len - 1] == '\n' || list[len - 1] == ' ' || list[len - 1] == '\t'))
                len--;
        if (len == 0) {
                if (why)
                        *why = g_strdup("the list is empty");
                return -EINVAL;
        }
        if (len > VFMIG_COMPATIBLE_LIST_MAX) {
                if (why)
                        *why = g_strdup_printf("the list is longer than %d bytes", VFMIG_COMPATIBLE_LIST_MAX);
                return -EINVAL;
        }
        v_numeric = value && parse_decimal(value, strlen(value), &v);
        /* Every item is checked, also after a match: a list is understood
         * whole or not at all, so the answer never depends on item order. */
        while (pos <= len) {
                const char *comma = memchr(list + pos, ',', len - pos);
                size_t end = comma ? (size_t) (comma - list) : len;
                const char *item = list + pos;
                size_t n = trim(&item, end - pos);
                uint64_t lo, hi, x;

                if (!is_printable_word(item, n) || n > ITEM_MAX) {
                        if (why)
                                *why = n == 0 ? g_strdup_printf("item %zu is empty", index)
                                       : n > ITEM_MAX ? g_strdup_printf("an item is longer than %d bytes", ITEM_MAX)
                                                      : g_strdup("an item holds a space, a control or a non-ASCII character");
                        return -EINVAL;
                }
                if (parse_range(item, n, &lo, &hi)) {
                        if (lo > hi) {
                                if (why)
                                        *why = g_strdup_printf("range \"%.*s\" runs backwards", (int) n, item);
                                return -EINVAL;
                        }
                        if (v_numeric && v >= lo && v <= hi)
                                admitted = true;
                } else if (v_numeric && parse_decimal(item, n, &x)) {
                        if (x == v)
                                admitted = true;
                } else if (value && strlen(value) == n && memcmp(value, item, n) == 0)
                        admitted = true;
                if (!comma)
                        break;
                pos = end + 1;
                index++;
        }
        return admitted ? 1 : 0;
}
