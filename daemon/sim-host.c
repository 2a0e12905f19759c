/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <string.h>


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
 */
#define JV_DEPTH_MAX 64

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

typedef struct Arena {
        GSList *blocks;
        char *p;
        size_t left;
} Arena;

static void *arena_alloc(Arena *a, size_t n)
{
        void *r;

        n = (n + 7) & ~(size_t) 7;
        if (n > a->left) {
                size_t sz = MAX(n, (size_t) 256 * 1024);
                char *b = g_malloc(sz);
                a->blocks = g_slist_prepend(a->blocks, b);
                a->p = b;
                a->left = sz;
        }
        r = a->p;
        a->p += n;
        a->left -= n;
        return r;
}

/* Everything allocated after a mark is given back (its blocks freed, the
 * current one rewound): the memory is used again for the next piece. */
typedef struct ArenaMark {
        GSList *blocks;
        char *p;
        size_t left;
} ArenaMark;

static ArenaMark arena_mark(const Arena *a)
{
        return (ArenaMark) { .blocks = a->blocks, .p = a->p, .left = a->left };
}

static void arena_release(Arena *a, ArenaMark m)
{
        while (a->blocks && a->blocks != m.blocks) {
                GSList *b = a->blocks;
                a->blocks = g_slist_remove_link(a->blocks, b);
                g_free(b->data);
                g_slist_free_1(b);
        }
        a->p = m.p;
        a->left = m.left;
}

static void arena_clear(Arena *a)
{
        g_slist_free_full(a->blocks, g_free);
        *a = (Arena) { 0 };
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Arena, arena_clear)

typedef struct JReader {
        const char *start, *p, *end;
        Arena *arena;
        GPtrArray *stack;               /* children being collected (pointers) */
        GString *buf;                   /* a string being decoded */
        char *error;                    /* "LINE:COL: Parse error: ..." */
        /* The elements of the top-level member stream_key, when an array, are
         * handed to on_element one by one as they are read and not kept
         * (the array reads as one of n elements without items): a file of
         * thousands of devices never holds more than one device's tree. */
        const char *stream_key;
        void (*on_element)(Jv *e, guint index, void *userdata);   /* e NULL: an array begins */
        void *userdata;
} JReader;

