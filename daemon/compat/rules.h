/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * rules.h — the compatibility rules engine (DESIGN §4, doc/compat-rules.md).
 *
 * Rules files (JSON, one per driver family) come from a vendor directory
 * (data/compat.d) and an admin directory (/etc/vfmig/compat.d); an admin file
 * replaces the vendor file of the same name.  A broken file is reported and
 * skipped, loading never fails as a whole and never crashes.  A rule matches
 * a device by identity and yields its profile (namespaced migration type,
 * opaque version, exported attributes, capabilities); its accept clauses,
 * evaluated on a target, decide whether a source profile can be resumed
 * there, and every "no" says why, naming the rule id and file.
 *
 * The matrix keeps one VfmigAcceptor per local device or creatable mdev
 * type: its migration type is the index key, its check costs a few string
 * compares.  No I/O besides vfmig_rules_load(); the kernel's own answer
 * (migration_version write-and-test, migration/compatible_*) is asked
 * through a caller-supplied hook.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "device.h"
#include "profile.h"

/*
 * Device flags (uint64_t) given to the functions below: the kernel's
 * VFIO_MIGRATION_* bits (STOP_COPY 0x1, P2P 0x2, PRE_COPY 0x4, the same
 * values as VFMIG_MIGRATION_* in vfio/vfio.h) plus:
 */
#define VFMIG_COMPAT_FLAG_STOP_COPY   ((uint64_t) VFMIG_CAP_STOP_COPY)
#define VFMIG_COMPAT_FLAG_P2P         ((uint64_t) VFMIG_CAP_P2P)
#define VFMIG_COMPAT_FLAG_PRE_COPY    ((uint64_t) VFMIG_CAP_PRE_COPY)
#define VFMIG_COMPAT_FLAG_DMA_LOGGING ((uint64_t) VFMIG_CAP_DMA_LOGGING) /* DMA logging probe said yes */
#define VFMIG_COMPAT_FLAG_NEEDS_P2P   ((uint64_t) VFMIG_CAP_NEEDS_P2P)   /* source: one of several devices of a VM */
/* The device's flags are not known (a creatable mdev type, no instance yet):
 * the matching rule's declared "capabilities" stand in for them. */
#define VFMIG_COMPAT_FLAG_UNKNOWN     (UINT64_C(1) << 63)

typedef struct VfmigRuleSet VfmigRuleSet;
typedef struct VfmigAcceptor VfmigAcceptor;

/*
 * Load vendor_dir/\*.json and admin_dir/\*.json (either may be NULL or
 * missing).  Never NULL.  *errors (may be NULL) gets one char* per problem,
 * "PATH: LOCATION: message", e.g.
 *   "/etc/vfmig/compat.d/mlx5.json: rules[0].accept[1].same: must be an integer ≥ 1".
 * An admin file that is broken still masks the vendor file of its name (the
 * admin meant to replace it); an empty admin file masks it on purpose.
 */
VfmigRuleSet *vfmig_rules_load(const char *vendor_dir, const char *admin_dir, GPtrArray **errors);
VfmigRuleSet *vfmig_rules_ref(VfmigRuleSet *rs);
void vfmig_rules_unref(VfmigRuleSet *rs);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfmigRuleSet, vfmig_rules_unref)

guint vfmig_rules_count(const VfmigRuleSet *rs);                /* rules in force */
bool vfmig_rules_has_rule(const VfmigRuleSet *rs, const char *id);
/* Paths of the files in force, in evaluation order (NULL-terminated, owned by rs). */
const char *const *vfmig_rules_files(const VfmigRuleSet *rs);
/* SHA-256 over the names and contents of every file read (also the broken
 * ones): part of the matrix fingerprint. */
const char *vfmig_rules_fingerprint(const VfmigRuleSet *rs);
/* The file a rule of that id comes from, and its definition as written
 * (compact JSON: what ExportMatrix shows schedulers); NULL for an unknown id. */
const char *vfmig_rules_rule_file(const VfmigRuleSet *rs, const char *id);
const char *vfmig_rules_rule_definition(const VfmigRuleSet *rs, const char *id);

