/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif


#include "sim-host.h"
#include "util.h"
#include "vfmig-names.h"

/* ---- a small JSON reader --------------------------------------------------------
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

static void arena_clear(Arena *a)
{
        while (a->head) {
                ArenaBlock *b = a->head;
                a->head = b->prev;
                g_free(b);
        }
        *a = (Arena) { 0 };
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Arena, arena_clear)

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
static Jv *jv_parse(char *text, size_t len, Arena *arena, const char *stream_key,
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
static Jv *jv_member(const Jv *o, const char *key)
{
        for (guint i = o->n; i-- > 0;)
                if (o->o.keys[i][0] == key[0] && strcmp(o->o.keys[i], key) == 0)
                        return o->o.vals[i];
        return NULL;
}

typedef struct Ctx {
        const char *file;
        char *error;
        GHashTable *templates;          /* SimHost.templates being filled */
        /* share_attributes: a device of the same attributes as the one
         * before it (nearly all: the functions of one card follow each other)
         * shares its table, last_attributes; last_pairs: the names and values
         * that made it, in file order (2 * last_n). */
        bool share_attributes;
        GHashTable *last_attributes;
        char **last_pairs;
        guint last_n;
} Ctx;

/* What an instance created from one PARENT/TYPE is like (sim_host_new_instance()). */
typedef struct SimInstanceTemplate {
        char *driver;                   /* of an instance listed in the file; NULL: none listed */
        bool spec_set;                  /* spec is known (the type's "migration", or a listed instance's) */
        bool spec_from_type;            /* ... from the type's own "migration" object */
        SimDeviceSpec *spec;            /* NULL with spec_set: no migration support */
} SimInstanceTemplate;

