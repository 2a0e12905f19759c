/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * rules-private.h — the compiled form of a rules file, shared by the loader
 * (rules.c) and the evaluator (accept.c).  Not for other modules.
 */
#pragma once

#include "rules.h"

typedef enum {
        CHECK_EQUAL,
        CHECK_SET,
        CHECK_RANGE,
        CHECK_VERSION,
        CHECK_GENERATION,
        CHECK_PRODUCT,
        CHECK_APPLY,
        CHECK_CAPABILITIES,
        CHECK_KERNEL,
} CheckKind;

typedef struct Bound {
        bool present;
        bool target;            /* "target": the target's own value of the field */
        int64_t value;
} Bound;

typedef struct Clause {
        CheckKind kind;
        char *field;            /* profile attribute name or "migration-version" */
        char *label;            /* how reasons call the field */
        char **values;          /* set: accepted source values */
        char *target_list;      /* set: target attribute holding a comma-separated list */
        Bound min, max;         /* range */
        int component;          /* range: dotted component to compare, -1 = whole value */
        int same;               /* version: leading components that must be equal */
        char **order;           /* generation: oldest first */
        char *factor[2];        /* product: the two fields multiplied */
        char *solve;            /* product: factor the target may still set */
        char **apply;           /* apply: attributes to set 1:1 */
        uint32_t caps;          /* capabilities: required on the target */
        char *interface;        /* kernel */
} Clause;

typedef struct IdSet {
        GArray *ids;            /* guint16; NULL = any */
        bool ranged;            /* revision {"min","max"} */
        guint min, max;
} IdSet;

typedef struct Match {
        int bus;                /* -1 any, else VfmigDeviceKind */
        char *driver;           /* glob */
        IdSet vendor, device, subvendor, subdevice, revision;
        char *parent_driver;    /* exact */
        char *mdev_type;        /* glob */
        GHashTable *attributes; /* name → glob */
} Match;

typedef struct ExportAttr {
        char *name;
        char *tmpl;             /* template, or the lookup key template */
        GHashTable *table;      /* lookup table, NULL for a plain template */
        char *fallback;         /* lookup default, may be NULL */
} ExportAttr;

typedef struct Rule {
        char *id;
        const char *file;       /* owned by the rule set */
        int priority;
        guint order;            /* load order, for a stable sort */
        Match match;
        char *ns;               /* vendor namespace */
        char *type_tmpl;
        char *version_tmpl;
        GPtrArray *exports;     /* ExportAttr* */
        uint32_t caps;          /* declared capabilities */
        bool caps_declared;
        GPtrArray *accept;      /* Clause* */
        bool has_kernel;        /* an accept clause asks the kernel (per-target answer) */
        char *json;             /* the rule's definition as written, compact JSON */
} Rule;

struct VfmigRuleSet {
        gint n_ref;
        GPtrArray *rules;       /* Rule*, by priority then load order */
        GPtrArray *files;       /* char*, NULL-terminated, files in force */
        GHashTable *ids;        /* id → Rule* */
        char *fingerprint;
};

/* Expand tmpl for dev (variables: identity, then exported, then the device's
 * and the parent's attributes): 0 and *ret, or -EINVAL and *why. */
int compat_expand(const char *tmpl, const VfmigDevice *dev, const VfmigDevice *parent, GHashTable *exported,
                  char **ret, char **why);

const Rule *compat_find_rule(const VfmigRuleSet *rs, const VfmigDevice *dev, const VfmigDevice *parent);

/* The profile rule r gives dev. */
int compat_rule_profile(const Rule *r, const VfmigDevice *dev, const VfmigDevice *parent, uint64_t flags,
                        VfmigProfile **ret, char **why_not);

/* " (rule ID in FILE)" */
char *compat_rule_where(const Rule *r);
