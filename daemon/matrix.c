/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The host matrix: see matrix.h. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "json-reader.h"
#include "matrix.h"

#define DIGEST_LEN 16
#define REASON_MAX 4096
#define KEY_MAX    512

typedef struct Class Class;
typedef struct Bucket Bucket;

/*
 * A device identity as the rules see it, flattened into one allocation in a
 * canonical byte form (which is also what the fingerprint hashes): kind,
 * PCI ids, revision, then name, driver, mdev type, parent, and the
 * attributes sorted by name, each NUL-terminated.  Refcounted: a parent's
 * identity is shared by all of its creatable types and instances.
 */
typedef struct Inputs {
        gint n_ref;
        uint64_t hash[2];
        guint32 len;
        guint32 n_attrs;
        guint8 data[];
} Inputs;

struct MatrixEntry {
        gint n_ref;
        char *key;                  /* in the entry's allocation */
        MatrixEntryKind kind;
        char *parent;               /* NULL for a PCI device */
        char *mdev_type;            /* NULL for a PCI device */
        uint32_t available;         /* creatable: available_instances */
        bool pending;               /* recorded, not evaluated yet (deferred) */
        bool planned;               /* matrix_load(): found in the cache (only while it reads) */
        VfmigAcceptor *acceptor;    /* NULL: no rule / cannot migrate (reason) */
        char *reason;
        char *class_key;            /* with an acceptor: rule, kind, own profile (a GRefString) */
        /* Inputs, private to the matrix. */
        Inputs *dev;                /* device entries: the identity */
        Inputs *pid;                /* the parent's identity (mdev, creatable), or NULL; shared */
        uint64_t flags;
        uint64_t digest[2];         /* over the inputs: the fingerprint's part */
        Class *cls;                 /* where it is indexed, or NULL */
};

/* Targets of one migration type with the same rule, own profile and kind:
 * one accept-clause evaluation answers for all of them. */
struct Class {
        char *key;
        Bucket *bucket;
        bool creatable;
        bool kernel;                /* the rule asks the kernel: per-target with a hook */
        bool sorted;                /* members sorted by key */
        GPtrArray *members;         /* MatrixEntry* (borrowed) */
};

struct Bucket {
        char *type;
        GHashTable *classes;        /* key → Class* (owned) */
        GPtrArray *list;            /* Class* in creation order */
        guint n;
};

typedef struct ParentRec {
        char *name;
        Inputs *identity;           /* given, or bare (name + driver) */
        GPtrArray *types;           /* char* type ids with an entry */
        GArray *available;          /* uint32_t: available_instances of each of types */
        GHashTable *children;       /* mdev device keys with this parent (set) */
} ParentRec;

typedef struct FindCache FindCache;
#define FIND_CACHE_SIZE 4

struct Matrix {
        VfmigRuleSet *rs;
        char *rules_where;          /* " (rules read from DIR, ...)" */
        char *host;
        char *kernel_release;
        GHashTable *drivers;        /* driver → version */
        GHashTable *entries;        /* key → MatrixEntry* (ref) */
        GHashTable *index;          /* migration type → Bucket* */
        GHashTable *parents;        /* name → ParentRec* */
        GHashTable *orphans;        /* parent name → set of mdev keys whose parent is unknown */
        guint n_indexed;
        uint64_t acc[2];            /* sum of the entries' digests (order-free) */
        char *fingerprint;          /* cached, NULL when stale */
        uint64_t generation;
        bool built;
        bool deferred;
        bool deferred_dirty;
        bool bulk;                  /* appending to classes unsorted */
        int64_t cache_generation;   /* from a readable cache file, -1 */
        char *saved_fp;
        uint64_t saved_generation;
        MatrixStats stats;
        FindCache *find_cache[FIND_CACHE_SIZE];   /* the last answers, most recent first */
        GString *scratch;           /* class keys are built here */
};

/* ---- the query cache --------------------------------------------------------- */

/*
 * The last few matrix_find() answers (FIND_CACHE_SIZE, most recently used
 * first), reused when the same question comes again.
 * An answer is a function of the index (classes and their sorted members),
 * the source profile, the options other than the filter, the hook, and the
 * filter's verdict (skip_target()) on each target the run looked at, in
 * order.  So: every change to the index or to an entry drops the cache
 * (find_cache_drop() is called wherever those change), and a hit first asks
 * the filter again about every target of the recorded run: the same answers
 * mean the run would go exactly the same way; any other answer is a miss.
 * Runs in which the kernel is asked per target are never cached.
 */
typedef struct TraceItem {
        MatrixEntry *e;             /* borrowed: any change to the entries drops the cache */
        bool skipped;
} TraceItem;

struct FindCache {
        VfmigProfile *src;
        bool include_creatable, include_unavailable, include_incompatible;
        guint max_results;
        const VfmigKernelHook *hook;
        GArray *trace;              /* TraceItem */
        GPtrArray *results;         /* MatrixResult*, shared with the callers */
};

static void find_cache_free(FindCache *c)
{
        if (!c)
                return;
        vfmig_profile_free(c->src);
        g_array_unref(c->trace);
        g_ptr_array_unref(c->results);
        g_free(c);
}

/* Forget every kept answer. */
static void find_cache_drop(Matrix *m)
{
        for (guint i = 0; i < FIND_CACHE_SIZE && m->find_cache[i]; i++)
                g_clear_pointer(&m->find_cache[i], find_cache_free);
}

/* ---- small helpers -------------------------------------------------------- */

