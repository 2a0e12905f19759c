# SPDX-License-Identifier: LGPL-2.1-or-later
"""vfmigd on a private system bus with the shipped policy: name ownership,
query access for unprivileged users, errors, clean shutdown."""
import json
import os
import subprocess
import unittest

import vfmigtest as vt
from gi.repository import GLib


class BusBasics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = vt.Daemon(['--simulate', os.path.join(vt.SIM, 'host-a.json')]).start()
        cls.client = vt.Client()

    @classmethod
    def tearDownClass(cls):
        rc = cls.daemon.stop()
        assert rc == 0, f'vfmigd exited with {rc} on SIGTERM'

    def test_manager_properties(self):
        props = self.client.get_all(vt.ROOT_PATH, vt.MANAGER)
        out = subprocess.run([vt.VFMIGD, '--version'], capture_output=True, text=True, check=True).stdout
        self.assertEqual(out.strip(), 'vfmigd ' + props['Version'])
        self.assertEqual(props['Backend'], 'simulated:sim-host-a')
        self.assertEqual(props['DeviceCount'], len(self.client.devices()))

    def test_get_device(self):
        path = self.client.manager('GetDevice', '(s)', ('0000:17:00.1',))[0]
        self.assertTrue(path.startswith('/org/vfmig1/device/'))
        self.assertEqual(self.client.get(path, vt.DEVICE, 'Name'), '0000:17:00.1')

    def test_unknown_device(self):
        with self.assertRaises(GLib.Error) as cm:
            self.client.manager('GetDevice', '(s)', ('0000:99:00.0',))
        self.assertEqual(vt.dbus_error_name(cm.exception), 'org.vfmig1.Error.NoSuchDevice')
        self.assertIn('0000:99:00.0', cm.exception.message)

    def test_invalid_names(self):
        for bad in ('', 'x' * 129, '../../etc/passwd', 'a b', 'dev\x01ice', '0000:17:00.1;rm'):
            with self.subTest(bad=bad):
                with self.assertRaises(GLib.Error) as cm:
                    self.client.manager('GetDevice', '(s)', (bad,))
                self.assertEqual(vt.dbus_error_name(cm.exception), 'org.vfmig1.Error.InvalidArgs')

    def test_unknown_object_and_member(self):
        with self.assertRaises(GLib.Error) as cm:
            self.client.get('/org/vfmig1/device/nonexistent', vt.DEVICE, 'Name')
        self.assertIn(vt.dbus_error_name(cm.exception),
                      ('org.freedesktop.DBus.Error.UnknownObject', 'org.freedesktop.DBus.Error.UnknownInterface'))
        with self.assertRaises(GLib.Error) as cm:
            self.client.manager('NoSuchMethod')
        self.assertEqual(vt.dbus_error_name(cm.exception), 'org.freedesktop.DBus.Error.UnknownMethod')

    def test_property_is_read_only(self):
        path = self.client.manager('GetDevice', '(s)', ('0000:17:00.1',))[0]
        with self.assertRaises(GLib.Error):
            self.client.call(path, 'org.freedesktop.DBus.Properties', 'Set', '(ssv)',
                             (vt.DEVICE, 'Driver', GLib.Variant('s', 'evil')))
        self.assertEqual(self.client.get(path, vt.DEVICE, 'Driver'), 'mlx5_vfio_pci')

    def test_nonroot_can_query(self):
        rc, out, err = vt.busctl_json('call', vt.BUS_NAME, vt.ROOT_PATH, vt.MANAGER, 'ListDevices', user='nobody')
        self.assertEqual(rc, 0, err)
        names = sorted(d[0] for d in out['data'][0])
        self.assertEqual(names, sorted(self.client.devices()))
        rc, out, err = vt.busctl_json('get-property', vt.BUS_NAME, vt.ROOT_PATH, vt.MANAGER, 'DeviceCount',
                                      user='nobody')
        self.assertEqual(rc, 0, err)
        self.assertEqual(out['data'], len(names))
        r = vt.run_as_nobody(['busctl', '--system', 'tree', vt.BUS_NAME])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('/org/vfmig1/device/', r.stdout)

    def test_nonroot_cannot_call_unlisted_member(self):
        # The shipped policy allows only the listed query members; anything
        # else is refused by the bus itself (even a member that does not exist).
        r = vt.run_as_nobody(['busctl', '--system', 'call', vt.BUS_NAME, vt.ROOT_PATH, vt.MANAGER, 'NoSuchMethod'])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('denied', r.stderr.lower())

    def test_nonroot_cannot_own_name(self):
        # A second daemon instance as an unprivileged user must be refused the name.
        r = vt.run_as_nobody([vt.VFMIGD, '--simulate', os.path.join(vt.SIM, 'host-b.json')])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('org.vfmig1', r.stderr)
        self.assertIn('denied', r.stderr.lower())

    def test_root_second_instance_refused(self):
        r = subprocess.run([vt.VFMIGD, '--simulate', os.path.join(vt.SIM, 'host-b.json')],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('org.vfmig1', r.stderr)
        # The first instance is still the one answering.
        self.assertEqual(self.client.get(vt.ROOT_PATH, vt.MANAGER, 'Backend'), 'simulated:sim-host-a')


class Notify(unittest.TestCase):
    def test_ready_status_and_clean_exit(self):
        import socket
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'notify')
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            sock.settimeout(20)
            d = vt.Daemon(['--simulate', os.path.join(vt.SIM, 'host-b.json')], env={'NOTIFY_SOCKET': path})
            d.start(wait=False)
            try:
                msg = sock.recv(4096).decode()
                self.assertIn('READY=1', msg.split('\n'))
                with open(os.path.join(vt.SIM, 'host-b.json')) as f:
                    n = len(vt.expected_vfio_devices(json.load(f)))
                self.assertIn(f'STATUS=Serving {n} VFIO devices (simulated:sim-host-b)', msg)
                # READY is only sent once the name is owned.
                self.assertTrue(vt.Client().get(vt.ROOT_PATH, vt.MANAGER, 'Version'))
            finally:
                self.assertEqual(d.stop(), 0)
            msg = sock.recv(4096).decode()
            self.assertIn('STOPPING=1', msg)
            sock.close()


if __name__ == '__main__':
    vt.main()
