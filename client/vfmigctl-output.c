/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfmigctl-output.c — how vfmigctl prints: aligned tables and "Label: value"
 * blocks for people, JSON with stable kebab-case keys for scripts.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vfmigctl.h"

char *vfmigctl_json_key(const char *dbus_name)
{
        GString *s = g_string_new(NULL);

        for (const char *p = dbus_name; *p; p++) {
                bool upper = g_ascii_isupper(*p);

                /* A word starts at an upper-case letter after a lower-case one or
                 * a digit ("VendorId"), or at the last capital of an acronym
                 * that is followed by a lower-case letter ("PCIAddress"). */
                if (upper && p > dbus_name &&
                    (g_ascii_islower(p[-1]) || g_ascii_isdigit(p[-1]) ||
                     (g_ascii_isupper(p[-1]) && g_ascii_islower(p[1]))))
                        g_string_append_c(s, '-');
                g_string_append_c(s, g_ascii_tolower(*p));
        }
        return g_string_free(s, false);
}

JsonObject *vfmigctl_json_object_from_properties(JsonObject *o)
{
        JsonObject *out = json_object_new();
        JsonObjectIter iter;
        const char *name;
        JsonNode *value;

        json_object_iter_init_ordered(&iter, o);
        while (json_object_iter_next_ordered(&iter, &name, &value)) {
                g_autofree char *key = vfmigctl_json_key(name);

                json_object_set_member(out, key, json_node_copy(value));
        }
        return out;
}

void vfmigctl_print_json(VfmigCtl *ctl, JsonNode *node)
{
        g_autoptr(JsonGenerator) gen = json_generator_new();
        g_autofree char *data = NULL;

        json_generator_set_pretty(gen, ctl->json == VFMIGCTL_JSON_PRETTY);
        json_generator_set_indent(gen, 2);
        json_generator_set_root(gen, node);
        data = json_generator_to_data(gen, NULL);
        fputs(data, stdout);
        fputc('\n', stdout);
}

const char *vfmigctl_get_string(JsonObject *o, const char *member)
{
        JsonNode *n = json_object_get_member(o, member);

        if (!n || json_node_get_value_type(n) != G_TYPE_STRING)
                return NULL;
        return json_node_get_string(n);
}

gint64 vfmigctl_get_int(JsonObject *o, const char *member, gint64 fallback)
{
        JsonNode *n = json_object_get_member(o, member);

        if (!n || json_node_get_value_type(n) != G_TYPE_INT64)
                return fallback;
        return json_node_get_int(n);
}