static gint str_ptr_cmp(gconstpointer a, gconstpointer b)
{
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static gint entry_ptr_cmp(gconstpointer a, gconstpointer b)
{
        return strcmp((*(MatrixEntry *const *) a)->key, (*(MatrixEntry *const *) b)->key);
}

static const char *nz(const char *s)
{
        return s && *s ? s : NULL;
}

/* Device, parent and type names as sysfs has them: printable, no '/'
 * (the creatable key's separator) and no newline (the cache's). */
static bool key_ok(const char *s)
{
        static const guint8 bad[256] = { [0x00 ... 0x20] = 1, ['/'] = 1, [0x7f] = 1 };
        size_t n = 0;

        if (!s || !*s)
                return false;
        for (; s[n]; n++)
                if (bad[(guint8) s[n]] || n >= KEY_MAX)
                        return false;
        return true;
}

static void feed_str(GChecksum *s, const char *str)
{
        g_checksum_update(s, (const guchar *) (str ? str : ""), -1);
        g_checksum_update(s, (const guchar *) "", 1);
}

/* A 64-bit FNV-1a with a seed and a final avalanche (splitmix64): two of
 * them make the 128-bit digest of an entry's inputs.  Not cryptographic:
 * the fingerprint is a cache key, and its final form is a SHA-256. */
static uint64_t hash64(const void *p, size_t n, uint64_t h)
{
        const guint8 *b = p;
        size_t i = 0;

        h ^= n * UINT64_C(0x9e3779b97f4a7c15);
        for (; i + 8 <= n; i += 8) {
                uint64_t w;
                memcpy(&w, b + i, 8);
                h ^= w;
                h *= UINT64_C(0x100000001b3);
                h ^= h >> 29;
        }
        for (; i < n; i++) {
                h ^= b[i];
                h *= UINT64_C(0x100000001b3);
        }
        h ^= h >> 30;
        h *= UINT64_C(0xbf58476d1ce4e5b9);
        h ^= h >> 27;
        h *= UINT64_C(0x94d049bb133111eb);
        h ^= h >> 31;
        return h;
}
#define SEED0 UINT64_C(0xcbf29ce484222325)
#define SEED1 UINT64_C(0x84222325cbf29ce4)

/* hash64() with SEED0 and SEED1 in one pass over the bytes. */
static void hash64_pair(const void *p, size_t n, uint64_t out[2])
{
        const guint8 *b = p;
        uint64_t h[2] = { SEED0, SEED1 };
        size_t i = 0;

        for (int k = 0; k < 2; k++)
                h[k] ^= n * UINT64_C(0x9e3779b97f4a7c15);
        for (; i + 8 <= n; i += 8) {
                uint64_t w;
                memcpy(&w, b + i, 8);
                for (int k = 0; k < 2; k++) {
                        h[k] ^= w;
                        h[k] *= UINT64_C(0x100000001b3);
                        h[k] ^= h[k] >> 29;
                }
        }
        for (; i < n; i++)
                for (int k = 0; k < 2; k++) {
                        h[k] ^= b[i];
                        h[k] *= UINT64_C(0x100000001b3);
                }
        for (int k = 0; k < 2; k++) {
                h[k] ^= h[k] >> 30;
                h[k] *= UINT64_C(0xbf58476d1ce4e5b9);
                h[k] ^= h[k] >> 27;
                h[k] *= UINT64_C(0x94d049bb133111eb);
                h[k] ^= h[k] >> 31;
                out[k] = h[k];
        }
}

static Inputs *inputs_ref(Inputs *in)
{
        if (in)
                g_atomic_int_inc(&in->n_ref);
        return in;
}

static void inputs_unref(Inputs *in)
{
        if (in && g_atomic_int_dec_and_test(&in->n_ref))
                g_free(in);
}

static bool inputs_equal(const Inputs *a, const Inputs *b)
{
        if (a == b)
                return true;
        return a && b && a->len == b->len && a->hash[0] == b->hash[0] && memcmp(a->data, b->data, a->len) == 0;
}

#define HEAD_LEN 10   /* kind, vendor, device, subvendor, subdevice (LE), revision */

static void put_str(guint8 **p, const char *s, size_t n)
{
        memcpy(*p, s, n);
        *p += n;
}

typedef struct Attr {
        const char *name, *value;
        size_t name_len, value_len;     /* with the NUL */
} Attr;

/* name_override: the parent's name for a parent identity. */
static Inputs *inputs_new(const VfmigDevice *d, const char *name_override)
{
        const char *name = name_override ? name_override : (d->name ? d->name : "");
        const char *driver = d->driver ? d->driver : "", *mdev_type = d->mdev_type ? d->mdev_type : "";
        const char *parent = d->parent ? d->parent : "";
        size_t name_len = strlen(name) + 1, driver_len = strlen(driver) + 1;
        size_t type_len = strlen(mdev_type) + 1, parent_len = strlen(parent) + 1;
        size_t len = HEAD_LEN + name_len + driver_len + type_len + parent_len;
        Attr few[8], *attrs = few;
        g_autofree Attr *many = NULL;
        guint n = d->attributes ? g_hash_table_size(d->attributes) : 0;
        Inputs *in;
        guint8 *p;

        if (n > 0) {
                GHashTableIter it;
                gpointer k, v;
                guint i = 0;

                if (n > G_N_ELEMENTS(few))
                        attrs = many = g_new(Attr, n);
                g_hash_table_iter_init(&it, d->attributes);
                while (g_hash_table_iter_next(&it, &k, &v)) {
                        Attr a = { k, v, strlen(k) + 1, strlen(v) + 1 };
                        guint j = i++;

                        /* sorted by name as they come: a device has a few */
                        while (j > 0 && strcmp(attrs[j - 1].name, a.name) > 0) {
                                attrs[j] = attrs[j - 1];
                                j--;
                        }
                        attrs[j] = a;
                        len += a.name_len + a.value_len;
                }
        }
        in = g_malloc(sizeof(Inputs) + len);
        in->n_ref = 1;
        in->len = (guint32) len;
        in->n_attrs = n;
        p = in->data;
        *p++ = d->kind == VFMIG_DEVICE_MDEV ? 'm' : 'p';
        *p++ = (guint8) (d->vendor_id & 0xff), *p++ = (guint8) (d->vendor_id >> 8);
        *p++ = (guint8) (d->device_id & 0xff), *p++ = (guint8) (d->device_id >> 8);
        *p++ = (guint8) (d->subsystem_vendor_id & 0xff), *p++ = (guint8) (d->subsystem_vendor_id >> 8);
        *p++ = (guint8) (d->subsystem_device_id & 0xff), *p++ = (guint8) (d->subsystem_device_id >> 8);
        *p++ = d->revision;
        put_str(&p, name, name_len);
        put_str(&p, driver, driver_len);
        put_str(&p, mdev_type, type_len);
        put_str(&p, parent, parent_len);
        for (guint i = 0; i < n; i++) {
                put_str(&p, attrs[i].name, attrs[i].name_len);
                put_str(&p, attrs[i].value, attrs[i].value_len);
        }
        g_assert((size_t) (p - in->data) == len);
        hash64_pair(in->data, len, in->hash);
        return in;
}

/* A VfmigDevice that points into an Inputs (valid while both live). */
typedef struct View {
        VfmigDevice d;
        GHashTable *attrs;
} View;

static const char *take_str(const guint8 **p)
{
        const char *s = (const char *) *p;

        *p += strlen(s) + 1;
        return s;
}

static const VfmigDevice *view_init(View *v, const Inputs *in)
{
        const guint8 *p;

        if (!in)
                return NULL;
        p = in->data;
        v->attrs = g_hash_table_new(g_str_hash, g_str_equal);
        v->d = (VfmigDevice) {
                .kind = p[0] == 'm' ? VFMIG_DEVICE_MDEV : VFMIG_DEVICE_PCI,
                .vendor_id = (uint16_t) (p[1] | p[2] << 8),
                .device_id = (uint16_t) (p[3] | p[4] << 8),
                .subsystem_vendor_id = (uint16_t) (p[5] | p[6] << 8),
                .subsystem_device_id = (uint16_t) (p[7] | p[8] << 8),
                .revision = p[9],
                .iommu_group = -1,
                .numa_node = -1,
                .sysfs_path = (char *) "",
                .attributes = v->attrs,
        };
        p += HEAD_LEN;
        v->d.name = (char *) take_str(&p);
        v->d.driver = (char *) take_str(&p);
        v->d.mdev_type = (char *) take_str(&p);
        v->d.parent = (char *) take_str(&p);
        for (guint i = 0; i < in->n_attrs; i++) {
                const char *k = take_str(&p);
                g_hash_table_insert(v->attrs, (gpointer) k, (gpointer) take_str(&p));
        }
        return &v->d;
}

static void view_clear(View *v)
{
        g_clear_pointer(&v->attrs, g_hash_table_unref);
}

static void entry_compute_digest(MatrixEntry *e)
{
        /* kind, key, flags, the identity's hashes, the parent identity's. */
        uint64_t buf[8] = {
                e->kind, e->flags,
                e->dev ? e->dev->hash[0] : 0, e->dev ? e->dev->hash[1] : 0,
                e->pid ? e->pid->hash[0] : 1, e->pid ? e->pid->hash[1] : 1,
        };

        hash64_pair(e->key, strlen(e->key), buf + 6);
        hash64_pair(buf, sizeof buf, e->digest);
}

static void acc_add(Matrix *m, const MatrixEntry *e, int sign)
{
        for (int i = 0; i < 2; i++)
                m->acc[i] += sign > 0 ? e->digest[i] : -e->digest[i];
        g_clear_pointer(&m->fingerprint, g_free);
}

/* ---- entries ---------------------------------------------------------------- */

/* The key in the entry's allocation: thousands are made at a start. */
static MatrixEntry *entry_alloc(MatrixEntryKind kind, const char *key)
{
        size_t n = strlen(key) + 1;
        MatrixEntry *e = g_malloc0(sizeof(MatrixEntry) + n);

        e->n_ref = 1;
        e->kind = kind;
        e->key = memcpy(e + 1, key, n);
        e->pending = true;
        return e;
}

MatrixEntry *matrix_entry_ref(MatrixEntry *e)
{
        g_atomic_int_inc(&e->n_ref);
        return e;
}

static void entry_clear_result(MatrixEntry *e)
{
        g_clear_pointer(&e->acceptor, vfmig_acceptor_unref);
        g_clear_pointer(&e->reason, g_free);
        g_clear_pointer(&e->class_key, g_ref_string_release);
}

void matrix_entry_unref(MatrixEntry *e)
{
        if (!e || !g_atomic_int_dec_and_test(&e->n_ref))
                return;
        entry_clear_result(e);
        g_free(e->parent);
        g_free(e->mdev_type);
        inputs_unref(e->dev);
        inputs_unref(e->pid);
        g_free(e);
}

const char *matrix_entry_get_key(const MatrixEntry *e) { return e->key; }
MatrixEntryKind matrix_entry_get_kind(const MatrixEntry *e) { return e->kind; }
const char *matrix_entry_get_parent(const MatrixEntry *e) { return e->parent; }
const char *matrix_entry_get_mdev_type(const MatrixEntry *e) { return e->mdev_type; }
const VfmigAcceptor *matrix_entry_get_acceptor(const MatrixEntry *e) { return e->acceptor; }
const char *matrix_entry_get_reason(const MatrixEntry *e) { return e->reason; }

uint32_t matrix_entry_get_available_instances(const MatrixEntry *e)
{
        return e->kind == MATRIX_ENTRY_CREATABLE ? e->available : 0;
}

bool matrix_entry_is_available(const MatrixEntry *e)
{
        return e->kind == MATRIX_ENTRY_DEVICE || e->available > 0;
}

const VfmigProfile *matrix_entry_get_profile(const MatrixEntry *e)
{
        return e->acceptor ? vfmig_acceptor_get_profile(e->acceptor) : NULL;
}

const char *matrix_entry_get_migration_type(const MatrixEntry *e)
{
        return e->acceptor ? vfmig_acceptor_get_migration_type(e->acceptor) : NULL;
}

const char *matrix_entry_get_rule_id(const MatrixEntry *e)
{
        return e->acceptor ? vfmig_acceptor_get_rule_id(e->acceptor) : NULL;
}

/* The profile fields the accept clauses read, canonically. */
static void append_profile_key(GString *s, const VfmigProfile *p)
{
        guint n = 0;
        g_autofree gpointer *keys = g_hash_table_get_keys_as_array(p->attributes, &n);

        g_string_append_printf(s, "%s\x1f%s\x1f%x", p->migration_type, p->migration_version, p->capabilities);
        qsort(keys, n, sizeof(gpointer), str_ptr_cmp);
        for (guint i = 0; i < n; i++)
                g_string_append_printf(s, "\x1e%s=%s", (const char *) keys[i],
                                       (const char *) g_hash_table_lookup(p->attributes, keys[i]));
}

static char *profile_key(const VfmigProfile *p)
{
        GString *s = g_string_sized_new(128);

        append_profile_key(s, p);
        return g_string_free(s, false);
}

/* A GRefString (the members of a class restored from the cache share one),
 * built in the matrix's scratch buffer. */
static char *class_key_for(Matrix *m, const VfmigAcceptor *a, MatrixEntryKind kind)
{
        GString *s = m->scratch;

        g_string_truncate(s, 0);
        g_string_append_printf(s, "%s\x1f%c\x1f", vfmig_acceptor_get_rule_id(a),
                               kind == MATRIX_ENTRY_CREATABLE ? 'c' : 'd');
        append_profile_key(s, vfmig_acceptor_get_profile(a));
        return g_ref_string_new_len(s->str, (gssize) s->len);
}

/* Everything a reader of the matrix can see of an entry. */
static bool entry_content_equal(const MatrixEntry *a, const MatrixEntry *b)
{
        if (a->kind != b->kind || strcmp(a->key, b->key) != 0 || g_strcmp0(a->parent, b->parent) != 0 ||
            g_strcmp0(a->mdev_type, b->mdev_type) != 0 || a->available != b->available ||
            a->pending != b->pending || !a->acceptor != !b->acceptor || g_strcmp0(a->reason, b->reason) != 0)
                return false;
        if (!a->acceptor)
                return true;
        return strcmp(a->class_key, b->class_key) == 0 &&
               strcmp(vfmig_acceptor_get_rule_file(a->acceptor), vfmig_acceptor_get_rule_file(b->acceptor)) == 0 &&
               strcmp(vfmig_acceptor_get_rule_definition(a->acceptor),
                      vfmig_acceptor_get_rule_definition(b->acceptor)) == 0;
}

/* ---- the index ---------------------------------------------------------------- */

static void class_free(Class *c)
{
        g_free(c->key);
        g_ptr_array_unref(c->members);
        g_free(c);
}

static void bucket_free(Bucket *b)
{
        g_hash_table_unref(b->classes);
        g_ptr_array_unref(b->list);
        g_free(b->type);
        g_free(b);
}

/* Position of key in a sorted member array (insertion point when absent). */
static guint members_search(GPtrArray *a, const char *key, bool *found)
{
        guint lo = 0, hi = a->len;

        *found = false;
        while (lo < hi) {
                guint mid = lo + (hi - lo) / 2;
                int c = strcmp(((MatrixEntry *) a->pdata[mid])->key, key);
                if (c == 0) {
                        *found = true;
                        return mid;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

static void class_append(Matrix *m, Class *c, MatrixEntry *e)
{
        find_cache_drop(m);
        if (m->bulk || !c->sorted) {
                g_ptr_array_add(c->members, e);
                c->sorted = c->members->len <= 1;
        } else {
                bool found;
                guint pos = members_search(c->members, e->key, &found);
                g_ptr_array_insert(c->members, (gint) pos, e);
        }
        e->cls = c;
        c->bucket->n++;
        m->n_indexed++;
}

static void index_insert(Matrix *m, MatrixEntry *e)
{
        find_cache_drop(m);
        const char *type = vfmig_acceptor_get_migration_type(e->acceptor);
        Bucket *b = g_hash_table_lookup(m->index, type);
        Class *c;

        if (!b) {
                b = g_new0(Bucket, 1);
                b->type = g_strdup(type);
                b->classes = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify) class_free);
                b->list = g_ptr_array_new();
                g_hash_table_insert(m->index, b->type, b);
        }
        c = g_hash_table_lookup(b->classes, e->class_key);
        if (!c) {
                c = g_new0(Class, 1);
                c->key = g_strdup(e->class_key);
                c->bucket = b;
                c->creatable = e->kind == MATRIX_ENTRY_CREATABLE;
                c->kernel = vfmig_acceptor_uses_kernel(e->acceptor);
                c->sorted = true;
                c->members = g_ptr_array_new();
                g_hash_table_insert(b->classes, c->key, c);
                g_ptr_array_add(b->list, c);
        }
        class_append(m, c, e);
}

static void index_remove(Matrix *m, MatrixEntry *e)
{
        Class *c = e->cls;
        Bucket *b;
        bool found = false;
        guint pos = 0;

        find_cache_drop(m);
        if (!c)
                return;
        b = c->bucket;
        if (c->sorted)
                pos = members_search(c->members, e->key, &found);
        if (!found || c->members->pdata[pos] != e)
                found = g_ptr_array_find(c->members, e, &pos);
        g_assert(found);
        g_ptr_array_remove_index(c->members, pos);
        e->cls = NULL;
        b->n--;
        m->n_indexed--;
        if (c->members->len == 0) {
                g_ptr_array_remove(b->list, c);
                g_hash_table_remove(b->classes, c->key);
        }
        if (b->n == 0)
                g_hash_table_remove(m->index, b->type);
}

static void index_sort_all(Matrix *m)
{
        GHashTableIter it;
        gpointer v;

        find_cache_drop(m);
        g_hash_table_iter_init(&it, m->index);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                Bucket *b = v;
                for (guint i = 0; i < b->list->len; i++) {
                        Class *c = b->list->pdata[i];
                        bool sorted = true;
                        for (guint j = 1; sorted && j < c->members->len; j++)
                                sorted = strcmp(((MatrixEntry *) c->members->pdata[j - 1])->key,
                                                ((MatrixEntry *) c->members->pdata[j])->key) < 0;
                        if (!sorted)
                                g_ptr_array_sort(c->members, entry_ptr_cmp);
                        c->sorted = true;
                }
        }
}

/* ---- the entry table ------------------------------------------------------- */

static ParentRec *parent_rec(Matrix *m, const char *name)
{
        return name ? g_hash_table_lookup(m->parents, name) : NULL;
}

/* The mdev instances of a parent, for refreshing them when it changes. */
static GHashTable *children_set(Matrix *m, const char *parent, bool create)
{
        ParentRec *r = parent_rec(m, parent);
        GHashTable *set;

        if (r)
                return r->children;
        set = g_hash_table_lookup(m->orphans, parent);
        if (!set && create) {
                set = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
                g_hash_table_insert(m->orphans, g_strdup(parent), set);
        }
        return set;
}

/* Put e in the table in place of old (the entry of its key, or NULL) and in
 * the index. */
static void table_put_over(Matrix *m, MatrixEntry *e, MatrixEntry *old)
{
        find_cache_drop(m);
        if (old) {
                index_remove(m, old);
                acc_add(m, old, -1);
                if (old->kind == MATRIX_ENTRY_DEVICE && old->parent && g_strcmp0(old->parent, e->parent) != 0) {
                        GHashTable *set = children_set(m, old->parent, false);
                        if (set)
                                g_hash_table_remove(set, old->key);
                }
        }
        if (e->kind == MATRIX_ENTRY_DEVICE && e->parent)
                g_hash_table_add(children_set(m, e->parent, true), g_strdup(e->key));
        g_hash_table_replace(m->entries, e->key, e);   /* unrefs old */
        acc_add(m, e, +1);
        if (e->acceptor)
                index_insert(m, e);
}

/* Put e in the table (replacing an entry of its key) and in the index. */
static void table_put(Matrix *m, MatrixEntry *e)
{
        table_put_over(m, e, g_hash_table_lookup(m->entries, e->key));
}

static void table_remove(Matrix *m, MatrixEntry *e)
{
        find_cache_drop(m);
        index_remove(m, e);
        acc_add(m, e, -1);
        if (e->kind == MATRIX_ENTRY_DEVICE && e->parent) {
                GHashTable *set = children_set(m, e->parent, false);
                if (set)
                        g_hash_table_remove(set, e->key);
        }
        g_hash_table_remove(m->entries, e->key);
}

/* ---- evaluation -------------------------------------------------------------- */

static void evaluate(Matrix *m, MatrixEntry *e)
{
        g_autofree char *why = NULL;
        int r;

        find_cache_drop(m);
        entry_clear_result(e);
        e->pending = false;
        m->stats.evaluations++;
        {
                View dv = { 0 }, pv = { 0 };
                const VfmigDevice *parent = e->pid ? view_init(&pv, e->pid) : NULL;
                if (e->kind == MATRIX_ENTRY_DEVICE)
                        r = vfmig_acceptor_new(m->rs, view_init(&dv, e->dev), parent, e->flags, &e->acceptor, &why);
                else
                        r = vfmig_acceptor_new_for_mdev_type(m->rs, parent, e->mdev_type, VFMIG_COMPAT_FLAG_UNKNOWN,
                                                             &e->acceptor, &why);
                view_clear(&dv);
                view_clear(&pv);
        }
        if (r >= 0) {
                e->class_key = class_key_for(m, e->acceptor, e->kind);
                return;
        }
        if (r == -ENOENT)
                e->reason = g_strconcat(why ? why : "no compatibility rule matches", m->rules_where, NULL);
        else
                e->reason = g_steal_pointer(&why);
        if (!e->reason)
                e->reason = g_strdup("no profile");
}

/* Takes dev and pid. */
static MatrixEntry *entry_new_device(Inputs *dev, Inputs *pid, uint64_t flags)
{
        const guint8 *p = dev->data + HEAD_LEN;
        const char *name = take_str(&p), *mdev_type, *parent;
        MatrixEntry *e = entry_alloc(MATRIX_ENTRY_DEVICE, name);

        (void) take_str(&p);   /* driver */
        mdev_type = take_str(&p);
        parent = take_str(&p);
        e->dev = dev;
        if (dev->data[0] == 'm') {
                e->parent = g_strdup(nz(parent));
                e->mdev_type = g_strdup(nz(mdev_type));
        }
        e->pid = pid;
        e->flags = flags;
        entry_compute_digest(e);
        return e;
}

static MatrixEntry *entry_new_creatable(const char *parent, const char *type, uint32_t available, Inputs *pid)
{
        g_autofree char *key = g_strdup_printf("%s/%s", parent, type);
        MatrixEntry *e = entry_alloc(MATRIX_ENTRY_CREATABLE, key);

        e->parent = g_strdup(parent);
        e->mdev_type = g_strdup(type);
        e->available = available;
        e->pid = inputs_ref(pid);
        entry_compute_digest(e);
        return e;
}

/*
 * Install ne (a new entry for its key, inputs recorded) in place of whatever
 * has its key.  Evaluates unless deferred.  Returns whether the content
 * changed.  Takes ne.
 */
static bool install_over(Matrix *m, MatrixEntry *ne, MatrixEntry *oe)
{
        if (oe && oe->kind == ne->kind && memcmp(oe->digest, ne->digest, sizeof oe->digest) == 0) {
                /* Same inputs: at most the availability moved. */
                bool changed = oe->available != ne->available;
                oe->available = ne->available;
                matrix_entry_unref(ne);
                if (changed && m->deferred)
                        m->deferred_dirty = true;
                return changed;
        }
        if (m->deferred) {
                table_put_over(m, ne, oe);
                m->deferred_dirty = true;
                return true;
        }
        evaluate(m, ne);
        if (oe && entry_content_equal(oe, ne)) {
                /* Nothing a reader sees changed: keep the entry (and its
                 * acceptor), take the new inputs for the fingerprint. */
                acc_add(m, oe, -1);
                memcpy(oe->digest, ne->digest, sizeof oe->digest);
                acc_add(m, oe, +1);
                Inputs *t = oe->dev; oe->dev = ne->dev; ne->dev = t;
                t = oe->pid; oe->pid = ne->pid; ne->pid = t;
                oe->flags = ne->flags;
                matrix_entry_unref(ne);
                return false;
        }
        table_put_over(m, ne, oe);
        return true;
}

/* The same for the entry of ne's key. */
static bool install(Matrix *m, MatrixEntry *ne)
{
        return install_over(m, ne, g_hash_table_lookup(m->entries, ne->key));
}

/* ---- lifetime --------------------------------------------------------------- */

static void parent_rec_free(ParentRec *r)
{
        g_free(r->name);
        inputs_unref(r->identity);
        g_ptr_array_unref(r->types);
        g_array_unref(r->available);
        if (r->children)
                g_hash_table_unref(r->children);
        g_free(r);
}

static char *rules_where_for(VfmigRuleSet *rs)
{
        const char *const *files = vfmig_rules_files(rs);
        g_autoptr(GPtrArray) dirs = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GString) s = g_string_new(NULL);

        for (size_t i = 0; files && files[i]; i++) {
                char *d = g_path_get_dirname(files[i]);
                if (g_ptr_array_find_with_equal_func(dirs, d, g_str_equal, NULL))
                        g_free(d);
                else
                        g_ptr_array_add(dirs, d);
        }
        if (dirs->len == 0)
                return g_strdup(" (no rules files are in force)");
        g_string_append(s, " (rules read from ");
        for (guint i = 0; i < dirs->len; i++)
                g_string_append_printf(s, "%s%s", i ? ", " : "", (const char *) dirs->pdata[i]);
        g_string_append_c(s, ')');
        return g_string_free(g_steal_pointer(&s), false);
}

