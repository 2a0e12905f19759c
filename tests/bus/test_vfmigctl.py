# SPDX-License-Identifier: LGPL-2.1-or-later
"""vfmigctl against the real vfmigd on the test bus (simulated host-a).

What vfmigctl prints is checked against the bus (ListDevices, GetAll,
ListMdevTypes) and against the host file; error paths are checked for the
documented exit status and for the daemon's own message on stderr.
"""
import json
import os
import re
import subprocess
import time
import unittest

import vfmigtest as vt
from gi.repository import GLib

HOST_FILE = os.path.join(vt.SIM, 'host-a.json')

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NO_SUCH_DEVICE = 3
EXIT_NOT_RUNNING = 5

ERROR_NO_SUCH_DEVICE = vt.BUS_NAME + '.Error.NoSuchDevice'
ERROR_INVALID_ARGS = vt.BUS_NAME + '.Error.InvalidArgs'

# The JSON keys vfmigctl(1) documents for a device.
DEVICE_KEYS = {'name', 'kind', 'driver', 'vendor-id', 'device-id', 'subsystem-vendor-id',
               'subsystem-device-id', 'revision', 'iommu-group', 'numa-node', 'mdev-type',
               'parent', 'sysfs-path', 'object-path'}
TYPE_KEYS = ['parent', 'parent-driver', 'type-id', 'type-name', 'device-api', 'description',
             'available-instances']

with open(HOST_FILE) as f:
    HOST = json.load(f)


def expected_devices():
    """The VFIO devices of host-a, computed from the host file alone."""
    return vt.expected_vfio_devices(HOST)


def json_key(dbus_name):
    """SubsystemVendorId -> subsystem-vendor-id, as vfmigctl(1) documents."""
    return re.sub(r'(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])', '-', dbus_name).lower()


def vfmigctl(*args, user=None):
    argv = [vt.VFMIGCTL] + list(args)
    if user == 'nobody':
        return vt.run_as_nobody(argv)
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def fields(text):
    """'  Label: value' lines of `show`/`status` as a dict."""
    out = {}
    for line in text.splitlines():
        label, sep, value = line.strip().partition(': ')
        assert sep, f'not a "Label: value" line: {line!r}'
        assert label not in out, f'label {label} twice'
        out[label] = value
    return out


def table(text, legend=True):
    lines = text.splitlines()
    header = lines[0].split() if legend else None
    rows = [line.split() for line in (lines[1:] if legend else lines)]
    return header, rows


