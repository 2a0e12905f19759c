/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Accept clauses: can a target resume a source profile?  See rules.h. */
#include <errno.h>
#include <string.h>

#include "rules-private.h"

/* The target's own profile, shared by acceptors made alike (a warm start
 * gives every target of one rule and profile the same one). */
typedef struct SharedProfile {
        gint n_ref;
        VfmigProfile *p;
} SharedProfile;

/*
 * Only a rule that asks the kernel judges each target on its own (the
 * driver of that device answers); every other verdict depends on the rule,
 * the target's own profile and whether the target is a creatable type.  So
 * an acceptor keeps the target's names only for such a rule, and targets
 * alike share one acceptor otherwise (vfmig_acceptor_new_like()): a warm
 * start of thousands of identical VFs makes a handful, not thousands.
 */
struct VfmigAcceptor {
        gint n_ref;
        bool creatable;            /* a creatable mdev type, no device yet */
        VfmigRuleSet *rs;          /* keeps rule alive */
        const Rule *rule;
        SharedProfile *shared;
        const VfmigProfile *profile;   /* shared->p: the target's own profile */
        char *where;               /* " (rule ID in FILE)" */
        /* The target, for a kernel query (rule->has_kernel only, else NULL). */
        char *device;              /* NULL for a creatable type */
        char *parent;
        char *mdev_type;
};

void vfmig_verdict_init(VfmigVerdict *v)
{
        *v = (VfmigVerdict) {
                .reasons = g_ptr_array_new_with_free_func(g_free),
                .to_apply = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free),
        };
}

void vfmig_verdict_clear(VfmigVerdict *v)
{
        if (v->reasons)
                g_ptr_array_unref(v->reasons);
        if (v->to_apply)
                g_hash_table_unref(v->to_apply);
        g_free(v->rule_id);
        *v = (VfmigVerdict) { 0 };
}

char *vfmig_verdict_reasons_text(const VfmigVerdict *v)
{
        g_autoptr(GString) s = g_string_new(NULL);

        for (guint i = 0; v->reasons && i < v->reasons->len; i++)
                g_string_append_printf(s, "%s%s", i ? "; " : "", (const char *) v->reasons->pdata[i]);
        return g_string_free(g_steal_pointer(&s), false);
}

/* ---- acceptors ----------------------------------------------------------- */

static SharedProfile *shared_new(VfmigProfile *p)
{
        SharedProfile *s = g_new(SharedProfile, 1);

        s->n_ref = 1;
        s->p = p;
        return s;
}

static void shared_unref(SharedProfile *s)
{
        if (s && g_atomic_int_dec_and_test(&s->n_ref)) {
                vfmig_profile_free(s->p);
                g_free(s);
        }
}

/* A string of the acceptor's allocation, or NULL. */
static char *put_string(char **at, const char *s)
{
        size_t n;
        char *r = *at;

        if (!s)
                return NULL;
        n = strlen(s) + 1;
        memcpy(r, s, n);
        *at += n;
        return r;
}

/* One allocation with its strings.  device NULL: a creatable type. */
static VfmigAcceptor *acceptor_alloc(VfmigRuleSet *rs, const Rule *r, SharedProfile *shared, const char *device,
                                     const char *parent, const char *mdev_type, const char *where)
{
        g_autofree char *own_where = where ? NULL : compat_rule_where(r);
        size_t size = sizeof(VfmigAcceptor);
        bool creatable = !device;
        VfmigAcceptor *a;
        char *at;

        if (!r->has_kernel)
                device = parent = mdev_type = NULL;
        where = where ? where : own_where;
        size += strlen(where) + 1;
        size += device ? strlen(device) + 1 : 0;
        size += parent ? strlen(parent) + 1 : 0;
        size += mdev_type ? strlen(mdev_type) + 1 : 0;
        a = g_malloc0(size);
        at = (char *) (a + 1);
        a->n_ref = 1;
        a->creatable = creatable;
        a->rs = vfmig_rules_ref(rs);
        a->rule = r;
        a->shared = shared;
        a->profile = shared->p;
        a->where = put_string(&at, where);
        a->device = put_string(&at, device);
        a->parent = put_string(&at, parent);
        a->mdev_type = put_string(&at, mdev_type);
        return a;
}

