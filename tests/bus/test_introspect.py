# SPDX-License-Identifier: LGPL-2.1-or-later
"""The XML in dbus/ is the API contract: it must equal both what
`vfmigd --introspect` prints and what the running daemon introspects."""
import os
import subprocess
import unittest
import xml.etree.ElementTree as ET

import vfmigtest as vt

INTERFACES = ['org.vfmig1.Manager', 'org.vfmig1.Device', 'org.vfmig1.Reservation', 'org.vfmig1.Job']


def canonical(xml_text, name):
    """The interface as a comparable structure (order of members ignored)."""
    root = ET.fromstring(xml_text)
    for iface in root.iter('interface'):
        if iface.get('name') != name:
            continue
        out = set()
        for m in iface:
            if m.tag not in ('method', 'signal', 'property'):
                continue
            args = tuple((a.get('type'), a.get('name'), a.get('direction') or ('out' if m.tag == 'signal' else 'in'))
                         for a in m.findall('arg'))
            ann = tuple(sorted((a.get('name'), a.get('value')) for a in m.findall('annotation')))
            out.add((m.tag, m.get('name'), m.get('type'), m.get('access'), args, ann))
        return out
    return None


class Introspection(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = vt.Daemon(['--simulate', os.path.join(vt.SIM, 'host-a.json')]).start()
        cls.client = vt.Client()

    @classmethod
    def tearDownClass(cls):
        assert cls.daemon.stop() == 0

    def shipped(self, name):
        with open(os.path.join(vt.SOURCE, 'dbus', name + '.xml')) as f:
            return f.read()

    def live(self, path):
        return self.client.call(path, 'org.freedesktop.DBus.Introspectable', 'Introspect')[0]

    def test_shipped_xml_matches_running_daemon(self):
        dev_path = self.client.manager('GetDevice', '(s)', ('0000:17:00.1',))[0]
        for name, path in (('org.vfmig1.Manager', vt.ROOT_PATH), ('org.vfmig1.Device', dev_path)):
            with self.subTest(interface=name):
                shipped = canonical(self.shipped(name), name)
                self.assertTrue(shipped, f'dbus/{name}.xml has no interface {name}')
                self.assertEqual(shipped, canonical(self.live(path), name))

    def test_shipped_xml_matches_introspect_option(self):
        out = subprocess.run([vt.VFMIGD, '--introspect'], capture_output=True, text=True, check=True).stdout
        for name in INTERFACES:
            with self.subTest(interface=name):
                self.assertEqual(canonical(self.shipped(name), name), canonical(out, name))

    def test_object_manager_lists_every_device(self):
        objs = self.client.managed_objects()
        paths = {p for p, ifaces in objs.items() if vt.DEVICE in ifaces}
        self.assertEqual(paths, {p for _, _, p in self.client.devices().values()})


if __name__ == '__main__':
    vt.main()
