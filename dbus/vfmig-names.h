/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * vfmig-names.h — the one place where every externally visible name of vfmig
 * is spelled: bus name, object paths, interfaces, error names and polkit
 * action ids.  Daemon, client and tests include this header; no name literal
 * appears anywhere else in C code.
 */
#pragma once

#define VFMIG_BUS_NAME                 "org.vfmig1"
#define VFMIG_DBUS_PATH                "/org/vfmig1"
#define VFMIG_DBUS_DEVICE_PREFIX       "/org/vfmig1/device"
#define VFMIG_DBUS_RESERVATION_PREFIX  "/org/vfmig1/reservation"
#define VFMIG_DBUS_JOB_PREFIX          "/org/vfmig1/job"

#define VFMIG_DBUS_INTERFACE_MANAGER     "org.vfmig1.Manager"
#define VFMIG_DBUS_INTERFACE_DEVICE      "org.vfmig1.Device"
#define VFMIG_DBUS_INTERFACE_RESERVATION "org.vfmig1.Reservation"
#define VFMIG_DBUS_INTERFACE_JOB         "org.vfmig1.Job"

#define VFMIG_ERROR_PREFIX             "org.vfmig1.Error."
#define VFMIG_ERROR_NO_SUCH_DEVICE     VFMIG_ERROR_PREFIX "NoSuchDevice"
#define VFMIG_ERROR_INVALID_ARGS       VFMIG_ERROR_PREFIX "InvalidArgs"
#define VFMIG_ERROR_NOT_COMPATIBLE     VFMIG_ERROR_PREFIX "NotCompatible"
#define VFMIG_ERROR_BUSY               VFMIG_ERROR_PREFIX "Busy"
#define VFMIG_ERROR_NOT_RESERVED       VFMIG_ERROR_PREFIX "NotReserved"
#define VFMIG_ERROR_STREAM_INVALID     VFMIG_ERROR_PREFIX "StreamInvalid"
#define VFMIG_ERROR_DEVICE_FAILED      VFMIG_ERROR_PREFIX "DeviceFailed"
#define VFMIG_ERROR_NOT_SUPPORTED      VFMIG_ERROR_PREFIX "NotSupported"
#define VFMIG_ERROR_NOT_MANAGED        VFMIG_ERROR_PREFIX "NotManaged"
#define VFMIG_ERROR_ACCESS_DENIED      VFMIG_ERROR_PREFIX "AccessDenied"
/* A job's peer made no progress for longer than the job's bound. */
#define VFMIG_ERROR_TIMED_OUT          VFMIG_ERROR_PREFIX "TimedOut"
#define VFMIG_ERROR_NOT_CONFIRMED      VFMIG_ERROR_PREFIX "NotConfirmed"
/* A job's Error when no more specific name applies. */
#define VFMIG_ERROR_FAILED             VFMIG_ERROR_PREFIX "Failed"

#define VFMIG_POLKIT_RESERVE           "org.vfmig1.reserve"
#define VFMIG_POLKIT_MIGRATE           "org.vfmig1.migrate"
#define VFMIG_POLKIT_OPEN_DEVICE       "org.vfmig1.open-device"
#define VFMIG_POLKIT_MANAGE            "org.vfmig1.manage"

/* Device kinds as they appear in the Device.Kind property. */
#define VFMIG_KIND_PCI                 "pci"
#define VFMIG_KIND_MDEV                "mdev"

/* Limits on strings accepted from outside (bus arguments, host files). */
#define VFMIG_NAME_MAX                 128
#define VFMIG_STRING_MAX               4096