/*
 * The profile of dev as a migration source.  parent: for an mdev, its parent
 * device when known (identity, driver and attributes such as the vGPU
 * manager's version live there); NULL otherwise.  flags: VFMIG_COMPAT_FLAG_*.
 * 0 and *ret; -ENOENT when no rule matches, -EOPNOTSUPP when the device
 * cannot migrate (no stop-copy), -EINVAL when the rule needs an attribute
 * the device lacks; *why_not (may be NULL) says which, naming the rule.
 */
int vfmig_rules_profile_for(const VfmigRuleSet *rs, const VfmigDevice *dev, const VfmigDevice *parent,
                            uint64_t flags, VfmigProfile **ret, char **why_not);

/* The id and file of the rule that matches dev, or NULL. */
const char *vfmig_rules_match(const VfmigRuleSet *rs, const VfmigDevice *dev, const VfmigDevice *parent,
                              const char **file);

/* ---- kernel-provided information --------------------------------------- */

/* What an accept clause {"check": "kernel", "interface": ...} asks. */
typedef struct VfmigKernelQuery {
        const char *interface;       /* "migration_version" | "migration-compatible" */
        const char *device;          /* target device name; NULL for a creatable type */
        const char *parent;          /* mdev: the parent's name, else NULL */
        const char *mdev_type;       /* mdev or creatable type: the type id, else NULL */
        const VfmigProfile *source;  /* .migration_version is what to write */
} VfmigKernelQuery;

/*
 * Supplied by the caller (the daemon writes sysfs; tests fake it).  Return 1
 * when the kernel accepts, 0 when it refuses (set *why: what the kernel
 * said), -EOPNOTSUPP when the target has no such interface (the clause is
 * skipped and the rules decide alone), another -errno when asking failed
 * (refused, with the error in the reason).
 */
typedef struct VfmigKernelHook {
        int (*ask)(void *userdata, const VfmigKernelQuery *q, char **why);
        void *userdata;
} VfmigKernelHook;

/*
 * The interface "migration-compatible": a target's driver lists, in
 * migration/compatible_<name>, the values of <name> it accepts from a source
 * (seed 000); the source's value is the profile attribute <name>.  A list
 * is items separated by commas (spaces around them ignored); an item
 * "A-B" of two decimal numbers is an inclusive range, any other item a
 * value; decimal numbers compare as numbers.  Returns 1 when value is
 * admitted, 0 when not (value NULL: never), -EINVAL when the list is not
 * understood (*why, when why is not NULL, says why).  len: the bytes of
 * list, which need not end in NUL.
 */
#define VFMIG_COMPATIBLE_LIST_MAX 4000
int vfmig_compatible_list_admits(const char *list, size_t len, const char *value, char **why);

/* ---- verdicts ------------------------------------------------------------ */

typedef struct VfmigVerdict {
        bool compatible;
        int score;               /* 1..100 when compatible (higher is better), 0 otherwise */
        GPtrArray *reasons;      /* char*: every failed check, each naming rule id and file */
        GHashTable *to_apply;    /* char* → char*: attributes to set on the target before
                                  * resuming (dynamic_resources, a solved aggregator) */
        char *rule_id;           /* the target's rule, NULL if none */
} VfmigVerdict;

void vfmig_verdict_init(VfmigVerdict *v);
void vfmig_verdict_clear(VfmigVerdict *v);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VfmigVerdict, vfmig_verdict_clear)
/* All reasons joined with "; " (empty when none); free with g_free(). */
char *vfmig_verdict_reasons_text(const VfmigVerdict *v);

/* ---- precompiled acceptors (targets alike share one) ------------------- */

/*
 * The target side of a check, computed once: the target's rule and own
 * profile with its values pre-parsed.  Holds a reference on rs.  Errors as
 * vfmig_rules_profile_for().
 */
int vfmig_acceptor_new(VfmigRuleSet *rs, const VfmigDevice *target, const VfmigDevice *parent,
                       uint64_t flags, VfmigAcceptor **ret, char **why_not);