class Vfmigctl(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = vt.Daemon(['--simulate', HOST_FILE]).start()
        cls.client = vt.Client()

    @classmethod
    def tearDownClass(cls):
        cls.daemon.stop()

    def ok(self, *args, user=None):
        r = vfmigctl(*args, user=user)
        self.assertEqual(r.returncode, EXIT_OK, f'vfmigctl {args}: {r.stderr}')
        self.assertEqual(r.stderr, '')
        return r.stdout

    def bus_error(self, method, sig, args):
        """(error name, message) of a Manager call that must fail."""
        with self.assertRaises(GLib.Error) as cm:
            self.client.manager(method, sig, args)
        name = vt.dbus_error_name(cm.exception)
        prefix = f'GDBus.Error:{name}: '
        self.assertTrue(cm.exception.message.startswith(prefix), cm.exception.message)
        return name, cm.exception.message[len(prefix):]

    def assert_one_line_error(self, r, status, message):
        self.assertEqual(r.returncode, status, r.stderr)
        self.assertEqual(r.stdout, '')
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertTrue(r.stderr.startswith('vfmigctl: '), r.stderr)
        self.assertIn(message, r.stderr)

    # --- devices -----------------------------------------------------------

    def test_devices_lists_exactly_the_vfio_devices(self):
        want = expected_devices()
        # What this test needs of the host file: both kinds, and devices to leave out.
        self.assertEqual({d['kind'] for d in want.values()}, {'pci', 'mdev'})
        self.assertGreater(len(HOST['devices']), len(want))
        header, rows = table(self.ok('devices'))
        self.assertEqual(header, ['NAME', 'KIND', 'DRIVER', 'VENDOR:DEVICE', 'IOMMU', 'NUMA', 'TYPE/PARENT',
                                  'STATUS'])
        names = [row[0] for row in rows]
        self.assertEqual(sorted(names), sorted(want))
        self.assertNotIn('0000:5e:00.0', names)  # nvme
        self.assertNotIn('0000:17:00.0', names)  # mlx5_core PF
        self.assertEqual(names, [name for name, _, _, _ in self.client.manager('ListDevices')[0]])

    def test_devices_rows_match_the_bus(self):
        _, rows = table(self.ok('devices'))
        bus = self.client.devices()
        for row in rows:
            self.assertEqual(len(row), 8, row)
            name, kind, driver, ids, iommu, numa, type_parent, status = row
            p = self.client.get_all(bus[name][2], vt.DEVICE)
            spec = expected_devices()[name]
            self.assertEqual(kind, p['Kind'])
            self.assertEqual(kind, spec['kind'])
            self.assertEqual(driver, p['Driver'])
            self.assertEqual(driver, spec['driver'])
            self.assertEqual(iommu, str(p['IommuGroup']) if p['IommuGroup'] >= 0 else '-')
            self.assertEqual(numa, str(p['NumaNode']) if p['NumaNode'] >= 0 else '-')
            self.assertEqual(status, p['Status'] or '-')
            if kind == 'pci':
                self.assertEqual(ids, f"{p['VendorId']:04x}:{p['DeviceId']:04x}")
                self.assertEqual(ids, f"{int(spec['vendor-id'], 16):04x}:{int(spec['device-id'], 16):04x}")
                self.assertEqual(type_parent, '-')
            else:
                self.assertEqual(ids, '-')
                self.assertEqual(type_parent, f"{spec['mdev-type']}/{spec['parent']}")

    def test_devices_no_legend(self):
        with_legend = self.ok('devices').splitlines()
        _, rows = table(self.ok('--no-legend', 'devices'), legend=False)
        self.assertEqual([r[0] for r in rows], [line.split()[0] for line in with_legend[1:]])
        self.assertEqual(len(rows), len(expected_devices()))

    def test_devices_json_matches_the_bus(self):
        out = json.loads(self.ok('devices', '--json'))
        listed = self.client.manager('ListDevices')[0]
        self.assertIsInstance(out, list)
        self.assertEqual([d['name'] for d in out], [name for name, _, _, _ in listed])
        self.assertEqual(sorted(d['name'] for d in out), sorted(expected_devices()))
        for obj, (name, kind, driver, path) in zip(out, listed):
            self.assertEqual(obj['object-path'], path)
            self.assertEqual((obj['kind'], obj['driver']), (kind, driver))
            props = self.client.get_all(path, vt.DEVICE)
            want = {json_key(k): v for k, v in props.items()}
            want['object-path'] = path
            self.assertEqual(obj, want)  # every field, and no other
            self.assertTrue(DEVICE_KEYS <= set(obj), DEVICE_KEYS - set(obj))

    def test_json_modes(self):
        short = self.ok('--json=short', 'devices')
        pretty = self.ok('--json=pretty', 'devices')
        self.assertEqual(len(short.splitlines()), 1)
        self.assertGreater(len(pretty.splitlines()), len(expected_devices()))
        self.assertEqual(json.loads(short), json.loads(pretty))

    # --- show --------------------------------------------------------------

    def test_show_pci_device(self):
        name = '0000:17:00.1'
        path = self.client.manager('GetDevice', '(s)', (name,))[0]
        p = self.client.get_all(path, vt.DEVICE)
        f = fields(self.ok('show', name))
        self.assertEqual(f['Name'], name)
        self.assertEqual(f['Kind'], 'pci')
        self.assertEqual(f['Driver'], p['Driver'])
        self.assertEqual(f['Driver'], 'mlx5_vfio_pci')
        self.assertEqual(f['Vendor'], f"0x{p['VendorId']:04x}")
        self.assertEqual(f['Vendor'], '0x15b3')
        self.assertEqual(f['Device'], '0x101e')
        self.assertEqual(f['Subsystem vendor'], f"0x{p['SubsystemVendorId']:04x}")
        self.assertEqual(f['Subsystem device'], f"0x{p['SubsystemDeviceId']:04x}")
        self.assertEqual(f['Revision'], f"0x{p['Revision']:02x}")
        self.assertEqual(f['IOMMU group'], '31')
        self.assertEqual(f['NUMA node'], str(p['NumaNode']))
        self.assertEqual(f['Status'], p['Status'])
        self.assertEqual(f['Status message'], p['StatusMessage'])
        self.assertEqual(f['Migration'], ', '.join(p['MigrationFlags']) or '-')
        self.assertEqual(f['Migration state'], p['MigrationState'])
        self.assertEqual(f['Object path'], path)
        # Every property the daemon has is shown, plus the path.
        self.assertEqual(len(f), len(p) + 1)

    def test_show_status_and_migration(self):
        seen = set()
        for name, (_, _, path) in self.client.devices().items():
            with self.subTest(device=name):
                p = self.client.get_all(path, vt.DEVICE)
                f = fields(self.ok('show', name))
                self.assertEqual(f['Status'], p['Status'] or '-')
                self.assertEqual(f['Status message'], p['StatusMessage'] or '-')
                self.assertEqual(f['Migration'], ', '.join(p['MigrationFlags']) or '-')
                self.assertEqual(f['Migration state'], p['MigrationState'] or '-')
                seen.add(bool(p['MigrationFlags']))
        # host-a has devices with and without migration support.
        self.assertEqual(seen, {True, False})

    def test_show_mdev_device(self):
        mdevs = [d for d in expected_devices().values() if d['kind'] == 'mdev']
        self.assertTrue(mdevs)
        for spec in mdevs:
            with self.subTest(mdev=spec['name']):
                path = self.client.manager('GetDevice', '(s)', (spec['name'],))[0]
                p = self.client.get_all(path, vt.DEVICE)
                f = fields(self.ok('show', spec['name']))
                self.assertEqual(f['Kind'], 'mdev')
                self.assertEqual(f['Mdev type'], spec['mdev-type'])
                self.assertEqual(f['Parent'], spec['parent'])
                self.assertEqual(f['IOMMU group'], str(spec['iommu-group']))
                self.assertEqual(f['NUMA node'], str(p['NumaNode']) if p['NumaNode'] >= 0 else 'unknown')
                self.assertEqual(f['Vendor'], '-')

    def test_show_json_matches_the_bus(self):
        for name in expected_devices():
            with self.subTest(device=name):
                path = self.client.manager('GetDevice', '(s)', (name,))[0]
                props = self.client.get_all(path, vt.DEVICE)
                want = {json_key(k): v for k, v in props.items()}
                want['object-path'] = path
                self.assertEqual(json.loads(self.ok('--json', 'show', name)), want)

    def test_show_unknown_device(self):
        name = '0000:5e:00.0'  # in the host file, but bound to nvme
        err, message = self.bus_error('GetDevice', '(s)', (name,))
        self.assertEqual(err, ERROR_NO_SUCH_DEVICE)
        self.assertIn(name, message)
        self.assert_one_line_error(vfmigctl('show', name), EXIT_NO_SUCH_DEVICE, message)
        self.assert_one_line_error(vfmigctl('--json', 'show', name), EXIT_NO_SUCH_DEVICE, message)

    def test_show_malformed_name(self):
        for name in ('bad/name!', 'x' * 300, '0000:17:00.1;rm'):
            with self.subTest(name=name[:20]):
                err, message = self.bus_error('GetDevice', '(s)', (name,))
                self.assertEqual(err, ERROR_INVALID_ARGS)
                r = vfmigctl('show', name)
                self.assertNotEqual(r.returncode, EXIT_OK)
                self.assert_one_line_error(r, EXIT_USAGE, message)

    # --- types -------------------------------------------------------------

    def test_types_json_matches_the_bus(self):
        out = json.loads(self.ok('types', '--json'))
        bus = self.client.manager('ListMdevTypes')[0]
        self.assertEqual(len(bus), sum(len(p['types']) for p in HOST['mdev-parents']))
        self.assertEqual([list(o) for o in out], [TYPE_KEYS] * len(out))
        self.assertEqual([tuple(o[k] for k in TYPE_KEYS) for o in out], [tuple(t) for t in bus])

    def test_types_table(self):
        header, rows = table(self.ok('types'))
        self.assertEqual(header, ['PARENT', 'TYPE', 'NAME', 'API', 'AVAILABLE'])
        bus = self.client.manager('ListMdevTypes')[0]
        self.assertEqual(len(rows), len(bus))
        for row, t in zip(rows, bus):
            parent, _, type_id, type_name, api, _, available = t
            self.assertEqual(row, [parent, type_id] + type_name.split() + [api, str(available)])

    def test_types_verbose_has_descriptions(self):
        out = self.ok('--verbose', 'types')
        lines = out.splitlines()
        self.assertIn('DESCRIPTION', lines[0].split())
        bus = self.client.manager('ListMdevTypes')[0]
        self.assertEqual(len(lines), len(bus) + 1)
        for line, t in zip(lines[1:], bus):
            first = t[5].splitlines()[0].strip()
            self.assertIn(first, line)
            self.assertTrue(line.startswith(t[0] + ' '), line)

    # --- status ------------------------------------------------------------

    def test_status(self):
        props = self.client.get_all(vt.ROOT_PATH, vt.MANAGER)
        out = json.loads(self.ok('status', '--json'))
        self.assertEqual(out, {json_key(k): v for k, v in props.items()})
        self.assertEqual(out['device-count'], len(expected_devices()))
        self.assertEqual(out['backend'], 'simulated:' + HOST['host'])
        f = fields(self.ok('status'))
        self.assertEqual(f['Version'], props['Version'])
        self.assertEqual(f['Backend'], props['Backend'])
        self.assertEqual(f['Devices'], str(len(expected_devices())))

    def test_version_and_help(self):
        version = self.client.get(vt.ROOT_PATH, vt.MANAGER, 'Version')
        self.assertEqual(self.ok('--version').strip(), 'vfmigctl ' + version)
        out = self.ok('--help')
        for verb in ('devices', 'show', 'types', 'status'):
            self.assertRegex(out, r'(?m)^  ' + verb + r'\b')

    def test_address_option(self):
        addr = os.environ['DBUS_SYSTEM_BUS_ADDRESS']
        env = {k: v for k, v in os.environ.items() if k != 'DBUS_SYSTEM_BUS_ADDRESS'}
        # The real system bus must not be used: point the default elsewhere.
        env['DBUS_SYSTEM_BUS_ADDRESS'] = 'unix:path=/nonexistent/vfmig-test-bus'
        r = subprocess.run([vt.VFMIGCTL, '--address=' + addr, '--json', 'status'],
                           capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(r.returncode, EXIT_OK, r.stderr)
        self.assertEqual(json.loads(r.stdout)['device-count'], len(expected_devices()))
        r = subprocess.run([vt.VFMIGCTL, 'status'], capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(r.returncode, EXIT_NOT_RUNNING, r.stderr)

    # --- usage errors --------------------------------------------------------

    def test_usage_errors(self):
        for args in ([], ['frobnicate'], ['show'], ['show', 'a', 'b'], ['devices', 'extra'],
                     ['--no-such-option', 'devices'], ['--json=xml', 'devices']):
            with self.subTest(args=args):
                r = vfmigctl(*args)
                self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
                self.assertEqual(r.stdout, '')
                self.assertNotEqual(r.stderr.strip(), '')

    # --- an unprivileged user -------------------------------------------------

    def test_unprivileged_user_reads(self):
        for args in (['devices'], ['--json', 'devices'], ['show', '0000:17:00.1'],
                     ['--json', 'show', 'c3d1e9a0-7f2b-4e8d-b1a4-5e6f7a8b9c0d'],
                     ['types'], ['--json', 'types'], ['-v', 'types'], ['status'], ['--json', 'status']):
            with self.subTest(args=args):
                self.assertEqual(self.ok(*args, user='nobody'), self.ok(*args))
        self.assertEqual(sorted(d['name'] for d in json.loads(self.ok('--json', 'devices', user='nobody'))),
                         sorted(expected_devices()))
        _, message = self.bus_error('GetDevice', '(s)', ('0000:5e:00.0',))
        self.assert_one_line_error(vfmigctl('show', '0000:5e:00.0', user='nobody'), EXIT_NO_SUCH_DEVICE, message)


class NoDaemon(unittest.TestCase):
    def test_daemon_not_running(self):
        bus = vt.system_bus()
        deadline = time.monotonic() + 20
        while bus.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
                            'NameHasOwner', GLib.Variant('(s)', (vt.BUS_NAME,)), None, 0, -1, None).unpack()[0]:
            self.assertLess(time.monotonic(), deadline, 'a vfmigd from another test still owns the name')
            time.sleep(0.05)
        for args in (['devices'], ['--json', 'devices'], ['show', '0000:17:00.1'], ['types'], ['status']):
            for user in (None, 'nobody'):
                with self.subTest(args=args, user=user):
                    r = vfmigctl(*args, user=user)
                    self.assertEqual(r.returncode, EXIT_NOT_RUNNING, r.stderr)
                    self.assertEqual(r.stdout, '')
                    self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
                    self.assertIn('not running', r.stderr)
                    self.assertIn(vt.BUS_NAME, r.stderr)


if __name__ == '__main__':
    vt.main()