Matrix *matrix_new(VfmigRuleSet *rs, const char *host_name)
{
        Matrix *m = g_new0(Matrix, 1);

        m->rs = vfmig_rules_ref(rs);
        m->rules_where = rules_where_for(rs);
        m->host = g_strdup(host_name ? host_name : "");
        m->kernel_release = g_strdup("");
        m->drivers = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        m->entries = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify) matrix_entry_unref);
        m->index = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify) bucket_free);
        m->parents = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify) parent_rec_free);
        m->orphans = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) g_hash_table_unref);
        m->cache_generation = -1;
        m->scratch = g_string_sized_new(256);
        return m;
}

void matrix_free(Matrix *m)
{
        if (!m)
                return;
        /* The index borrows entries: drop it first. */
        find_cache_drop(m);
        g_hash_table_unref(m->index);
        g_hash_table_unref(m->entries);
        g_hash_table_unref(m->parents);
        g_hash_table_unref(m->orphans);
        g_hash_table_unref(m->drivers);
        vfmig_rules_unref(m->rs);
        g_free(m->rules_where);
        g_free(m->host);
        g_free(m->kernel_release);
        g_free(m->fingerprint);
        g_free(m->saved_fp);
        g_string_free(m->scratch, true);
        g_free(m);
}

static void bump(Matrix *m)
{
        find_cache_drop(m);
        if (!m->deferred)
                m->generation++;
}

bool matrix_set_kernel_release(Matrix *m, const char *release)
{
        if (g_strcmp0(m->kernel_release, release ? release : "") == 0)
                return false;
        g_free(m->kernel_release);
        m->kernel_release = g_strdup(release ? release : "");
        g_clear_pointer(&m->fingerprint, g_free);
        return true;
}

bool matrix_set_driver_version(Matrix *m, const char *driver, const char *version)
{
        if (!driver)
                return false;
        if (!version) {
                if (!g_hash_table_remove(m->drivers, driver))
                        return false;
        } else {
                if (g_strcmp0(g_hash_table_lookup(m->drivers, driver), version) == 0)
                        return false;
                g_hash_table_replace(m->drivers, g_strdup(driver), g_strdup(version));
        }
        g_clear_pointer(&m->fingerprint, g_free);
        return true;
}

VfmigRuleSet *matrix_get_rules(Matrix *m)
{
        return m->rs;
}

/* Every entry, sorted by key (borrowed). */
static GPtrArray *entries_sorted(Matrix *m)
{
        GPtrArray *a = g_ptr_array_sized_new(g_hash_table_size(m->entries));
        GHashTableIter it;
        gpointer v;

        g_hash_table_iter_init(&it, m->entries);
        while (g_hash_table_iter_next(&it, NULL, &v))
                g_ptr_array_add(a, v);
        g_ptr_array_sort(a, entry_ptr_cmp);
        return a;
}

/* A fresh entry with e's inputs (taken from e, which is about to go). */
static MatrixEntry *entry_take_inputs(MatrixEntry *e)
{
        MatrixEntry *n = entry_alloc(e->kind, e->key);

        n->parent = g_strdup(e->parent);
        n->mdev_type = g_strdup(e->mdev_type);
        n->available = e->available;
        n->dev = g_steal_pointer(&e->dev);
        n->pid = g_steal_pointer(&e->pid);
        n->flags = e->flags;
        memcpy(n->digest, e->digest, sizeof n->digest);
        return n;
}

bool matrix_set_rules(Matrix *m, VfmigRuleSet *rs)
{
        g_autoptr(GPtrArray) old = NULL;
        bool changed = false;

        if (rs == m->rs || strcmp(vfmig_rules_fingerprint(rs), vfmig_rules_fingerprint(m->rs)) == 0)
                return false;
        find_cache_drop(m);
        vfmig_rules_ref(rs);
        vfmig_rules_unref(m->rs);
        m->rs = rs;
        g_free(m->rules_where);
        m->rules_where = rules_where_for(rs);
        g_clear_pointer(&m->fingerprint, g_free);

        old = entries_sorted(m);
        g_ptr_array_foreach(old, (GFunc) (void (*)(void)) matrix_entry_ref, NULL);
        m->bulk = true;
        for (guint i = 0; i < old->len; i++) {
                MatrixEntry *oe = old->pdata[i];
                MatrixEntry *ne = entry_take_inputs(oe);
                if (m->deferred) {
                        m->deferred_dirty = true;
                } else {
                        evaluate(m, ne);
                        changed |= !entry_content_equal(oe, ne);
                }
                table_put(m, ne);
                matrix_entry_unref(oe);
        }
        m->bulk = false;
        index_sort_all(m);
        if (changed)
                bump(m);
        return changed;
}

/* ---- deferred start ---------------------------------------------------------- */

void matrix_defer(Matrix *m)
{
        find_cache_drop(m);
        m->deferred = true;
}

bool matrix_is_deferred(const Matrix *m)
{
        return m->deferred;
}

static bool end_deferral(Matrix *m)
{
        bool changed = !m->built || m->deferred_dirty;

        find_cache_drop(m);
        m->deferred = false;
        m->deferred_dirty = false;
        if (!m->built)
                m->generation = m->cache_generation >= 0 ? (uint64_t) m->cache_generation + 1 : 1;
        else if (changed)
                m->generation++;
        m->built = true;
        return changed;
}