static int acceptor_new(VfmigRuleSet *rs, const VfmigDevice *target, const VfmigDevice *parent, uint64_t flags,
                        bool candidate, VfmigAcceptor **ret, char **why_not)
{
        const Rule *r = compat_find_rule(rs, target, parent);
        g_autoptr(VfmigProfile) p = NULL;
        VfmigAcceptor *a;
        int k;

        *ret = NULL;
        if (!r)
                return vfmig_rules_profile_for(rs, target, parent, flags, &p, why_not);   /* says why */
        k = compat_rule_profile(r, target, parent, flags & ~VFMIG_COMPAT_FLAG_NEEDS_P2P, &p, why_not);
        if (k < 0)
                return k;
        a = acceptor_alloc(rs, r, shared_new(g_steal_pointer(&p)), candidate ? NULL : target->name,
                           target->kind == VFMIG_DEVICE_MDEV && target->parent && *target->parent
                           ? target->parent : NULL,
                           target->kind == VFMIG_DEVICE_MDEV ? target->mdev_type : NULL, NULL);
        *ret = a;
        return 0;
}

int vfmig_acceptor_new(VfmigRuleSet *rs, const VfmigDevice *target, const VfmigDevice *parent, uint64_t flags,
                       VfmigAcceptor **ret, char **why_not)
{
        return acceptor_new(rs, target, parent, flags, false, ret, why_not);
}

int vfmig_acceptor_new_for_mdev_type(VfmigRuleSet *rs, const VfmigDevice *parent, const char *type_id,
                                     uint64_t flags, VfmigAcceptor **ret, char **why_not)
{
        g_autoptr(GHashTable) none = g_hash_table_new(g_str_hash, g_str_equal);
        /* The mdev parent would create: its parent's identity, the type, no
         * attributes of its own yet (lookups fall through to the parent's). */
        VfmigDevice cand = {
                .name = (char *) "",
                .kind = VFMIG_DEVICE_MDEV,
                .driver = (char *) "",
                .vendor_id = parent->vendor_id,
                .device_id = parent->device_id,
                .subsystem_vendor_id = parent->subsystem_vendor_id,
                .subsystem_device_id = parent->subsystem_device_id,
                .revision = parent->revision,
                .iommu_group = -1,
                .numa_node = parent->numa_node,
                .mdev_type = (char *) type_id,
                .parent = parent->name,
                .sysfs_path = (char *) "",
                .attributes = none,
        };

        if (!type_id || !*type_id) {
                *ret = NULL;
                if (why_not)
                        *why_not = g_strdup("no mdev type given");
                return -EINVAL;
        }
        return acceptor_new(rs, &cand, parent, flags, true, ret, why_not);
}

int vfmig_acceptor_new_cached(VfmigRuleSet *rs, const char *rule_id, const VfmigProfile *profile,
                              const char *device, const char *parent, const char *mdev_type, VfmigAcceptor **ret,
                              char **error)
{
        const Rule *r = rule_id ? g_hash_table_lookup(rs->ids, rule_id) : NULL;
        g_autofree char *why = NULL;
        size_t n;

        *ret = NULL;
        if (!r) {
                if (error)
                        *error = g_strdup_printf("rule \"%s\" is not in force", rule_id ? rule_id : "");
                return -ENOENT;
        }
        if (vfmig_profile_validate(profile, &why) < 0) {
                if (error)
                        *error = g_strdup_printf("profile for rule %s: %s", r->id, why);
                return -EINVAL;
        }
        n = strlen(r->ns);
        if (strncmp(profile->migration_type, r->ns, n) != 0 || profile->migration_type[n] != ':' ||
            !(profile->capabilities & VFMIG_CAP_STOP_COPY) || (profile->capabilities & VFMIG_CAP_NEEDS_P2P)) {
                if (error)
                        *error = g_strdup_printf("profile of type \"%s\" cannot come from rule %s (namespace %s)",
                                                 profile->migration_type, r->id, r->ns);
                return -EINVAL;
        }
        if (mdev_type && !*mdev_type)
                mdev_type = NULL;
        if (parent && !*parent)
                parent = NULL;
        *ret = acceptor_alloc(rs, r, shared_new(vfmig_profile_copy(profile)), device, parent, mdev_type, NULL);
        return 0;
}

