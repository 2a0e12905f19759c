/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* json-reader.c — see json-reader.h. */
#include <errno.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "json-reader.h"

static G_GNUC_NO_INLINE void *arena_grow(Arena *a, size_t n)
{
        size_t sz = MAX(n, ARENA_BLOCK);
        ArenaBlock *b = g_malloc(sizeof(ArenaBlock) + sz);

        b->prev = a->head;
        b->size = sz;
        a->head = b;
        a->p = b->data + n;
        a->left = sz - n;
        return b->data;
}

static inline void *arena_alloc(Arena *a, size_t n)
{
        void *r;

        n = (n + 7) & ~(size_t) 7;
        if (G_UNLIKELY(n > a->left))
                return arena_grow(a, n);
        r = a->p;
        a->p += n;
        a->left -= n;
        return r;
}

/* Everything allocated after a mark is given back: the memory is used again
 * for the next piece. */
typedef struct ArenaMark {
        ArenaBlock *head;
        char *p;
        size_t left;
} ArenaMark;

static ArenaMark arena_mark(const Arena *a)
{
        return (ArenaMark) { .head = a->head, .p = a->p, .left = a->left };
}

static void arena_release(Arena *a, ArenaMark m)
{
        ArenaBlock *keep = a->head;

        if (keep == m.head) {
                a->p = m.p;
                a->left = m.left;
                return;
        }
        /* A piece that did not fit where the mark was: keep its newest block
         * for the next pieces, from its start, rather than allocating and
         * freeing a block for each of them. */
        while (keep->prev != m.head) {
                ArenaBlock *b = keep->prev;
                keep->prev = b->prev;
                g_free(b);
        }
        a->p = keep->data;
        a->left = keep->size;
}

void arena_clear(Arena *a)
{
        while (a->head) {
                ArenaBlock *b = a->head;
                a->head = b->prev;
                g_free(b);
        }
        *a = (Arena) { 0 };
}

typedef struct JReader {
        const char *start, *end;        /* *end is the NUL after the text */
        char *p;
        Arena *arena;
        void **stack;                   /* children being collected (pointers) */
        size_t stack_len, stack_size;
        GString *buf;                   /* a string with escapes being decoded */
        char *error;                    /* "LINE:COL: Parse error: ..." */
        /* The elements of the top-level member stream_key, when an array, are
         * handed to on_element one by one as they are read and not kept
         * (the array reads as one of n elements without items): a file of
         * thousands of devices never holds more than one device's tree. */
        const char *stream_key;
        void (*on_element)(Jv *e, guint index, void *userdata);   /* e NULL: an array begins */
        void *userdata;
} JReader;

/* Bytes that end the plain run of a string: the quote, a backslash, control
 * characters (the NUL after the text among them) and non-ASCII.  (The
 * SSE2 scan tests the same bytes without the table.) */
static const guint8 string_stop[256] G_GNUC_UNUSED = {
        [0x00 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xff] = 1,
};
static const guint8 space[256] = { [' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1 };

static Jv *jr_fail(JReader *r, const char *what)
{
        guint line = 1, col = 0;

        if (r->error)
                return NULL;
        /* As json-glib counts: LINE from 1; COL the offending character's
         * place in its line from 1, or at the end of the text the number of
         * characters of the last line (0 right after a newline).  Strings
         * terminated in place changed a quote into a NUL, never a newline. */
        for (const char *q = r->start; q < r->p && q < r->end; q++) {
                if (*q == '\n')
                        line++, col = 0;
                else
                        col++;
        }
        if (r->p < r->end)
                col++;
        r->error = g_strdup_printf("%u:%u: Parse error: %s", line, col, what);
        return NULL;
}

#if defined(__SSE2__)
/* The first byte at or after q that ends a plain string run (string_stop):
 * 16 bytes a step.  Bytes 0x00-0x1f and 0x80-0xff are those below 0x20 as
 * signed chars.  Stops at the NUL after the text at the latest. */
static inline char *scan_string_run(char *q)
{
        const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), low = _mm_set1_epi8(0x20);

        for (;;) {
                __m128i v = _mm_loadu_si128((const __m128i *) q);
                __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                            _mm_cmplt_epi8(v, low));
                unsigned bits = (unsigned) _mm_movemask_epi8(stop);

                if (bits)
                        return q + __builtin_ctz(bits);
                q += 16;
        }
}

/* The first byte at or after q that is not a space. */
static inline char *skip_spaces(char *q)
{
        const __m128i sp = _mm_set1_epi8(' ');

        for (;;) {
                unsigned bits = (unsigned) _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *) q), sp));

                if (bits != 0xffff)
                        return q + __builtin_ctz(~bits);
                q += 16;
        }
}
#else
static inline char *scan_string_run(char *q)
{
        while (!string_stop[(guint8) *q])
                q++;
        return q;
}

