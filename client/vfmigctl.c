/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfmigctl.c — command line, verb table and bus connection of vfmigctl.  Each
 * verb lives in client/vfmigctl-<group>.c; adding one is that file, a line in
 * verbs[] below and a line in client/meson.build.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "vfmigctl.h"
#include "vfmig-names.h"

typedef struct {
        const char *name;
        int min_args, max_args; /* after the verb */
        bool json;              /* a read verb: takes --json */
        int (*run)(VfmigCtl *ctl, int argc, char **argv);
        const char *args;
        const char *help;
} Verb;

static const Verb verbs[] = {
        { "devices", 0, 0, true, verb_devices, "", "List the VFIO devices of this host" },
        { "show", 1, 1, true, verb_show, "DEVICE", "Show all properties of one device" },
        { "types", 0, 0, true, verb_types, "", "List the mdev types of this host's mdev parents" },
        { "status", 0, 0, true, verb_status, "", "Show the daemon's version, backend and device count" },
        { "reset", 1, 1, false, verb_reset, "DEVICE", "Reset a device (VFIO_DEVICE_RESET; polkit org.vfmig1.manage)" },
        { "profile", 1, 1, true, verb_profile, "DEVICE", "Show a device's migration profile (--json: a profile file)" },
        { "check", 2, 2, true, verb_check, "PROFILE-FILE|- TARGET", "Can TARGET resume a device with this profile?" },
        { "targets", 1, 1, true, verb_targets, "PROFILE-FILE|-", "Local targets that can resume this profile, best first" },
        { "matrix", 0, 0, true, verb_matrix, "", "Export this host's compatibility matrix (JSON)" },
        { "reserve", 1, 1, false, verb_reserve, "DEVICE", "Reserve a target device (--profile, --lease, --persist)" },
        { "reservations", 0, 0, true, verb_reservations, "", "List the reservations of this host" },
        { "renew", 1, 1, false, verb_renew, "ID", "Extend a reservation's lease (--lease)" },
        { "release", 1, 1, false, verb_release, "ID", "Release a reservation" },
        { "receive", 1, 2, true, verb_receive, "ID[,ID...] [ADDRESS]", "Prepare the incoming side of a reservation (or a group): prints endpoint and ticket" },
        { "migrate", 1, 64, false, verb_migrate, "DEVICE[,DEVICE...]", "Migrate a device, or a group in one stream, to a prepared target (--to, --ticket)" },
        { "jobs", 0, 0, true, verb_jobs, "", "List the migration jobs of this host" },
        { "watch", 1, 1, false, verb_watch, "JOB", "Follow a job until it ends (progress bar on a terminal)" },
        { "cancel", 1, 1, false, verb_cancel, "JOB", "Cancel a job (the devices are put back)" },
};

static void help(FILE *f)
{
        fprintf(f,
                "Usage: vfmigctl [OPTIONS] COMMAND [ARGS]\n"
                "\n"
                "Query vfmigd, the VFIO migration daemon (%s on the system bus).\n"
                "\n"
                "Commands:\n",
                VFMIG_BUS_NAME);
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                g_autofree char *usage = g_strjoin(" ", verbs[i].name, verbs[i].args, NULL);

                fprintf(f, "  %-22s %s\n", usage, verbs[i].help);
        }
        fprintf(f,
                "\n"
                "Options:\n"
                "  -h --help              Show this help\n"
                "     --version           Show the version\n"
                "     --json[=MODE]       Print JSON: pretty or short (the default is\n"
                "                         pretty on a terminal, short otherwise)\n"
                "     --no-legend         Do not print the column headers\n"
                "  -v --verbose           Show more (e.g. mdev type descriptions)\n"
                "     --address=ADDRESS   Talk to the bus at ADDRESS instead of the\n"
                "                         system bus\n"
                "     --profile=FILE|-    reserve: the source's migration profile (JSON)\n"
                "     --lease=SECONDS     reserve, renew: the lease (1..86400)\n"
                "     --persist           reserve: keep it after vfmigctl exits\n"
                "\n"
                "Exit status: 0 ok, 1 failure, 2 usage error or invalid argument,\n"
                "3 no such device, 4 access denied, 5 vfmigd not running,\n"
                "6 not compatible, 7 busy, 8 not reserved (renew, release).\n"
                "See vfmigctl(1).\n");
}

static int usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static int usage_error(const char *fmt, ...)
{
        va_list ap;

        fputs("vfmigctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs(" (see vfmigctl --help)\n", stderr);
        return VFMIGCTL_EXIT_USAGE;
}

static const Verb *find_verb(const char *name)
{
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq_ptr(verbs[i].name, name))
                        return &verbs[i];
        return NULL;
}

