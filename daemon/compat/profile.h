/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * profile.h — a migration profile: what a source device says about its state
 * so that a target can decide whether it can resume it (DESIGN §4).  The same
 * fields travel as a{sv} on the bus and as a JSON object for vfmigctl; both
 * paths go through vfmig_profile_set(), so validation lives in one place.
 * Unknown keys are ignored; a malformed field is -EINVAL with a message that
 * names the field and says why.  Plain data, no I/O.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#define VFMIG_PROFILE_FORMAT 1

/* Bounds for everything that comes from outside. */
#define VFMIG_PROFILE_TYPE_MAX       256   /* migration-type, bytes */
#define VFMIG_PROFILE_VERSION_MAX    256   /* migration-version */
#define VFMIG_PROFILE_ATTR_NAME_MAX   64   /* [A-Za-z0-9_.:/-] */
#define VFMIG_PROFILE_ATTR_VALUE_MAX 256   /* printable ASCII */
#define VFMIG_PROFILE_ATTRS_MAX       64   /* entries in "attributes" */
#define VFMIG_PROFILE_HOST_MAX       255
#define VFMIG_PROFILE_DEVICE_MAX      64

/* Capabilities ("capabilities" as strings, in this order). */
typedef enum {
        VFMIG_CAP_STOP_COPY   = 1u << 0,   /* "stop-copy"   VFIO_MIGRATION_STOP_COPY */
        VFMIG_CAP_P2P         = 1u << 1,   /* "p2p"         VFIO_MIGRATION_P2P */
        VFMIG_CAP_PRE_COPY    = 1u << 2,   /* "pre-copy"    VFIO_MIGRATION_PRE_COPY */
        VFMIG_CAP_DMA_LOGGING = 1u << 3,   /* "dma-logging" DMA dirty logging feature */
        VFMIG_CAP_NEEDS_P2P   = 1u << 4,   /* "needs-p2p"   the source is one of several
                                            * devices of a VM: the target must have P2P */
} VfmigCap;
#define VFMIG_CAP_ALL 0x1fu

/* "stop-copy" → VFMIG_CAP_STOP_COPY; 0 for an unknown name. */
uint32_t vfmig_cap_from_string(const char *s);
/* The names of the bits set in caps, in the order above; free with g_strfreev(). */
char **vfmig_caps_to_strv(uint32_t caps);
/* "stop-copy, p2p" for messages; "none" when empty. */
char *vfmig_caps_to_text(uint32_t caps);

typedef struct VfmigProfile {
        uint32_t format;              /* 0 until set; must be VFMIG_PROFILE_FORMAT */
        char *migration_type;         /* NULL until set */
        char *migration_version;      /* NULL until set */
        GHashTable *attributes;       /* char* → char*, never NULL */
        uint32_t capabilities;        /* VfmigCap bits */
        bool has_state_size;
        uint64_t state_size;
        char *source_host;            /* NULL when not given */
        char *source_device;          /* NULL when not given */
} VfmigProfile;

VfmigProfile *vfmig_profile_new(void);
void vfmig_profile_free(VfmigProfile *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfmigProfile, vfmig_profile_free)
VfmigProfile *vfmig_profile_copy(const VfmigProfile *p);
bool vfmig_profile_equal(const VfmigProfile *a, const VfmigProfile *b);

/*
 * One typed value, as the bus adapter reads it out of an a{sv} entry or the
 * JSON parser out of a member.  Integer fields accept U32/U64 from the bus
 * and INT64 from JSON; "attributes" is a NULL-terminated key, value, key,
 * value, ... array (PAIRS); "capabilities" a NULL-terminated STRV.
 */
typedef enum {
        VFMIG_VALUE_U32,
        VFMIG_VALUE_U64,
        VFMIG_VALUE_INT64,
        VFMIG_VALUE_STRING,
        VFMIG_VALUE_STRV,
        VFMIG_VALUE_PAIRS,
        VFMIG_VALUE_OTHER,       /* any other type: refused for a known key */
} VfmigValueType;

typedef struct VfmigValue {
        VfmigValueType type;
        union {
                uint32_t u32;
                uint64_t u64;
                int64_t i64;
                const char *str;
                const char *const *strv;    /* STRV and PAIRS */
        };
} VfmigValue;

/*
 * Set one field.  0 on success and for unknown keys (ignored); -EINVAL with
 * *error = "field \"state-size\": must be an unsigned integer" and p
 * unchanged when the value is malformed.  error may be NULL.
 */
int vfmig_profile_set(VfmigProfile *p, const char *key, const VfmigValue *value, char **error);

/* Every required field present: format, migration-type, migration-version. */
int vfmig_profile_validate(const VfmigProfile *p, char **error);

/*
 * A profile from JSON text (an object with the fields above): 0 and *ret, or
 * -EINVAL and *error (parse errors carry line:column).  Never crashes on any
 * input; len may be -1 for a NUL-terminated string.
 */
int vfmig_profile_from_json(const char *text, gssize len, VfmigProfile **ret, char **error);

/* The same from an already parsed JSON node (a cache file, an export). */
int vfmig_profile_from_json_node(JsonNode *node, VfmigProfile **ret, char **error);

/* Add the profile as one JSON object value to b (stable key order). */
void vfmig_profile_build_json(const VfmigProfile *p, JsonBuilder *b);

/* Pretty JSON with stable key order; never NULL. */
char *vfmig_profile_to_json(const VfmigProfile *p);
