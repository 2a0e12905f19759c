/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * json-guard.h — a strict look at outside JSON before json-glib parses it.
 *
 * json-glib 1.6 (Debian 12) leaks the nodes of a second value when a
 * complete JSON value is followed by an object or an array ("1{}", "{}[]",
 * "{...}{...}"): it reports the trailing data but never frees what it built
 * for it.  It also reads more than JSON (comments, single-quoted strings,
 * hexadecimal numbers), through which such a second value can hide.  Every
 * file and stream vfmig reads with json-glib holds exactly one JSON value,
 * so this refuses, before json-glib sees it, any text that has something
 * after its first value, or a character outside a string that JSON does not
 * allow there.  Anything else (an unfinished value, a misspelt literal) is
 * left to json-glib to report.  Found by the fuzz targets once GLib's slice
 * allocator was out of LeakSanitizer's way.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

static inline bool vfmig_json_guard_space(char c)
{
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The characters of numbers and of true, false and null. */
static inline bool vfmig_json_guard_scalar_char(char c)
{
        return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' ||
               c == 't' || c == 'r' || c == 'u' || c == 'f' || c == 'a' || c == 'l' || c == 's' || c == 'n';
}

/* Past the string that starts at t[i] == '"', or len when it does not end. */
static inline size_t vfmig_json_guard_skip_string(const char *t, size_t len, size_t i)
{
        for (i++; i < len; i++) {
                if (t[i] == '\\')
                        i++;
                else if (t[i] == '"')
                        return i + 1;
        }
        return len;
}

/*
 * false, with *bad (when not NULL) the offset of what is wrong, when t[0..len)
 * holds something after its first JSON value or a character outside a
 * string that JSON does not allow; true otherwise.
 */
static inline bool vfmig_json_guard_one_value(const char *t, size_t len, size_t *bad)
{
        size_t i = 0;

        while (i < len && vfmig_json_guard_space(t[i]))
                i++;
        if (i == len)
                return true;
        if (t[i] == '"') {
                i = vfmig_json_guard_skip_string(t, len, i);
        } else if (t[i] == '{' || t[i] == '[') {
                size_t depth = 0;

                while (i < len) {
                        char c = t[i];

                        if (c == '"') {
                                i = vfmig_json_guard_skip_string(t, len, i);
                                continue;
                        }
                        if (c == '{' || c == '[')
                                depth++;
                        else if (c == '}' || c == ']') {
                                if (--depth == 0) {
                                        i++;
                                        break;
                                }
                        } else if (c != ',' && c != ':' && !vfmig_json_guard_space(c) &&
                                   !vfmig_json_guard_scalar_char(c)) {
                                if (bad)
                                        *bad = i;
                                return false;
                        }
                        i++;
                }
                if (depth != 0)
                        return true;    /* unfinished: json-glib refuses it */
        } else {
                while (i < len && vfmig_json_guard_scalar_char(t[i]))
                        i++;
        }
        while (i < len && vfmig_json_guard_space(t[i]))
                i++;
        if (i < len) {
                if (bad)
                        *bad = i;
                return false;
        }
        return true;
}
