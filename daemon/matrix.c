/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The host matrix: see matrix.h. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "matrix.h"

#define DIGEST_LEN 32
#define REASON_MAX 4096
#define KEY_MAX    512

typedef struct Class Class;
typedef struct Bucket Bucket;

struct MatrixEntry {
        gint n_ref;
        char *key;
        MatrixEntryKind kind;
        char *parent;               /* NULL for a PCI device */
        char *mdev_type;            /* NULL for a PCI device */
        uint32_t available;         /* creatable: available_instances */
        bool pending;               /* recorded, not evaluated yet (deferred) */
        VfmigAcceptor *acceptor;    /* NULL: no rule / cannot migrate (reason) */
        char *reason;
        char *class_key;            /* with an acceptor: rule, kind, own profile */
        /* Inputs, private to the matrix. */
        VfmigDevice *dev;           /* device entries: the identity */
        VfmigDevice *pid;           /* the parent's identity (mdev, creatable), or NULL */
        uint64_t flags;
        guint8 digest[DIGEST_LEN];  /* over the inputs: the fingerprint's part */
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
        VfmigDevice *identity;      /* given, or bare (name + driver) */
        GPtrArray *types;           /* char* type ids with an entry */
        GHashTable *children;       /* mdev device keys with this parent (set) */
} ParentRec;

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
        uint64_t acc[4];            /* sum of the entries' digests (order-free) */
        char *fingerprint;          /* cached, NULL when stale */
        uint64_t generation;
        bool built;
        bool deferred;
        bool deferred_dirty;
        bool bulk;                  /* appending to classes unsorted */
        int64_t cache_generation;   /* from a readable cache file, -1 */
        char *saved_fp;
        uint64_t saved_generation;
        GChecksum *sum;
        MatrixStats stats;
};

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

static VfmigDevice *ident_copy(const VfmigDevice *d)
{
        VfmigDevice *c = vfmig_device_new(d->name ? d->name : "", d->kind);
        GHashTableIter it;
        gpointer k, v;

        g_free(c->driver);
        c->driver = g_strdup(d->driver ? d->driver : "");
        c->vendor_id = d->vendor_id;
        c->device_id = d->device_id;
        c->subsystem_vendor_id = d->subsystem_vendor_id;
        c->subsystem_device_id = d->subsystem_device_id;
        c->revision = d->revision;
        c->numa_node = d->numa_node;
        c->iommu_group = d->iommu_group;
        g_free(c->mdev_type);
        c->mdev_type = g_strdup(d->mdev_type ? d->mdev_type : "");
        g_free(c->parent);
        c->parent = g_strdup(d->parent ? d->parent : "");
        if (d->attributes) {
                g_hash_table_iter_init(&it, d->attributes);
                while (g_hash_table_iter_next(&it, &k, &v))
                        g_hash_table_replace(c->attributes, g_strdup(k), g_strdup(v));
        }
        return c;
}

static void feed_str(GChecksum *s, const char *str)
{
        g_checksum_update(s, (const guchar *) (str ? str : ""), -1);
        g_checksum_update(s, (const guchar *) "", 1);
}

/* The identity fields rules can see, in a canonical order. */
static void feed_ident(GChecksum *s, const VfmigDevice *d)
{
        char buf[64];
        guint n = 0;

        if (!d) {
                feed_str(s, "-");
                return;
        }
        feed_str(s, d->name);
        feed_str(s, d->kind == VFMIG_DEVICE_MDEV ? "mdev" : "pci");
        feed_str(s, d->driver);
        g_snprintf(buf, sizeof buf, "%04x:%04x:%04x:%04x:%02x", d->vendor_id, d->device_id,
                   d->subsystem_vendor_id, d->subsystem_device_id, d->revision);
        feed_str(s, buf);
        feed_str(s, d->mdev_type);
        feed_str(s, d->parent);
        if (d->attributes && g_hash_table_size(d->attributes) > 0) {
                g_autofree gpointer *keys = g_hash_table_get_keys_as_array(d->attributes, &n);
                qsort(keys, n, sizeof(gpointer), str_ptr_cmp);
                for (guint i = 0; i < n; i++) {
                        feed_str(s, keys[i]);
                        feed_str(s, g_hash_table_lookup(d->attributes, keys[i]));
                }
        }
        g_snprintf(buf, sizeof buf, "attrs=%u", n);
        feed_str(s, buf);
}

