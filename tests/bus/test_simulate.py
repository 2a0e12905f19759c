# SPDX-License-Identifier: LGPL-2.1-or-later
"""vfmigd --simulate with every shipped host file, and malformed host files."""
import glob
import json
import os
import subprocess
import unittest

import vfmigtest as vt

BAD = os.path.join(vt.SOURCE, 'tests', 'data', 'bad-hosts')


class ShippedHosts(unittest.TestCase):
    def test_each_shipped_host(self):
        files = sorted(glob.glob(os.path.join(vt.SIM, '*.json')))
        self.assertGreaterEqual(len(files), 2)
        for f in files:
            with self.subTest(host=os.path.basename(f)):
                with open(f) as fh:
                    host = json.load(fh)
                want = vt.expected_vfio_devices(host)
                d = vt.Daemon(['--simulate', f]).start()
                try:
                    c = vt.Client()
                    self.assertEqual(c.get(vt.ROOT_PATH, vt.MANAGER, 'Backend'), 'simulated:' + host['host'])
                    devs = c.devices()
                    self.assertEqual(set(devs), set(want))
                    pcis = {x['name']: x for x in host['devices'] if x['kind'] == 'pci'}
                    for name, spec in want.items():
                        props = c.get_all(devs[name][2], vt.DEVICE)
                        self.assertEqual(props['Name'], name)
                        self.assertEqual(props['Kind'], spec['kind'])
                        self.assertEqual(props['Driver'], spec.get('driver', ''))
                        self.assertEqual(props['IommuGroup'], spec.get('iommu-group', -1))
                        ident = spec if spec['kind'] == 'pci' else pcis[spec['parent']]
                        self.assertEqual(props['VendorId'], int(ident['vendor-id'], 16))
                        self.assertEqual(props['DeviceId'], int(ident['device-id'], 16))
                        self.assertEqual(props['SubsystemVendorId'], int(ident.get('subsystem-vendor-id', '0x0'), 16))
                        self.assertEqual(props['Revision'], int(ident.get('revision', '0x0'), 16))
                        self.assertEqual(props['MdevType'], spec.get('mdev-type', ''))
                        self.assertEqual(props['Parent'], spec.get('parent', ''))
                    types = c.manager('ListMdevTypes')[0]
                    want_types = {(p['name'], t['id'], t.get('available-instances', 0))
                                  for p in host.get('mdev-parents', []) for t in p['types']}
                    self.assertEqual({(t[0], t[2], t[6]) for t in types}, want_types)
                finally:
                    self.assertEqual(d.stop(), 0)


class MalformedHosts(unittest.TestCase):
    def test_bad_hosts_are_refused(self):
        files = sorted(glob.glob(os.path.join(BAD, '*.json')))
        self.assertGreaterEqual(len(files), 8)
        for f in files:
            with self.subTest(host=os.path.basename(f)):
                with open(f) as fh:
                    text = fh.read()
                # Each bad file's comment names what the error must say; a file
                # that is not even JSON keeps it on its first line.
                first = text.split('\n', 1)[0]
                self.assertIn('"comment": "expect: ', first, f'{f} lacks an expect comment')
                expect = json.loads(first.split('"comment": ', 1)[1].rstrip(',') if first.endswith(',')
                                    else '"' + first.split('"comment": "', 1)[1].split('", ', 1)[0] + '"')
                expect = expect.split('expect: ', 1)[1]
                r = subprocess.run([vt.VFMIGD, '--simulate', f], capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn(f, r.stderr)
                self.assertIn(expect, r.stderr)

    def test_missing_file(self):
        r = subprocess.run([vt.VFMIGD, '--simulate', '/nonexistent/host.json'],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn('/nonexistent/host.json', r.stderr)

    def test_bad_usage(self):
        r = subprocess.run([vt.VFMIGD, '--no-such-option'], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)


if __name__ == '__main__':
    vt.main()