bool matrix_build(Matrix *m)
{
        GHashTableIter it;
        gpointer v;

        if (!m->deferred)
                return false;
        m->bulk = true;
        g_hash_table_iter_init(&it, m->entries);
        while (g_hash_table_iter_next(&it, NULL, &v)) {
                MatrixEntry *e = v;
                if (!e->pending)
                        continue;
                evaluate(m, e);
                if (e->acceptor)
                        index_insert(m, e);
        }
        m->bulk = false;
        index_sort_all(m);
        return end_deferral(m);
}

/* ---- incremental updates -------------------------------------------------- */

bool matrix_update_device(Matrix *m, const VfmigDevice *dev, const VfmigDevice *parent_or_NULL, uint64_t flags)
{
        Inputs *pid = NULL;
        MatrixEntry *old;

        if (!dev || !key_ok(dev->name))
                return false;
        old = g_hash_table_lookup(m->entries, dev->name);
        if (old && old->kind != MATRIX_ENTRY_DEVICE)
                return false;
        if (dev->kind == VFMIG_DEVICE_MDEV) {
                ParentRec *r = parent_rec(m, nz(dev->parent));
                if (parent_or_NULL)
                        pid = inputs_new(parent_or_NULL, NULL);
                if (r && (!pid || inputs_equal(pid, r->identity))) {
                        inputs_unref(pid);
                        pid = inputs_ref(r->identity);   /* share it */
                }
        } else if (parent_or_NULL) {
                pid = inputs_new(parent_or_NULL, NULL);
        }
        if (install_over(m, entry_new_device(inputs_new(dev, NULL), pid, flags), old)) {
                bump(m);
                return true;
        }
        return false;
}

bool matrix_remove_device(Matrix *m, const char *name)
{
        MatrixEntry *e = name ? g_hash_table_lookup(m->entries, name) : NULL;

        if (!e || e->kind != MATRIX_ENTRY_DEVICE)
                return false;
        table_remove(m, e);
        if (m->deferred)
                m->deferred_dirty = true;
        bump(m);
        return true;
}

/*
 * Whether p, with identity ident, is what r already holds: the same identity
 * and the same types (the valid ones, each once, in order) with the same
 * availability.  Then an update would change nothing: inventories tell every
 * parent again when one of them changes (at the start, once per parent).
 */
static bool parent_unchanged(const ParentRec *r, const VfmigMdevParent *p, const Inputs *ident)
{
        guint n = 0;

        if (!inputs_equal(r->identity, ident))
                return false;
        for (guint i = 0; p->types && i < p->types->len; i++) {
                const VfmigMdevType *t = p->types->pdata[i];
                bool again = false;

                if (!key_ok(t->id))
                        continue;
                if (n < r->types->len && strcmp(r->types->pdata[n], t->id) == 0) {
                        if (g_array_index(r->available, uint32_t, n) != t->available_instances)
                                return false;
                        n++;
                        continue;
                }
                for (guint j = 0; j < n && !again; j++)
                        again = strcmp(r->types->pdata[j], t->id) == 0;
                if (!again)
                        return false;
        }
        return n == r->types->len;
}

bool matrix_update_parent(Matrix *m, const VfmigMdevParent *p, const VfmigDevice *parent_identity_or_NULL)
{
        Inputs *ident;
        g_autoptr(GPtrArray) types = NULL;
        g_autoptr(GArray) available = NULL;
        ParentRec *r;
        bool changed = false, ident_changed = true;

        if (!p || !key_ok(p->name))
                return false;
        if (parent_identity_or_NULL) {
                ident = inputs_new(parent_identity_or_NULL, p->name);
        } else {
                g_autoptr(VfmigDevice) bare = vfmig_device_new_full(p->name, VFMIG_DEVICE_PCI, p->driver, NULL, NULL);
                ident = inputs_new(bare, NULL);
        }

        r = parent_rec(m, p->name);
        if (r && parent_unchanged(r, p, ident)) {
                inputs_unref(ident);
                return false;
        }
        types = g_ptr_array_new_with_free_func(g_free);
        available = g_array_new(false, false, sizeof(uint32_t));
        if (!r) {
                r = g_new0(ParentRec, 1);
                r->name = g_strdup(p->name);
                r->types = g_ptr_array_new_with_free_func(g_free);
                r->available = g_array_new(false, false, sizeof(uint32_t));
                gpointer stolen_key = NULL;
                if (g_hash_table_steal_extended(m->orphans, p->name, &stolen_key, (gpointer *) &r->children))
                        g_free(stolen_key);
                else
                        r->children = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
                g_hash_table_insert(m->parents, r->name, r);
        } else if (inputs_equal(r->identity, ident)) {
                ident_changed = false;
                inputs_unref(ident);
                ident = inputs_ref(r->identity);
        }

        for (guint i = 0; p->types && i < p->types->len; i++) {
                const VfmigMdevType *t = p->types->pdata[i];
                if (!key_ok(t->id) ||
                    g_ptr_array_find_with_equal_func(types, t->id, g_str_equal, NULL))
                        continue;
                g_ptr_array_add(types, g_strdup(t->id));
                g_array_append_val(available, t->available_instances);
                changed |= install(m, entry_new_creatable(p->name, t->id, t->available_instances, ident));
        }
        for (guint i = 0; i < r->types->len; i++) {
                g_autofree char *key = NULL;
                MatrixEntry *e;
                if (g_ptr_array_find_with_equal_func(types, r->types->pdata[i], g_str_equal, NULL))
                        continue;
                key = g_strdup_printf("%s/%s", p->name, (const char *) r->types->pdata[i]);
                e = g_hash_table_lookup(m->entries, key);
                if (e && e->kind == MATRIX_ENTRY_CREATABLE) {
                        table_remove(m, e);
                        changed = true;
                        if (m->deferred)
                                m->deferred_dirty = true;
                }
        }
        g_ptr_array_unref(r->types);
        r->types = g_steal_pointer(&types);
        g_array_unref(r->available);
        r->available = g_steal_pointer(&available);
        inputs_unref(r->identity);
        r->identity = ident;

        if (ident_changed && g_hash_table_size(r->children) > 0) {
                /* The mdev instances read the parent's identity too. */
                g_autofree gpointer *keys = NULL;
                g_autoptr(GPtrArray) copy = g_ptr_array_new_with_free_func(g_free);
                guint n = 0;
                keys = g_hash_table_get_keys_as_array(r->children, &n);
                for (guint i = 0; i < n; i++)
                        g_ptr_array_add(copy, g_strdup(keys[i]));
                for (guint i = 0; i < copy->len; i++) {
                        MatrixEntry *e = g_hash_table_lookup(m->entries, copy->pdata[i]);
                        if (e && e->kind == MATRIX_ENTRY_DEVICE && e->dev)
                                changed |= install(m, entry_new_device(inputs_ref(e->dev), inputs_ref(r->identity),
                                                                       e->flags));
                }
        }
        if (changed)
                bump(m);
        return changed;
}

bool matrix_remove_parent(Matrix *m, const char *name)
{
        ParentRec *r = parent_rec(m, name);
        bool changed = false;

        if (!r)
                return false;
        for (guint i = 0; i < r->types->len; i++) {
                g_autofree char *key = g_strdup_printf("%s/%s", name, (const char *) r->types->pdata[i]);
                MatrixEntry *e = g_hash_table_lookup(m->entries, key);
                if (e && e->kind == MATRIX_ENTRY_CREATABLE) {
                        table_remove(m, e);
                        changed = true;
                }
        }
        if (g_hash_table_size(r->children) > 0)
                g_hash_table_insert(m->orphans, g_strdup(r->name), g_steal_pointer(&r->children));
        g_hash_table_remove(m->parents, name);
        if (changed) {
                if (m->deferred)
                        m->deferred_dirty = true;
                bump(m);
        }
        return changed;
}

/* ---- reading ------------------------------------------------------------------ */

uint64_t matrix_generation(const Matrix *m)
{
        return m->generation;
}

const char *matrix_fingerprint(Matrix *m)
{
        if (!m->fingerprint) {
                g_autoptr(GChecksum) s = g_checksum_new(G_CHECKSUM_SHA256);
                g_autofree gpointer *drivers = NULL;
                char buf[128];
                guint n = 0;

                feed_str(s, "vfmig-matrix-fingerprint 1");
                feed_str(s, m->kernel_release);
                feed_str(s, vfmig_rules_fingerprint(m->rs));
                drivers = g_hash_table_get_keys_as_array(m->drivers, &n);
                qsort(drivers, n, sizeof(gpointer), str_ptr_cmp);
                for (guint i = 0; i < n; i++) {
                        feed_str(s, drivers[i]);
                        feed_str(s, g_hash_table_lookup(m->drivers, drivers[i]));
                }
                g_snprintf(buf, sizeof buf, "drivers=%u entries=%u %016" G_GINT64_MODIFIER "x%016" G_GINT64_MODIFIER
                           "x", n, g_hash_table_size(m->entries), m->acc[0], m->acc[1]);
                feed_str(s, buf);
                m->fingerprint = g_strconcat("sha256:", g_checksum_get_string(s), NULL);
        }
        return m->fingerprint;
}

guint matrix_size(const Matrix *m)
{
        return g_hash_table_size(m->entries);
}

guint matrix_indexed_size(const Matrix *m)
{
        return m->n_indexed;
}

guint matrix_count_type(const Matrix *m, const char *migration_type)
{
        Bucket *b = migration_type ? g_hash_table_lookup(m->index, migration_type) : NULL;

        return b ? b->n : 0;
}

MatrixEntry *matrix_lookup(Matrix *m, const char *key)
{
        return key ? g_hash_table_lookup(m->entries, key) : NULL;
}

MatrixStats matrix_get_stats(const Matrix *m)
{
        return m->stats;
}

void matrix_reset_stats(Matrix *m)
{
        m->stats = (MatrixStats) { 0 };
}

bool matrix_needs_save(Matrix *m)
{
        return !m->deferred && (!m->saved_fp || strcmp(m->saved_fp, matrix_fingerprint(m)) != 0 ||
                                m->saved_generation != m->generation);
}

/* ---- queries ------------------------------------------------------------------- */

void matrix_result_free(MatrixResult *r)
{
        if (!r)
                return;
        matrix_entry_unref(r->entry);
        vfmig_verdict_clear(&r->verdict);
        g_free(r);
}

/* Results share a class's reasons and to_apply (read-only, refcounted). */
static void verdict_share(VfmigVerdict *dst, const VfmigVerdict *src)
{
        dst->compatible = src->compatible;
        dst->score = src->score;
        dst->reasons = g_ptr_array_ref(src->reasons);
        dst->to_apply = g_hash_table_ref(src->to_apply);
        dst->rule_id = g_strdup(src->rule_id);
}

typedef struct KItem {
        MatrixEntry *e;
        VfmigVerdict v;
} KItem;

typedef struct Stream {
        bool creatable;
        /* A class: its members share one verdict. */
        MatrixEntry **items;
        VfmigVerdict *shared;
        /* Or targets asked one by one (kernel clauses with a hook). */
        GArray *kitems;            /* KItem, by score desc then key */
        guint n, pos;
} Stream;

typedef struct Query {
        Matrix *m;
        const MatrixFindOptions *opt;
        GArray *trace;             /* TraceItem: every filter verdict, in order; NULL: not cached */
} Query;

static int stream_score(const Stream *s)
{
        return s->kitems ? g_array_index(s->kitems, KItem, s->pos).v.score : s->shared->score;
}

static MatrixEntry *stream_head(const Stream *s)
{
        return s->kitems ? g_array_index(s->kitems, KItem, s->pos).e : s->items[s->pos];
}

static const VfmigVerdict *stream_verdict(const Stream *s)
{
        return s->kitems ? &g_array_index(s->kitems, KItem, s->pos).v : s->shared;
}

