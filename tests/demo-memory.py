#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Demo helper: reach a device's memory through Device.OpenDevice (on a
simulated host the FD is the device memory) to write a pattern or print a
digest of it.  Usage: demo-memory.py write|digest DEVICE"""
import hashlib
import os
import sys

import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib  # noqa: E402

verb, device = sys.argv[1], sys.argv[2]
bus = Gio.DBusConnection.new_for_address_sync(
    os.environ['DBUS_SYSTEM_BUS_ADDRESS'],
    Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
path = bus.call_sync('org.vfmig1', '/org/vfmig1', 'org.vfmig1.Manager', 'GetDevice', GLib.Variant('(s)', (device,)),
                     None, Gio.DBusCallFlags.NONE, -1, None).unpack()[0]
reply, fds = bus.call_with_unix_fd_list_sync('org.vfmig1', path, 'org.vfmig1.Device', 'OpenDevice', None,
                                             GLib.VariantType('(h)'), Gio.DBusCallFlags.NONE, -1, None, None)
fd = fds.get(reply.unpack()[0])
size = os.fstat(fd).st_size
if verb == 'write':
    pattern = b'vfmig demo: this state travelled from sim-host-a to sim-host-b. '
    os.pwrite(fd, (pattern * (65536 // len(pattern) + 1))[:65536], 4096)
data = os.pread(fd, size, 0)
os.close(fd)
marker = b'vfmig demo: this state travelled'
print(f'{device}: {size} bytes, demo pattern {"present" if marker in data else "absent"}, '
      f'sha256 {hashlib.sha256(data).hexdigest()}')