static inline char *skip_spaces(char *q)
{
        while (*q == ' ')
                q++;
        return q;
}
#endif

static inline void jr_space(JReader *r)
{
        char *p = r->p;

        /* Pretty-printed files: a newline, then an indentation of spaces. */
        if (*p == '\n')
                p = skip_spaces(p + 1);
        while (space[(guint8) *p])
                p++;
        r->p = p;
}

static inline void jr_push(JReader *r, void *v)
{
        if (G_UNLIKELY(r->stack_len == r->stack_size)) {
                r->stack_size = MAX(r->stack_size * 2, (size_t) 64);
                r->stack = g_renew(void *, r->stack, r->stack_size);
        }
        r->stack[r->stack_len++] = v;
}

static inline Jv *jv_new(JReader *r, JvType t)
{
        Jv *v = arena_alloc(r->arena, sizeof(Jv));

        *v = (Jv) { .type = t };
        return v;
}

static int hex4(const char *p)
{
        int v = 0;

        for (int i = 0; i < 4; i++) {
                int c = g_ascii_xdigit_value(p[i]);
                if (c < 0)
                        return -1;
                v = v * 16 + c;
        }
        return v;
}

/* A string that is not plain printable ASCII: run is its first character.
 * Without escapes it is still terminated in place; with them it is decoded
 * into the arena (a decoded "\n" must not land in the text, whose newlines
 * locate errors). */
static G_GNUC_NO_INLINE const char *jr_string_slow(JReader *r, char *run)
{
        char *q = run, *first = run, *out;
        bool high = false, escaped = false;

        g_string_truncate(r->buf, 0);
        for (;;) {
                unsigned char c;

                if (q >= r->end)
                        return r->p = q, jr_fail(r, "unterminated string"), NULL;
                c = (unsigned char) *q;
                if (c == '"')
                        break;
                if (c < 0x20)
                        return r->p = q, jr_fail(r, "control character in a string"), NULL;
                if (c >= 0x80)
                        high = true;
                if (c != '\\') {
                        q++;
                        continue;
                }
                escaped = true;
                g_string_append_len(r->buf, run, q - run);
                if (q + 1 >= r->end)
                        return r->p = q, jr_fail(r, "unterminated string"), NULL;
                switch (q[1]) {
                case '"': g_string_append_c(r->buf, '"'); break;
                case '\\': g_string_append_c(r->buf, '\\'); break;
                case '/': g_string_append_c(r->buf, '/'); break;
                case 'b': g_string_append_c(r->buf, '\b'); break;
                case 'f': g_string_append_c(r->buf, '\f'); break;
                case 'n': g_string_append_c(r->buf, '\n'); break;
                case 'r': g_string_append_c(r->buf, '\r'); break;
                case 't': g_string_append_c(r->buf, '\t'); break;
                case 'u': {
                        int u = r->end - q >= 6 ? hex4(q + 2) : -1;
                        gunichar ch;
                        if (u < 0)
                                return r->p = q, jr_fail(r, "bad \\u escape"), NULL;
                        ch = (gunichar) u;
                        if (u >= 0xd800 && u < 0xdc00) {
                                int lo = r->end - q >= 12 && q[6] == '\\' && q[7] == 'u' ? hex4(q + 8) : -1;
                                if (lo < 0xdc00 || lo > 0xdfff)
                                        return r->p = q, jr_fail(r, "unpaired surrogate in a \\u escape"), NULL;
                                ch = 0x10000 + (((gunichar) u - 0xd800) << 10) + ((gunichar) lo - 0xdc00);
                                q += 6;
                        } else if (u >= 0xdc00 && u <= 0xdfff)
                                return r->p = q, jr_fail(r, "unpaired surrogate in a \\u escape"), NULL;
                        if (ch == 0)
                                return r->p = q, jr_fail(r, "\\u0000 in a string"), NULL;
                        g_string_append_unichar(r->buf, ch);
                        q += 4;
                        break;
                }
                default:
                        return r->p = q, jr_fail(r, "unknown escape in a string"), NULL;
                }
                q += 2;
                run = q;
        }
        if (!escaped) {
                if (high && !g_utf8_validate_len(first, (gsize) (q - first), NULL))
                        return r->p = first, jr_fail(r, "a string is not valid UTF-8"), NULL;
                *q = '\0';
                r->p = q + 1;
                return first;
        }
        g_string_append_len(r->buf, run, q - run);
        if (high && !g_utf8_validate_len(r->buf->str, r->buf->len, NULL))
                return r->p = first, jr_fail(r, "a string is not valid UTF-8"), NULL;
        r->p = q + 1;
        out = arena_alloc(r->arena, r->buf->len + 1);
        memcpy(out, r->buf->str, r->buf->len + 1);
        return out;
}