static void entry_compute_digest(Matrix *m, MatrixEntry *e)
{
        char buf[32];
        gsize len = DIGEST_LEN;

        g_checksum_reset(m->sum);
        feed_str(m->sum, e->kind == MATRIX_ENTRY_DEVICE ? "device" : "creatable");
        feed_str(m->sum, e->key);
        if (e->kind == MATRIX_ENTRY_DEVICE) {
                feed_ident(m->sum, e->dev);
                g_snprintf(buf, sizeof buf, "%" G_GINT64_MODIFIER "x", e->flags);
                feed_str(m->sum, buf);
        } else {
                feed_str(m->sum, e->parent);
                feed_str(m->sum, e->mdev_type);
        }
        feed_ident(m->sum, e->pid);
        g_checksum_get_digest(m->sum, e->digest, &len);
}

static void acc_add(Matrix *m, const MatrixEntry *e, int sign)
{
        for (int i = 0; i < 4; i++) {
                uint64_t x;
                memcpy(&x, e->digest + 8 * i, 8);
                m->acc[i] += sign > 0 ? x : -x;
        }
        g_clear_pointer(&m->fingerprint, g_free);
}

/* ---- entries ---------------------------------------------------------------- */

static MatrixEntry *entry_alloc(MatrixEntryKind kind, const char *key)
{
        MatrixEntry *e = g_new0(MatrixEntry, 1);

        e->n_ref = 1;
        e->kind = kind;
        e->key = g_strdup(key);
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
        g_clear_pointer(&e->acceptor, vfmig_acceptor_free);
        g_clear_pointer(&e->reason, g_free);
        g_clear_pointer(&e->class_key, g_free);
}

