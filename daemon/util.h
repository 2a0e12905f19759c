/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * util.h — small helpers shared by every module: scope cleanup for file
 * descriptors and malloc'd memory, and validators for strings that arrive from
 * outside (bus arguments, host files, profiles).  No module state lives here.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void freep(void *p) { free(*(void **)p); }
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd)
{
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}
#define _cleanup_close_ _cleanup_(closep)

/* Hand ownership of *fd to the caller: returns it and leaves -1 behind. */
static inline int steal_fd(int *fd)
{
        int r = *fd;
        *fd = -1;
        return r;
}

static inline void *steal_ptr_impl(void **p)
{
        void *r = *p;
        *p = NULL;
        return r;
}
#define steal_ptr(p) steal_ptr_impl((void **)(p))

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

static inline bool streq_ptr(const char *a, const char *b)
{
        if (!a || !b)
                return a == b;
        while (*a && *a == *b)
                a++, b++;
        return *a == *b;
}

/*
 * A device name as the kernel spells it: a PCI address (0000:01:00.1) or an
 * mdev UUID.  1..VFMIG_NAME_MAX characters from [A-Za-z0-9:._-].
 */
bool vfmig_device_name_is_valid(const char *s);

/* Printable ASCII, no control characters, at most max bytes. */
bool vfmig_string_is_valid(const char *s, size_t max);

/* Like vfmig_string_is_valid, but newlines and tabs are allowed (descriptions). */
bool vfmig_text_is_valid(const char *s, size_t max);

/* "0000:01:00.1" */
bool vfmig_pci_address_is_valid(const char *s);

/* "8-4-4-4-12" hex UUID. */
bool vfmig_uuid_is_valid(const char *s);