/* At the opening quote.  The decoded text, NUL-terminated. */
static inline const char *jr_string(JReader *r)
{
        char *run = r->p + 1, *q = scan_string_run(run);

        /* The usual case: printable ASCII up to the closing quote. */
        if (G_LIKELY(*q == '"')) {
                *q = '\0';
                r->p = q + 1;
                return run;
        }
        return jr_string_slow(r, run);
}

static Jv *jr_number(JReader *r)
{
        const char *q = r->p, *digits;
        bool real = false;
        Jv *v;

        if (q < r->end && *q == '-')
                q++;
        digits = q;
        if (q < r->end && *q == '0')
                q++;
        else
                while (q < r->end && g_ascii_isdigit(*q))
                        q++;
        if (q == digits)
                return jr_fail(r, "unexpected character");
        if (q < r->end && *q == '.') {
                const char *f = ++q;
                real = true;
                while (q < r->end && g_ascii_isdigit(*q))
                        q++;
                if (q == f)
                        return r->p = (char *) q, jr_fail(r, "a number needs digits after the point");
        }
        if (q < r->end && (*q == 'e' || *q == 'E')) {
                const char *e;
                real = true;
                q++;
                if (q < r->end && (*q == '+' || *q == '-'))
                        q++;
                e = q;
                while (q < r->end && g_ascii_isdigit(*q))
                        q++;
                if (q == e)
                        return r->p = (char *) q, jr_fail(r, "a number needs digits in its exponent");
        }
        if (!real && q - digits <= 18) {
                /* at most 18 digits: fits without overflow */
                gint64 x = 0;
                for (const char *c = digits; c < q; c++)
                        x = x * 10 + (*c - '0');
                v = jv_new(r, JV_INT);
                v->i = *r->p == '-' ? -x : x;
                r->p = (char *) q;
                return v;
        }
        {
                g_autofree char *text = g_strndup(r->p, q - r->p);
                char *end = NULL;

                errno = 0;
                if (real) {
                        v = jv_new(r, JV_DOUBLE);
                        v->d = g_ascii_strtod(text, &end);
                } else {
                        v = jv_new(r, JV_INT);
                        v->i = g_ascii_strtoll(text, &end, 10);
                }
                if (errno == ERANGE || !end || *end)
                        return jr_fail(r, "number out of range");
        }
        r->p = (char *) q;
        return v;
}

static bool jr_word(JReader *r, const char *w)
{
        size_t n = strlen(w);

        if ((size_t) (r->end - r->p) < n || memcmp(r->p, w, n) != 0)
                return false;
        r->p += n;
        return true;
}

static Jv *jr_value(JReader *r, guint depth);

static Jv *jr_array(JReader *r, guint depth)
{
        size_t mark = r->stack_len;
        Jv *v;

        r->p++;
        jr_space(r);
        if (*r->p == ']')
                r->p++;
        else
                for (;;) {
                        Jv *e = jr_value(r, depth + 1);
                        if (!e)
                                return NULL;
                        jr_push(r, e);
                        jr_space(r);
                        if (*r->p == ',') {
                                r->p++;
                                continue;
                        }
                        if (*r->p == ']') {
                                r->p++;
                                break;
                        }
                        return jr_fail(r, "expected ',' or ']' in an array");
                }
        v = jv_new(r, JV_ARRAY);
        v->n = (guint) (r->stack_len - mark);
        v->items = arena_alloc(r->arena, MAX(v->n, 1u) * sizeof(Jv *));
        if (v->n > 0)
                memcpy(v->items, r->stack + mark, v->n * sizeof(Jv *));
        r->stack_len = mark;
        return v;
}

static Jv *jr_array_streamed(JReader *r, guint depth)
{
        guint n = 0;
        Jv *v;

        r->on_element(NULL, 0, r->userdata);   /* an array begins (again) */
        r->p++;
        jr_space(r);
        if (*r->p == ']')
                r->p++;
        else
                for (;;) {
                        ArenaMark mark = arena_mark(r->arena);
                        Jv *e = jr_value(r, depth + 1);
                        if (!e)
                                return NULL;
                        r->on_element(e, n++, r->userdata);
                        arena_release(r->arena, mark);
                        jr_space(r);
                        if (*r->p == ',') {
                                r->p++;
                                continue;
                        }
                        if (*r->p == ']') {
                                r->p++;
                                break;
                        }
                        return jr_fail(r, "expected ',' or ']' in an array");
                }
        v = jv_new(r, JV_ARRAY);
        v->n = n;
        v->items = NULL;   /* handed out already */
        return v;
}