char *vfmigctl_one_line(const char *s)
{
        char *r = g_strdup(s);

        for (char *p = r; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        *p = ' ';
        return r;
}

struct VfmigCtlTable {
        guint columns;
        GPtrArray *cells; /* headers first, then rows; owned strings */
};

VfmigCtlTable *vfmigctl_table_new(const char *const *headers)
{
        VfmigCtlTable *t = g_new0(VfmigCtlTable, 1);

        t->cells = g_ptr_array_new_with_free_func(g_free);
        for (; *headers; headers++, t->columns++)
                g_ptr_array_add(t->cells, g_strdup(*headers));
        return t;
}

void vfmigctl_table_take(VfmigCtlTable *t, char *cell)
{
        if (!cell || !cell[0]) {
                g_free(cell);
                cell = g_strdup("-");
        }
        g_ptr_array_add(t->cells, cell);
}

void vfmigctl_table_add(VfmigCtlTable *t, const char *cell)
{
        vfmigctl_table_take(t, vfmigctl_one_line(cell ? cell : ""));
}

static gsize *column_widths(VfmigCtlTable *t, guint first)
{
        gsize *w = g_new0(gsize, t->columns);

        for (guint i = first; i < t->cells->len; i++) {
                gsize len = g_utf8_strlen(t->cells->pdata[i], -1);
                guint c = i % t->columns;

                if (len > w[c])
                        w[c] = len;
        }
        return w;
}

static void print_cell(const char *cell, gsize width, bool last)
{
        fputs(cell, stdout);
        if (last) {
                fputc('\n', stdout);
                return;
        }
        for (gsize n = g_utf8_strlen(cell, -1); n < width + 2; n++)
                fputc(' ', stdout);
}

void vfmigctl_table_print(VfmigCtl *ctl, VfmigCtlTable *t)
{
        guint first = ctl->legend ? 0 : t->columns;
        g_autofree gsize *w = column_widths(t, first);

        for (guint i = first; i < t->cells->len; i++) {
                guint c = i % t->columns;

                print_cell(t->cells->pdata[i], w[c], c == t->columns - 1);
        }
}

void vfmigctl_table_print_fields(VfmigCtlTable *t)
{
        g_autofree gsize *w = column_widths(t, t->columns);

        g_return_if_fail(t->columns == 2);
        for (guint i = t->columns; i + 1 < t->cells->len; i += 2) {
                const char *label = t->cells->pdata[i];

                for (gsize n = g_utf8_strlen(label, -1); n < w[0]; n++)
                        fputc(' ', stdout);
                printf("%s: %s\n", label, (const char *) t->cells->pdata[i + 1]);
        }
}

void vfmigctl_table_free(VfmigCtlTable *t)
{
        if (!t)
                return;
        g_ptr_array_unref(t->cells);
        g_free(t);
}

static char *format_node(JsonNode *n, VfmigCtlFormat format, bool pci)
{
        if (!n)
                return NULL;
        if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING)
                return vfmigctl_one_line(json_node_get_string(n));
        if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64) {
                gint64 v = json_node_get_int(n);

                switch (format) {
                case VFMIGCTL_FORMAT_INDEX:
                        return v < 0 ? g_strdup("unknown") : g_strdup_printf("%" G_GINT64_FORMAT, v);
                case VFMIGCTL_FORMAT_PCI_ID:
                        return pci ? g_strdup_printf("0x%04" G_GINT64_MODIFIER "x", v) : NULL;
                case VFMIGCTL_FORMAT_PCI_REVISION:
                        return pci ? g_strdup_printf("0x%02" G_GINT64_MODIFIER "x", v) : NULL;
                default:
                        return g_strdup_printf("%" G_GINT64_FORMAT, v);
                }
        }
        if (format == VFMIGCTL_FORMAT_LIST && JSON_NODE_HOLDS_ARRAY(n)) {
                JsonArray *a = json_node_get_array(n);
                g_autoptr(GString) s = g_string_new(NULL);

                for (guint i = 0; i < json_array_get_length(a); i++) {
                        g_autofree char *item = format_node(json_array_get_element(a, i),
                                                            VFMIGCTL_FORMAT_STRING, pci);

                        g_string_append_printf(s, "%s%s", i ? ", " : "", item);
                }
                return g_string_free(g_steal_pointer(&s), false);
        }
        return json_to_string(n, false);
}

void vfmigctl_table_add_properties(VfmigCtlTable *t, JsonObject *props, const VfmigCtlProperty *known,
                                   size_t n_known, bool pci)
{
        g_autoptr(GList) members = json_object_get_members(props);

        for (size_t i = 0; i < n_known; i++) {
                JsonNode *n = json_object_get_member(props, known[i].name);

                if (!n)
                        continue;
                vfmigctl_table_add(t, known[i].label);
                vfmigctl_table_take(t, format_node(n, known[i].format, pci));
        }
        for (GList *l = members; l; l = l->next) {
                bool is_known = false;

                for (size_t i = 0; i < n_known && !is_known; i++)
                        is_known = streq_ptr(known[i].name, l->data);
                if (is_known)
                        continue;
                vfmigctl_table_add(t, l->data);
                vfmigctl_table_take(t, format_node(json_object_get_member(props, l->data),
                                                   VFMIGCTL_FORMAT_STRING, pci));
        }
}