static bool filter_skips(const MatrixFindOptions *opt, const MatrixEntry *e)
{
        if (e->kind == MATRIX_ENTRY_CREATABLE && e->available == 0 && !opt->include_unavailable)
                return true;
        return opt->is_busy && opt->is_busy(e->key, opt->userdata);
}

static bool skip_target(const Query *q, const MatrixEntry *e)
{
        bool skip = filter_skips(q->opt, e);

        if (q->trace) {
                TraceItem t = { .e = (MatrixEntry *) e, .skipped = skip };
                g_array_append_val(q->trace, t);
        }
        return skip;
}

static bool find_cache_options_match(const FindCache *c, const MatrixFindOptions *opt, const VfmigKernelHook *hook)
{
        return c->include_creatable == opt->include_creatable && c->include_unavailable == opt->include_unavailable &&
               c->include_incompatible == opt->include_incompatible && c->max_results == opt->max_results &&
               c->hook == hook;
}

/* The kept answer to this question when it is still the answer, else NULL. */
static GPtrArray *find_cache_lookup(Matrix *m, const VfmigProfile *src, const MatrixFindOptions *opt,
                                    const VfmigKernelHook *hook)
{
        for (guint k = 0; k < FIND_CACHE_SIZE && m->find_cache[k]; k++) {
                FindCache *c = m->find_cache[k];

                if (!find_cache_options_match(c, opt, hook) || !vfmig_profile_equal(c->src, src))
                        continue;
                for (guint i = 0; i < c->trace->len; i++) {
                        const TraceItem *t = &g_array_index(c->trace, TraceItem, i);
                        m->stats.visited++;
                        if (filter_skips(opt, t->e) != t->skipped) {
                                /* the filter says otherwise now: this answer is stale */
                                find_cache_free(c);
                                memmove(&m->find_cache[k], &m->find_cache[k + 1],
                                        (FIND_CACHE_SIZE - k - 1) * sizeof(FindCache *));
                                m->find_cache[FIND_CACHE_SIZE - 1] = NULL;
                                return NULL;
                        }
                }
                /* most recent first */
                memmove(&m->find_cache[1], &m->find_cache[0], k * sizeof(FindCache *));
                m->find_cache[0] = c;
                m->stats.cache_hits++;
                return g_ptr_array_ref(c->results);
        }
        return NULL;
}

/* Keep an answer first; the oldest of a full cache goes. */
static void find_cache_store(Matrix *m, const VfmigProfile *src, const MatrixFindOptions *opt,
                             const VfmigKernelHook *hook, GArray *trace, GPtrArray *results)
{
        FindCache *c = g_new0(FindCache, 1);

        c->src = vfmig_profile_copy(src);
        c->include_creatable = opt->include_creatable;
        c->include_unavailable = opt->include_unavailable;
        c->include_incompatible = opt->include_incompatible;
        c->max_results = opt->max_results;
        c->hook = hook;
        c->trace = g_array_ref(trace);
        c->results = g_ptr_array_ref(results);
        find_cache_free(m->find_cache[FIND_CACHE_SIZE - 1]);
        memmove(&m->find_cache[1], &m->find_cache[0], (FIND_CACHE_SIZE - 1) * sizeof(FindCache *));
        m->find_cache[0] = c;
}

/* Move to the first item at or after pos that the options let through;
 * false when none is left. */
static bool stream_settle(const Query *q, Stream *s)
{
        for (; s->pos < s->n; s->pos++) {
                if (s->kitems) {
                        const KItem *k = &g_array_index(s->kitems, KItem, s->pos);
                        if (k->v.compatible || q->opt->include_incompatible)
                                return true;
                        continue;
                }
                q->m->stats.visited++;
                if (!skip_target(q, s->items[s->pos]))
                        return true;
        }
        return false;
}

/* Ranking: score descending, an existing device first, then key. */
static int stream_cmp(const Stream *a, const Stream *b)
{
        int sa = stream_score(a), sb = stream_score(b);

        if (sa != sb)
                return sa > sb ? -1 : 1;
        if (a->creatable != b->creatable)
                return a->creatable ? 1 : -1;
        return strcmp(stream_head(a)->key, stream_head(b)->key);
}

static void heap_down(Stream **h, guint n, guint i)
{
        for (;;) {
                guint l = 2 * i + 1, r = l + 1, best = i;
                if (l < n && stream_cmp(h[l], h[best]) < 0)
                        best = l;
                if (r < n && stream_cmp(h[r], h[best]) < 0)
                        best = r;
                if (best == i)
                        return;
                Stream *t = h[i];
                h[i] = h[best];
                h[best] = t;
                i = best;
        }
}

static gint kitem_cmp(gconstpointer a, gconstpointer b)
{
        const KItem *x = a, *y = b;

        if (x->v.score != y->v.score)
                return x->v.score > y->v.score ? -1 : 1;
        return strcmp(x->e->key, y->e->key);
}

static void kitem_clear(gpointer p)
{
        vfmig_verdict_clear(&((KItem *) p)->v);
}

#define FIND_STACK_CLASSES 16

guint matrix_find(Matrix *m, const VfmigProfile *src, const MatrixFindOptions *opt, const VfmigKernelHook *hook,
                  GPtrArray **ret)
{
        static const MatrixFindOptions none = { 0 };
        GPtrArray *res = g_ptr_array_new_with_free_func((GDestroyNotify) matrix_result_free);
        Bucket *b = src && src->migration_type ? g_hash_table_lookup(m->index, src->migration_type) : NULL;
        Query q = { .m = m, .opt = opt ? opt : &none };
        /* Per class of the bucket: on the stack for the usual few classes. */
        Stream streams_buf[FIND_STACK_CLASSES], *heap_buf[FIND_STACK_CLASSES];
        VfmigVerdict verdicts_buf[FIND_STACK_CLASSES];
        g_autofree Stream *streams_heap = NULL;
        g_autofree Stream **heap_heap = NULL;
        g_autofree VfmigVerdict *verdicts_heap = NULL;
        Stream *streams = streams_buf, **heap = heap_buf;
        VfmigVerdict *verdicts = verdicts_buf;
        guint ns = 0, nh = 0;
        bool ask = hook && hook->ask;
        bool cacheable = true;
        GPtrArray *cached;

        *ret = res;
        if (!b || m->deferred)
                return 0;
        cached = find_cache_lookup(m, src, q.opt, hook);
        if (cached) {
                g_ptr_array_unref(res);
                *ret = cached;
                return cached->len;
        }
        q.trace = g_array_sized_new(false, false, sizeof(TraceItem), 32);
        if (b->list->len > FIND_STACK_CLASSES) {
                streams = streams_heap = g_new0(Stream, b->list->len);
                heap = heap_heap = g_new0(Stream *, b->list->len);
                verdicts = verdicts_heap = g_new0(VfmigVerdict, b->list->len);
        } else
                memset(verdicts_buf, 0, sizeof verdicts_buf);
        for (guint i = 0; i < b->list->len; i++) {
                Class *c = b->list->pdata[i];
                Stream *s = &streams[ns];

                *s = (Stream) { 0 };
                if (c->creatable && !q.opt->include_creatable)
                        continue;
                s->creatable = c->creatable;
                if (c->kernel && ask) {
                        /* The kernel answers per target: ask each one that is a candidate. */
                        cacheable = false;
                        s->kitems = g_array_new(false, false, sizeof(KItem));
                        g_array_set_clear_func(s->kitems, kitem_clear);
                        for (guint j = 0; j < c->members->len; j++) {
                                MatrixEntry *e = c->members->pdata[j];
                                KItem k = { .e = e };
                                m->stats.visited++;
                                if (skip_target(&q, e))
                                        continue;
                                m->stats.checks++;
                                vfmig_acceptor_check(e->acceptor, src, hook, &k.v);
                                g_array_append_val(s->kitems, k);
                        }
                        g_array_sort(s->kitems, kitem_cmp);
                        s->n = s->kitems->len;
                } else {
                        m->stats.checks++;
                        vfmig_acceptor_check(((MatrixEntry *) c->members->pdata[0])->acceptor, src, hook,
                                             &verdicts[i]);
                        s->shared = &verdicts[i];
                        if (!s->shared->compatible && !q.opt->include_incompatible)
                                continue;
                        s->items = (MatrixEntry **) c->members->pdata;
                        s->n = c->members->len;
                }
                ns++;
                if (stream_settle(&q, s))
                        heap[nh++] = s;
        }
        for (guint i = nh / 2; i-- > 0;)
                heap_down(heap, nh, i);
        while (nh > 0 && (q.opt->max_results == 0 || res->len < q.opt->max_results)) {
                Stream *s = heap[0];
                MatrixResult *r = g_new0(MatrixResult, 1);

                r->entry = matrix_entry_ref(stream_head(s));
                verdict_share(&r->verdict, stream_verdict(s));
                g_ptr_array_add(res, r);
                s->pos++;
                if (!stream_settle(&q, s))
                        heap[0] = heap[--nh];
                heap_down(heap, nh, 0);
        }
        for (guint i = 0; i < ns; i++)
                if (streams[i].kitems)
                        g_array_unref(streams[i].kitems);
        for (guint i = 0; i < b->list->len; i++)
                if (verdicts[i].reasons)
                        vfmig_verdict_clear(&verdicts[i]);
        if (cacheable)
                find_cache_store(m, src, q.opt, hook, q.trace, res);
        g_array_unref(q.trace);
        return res->len;
}

static bool refuse_with(VfmigVerdict *v, char *reason)
{
        vfmig_verdict_init(v);
        g_ptr_array_add(v->reasons, reason);
        return false;
}

MatrixEntry *matrix_resolve(Matrix *m, const char *target, guint *n_offering)
{
        MatrixEntry *e = matrix_lookup(m, target);
        guint n = e ? 1 : 0;

        if (!e && target && !strchr(target, '/')) {
                /* A bare type id: fine when exactly one parent offers it. */
                GHashTableIter it;
                gpointer val;
                g_hash_table_iter_init(&it, m->parents);
                while (g_hash_table_iter_next(&it, NULL, &val)) {
                        ParentRec *r = val;
                        if (g_ptr_array_find_with_equal_func(r->types, target, g_str_equal, NULL)) {
                                g_autofree char *key = g_strdup_printf("%s/%s", r->name, target);
                                MatrixEntry *x = g_hash_table_lookup(m->entries, key);
                                if (x) {
                                        e = x;
                                        n++;
                                }
                        }
                }
        }
        if (n_offering)
                *n_offering = n;
        return n == 1 ? e : NULL;
}

bool matrix_check(Matrix *m, const VfmigProfile *src, const char *target, const VfmigKernelHook *hook,
                  VfmigVerdict *v)
{
        guint n = 0;
        MatrixEntry *e = matrix_resolve(m, target, &n);

        if (n > 1)
                return refuse_with(v, g_strdup_printf("mdev type %s is offered by %u parents on host %s: "
                                                      "name one as PARENT/%s", target, n, m->host, target));
        if (!e)
                return refuse_with(v, g_strdup_printf("no VFIO device or creatable mdev type \"%s\" on host %s",
                                                      target ? target : "", m->host));
        if (e->pending)
                return refuse_with(v, g_strdup_printf("target %s: the host matrix is not built yet", e->key));
        if (!e->acceptor)
                return refuse_with(v, g_strdup_printf("target %s: %s", e->key, e->reason));
        if (!vfmig_acceptor_check(e->acceptor, src, hook, v))
                return false;
        if (e->kind == MATRIX_ENTRY_CREATABLE && e->available == 0) {
                g_ptr_array_add(v->reasons, g_strdup_printf("mdev type %s on %s has no available instances "
                                                            "(available_instances = 0)", e->mdev_type, e->parent));
                g_hash_table_remove_all(v->to_apply);
                v->compatible = false;
                v->score = 0;
        }
        return v->compatible;
}

/* ---- export ---------------------------------------------------------------------- */

static void add_member(JsonBuilder *b, const char *name, const char *value)
{
        json_builder_set_member_name(b, name);
        json_builder_add_string_value(b, value);
}

static GPtrArray *types_sorted(Matrix *m)
{
        GPtrArray *a = g_ptr_array_new();
        GHashTableIter it;
        gpointer k;

        g_hash_table_iter_init(&it, m->index);
        while (g_hash_table_iter_next(&it, &k, NULL))
                g_ptr_array_add(a, k);
        g_ptr_array_sort(a, str_ptr_cmp);
        return a;
}