static bool fail(Ctx *c, const char *where, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static bool fail(Ctx *c, const char *where, const char *fmt, ...)
{
        g_autofree char *reason = NULL;
        va_list ap;

        if (c->error)
                return false;
        va_start(ap, fmt);
        reason = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        c->error = g_strdup_printf("%s: %s: %s", c->file, where, reason);
        return false;
}

/*
 * The members of one object, each looked up once: v[i] is the value of the
 * allowed name keys[i] (the last one given), or NULL.  Looking every key up
 * by name, and every name up in the allowed list, was most of the cost of a
 * device.
 */
#define MEMBERS_MAX 16

typedef struct Members {
        const char *const *keys;        /* NULL-terminated, at most MEMBERS_MAX */
        const Jv *v[MEMBERS_MAX];
} Members;

/* A member of another name than keys[] is refused: the first one in the file. */
static bool bind_members(Ctx *c, const char *where, const Jv *o, const char *const *keys, Members *m)
{
        guint nk = 0, next = 0;

        m->keys = keys;
        while (keys[nk])
                nk++;
        g_assert(nk <= MEMBERS_MAX);
        memset(m->v, 0, sizeof m->v);
        for (guint i = 0; i < o->n; i++) {
                const char *k = o->o.keys[i];
                guint t = 0, j = next;

                /* Files list the members in about the order of keys[]: the
                 * search starts after the last one found. */
                for (; t < nk; t++, j = j + 1 == nk ? 0 : j + 1)
                        if (keys[j][0] == k[0] && strcmp(keys[j], k) == 0)
                                break;
                if (t == nk)
                        return fail(c, where, "unknown key \"%s\"", k);
                m->v[j] = o->o.vals[i];
                next = j + 1 == nk ? 0 : j + 1;
        }
        return true;
}

/* A string member, validated and borrowed from the tree (NULL when absent). */
static bool get_text(Ctx *c, const char *where, const char *key, const Jv *n,
                     bool required, size_t max, bool multiline, const char **out)
{
        const char *s;

        if (!n) {
                if (required)
                        return fail(c, where, "missing required key \"%s\"", key);
                return true;
        }
        if (n->type != JV_STRING)
                return fail(c, where, "\"%s\" must be a string", key);
        s = n->s;
        if (!(multiline ? vfmig_text_is_valid(s, max) : vfmig_string_is_valid(s, max)))
                return fail(c, where, "\"%s\" must be printable text of at most %zu bytes", key, max);
        *out = s;
        return true;
}

/* The same, copied into *out (replacing it) when present. */
static bool get_string_full(Ctx *c, const char *where, const Members *m, guint k,
                            bool required, size_t max, bool multiline, char **out)
{
        const char *s = NULL;

        if (!get_text(c, where, m->keys[k], m->v[k], required, max, multiline, &s))
                return false;
        if (s) {
                g_free(*out);
                *out = g_strdup(s);
        }
        return true;
}

static bool get_string(Ctx *c, const char *where, const Members *m, guint k,
                       bool required, size_t max, char **out)
{
        return get_string_full(c, where, m, k, required, max, false, out);
}

static bool get_str(Ctx *c, const char *where, const Members *m, guint k,
                    bool required, size_t max, const char **out)
{
        return get_text(c, where, m->keys[k], m->v[k], required, max, false, out);
}

/* PCI IDs are written as in sysfs: "0x15b3". */
/* A hex digit's value plus one, 0 for any other byte (a table: the library
 * call per digit was a third of the cost of an id). */
static const guint8 hex_digit[256] = {
        ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
        ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
        ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

static bool get_hex(Ctx *c, const char *where, const Members *m, guint k,
                    bool required, uint32_t max, uint32_t *out)
{
        const char *key = m->keys[k];
        const Jv *n = m->v[k];
        const char *s;
        guint64 v = 0;
        size_t len;

        if (n && n->type == JV_STRING && n->s[0] == '0' && n->s[1] == 'x') {
                /* The usual "0x15b3": up to 8 hex digits and nothing else
                 * is valid exactly when it is not above max; anything
                 * else takes the checks below, with their messages. */
                size_t i = 2;

                for (s = n->s; i < 10 && hex_digit[(guint8) s[i]]; i++)
                        v = v * 16 + (guint64) (hex_digit[(guint8) s[i]] - 1);
                if (i > 2 && s[i] == '\0' && v <= max) {
                        *out = (uint32_t) v;
                        return true;
                }
                v = 0;
        }
        if (!n) {
                if (required)
                        return fail(c, where, "missing required key \"%s\"", key);
                return true;
        }
        if (n->type != JV_STRING)
                return fail(c, where, "\"%s\" must be a hex string like \"0x15b3\"", key);
        s = n->s;
        if (!vfmig_string_is_valid(s, 16))
                return fail(c, where, "\"%s\" must be printable text of at most %d bytes", key, 16);
        if (s[0] != '0' || s[1] != 'x' || !s[2])
                return fail(c, where, "\"%s\" must be a hex string like \"0x15b3\"", key);
        len = strlen(s + 2);
        for (size_t i = 2; s[i]; i++) {
                int d = g_ascii_xdigit_value(s[i]);
                if (d < 0 || len > 16 || v > max)
                        return fail(c, where, "\"%s\" = \"%s\" is not a hex number <= 0x%x", key, s, max);
                v = v * 16 + (guint64) d;
        }
        if (v > max)
                return fail(c, where, "\"%s\" = \"%s\" is not a hex number <= 0x%x", key, s, max);
        *out = (uint32_t) v;
        return true;
}

static bool get_int(Ctx *c, const char *where, const Members *m, guint k,
                    gint64 min, gint64 max, gint64 *out)
{
        const char *key = m->keys[k];
        const Jv *n = m->v[k];
        gint64 v;

        if (!n)
                return true;
        if (n->type != JV_INT)
                return fail(c, where, "\"%s\" must be an integer", key);
        v = n->i;
        if (v < min || v > max)
                return fail(c, where, "\"%s\" = %" G_GINT64_FORMAT " is out of range [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "]",
                            key, v, min, max);
        *out = v;
        return true;
}

static bool get_typed(Ctx *c, const char *where, const Members *m, guint k, JvType type, const char *what,
                      const Jv **out)
{
        const Jv *n = m->v[k];

        *out = NULL;
        if (!n)
                return true;
        if (n->type != type)
                return fail(c, where, "\"%s\" must be %s", m->keys[k], what);
        *out = n;
        return true;
}

static bool get_object(Ctx *c, const char *where, const Members *m, guint k, const Jv **out)
{
        return get_typed(c, where, m, k, JV_OBJECT, "an object", out);
}

static bool get_array(Ctx *c, const char *where, const Members *m, guint k, const Jv **out)
{
        return get_typed(c, where, m, k, JV_ARRAY, "an array", out);
}

static bool get_bool(Ctx *c, const char *where, const Members *m, guint k, bool *out)
{
        const Jv *n = m->v[k];

        if (!n)
                return true;
        if (n->type != JV_BOOL)
                return fail(c, where, "\"%s\" must be true or false", m->keys[k]);
        *out = n->b;
        return true;
}

/* The attributes, validated, as a table (a reference to it): the one of the
 * device before, when it has the same. */
static GHashTable *parse_attributes(Ctx *c, const char *where, const Jv *attrs)
{
        GHashTable *t;
        guint n = attrs ? attrs->n : 0;

        if (c->share_attributes && c->last_attributes && n == c->last_n) {
                /* The same members in the same order make the same table
                 * (and were found valid then). */
                guint i = 0;

                for (; i < n; i++) {
                        const Jv *v = attrs->o.vals[i];
                        if (v->type != JV_STRING || strcmp(attrs->o.keys[i], c->last_pairs[2 * i]) != 0 ||
                            strcmp(v->s, c->last_pairs[2 * i + 1]) != 0)
                                break;
                }
                if (i == n)
                        return g_hash_table_ref(c->last_attributes);
        }
        for (guint i = 0; i < n; i++) {
                const char *name = attrs->o.keys[i];
                const Jv *val = jv_member(attrs, name);   /* the last of that name */

                if (!vfmig_device_name_is_valid(name) || val->type != JV_STRING ||
                    !vfmig_string_is_valid(val->s, 256)) {
                        g_autofree char *w = g_strdup_printf("%s.attributes", where);
                        const char *v = NULL;
                        if (!vfmig_device_name_is_valid(name))
                                return fail(c, w, "attribute name \"%s\" is not valid", name), NULL;
                        return get_text(c, w, name, val, true, 256, false, &v), NULL;
                }
        }
        t = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        for (guint i = 0; i < n; i++) {
                const char *name = attrs->o.keys[i];
                g_hash_table_replace(t, g_strdup(name), g_strdup(jv_member(attrs, name)->s));
        }
        if (c->share_attributes) {
                g_clear_pointer(&c->last_attributes, g_hash_table_unref);
                g_strfreev(c->last_pairs);
                c->last_attributes = g_hash_table_ref(t);
                c->last_pairs = g_new(char *, 2 * n + 1);
                for (guint i = 0; i < n; i++) {
                        const Jv *v = attrs->o.vals[i];
                        c->last_pairs[2 * i] = g_strdup(attrs->o.keys[i]);
                        /* a name given again later: this value does not count, and
                         * may be no string (the later one always is) */
                        c->last_pairs[2 * i + 1] = g_strdup(v->type == JV_STRING ? v->s : "\x01");
                }
                c->last_pairs[2 * n] = NULL;
                c->last_n = n;
        }
        return t;
}

static void sim_spec_free(void *p)
{
        g_free(p);
}

static SimDeviceSpec *sim_spec_copy(const SimDeviceSpec *s)
{
        SimDeviceSpec *n;

        if (!s)
                return NULL;
        n = g_new0(SimDeviceSpec, 1);
        *n = *s;
        n->config.stream_type = n->stream_type;
        n->config.name = NULL;
        return n;
}

static void template_free(void *p)
{
        SimInstanceTemplate *t = p;

        if (!t)
                return;
        g_free(t->driver);
        sim_spec_free(t->spec);
        g_free(t);
}

static SimInstanceTemplate *template_get(GHashTable *templates, const char *parent, const char *type_id)
{
        g_autofree char *key = g_strdup_printf("%s/%s", parent, type_id);
        SimInstanceTemplate *t = g_hash_table_lookup(templates, key);

        if (!t) {
                t = g_new0(SimInstanceTemplate, 1);
                g_hash_table_insert(templates, g_steal_pointer(&key), t);
        }
        return t;
}

/* "DWHERE.migration", as long as it fits. */
static void where_append(char *buf, size_t size, const char *where, const char *suffix)
{
        size_t a = MIN(strlen(where), size - 1), b = MIN(strlen(suffix), size - 1 - a);

        memcpy(buf, where, a);
        memcpy(buf + a, suffix, b);
        buf[a + b] = '\0';
}

/* The simulated device's behaviour: the "migration" object and "open-error"
 * (open_error_node: its value, or NULL). */
static bool parse_sim_spec(Ctx *c, const char *dwhere, const Jv *open_error_node, const Jv *mig, VfmigDevice *d)
{
        static const char *const keys[] = {
                "flags", "dma-logging", "data-size", "state-size", "dirty-rate",
                "stream-type", "stream-version", "fill-seed", "comment", NULL
        };
        enum { FLAGS, DMA_LOGGING, DATA_SIZE, STATE_SIZE, DIRTY_RATE, STREAM_TYPE, STREAM_VERSION, FILL_SEED };
        static const struct { const char *name; uint64_t bit; } flag_names[] = {
                { "stop-copy", VFMIG_MIGRATION_STOP_COPY },
                { "p2p", VFMIG_MIGRATION_P2P },
                { "pre-copy", VFMIG_MIGRATION_PRE_COPY },
        };
        char where[160];
        const char *open_error = NULL, *stream_type = NULL;
        SimDeviceSpec *spec;
        Members m;
        const Jv *flags;
        gint64 size = 1 << 20, rate = 0, version = 1, seed = 1;
        bool data_size = true;

        if (!get_text(c, dwhere, "open-error", open_error_node, false, 32, false, &open_error))
                return false;
        if (open_error && strcmp(open_error, "group-in-use") != 0 && strcmp(open_error, "group-not-viable") != 0)
                return fail(c, dwhere, "\"open-error\" must be \"group-in-use\" or \"group-not-viable\"");
        if (!mig && !open_error)
                return true;

        spec = g_new0(SimDeviceSpec, 1);
        d->backend_data = spec;
        d->backend_free = sim_spec_free;
        spec->open_error = !open_error ? 0 : strcmp(open_error, "group-in-use") == 0 ? -EBUSY : -EPERM;
        strcpy(spec->stream_type, "none");
        spec->config.memory_size = 4096;
        spec->config.stream_version = 1;
        spec->config.stream_type = spec->stream_type;
        if (!mig)
                return true;

        where_append(where, sizeof where, dwhere, ".migration");
        if (!bind_members(c, where, mig, keys, &m) ||
            !get_array(c, where, &m, FLAGS, &flags) ||
            !get_bool(c, where, &m, DMA_LOGGING, &spec->config.dma_logging) ||
            !get_bool(c, where, &m, DATA_SIZE, &data_size) ||
            !get_int(c, where, &m, STATE_SIZE, 1, G_GINT64_CONSTANT(1) << 40, &size) ||
            !get_int(c, where, &m, DIRTY_RATE, 0, G_GINT64_CONSTANT(1) << 40, &rate) ||
            !get_int(c, where, &m, STREAM_VERSION, 0, UINT32_MAX, &version) ||
            !get_int(c, where, &m, FILL_SEED, 0, G_MAXINT64, &seed) ||
            !get_str(c, where, &m, STREAM_TYPE, true, sizeof spec->stream_type - 1, &stream_type))
                return false;
        strcpy(spec->stream_type, stream_type);
        for (guint i = 0; flags && i < flags->n; i++) {
                const Jv *n = flags->items[i];
                const char *f = n->type == JV_STRING ? n->s : NULL;
                bool known = false;

                for (size_t k = 0; f && k < G_N_ELEMENTS(flag_names); k++)
                        if (strcmp(f, flag_names[k].name) == 0) {
                                spec->config.migration_flags |= flag_names[k].bit;
                                known = true;
                                break;
                        }
                if (!known)
                        return fail(c, where, "flags[%u] must be one of \"stop-copy\", \"p2p\", \"pre-copy\"", i);
        }
        if (spec->config.migration_flags && !(spec->config.migration_flags & VFMIG_MIGRATION_STOP_COPY))
                return fail(c, where, "\"flags\" must include \"stop-copy\" (the kernel requires it)");
        spec->config.no_data_size = !data_size;
        spec->config.memory_size = (uint64_t) size;
        spec->config.dirty_rate = (uint64_t) rate;
        spec->config.stream_version = (uint32_t) version;
        spec->config.fill_seed = (uint64_t) seed;
        return true;
}

/* "devices[INDEX]" (g_snprintf() cost as much as the rest of a device). */
static void device_where(char where[static 32], guint index)
{
        char digits[16];
        size_t n = 0;

        do
                digits[n++] = (char) ('0' + index % 10);
        while ((index /= 10) > 0);
        memcpy(where, "devices[", 8);
        for (size_t i = 0; i < n; i++)
                where[8 + i] = digits[n - 1 - i];
        where[8 + n] = ']';
        where[9 + n] = '\0';
}

static VfmigDevice *parse_device(Ctx *c, const Jv *node, guint index)
{
        static const char *const keys[] = {
                "name", "kind", "driver", "vendor-id", "device-id", "subsystem-vendor-id",
                "subsystem-device-id", "revision", "iommu-group", "numa-node", "mdev-type",
                "parent", "attributes", "migration", "open-error", "comment", NULL
        };
        enum {
                NAME, KIND, DRIVER, VENDOR_ID, DEVICE_ID, SUBSYSTEM_VENDOR_ID, SUBSYSTEM_DEVICE_ID, REVISION,
                IOMMU_GROUP, NUMA_NODE, MDEV_TYPE, PARENT, ATTRIBUTES, MIGRATION, OPEN_ERROR,
        };
        char where[32];
        const char *name = NULL, *kind = NULL, *driver = NULL, *mdev_type = NULL, *parent = NULL;
        g_autoptr(VfmigDevice) d = NULL;
        VfmigDeviceKind k;
        uint32_t vendor = 0, device = 0, subvendor = 0, subdevice = 0, revision = 0;
        gint64 group = -1, numa = -1;
        const Jv *attrs, *mig;
        GHashTable *attr_table;
        Members m;

        device_where(where, index);
        if (node->type != JV_OBJECT)
                return fail(c, where, "must be an object"), NULL;
        if (!bind_members(c, where, node, keys, &m))
                return NULL;
        if (m.v[NAME] && m.v[NAME]->type == JV_STRING && m.v[KIND] && m.v[KIND]->type == JV_STRING) {
                /* The usual: a PCI address or a UUID, each of which passes
                 * every check of a name below. */
                name = m.v[NAME]->s;
                kind = m.v[KIND]->s;
                if (strcmp(kind, VFMIG_KIND_PCI) == 0 && vfmig_pci_address_is_valid(name)) {
                        k = VFMIG_DEVICE_PCI;
                        goto named;
                }
                if (strcmp(kind, VFMIG_KIND_MDEV) == 0 && vfmig_uuid_is_valid(name)) {
                        k = VFMIG_DEVICE_MDEV;
                        goto named;
                }
        }
        if (!get_str(c, where, &m, NAME, true, VFMIG_NAME_MAX, &name) ||
            !get_str(c, where, &m, KIND, true, 16, &kind))
                return NULL;
        if (!vfmig_device_name_is_valid(name))
                return fail(c, where, "\"name\" = \"%s\" is not a device name (PCI address or UUID)", name), NULL;
        if (strcmp(kind, VFMIG_KIND_PCI) == 0) {
                if (!vfmig_pci_address_is_valid(name))
                        return fail(c, where, "\"name\" = \"%s\" is not a PCI address like 0000:17:00.1", name), NULL;
                k = VFMIG_DEVICE_PCI;
        } else if (strcmp(kind, VFMIG_KIND_MDEV) == 0) {
                if (!vfmig_uuid_is_valid(name))
                        return fail(c, where, "\"name\" = \"%s\" is not an mdev UUID", name), NULL;
                k = VFMIG_DEVICE_MDEV;
        } else
                return fail(c, where, "\"kind\" must be \"pci\" or \"mdev\", not \"%s\"", kind), NULL;

named:
        if (!get_str(c, where, &m, DRIVER, k == VFMIG_DEVICE_PCI, VFMIG_NAME_MAX, &driver))
                return NULL;
        if (k == VFMIG_DEVICE_PCI) {
                if (!get_hex(c, where, &m, VENDOR_ID, true, 0xffff, &vendor) ||
                    !get_hex(c, where, &m, DEVICE_ID, true, 0xffff, &device) ||
                    !get_hex(c, where, &m, SUBSYSTEM_VENDOR_ID, false, 0xffff, &subvendor) ||
                    !get_hex(c, where, &m, SUBSYSTEM_DEVICE_ID, false, 0xffff, &subdevice) ||
                    !get_hex(c, where, &m, REVISION, false, 0xff, &revision))
                        return NULL;
        } else {
                if (!get_str(c, where, &m, MDEV_TYPE, true, VFMIG_NAME_MAX, &mdev_type) ||
                    !get_str(c, where, &m, PARENT, true, VFMIG_NAME_MAX, &parent))
                        return NULL;
                if (!vfmig_device_name_is_valid(mdev_type))
                        return fail(c, where, "\"mdev-type\" = \"%s\" is not a valid type id", mdev_type), NULL;
        }
        if (!get_int(c, where, &m, IOMMU_GROUP, -1, INT32_MAX, &group) ||
            !get_int(c, where, &m, NUMA_NODE, -1, 1023, &numa) ||
            !get_object(c, where, &m, ATTRIBUTES, &attrs))
                return NULL;
        if (!(attr_table = parse_attributes(c, where, attrs)))
                return NULL;
        d = vfmig_device_new_fixed(name, k, driver, mdev_type, parent, attr_table);
        d->vendor_id = (uint16_t) vendor;
        d->device_id = (uint16_t) device;
        d->subsystem_vendor_id = (uint16_t) subvendor;
        d->subsystem_device_id = (uint16_t) subdevice;
        d->revision = (uint8_t) revision;
        d->iommu_group = (int32_t) group;
        d->numa_node = (int32_t) numa;
        if (!get_object(c, where, &m, MIGRATION, &mig) ||
            !parse_sim_spec(c, where, m.v[OPEN_ERROR], mig, d))
                return NULL;
        return g_steal_pointer(&d);
}

static VfmigMdevType *parse_type(Ctx *c, const char *pwhere, const Jv *node, guint index, const char *parent)
{
        static const char *const keys[] = {
                "id", "name", "device-api", "description", "available-instances",
                "attributes", "migration", "comment", NULL
        };
        enum { ID, NAME, DEVICE_API, DESCRIPTION, AVAILABLE_INSTANCES, ATTRIBUTES, MIGRATION };
        g_autofree char *where = g_strdup_printf("%s.types[%u]", pwhere, index);
        const char *id = NULL;
        VfmigMdevType *t;
        const Jv *mig;
        Members m;
        gint64 avail = 0;

        if (node->type != JV_OBJECT)
                return fail(c, where, "must be an object"), NULL;
        if (!bind_members(c, where, node, keys, &m) ||
            !get_str(c, where, &m, ID, true, VFMIG_NAME_MAX, &id))
                return NULL;
        if (!vfmig_device_name_is_valid(id))
                return fail(c, where, "\"id\" = \"%s\" is not a valid type id", id), NULL;
        t = vfmig_mdev_type_new(id);
        if (!get_string(c, where, &m, NAME, false, 256, &t->name) ||
            !get_string(c, where, &m, DEVICE_API, true, 64, &t->device_api) ||
            !get_string_full(c, where, &m, DESCRIPTION, false, 1024, true, &t->description) ||
            !get_int(c, where, &m, AVAILABLE_INSTANCES, 0, 1 << 20, &avail)) {
                vfmig_mdev_type_free(t);
                return NULL;
        }
        t->available_instances = (uint32_t) avail;

        /* The migration behaviour of the instances vfmigd creates of this type. */
        if (!get_object(c, where, &m, MIGRATION, &mig)) {
                vfmig_mdev_type_free(t);
                return NULL;
        }
        if (mig) {
                g_autoptr(VfmigDevice) probe = vfmig_device_new(id, VFMIG_DEVICE_MDEV);
                SimInstanceTemplate *tpl;

                if (!parse_sim_spec(c, where, NULL, mig, probe)) {
                        vfmig_mdev_type_free(t);
                        return NULL;
                }
                tpl = template_get(c->templates, parent, id);
                sim_spec_free(tpl->spec);
                tpl->spec = steal_ptr(&probe->backend_data);
                probe->backend_free = NULL;
                tpl->spec_set = tpl->spec_from_type = true;
        }
        return t;
}

static VfmigMdevParent *parse_parent(Ctx *c, const Jv *node, guint index)
{
        static const char *const keys[] = { "name", "driver", "types", "comment", NULL };
        enum { NAME, DRIVER, TYPES };
        g_autofree char *where = g_strdup_printf("mdev-parents[%u]", index);
        const char *name = NULL;
        g_autoptr(VfmigMdevParent) p = NULL;
        const Jv *types;
        Members m;

        if (node->type != JV_OBJECT)
                return fail(c, where, "must be an object"), NULL;
        if (!bind_members(c, where, node, keys, &m) ||
            !get_str(c, where, &m, NAME, true, VFMIG_NAME_MAX, &name))
                return NULL;
        if (!vfmig_device_name_is_valid(name))
                return fail(c, where, "\"name\" = \"%s\" is not a device name", name), NULL;
        p = vfmig_mdev_parent_new(name);
        if (!get_string(c, where, &m, DRIVER, true, VFMIG_NAME_MAX, &p->driver) ||
            !get_array(c, where, &m, TYPES, &types))
                return NULL;
        if (!types || types->n == 0)
                return fail(c, where, "\"types\" must be a non-empty array"), NULL;
        for (guint i = 0; i < types->n; i++) {
                VfmigMdevType *t = parse_type(c, where, types->items[i], i, name);
                if (!t)
                        return NULL;
                for (guint j = 0; j < p->types->len; j++)
                        if (strcmp(((VfmigMdevType *) p->types->pdata[j])->id, t->id) == 0) {
                                fail(c, where, "type \"%s\" listed twice", t->id);
                                vfmig_mdev_type_free(t);
                                return NULL;
                        }
                g_ptr_array_add(p->types, t);
        }
        vfmig_mdev_parent_sort(p);
        return g_steal_pointer(&p);
}

/* names: filled with every device by name, for copy_parent_identity(). */
static bool cross_check(Ctx *c, SimHost *h, GHashTable *names)
{
        char where[32];

        for (guint i = 0; i < h->devices->len; i++) {
                VfmigDevice *d = h->devices->pdata[i];

                if (!g_hash_table_insert(names, d->name, d)) {
                        g_snprintf(where, sizeof where, "devices[%u]", i);
                        return fail(c, where, "device \"%s\" listed twice", d->name);
                }
        }
        for (guint i = 0; i < h->devices->len; i++) {
                VfmigDevice *d = h->devices->pdata[i];
                VfmigMdevParent *p = NULL;
                bool type_ok = false;

                if (d->kind != VFMIG_DEVICE_MDEV)
                        continue;
                g_snprintf(where, sizeof where, "devices[%u]", i);
                for (guint j = 0; j < h->parents->len; j++)
                        if (strcmp(((VfmigMdevParent *) h->parents->pdata[j])->name, d->parent) == 0)
                                p = h->parents->pdata[j];
                if (!p)
                        return fail(c, where, "\"parent\" = \"%s\" is not listed in mdev-parents", d->parent);
                for (guint j = 0; j < p->types->len; j++)
                        type_ok |= strcmp(((VfmigMdevType *) p->types->pdata[j])->id, d->mdev_type) == 0;
                if (!type_ok)
                        return fail(c, where, "\"mdev-type\" = \"%s\" is not a type of parent %s", d->mdev_type, p->name);
        }
        return true;
}

/* Listed instances tell what created ones of their PARENT/TYPE are like,
 * unless the type says so itself; created ones get IOMMU groups of their own. */
static void collect_templates(SimHost *h)
{
        int32_t max_group = 0;

        for (guint i = 0; i < h->devices->len; i++) {
                VfmigDevice *d = h->devices->pdata[i];
                SimInstanceTemplate *t;

                max_group = MAX(max_group, d->iommu_group);
                if (d->kind != VFMIG_DEVICE_MDEV)
                        continue;
                t = template_get(h->templates, d->parent, d->mdev_type);
                if (!t->driver && d->driver && d->driver[0])
                        t->driver = g_strdup(d->driver);
                if (!t->spec_set) {
                        t->spec = sim_spec_copy(d->backend_data);
                        if (t->spec)
                                t->spec->open_error = 0;
                        t->spec_set = true;
                }
        }
        h->next_iommu_group = max_group + 1;
}

/* names: every device by name (each name listed once). */
static void copy_parent_identity(SimHost *h, GHashTable *names)
{
        /* An mdev carries the PCI identity of its parent, as on a real host. */
        for (guint i = 0; i < h->devices->len; i++) {
                VfmigDevice *d = h->devices->pdata[i], *p;

                if (d->kind != VFMIG_DEVICE_MDEV || !(p = g_hash_table_lookup(names, d->parent)) ||
                    p->kind != VFMIG_DEVICE_PCI)
                        continue;
                d->vendor_id = p->vendor_id;
                d->device_id = p->device_id;
                d->subsystem_vendor_id = p->subsystem_vendor_id;
                d->subsystem_device_id = p->subsystem_device_id;
                d->revision = p->revision;
                if (d->numa_node < 0)
                        d->numa_node = p->numa_node;
        }
}

/* The "devices" array, device by device as the reader reaches them. */
typedef struct DeviceStream {
        Ctx c;                          /* its error: the first device refused */
        GPtrArray *devices;             /* VfmigDevice* */
} DeviceStream;

static void device_stream_clear(DeviceStream *ds)
{
        g_clear_pointer(&ds->devices, g_ptr_array_unref);
        g_clear_pointer(&ds->c.last_attributes, g_hash_table_unref);
        g_clear_pointer(&ds->c.last_pairs, g_strfreev);
        g_clear_pointer(&ds->c.error, g_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(DeviceStream, device_stream_clear)

static void on_device_element(Jv *e, guint index, void *userdata)
{
        DeviceStream *ds = userdata;
        VfmigDevice *d;

        if (!e) {
                /* the array begins; "devices" given again: the last one counts */
                g_ptr_array_set_size(ds->devices, 0);
                g_clear_pointer(&ds->c.error, g_free);
                return;
        }
        if (ds->c.error)
                return;   /* the first refusal is the one told */
        d = parse_device(&ds->c, e, index);
        if (d)
                g_ptr_array_add(ds->devices, d);
}

int sim_host_load(const char *path, SimHost **ret, char **error)
{
        static const char *const keys[] = {
                "host", "kernel-release", "devices", "mdev-parents", "comment", NULL
        };
        enum { HOST, KERNEL_RELEASE, DEVICES, MDEV_PARENTS };
        g_autoptr(GError) gerr = NULL;
        g_autoptr(SimHost) h = NULL;
        g_autofree char *text = NULL, *perr = NULL;
        g_auto(Arena) arena = { 0 };
        g_autoptr(GHashTable) names = NULL;
        gsize len = 0;
        Ctx c = { .file = path };
        g_auto(DeviceStream) ds = { .c = { .file = path } };
        const Jv *devices, *parents, *o;
        Members m;

        if (!g_file_get_contents(path, &text, &len, &gerr)) {
                *error = g_strdup_printf("%s: %s", path, gerr->message);
                return -EINVAL;
        }
        /* The reader's padding after the NUL. */
        text = g_realloc(text, len + 1 + JV_PAD);
        memset(text + len + 1, 0, JV_PAD);
        ds.devices = g_ptr_array_new_with_free_func((GDestroyNotify) vfmig_device_free);
        ds.c.share_attributes = true;
        o = jv_parse(text, len, &arena, "devices", on_device_element, &ds, &perr);
        if (!o) {
                *error = g_strdup_printf("%s:%s", path, perr);
                return -EINVAL;
        }
        if (o->type != JV_OBJECT) {
                *error = g_strdup_printf("%s: top level must be an object", path);
                return -EINVAL;
        }
        h = g_new0(SimHost, 1);
        h->path = g_strdup(path);
        h->devices = g_ptr_array_new_with_free_func((GDestroyNotify) vfmig_device_free);
        h->parents = g_ptr_array_new_with_free_func((GDestroyNotify) vfmig_mdev_parent_free);
        h->templates = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, template_free);
        c.templates = h->templates;

        if (!bind_members(&c, "(top)", o, keys, &m) ||
            !get_string(&c, "(top)", &m, HOST, true, VFMIG_NAME_MAX, &h->host_name) ||
            !get_string(&c, "(top)", &m, KERNEL_RELEASE, false, VFMIG_NAME_MAX, &h->kernel_release) ||
            !get_array(&c, "(top)", &m, DEVICES, &devices) ||
            !get_array(&c, "(top)", &m, MDEV_PARENTS, &parents))
                goto out;
        if (!devices) {
                fail(&c, "(top)", "missing required key \"devices\"");
                goto out;
        }
        /* The devices were read as the file was (on_device_element()); their
         * first problem is told here, in the order the checks always had. */
        if (ds.c.error) {
                c.error = g_steal_pointer(&ds.c.error);
                goto out;
        }
        g_ptr_array_extend_and_steal(h->devices, g_steal_pointer(&ds.devices));
        for (guint i = 0; parents && i < parents->n; i++) {
                VfmigMdevParent *p = parse_parent(&c, parents->items[i], i);
                if (!p)
                        goto out;
                g_ptr_array_add(h->parents, p);
        }
        names = g_hash_table_new(g_str_hash, g_str_equal);
        if (cross_check(&c, h, names)) {
                copy_parent_identity(h, names);
                collect_templates(h);
        }
out:
        if (c.error) {
                *error = c.error;
                return -EINVAL;
        }
        if (!h->kernel_release)
                h->kernel_release = g_strdup("");
        *ret = g_steal_pointer(&h);
        return 0;
}

void sim_host_free(SimHost *h)
{
        if (!h)
                return;
        g_free(h->path);
        g_free(h->host_name);
        g_free(h->kernel_release);
        g_ptr_array_unref(h->devices);
        g_ptr_array_unref(h->parents);
        if (h->templates)
                g_hash_table_unref(h->templates);
        g_free(h);
}

void sim_host_populate(SimHost *h, Inventory *inv)
{
        /* VFIO devices move into the inventory; the others stay here, as the
         * identities of mdev parents (sim_host_identity()).  The list is
         * compacted as it goes (not one removal per device: thousands). */
        guint kept = 0, n = h->devices->len;

        for (guint i = 0; i < n; i++) {
                VfmigDevice *d = h->devices->pdata[i];

                h->devices->pdata[i] = NULL;
                if (d->kind == VFMIG_DEVICE_PCI && !vfmig_driver_is_vfio_pci(d->driver)) {
                        h->devices->pdata[kept++] = d;
                        continue;
                }
                inventory_put_device(inv, d);
        }
        g_ptr_array_set_size(h->devices, kept);
        while (h->parents->len > 0)
                inventory_put_parent(inv, g_ptr_array_steal_index(h->parents, 0));
}

const VfmigDevice *sim_host_identity(SimHost *h, const char *name)
{
        for (guint i = 0; i < h->devices->len; i++) {
                VfmigDevice *d = h->devices->pdata[i];
                if (d && strcmp(d->name, name) == 0)   /* NULL: moved out while populating */
                        return d;
        }
        return NULL;
}

VfmigDevice *sim_host_new_instance(SimHost *h, const VfmigMdevParent *p, const char *type_id, const char *uuid)
{
        g_autofree char *key = g_strdup_printf("%s/%s", p->name, type_id);
        const SimInstanceTemplate *t = g_hash_table_lookup(h->templates, key);
        const VfmigDevice *id = sim_host_identity(h, p->name);
        VfmigDevice *d = vfmig_device_new_full(uuid, VFMIG_DEVICE_MDEV, t && t->driver ? t->driver : "vfio_mdev",
                                               type_id, p->name);
        SimDeviceSpec *spec;

        d->iommu_group = h->next_iommu_group++;
        if (id) {
                /* An mdev carries the PCI identity of its parent, as on a real host. */
                d->vendor_id = id->vendor_id;
                d->device_id = id->device_id;
                d->subsystem_vendor_id = id->subsystem_vendor_id;
                d->subsystem_device_id = id->subsystem_device_id;
                d->revision = id->revision;
                d->numa_node = id->numa_node;
        }
        if (t && t->spec_set)
                spec = sim_spec_copy(t->spec);
        else {
                spec = g_new0(SimDeviceSpec, 1);
                /* the stream header holds at most 31 characters of type */
                g_strlcpy(spec->stream_type, type_id, sizeof spec->stream_type);
                spec->config.migration_flags = VFMIG_MIGRATION_STOP_COPY | VFMIG_MIGRATION_P2P;
                spec->config.memory_size = 1 << 20;
                spec->config.stream_version = 1;
                spec->config.fill_seed = 1;
        }
        if (spec) {
                spec->config.stream_type = spec->stream_type;
                d->backend_data = spec;
                d->backend_free = sim_spec_free;
        }
        return d;
}