VfmigAcceptor *vfmig_acceptor_new_like(VfmigAcceptor *a, const char *device, const char *parent,
                                       const char *mdev_type)
{
        if (!a->rule->has_kernel && a->creatable == !device)
                return vfmig_acceptor_ref(a);   /* nothing of this target is looked at */
        g_atomic_int_inc(&a->shared->n_ref);
        return acceptor_alloc(a->rs, a->rule, a->shared, device, parent && *parent ? parent : NULL,
                              mdev_type && *mdev_type ? mdev_type : NULL, a->where);
}

VfmigAcceptor *vfmig_acceptor_ref(VfmigAcceptor *a)
{
        g_atomic_int_inc(&a->n_ref);
        return a;
}

bool vfmig_acceptor_uses_kernel(const VfmigAcceptor *a)
{
        return a->rule->has_kernel;
}

const char *vfmig_acceptor_get_rule_file(const VfmigAcceptor *a)
{
        return a->rule->file;
}

const char *vfmig_acceptor_get_rule_definition(const VfmigAcceptor *a)
{
        return a->rule->json;
}

bool vfmig_acceptor_is_creatable(const VfmigAcceptor *a)
{
        return a->creatable;
}

void vfmig_acceptor_unref(VfmigAcceptor *a)
{
        if (!a || !g_atomic_int_dec_and_test(&a->n_ref))
                return;
        shared_unref(a->shared);
        vfmig_rules_unref(a->rs);
        g_free(a);
}

const char *vfmig_acceptor_get_migration_type(const VfmigAcceptor *a)
{
        return a->profile->migration_type;
}

const VfmigProfile *vfmig_acceptor_get_profile(const VfmigAcceptor *a)
{
        return a->profile;
}

const char *vfmig_acceptor_get_rule_id(const VfmigAcceptor *a)
{
        return a->rule->id;
}

/* ---- evaluation ---------------------------------------------------------- */

typedef struct Eval {
        const VfmigAcceptor *a;
        const VfmigProfile *source;
        VfmigVerdict *v;
        int penalty;
} Eval;