char *matrix_export_json(Matrix *m)
{
        g_autoptr(JsonBuilder) b = json_builder_new();
        g_autoptr(JsonGenerator) gen = json_generator_new();
        g_autoptr(JsonNode) root = NULL;
        g_autoptr(GPtrArray) types = types_sorted(m);
        g_autoptr(GPtrArray) all = entries_sorted(m);
        g_autoptr(GPtrArray) rule_ids = g_ptr_array_new();

        json_builder_begin_object(b);
        json_builder_set_member_name(b, "format");
        json_builder_add_int_value(b, 1);
        add_member(b, "host", m->host);
        json_builder_set_member_name(b, "generation");
        json_builder_add_int_value(b, (gint64) MIN(m->generation, (uint64_t) G_MAXINT64));
        add_member(b, "fingerprint", matrix_fingerprint(m));
        add_member(b, "kernel-release", m->kernel_release);
        add_member(b, "rules-fingerprint", vfmig_rules_fingerprint(m->rs));
        json_builder_set_member_name(b, "migration-types");
        json_builder_begin_object(b);
        for (guint i = 0; i < types->len; i++) {
                Bucket *bk = g_hash_table_lookup(m->index, types->pdata[i]);
                g_autoptr(GPtrArray) members = g_ptr_array_new();
                for (guint j = 0; j < bk->list->len; j++) {
                        Class *c = bk->list->pdata[j];
                        g_ptr_array_extend(members, c->members, NULL, NULL);
                }
                g_ptr_array_sort(members, entry_ptr_cmp);
                json_builder_set_member_name(b, bk->type);
                json_builder_begin_array(b);
                for (guint j = 0; j < members->len; j++) {
                        const MatrixEntry *e = members->pdata[j];
                        const char *rule = vfmig_acceptor_get_rule_id(e->acceptor);
                        json_builder_begin_object(b);
                        add_member(b, "target", e->key);
                        add_member(b, "kind", e->kind == MATRIX_ENTRY_DEVICE ? "device" : "creatable");
                        if (e->parent)
                                add_member(b, "parent", e->parent);
                        if (e->mdev_type)
                                add_member(b, "mdev-type", e->mdev_type);
                        json_builder_set_member_name(b, "available");
                        json_builder_add_boolean_value(b, matrix_entry_is_available(e));
                        if (e->kind == MATRIX_ENTRY_CREATABLE) {
                                json_builder_set_member_name(b, "available-instances");
                                json_builder_add_int_value(b, e->available);
                        }
                        add_member(b, "rule", rule);
                        json_builder_set_member_name(b, "profile");
                        vfmig_profile_build_json(vfmig_acceptor_get_profile(e->acceptor), b);
                        json_builder_end_object(b);
                        if (!g_ptr_array_find_with_equal_func(rule_ids, rule, g_str_equal, NULL))
                                g_ptr_array_add(rule_ids, (gpointer) rule);
                }
                json_builder_end_array(b);
        }
        json_builder_end_object(b);

        g_ptr_array_sort(rule_ids, str_ptr_cmp);
        json_builder_set_member_name(b, "rules");
        json_builder_begin_object(b);
        for (guint i = 0; i < rule_ids->len; i++) {
                const char *def = vfmig_rules_rule_definition(m->rs, rule_ids->pdata[i]);
                g_autoptr(JsonNode) node = def ? json_from_string(def, NULL) : NULL;
                json_builder_set_member_name(b, rule_ids->pdata[i]);
                json_builder_begin_object(b);
                add_member(b, "file", vfmig_rules_rule_file(m->rs, rule_ids->pdata[i]));
                json_builder_set_member_name(b, "definition");
                if (node)
                        json_builder_add_value(b, g_steal_pointer(&node));
                else
                        json_builder_add_null_value(b);
                json_builder_end_object(b);
        }
        json_builder_end_object(b);

        json_builder_set_member_name(b, "unmatched");
        json_builder_begin_array(b);
        for (guint i = 0; i < all->len; i++) {
                const MatrixEntry *e = all->pdata[i];
                if (e->acceptor)
                        continue;
                json_builder_begin_object(b);
                add_member(b, "target", e->key);
                add_member(b, "kind", e->kind == MATRIX_ENTRY_DEVICE ? "device" : "creatable");
                add_member(b, "reason", e->pending ? "not evaluated yet" : e->reason);
                json_builder_end_object(b);
        }
        json_builder_end_array(b);
        json_builder_end_object(b);

        root = json_builder_get_root(b);
        json_generator_set_root(gen, root);
        json_generator_set_pretty(gen, true);
        return json_generator_to_data(gen, NULL);
}

/* ---- persistence --------------------------------------------------------------- */

/*
 * Target lists in the cache: sorted keys, one per line, each prefixed by one
 * character saying how many leading characters it shares with the previous
 * key ('0'-'9', 'a'-'z': 0..35).  Thousands of VFs "0000:17:02.3" cost a
 * few bytes each to store and, more to the point, to parse.
 */
static char *front_code(GPtrArray *keys)
{
        GString *s = g_string_sized_new(8 * keys->len + 16);
        const char *prev = "";

        for (guint i = 0; i < keys->len; i++) {
                const char *k = keys->pdata[i];
                size_t n = 0;
                while (n < 35 && prev[n] && prev[n] == k[n])
                        n++;
                if (i)
                        g_string_append_c(s, '\n');
                g_string_append_c(s, (char) (n < 10 ? '0' + n : 'a' + n - 10));
                g_string_append(s, k + n);
                prev = k;
        }
        return g_string_free(s, false);
}

/* The keys of a front-coded list, one after another in one buffer. */
typedef struct KeyList {
        char *buf;
        const char **keys;
        guint n;
} KeyList;

static void key_list_clear(KeyList *l)
{
        g_free(l->buf);
        g_free(l->keys);
        *l = (KeyList) { 0 };
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(KeyList, key_list_clear)

/* false when damaged.  One allocation for the keys, not one per key: a
 * warm start decodes thousands. */
static bool front_decode(const char *s, KeyList *out)
{
        size_t total = 0, lines = 0;
        const char *q, *prev = "";   /* the previous key ("" at first) */
        size_t prev_len = 0;
        char *at;

        /* First the sizes: one allocation for all keys, one for the index. */
        for (q = s; *q;) {
                const char *nl = strchr(q, '\n');
                size_t len = nl ? (size_t) (nl - q) : strlen(q);
                char c = q[0];
                size_t n = c >= '0' && c <= '9' ? (size_t) (c - '0') : c >= 'a' && c <= 'z' ? (size_t) (c - 'a' + 10) : 0;
                total += n + len;       /* prefix + suffix + NUL */
                lines++;
                q += len + (nl ? 1 : 0);
                if (nl && !*q)
                        return false;   /* a trailing separator */
        }
        out->buf = at = g_malloc(MAX(total, (size_t) 1));
        out->keys = g_new(const char *, lines + 1);
        out->n = 0;
        while (*s) {
                const char *nl = strchr(s, '\n');
                size_t len = nl ? (size_t) (nl - s) : strlen(s), n;
                char c = s[0];
                if (c >= '0' && c <= '9')
                        n = (size_t) (c - '0');
                else if (c >= 'a' && c <= 'z')
                        n = (size_t) (c - 'a' + 10);
                else
                        goto bad;
                if (n > prev_len || len < 1 || n + len - 1 == 0 || n + len - 1 > 2 * KEY_MAX + 1)
                        goto bad;
                memcpy(at, prev, n);
                memcpy(at + n, s + 1, len - 1);
                at[n + len - 1] = '\0';
                out->keys[out->n++] = at;
                prev = at;
                prev_len = n + len - 1;
                at += n + len;
                s += len + (nl ? 1 : 0);
        }
        out->keys[out->n] = NULL;
        return true;
bad:
        key_list_clear(out);
        return false;
}

static char *cache_to_json(Matrix *m)
{
        g_autoptr(JsonBuilder) b = json_builder_new();
        g_autoptr(JsonGenerator) gen = json_generator_new();
        g_autoptr(JsonNode) root = NULL;
        g_autoptr(GPtrArray) types = types_sorted(m);
        g_autoptr(GPtrArray) all = entries_sorted(m);
        g_autoptr(GHashTable) pindex = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_autoptr(GPtrArray) profiles = g_ptr_array_new();     /* const VfmigProfile* in index order */
        g_autoptr(GArray) class_profile = g_array_new(false, false, sizeof(guint));

        /* Distinct own profiles: thousands of identical VFs share one. */
        for (guint i = 0; i < types->len; i++) {
                Bucket *bk = g_hash_table_lookup(m->index, types->pdata[i]);
                for (guint j = 0; j < bk->list->len; j++) {
                        Class *c = bk->list->pdata[j];
                        const MatrixEntry *first = c->members->pdata[0];
                        const VfmigProfile *p = vfmig_acceptor_get_profile(first->acceptor);
                        char *k = profile_key(p);
                        gpointer idx;
                        if (!g_hash_table_lookup_extended(pindex, k, NULL, &idx)) {
                                idx = GUINT_TO_POINTER(profiles->len);
                                g_ptr_array_add(profiles, (gpointer) p);
                                g_hash_table_insert(pindex, k, idx);
                        } else {
                                g_free(k);
                        }
                        guint u = GPOINTER_TO_UINT(idx);
                        g_array_append_val(class_profile, u);
                }
        }

        json_builder_begin_object(b);
        add_member(b, "fingerprint", matrix_fingerprint(m));
        json_builder_set_member_name(b, "generation");
        json_builder_add_int_value(b, (gint64) MIN(m->generation, (uint64_t) G_MAXINT64 / 2));
        add_member(b, "host", m->host);
        json_builder_set_member_name(b, "profiles");
        json_builder_begin_array(b);
        for (guint i = 0; i < profiles->len; i++)
                vfmig_profile_build_json(profiles->pdata[i], b);
        json_builder_end_array(b);
        json_builder_set_member_name(b, "groups");
        json_builder_begin_array(b);
        for (guint i = 0, ci = 0; i < types->len; i++) {
                Bucket *bk = g_hash_table_lookup(m->index, types->pdata[i]);
                for (guint j = 0; j < bk->list->len; j++, ci++) {
                        Class *c = bk->list->pdata[j];
                        json_builder_begin_object(b);
                        add_member(b, "rule",
                                   vfmig_acceptor_get_rule_id(((MatrixEntry *) c->members->pdata[0])->acceptor));
                        json_builder_set_member_name(b, "profile");
                        json_builder_add_int_value(b, g_array_index(class_profile, guint, ci));
                        json_builder_set_member_name(b, "creatable");
                        json_builder_add_boolean_value(b, c->creatable);
                        /* One string: one JSON token, not thousands. */
                        g_autoptr(GPtrArray) keys = g_ptr_array_sized_new(c->members->len);
                        for (guint k = 0; k < c->members->len; k++)
                                g_ptr_array_add(keys, ((MatrixEntry *) c->members->pdata[k])->key);
                        g_autofree char *coded = front_code(keys);
                        add_member(b, "targets", coded);
                        json_builder_end_object(b);
                }
        }
        json_builder_end_array(b);
        /* Reasons name their target: stored as templates ("\x01" for the
         * target), each with its front-coded targets. */
        {
                g_autoptr(GHashTable) by_reason = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                                                        (GDestroyNotify) g_ptr_array_unref);
                g_autoptr(GPtrArray) order = g_ptr_array_new();
                json_builder_set_member_name(b, "unmatched");
                json_builder_begin_array(b);
                for (guint i = 0; i < all->len; i++) {
                        const MatrixEntry *e = all->pdata[i];
                        g_autoptr(GString) t = NULL;
                        GPtrArray *keys;
                        if (e->acceptor)
                                continue;
                        t = g_string_new(e->reason);
                        g_string_replace(t, e->key, "\x01", 0);
                        keys = g_hash_table_lookup(by_reason, t->str);
                        if (!keys) {
                                keys = g_ptr_array_new();
                                g_ptr_array_add(order, t->str);
                                g_hash_table_insert(by_reason, g_string_free(g_steal_pointer(&t), false), keys);
                        }
                        g_ptr_array_add(keys, e->key);
                }
                for (guint i = 0; i < order->len; i++) {
                        g_autofree char *coded = front_code(g_hash_table_lookup(by_reason, order->pdata[i]));
                        json_builder_begin_object(b);
                        add_member(b, "reason", order->pdata[i]);
                        add_member(b, "targets", coded);
                        json_builder_end_object(b);
                }
        }
        json_builder_end_array(b);
        json_builder_end_object(b);
        root = json_builder_get_root(b);
        json_generator_set_root(gen, root);
        return json_generator_to_data(gen, NULL);
}