static Jv *jr_object(JReader *r, guint depth)
{
        size_t mark = r->stack_len;
        Jv *v;

        r->p++;
        jr_space(r);
        if (*r->p == '}')
                r->p++;
        else
                for (;;) {
                        const char *key;
                        Jv *e;

                        if (*r->p != '"')
                                return jr_fail(r, "expected a member name in quotes");
                        key = jr_string(r);
                        if (!key)
                                return NULL;
                        jr_space(r);
                        if (*r->p != ':')
                                return jr_fail(r, "expected ':' after a member name");
                        r->p++;
                        jr_space(r);
                        if (depth == 0 && r->on_element && *r->p == '[' && strcmp(key, r->stream_key) == 0)
                                e = jr_array_streamed(r, depth + 1);
                        else
                                e = jr_value(r, depth + 1);
                        if (!e)
                                return NULL;
                        jr_push(r, (char *) key);
                        jr_push(r, e);
                        jr_space(r);
                        if (*r->p == ',') {
                                r->p++;
                                jr_space(r);
                                continue;
                        }
                        if (*r->p == '}') {
                                r->p++;
                                break;
                        }
                        return jr_fail(r, "expected ',' or '}' in an object");
                }
        v = jv_new(r, JV_OBJECT);
        v->n = (guint) ((r->stack_len - mark) / 2);
        v->o.keys = arena_alloc(r->arena, MAX(v->n, 1u) * sizeof(char *));
        v->o.vals = arena_alloc(r->arena, MAX(v->n, 1u) * sizeof(Jv *));
        for (guint i = 0; i < v->n; i++) {
                v->o.keys[i] = r->stack[mark + 2 * i];
                v->o.vals[i] = r->stack[mark + 2 * i + 1];
        }
        r->stack_len = mark;
        return v;
}

static Jv *jr_value(JReader *r, guint depth)
{
        Jv *v;

        if (depth > JV_DEPTH_MAX)
                return jr_fail(r, "nested too deeply");
        jr_space(r);
        if (r->p >= r->end)
                return jr_fail(r, "unexpected end of file");
        switch (*r->p) {
        case '{':
                return jr_object(r, depth);
        case '[':
                return jr_array(r, depth);
        case '"': {
                const char *str = jr_string(r);
                if (!str)
                        return NULL;
                v = jv_new(r, JV_STRING);
                v->s = str;
                return v;
        }
        case 't':
        case 'f':
                v = jv_new(r, JV_BOOL);
                v->b = *r->p == 't';
                if (!jr_word(r, v->b ? "true" : "false"))
                        return jr_fail(r, "unexpected word");
                return v;
        case 'n':
                if (!jr_word(r, "null"))
                        return jr_fail(r, "unexpected word");
                return jv_new(r, JV_NULL);
        default:
                if (*r->p == '-' || g_ascii_isdigit(*r->p))
                        return jr_number(r);
                return jr_fail(r, "unexpected character");
        }
}

/* The whole text as one value, or NULL with *error.  text[len] must be a
 * NUL followed by JV_PAD readable bytes, and the text is changed (strings
 * are terminated in place). */
Jv *jv_parse(char *text, size_t len, Arena *arena, const char *stream_key,
                    void (*on_element)(Jv *e, guint index, void *userdata), void *userdata, char **error)
{
        g_autoptr(GString) buf = g_string_sized_new(256);
        JReader r = { .start = text, .p = text, .end = text + len, .arena = arena, .buf = buf,
                      .stream_key = stream_key, .on_element = on_element, .userdata = userdata };
        Jv *v;

        g_assert(text[len] == '\0');
        if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
                r.p += 3;   /* a UTF-8 byte order mark */
        v = jr_value(&r, 0);
        if (v) {
                jr_space(&r);
                if (r.p < r.end)
                        v = jr_fail(&r, "unexpected text after the end of the document");
        }
        if (!v)
                *error = g_steal_pointer(&r.error);
        g_free(r.stack);
        return v;
}

/* The member's value (the last one of that name), or NULL. */
Jv *jv_member(const Jv *o, const char *key)
{
        for (guint i = o->n; i-- > 0;)
                if (o->o.keys[i][0] == key[0] && strcmp(o->o.keys[i], key) == 0)
                        return o->o.vals[i];
        return NULL;
}


bool jv_check(const char *text, size_t len, char **error)
{
        g_autofree char *copy = NULL, *why = NULL;
        g_auto(Arena) arena = { 0 };

        if (memchr(text, '\0', len)) {
                if (error)
                        *error = g_strdup("a NUL byte in the text");
                return false;
        }
        copy = g_malloc(len + 1 + JV_PAD);
        memcpy(copy, text, len);
        memset(copy + len, 0, 1 + JV_PAD);
        if (jv_parse(copy, len, &arena, NULL, NULL, NULL, &why))
                return true;
        if (error)
                *error = g_steal_pointer(&why);
        return false;
}
