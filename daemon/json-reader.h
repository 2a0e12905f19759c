/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <glib.h>

/*
 * json-reader — a small JSON reader.
 *
 * Host files of thousands of devices are read at every start: json-glib's
 * parser spent most of the start of a 4096-target host building and freeing
 * its tree.  This reads RFC 8259 JSON into a compact tree held in one arena
 * (freed at once), strictly: UTF-8 only, no control characters in strings,
 * integers that fit 64 bits, nesting at most JV_DEPTH_MAX deep.  A key given
 * twice in one object: the last value counts (as with json-glib).
 *
 * The text is read in place: it must be writable, end in a NUL, and have
 * JV_PAD readable bytes after that NUL.  A string without escapes, nearly
 * every one, is not copied: its closing quote becomes its terminating NUL.
 * The NUL after the text stops every scan, so the hot loops need no bounds
 * check of their own; the padding lets them look at 16 bytes at a time
 * without reading past the buffer.
 */
#define JV_DEPTH_MAX 64
#define JV_PAD 16

typedef enum { JV_NULL, JV_BOOL, JV_INT, JV_DOUBLE, JV_STRING, JV_ARRAY, JV_OBJECT } JvType;

typedef struct Jv Jv;
struct Jv {
        JvType type;
        guint n;                        /* ARRAY: items, OBJECT: members */
        union {
                bool b;
                gint64 i;
                double d;
                const char *s;
                Jv **items;             /* ARRAY */
                struct {
                        const char **keys;
                        Jv **vals;
                } o;                    /* OBJECT, in file order */
        };
};

#define ARENA_BLOCK ((size_t) 64 * 1024)

typedef struct ArenaBlock ArenaBlock;
struct ArenaBlock {
        ArenaBlock *prev;
        size_t size;                    /* of data */
        char data[];
};

typedef struct Arena {
        ArenaBlock *head;               /* the newest block */
        char *p;
        size_t left;
} Arena;

void arena_clear(Arena *a);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Arena, arena_clear)

/*
 * The whole text as one value, or NULL with *error ("LINE:COL: Parse
 * error: ...", as json-glib words it).  text[len] must be a NUL followed by
 * JV_PAD readable bytes, and the text is changed (strings are terminated in
 * place); the tree lives in arena and points into text.  stream_key (may be
 * NULL): the elements of that top-level array member are handed to
 * on_element one by one and not kept.
 */
Jv *jv_parse(char *text, size_t len, Arena *arena, const char *stream_key,
             void (*on_element)(Jv *e, guint index, void *userdata), void *userdata, char **error);

/*
 * Outside JSON that json-glib is about to parse: true when text[0..len) is
 * one value as this reader reads it (RFC 8259, UTF-8, at most JV_DEPTH_MAX
 * deep, nothing after it, no NUL byte); else false with *error (when not
 * NULL) as jv_parse() words it.  json-glib 1.6 (Debian 12) reads more than
 * JSON (comments, single quotes, hexadecimal and octal numbers, short \u
 * escapes), leaks the nodes of a second value after a complete one and a
 * broken surrogate pair's buffer, and recurses once per nesting level; text
 * this accepts reaches none of that.  The text is copied, not changed.
 */
bool jv_check(const char *text, size_t len, char **error);

/* The member's value (the last one of that name), or NULL. */
Jv *jv_member(const Jv *o, const char *key);