static int connect_bus(const char *address, sd_bus **ret)
{
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r;

        if (!address) {
                r = sd_bus_open_system(&bus);
        } else {
                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_address(bus, address);
                if (r >= 0)
                        r = sd_bus_set_bus_client(bus, true);
                if (r >= 0)
                        r = sd_bus_start(bus);
        }
        if (r < 0) {
                fprintf(stderr, "vfmigctl: cannot connect to %s: %s\n",
                        address ? address : "the system bus", g_strerror(-r));
                /* No bus, no daemon: scripts see the same status as for a
                 * bus without vfmigd, except for a bad address. */
                return r == -EINVAL ? VFMIGCTL_EXIT_USAGE : VFMIGCTL_EXIT_NOT_RUNNING;
        }
        (void) sd_bus_set_description(bus, "vfmigctl");
        *ret = steal_ptr(&bus);
        return 0;
}

int main(int argc, char *argv[])
{
        enum {
                ARG_VERSION = 0x100,
                ARG_JSON,
                ARG_NO_LEGEND,
                ARG_ADDRESS,
                ARG_PROFILE,
                ARG_LEASE,
                ARG_PERSIST,
                ARG_TO,
                ARG_TICKET,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "json", optional_argument, NULL, ARG_JSON },
                { "no-legend", no_argument, NULL, ARG_NO_LEGEND },
                { "verbose", no_argument, NULL, 'v' },
                { "address", required_argument, NULL, ARG_ADDRESS },
                { "profile", required_argument, NULL, ARG_PROFILE },
                { "lease", required_argument, NULL, ARG_LEASE },
                { "persist", no_argument, NULL, ARG_PERSIST },
                { "to", required_argument, NULL, ARG_TO },
                { "ticket", required_argument, NULL, ARG_TICKET },
                {}
        };
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        VfmigCtl ctl = { .json = VFMIGCTL_JSON_OFF, .legend = true };
        const char *address = NULL;
        const Verb *verb;
        int c, r, nargs;

        while ((c = getopt_long(argc, argv, "hv", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help(stdout);
                        return VFMIGCTL_EXIT_OK;
                case ARG_VERSION:
                        printf("vfmigctl %s\n", VFMIG_VERSION);
                        return VFMIGCTL_EXIT_OK;
                case ARG_JSON:
                        if (!optarg)
                                ctl.json = isatty(STDOUT_FILENO) ? VFMIGCTL_JSON_PRETTY : VFMIGCTL_JSON_SHORT;
                        else if (streq_ptr(optarg, "pretty"))
                                ctl.json = VFMIGCTL_JSON_PRETTY;
                        else if (streq_ptr(optarg, "short"))
                                ctl.json = VFMIGCTL_JSON_SHORT;
                        else
                                return usage_error("unknown --json mode \"%s\": use pretty or short", optarg);
                        break;
                case ARG_NO_LEGEND:
                        ctl.legend = false;
                        break;
                case 'v':
                        ctl.verbose = true;
                        break;
                case ARG_ADDRESS:
                        address = optarg;
                        break;
                case ARG_PROFILE:
                        ctl.profile = optarg;
                        break;
                case ARG_LEASE:
                        ctl.lease = optarg;
                        break;
                case ARG_PERSIST:
                        ctl.persist = true;
                        break;
                case ARG_TO:
                        ctl.to = optarg;
                        break;
                case ARG_TICKET:
                        ctl.ticket = optarg;
                        break;
                default:
                        /* getopt_long has said what was wrong. */
                        return VFMIGCTL_EXIT_USAGE;
                }
        }

        if (optind >= argc)
                return usage_error("missing command");
        verb = find_verb(argv[optind]);
        if (!verb)
                return usage_error("unknown command \"%s\"", argv[optind]);
        nargs = argc - optind - 1;
        if (nargs < verb->min_args)
                return usage_error("too few arguments for \"%s\"", verb->name);
        if (nargs > verb->max_args)
                return usage_error("too many arguments for \"%s\"", verb->name);
        if ((ctl.profile || ctl.persist) && verb->run != verb_reserve)
                return usage_error("--profile and --persist go with \"reserve\" only");
        if (ctl.lease && verb->run != verb_reserve && verb->run != verb_renew)
                return usage_error("--lease goes with \"reserve\" and \"renew\" only");
        if ((ctl.to || ctl.ticket) && verb->run != verb_migrate)
                return usage_error("--to and --ticket go with \"migrate\" only");
        if (ctl.json != VFMIGCTL_JSON_OFF && !verb->json)
                return usage_error("\"%s\" has no JSON output", verb->name);

        r = connect_bus(address, &bus);
        if (r != 0)
                return r;
        ctl.bus = bus;

        r = verb->run(&ctl, nargs + 1, argv + optind);
        if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "vfmigctl: cannot write output: %s\n", g_strerror(errno));
                if (r == VFMIGCTL_EXIT_OK)
                        r = VFMIGCTL_EXIT_FAILURE;
        }
        return r;
}
