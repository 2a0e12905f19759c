/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "log.h"

static int max_level = LOG_INFO;

void log_set_max_level(int level) { max_level = level; }
int log_get_max_level(void) { return max_level; }

/* True when stderr is the journal stream systemd connected us to. */
static bool stderr_is_journal(void)
{
        static int cached = -1;
        const char *e;
        unsigned long long dev, ino;
        struct stat st;

        if (cached >= 0)
                return cached;
        e = getenv("JOURNAL_STREAM");
        cached = e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 &&
                 fstat(STDERR_FILENO, &st) == 0 &&
                 st.st_dev == (dev_t) dev && st.st_ino == (ino_t) ino;
        return cached;
}

void log_internal(int level, const char *object_field, const char *object,
                  const char *fmt, ...)
{
        char msg[2048];
        va_list ap;

        if (level > max_level)
                return;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);   /* glibc expands %m here */
        va_end(ap);

        if (stderr_is_journal()) {
                if (object_field && object)
                        sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", level,
                                        "SYSLOG_IDENTIFIER=vfmigd",
                                        "%s=%s", object_field, object, NULL);
                else
                        sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", level,
                                        "SYSLOG_IDENTIFIER=vfmigd", NULL);
                return;
        }
        if (object_field && object)
                fprintf(stderr, "vfmigd: %s: %s\n", object, msg);
        else
                fprintf(stderr, "vfmigd: %s\n", msg);
}
