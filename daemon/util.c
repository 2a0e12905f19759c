/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <ctype.h>
#include <string.h>

#include "util.h"
#include "vfmig-names.h"

static bool printable(const char *s, size_t max, bool multiline)
{
        size_t n = 0;

        if (!s)
                return false;
        for (; *s; s++, n++) {
                unsigned char c = (unsigned char) *s;
                if (n >= max)
                        return false;
                if (multiline && (c == '\n' || c == '\t'))
                        continue;
                if (c < 0x20 || c == 0x7f)
                        return false;
        }
        return true;
}

bool vfmig_string_is_valid(const char *s, size_t max)
{
        return printable(s, max, false);
}

bool vfmig_text_is_valid(const char *s, size_t max)
{
        return printable(s, max, true);
}

bool vfmig_device_name_is_valid(const char *s)
{
        size_t n = 0;

        if (!s || !*s)
                return false;
        for (; *s; s++, n++) {
                unsigned char c = (unsigned char) *s;
                if (n >= VFMIG_NAME_MAX)
                        return false;
                if (!isalnum(c) && c != ':' && c != '.' && c != '_' && c != '-')
                        return false;
        }
        return true;
}

static bool hex_run(const char **p, size_t n)
{
        for (size_t i = 0; i < n; i++, (*p)++)
                if (!isxdigit((unsigned char) **p))
                        return false;
        return true;
}

bool vfmig_pci_address_is_valid(const char *s)
{
        if (!s)
                return false;
        if (!hex_run(&s, 4) || *s++ != ':')
                return false;
        if (!hex_run(&s, 2) || *s++ != ':')
                return false;
        if (!hex_run(&s, 2) || *s++ != '.')
                return false;
        return *s >= '0' && *s <= '7' && s[1] == '\0';
}

bool vfmig_uuid_is_valid(const char *s)
{
        static const size_t groups[] = { 8, 4, 4, 4, 12 };

        if (!s)
                return false;
        for (size_t i = 0; i < ELEMENTSOF(groups); i++) {
                if (!hex_run(&s, groups[i]))
                        return false;
                if (i + 1 < ELEMENTSOF(groups) && *s++ != '-')
                        return false;
        }
        return *s == '\0';
}