static Jv *jr_fail(JReader *r, const char *what)
{
        guint line = 1, col = 0;

        if (r->error)
                return NULL;
        /* As json-glib counts: LINE from 1; COL the offending character's
         * place in its line from 1, or at the end of the text the number of
         * characters of the last line (0 right after a newline). */
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

static void jr_space(JReader *r)
{
        while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
                r->p++;
}

static Jv *jv_new(JReader *r, JvType t)
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

/* At the opening quote.  The decoded text, NUL-terminated, in the arena. */
static const char *jr_string(JReader *r)
{
        const char *q = ++r->p, *run = q;
        bool high = false;
        char *out;

        /* The usual case: printable ASCII up to the closing quote, copied as is. */
        while (q < r->end && (unsigned char) *q >= 0x20 && (unsigned char) *q < 0x80 && *q != '"' && *q != '\\')
                q++;
        if (q < r->end && *q == '"') {
                out = arena_alloc(r->arena, (size_t) (q - run) + 1);
                memcpy(out, run, (size_t) (q - run));
                out[q - run] = '\0';
                r->p = q + 1;
                return out;
        }
        q = run;
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
        g_string_append_len(r->buf, run, q - run);
        if (high && !g_utf8_validate_len(r->buf->str, r->buf->len, NULL))
                return jr_fail(r, "a string is not valid UTF-8"), NULL;
        r->p = q + 1;
        out = arena_alloc(r->arena, r->buf->len + 1);
        memcpy(out, r->buf->str, r->buf->len + 1);
        return out;
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
                        return r->p = q, jr_fail(r, "a number needs digits after the point");
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
                        return r->p = q, jr_fail(r, "a number needs digits in its exponent");
        }
        if (!real && q - digits <= 18) {
                /* at most 18 digits: fits without overflow */
                gint64 x = 0;
                for (const char *c = digits; c < q; c++)
                        x = x * 10 + (*c - '0');
                v = jv_new(r, JV_INT);
                v->i = *r->p == '-' ? -x : x;
                r->p = q;
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
        r->p = q;
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

/* Pops the children collected since mark into the arena. */
static Jv **jr_take(JReader *r, guint mark)
{
        guint n = r->stack->len - mark;
        Jv **a = arena_alloc(r->arena, MAX(n, 1u) * sizeof(void *));

        memcpy(a, r->stack->pdata + mark, n * sizeof(void *));
        g_ptr_array_set_size(r->stack, mark);
        return a;
}

static Jv *jr_array(JReader *r, guint depth)
{
        guint mark = r->stack->len;
        Jv *v;

        r->p++;
        jr_space(r);
        if (r->p < r->end && *r->p == ']')
                r->p++;
        else
                for (;;) {
                        Jv *e = jr_value(r, depth + 1);
                        if (!e)
                                return NULL;
                        g_ptr_array_add(r->stack, e);
                        jr_space(r);
                        if (r->p < r->end && *r->p == ',') {
                                r->p++;
                                continue;
                        }
                        if (r->p < r->end && *r->p == ']') {
                                r->p++;
                                break;
                        }
                        return jr_fail(r, "expected ',' or ']' in an array");
                }
        v = jv_new(r, JV_ARRAY);
        v->n = r->stack->len - mark;
        v->items = jr_take(r, mark);
        return v;
}

static Jv *jr_array_streamed(JReader *r, guint depth)
{
        guint n = 0;
        Jv *v;

        r->on_element(NULL, 0, r->userdata);   /* an array begins (again) */
        r->p++;
        jr_space(r);
        if (r->p < r->end && *r->p == ']')
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
                        if (r->p < r->end && *r->p == ',') {
                                r->p++;
                                continue;
                        }
                        if (r->p < r->end && *r->p == ']') {
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
        guint mark = r->stack->len;
        Jv *v;

        r->p++;
        jr_space(r);
        if (r->p < r->end && *r->p == '}')
                r->p++;
        else
                for (;;) {
                        const char *key;
                        Jv *e;

                        if (r->p >= r->end || *r->p != '"')
                                return jr_fail(r, "expected a member name in quotes");
                        key = jr_string(r);
                        if (!key)
                                return NULL;
                        jr_space(r);
                        if (r->p >= r->end || *r->p != ':')
                                return jr_fail(r, "expected ':' after a member name");
                        r->p++;
                        jr_space(r);
                        if (depth == 0 && r->on_element && r->p < r->end && *r->p == '[' &&
                            strcmp(key, r->stream_key) == 0)
                                e = jr_array_streamed(r, depth + 1);
                        else
                                e = jr_value(r, depth + 1);
                        if (!e)
                                return NULL;
                        g_ptr_array_add(r->stack, (char *) key);
                        g_ptr_array_add(r->stack, e);
                        jr_space(r);
                        if (r->p < r->end && *r->p == ',') {
                                r->p++;
                                jr_space(r);
                                continue;
                        }
                        if (r->p < r->end && *r->p == '}') {
                                r->p++;
                                break;
                        }
                        return jr_fail(r, "expected ',' or '}' in an object");
                }
        v = jv_new(r, JV_OBJECT);
        v->n = (r->stack->len - mark) / 2;
        v->o.keys = arena_alloc(r->arena, MAX(v->n, 1u) * sizeof(char *));
        v->o.vals = arena_alloc(r->arena, MAX(v->n, 1u) * sizeof(Jv *));
        for (guint i = 0; i < v->n; i++) {
                v->o.keys[i] = r->stack->pdata[mark + 2 * i];
                v->o.vals[i] = r->stack->pdata[mark + 2 * i + 1];
        }
        g_ptr_array_set_size(r->stack, mark);
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

/* The whole text as one value, or NULL with *error. */
static Jv *jv_parse(const char *text, size_t len, Arena *arena, const char *stream_key,
                    void (*on_element)(Jv *e, guint index, void *userdata), void *userdata, char **error)
{
        g_autoptr(GPtrArray) stack = g_ptr_array_sized_new(256);
        g_autoptr(GString) buf = g_string_sized_new(256);
        JReader r = { .start = text, .p = text, .end = text + len, .arena = arena, .stack = stack, .buf = buf,
                      .stream_key = stream_key, .on_element = on_element, .userdata = userdata };
        Jv *v;

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

static bool strv_has(const char *const *v, const char *s)
{
        for (; *v; v++)
                if ((*v)[0] == s[0] && strcmp(*v, s) == 0)
                        return true;
        return false;
}

typedef struct Ctx {
        const char *file;
        char *error;
        GHashTable *templates;          /* SimHost.templates being filled */
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

static bool check_keys(Ctx *c, const char *where, const Jv *o, const char *const *allowed)
{
        for (guint i = 0; i < o->n; i++)
                if (!strv_has(allowed, o->o.keys[i]))
                        return fail(c, where, "unknown key \"%s\"", o->o.keys[i]);
        return true;
}

static Jv *member(const Jv *o, const char *key)
{
        return jv_member(o, key);
}

static bool get_string_full(Ctx *c, const char *where, const Jv *o, const char *key,
                            bool required, size_t max, bool multiline, char **out)
{
        Jv *n = member(o, key);
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
        g_free(*out);
        *out = g_strdup(s);
        return true;
}

static bool get_string(Ctx *c, const char *where, const Jv *o, const char *key,
                       bool required, size_t max, char **out)
{
        return get_string_full(c, where, o, key, required, max, false, out);
}

/* PCI IDs are written as in sysfs: "0x15b3". */
static bool get_hex(Ctx *c, const char *where, const Jv *o, const char *key,
                    bool required, uint32_t max, uint32_t *out)
{
        Jv *n = member(o, key);
        const char *s;
        guint64 v = 0;
        size_t len;

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

static bool get_int(Ctx *c, const char *where, const Jv *o, const char *key,
                    gint64 min, gint64 max, gint64 *out)
{
        Jv *n = member(o, key);
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

static bool get_object(Ctx *c, const char *where, const Jv *o, const char *key, const Jv **out)
{
        Jv *n = member(o, key);

        *out = NULL;
        if (!n)
                return true;
        if (n->type != JV_OBJECT)
                return fail(c, where, "\"%s\" must be an object", key);
        *out = n;
        return true;
}

static bool get_array(Ctx *c, const char *where, const Jv *o, const char *key, const Jv **out)
{
        Jv *n = member(o, key);

        *out = NULL;
        if (!n)
                return true;
        if (n->type != JV_ARRAY)
                return fail(c, where, "\"%s\" must be an array", key);
        *out = n;
        return true;
}

static bool parse_attributes(Ctx *c, const char *where, const Jv *o, GHashTable *into)
{
        g_autofree char *w = NULL;
        const Jv *attrs;

        if (!get_object(c, where, o, "attributes", &attrs))
                return false;
        if (!attrs)
                return true;
        for (guint i = 0; i < attrs->n; i++) {
                const char *name = attrs->o.keys[i];
                const Jv *val = jv_member(attrs, name);   /* the last of that name */

                if (!vfmig_device_name_is_valid(name) || val->type != JV_STRING ||
                    !vfmig_string_is_valid(val->s, 256)) {
                        g_autofree char *v = NULL;
                        w = g_strdup_printf("%s.attributes", where);
                        if (!vfmig_device_name_is_valid(name))
                                return fail(c, w, "attribute name \"%s\" is not valid", name);
                        return get_string(c, w, attrs, name, true, 256, &v);
                }
                g_hash_table_replace(into, g_strdup(name), g_strdup(val->s));
        }
        return true;
}

static void sim_spec_free(void *p)
{
        SimDeviceSpec *s = p;

        if (!s)
                return;
        g_free(s->stream_type);
        g_free(s);
}

static SimDeviceSpec *sim_spec_copy(const SimDeviceSpec *s)
{
        SimDeviceSpec *n;

        if (!s)
                return NULL;
        n = g_new0(SimDeviceSpec, 1);
        *n = *s;
        n->stream_type = g_strdup(s->stream_type);
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

static bool get_bool(Ctx *c, const char *where, const Jv *o, const char *key, bool *out)
{
        Jv *n = member(o, key);

        if (!n)
                return true;
        if (n->type != JV_BOOL)
                return fail(c, where, "\"%s\" must be true or false", key);
        *out = n->b;
        return true;
}

/* The simulated device's behaviour: the "migration" object and "open-error". */
static bool parse_sim_spec(Ctx *c, const char *dwhere, const Jv *dev, const Jv *mig, VfmigDevice *d)
{
        static const char *const keys[] = {
                "flags", "dma-logging", "data-size", "state-size", "dirty-rate",
                "stream-type", "stream-version", "fill-seed", "comment", NULL
        };
        static const struct { const char *name; uint64_t bit; } flag_names[] = {
                { "stop-copy", VFMIG_MIGRATION_STOP_COPY },
                { "p2p", VFMIG_MIGRATION_P2P },
                { "pre-copy", VFMIG_MIGRATION_PRE_COPY },
        };
        char where[160];
        g_autofree char *open_error = NULL;
        SimDeviceSpec *spec;
        const Jv *flags;
        gint64 size = 1 << 20, rate = 0, version = 1, seed = 1;
        bool data_size = true;

        g_snprintf(where, sizeof where, "%s.migration", dwhere);
        if (!get_string(c, dwhere, dev, "open-error", false, 32, &open_error))
                return false;
        if (open_error && strcmp(open_error, "group-in-use") != 0 && strcmp(open_error, "group-not-viable") != 0)
                return fail(c, dwhere, "\"open-error\" must be \"group-in-use\" or \"group-not-viable\"");
        if (!mig && !open_error)
                return true;

        spec = g_new0(SimDeviceSpec, 1);
        d->backend_data = spec;
        d->backend_free = sim_spec_free;
        spec->open_error = !open_error ? 0 : strcmp(open_error, "group-in-use") == 0 ? -EBUSY : -EPERM;
        spec->stream_type = g_strdup("none");
        spec->config.memory_size = 4096;
        spec->config.stream_version = 1;
        spec->config.stream_type = spec->stream_type;
        if (!mig)
                return true;

        if (!check_keys(c, where, mig, keys) ||
            !get_array(c, where, mig, "flags", &flags) ||
            !get_bool(c, where, mig, "dma-logging", &spec->config.dma_logging) ||
            !get_bool(c, where, mig, "data-size", &data_size) ||
            !get_int(c, where, mig, "state-size", 1, G_GINT64_CONSTANT(1) << 40, &size) ||
            !get_int(c, where, mig, "dirty-rate", 0, G_GINT64_CONSTANT(1) << 40, &rate) ||
            !get_int(c, where, mig, "stream-version", 0, UINT32_MAX, &version) ||
            !get_int(c, where, mig, "fill-seed", 0, G_MAXINT64, &seed) ||
            !get_string(c, where, mig, "stream-type", true, 31, &spec->stream_type))
                return false;
        for (guint i = 0; flags && i < flags->n; i++) {
                const Jv *n = flags->items[i];
                const char *f = n->type == JV_STRING ? n->s : NULL;
                bool known = false;

                for (size_t k = 0; f && k < G_N_ELEMENTS(flag_names); k++)
                        if (strcmp(f, flag_names[k].name) == 0) {
                                spec->config.migration_flags |= flag_names[k].bit;
                                known = true;
                        }
                if (!known)
                        return fail(c, where, "flags[%u] must be one of \"stop-copy\", \"p2p\", \"pre-copy\"", i);
        }
        if (spec->config.migration_flags && !(spec->config.migration_flags & VFMIG_MIGRATION_STOP_COPY))
                return fail(c, where, "\"flags\" must include \"stop-copy\" (the kernel requires it)");
        spec->config.stream_type = spec->stream_type;
        spec->config.no_data_size = !data_size;
        spec->config.memory_size = (uint64_t) size;
        spec->config.dirty_rate = (uint64_t) rate;
        spec->config.stream_version = (uint32_t) version;
        spec->config.fill_seed = (uint64_t) seed;
        return true;
}

static VfmigDevice *parse_device(Ctx *c, const Jv *node, guint index)
{
        static const char *const keys[] = {
                "name", "kind", "driver", "vendor-id", "device-id", "subsystem-vendor-id",
                "subsystem-device-id", "revision", "iommu-group", "numa-node", "mdev-type",
                "parent", "attributes", "migration", "open-error", "comment", NULL
        };
        char where[32];
        g_autofree char *name = NULL, *kind = NULL;
        g_autoptr(VfmigDevice) d = NULL;
        uint32_t x = 0;
        gint64 i;
        const Jv *o = node, *mig;

        g_snprintf(where, sizeof where, "devices[%u]", index);
        if (node->type != JV_OBJECT)
                return fail(c, where, "must be an object"), NULL;
        if (!check_keys(c, where, o, keys) ||
            !get_string(c, where, o, "name", true, VFMIG_NAME_MAX, &name) ||
            !get_string(c, where, o, "kind", true, 16, &kind))
                return NULL;
        if (!vfmig_device_name_is_valid(name))
                return fail(c, where, "\"name\" = \"%s\" is not a device name (PCI address or UUID)", name), NULL;
        if (strcmp(kind, VFMIG_KIND_PCI) == 0) {
                if (!vfmig_pci_address_is_valid(name))
                        return fail(c, where, "\"name\" = \"%s\" is not a PCI address like 0000:17:00.1", name), NULL;
                d = vfmig_device_new(name, VFMIG_DEVICE_PCI);
        } else if (strcmp(kind, VFMIG_KIND_MDEV) == 0) {
                if (!vfmig_uuid_is_valid(name))
                        return fail(c, where, "\"name\" = \"%s\" is not an mdev UUID", name), NULL;
                d = vfmig_device_new(name, VFMIG_DEVICE_MDEV);
        } else
                return fail(c, where, "\"kind\" must be \"pci\" or \"mdev\", not \"%s\"", kind), NULL;

        if (!get_string(c, where, o, "driver", d->kind == VFMIG_DEVICE_PCI, VFMIG_NAME_MAX, &d->driver))
                return NULL;
        if (d->kind == VFMIG_DEVICE_PCI) {
                if (!get_hex(c, where, o, "vendor-id", true, 0xffff, &x))
                        return NULL;
                d->vendor_id = x;
                if (!get_hex(c, where, o, "device-id", true, 0xffff, &x))
                        return NULL;
                d->device_id = x, x = 0;
                if (!get_hex(c, where, o, "subsystem-vendor-id", false, 0xffff, &x))
                        return NULL;
                d->subsystem_vendor_id = x, x = 0;
                if (!get_hex(c, where, o, "subsystem-device-id", false, 0xffff, &x))
                        return NULL;
                d->subsystem_device_id = x, x = 0;
                if (!get_hex(c, where, o, "revision", false, 0xff, &x))
                        return NULL;
                d->revision = x;
        } else {
                if (!get_string(c, where, o, "mdev-type", true, VFMIG_NAME_MAX, &d->mdev_type) ||
                    !get_string(c, where, o, "parent", true, VFMIG_NAME_MAX, &d->parent))
                        return NULL;
                if (!vfmig_device_name_is_valid(d->mdev_type))
                        return fail(c, where, "\"mdev-type\" = \"%s\" is not a valid type id", d->mdev_type), NULL;
        }
        i = -1;
        if (!get_int(c, where, o, "iommu-group", -1, INT32_MAX, &i))
                return NULL;
        d->iommu_group = (int32_t) i;
        i = -1;
        if (!get_int(c, where, o, "numa-node", -1, 1023, &i))
                return NULL;
        d->numa_node = (int32_t) i;
        if (!parse_attributes(c, where, o, d->attributes))
                return NULL;
        if (!get_object(c, where, o, "migration", &mig))
                return NULL;
        if (!parse_sim_spec(c, where, o, mig, d))
                return NULL;
        return g_steal_pointer(&d);
}

static VfmigMdevType *parse_type(Ctx *c, const char *pwhere, const Jv *node, guint index, const char *parent)
{
        static const char *const keys[] = {
                "id", "name", "device-api", "description", "available-instances",
                "attributes", "migration", "comment", NULL
        };
        g_autofree char *where = g_strdup_printf("%s.types[%u]", pwhere, index);
        g_autofree char *id = NULL;
        VfmigMdevType *t;
        const Jv *o = node, *mig;
        gint64 avail = 0;

        if (node->type != JV_OBJECT)
                return fail(c, where, "must be an object"), NULL;
        if (!check_keys(c, where, o, keys) ||
            !get_string(c, where, o, "id", true, VFMIG_NAME_MAX, &id))
                return NULL;
        if (!vfmig_device_name_is_valid(id))
                return fail(c, where, "\"id\" = \"%s\" is not a valid type id", id), NULL;
        t = vfmig_mdev_type_new(id);
        if (!get_string(c, where, o, "name", false, 256, &t->name) ||
            !get_string(c, where, o, "device-api", true, 64, &t->device_api) ||
            !get_string_full(c, where, o, "description", false, 1024, true, &t->description) ||
            !get_int(c, where, o, "available-instances", 0, 1 << 20, &avail)) {
                vfmig_mdev_type_free(t);
                return NULL;
        }
        t->available_instances = (uint32_t) avail;

        /* The migration behaviour of the instances vfmigd creates of this type. */
        if (!get_object(c, where, o, "migration", &mig)) {
                vfmig_mdev_type_free(t);
                return NULL;
        }
        if (mig) {
                g_autoptr(VfmigDevice) probe = vfmig_device_new(id, VFMIG_DEVICE_MDEV);
                SimInstanceTemplate *tpl;

                if (!parse_sim_spec(c, where, o, mig, probe)) {
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
        g_autofree char *where = g_strdup_printf("mdev-parents[%u]", index);
        g_autofree char *name = NULL;
        g_autoptr(VfmigMdevParent) p = NULL;
        const Jv *types, *o = node;

        if (node->type != JV_OBJECT)
                return fail(c, where, "must be an object"), NULL;
        if (!check_keys(c, where, o, keys) ||
            !get_string(c, where, o, "name", true, VFMIG_NAME_MAX, &name))
                return NULL;
        if (!vfmig_device_name_is_valid(name))
                return fail(c, where, "\"name\" = \"%s\" is not a device name", name), NULL;
        p = vfmig_mdev_parent_new(name);
        if (!get_string(c, where, o, "driver", true, VFMIG_NAME_MAX, &p->driver) ||
            !get_array(c, where, o, "types", &types))
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

static bool cross_check(Ctx *c, SimHost *h)
{
        g_autoptr(GHashTable) names = g_hash_table_new(g_str_hash, g_str_equal);
        char where[32];

        for (guint i = 0; i < h->devices->len; i++) {
                VfmigDevice *d = h->devices->pdata[i];

                if (!g_hash_table_add(names, d->name)) {
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

static void copy_parent_identity(SimHost *h)
{
        g_autoptr(GHashTable) pci = g_hash_table_new(g_str_hash, g_str_equal);

        for (guint i = 0; i < h->devices->len; i++) {
                VfmigDevice *p = h->devices->pdata[i];
                if (p->kind == VFMIG_DEVICE_PCI)
                        g_hash_table_insert(pci, p->name, p);
        }
        /* An mdev carries the PCI identity of its parent, as on a real host. */
        for (guint i = 0; i < h->devices->len; i++) {
                VfmigDevice *d = h->devices->pdata[i], *p;

                if (d->kind != VFMIG_DEVICE_MDEV || !(p = g_hash_table_lookup(pci, d->parent)))
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
        g_autoptr(GError) gerr = NULL;
        g_autoptr(SimHost) h = NULL;
        g_autofree char *text = NULL, *perr = NULL;
        g_auto(Arena) arena = { 0 };
        gsize len = 0;
        Ctx c = { .file = path };
        g_auto(DeviceStream) ds = { .c = { .file = path } };
        const Jv *devices, *parents, *o;

        if (!g_file_get_contents(path, &text, &len, &gerr)) {
                *error = g_strdup_printf("%s: %s", path, gerr->message);
                return -EINVAL;
        }
        ds.devices = g_ptr_array_new_with_free_func((GDestroyNotify) vfmig_device_free);
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

        if (!check_keys(&c, "(top)", o, keys) ||
            !get_string(&c, "(top)", o, "host", true, VFMIG_NAME_MAX, &h->host_name) ||
            !get_string(&c, "(top)", o, "kernel-release", false, VFMIG_NAME_MAX, &h->kernel_release) ||
            !get_array(&c, "(top)", o, "devices", &devices) ||
            !get_array(&c, "(top)", o, "mdev-parents", &parents))
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
        if (cross_check(&c, h)) {
                copy_parent_identity(h);
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
        VfmigDevice *d = vfmig_device_new(uuid, VFMIG_DEVICE_MDEV);
        SimDeviceSpec *spec;

        g_free(d->driver);
        d->driver = g_strdup(t && t->driver ? t->driver : "vfio_mdev");
        g_free(d->mdev_type);
        d->mdev_type = g_strdup(type_id);
        g_free(d->parent);
        d->parent = g_strdup(p->name);
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
                spec->stream_type = g_strndup(type_id, 31);
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
