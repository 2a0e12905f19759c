/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * inventory-udev.h — fills an Inventory from the real host with sd-device:
 * one enumeration at start, then a uevent monitor on the given sd-event loop
 * keeps it current (add/remove/bind/unbind/change, mdev create/remove).
 * Uses sd-device and sd-event only; no D-Bus.
 */
#pragma once

#include <systemd/sd-event.h>

#include "inventory.h"

typedef struct UdevSource UdevSource;

/* Enumerates now and starts monitoring.  Returns negative errno on failure. */
int udev_source_new(sd_event *event, Inventory *inv, UdevSource **ret);
void udev_source_free(UdevSource *s);

/* The identity (driver, PCI ids) of any device, e.g. an mdev parent that is
 * not itself a VFIO device, read fresh from sysfs; NULL if unreadable. */
VfmigDevice *udev_identity(const char *syspath);
