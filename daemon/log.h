/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * log.h — logging for vfmigd.  Under systemd (JOURNAL_STREAM names our
 * stderr) messages go to the journal with structured fields
 * (VFMIG_DEVICE=, VFMIG_RESERVATION=, VFMIG_JOB=); otherwise to stderr.
 * %m in a format prints strerror(errno); the *_errno variants set errno from
 * their (negative) error argument and return it, so
 *         return log_error_errno(r, "Failed to open %s: %m", path);
 * is the one idiom.
 */
#pragma once

#include <errno.h>
#include <syslog.h>

void log_set_max_level(int level);
int log_get_max_level(void);

/* object_field: e.g. "VFMIG_DEVICE" (or NULL); object: its value. */
void log_internal(int level, const char *object_field, const char *object,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static inline int log_errno_ret(int r) { return r < 0 ? r : -r; }

#define log_full_errno(level, err, ...)                                 \
        ({                                                              \
                int _e = (err);                                         \
                errno = _e < 0 ? -_e : _e;                              \
                log_internal((level), NULL, NULL, __VA_ARGS__);         \
                log_errno_ret(_e);                                      \
        })

#define log_debug(...)   log_internal(LOG_DEBUG, NULL, NULL, __VA_ARGS__)
#define log_info(...)    log_internal(LOG_INFO, NULL, NULL, __VA_ARGS__)
#define log_notice(...)  log_internal(LOG_NOTICE, NULL, NULL, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, NULL, NULL, __VA_ARGS__)
#define log_error(...)   log_internal(LOG_ERR, NULL, NULL, __VA_ARGS__)

#define log_warning_errno(err, ...) log_full_errno(LOG_WARNING, err, __VA_ARGS__)
#define log_error_errno(err, ...)   log_full_errno(LOG_ERR, err, __VA_ARGS__)

#define log_device(level, dev, ...) log_internal((level), "VFMIG_DEVICE", (dev), __VA_ARGS__)