static void refuse(Eval *e, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void refuse(Eval *e, const char *fmt, ...)
{
        g_autofree char *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        g_ptr_array_add(e->v->reasons, g_strconcat(msg, e->a->where, NULL));
}

static const char *value_of(const VfmigProfile *p, const char *field)
{
        if (strcmp(field, "migration-version") == 0)
                return p->migration_version;
        return g_hash_table_lookup(p->attributes, field);
}

/* Both values of a field, or a reason and false. */
static bool both(Eval *e, const Clause *c, const char *field, const char **s, const char **t)
{
        *s = value_of(e->source, field);
        *t = value_of(e->a->profile, field);
        if (!*s) {
                refuse(e, "the source profile has no %s (attribute \"%s\")", c->label ? c->label : field, field);
                return false;
        }
        if (!*t) {
                refuse(e, "the target has no %s (attribute \"%s\")", c->label ? c->label : field, field);
                return false;
        }
        return true;
}

static bool parse_int(const char *s, int component, int64_t *out)
{
        g_auto(GStrv) parts = NULL;

        if (component >= 0) {
                parts = g_strsplit(s, ".", 18);
                if (g_strv_length(parts) <= (guint) component)
                        return false;
                s = parts[component];
        }
        if (g_str_has_prefix(s, "0x"))
                return g_ascii_string_to_unsigned(s + 2, 16, 0, G_MAXINT64, (guint64 *) out, NULL);
        return g_ascii_string_to_signed(s, 10, G_MININT64, G_MAXINT64, out, NULL);
}

/* "28.39.1002" → {28, 39, 1002}; false unless at least n numeric components. */
/* A dotted version: 1..VERSION_PARTS_MAX parts, each a decimal number without
 * sign or space that fits 64 bits; at least n of them. */
#define VERSION_PARTS_MAX 17
typedef struct Version {
        guint len;
        guint64 part[VERSION_PARTS_MAX];
} Version;

static bool parse_version(const char *s, guint n, Version *out)
{
        out->len = 0;
        if (!*s)
                return false;
        for (;;) {
                guint64 x = 0;
                const char *p = s;

                if (out->len == VERSION_PARTS_MAX)
                        return false;
                for (; *p >= '0' && *p <= '9'; p++) {
                        guint d = (guint) (*p - '0');
                        if (x > (G_MAXUINT64 - d) / 10)
                                return false;
                        x = x * 10 + d;
                }
                if (p == s || (*p && *p != '.'))
                        return false;
                out->part[out->len++] = x;
                if (!*p)
                        break;
                s = p + 1;
        }
        return out->len >= n;
}

static char *version_prefix(const Version *v, guint n)
{
        g_autoptr(GString) s = g_string_new(NULL);

        for (guint i = 0; i < n && i < v->len; i++)
                g_string_append_printf(s, "%s%" G_GUINT64_FORMAT, i ? "." : "", v->part[i]);
        return g_string_free(g_steal_pointer(&s), false);
}

static void check_version(Eval *e, const Clause *c)
{
        Version sv, tv;
        const char *s, *t;
        guint n = (guint) c->same + 1;

        if (!both(e, c, c->field, &s, &t))
                return;
        if (!parse_version(s, n, &sv)) {
                refuse(e, "source %s \"%s\" is not a dotted version with at least %u numbers", c->label, s, n);
                return;
        }
        if (!parse_version(t, n, &tv)) {
                refuse(e, "target %s \"%s\" is not a dotted version with at least %u numbers", c->label, t, n);
                return;
        }
        for (guint i = 0; i < (guint) c->same; i++)
                if (sv.part[i] != tv.part[i]) {
                        g_autofree char *sp = version_prefix(&sv, i + 1), *tp = version_prefix(&tv, i + 1);
                        refuse(e, "target %s %s is not the same %s as source %s %s", c->label, tp,
                               i == 0 ? "major version" : "release line", c->label, sp);
                        return;
                }
        guint64 a = sv.part[c->same], b = tv.part[c->same];
        if (b < a) {
                g_autofree char *sp = version_prefix(&sv, n), *tp = version_prefix(&tv, n);
                refuse(e, "target %s %s is older than source %s %s", c->label, tp, c->label, sp);
                return;
        }
        e->penalty += (int) MIN(b - a, (guint64) 10);
}

static void check_range(Eval *e, const Clause *c)
{
        const char *s = value_of(e->source, c->field), *t = NULL;
        int64_t sv, tv = 0, lo, hi;
        bool need_t = c->min.target || c->max.target;

        if (!s) {
                refuse(e, "the source profile has no %s (attribute \"%s\")", c->label, c->field);
                return;
        }
        if (!parse_int(s, c->component, &sv)) {
                refuse(e, "source %s \"%s\" is not an integer%s", c->label, s,
                       c->component >= 0 ? " in the expected position" : "");
                return;
        }
        if (need_t) {
                t = value_of(e->a->profile, c->field);
                if (!t || !parse_int(t, c->component, &tv)) {
                        refuse(e, "the target's %s \"%s\" is not an integer", c->label, t ? t : "(missing)");
                        return;
                }
        }
        lo = c->min.target ? tv : c->min.value;
        hi = c->max.target ? tv : c->max.value;
        if (c->min.present && sv < lo) {
                if (c->min.target)
                        refuse(e, "source %s %" G_GINT64_FORMAT " is older than target %s %" G_GINT64_FORMAT
                               ": the target only goes forward", c->label, sv, c->label, tv);
                else
                        refuse(e, "source %s %" G_GINT64_FORMAT " is below the lowest supported %" G_GINT64_FORMAT,
                               c->label, sv, lo);
                return;
        }
        if (c->max.present && sv > hi) {
                if (c->max.target)
                        refuse(e, "target %s %" G_GINT64_FORMAT " is older than source %s %" G_GINT64_FORMAT,
                               c->label, tv, c->label, sv);
                else
                        refuse(e, "source %s %" G_GINT64_FORMAT " is above the highest supported %" G_GINT64_FORMAT,
                               c->label, sv, hi);
                return;
        }
        if (need_t && tv != sv)
                e->penalty += (int) MIN((tv > sv ? tv - sv : sv - tv), 10);
}

static void check_generation(Eval *e, const Clause *c)
{
        const char *s, *t;
        int si = -1, ti = -1;

        if (!both(e, c, c->field, &s, &t))
                return;
        for (int i = 0; c->order[i]; i++) {
                if (strcmp(c->order[i], s) == 0)
                        si = i;
                if (strcmp(c->order[i], t) == 0)
                        ti = i;
        }
        if (si < 0 || ti < 0) {
                g_autofree char *known = g_strjoinv(", ", c->order);
                refuse(e, "%s %s \"%s\" is not a known %s (%s)", si < 0 ? "source" : "target", c->label,
                       si < 0 ? s : t, c->label, known);
                return;
        }
        if (ti < si) {
                refuse(e, "target %s %s is older than source %s %s: migration only goes from an older to a "
                       "newer generation", c->label, t, c->label, s);
                return;
        }
        e->penalty += 10 * (ti - si);
}

static void check_set(Eval *e, const Clause *c)
{
        const char *s = value_of(e->source, c->field);
        g_auto(GStrv) list = NULL;
        char **values = c->values;

        if (!s) {
                refuse(e, "the source profile has no %s (attribute \"%s\")", c->label, c->field);
                return;
        }
        if (c->target_list) {
                const char *t = value_of(e->a->profile, c->target_list);
                if (!t) {
                        refuse(e, "the target does not list its accepted %s (attribute \"%s\")", c->label,
                               c->target_list);
                        return;
                }
                list = g_strsplit(t, ",", 256);
                for (size_t i = 0; list[i]; i++)
                        g_strstrip(list[i]);
                values = list;
        }
        if (!g_strv_contains((const char *const *) values, s)) {
                g_autofree char *known = g_strjoinv(", ", values);
                refuse(e, "source %s %s is not one the target accepts (%s)", c->label, s, known);
        }
}

static void check_equal(Eval *e, const Clause *c)
{
        const char *s, *t;

        if (!both(e, c, c->field, &s, &t))
                return;
        if (strcmp(s, t) != 0)
                refuse(e, "target %s %s differs from source %s %s", c->label, t, c->label, s);
}

static void check_product(Eval *e, const Clause *c)
{
        const char *sf[2], *tf[2];
        int64_t s[2], t[2];

        for (int i = 0; i < 2; i++) {
                sf[i] = value_of(e->source, c->factor[i]);
                tf[i] = value_of(e->a->profile, c->factor[i]);
                if (!sf[i] || !parse_int(sf[i], -1, &s[i]) || s[i] < 1 || s[i] > G_MAXINT32) {
                        refuse(e, "source %s \"%s\" is missing or not a positive integer", c->factor[i],
                               sf[i] ? sf[i] : "");
                        return;
                }
        }
        int64_t want = s[0] * s[1];
        for (int i = 0; i < 2; i++) {
                if ((!tf[i] || e->a->creatable) && c->solve && strcmp(c->solve, c->factor[i]) == 0) {
                        /* The target's factor is still free (a creatable mdev, or an
                         * instance without it): solve for it. */
                        int o = 1 - i;
                        if (!tf[o] || !parse_int(tf[o], -1, &t[o]) || t[o] < 1) {
                                refuse(e, "target %s \"%s\" is missing or not a positive integer", c->factor[o],
                                       tf[o] ? tf[o] : "");
                                return;
                        }
                        if (want % t[o] != 0) {
                                refuse(e, "source %s × %s = %" G_GINT64_FORMAT " × %" G_GINT64_FORMAT " = %"
                                       G_GINT64_FORMAT " is not a multiple of the target's %s %" G_GINT64_FORMAT,
                                       c->factor[0], c->factor[1], s[0], s[1], want, c->factor[o], t[o]);
                                return;
                        }
                        g_hash_table_replace(e->v->to_apply, g_strdup(c->factor[i]),
                                             g_strdup_printf("%" G_GINT64_FORMAT, want / t[o]));
                        e->penalty += 5;
                        return;
                }
        }
        for (int i = 0; i < 2; i++)
                if (!tf[i] || !parse_int(tf[i], -1, &t[i]) || t[i] < 1 || t[i] > G_MAXINT32) {
                        refuse(e, "target %s \"%s\" is missing or not a positive integer", c->factor[i],
                               tf[i] ? tf[i] : "");
                        return;
                }
        if (t[0] * t[1] != want)
                refuse(e, "source %s × %s = %" G_GINT64_FORMAT " × %" G_GINT64_FORMAT " = %" G_GINT64_FORMAT
                       " differs from the target's %" G_GINT64_FORMAT " × %" G_GINT64_FORMAT " = %" G_GINT64_FORMAT,
                       c->factor[0], c->factor[1], s[0], s[1], want, t[0], t[1], t[0] * t[1]);
}

static void check_apply(Eval *e, const Clause *c)
{
        for (size_t i = 0; c->apply[i]; i++) {
                const char *s = value_of(e->source, c->apply[i]);
                const char *t = value_of(e->a->profile, c->apply[i]);
                if (!s)
                        continue;   /* nothing the source set: nothing to copy */
                if (!t || strcmp(s, t) != 0) {
                        g_hash_table_replace(e->v->to_apply, g_strdup(c->apply[i]), g_strdup(s));
                        e->penalty += 2;
                }
        }
}

static void check_capabilities(Eval *e, const Clause *c)
{
        uint32_t missing = c->caps & ~e->a->profile->capabilities;

        if (missing) {
                g_autofree char *m = vfmig_caps_to_text(missing);
                refuse(e, "the target lacks %s, which this device family needs to resume", m);
        }
}

static void check_kernel(Eval *e, const Clause *c, const VfmigKernelHook *hook)
{
        g_autofree char *why = NULL;
        VfmigKernelQuery q = {
                .interface = c->interface,
                .device = e->a->device,
                .parent = e->a->parent,
                .mdev_type = e->a->mdev_type,
                .source = e->source,
        };
        int r;

        if (!hook || !hook->ask)
                return;
        r = hook->ask(hook->userdata, &q, &why);
        if (r > 0 || r == -EOPNOTSUPP)
                return;
        if (r == 0 && strcmp(c->interface, "migration-compatible") == 0)
                refuse(e, "the target's driver does not accept this source via migration/compatible_*: %s",
                       why ? why : "no reason given");
        else if (r == 0)
                refuse(e, "the target's driver refused source version \"%s\" via %s%s%s",
                       e->source->migration_version, c->interface, why ? ": " : "", why ? why : "");
        else
                refuse(e, "could not ask the target's driver via %s: %s", c->interface, g_strerror(-r));
}

bool vfmig_acceptor_check(const VfmigAcceptor *a, const VfmigProfile *source, const VfmigKernelHook *hook,
                          VfmigVerdict *v)
{
        Eval e = { .a = a, .source = source, .v = v };

        vfmig_verdict_init(v);
        v->rule_id = g_strdup(a->rule->id);
        /* The transparent first-level filter: nothing else is compared across types. */
        if (g_strcmp0(source->migration_type, a->profile->migration_type) != 0) {
                refuse(&e, "source migration type \"%s\" differs from the target's \"%s\"",
                       source->migration_type ? source->migration_type : "", a->profile->migration_type);
                return false;
        }
        if ((source->capabilities & VFMIG_CAP_NEEDS_P2P) && !(a->profile->capabilities & VFMIG_CAP_P2P)) {
                g_autofree char *have = vfmig_caps_to_text(a->profile->capabilities);
                refuse(&e, "the source is one of several devices of its VM and needs P2P (the RUNNING_P2P "
                       "state), which the target lacks (target capabilities: %s)", have);
        }
        for (guint i = 0; i < a->rule->accept->len; i++) {
                const Clause *c = a->rule->accept->pdata[i];
                switch (c->kind) {
                case CHECK_EQUAL: check_equal(&e, c); break;
                case CHECK_SET: check_set(&e, c); break;
                case CHECK_RANGE: check_range(&e, c); break;
                case CHECK_VERSION: check_version(&e, c); break;
                case CHECK_GENERATION: check_generation(&e, c); break;
                case CHECK_PRODUCT: check_product(&e, c); break;
                case CHECK_APPLY: check_apply(&e, c); break;
                case CHECK_CAPABILITIES: check_capabilities(&e, c); break;
                case CHECK_KERNEL: check_kernel(&e, c, hook); break;
                }
        }
        if (a->creatable)
                e.penalty += 5;   /* an instance still has to be created */
        v->compatible = v->reasons->len == 0;
        if (!v->compatible)
                g_hash_table_remove_all(v->to_apply);
        v->score = v->compatible ? CLAMP(100 - e.penalty, 1, 100) : 0;
        return v->compatible;
}

/* ---- one-shot checks ---------------------------------------------------- */

/* The acceptor could not be built: its why-not is the one reason. */
static bool refused_target(VfmigVerdict *v, const char *what, const char *why)
{
        vfmig_verdict_init(v);
        g_ptr_array_add(v->reasons, g_strdup_printf("%s: %s", what, why ? why : "cannot be evaluated"));
        return false;
}

bool vfmig_rules_check(VfmigRuleSet *rs, const VfmigProfile *source, const VfmigDevice *target,
                       const VfmigDevice *parent, uint64_t target_flags, const VfmigKernelHook *hook,
                       VfmigVerdict *v)
{
        g_autoptr(VfmigAcceptor) a = NULL;
        g_autofree char *why = NULL;

        if (vfmig_acceptor_new(rs, target, parent, target_flags, &a, &why) < 0) {
                g_autofree char *what = g_strdup_printf("target %s", target->name);
                return refused_target(v, what, why);
        }
        return vfmig_acceptor_check(a, source, hook, v);
}

bool vfmig_rules_check_mdev_type(VfmigRuleSet *rs, const VfmigProfile *source, const VfmigDevice *parent,
                                 const char *type_id, uint64_t flags, const VfmigKernelHook *hook,
                                 VfmigVerdict *v)
{
        g_autoptr(VfmigAcceptor) a = NULL;
        g_autofree char *why = NULL;

        if (vfmig_acceptor_new_for_mdev_type(rs, parent, type_id, flags, &a, &why) < 0) {
                g_autofree char *what = g_strdup_printf("type %s on %s", type_id ? type_id : "", parent->name);
                return refused_target(v, what, why);
        }
        return vfmig_acceptor_check(a, source, hook, v);
}
