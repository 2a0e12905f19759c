/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfmigctl-compat.c — `profile`, `check`, `targets`, `matrix`: the
 * compatibility queries.  A profile is the same fields as JSON here as the
 * a{sv} on the bus; `profile DEVICE --json` on a source host gives a file
 * that `check`/`targets` accept on a target host.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "vfmigctl.h"
#include "vfmig-names.h"
#include "json-reader.h"

/* Read a profile file ("-" = stdin) as a JSON object. */
static int read_profile_file(const char *path, JsonObject **ret)
{
        g_autoptr(JsonParser) parser = json_parser_new();
        g_autoptr(GError) err = NULL;
        g_autofree char *text = NULL;
        g_autofree char *why = NULL;
        gsize len = 0;
        JsonNode *root;

        if (strcmp(path, "-") == 0) {
                g_autoptr(GIOChannel) ch = g_io_channel_unix_new(0);
                if (g_io_channel_read_to_end(ch, &text, &len, &err) != G_IO_STATUS_NORMAL) {
                        fprintf(stderr, "vfmigctl: reading the profile from stdin: %s\n", err->message);
                        return VFMIGCTL_EXIT_FAILURE;
                }
        } else if (!g_file_get_contents(path, &text, &len, &err)) {
                fprintf(stderr, "vfmigctl: %s\n", err->message);
                return VFMIGCTL_EXIT_FAILURE;
        }
        if (!jv_check(text, len, &why)) {
                fprintf(stderr, "vfmigctl: %s: not JSON: %s\n", path, why);
                return VFMIGCTL_EXIT_USAGE;
        }
        if (!json_parser_load_from_data(parser, text, (gssize) len, &err)) {
                fprintf(stderr, "vfmigctl: %s: not JSON: %s\n", path, err->message);
                return VFMIGCTL_EXIT_USAGE;
        }
        root = json_parser_get_root(parser);
        if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
                fprintf(stderr, "vfmigctl: %s: a profile must be a JSON object\n", path);
                return VFMIGCTL_EXIT_USAGE;
        }
        *ret = json_object_ref(json_node_get_object(root));
        return 0;
}

/* One JSON member as the a{sv} entry the daemon expects; the daemon
 * validates every field and names the bad one. */
static int append_member(sd_bus_message *m, const char *key, JsonNode *n)
{
        int r;

        if (JSON_NODE_HOLDS_OBJECT(n)) {   /* attributes: a{ss} */
                JsonObject *o = json_node_get_object(n);
                g_autoptr(GList) members = json_object_get_members(o);

                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append_basic(m, 's', key);
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'v', "a{ss}");
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'a', "{ss}");
                for (GList *l = members; r >= 0 && l; l = l->next) {
                        JsonNode *v = json_object_get_member(o, l->data);
                        const char *s = JSON_NODE_HOLDS_VALUE(v) && json_node_get_value_type(v) == G_TYPE_STRING
                                        ? json_node_get_string(v) : "";
                        r = sd_bus_message_append(m, "{ss}", l->data, s);
                }
                for (int i = 0; r >= 0 && i < 3; i++)
                        r = sd_bus_message_close_container(m);
                return r;
        }
        if (JSON_NODE_HOLDS_ARRAY(n)) {    /* capabilities: as */
                JsonArray *a = json_node_get_array(n);
                g_autoptr(GPtrArray) l = g_ptr_array_new();

                for (guint i = 0; i < json_array_get_length(a); i++) {
                        JsonNode *e = json_array_get_element(a, i);
                        g_ptr_array_add(l, (char *) (JSON_NODE_HOLDS_VALUE(e) &&
                                                     json_node_get_value_type(e) == G_TYPE_STRING
                                                     ? json_node_get_string(e) : ""));
                }
                g_ptr_array_add(l, NULL);
                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append_basic(m, 's', key);
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'v', "as");
                if (r >= 0)
                        r = sd_bus_message_append_strv(m, (char **) l->pdata);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                return r;
        }
        if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64) {
                gint64 v = json_node_get_int(n);
                if (strcmp(key, "format") == 0)
                        return sd_bus_message_append(m, "{sv}", key, "u", (uint32_t) CLAMP(v, 0, G_MAXUINT32));
                return sd_bus_message_append(m, "{sv}", key, "t", (uint64_t) MAX(v, 0));
        }
        if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING)
                return sd_bus_message_append(m, "{sv}", key, "s", json_node_get_string(n));
        return 0;   /* other shapes: unknown keys are ignored, known ones the daemon reports missing */
}