/* A damage detector for the cache body (not a signature: the cache
 * directory is root's): 128 bits of the fast hash, hex. */
#define CHECKSUM_HEX 32
char *matrix_cache_checksum(const char *body, size_t len)
{
        return g_strdup_printf("%016" G_GINT64_MODIFIER "x%016" G_GINT64_MODIFIER "x", hash64(body, len, SEED0),
                               hash64(body, len, SEED1));
}

#define CACHE_HEAD "{\"vfmig-matrix-cache\":"
#define CACHE_SUM  ",\"checksum\":\""
#define CACHE_BODY "\",\"body\":"

static int fail_errno(char **error, int r, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static int fail_errno(char **error, int r, const char *fmt, ...)
{
        va_list ap;

        if (error) {
                g_autofree char *msg = NULL;
                va_start(ap, fmt);
                msg = g_strdup_vprintf(fmt, ap);
                va_end(ap);
                *error = g_strdup_printf("%s: %s", msg, g_strerror(-r));
        }
        return r;
}

int matrix_save(Matrix *m, const char *dir, char **error)
{
        g_autofree char *text = NULL, *tmp = NULL, *path = NULL;
        size_t len, done = 0;
        int fd, dfd, r;

        if (m->deferred) {
                if (error)
                        *error = g_strdup("the matrix is not built yet");
                return -EBUSY;
        }
        {
                /* {"vfmig-matrix-cache":1,"checksum":"SHA256(BODY)","body":BODY}: a
                 * truncated or damaged file never reaches the JSON reader whole. */
                g_autofree char *body = cache_to_json(m);
                g_autofree char *sum = matrix_cache_checksum(body, strlen(body));
                text = g_strdup_printf(CACHE_HEAD "%d" CACHE_SUM "%s" CACHE_BODY "%s}\n", MATRIX_CACHE_VERSION,
                                       sum, body);
        }
        len = strlen(text);
        path = g_build_filename(dir, MATRIX_CACHE_FILE, NULL);
        tmp = g_build_filename(dir, "." MATRIX_CACHE_FILE ".XXXXXX", NULL);
        fd = g_mkstemp_full(tmp, O_RDWR | O_CLOEXEC, 0644);
        if (fd < 0)
                return fail_errno(error, -errno, "cannot create a temporary file in %s", dir);
        while (done < len) {
                ssize_t n = write(fd, text + done, len - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        r = n < 0 ? -errno : -EIO;
                        close(fd);
                        g_unlink(tmp);
                        return fail_errno(error, r, "cannot write %s", tmp);
                }
                done += (size_t) n;
        }
        if (fsync(fd) < 0) {
                r = -errno;
                close(fd);
                g_unlink(tmp);
                return fail_errno(error, r, "cannot fsync %s", tmp);
        }
        if (close(fd) < 0) {
                r = -errno;
                g_unlink(tmp);
                return fail_errno(error, r, "cannot close %s", tmp);
        }
        if (rename(tmp, path) < 0) {
                r = -errno;
                g_unlink(tmp);
                return fail_errno(error, r, "cannot rename %s to %s", tmp, path);
        }
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
                (void) fsync(dfd);
                close(dfd);
        }
        g_free(m->saved_fp);
        m->saved_fp = g_strdup(matrix_fingerprint(m));
        m->saved_generation = m->generation;
        return 0;
}

/* Read a regular file of at most MATRIX_CACHE_MAX bytes: 1, 0 when there is
 * none, -errno with *why. */
static int read_cache(const char *path, char **ret, size_t *ret_len, char **why)
{
        g_autofree char *buf = NULL;
        struct stat st;
        size_t done = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);

        if (fd < 0) {
                if (errno == ENOENT)
                        return 0;
                *why = g_strdup_printf("cannot open: %s", g_strerror(errno));
                return -errno;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > MATRIX_CACHE_MAX) {
                close(fd);
                *why = g_strdup_printf("not a regular file of at most %d bytes", MATRIX_CACHE_MAX);
                return -EINVAL;
        }
        /* The JSON reader's padding after the NUL. */
        buf = g_malloc0((size_t) st.st_size + 1 + JV_PAD);
        while (done < (size_t) st.st_size) {
                ssize_t n = read(fd, buf + done, (size_t) st.st_size - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int r = -errno;
                        close(fd);
                        *why = g_strdup_printf("cannot read: %s", g_strerror(-r));
                        return r;
                }
                if (n == 0)
                        break;
                done += (size_t) n;
        }
        close(fd);
        buf[done] = '\0';
        *ret = g_steal_pointer(&buf);
        *ret_len = done;
        return 1;
}

/* The member name of o when it is of type t, or NULL. */
static const Jv *member(const Jv *o, const char *name, JvType t)
{
        const Jv *n = o && o->type == JV_OBJECT ? jv_member(o, name) : NULL;

        return n && n->type == t ? n : NULL;
}

static const char *string_of(const Jv *n, size_t max)
{
        return n && n->type == JV_STRING && strlen(n->s) <= max ? n->s : NULL;
}

/*
 * A profile from its object in the cache, through vfmig_profile_set() as
 * every profile from outside (the types as vfmig_profile_from_json_node()
 * maps JSON's).  0, or -EINVAL and *error.
 */
static int profile_from_jv(const Jv *o, VfmigProfile **ret, char **error)
{
        g_autoptr(VfmigProfile) p = vfmig_profile_new();
        int r;

        *ret = NULL;
        if (!o || o->type != JV_OBJECT) {
                *error = g_strdup("profile: must be a JSON object");
                return -EINVAL;
        }
        for (guint i = 0; i < o->n; i++) {
                const Jv *n = o->o.vals[i];
                g_autofree const char **list = NULL;
                VfmigValue v = { .type = VFMIG_VALUE_OTHER };

                if (n->type == JV_INT) {
                        v.type = VFMIG_VALUE_INT64;
                        v.i64 = n->i;
                } else if (n->type == JV_STRING) {
                        v.type = VFMIG_VALUE_STRING;
                        v.str = n->s;
                } else if (n->type == JV_ARRAY || n->type == JV_OBJECT) {
                        bool pairs = n->type == JV_OBJECT;
                        guint k = 0;
                        list = g_new0(const char *, (pairs ? 2 : 1) * n->n + 1);
                        v.type = pairs ? VFMIG_VALUE_PAIRS : VFMIG_VALUE_STRV;
                        for (guint j = 0; j < n->n; j++) {
                                const Jv *e = pairs ? n->o.vals[j] : n->items[j];
                                if (e->type != JV_STRING) {
                                        v.type = VFMIG_VALUE_OTHER;
                                        break;
                                }
                                if (pairs)
                                        list[k++] = n->o.keys[j];
                                list[k++] = e->s;
                        }
                        v.strv = list;
                }
                r = vfmig_profile_set(p, o->o.keys[i], &v, error);
                if (r < 0)
                        return r;
        }
        r = vfmig_profile_validate(p, error);
        if (r < 0)
                return r;
        *ret = g_steal_pointer(&p);
        return 0;
}

typedef struct Planned {
        MatrixEntry *e;
        guint group;             /* G_MAXUINT: unmatched */
        char *reason;            /* unmatched: the reason, owned */
        VfmigAcceptor *acceptor; /* owned until committed */
} Planned;

static void planned_clear(gpointer p)
{
        Planned *pl = p;

        pl->e->planned = false;
        g_free(pl->reason);
        vfmig_acceptor_unref(pl->acceptor);
}

#define BAD(...) do { *why = g_strdup_printf(__VA_ARGS__); goto out; } while (0)

/* One group of the cache: targets of one rule, own profile and kind. */
typedef struct CacheGroup {
        char *rule;
        guint profile;          /* index into profiles */
        bool creatable;
        KeyList targets;
} CacheGroup;

/* Targets without an acceptor that share one reason ("\x01": the target). */
typedef struct CacheUnmatched {
        char *reason;
        KeyList targets;
} CacheUnmatched;

static void cache_group_clear(gpointer p)
{
        CacheGroup *g = p;

        g_free(g->rule);
        key_list_clear(&g->targets);
}

static void cache_unmatched_clear(gpointer p)
{
        CacheUnmatched *u = p;

        g_free(u->reason);
        key_list_clear(&u->targets);
}

/*
 * A cache file read and decoded as far as it can be without the matrix:
 * everything but the fingerprint comparison and the look-up of each target.
 * A start does this on another thread (matrix_cache_file_read()).
 */
struct MatrixCacheFile {
        int state;              /* 1 read, 0 no file, -1 unusable (why) */
        char *path;
        char *why;
        /* The body (state 1), in the order matrix_load_file() reports problems: */
        int64_t generation;     /* -1: not an integer 0..2^62 */
        char *fingerprint;      /* NULL: not a string */
        char *body_why;         /* the first problem in profiles, groups or unmatched */
        GPtrArray *profiles;    /* VfmigProfile* */
        GArray *groups;         /* CacheGroup */
        GArray *unmatched;      /* CacheUnmatched */
};

/* The frame (version, checksum) and the body's JSON: 1; 0 no file; -1 and *why. */
static int cache_parse(const char *path, Arena *arena, char **ret_text, const Jv **ret_root, char **why)
{
        g_autofree char *text = NULL, *perr = NULL;
        const Jv *root;
        char *body = NULL;
        size_t len = 0, body_len = 0;
        int r;

        r = read_cache(path, &text, &len, why);
        if (r <= 0)
                return r < 0 ? -1 : 0;
        if (len == 0)
                BAD("empty file");
        if (memchr(text, '\0', len))
                BAD("contains a NUL byte");
        {
                /* The frame: version, checksum, body. */
                const char *p = text + strlen(CACHE_HEAD), *end = text + len;
                g_autofree char *sum = NULL;
                char *after = NULL;
                gint64 version;
                if (len < strlen(CACHE_HEAD) || memcmp(text, CACHE_HEAD, strlen(CACHE_HEAD)) != 0)
                        BAD("not a vfmig matrix cache");
                errno = 0;
                version = g_ascii_strtoll(p, &after, 10);
                if (after == p || errno != 0)
                        BAD("not a vfmig matrix cache (no version)");
                if (version != MATRIX_CACHE_VERSION)
                        BAD("cache version %" G_GINT64_FORMAT " is not %d", version, MATRIX_CACHE_VERSION);
                p = after;
                if ((size_t) (end - p) < strlen(CACHE_SUM) + CHECKSUM_HEX + strlen(CACHE_BODY) + 1 ||
                    memcmp(p, CACHE_SUM, strlen(CACHE_SUM)) != 0 ||
                    memcmp(p + strlen(CACHE_SUM) + CHECKSUM_HEX, CACHE_BODY, strlen(CACHE_BODY)) != 0)
                        BAD("truncated or damaged (no checksum and body)");
                p += strlen(CACHE_SUM);
                while (end > p && end[-1] == '\n')
                        end--;
                if (end[-1] != '}')
                        BAD("truncated (no closing brace)");
                end--;
                body = text + (p - text) + CHECKSUM_HEX + strlen(CACHE_BODY);
                if (end < body)
                        BAD("truncated");
                body_len = (size_t) (end - body);
                sum = matrix_cache_checksum(body, body_len);
                if (strncmp(sum, p, CHECKSUM_HEX) != 0)
                        BAD("checksum mismatch: truncated or damaged");
        }
        /* The body in place: ended by a NUL over the frame's closing brace,
         * the buffer's padding after it (read_cache()). */
        body[body_len] = '\0';
        root = jv_parse(body, body_len, arena, NULL, NULL, NULL, &perr);
        if (!root)
                BAD("not valid JSON: %s", perr);
        if (root->type != JV_OBJECT)
                BAD("the body is not a JSON object");
        *ret_root = root;
        *ret_text = g_steal_pointer(&text);
        return 1;
out:
        return -1;
}