/*
 * The same for an mdev of type_id that parent could create (parent: its
 * identity, driver and attributes; parent->name is the parent's name).
 * flags as known for that type, usually VFMIG_COMPAT_FLAG_UNKNOWN.
 */
int vfmig_acceptor_new_for_mdev_type(VfmigRuleSet *rs, const VfmigDevice *parent, const char *type_id,
                                     uint64_t flags, VfmigAcceptor **ret, char **why_not);
/*
 * Recreate an acceptor from what a cache remembered, without matching or
 * expanding anything: the rule (by id, in rs) and the target's own profile
 * (copied; must be valid, of the rule's namespace, with stop-copy).  device:
 * the target device's name, NULL for a creatable type; parent, mdev_type as
 * for a kernel query (NULL or "" when none).  -ENOENT when no rule of that id
 * is in force, -EINVAL for a profile the rule could not have given; *error
 * (may be NULL) says which.  Only valid while the cache's fingerprint (which
 * covers rs's fingerprint and the target's identity) matches.
 */
int vfmig_acceptor_new_cached(VfmigRuleSet *rs, const char *rule_id, const VfmigProfile *profile,
                              const char *device, const char *parent, const char *mdev_type,
                              VfmigAcceptor **ret, char **error);
/*
 * Another target with the same rule and the same own profile as a: the
 * cheap path for many identical VFs.  device NULL: a creatable type.  When
 * the rule has no kernel clause and the target is of a's kind, this is a
 * itself with one more reference (no verdict then depends on the target's
 * names); otherwise a new acceptor sharing a's profile.
 */
VfmigAcceptor *vfmig_acceptor_new_like(VfmigAcceptor *a, const char *device, const char *parent,
                                       const char *mdev_type);
/* Acceptors are reference-counted (shared by targets alike) and immutable. */
VfmigAcceptor *vfmig_acceptor_ref(VfmigAcceptor *a);
void vfmig_acceptor_unref(VfmigAcceptor *a);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfmigAcceptor, vfmig_acceptor_unref)

/* Whether the rule has a {"check": "kernel"} clause: with a hook, the verdict
 * then depends on the target device itself, not only on rule and profile. */
bool vfmig_acceptor_uses_kernel(const VfmigAcceptor *a);
/* A creatable mdev type (no device yet): scored −5, may solve a factor. */
bool vfmig_acceptor_is_creatable(const VfmigAcceptor *a);
const char *vfmig_acceptor_get_rule_file(const VfmigAcceptor *a);
/* The rule as written (compact JSON), as vfmig_rules_rule_definition(). */
const char *vfmig_acceptor_get_rule_definition(const VfmigAcceptor *a);

/* The matrix index key, e.g. "pci-15b3:mlx5-cx7-vf". */
const char *vfmig_acceptor_get_migration_type(const VfmigAcceptor *a);
/* The target's own profile (what it would say as a source). */
const VfmigProfile *vfmig_acceptor_get_profile(const VfmigAcceptor *a);
const char *vfmig_acceptor_get_rule_id(const VfmigAcceptor *a);

/*
 * Can the target resume source?  Fills *v (initialised by the call; clear it
 * with vfmig_verdict_clear) and returns v->compatible.  The migration type
 * must match exactly first; then the source's needs-p2p against the target's
 * P2P; then every accept clause (all are evaluated, all failures reported).
 * hook may be NULL (kernel clauses are then skipped).
 */
bool vfmig_acceptor_check(const VfmigAcceptor *a, const VfmigProfile *source, const VfmigKernelHook *hook,
                          VfmigVerdict *v);

/* One-shot: acceptor for target (or its why-not as the single reason) + check. */
bool vfmig_rules_check(VfmigRuleSet *rs, const VfmigProfile *source, const VfmigDevice *target,
                       const VfmigDevice *parent, uint64_t target_flags, const VfmigKernelHook *hook,
                       VfmigVerdict *v);
/* The same for a creatable mdev of type_id on parent. */
bool vfmig_rules_check_mdev_type(VfmigRuleSet *rs, const VfmigProfile *source, const VfmigDevice *parent,
                                 const char *type_id, uint64_t flags, const VfmigKernelHook *hook,
                                 VfmigVerdict *v);
