/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * fuzz-stream — the migration stream parser on arbitrary bytes.  The first
 * input byte picks the segmentation (and the forward or reply parser); the
 * parser must return an event or a typed error with a message, never read
 * past what it asked for, and keep its buffer within one record.  After the
 * forward stream's END the rest goes to a commit parser, as a target reads
 * the source's COMMIT.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* At the forward stream's END: the parser for what may follow (the COMMIT). */
static VfmigStreamParser *after_end(VfmigStreamParser *p, const VfmigStreamEvent *ev, bool *forward)
{
        VfmigStreamParser *c;

        if (!*forward || ev->type != VFMIG_STREAM_EVENT_END)
                return p;
        c = vfmig_stream_parser_new_commit(p);
        if (!c)
                __builtin_trap();
        vfmig_stream_parser_free(p);
        *forward = false;
        return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        VfmigStreamParser *p;
        size_t at = 1, chunk;
        bool forward;
        int r = 0;

        if (size < 1)
                return 0;
        chunk = (data[0] & 0x7f) + 1;
        forward = !(data[0] & 0x80);
        p = forward ? vfmig_stream_parser_new() : vfmig_stream_parser_new_reply();

        while (at < size && r >= 0) {
                VfmigStreamEvent ev;
                size_t room, k;
                void *dst;

                if (chunk == 128) {     /* the copying interface */
                        ssize_t n = vfmig_stream_parser_push(p, data + at, size - at, &ev);

                        if (n < 0) {
                                r = (int) n;
                                break;
                        }
                        if (n == 0)
                                __builtin_trap();
                        at += (size_t) n;
                        p = after_end(p, &ev, &forward);
                        continue;
                }
                dst = vfmig_stream_parser_space(p, &room);
                if (!dst)
                        break;
                if (room == 0 || room > VFMIG_STREAM_MAX_DATA + VFMIG_STREAM_RECORD_TRAILER_SIZE)
                        __builtin_trap();
                k = room < chunk ? room : chunk;
                if (k > size - at)
                        k = size - at;
                memcpy(dst, data + at, k);
                at += k;
                r = vfmig_stream_parser_commit(p, k, &ev);
                if (r == 0 && ev.type == VFMIG_STREAM_EVENT_DATA && (ev.size == 0 || ev.size > VFMIG_STREAM_MAX_DATA))
                        __builtin_trap();
                if (r == 0)
                        p = after_end(p, &ev, &forward);
        }
        if (r >= 0)
                r = vfmig_stream_parser_finish(p);
        if (r < 0 && (!vfmig_stream_parser_error_message(p) ||
                      (r != -EBADMSG && r != -EPROTONOSUPPORT && r != -EMSGSIZE && r != -EPROTO && r != -ENODATA)))
                __builtin_trap();
        vfmig_stream_parser_free(p);
        return 0;
}
