/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif


#include "json-reader.h"
#include "sim-host.h"
#include "util.h"
#include "vfmig-names.h"

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