static int append_profile(sd_bus_message *m, JsonObject *profile)
{
        g_autoptr(GList) members = json_object_get_members(profile);
        int r = sd_bus_message_open_container(m, 'a', "{sv}");

        for (GList *l = members; r >= 0 && l; l = l->next)
                r = append_member(m, l->data, json_object_get_member(profile, l->data));
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

static int call_with_profile(VfmigCtl *ctl, const char *what, const char *member, JsonObject *profile,
                             const char *target, sd_bus_message **reply)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_message_new_method_call(ctl->bus, &m, VFMIG_BUS_NAME, VFMIG_DBUS_PATH,
                                           VFMIG_DBUS_INTERFACE_MANAGER, member);
        if (r >= 0)
                r = append_profile(m, profile);
        if (r >= 0 && target)
                r = sd_bus_message_append(m, "s", target);
        if (r >= 0 && !target)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return vfmigctl_log_parse_error(r, what);
        r = sd_bus_call(ctl->bus, m, 0, &error, reply);
        if (r < 0)
                return vfmigctl_log_error(&error, r, what);
        return 0;
}

int verb_profile(VfmigCtl *ctl, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        g_autoptr(JsonObject) props = NULL;
        g_autofree char *what = g_strdup_printf("profile %s", argv[1]);
        g_autoptr(JsonNode) node = NULL;
        int r;

        r = vfmigctl_call(ctl, what, VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER, "GetMigrationProfile",
                          &reply, "s", argv[1]);
        if (r != 0)
                return r;
        r = vfmigctl_read_properties(reply, &props);
        if (r < 0)
                return vfmigctl_log_parse_error(r, what);
        if (ctl->json != VFMIGCTL_JSON_OFF) {
                node = json_node_init_object(json_node_alloc(), props);
                vfmigctl_print_json(ctl, node);
                return VFMIGCTL_EXIT_OK;
        }
        {
                g_autoptr(VfmigCtlTable) fields = vfmigctl_table_new((const char *const[]) { "", "", NULL });
                g_autoptr(GList) members = json_object_get_members(props);

                for (GList *l = members; l; l = l->next) {
                        JsonNode *v = json_object_get_member(props, l->data);
                        g_autofree char *text = NULL;

                        if (JSON_NODE_HOLDS_VALUE(v) && json_node_get_value_type(v) == G_TYPE_STRING)
                                text = g_strdup(json_node_get_string(v));
                        else {
                                g_autoptr(JsonGenerator) gen = json_generator_new();
                                json_generator_set_root(gen, v);
                                text = json_generator_to_data(gen, NULL);
                        }
                        vfmigctl_table_add(fields, l->data);
                        vfmigctl_table_take(fields, g_steal_pointer(&text));
                }
                vfmigctl_table_print_fields(fields);
        }
        return VFMIGCTL_EXIT_OK;
}

int verb_check(VfmigCtl *ctl, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        g_autoptr(JsonObject) profile = NULL;
        g_auto(GStrv) reasons = NULL;
        g_autofree char *what = g_strdup_printf("check %s", argv[2]);
        int compatible, r;

        r = read_profile_file(argv[1], &profile);
        if (r != 0)
                return r;
        r = call_with_profile(ctl, what, "CheckCompatibility", profile, argv[2], &reply);
        if (r != 0)
                return r;
        r = sd_bus_message_read(reply, "b", &compatible);
        if (r >= 0)
                r = sd_bus_message_read_strv(reply, &reasons);
        if (r < 0)
                return vfmigctl_log_parse_error(r, what);
        if (ctl->json != VFMIGCTL_JSON_OFF) {
                g_autoptr(JsonBuilder) b = json_builder_new();
                g_autoptr(JsonNode) node = NULL;

                json_builder_begin_object(b);
                json_builder_set_member_name(b, "target");
                json_builder_add_string_value(b, argv[2]);
                json_builder_set_member_name(b, "compatible");
                json_builder_add_boolean_value(b, compatible);
                json_builder_set_member_name(b, "reasons");
                json_builder_begin_array(b);
                for (char **s = reasons; s && *s; s++)
                        json_builder_add_string_value(b, *s);
                json_builder_end_array(b);
                json_builder_end_object(b);
                node = json_builder_get_root(b);
                vfmigctl_print_json(ctl, node);
        } else {
                printf("%s: %s\n", argv[2], compatible ? "compatible" : "not compatible");
                for (char **s = reasons; s && *s; s++)
                        printf("  %s\n", *s);
        }
        return compatible ? VFMIGCTL_EXIT_OK : VFMIGCTL_EXIT_NOT_COMPATIBLE;
}

