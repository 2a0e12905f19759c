/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * json-guard.h — a strict look at outside JSON before json-glib parses it.
 *
 * json-glib 1.6 (Debian 12) leaks the nodes of a second value when a
 * complete JSON value is followed by an object or an array ("1{}", "{}[]",
 * "{...}{...}"), leaks a string buffer on a broken surrogate pair, and
 * recurses once per nesting level (deep enough nesting overflows the
 * stack).  It also reads more than JSON (comments, single-quoted strings,
 * hexadecimal and octal numbers, short \u escapes), and through those a
 * second value can hide from a check that reads JSON differently.  Every
 * file and stream vfmig reads with json-glib holds exactly one JSON value of
 * modest depth, so this tokenizes the text as JSON (RFC 8259) does and
 * refuses, before json-glib sees it, anything after the first value, any
 * token JSON does not have, any escape other than JSON's (a \u escape of four
 * hex digits, surrogates only in high-low pairs), a raw control character in
 * a string, and nesting deeper than VFMIG_JSON_GUARD_DEPTH.  An unfinished
 * value is left to json-glib to report.  Found by the fuzz targets once
 * GLib's slice allocator was out of LeakSanitizer's way, and by review.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define VFMIG_JSON_GUARD_DEPTH 64

static inline bool vfmig_json_guard_space(char c)
{
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static inline int vfmig_json_guard_hex4(const char *t, size_t len, size_t i)
{
        int v = 0;

        if (i > len || len - i < 4)
                return -1;
        for (size_t k = i; k < i + 4; k++) {
                char c = t[k];
                v <<= 4;
                if (c >= '0' && c <= '9')
                        v |= c - '0';
                else if (c >= 'a' && c <= 'f')
                        v |= c - 'a' + 10;
                else if (c >= 'A' && c <= 'F')
                        v |= c - 'A' + 10;
                else
                        return -1;
        }
        return v;
}

/*
 * The string that starts at t[i] == '"': past its end, 0 when it is not a
 * JSON string (*bad: where), SIZE_MAX when it does not end.
 */
static inline size_t vfmig_json_guard_string(const char *t, size_t len, size_t i, size_t *bad)
{
        for (i++; i < len; i++) {
                unsigned char c = (unsigned char) t[i];

                if (c == '"')
                        return i + 1;
                if (c < 0x20) {
                        *bad = i;
                        return 0;
                }
                if (c != '\\')
                        continue;
                if (i + 1 >= len)
                        return SIZE_MAX;
                i++;
                if (strchr("\"\\/bfnrt", t[i]) && t[i])
                        continue;
                if (t[i] == 'u') {
                        int u = vfmig_json_guard_hex4(t, len, i + 1);
                        if (u < 0 || (u >= 0xdc00 && u <= 0xdfff)) {
                                *bad = i - 1;
                                return 0;
                        }
                        i += 4;
                        if (u >= 0xd800 && u <= 0xdbff) {
                                int low = i + 2 < len && t[i + 1] == '\\' && t[i + 2] == 'u'
                                                  ? vfmig_json_guard_hex4(t, len, i + 3) : -1;
                                if (low < 0xdc00 || low > 0xdfff) {
                                        *bad = i - 5;
                                        return 0;
                                }
                                i += 6;
                        }
                        continue;
                }
                *bad = i - 1;
                return 0;
        }
        return SIZE_MAX;
}

/* A token ends at t[j]: the end, a space or a separator ("017" is not two numbers). */
static inline bool vfmig_json_guard_delimited(const char *t, size_t len, size_t j)
{
        return j >= len || vfmig_json_guard_space(t[j]) || t[j] == ',' || t[j] == ':' || t[j] == '}' ||
               t[j] == ']';
}

/* Past the number, true, false or null that starts at t[i]; 0 when none. */
static inline size_t vfmig_json_guard_scalar(const char *t, size_t len, size_t i)
{
        static const char *const words[] = { "true", "false", "null" };
        size_t j = i;

        for (size_t w = 0; w < 3; w++) {
                size_t n = strlen(words[w]);
                if (len - i >= n && memcmp(t + i, words[w], n) == 0)
                        return vfmig_json_guard_delimited(t, len, i + n) ? i + n : 0;
        }
        if (j < len && t[j] == '-')
                j++;
        if (j < len && t[j] == '0')
                j++;
        else if (j < len && t[j] >= '1' && t[j] <= '9')
                while (j < len && t[j] >= '0' && t[j] <= '9')
                        j++;
        else
                return 0;
        if (j < len && t[j] == '.') {
                j++;
                if (j >= len || t[j] < '0' || t[j] > '9')
                        return 0;
                while (j < len && t[j] >= '0' && t[j] <= '9')
                        j++;
        }
        if (j < len && (t[j] == 'e' || t[j] == 'E')) {
                j++;
                if (j < len && (t[j] == '+' || t[j] == '-'))
                        j++;
                if (j >= len || t[j] < '0' || t[j] > '9')
                        return 0;
                while (j < len && t[j] >= '0' && t[j] <= '9')
                        j++;
        }
        return vfmig_json_guard_delimited(t, len, j) ? j : 0;
}

/*
 * false, with *bad (when not NULL) the offset of what is wrong, when t[0..len)
 * is not one JSON value as above; true otherwise (also when the value is
 * unfinished: json-glib refuses that itself).  The grammar between tokens
 * (a missing comma, a key that is not a string) is json-glib's to judge:
 * with JSON's tokens only, it cannot see a second value where this does not.
 */
static inline bool vfmig_json_guard_one_value(const char *t, size_t len, size_t *bad)
{
        size_t i = 0, depth = 0, where = 0;
        bool done = false;

        while (!done) {
                char c;

                while (i < len && vfmig_json_guard_space(t[i]))
                        i++;
                if (i >= len)
                        return true;
                c = t[i];
                if (c == '{' || c == '[') {
                        if (++depth > VFMIG_JSON_GUARD_DEPTH) {
                                where = i;
                                goto refuse;
                        }
                        i++;
                } else if (c == '}' || c == ']') {
                        if (depth == 0) {
                                where = i;
                                goto refuse;
                        }
                        i++;
                        done = --depth == 0;
                } else if (c == ',' || c == ':') {
                        if (depth == 0) {
                                where = i;
                                goto refuse;
                        }
                        i++;
                } else {
                        size_t end = c == '"' ? vfmig_json_guard_string(t, len, i, &where)
                                              : vfmig_json_guard_scalar(t, len, i);
                        if (end == 0) {
                                if (c != '"')
                                        where = i;
                                goto refuse;
                        }
                        if (end == SIZE_MAX)
                                return true;
                        i = end;
                        done = depth == 0;
                }
        }
        while (i < len && vfmig_json_guard_space(t[i]))
                i++;
        if (i < len) {
                where = i;
                goto refuse;
        }
        return true;
refuse:
        if (bad)
                *bad = where;
        return false;
}
