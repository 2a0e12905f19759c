/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * matrix.h — the host matrix (DESIGN §4 "The host matrix", §8): for every
 * local VFIO device and every mdev type a parent could create, the target's
 * profile and its acceptor (the matching rule's accept clauses, precompiled),
 * indexed by migration type so that a query costs O(candidates of that type)
 * and not O(devices).
 *
 * Entries and keys:
 *   - a device entry per VFIO device, key = the device name (PCI address or
 *     mdev UUID);
 *   - a creatable entry per (mdev parent × type), key = "PARENT/TYPE-ID",
 *     e.g. "0000:3b:00.0/nvidia-223"; types with available_instances = 0 are
 *     kept but marked unavailable (a query skips them unless asked).
 * An entry no rule matches (or whose device cannot migrate) is kept with its
 * reason, outside the index: CheckCompatibility explains it, queries never
 * see it.
 *
 * Inputs come from the inventory (update/remove functions: each touches only
 * its entries and returns whether the matrix content changed, bumping the
 * generation once per call when it did).  Identical target families (same
 * rule, same own profile, same kind) form one class inside an index bucket:
 * a query evaluates the accept clauses once per class, then merges the
 * members by name — unless the rule asks the kernel and a hook is given,
 * when every member is asked on its own.
 *
 * Persistence: matrix_save() writes DIR/matrix.json atomically with the
 * fingerprint; matrix_load() on a deferred matrix restores every entry from
 * the cache without rule matching or template expansion when the
 * fingerprint matches, and otherwise (missing, stale, corrupt, truncated,
 * garbage, wrong shapes) builds cold and says why.  Never crashes on any
 * file content.
 *
 * Core module: GLib + json-glib (the cache is written with it, read with
 * json-reader.h), no sd-bus, no sd-event, no sysfs.
 * Single-threaded (the daemon's event loop).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "compat/rules.h"
#include "device.h"

#define MATRIX_CACHE_FILE    "matrix.json"
#define MATRIX_CACHE_VERSION 1
#define MATRIX_CACHE_MAX     (64 * 1024 * 1024)   /* bigger cache files are ignored */

typedef struct Matrix Matrix;
typedef struct MatrixEntry MatrixEntry;

typedef enum {
        MATRIX_ENTRY_DEVICE,      /* an existing VFIO device (PCI function or mdev instance) */
        MATRIX_ENTRY_CREATABLE,   /* an mdev type a parent can create */
} MatrixEntryKind;

/* ---- lifetime, global inputs ------------------------------------------- */

/* rs: the rules in force (a reference is taken).  host_name: for exports. */
Matrix *matrix_new(VfmigRuleSet *rs, const char *host_name);
void matrix_free(Matrix *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Matrix, matrix_free)

/* Part of the fingerprint (uname -r).  Returns whether it changed. */
bool matrix_set_kernel_release(Matrix *m, const char *release);
/* A driver's version (/sys/module/DRIVER/version or srcversion); NULL
 * forgets it.  Part of the fingerprint.  Returns whether it changed. */
bool matrix_set_driver_version(Matrix *m, const char *driver, const char *version);

/*
 * Replace the rules (after Reload): every entry is re-evaluated; the
 * generation goes up once if any entry's content (profile, rule, its
 * definition or file, reason) changed.  A rule set with the same fingerprint
 * as the current one is a no-op.  Returns whether the content changed.
 */
bool matrix_set_rules(Matrix *m, VfmigRuleSet *rs);
VfmigRuleSet *matrix_get_rules(Matrix *m);

/* ---- start: cold or warm ------------------------------------------------- */

/*
 * Deferred mode, for the start: the update functions below only record
 * their inputs; nothing is evaluated until matrix_build() (cold) or
 * matrix_load() (warm when the cache matches).  The generation does not move
 * while deferred.
 */
void matrix_defer(Matrix *m);
bool matrix_is_deferred(const Matrix *m);
/* Evaluate every recorded input (rule matching, profiles, acceptors) and
 * leave deferred mode.  Returns whether the content changed. */
bool matrix_build(Matrix *m);

/*
 * Warm start: read DIR/matrix.json; when its fingerprint equals expected_fp
 * (NULL: matrix_fingerprint(m)) and it is well formed and covers exactly the
 * recorded entries, rebuild every entry from it (cached rule id + profile,
 * no matching) and return 1.  Otherwise build cold and return 0; *warning
 * (may be NULL) then says why the file was ignored, or stays NULL when there
 * was no file.  Leaves deferred mode either way.  The generation is the
 * cache's on a warm start, one more than the cache's on a cold one (1 without
 * a usable cache).
 */
int matrix_load(Matrix *m, const char *dir, const char *expected_fp, char **warning);

/*
 * The same in two steps.  matrix_cache_file_read() reads DIR/matrix.json,
 * checks its frame and checksum, parses the body (json-reader.h) and decodes
 * it: generation, fingerprint, profiles, every group's and reason's targets.
 * It needs no matrix and touches no shared state, so a start runs it on
 * another thread while the host is enumerated.  matrix_load_file() then
 * compares the fingerprint, maps the targets to the recorded entries and
 * restores them (a missing or unusable file: cold, as matrix_load()).
 */
typedef struct MatrixCacheFile MatrixCacheFile;
MatrixCacheFile *matrix_cache_file_read(const char *dir);
void matrix_cache_file_free(MatrixCacheFile *f);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MatrixCacheFile, matrix_cache_file_free)
int matrix_load_file(Matrix *m, const MatrixCacheFile *f, const char *expected_fp, char **warning);

/*
 * Write DIR/matrix.json atomically (temp file, fsync, rename, fsync of DIR).
 * 0, or -errno with *error.  DIR must exist.
 */
int matrix_save(Matrix *m, const char *dir, char **error);
/*
 * The file is {"vfmig-matrix-cache":VERSION,"checksum":"HEX","body":BODY}
 * with HEX = matrix_cache_checksum(BODY): a damage detector (128 bits of a
 * fast hash, not a signature).  Exposed for tests and tools.
 */
char *matrix_cache_checksum(const char *body, size_t len);

/* Whether the content or fingerprint differ from the last save or load. */
bool matrix_needs_save(Matrix *m);

/* ---- incremental updates (one inventory event each) --------------------- */

/*
 * Add or replace a device entry.  parent_or_NULL: for an mdev, its parent's
 * identity (PCI ids, driver, attributes such as vgpu_driver_version); when
 * NULL, the identity last given to matrix_update_parent() for dev->parent
 * is used.  flags: VFMIG_COMPAT_FLAG_* (the device's migration flags, DMA
 * logging).  Returns whether the content changed.
 */
bool matrix_update_device(Matrix *m, const VfmigDevice *dev, const VfmigDevice *parent_or_NULL, uint64_t flags);
bool matrix_remove_device(Matrix *m, const char *name);

/*
 * Add or replace a parent's creatable entries (one per type; types gone from
 * p are removed, available_instances is refreshed).  parent_identity_or_NULL:
 * the parent's own device (PCI ids, attributes); when NULL a bare identity
 * (name and driver of p) is used.  When the identity changes, the parent's
 * mdev instances are re-evaluated too.  Returns whether the content changed.
 */
bool matrix_update_parent(Matrix *m, const VfmigMdevParent *p, const VfmigDevice *parent_identity_or_NULL);
bool matrix_remove_parent(Matrix *m, const char *name);

/* ---- reading -------------------------------------------------------------- */

/* Bumped once per call that changed the content (never while deferred). */
uint64_t matrix_generation(const Matrix *m);
/* "sha256:HEX" over the device identities (name, kind, driver, PCI ids,
 * revision, mdev type, parent, attributes, migration flags, and the parent
 * identity used), the creatable types, the driver versions, the rules'
 * fingerprint and the kernel release.  Not over availability, NUMA node,
 * IOMMU group, sysfs path or the host name.  Owned by m, valid until the
 * next change. */
const char *matrix_fingerprint(Matrix *m);

guint matrix_size(const Matrix *m);             /* all entries, with and without a rule */
guint matrix_indexed_size(const Matrix *m);     /* entries with an acceptor */
guint matrix_count_type(const Matrix *m, const char *migration_type);

/* The entry of that key, borrowed, or NULL. */
MatrixEntry *matrix_lookup(Matrix *m, const char *key);

MatrixEntry *matrix_entry_ref(MatrixEntry *e);
void matrix_entry_unref(MatrixEntry *e);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(MatrixEntry, matrix_entry_unref)
const char *matrix_entry_get_key(const MatrixEntry *e);
MatrixEntryKind matrix_entry_get_kind(const MatrixEntry *e);
const char *matrix_entry_get_parent(const MatrixEntry *e);       /* NULL for a PCI device */
const char *matrix_entry_get_mdev_type(const MatrixEntry *e);    /* NULL for a PCI device */
uint32_t matrix_entry_get_available_instances(const MatrixEntry *e);   /* creatable only, else 0 */
bool matrix_entry_is_available(const MatrixEntry *e);            /* device, or creatable with instances */
/* NULL when no rule gives the target a profile; then get_reason says why. */
const VfmigAcceptor *matrix_entry_get_acceptor(const MatrixEntry *e);
const VfmigProfile *matrix_entry_get_profile(const MatrixEntry *e);
const char *matrix_entry_get_migration_type(const MatrixEntry *e);
const char *matrix_entry_get_rule_id(const MatrixEntry *e);
const char *matrix_entry_get_reason(const MatrixEntry *e);

/* ---- queries ---------------------------------------------------------------- */

typedef struct MatrixFindOptions {
        bool include_creatable;        /* creatable mdev types too */
        bool include_unavailable;      /* creatable types with 0 instances too */
        bool include_incompatible;     /* refusals too (after every compatible one) */
        guint max_results;             /* 0: all */
        /* Skip targets for which this says true (reserved, in use). */
        bool (*is_busy)(const char *key, void *userdata);
        void *userdata;
} MatrixFindOptions;

typedef struct MatrixResult {
        MatrixEntry *entry;            /* a reference */
        VfmigVerdict verdict;          /* compatible, score, reasons, to_apply, rule_id */
} MatrixResult;

void matrix_result_free(MatrixResult *r);

/*
 * The targets of src's migration type, ranked: score descending, then an
 * existing device before a creatable type, then key.  Only compatible ones
 * unless opt->include_incompatible.  opt may be NULL (devices only, all
 * results).  hook may be NULL (kernel clauses skipped).  *ret: MatrixResult*
 * (free func set), read-only: the matrix may keep and hand out the same
 * array again.  Returns the number of results.  Entries of other migration
 * types are never looked at.
 *
 * The last few answers are kept (most recently used first): the same
 * question (equal profile, same options apart from the filter, same hook)
 * asked again while the matrix is unchanged gets its answer back after the
 * filter (opt->is_busy, availability) was asked again about every target
 * the first run looked at and said the same of each; otherwise the query
 * runs.  Any change to the matrix drops them all.
 * Queries that ask the kernel per target are not kept.
 */
guint matrix_find(Matrix *m, const VfmigProfile *src, const MatrixFindOptions *opt, const VfmigKernelHook *hook,
                  GPtrArray **ret);

/*
 * The entry a target names: a key (device name or PARENT/TYPE), or a bare
 * TYPE that exactly one parent offers.  NULL when none, or when several
 * parents offer a bare TYPE; *n_offering (when not NULL): how many entries
 * the name fits.
 */
MatrixEntry *matrix_resolve(Matrix *m, const char *target, guint *n_offering);

/*
 * CheckCompatibility: can target (a key: device name or "PARENT/TYPE";
 * a bare "TYPE" works when exactly one parent offers it) resume src?  Fills
 * *v, which must come in empty ({ 0 }; the caller clears it after), and
 * returns v->compatible.  An unknown target, a
 * target no rule matches, and a creatable type without instances are refused
 * with a reason saying so.
 */
bool matrix_check(Matrix *m, const VfmigProfile *src, const char *target, const VfmigKernelHook *hook,
                  VfmigVerdict *v);

/* Counters for tests and benchmarks. */
typedef struct MatrixStats {
        uint64_t visited;        /* entries looked at by queries */
        uint64_t checks;         /* accept-clause evaluations run by queries */
        uint64_t evaluations;    /* rule matches + profile builds (cold path) */
        uint64_t restored;       /* entries restored from a cache (warm path) */
        uint64_t cache_hits;     /* queries answered from the query cache (no clause evaluated) */
} MatrixStats;
MatrixStats matrix_get_stats(const Matrix *m);
void matrix_reset_stats(Matrix *m);

/*
 * ExportMatrix(): pretty JSON for cluster schedulers, stable order:
 *   { "format": 1, "host", "generation", "fingerprint", "kernel-release",
 *     "rules-fingerprint",
 *     "migration-types": { TYPE: [ { "target", "kind": "device"|"creatable",
 *         "parent"?, "mdev-type"?, "available", "available-instances"?,
 *         "rule", "profile": {...} }, ... ] },
 *     "rules": { ID: { "file", "definition": {...as written...} } },
 *     "unmatched": [ { "target", "kind", "reason" } ] }
 * Never NULL.
 */
char *matrix_export_json(Matrix *m);