void matrix_entry_unref(MatrixEntry *e)
{
        if (!e || !g_atomic_int_dec_and_test(&e->n_ref))
                return;
        entry_clear_result(e);
        g_free(e->key);
        g_free(e->parent);
        g_free(e->mdev_type);
        vfmig_device_free(e->dev);
        vfmig_device_free(e->pid);
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

static char *class_key_for(const VfmigAcceptor *a, MatrixEntryKind kind)
{
        GString *s = g_string_sized_new(160);

        g_string_append_printf(s, "%s\x1f%c\x1f", vfmig_acceptor_get_rule_id(a),
                               kind == MATRIX_ENTRY_CREATABLE ? 'c' : 'd');
        append_profile_key(s, vfmig_acceptor_get_profile(a));
        return g_string_free(s, false);
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

static void index_insert(Matrix *m, MatrixEntry *e)
{
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
        if (m->bulk || !c->sorted) {
                g_ptr_array_add(c->members, e);
                c->sorted = c->members->len <= 1;
        } else {
                bool found;
                guint pos = members_search(c->members, e->key, &found);
                g_ptr_array_insert(c->members, (gint) pos, e);
        }
        e->cls = c;
        b->n++;
        m->n_indexed++;
}

static void index_remove(Matrix *m, MatrixEntry *e)
{
        Class *c = e->cls;
        Bucket *b;
        bool found = false;
        guint pos = 0;

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

/* Put e in the table (replacing an entry of its key) and in the index. */
static void table_put(Matrix *m, MatrixEntry *e)
{
        MatrixEntry *old = g_hash_table_lookup(m->entries, e->key);

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

static void table_remove(Matrix *m, MatrixEntry *e)
{
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

        entry_clear_result(e);
        e->pending = false;
        m->stats.evaluations++;
        if (e->kind == MATRIX_ENTRY_DEVICE)
                r = vfmig_acceptor_new(m->rs, e->dev, e->pid, e->flags, &e->acceptor, &why);
        else
                r = vfmig_acceptor_new_for_mdev_type(m->rs, e->pid, e->mdev_type, VFMIG_COMPAT_FLAG_UNKNOWN,
                                                     &e->acceptor, &why);
        if (r >= 0) {
                e->class_key = class_key_for(e->acceptor, e->kind);
                return;
        }
        if (r == -ENOENT)
                e->reason = g_strconcat(why ? why : "no compatibility rule matches", m->rules_where, NULL);
        else
                e->reason = g_steal_pointer(&why);
        if (!e->reason)
                e->reason = g_strdup("no profile");
}

static MatrixEntry *entry_new_device(Matrix *m, const VfmigDevice *dev, const VfmigDevice *pid, uint64_t flags)
{
        MatrixEntry *e = entry_alloc(MATRIX_ENTRY_DEVICE, dev->name);

        e->dev = ident_copy(dev);
        if (dev->kind == VFMIG_DEVICE_MDEV) {
                e->parent = g_strdup(nz(dev->parent));
                e->mdev_type = g_strdup(nz(dev->mdev_type));
        }
        e->pid = pid ? ident_copy(pid) : NULL;
        e->flags = flags;
        entry_compute_digest(m, e);
        return e;
}

static MatrixEntry *entry_new_creatable(Matrix *m, const char *parent, const char *type, uint32_t available,
                                        const VfmigDevice *pid)
{
        g_autofree char *key = g_strdup_printf("%s/%s", parent, type);
        MatrixEntry *e = entry_alloc(MATRIX_ENTRY_CREATABLE, key);

        e->parent = g_strdup(parent);
        e->mdev_type = g_strdup(type);
        e->available = available;
        e->pid = ident_copy(pid);
        entry_compute_digest(m, e);
        return e;
}

/*
 * Install ne (a new entry for its key, inputs recorded) in place of whatever
 * has its key.  Evaluates unless deferred.  Returns whether the content
 * changed.  Takes ne.
 */
static bool install(Matrix *m, MatrixEntry *ne)
{
        MatrixEntry *oe = g_hash_table_lookup(m->entries, ne->key);

        if (oe && oe->kind == ne->kind && memcmp(oe->digest, ne->digest, DIGEST_LEN) == 0) {
                /* Same inputs: at most the availability moved. */
                bool changed = oe->available != ne->available;
                oe->available = ne->available;
                matrix_entry_unref(ne);
                if (changed && m->deferred)
                        m->deferred_dirty = true;
                return changed;
        }
        if (m->deferred) {
                table_put(m, ne);
                m->deferred_dirty = true;
                return true;
        }
        evaluate(m, ne);
        if (oe && entry_content_equal(oe, ne)) {
                /* Nothing a reader sees changed: keep the entry (and its
                 * acceptor), take the new inputs for the fingerprint. */
                acc_add(m, oe, -1);
                G_STATIC_ASSERT(sizeof oe->digest == DIGEST_LEN);
                memcpy(oe->digest, ne->digest, DIGEST_LEN);
                acc_add(m, oe, +1);
                VfmigDevice *t = oe->dev; oe->dev = ne->dev; ne->dev = t;
                t = oe->pid; oe->pid = ne->pid; ne->pid = t;
                oe->flags = ne->flags;
                matrix_entry_unref(ne);
                return false;
        }
        table_put(m, ne);
        return true;
}

/* ---- lifetime --------------------------------------------------------------- */

static void parent_rec_free(ParentRec *r)
{
        g_free(r->name);
        vfmig_device_free(r->identity);
        g_ptr_array_unref(r->types);
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
        m->sum = g_checksum_new(G_CHECKSUM_SHA256);
        return m;
}

void matrix_free(Matrix *m)
{
        if (!m)
                return;
        /* The index borrows entries: drop it first. */
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
        g_checksum_free(m->sum);
        g_free(m);
}

static void bump(Matrix *m)
{
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
        memcpy(n->digest, e->digest, DIGEST_LEN);
        return n;
}

bool matrix_set_rules(Matrix *m, VfmigRuleSet *rs)
{
        g_autoptr(GPtrArray) old = NULL;
        bool changed = false;

        if (rs == m->rs || strcmp(vfmig_rules_fingerprint(rs), vfmig_rules_fingerprint(m->rs)) == 0)
                return false;
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
        m->deferred = true;
}

bool matrix_is_deferred(const Matrix *m)
{
        return m->deferred;
}

static bool end_deferral(Matrix *m)
{
        bool changed = !m->built || m->deferred_dirty;

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
        const VfmigDevice *pid = parent_or_NULL;
        MatrixEntry *old;

        if (!dev || !dev->name || !*dev->name || strlen(dev->name) > KEY_MAX)
                return false;
        old = g_hash_table_lookup(m->entries, dev->name);
        if (old && old->kind != MATRIX_ENTRY_DEVICE)
                return false;
        if (!pid && dev->kind == VFMIG_DEVICE_MDEV) {
                ParentRec *r = parent_rec(m, nz(dev->parent));
                pid = r ? r->identity : NULL;
        }
        if (install(m, entry_new_device(m, dev, pid, flags))) {
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

static void ident_digest(Matrix *m, const VfmigDevice *d, guint8 out[DIGEST_LEN])
{
        gsize len = DIGEST_LEN;

        g_checksum_reset(m->sum);
        feed_ident(m->sum, d);
        g_checksum_get_digest(m->sum, out, &len);
}

bool matrix_update_parent(Matrix *m, const VfmigMdevParent *p, const VfmigDevice *parent_identity_or_NULL)
{
        g_autoptr(VfmigDevice) ident = NULL;
        g_autoptr(GPtrArray) types = g_ptr_array_new_with_free_func(g_free);
        ParentRec *r;
        bool changed = false, ident_changed = true;

        if (!p || !p->name || !*p->name || strlen(p->name) > KEY_MAX)
                return false;
        if (parent_identity_or_NULL) {
                ident = ident_copy(parent_identity_or_NULL);
        } else {
                ident = vfmig_device_new(p->name, VFMIG_DEVICE_PCI);
                g_free(ident->driver);
                ident->driver = g_strdup(p->driver ? p->driver : "");
        }
        g_free(ident->name);
        ident->name = g_strdup(p->name);

        r = parent_rec(m, p->name);
        if (!r) {
                r = g_new0(ParentRec, 1);
                r->name = g_strdup(p->name);
                r->types = g_ptr_array_new_with_free_func(g_free);
                gpointer stolen_key = NULL;
                if (g_hash_table_steal_extended(m->orphans, p->name, &stolen_key, (gpointer *) &r->children))
                        g_free(stolen_key);
                else
                        r->children = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
                g_hash_table_insert(m->parents, r->name, r);
        } else {
                guint8 a[DIGEST_LEN], b[DIGEST_LEN];
                ident_digest(m, r->identity, a);
                ident_digest(m, ident, b);
                ident_changed = memcmp(a, b, DIGEST_LEN) != 0;
        }

        for (guint i = 0; p->types && i < p->types->len; i++) {
                const VfmigMdevType *t = p->types->pdata[i];
                if (!t->id || !*t->id || strlen(t->id) > KEY_MAX ||
                    g_ptr_array_find_with_equal_func(types, t->id, g_str_equal, NULL))
                        continue;
                g_ptr_array_add(types, g_strdup(t->id));
                changed |= install(m, entry_new_creatable(m, p->name, t->id, t->available_instances, ident));
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
        vfmig_device_free(r->identity);
        r->identity = g_steal_pointer(&ident);

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
                                changed |= install(m, entry_new_device(m, e->dev, r->identity, e->flags));
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
                           "x%016" G_GINT64_MODIFIER "x%016" G_GINT64_MODIFIER "x", n,
                           g_hash_table_size(m->entries), m->acc[0], m->acc[1], m->acc[2], m->acc[3]);
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

static bool skip_target(const Query *q, const MatrixEntry *e)
{
        if (e->kind == MATRIX_ENTRY_CREATABLE && e->available == 0 && !q->opt->include_unavailable)
                return true;
        return q->opt->is_busy && q->opt->is_busy(e->key, q->opt->userdata);
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

guint matrix_find(Matrix *m, const VfmigProfile *src, const MatrixFindOptions *opt, const VfmigKernelHook *hook,
                  GPtrArray **ret)
{
        static const MatrixFindOptions none = { 0 };
        GPtrArray *res = g_ptr_array_new_with_free_func((GDestroyNotify) matrix_result_free);
        Bucket *b = src && src->migration_type ? g_hash_table_lookup(m->index, src->migration_type) : NULL;
        Query q = { .m = m, .opt = opt ? opt : &none };
        g_autofree Stream *streams = NULL;
        g_autofree Stream **heap = NULL;
        g_autofree VfmigVerdict *verdicts = NULL;
        guint ns = 0, nh = 0;
        bool ask = hook && hook->ask;

        *ret = res;
        if (!b || m->deferred)
                return 0;
        streams = g_new0(Stream, b->list->len);
        heap = g_new0(Stream *, b->list->len);
        verdicts = g_new0(VfmigVerdict, b->list->len);
        for (guint i = 0; i < b->list->len; i++) {
                Class *c = b->list->pdata[i];
                Stream *s = &streams[ns];

                if (c->creatable && !q.opt->include_creatable)
                        continue;
                s->creatable = c->creatable;
                if (c->kernel && ask) {
                        /* The kernel answers per target: ask each one that is a candidate. */
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
        return res->len;
}

static bool refuse_with(VfmigVerdict *v, char *reason)
{
        vfmig_verdict_init(v);
        g_ptr_array_add(v->reasons, reason);
        return false;
}

bool matrix_check(Matrix *m, const VfmigProfile *src, const char *target, const VfmigKernelHook *hook,
                  VfmigVerdict *v)
{
        MatrixEntry *e = matrix_lookup(m, target);

        if (!e && target && !strchr(target, '/')) {
                /* A bare type id: fine when exactly one parent offers it. */
                GHashTableIter it;
                gpointer val;
                guint n = 0;
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
                if (n > 1)
                        return refuse_with(v, g_strdup_printf("mdev type %s is offered by %u parents on host %s: "
                                                              "name one as PARENT/%s", target, n, m->host, target));
        }
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