/* profiles, groups and unmatched of the body: 0, or -1 and *why. */
static int cache_decode_body(MatrixCacheFile *f, const Jv *root, char **why)
{
        const Jv *groups, *unmatched, *parr;

        if (!(parr = member(root, "profiles", JV_ARRAY)) ||
            !(groups = member(root, "groups", JV_ARRAY)) ||
            !(unmatched = member(root, "unmatched", JV_ARRAY)))
                BAD("\"profiles\", \"groups\" and \"unmatched\" must be lists");

        for (guint i = 0; i < parr->n; i++) {
                g_autofree char *perr = NULL;
                VfmigProfile *p = NULL;
                if (profile_from_jv(parr->items[i], &p, &perr) < 0)
                        BAD("profiles[%u]: %s", i, perr);
                g_ptr_array_add(f->profiles, p);
        }
        for (guint i = 0; i < groups->n; i++) {
                const Jv *g = groups->items[i]->type == JV_OBJECT ? groups->items[i] : NULL;
                const Jv *pi = member(g, "profile", JV_INT);
                const Jv *cr = member(g, "creatable", JV_BOOL);
                const char *rule = string_of(member(g, "rule", JV_STRING), 64);
                const char *tn = string_of(member(g, "targets", JV_STRING), MATRIX_CACHE_MAX);
                CacheGroup cg = { 0 };
                if (!g || !rule || !pi || !cr || !tn)
                        BAD("groups[%u]: needs \"rule\", \"profile\", \"creatable\" and \"targets\"", i);
                if (pi->i < 0 || pi->i >= (gint64) f->profiles->len)
                        BAD("groups[%u].profile: %" G_GINT64_FORMAT " is not a profile index", i, pi->i);
                cg.profile = (guint) pi->i;
                cg.creatable = cr->b;
                if (!front_decode(tn, &cg.targets))
                        BAD("groups[%u].targets: damaged target list", i);
                cg.rule = g_strdup(rule);
                g_array_append_val(f->groups, cg);
        }
        for (guint i = 0; i < unmatched->n; i++) {
                const Jv *u = unmatched->items[i]->type == JV_OBJECT ? unmatched->items[i] : NULL;
                const char *tmpl = string_of(member(u, "reason", JV_STRING), REASON_MAX);
                const char *tn = string_of(member(u, "targets", JV_STRING), MATRIX_CACHE_MAX);
                CacheUnmatched cu = { 0 };
                if (!tmpl || !*tmpl || !tn)
                        BAD("unmatched[%u]: needs \"reason\" and \"targets\" strings", i);
                if (!front_decode(tn, &cu.targets))
                        BAD("unmatched[%u].targets: damaged target list", i);
                cu.reason = g_strdup(tmpl);
                g_array_append_val(f->unmatched, cu);
        }
        return 0;
out:
        return -1;
}

/* What the body says, checked as far as it can be without the matrix. */
static void cache_decode(MatrixCacheFile *f, const Jv *root)
{
        const Jv *n = member(root, "generation", JV_INT);

        f->generation = n ? n->i : -1;
        if (f->generation > G_MAXINT64 / 2)
                f->generation = -1;
        f->fingerprint = g_strdup(string_of(member(root, "fingerprint", JV_STRING), 128));
        f->profiles = g_ptr_array_new_with_free_func((GDestroyNotify) vfmig_profile_free);
        f->groups = g_array_new(false, false, sizeof(CacheGroup));
        g_array_set_clear_func(f->groups, cache_group_clear);
        f->unmatched = g_array_new(false, false, sizeof(CacheUnmatched));
        g_array_set_clear_func(f->unmatched, cache_unmatched_clear);
        (void) cache_decode_body(f, root, &f->body_why);
}

MatrixCacheFile *matrix_cache_file_read(const char *dir)
{
        MatrixCacheFile *f = g_new0(MatrixCacheFile, 1);

        g_auto(Arena) arena = { 0 };
        g_autofree char *text = NULL;
        const Jv *root = NULL;

        /* Decoded here, and the text and its tree freed here: on the reading thread. */
        f->path = g_build_filename(dir ? dir : ".", MATRIX_CACHE_FILE, NULL);
        f->state = cache_parse(f->path, &arena, &text, &root, &f->why);
        if (f->state > 0)
                cache_decode(f, root);
        return f;
}

void matrix_cache_file_free(MatrixCacheFile *f)
{
        if (!f)
                return;
        g_free(f->path);
        g_free(f->why);
        g_free(f->body_why);
        g_clear_pointer(&f->profiles, g_ptr_array_unref);
        g_clear_pointer(&f->groups, g_array_unref);
        g_clear_pointer(&f->unmatched, g_array_unref);
        g_free(f->fingerprint);
        g_free(f);
}

/* Restore from a decoded cache file: 1 and the entries restored; -1 and *why. */
static int try_load(Matrix *m, const MatrixCacheFile *f, const char *expected, char **why)
{
        g_autoptr(GArray) plan = g_array_sized_new(false, false, sizeof(Planned), g_hash_table_size(m->entries));
        g_array_set_clear_func(plan, planned_clear);
        g_autoptr(GPtrArray) class_keys = g_ptr_array_new_with_free_func((GDestroyNotify) g_ref_string_release);
        guint pending = 0;

        if (f->generation < 0)
                BAD("\"generation\" must be an integer 0..2^62");
        m->cache_generation = f->generation;
        if (!f->fingerprint)
                BAD("\"fingerprint\" must be a string");
        if (strcmp(f->fingerprint, expected) != 0)
                BAD("stale: the fingerprint differs (devices, drivers, rules or kernel changed)");
        if (f->body_why)
                BAD("%s", f->body_why);

        /* Which entry gets what; every pending entry exactly once. */
        for (guint i = 0; i < f->groups->len; i++) {
                const CacheGroup *cg = &g_array_index(f->groups, CacheGroup, i);
                for (guint j = 0; j < cg->targets.n; j++) {
                        /* A key that is not a valid name is on no host: the
                         * table has none (no need to check it first). */
                        const char *key = cg->targets.keys[j];
                        MatrixEntry *e = g_hash_table_lookup(m->entries, key);
                        Planned pl = { .e = e, .group = i };
                        if (!e)
                                BAD("groups[%u].targets[%u]: %s is not on this host", i, j, key);
                        if ((e->kind == MATRIX_ENTRY_CREATABLE) != cg->creatable)
                                BAD("groups[%u].targets[%u]: %s is of the other kind", i, j, key);
                        if (!e->pending)
                                continue;
                        if (e->planned)
                                BAD("groups[%u].targets[%u]: %s is listed twice", i, j, key);
                        e->planned = true;
                        g_array_append_val(plan, pl);
                }
        }
        for (guint i = 0; i < f->unmatched->len; i++) {
                const CacheUnmatched *cu = &g_array_index(f->unmatched, CacheUnmatched, i);
                for (guint j = 0; j < cu->targets.n; j++) {
                        const char *key = cu->targets.keys[j];
                        MatrixEntry *e = g_hash_table_lookup(m->entries, key);
                        g_autoptr(GString) reason = NULL;
                        Planned pl = { .e = e, .group = G_MAXUINT };
                        if (!e)
                                BAD("unmatched[%u].targets[%u]: %s is not on this host", i, j, key);
                        if (!e->pending)
                                continue;
                        if (e->planned)
                                BAD("unmatched[%u].targets[%u]: %s is listed twice", i, j, key);
                        e->planned = true;
                        reason = g_string_new(cu->reason);
                        g_string_replace(reason, "\x01", key, 0);
                        pl.reason = g_string_free(g_steal_pointer(&reason), false);
                        g_array_append_val(plan, pl);
                }
        }
        {
                GHashTableIter it;
                gpointer v;
                g_hash_table_iter_init(&it, m->entries);
                while (g_hash_table_iter_next(&it, NULL, &v))
                        if (((MatrixEntry *) v)->pending) {
                                pending++;
                                if (!((MatrixEntry *) v)->planned)
                                        BAD("%s is not in the cache", ((MatrixEntry *) v)->key);
                        }
        }
        g_assert(pending == plan->len);

        /* Acceptors from the cached rule ids and profiles: no matching. */
        {
                g_autofree VfmigAcceptor **first = g_new0(VfmigAcceptor *, f->groups->len + 1);
                g_autofree char **gkeys = g_new0(char *, f->groups->len + 1);
                for (guint i = 0; i < plan->len; i++) {
                        Planned *pl = &g_array_index(plan, Planned, i);
                        const MatrixEntry *e = pl->e;
                        const char *device = e->kind == MATRIX_ENTRY_DEVICE ? e->key : NULL;
                        VfmigAcceptor *a;
                        if (pl->group == G_MAXUINT)
                                continue;
                        if (!first[pl->group]) {
                                const CacheGroup *cg = &g_array_index(f->groups, CacheGroup, pl->group);
                                g_autofree char *aerr = NULL;
                                if (vfmig_acceptor_new_cached(m->rs, cg->rule, f->profiles->pdata[cg->profile],
                                                              device, e->parent, e->mdev_type, &a, &aerr) < 0)
                                        BAD("groups[%u]: %s", pl->group, aerr);
                                first[pl->group] = a;
                                gkeys[pl->group] = class_key_for(m, a, e->kind);
                                g_ptr_array_add(class_keys, gkeys[pl->group]);   /* a reference held here */
                        } else {
                                a = vfmig_acceptor_new_like(first[pl->group], device, e->parent, e->mdev_type);
                        }
                        pl->acceptor = a;
                }

                /* Commit. */
                Class *last = NULL;
                guint last_group = G_MAXUINT;
                m->bulk = true;
                for (guint i = 0; i < plan->len; i++) {
                        Planned *pl = &g_array_index(plan, Planned, i);
                        MatrixEntry *e = pl->e;
                        e->pending = false;
                        m->stats.restored++;
                        if (pl->group == G_MAXUINT) {
                                e->reason = g_steal_pointer(&pl->reason);
                                continue;
                        }
                        e->acceptor = g_steal_pointer(&pl->acceptor);
                        e->class_key = g_ref_string_acquire(gkeys[pl->group]);
                        if (last && last_group == pl->group) {
                                class_append(m, last, e);
                        } else {
                                index_insert(m, e);
                                last = e->cls;
                                last_group = pl->group;
                        }
                }
                m->bulk = false;
                index_sort_all(m);
        }
        return 1;
out:
        return -1;
}

int matrix_load(Matrix *m, const char *dir, const char *expected_fp, char **warning)
{
        MatrixCacheFile *f;
        int r;

        if (!m->deferred) {
                if (warning)
                        *warning = g_strdup("the matrix is already built: the cache was not read");
                return 0;
        }
        f = matrix_cache_file_read(dir);
        r = matrix_load_file(m, f, expected_fp, warning);
        matrix_cache_file_free(f);
        return r;
}

int matrix_load_file(Matrix *m, const MatrixCacheFile *f, const char *expected_fp, char **warning)
{
        g_autofree char *why = NULL;
        int r;

        if (warning)
                *warning = NULL;
        if (!m->deferred) {
                if (warning)
                        *warning = g_strdup("the matrix is already built: the cache was not read");
                return 0;
        }
        m->cache_generation = -1;
        r = f->state;
        if (r > 0)
                r = try_load(m, f, expected_fp ? expected_fp : matrix_fingerprint(m), &why);
        else if (r < 0)
                why = g_strdup(f->why);
        if (r > 0) {
                m->built = false;     /* the generation is the cache's */
                m->cache_generation--;
                end_deferral(m);
                g_free(m->saved_fp);
                m->saved_fp = g_strdup(matrix_fingerprint(m));
                m->saved_generation = m->generation;
                return 1;
        }
        if (r < 0 && warning)
                *warning = g_strdup_printf("%s: %s; building the matrix from the rules", f->path, why);
        matrix_build(m);
        return 0;
}