int verb_targets(VfmigCtl *ctl, int argc, char **argv)
{
        static const char *const headers[] = { "TARGET", "KIND", "SCORE", "AVAILABLE", "WHY", NULL };
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        g_autoptr(JsonObject) profile = NULL;
        g_autoptr(VfmigCtlTable) table = vfmigctl_table_new(headers);
        g_autoptr(JsonArray) array = json_array_new();
        const char *what = "finding compatible targets";
        int r;

        r = read_profile_file(argv[1], &profile);
        if (r != 0)
                return r;
        r = call_with_profile(ctl, what, "FindCompatibleTargets", profile, NULL, &reply);
        if (r != 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', "(ssbuuas)");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'r', "ssbuuas")) > 0) {
                const char *target, *kind;
                int compatible;
                uint32_t score, available;
                g_auto(GStrv) why = NULL;

                r = sd_bus_message_read(reply, "ssbuu", &target, &kind, &compatible, &score, &available);
                if (r >= 0)
                        r = sd_bus_message_read_strv(reply, &why);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        break;
                if (ctl->json != VFMIGCTL_JSON_OFF) {
                        JsonObject *o = json_object_new();
                        JsonArray *w = json_array_new();

                        json_object_set_string_member(o, "target", target);
                        json_object_set_string_member(o, "kind", kind);
                        json_object_set_boolean_member(o, "compatible", compatible);
                        json_object_set_int_member(o, "score", score);
                        json_object_set_int_member(o, "available-instances", available);
                        for (char **s = why; s && *s; s++)
                                json_array_add_string_element(w, *s);
                        json_object_set_array_member(o, "explanation", w);
                        json_array_add_object_element(array, o);
                        continue;
                }
                vfmigctl_table_add(table, target);
                vfmigctl_table_add(table, kind);
                vfmigctl_table_take(table, g_strdup_printf("%" PRIu32, score));
                vfmigctl_table_take(table, g_strdup_printf("%" PRIu32, available));
                vfmigctl_table_take(table, why ? g_strjoinv("; ", why) : g_strdup(""));
        }
        if (r < 0)
                return vfmigctl_log_parse_error(r, what);
        if (ctl->json != VFMIGCTL_JSON_OFF) {
                g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), array);
                vfmigctl_print_json(ctl, node);
        } else
                vfmigctl_table_print(ctl, table);
        return VFMIGCTL_EXIT_OK;
}

int verb_matrix(VfmigCtl *ctl, int argc, char **argv)
{
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *json;
        int r;

        r = vfmigctl_call(ctl, "exporting the host matrix", VFMIG_DBUS_PATH, VFMIG_DBUS_INTERFACE_MANAGER,
                          "ExportMatrix", &reply, NULL);
        if (r != 0)
                return r;
        r = sd_bus_message_read(reply, "s", &json);
        if (r < 0)
                return vfmigctl_log_parse_error(r, "exporting the host matrix");
        /* The daemon's export is JSON already; --json=short compacts it. */
        if (ctl->json == VFMIGCTL_JSON_SHORT) {
                g_autoptr(JsonParser) p = json_parser_new();
                if (json_parser_load_from_data(p, json, -1, NULL)) {
                        vfmigctl_print_json(ctl, json_parser_get_root(p));
                        return VFMIGCTL_EXIT_OK;
                }
        }
        fputs(json, stdout);
        if (json[0] && json[strlen(json) - 1] != '\n')
                fputc('\n', stdout);
        return VFMIGCTL_EXIT_OK;
}
