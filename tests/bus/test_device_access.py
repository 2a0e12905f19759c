# SPDX-License-Identifier: LGPL-2.1-or-later
"""Device ownership on a simulated host: MigrationFlags/MigrationState/Status,
OpenDevice handing out a working FD, Reset, typed errors, the bus policy for
unprivileged callers, and no FD leaks in the daemon."""
import json
import mmap
import os
import subprocess
import unittest

import vfmigtest as vt
from gi.repository import Gio, GLib

HOST = os.path.join(vt.SIM, 'host-a.json')


def open_device(bus, path):
    reply, fds = bus.call_with_unix_fd_list_sync(vt.BUS_NAME, path, vt.DEVICE, 'OpenDevice', None,
                                                 GLib.VariantType('(h)'), Gio.DBusCallFlags.NONE,
                                                 10000, None, None)
    return fds.get(reply.unpack()[0])


class DeviceAccess(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(HOST) as f:
            cls.host = {d['name']: d for d in json.load(f)['devices']}
        cls.daemon = vt.Daemon(['--simulate', HOST, '--config', '/nonexistent/vfmigd.conf']).start()
        cls.client = vt.Client()

    @classmethod
    def tearDownClass(cls):
        assert cls.daemon.stop() == 0

    def path(self, name):
        return self.client.manager('GetDevice', '(s)', (name,))[0]

    def props(self, name):
        return self.client.get_all(self.path(name), vt.DEVICE)

    def test_flags_state_status(self):
        p = self.props('0000:17:00.1')
        self.assertEqual(p['MigrationFlags'], ['stop-copy', 'p2p', 'pre-copy', 'dma-logging'])
        self.assertEqual(p['MigrationState'], 'running')
        self.assertEqual(p['Status'], 'managed')
        p = self.props('c3d1e9a0-7f2b-4e8d-b1a4-5e6f7a8b9c0d')   # GVT-g: STOP_COPY only
        self.assertEqual(p['MigrationFlags'], ['stop-copy'])
        p = self.props('0000:17:00.3')                             # plain vfio-pci: no migration
        self.assertEqual(p['MigrationFlags'], [])
        self.assertEqual(p['MigrationState'], 'unsupported')
        self.assertEqual(p['Status'], 'managed')

    def test_group_in_use_is_listed_with_status(self):
        self.assertIn('0000:17:00.4', self.client.devices())
        p = self.props('0000:17:00.4')
        self.assertEqual(p['Status'], 'group-in-use')
        self.assertIn('IOMMU group 34', p['StatusMessage'])
        self.assertEqual(p['MigrationState'], 'unknown')
        with self.assertRaises(GLib.Error) as cm:
            open_device(self.client.bus, self.path('0000:17:00.4'))
        self.assertEqual(vt.dbus_error_name(cm.exception), 'org.vfmig1.Error.NotManaged')
        self.assertIn('group-in-use', cm.exception.message)
        with self.assertRaises(GLib.Error) as cm:
            self.client.call(self.path('0000:17:00.4'), vt.DEVICE, 'Reset')
        self.assertEqual(vt.dbus_error_name(cm.exception), 'org.vfmig1.Error.NotManaged')

    def test_open_device_gives_the_device(self):
        # On the simulator the device FD is the device's memory: what one
        # holder writes, another sees, and its size is the state size.
        size = self.host['0000:17:00.1']['migration']['state-size']
        fd1 = open_device(self.client.bus, self.path('0000:17:00.1'))
        fd2 = open_device(self.client.bus, self.path('0000:17:00.1'))
        try:
            self.assertNotEqual(fd1, fd2)
            self.assertEqual(os.fstat(fd1).st_size, size)
            pattern = bytes(range(256)) * 16
            os.pwrite(fd1, pattern, 8192)
            self.assertEqual(os.pread(fd2, len(pattern), 8192), pattern)
            with mmap.mmap(fd2, size) as m:
                self.assertEqual(m[8192:8192 + len(pattern)], pattern)
            # A different device has different memory.
            fd3 = open_device(self.client.bus, self.path('0000:17:00.2'))
            try:
                self.assertNotEqual(os.pread(fd3, len(pattern), 8192), pattern)
            finally:
                os.close(fd3)
        finally:
            os.close(fd1)
            os.close(fd2)

    def test_reset(self):
        self.client.call(self.path('0000:17:00.1'), vt.DEVICE, 'Reset')
        self.assertEqual(self.props('0000:17:00.1')['MigrationState'], 'running')

    def test_vfmigctl_reset_and_show(self):
        r = subprocess.run([vt.VFMIGCTL, 'reset', '0000:17:00.1'], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = subprocess.run([vt.VFMIGCTL, 'reset', '0000:17:00.4'], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn('not managed', r.stderr)
        r = subprocess.run([vt.VFMIGCTL, 'reset', '0000:99:00.0'], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 3)
        r = vt.run_as_nobody([vt.VFMIGCTL, 'reset', '0000:17:00.1'])
        self.assertEqual(r.returncode, 4, r.stderr)
        r = subprocess.run([vt.VFMIGCTL, 'show', '--json', '0000:17:00.1'], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        shown = json.loads(r.stdout)
        self.assertEqual(shown['migration-flags'], ['stop-copy', 'p2p', 'pre-copy', 'dma-logging'])
        self.assertEqual(shown['migration-state'], 'running')
        self.assertEqual(shown['status'], 'managed')

    def test_unknown_object(self):
        with self.assertRaises(GLib.Error) as cm:
            open_device(self.client.bus, '/org/vfmig1/device/0000_3a99_3a00_2e0')
        self.assertIn(vt.dbus_error_name(cm.exception), ('org.freedesktop.DBus.Error.UnknownObject',
                                                         'org.freedesktop.DBus.Error.UnknownMethod'))

    def test_unprivileged_is_refused(self):
        path = self.path('0000:17:00.1')
        for method in ('OpenDevice', 'Reset'):
            with self.subTest(method=method):
                r = vt.run_as_nobody(['busctl', '--system', 'call', vt.BUS_NAME, path, vt.DEVICE, method])
                self.assertNotEqual(r.returncode, 0)
                self.assertIn('denied', r.stderr.lower())
        # ... while queries keep working for the same user.
        r = vt.run_as_nobody(['busctl', '--system', 'get-property', vt.BUS_NAME, path, vt.DEVICE, 'Status'])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('managed', r.stdout)

    def test_no_fd_leak(self):
        fd_dir = f'/proc/{self.daemon.proc.pid}/fd'
        path = self.path('0000:17:00.1')
        bad = self.path('0000:17:00.4')
        open_device(self.client.bus, path) and None   # warm up lazily allocated state
        before = len(os.listdir(fd_dir))
        for _ in range(200):
            os.close(open_device(self.client.bus, path))
            with self.assertRaises(GLib.Error):
                open_device(self.client.bus, bad)
            self.client.call(path, vt.DEVICE, 'Reset')
        # A leak grows the table; a lazily opened descriptor closing is fine.
        self.assertLessEqual(len(os.listdir(fd_dir)), before)


class NotViable(unittest.TestCase):
    def test_group_not_viable_is_listed_with_status(self):
        d = vt.Daemon(['--simulate', os.path.join(vt.SIM, 'host-b.json')]).start()
        try:
            c = vt.Client()
            path = c.manager('GetDevice', '(s)', ('0000:31:00.4',))[0]
            p = c.get_all(path, vt.DEVICE)
            self.assertEqual(p['Status'], 'group-not-viable')
            self.assertIn('IOMMU group 20 is not viable', p['StatusMessage'])
            with self.assertRaises(GLib.Error) as cm:
                open_device(c.bus, path)
            self.assertEqual(vt.dbus_error_name(cm.exception), 'org.vfmig1.Error.NotManaged')
        finally:
            self.assertEqual(d.stop(), 0)


class Configured(unittest.TestCase):
    def test_deny_list_excludes(self):
        conf = os.path.join(os.environ.get('TMPDIR', '/tmp'), f'vfmigd-test-{os.getpid()}.conf')
        with open(conf, 'w') as f:
            f.write('[Devices]\nDeny=0000:17:00.2;type:nvidia-*\n')
        d = vt.Daemon(['--simulate', HOST, '--config', conf]).start()
        try:
            c = vt.Client()
            for name in ('0000:17:00.2', '6f1a3c52-4b0e-4c1e-9a55-0d2b8e5f7a01'):
                path = c.manager('GetDevice', '(s)', (name,))[0]
                self.assertEqual(c.get(path, vt.DEVICE, 'Status'), 'excluded')
            path = c.manager('GetDevice', '(s)', ('0000:17:00.1',))[0]
            self.assertEqual(c.get(path, vt.DEVICE, 'Status'), 'managed')
        finally:
            self.assertEqual(d.stop(), 0)
            os.unlink(conf)

    def test_malformed_config_refused(self):
        conf = os.path.join(os.environ.get('TMPDIR', '/tmp'), f'vfmigd-bad-{os.getpid()}.conf')
        with open(conf, 'w') as f:
            f.write('[Devices\nAllow=*\n')
        try:
            import subprocess
            r = subprocess.run([vt.VFMIGD, '--simulate', HOST, '--config', conf],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 1)
            self.assertIn(conf, r.stderr)
        finally:
            os.unlink(conf)


if __name__ == '__main__':
    vt.main()
