# SPDX-License-Identifier: LGPL-2.1-or-later
"""The shipped systemd unit and the install tree.

- `systemd-analyze security --offline=yes` on the built unit: the overall
  exposure is at most 1.5 (systemd-hostnamed's on Debian 12).
- `systemd-analyze verify` is clean: ExecStart= points at the built vfmigd
  and man pages are looked up in the DESTDIR tree that `meson install`
  just wrote, so a missing man page fails the test too.
- `meson install --destdir` puts every file where the system looks for it.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

BUILD = os.environ['VFMIG_BUILD_ROOT']
UNIT = os.path.join(BUILD, 'systemd', 'vfmigd.service')
MAX_EXPOSURE = 1.5


def meson_option(name):
    out = subprocess.run(['meson', 'introspect', '--buildoptions', BUILD], capture_output=True, text=True,
                         check=True).stdout
    return {o['name']: o['value'] for o in json.loads(out)}[name]


class Unit(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix='vfmig-install-')
        cls.destdir = os.path.join(cls.tmp.name, 'dest')
        r = subprocess.run(['meson', 'install', '-C', BUILD, '--no-rebuild', '--quiet', '--destdir', cls.destdir],
                           capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, f'meson install failed: {r.stdout} {r.stderr}'
        cls.prefix = meson_option('prefix')
        cls.root = cls.destdir + cls.prefix

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_security_exposure(self):
        r = subprocess.run(['systemd-analyze', 'security', '--offline=yes', '--no-pager', UNIT],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r'Overall exposure level for vfmigd\.service: (\d+\.\d)', r.stdout)
        self.assertTrue(m, f'no exposure level in: {r.stdout} {r.stderr}')
        self.assertLessEqual(float(m.group(1)), MAX_EXPOSURE, r.stdout)
        # And the same through the threshold option, as a tool would check it.
        r = subprocess.run(['systemd-analyze', 'security', '--offline=yes', '--threshold=15', '--no-pager', UNIT],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout[-2000:])

    def test_verify(self):
        # The unit as installed, with ExecStart= at the built binary (the
        # installed one exists only under DESTDIR).
        installed = [os.path.join(top, 'vfmigd.service') for top, _, files in os.walk(self.destdir)
                     if 'vfmigd.service' in files]
        self.assertEqual(len(installed), 1, installed)
        with open(installed[0]) as f:
            text = f.read()
        text = re.sub(r'^ExecStart=.*$', f'ExecStart={os.path.join(BUILD, "daemon", "vfmigd")}', text,
                      flags=re.M)
        d = os.path.join(self.tmp.name, 'verify')
        os.makedirs(d, exist_ok=True)
        unit = os.path.join(d, 'vfmigd.service')
        with open(unit, 'w') as f:
            f.write(text)
        env = dict(os.environ, MANPATH=os.path.join(self.root, 'share', 'man'), SYSTEMD_LOG_LEVEL='notice')
        r = subprocess.run(['systemd-analyze', 'verify', unit], capture_output=True, text=True, timeout=60,
                           env=env, cwd=d)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stderr.strip(), '', 'systemd-analyze verify is not clean')

    def test_install_tree(self):
        def find(name):
            for top, dirs, files in os.walk(self.destdir):
                if name in files:
                    yield os.path.relpath(os.path.join(top, name), self.destdir)

        def one(name, suffix):
            found = [p for p in find(name) if p.endswith(suffix)]
            self.assertEqual(len(found), 1, f'{name}: expected one .../{suffix}, found {list(find(name))}')
            return found[0]

        p = self.prefix.strip('/')
        one('vfmigd.service', 'systemd/system/vfmigd.service')
        self.assertEqual(one('org.vfmig1.conf', 'org.vfmig1.conf'), f'{p}/share/dbus-1/system.d/org.vfmig1.conf')
        self.assertEqual(one('org.vfmig1.service', 'org.vfmig1.service'),
                         f'{p}/share/dbus-1/system-services/org.vfmig1.service')
        self.assertEqual(one('org.vfmig1.policy', 'org.vfmig1.policy'),
                         f'{p}/share/polkit-1/actions/org.vfmig1.policy')
        for iface in ('Manager', 'Device', 'Reservation'):
            self.assertEqual(one(f'org.vfmig1.{iface}.xml', '.xml'),
                             f'{p}/share/dbus-1/interfaces/org.vfmig1.{iface}.xml')
        self.assertEqual(one('vfmigd.8', 'vfmigd.8'), f'{p}/share/man/man8/vfmigd.8')
        self.assertEqual(one('vfmigctl.1', 'vfmigctl.1'), f'{p}/share/man/man1/vfmigctl.1')
        libexec = meson_option('libexecdir')
        self.assertEqual(one('vfmigd', 'vfmigd'), os.path.join(p, libexec, 'vfmigd'))
        self.assertEqual(one('vfmigctl', 'vfmigctl'), f'{p}/{meson_option("bindir")}/vfmigctl')
        self.assertTrue(os.access(os.path.join(self.destdir, p, libexec, 'vfmigd'), os.X_OK))
        # The unit starts what was installed, and the activation file names the unit.
        with open(os.path.join(self.destdir, one('vfmigd.service', 'systemd/system/vfmigd.service'))) as f:
            self.assertIn(f'ExecStart=/{p}/{libexec}/vfmigd\n', f.read())
        with open(os.path.join(self.destdir, p, 'share/dbus-1/system-services/org.vfmig1.service')) as f:
            self.assertIn('SystemdService=vfmigd.service', f.read())


if __name__ == '__main__':
    unittest.main(verbosity=2)
