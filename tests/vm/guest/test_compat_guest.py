#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""vfmigd's compatibility API on the real kernel (run by guest/compat.sh
inside the test VM).

The real daemon in host mode with the shipped rules (--rules
data/compat.d, no admin rules) on vfmig_testmdev devices, loaded with
stream_version=2.  The rule vfmig-testmdev builds profiles from the
driver's migration/ attributes and asks the driver itself, through the
migration_version write-and-test and through the lists in
migration/compatible_*.  The steps run in order on one daemon:

  1  GetMigrationProfile of a small instance A: the migration type, the
     version the driver reports (migration_version and
     migration/software_version in sysfs), stop-copy and p2p; Device.Profile
     says the same
  2  FindCompatibleTargets(profile A): the other small instance B, never the
     large one C, and the creatable small type with its available instances;
     CheckCompatibility(A, C) refused with a reason naming the rule
  3  the kernel decides: a migration-version the driver refuses (a newer
     stream, garbage), attributes still satisfying the rule's range clause,
     is refused on B with the driver's refusal quoted; the real one is
     accepted; the same strings written to B's migration_version by this
     test get EINVAL / succeed, so the daemon's answer is the kernel's
  3b migration/compatible_*: a source type the driver's compatible_type does
     not list, and a profile without the attribute, are refused on B by that
     interface alone, quoting the driver's list and its file
  4  stream_version lowered to 1 at run time (no uevent): the stale matrix
     still sees B at version 2 but the kernel refuses the newer source; a
     fresh instance D is at version 1 and refused by the rules and by the
     kernel; a synthetic "change" uevent refreshes B; ExportMatrix lists the
     driver's entries
  5  MatrixChanged fires and MatrixGeneration increases when an instance is
     created and when one is removed

Needs VFMIG_BUILD_ROOT, VFMIG_SOURCE_ROOT, DBUS_SYSTEM_BUS_ADDRESS (the
private bus compat.sh started) and the module loaded with stream_version=2;
VFMIG_VFMIGD_LOG is where the daemon's output goes.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.environ['VFMIG_SOURCE_ROOT'], 'tests', 'bus'))
import vfmigtest as vt  # noqa: E402
from gi.repository import Gio, GLib  # noqa: E402

MOD = 'vfmig_testmdev'
PARENT = MOD
PARENT_SYS = f'/sys/class/mdev_bus/{PARENT}'
PARAM = f'/sys/module/{MOD}/parameters/stream_version'
MAX_INSTANCES = 16
RULES = os.path.join(vt.SOURCE, 'data', 'compat.d')
RULES_FILE = os.path.join(RULES, 'vfmig-testmdev.json')
RULE_ID = 'vfmig-testmdev'
SMALL, LARGE = f'{MOD}-small', f'{MOD}-large'
MT_SMALL, MT_LARGE = f'{MOD}:{SMALL}', f'{MOD}:{LARGE}'
CREATABLE_SMALL, CREATABLE_LARGE = f'{PARENT}/{SMALL}', f'{PARENT}/{LARGE}'
LOG = os.environ.get('VFMIG_VFMIGD_LOG', '/tmp/vfmigd-compat.log')
START_VERSION = 2          # compat.sh loads the module with stream_version=2

SIGS = {'format': 'u', 'state-size': 't', 'attributes': 'a{ss}', 'capabilities': 'as'}


def to_asv(profile):
    return {k: GLib.Variant(SIGS.get(k, 's'), v) for k, v in profile.items()}


def sysfs_read(path):
    with open(path) as f:
        return f.read().strip()


def sysfs_write(path, value):
    """One write(2) of value; returns 0 or the errno."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def mdev_dir(uuid):
    return f'/sys/bus/mdev/devices/{uuid}'


def create(type_):
    uuid = sysfs_read('/proc/sys/kernel/random/uuid')
    assert sysfs_write(f'{PARENT_SYS}/mdev_supported_types/{MOD}-{type_}/create', uuid) == 0, f'create {type_}'
    return uuid


def remove(uuid):
    assert sysfs_write(f'{mdev_dir(uuid)}/remove', '1') == 0, f'remove {uuid}'


class Vfmigd:
    """vfmigd from the build tree, host mode, shipped rules, a fresh cache."""

    def __init__(self, cache):
        self.log = open(LOG, 'w')
        env = dict(os.environ, CACHE_DIRECTORY=cache)
        self.proc = subprocess.Popen([vt.VFMIGD, '--config', '/nonexistent/vfmigd.conf',
                                      '--rules', RULES, '--admin-rules', '/nonexistent'],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_for_name(self, timeout=60):
        bus = vt.system_bus()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f'vfmigd exited with {self.proc.returncode} (see its log)'
            if bus.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
                             'NameHasOwner', GLib.Variant('(s)', (vt.BUS_NAME,)), None,
                             Gio.DBusCallFlags.NONE, -1, None).unpack()[0]:
                return
            time.sleep(0.05)
        raise AssertionError('vfmigd did not acquire its name')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def output(self):
        self.log.flush()
        with open(LOG) as f:
            return f.read()


def note(msg):
    print(f'\n  NOTE: {msg}', file=sys.stderr)


class CompatOnRealKernel(unittest.TestCase):
    """One daemon through all steps; the test methods run in name order."""

    @classmethod
    def setUpClass(cls):
        assert os.path.isdir(PARENT_SYS), f'{PARENT_SYS} missing: load {MOD} first'
        assert sysfs_read(PARAM) == str(START_VERSION), f'load {MOD} with stream_version={START_VERSION}'
        cls.t0 = time.monotonic()
        cls.cache = tempfile.mkdtemp(prefix='vfmig-cache-')
        cls.made = []
        cls.daemon = Vfmigd(cls.cache)
        cls.daemon.wait_for_name()
        cls.client = vt.Client()
        cls.rec = vt.SignalRecorder(cls.client.bus)
        cls.A = cls.B = cls.C = cls.D = None
        cls.prof_a = None

    @classmethod
    def tearDownClass(cls):
        cls.rec.close()
        rc = cls.daemon.stop()
        # vfmigd let go of every device on SIGTERM: they can be removed now.
        for u in cls.made:
            if os.path.exists(mdev_dir(u)):
                remove(u)
        shutil.rmtree(cls.cache, ignore_errors=True)
        sysfs_write(PARAM, str(START_VERSION))
        print(f'\n  vfmigd exit status {rc}; steps took {time.monotonic() - cls.t0:.1f} s', file=sys.stderr)
        assert rc == 0, f'vfmigd did not exit cleanly on SIGTERM: {rc}'

    def setUp(self):
        self.assertIsNone(self.daemon.proc.poll(), 'vfmigd is not running')

    # ---- helpers ----------------------------------------------------------

    def generation(self):
        return self.client.get(vt.ROOT_PATH, vt.MANAGER, 'MatrixGeneration')

    def profile(self, name):
        return self.client.manager('GetMigrationProfile', '(s)', (name,))[0]

    def check(self, profile, target):
        return self.client.manager('CheckCompatibility', '(a{sv}s)', (to_asv(profile), target))

    def find(self, profile, **opts):
        o = {k.replace('_', '-'): GLib.Variant('u' if k == 'max_results' else 'b', v) for k, v in opts.items()}
        res = self.client.manager('FindCompatibleTargets', '(a{sv}a{sv})', (to_asv(profile), o))[0]
        return {r[0]: r for r in res}, [r[0] for r in res]

    def export(self):
        return json.loads(self.client.manager('ExportMatrix')[0])

    def types(self):
        return {t[2]: t for t in self.client.manager('ListMdevTypes')[0] if t[0] == PARENT}

    def create_and_wait(self, type_, timeout=20):
        """Create an instance; wait until vfmigd has it (DeviceAdded is sent
        after the matrix took it), managed, and the type's availability is
        current.  Returns the UUID."""
        avail = int(sysfs_read(f'{PARENT_SYS}/mdev_supported_types/{MOD}-{type_}/available_instances')) - 1
        uuid = create(type_)
        type(self).made.append(uuid)
        self.rec.wait_for(lambda s: s[0] == vt.MANAGER and s[1] == 'DeviceAdded' and s[3][0] == uuid,
                          timeout=timeout)
        path = self.client.manager('GetDevice', '(s)', (uuid,))[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.client.get_all(path, vt.DEVICE)
            if p['Status'] == 'managed' and self.types()[f'{MOD}-{type_}'][6] == avail:
                break
            self.rec.pump(0.1)
        self.assertEqual(p['Status'], 'managed', p['StatusMessage'])
        self.assertEqual(self.types()[f'{MOD}-{type_}'][6], avail)
        return uuid

    def matrix_changed_after(self, gen, timeout=20):
        s = self.rec.wait_for(lambda s: s[0] == vt.MANAGER and s[1] == 'MatrixChanged' and s[3][0] > gen,
                              timeout=timeout)
        return s[3][0]

    def where(self):
        return f'(rule {RULE_ID} in {RULES_FILE})'

    # ---- the steps ----------------------------------------------------------

    def test_1_profile(self):
        self.rec.clear()
        cls = type(self)
        cls.A = self.create_and_wait('small')
        cls.B = self.create_and_wait('small')
        cls.C = self.create_and_wait('large')
        A = self.A
        sys_mv = sysfs_read(f'{mdev_dir(A)}/migration_version')
        sys_sv = sysfs_read(f'{mdev_dir(A)}/migration/software_version')
        sys_type = sysfs_read(f'{mdev_dir(A)}/migration/mdev_type')
        self.assertEqual((sys_mv, sys_sv, sys_type), (f'{SMALL}-v{START_VERSION}', str(START_VERSION), SMALL))

        p = self.profile(A)
        cls.prof_a = p
        self.assertEqual(p['format'], 1)
        self.assertEqual(p['migration-type'], MT_SMALL)
        # The rule's version is the driver's own migration_version string,
        # built from migration/mdev_type and migration/software_version.
        self.assertEqual(p['migration-version'], sys_mv)
        self.assertEqual(p['migration-version'], f'{sys_type}-v{sys_sv}')
        self.assertEqual(p['attributes'], {'software_version': sys_sv, 'type': sys_type})
        self.assertEqual(p['capabilities'], ['stop-copy', 'p2p'])
        self.assertEqual(p['source-device'], A)
        self.assertTrue(p['source-host'])
        path = self.client.manager('GetDevice', '(s)', (A,))[0]
        self.assertEqual(self.client.get(path, vt.DEVICE, 'Profile'), p)
        # The large instance has its own migration type.
        pc = self.profile(self.C)
        self.assertEqual((pc['migration-type'], pc['migration-version']),
                         (MT_LARGE, sysfs_read(f'{mdev_dir(self.C)}/migration_version')))

    def test_2_find(self):
        self.assertIsNotNone(self.prof_a, 'step 1 failed')
        res, order = self.find(self.prof_a)
        note(f'FindCompatibleTargets(profile A): {order}')
        # A device is never offered as its own target (same host, source-device).
        self.assertNotIn(self.A, res)
        self.assertIn(self.B, res)
        self.assertEqual(res[self.B][1:3], ('device', True))
        self.assertGreater(res[self.B][3], 0)
        self.assertEqual(res[self.B][4], 1)
        self.assertEqual(f'accepted by rule {RULE_ID}', res[self.B][5][0])
        self.assertNotIn(self.C, res)
        self.assertNotIn(CREATABLE_LARGE, res)
        # The creatable small type: 16 minus A and B.
        avail = int(sysfs_read(f'{PARENT_SYS}/mdev_supported_types/{SMALL}/available_instances'))
        self.assertEqual(avail, MAX_INSTANCES - 2)
        export = self.export()
        self.assertIn(CREATABLE_SMALL, res,
                      'the creatable small type is not a target; the matrix says: '
                      + json.dumps([u for u in export['unmatched'] if u['target'].startswith(PARENT)]))
        self.assertEqual(res[CREATABLE_SMALL][1:3], ('creatable', True))
        self.assertEqual(res[CREATABLE_SMALL][4], avail)
        # Existing devices rank before a type that must still be created.
        self.assertLess(order.index(self.B), order.index(CREATABLE_SMALL))

        ok, why = self.check(self.prof_a, self.C)
        self.assertFalse(ok)
        self.assertTrue(why)
        self.assertTrue(any(RULE_ID in w and 'migration type' in w for w in why), why)
        ok, why = self.check(self.prof_a, CREATABLE_LARGE)
        self.assertFalse(ok)
        self.assertTrue(any(RULE_ID in w for w in why), why)
        # Even asking for incompatible ones, C is listed only as refused.
        res, _ = self.find(self.prof_a, include_incompatible=True)
        if self.C in res:
            self.assertFalse(res[self.C][2])

    def test_3_kernel_decides(self):
        self.assertIsNotNone(self.prof_a, 'step 1 failed')
        good = self.prof_a['migration-version']
        mv_b = f'{mdev_dir(self.B)}/migration_version'
        # The real version: the driver accepts it, and so does the daemon.
        self.assertEqual(sysfs_write(mv_b, good), 0)
        ok, why = self.check(self.prof_a, self.B)
        self.assertTrue(ok, why)
        for bad in (f'{SMALL}-v{START_VERSION + 1}',      # a newer stream than the module's
                    f'{SMALL}-v0',
                    f'{LARGE}-v1',
                    'garbage'):
            with self.subTest(version=bad):
                # The attributes still satisfy the rules' range clause
                # (software_version 2 <= target's 2): only the kernel refuses.
                prof = dict(self.prof_a, **{'migration-version': bad})
                self.assertEqual(prof['attributes'], {'software_version': str(START_VERSION), 'type': SMALL})
                self.assertEqual(sysfs_write(mv_b, bad), errno.EINVAL,
                                 f'the driver did not refuse {bad!r} with EINVAL')
                ok, why = self.check(prof, self.B)
                self.assertFalse(ok, why)
                self.assertEqual(len(why), 1, why)
                self.assertIn('refused migration_version', why[0])
                self.assertIn(f'"{bad}"', why[0])
                self.assertIn(mv_b, why[0])
                self.assertTrue(why[0].endswith(self.where()), why[0])
                # Per target, in FindCompatibleTargets too.
                res, _ = self.find(prof)
                self.assertNotIn(self.B, res)
                self.assertNotIn(self.A, res)
                res, _ = self.find(prof, include_incompatible=True)
                self.assertIn(self.B, res)
                self.assertFalse(res[self.B][2])
                self.assertIn('refused migration_version', res[self.B][5][0])
                if bad == f'{SMALL}-v{START_VERSION + 1}':
                    # No instance to write to: for a creatable type the
                    # kernel clause is skipped and the rules decide alone.
                    note(f'with migration-version {bad!r} the creatable small type is '
                         f'{"still offered" if CREATABLE_SMALL in res and res[CREATABLE_SMALL][2] else "not offered"}'
                         ' (no instance to write-and-test)')
        self.assertEqual(sysfs_write(mv_b, good), 0)
        self.assertTrue(self.check(self.prof_a, self.B)[0])

    def test_3b_compatible_lists(self):
        self.assertIsNotNone(self.prof_a, 'step 1 failed')
        mig_b = f'{mdev_dir(self.B)}/migration'
        self.assertEqual(sysfs_read(f'{mig_b}/compatible_type'), SMALL)
        self.assertEqual(sysfs_read(f'{mig_b}/compatible_software_version'), f'1-{START_VERSION}')
        # The real profile: both lists admit it.
        B = self.B
        ok, why = self.check(self.prof_a, B)
        self.assertTrue(ok, why)
        # A source type B's driver does not list.  The version string and
        # the range clause still pass: only migration/compatible_* refuses.
        other = dict(self.prof_a, attributes=dict(self.prof_a['attributes'], type=LARGE))
        ok, why = self.check(other, B)
        self.assertFalse(ok, why)
        self.assertEqual(why, [f'the target\'s driver does not accept this source via migration/compatible_*: '
                               f'source type "{LARGE}" is not in "{SMALL}" ({mig_b}/compatible_type) {self.where()}'])
        res, _ = self.find(other, include_incompatible=True)
        self.assertFalse(res[B][2])
        self.assertEqual(res[B][5], why)
        # A profile that says nothing of a field the driver limits.
        silent = dict(self.prof_a, attributes={'software_version': str(START_VERSION)})
        ok, why = self.check(silent, B)
        self.assertFalse(ok, why)
        self.assertEqual(len(why), 1, why)
        self.assertIn(f'the source profile has no attribute "type", which the target limits to "{SMALL}" '
                      f'({mig_b}/compatible_type)', why[0])
        # A creatable type has no instance to read: the interface is skipped.
        ok, why = self.check(other, CREATABLE_SMALL)
        note(f'a creatable type with a source type its instances would not list: '
             f'{"accepted (no instance to ask)" if ok else why}')

    def test_4_stream_version_lowered(self):
        self.assertIsNotNone(self.prof_a, 'step 1 failed')
        newer = self.prof_a                              # stream version 2
        self.rec.clear()
        gen0 = self.generation()
        self.assertEqual(sysfs_write(PARAM, '1'), 0)
        self.assertEqual(sysfs_read(f'{mdev_dir(self.B)}/migration_version'), f'{SMALL}-v1')
        self.assertEqual(sysfs_read(f'{mdev_dir(self.B)}/migration/software_version'), '1')
        # No uevent for a module parameter: the inventory keeps what it read.
        self.rec.pump(1.0)
        stale = self.profile(self.B)
        note(f'after lowering stream_version without a uevent: MatrixGeneration {gen0} -> {self.generation()}, '
             f'B\'s profile says software_version {stale["attributes"].get("software_version")} '
             f'(sysfs: 1)')
        self.assertEqual(stale['attributes']['software_version'], str(START_VERSION),
                         'the inventory re-read B without a uevent (fine, but update this test)')
        # The stale matrix would accept; the kernel, asked live, does not,
        # through both interfaces.
        self.assertEqual(sysfs_read(f'{mdev_dir(self.B)}/migration/compatible_software_version'), '1-1')
        ok, why = self.check(newer, self.B)
        self.assertFalse(ok, why)
        self.assertEqual(len(why), 2, why)
        self.assertIn('refused migration_version', why[0])
        self.assertIn(f'"{newer["migration-version"]}"', why[0])
        self.assertIn(f'source software_version "{START_VERSION}" is not in "1-1" '
                      f'({mdev_dir(self.B)}/migration/compatible_software_version)', why[1])

        # A fresh instance reads the new version.
        cls = type(self)
        gen1 = self.generation()
        cls.D = self.create_and_wait('small')
        self.assertGreater(self.generation(), gen1)
        pd = self.profile(self.D)
        self.assertEqual(pd['migration-version'], f'{SMALL}-v1')
        self.assertEqual(pd['migration-version'], sysfs_read(f'{mdev_dir(self.D)}/migration_version'))
        self.assertEqual(pd['attributes'], {'software_version': '1', 'type': SMALL})
        ok, why = self.check(newer, self.D)
        self.assertFalse(ok, why)
        self.assertIn(f'target stream version 1 is older than source stream version {START_VERSION} '
                      f'{self.where()}', why)
        self.assertTrue(any('refused migration_version' in w for w in why), why)
        self.assertTrue(any('migration/compatible_*' in w for w in why), why)
        self.assertEqual(len(why), 3, why)
        # Older to newer still goes (B's driver accepts v1, its stale
        # attributes too); newer to older is not offered.
        ok, why = self.check(pd, self.B)
        self.assertTrue(ok, why)
        res, _ = self.find(newer)
        self.assertNotIn(self.D, res)
        self.assertNotIn(self.B, res)
        res, _ = self.find(pd)
        self.assertTrue({self.A, self.B} <= set(res), list(res))
        self.assertNotIn(self.D, res)   # the source itself

        # A "change" uevent makes the inventory re-read B.
        self.rec.clear()
        gen2 = self.generation()
        self.assertEqual(sysfs_write(f'{mdev_dir(self.B)}/uevent', 'change'), 0)
        deadline = time.monotonic() + 10
        while (self.profile(self.B)['attributes']['software_version'] != '1'
               and time.monotonic() < deadline):
            self.rec.pump(0.1)
        pb = self.profile(self.B)
        self.assertEqual(pb['attributes'], {'software_version': '1', 'type': SMALL},
                         'a "change" uevent did not refresh the profile')
        self.assertEqual(pb['migration-version'], f'{SMALL}-v1')
        self.matrix_changed_after(gen2)
        ok, why = self.check(newer, self.B)
        self.assertFalse(ok)
        self.assertIn(f'target stream version 1 is older than source stream version {START_VERSION} '
                      f'{self.where()}', why)

        # ExportMatrix lists the test driver's entries.
        m = self.export()
        self.assertEqual(m['generation'], self.generation())
        small = {e['target']: e for e in m['migration-types'].get(MT_SMALL, [])}
        large = {e['target']: e for e in m['migration-types'].get(MT_LARGE, [])}
        self.assertTrue({self.A, self.B, self.D} <= set(small), list(small))
        self.assertIn(self.C, large)
        for u in (self.A, self.B, self.D):
            self.assertEqual((small[u]['kind'], small[u]['parent'], small[u]['mdev-type'], small[u]['rule']),
                             ('device', PARENT, SMALL, RULE_ID))
        self.assertEqual(small[self.D]['profile']['migration-version'], f'{SMALL}-v1')
        self.assertEqual(small[self.A]['profile']['migration-version'], f'{SMALL}-v{START_VERSION}')
        self.assertEqual(m['rules'][RULE_ID]['file'], RULES_FILE)
        self.assertFalse([u for u in m['unmatched'] if u['target'] in (self.A, self.B, self.C, self.D)])
        self.assertIn(CREATABLE_SMALL, small,
                      'creatable types missing from the export: '
                      + json.dumps([u for u in m['unmatched'] if u['target'].startswith(PARENT)]))
        self.assertEqual(small[CREATABLE_SMALL]['available-instances'], MAX_INSTANCES - 3)
        # The parent was re-read when D was created: a new instance would be v1.
        self.assertEqual(small[CREATABLE_SMALL]['profile']['migration-version'], f'{SMALL}-v1')
        self.assertIn(CREATABLE_LARGE, large)

    def test_5_matrix_changed(self):
        self.rec.clear()
        gen0 = self.generation()
        t = time.monotonic()
        u = self.create_and_wait('large')
        gen1 = self.matrix_changed_after(gen0)
        self.assertGreater(gen1, gen0)
        self.assertGreaterEqual(self.generation(), gen1)
        self.assertIn(u, {e['target'] for e in self.export()['migration-types'][MT_LARGE]})
        self.rec.clear()
        gen1 = self.generation()
        # vfmigd holds the device: it gives it back when the kernel asks.
        remove(u)
        self.rec.wait_for(lambda s: s[0] == vt.MANAGER and s[1] == 'DeviceRemoved' and s[3][0] == u, timeout=20)
        gen2 = self.matrix_changed_after(gen1)
        self.assertGreater(gen2, gen1)
        self.assertGreaterEqual(self.generation(), gen2)
        self.assertNotIn(u, {e['target'] for e in self.export()['migration-types'].get(MT_LARGE, [])})
        with self.assertRaises(GLib.Error) as cm:
            self.profile(u)
        self.assertEqual(vt.dbus_error_name(cm.exception), 'org.vfmig1.Error.NoSuchDevice')
        # MatrixGeneration is signalled as a property too.  It follows
        # MatrixChanged on the bus; the synchronous calls above do not run
        # the main loop that records it, so wait for it rather than look.
        self.rec.wait_for(lambda s: s[0] == 'org.freedesktop.DBus.Properties' and s[3][0] == vt.MANAGER
                          and 'MatrixGeneration' in (list(s[3][1]) + list(s[3][2])), timeout=10)
        note(f'create+remove with MatrixChanged: {time.monotonic() - t:.2f} s, generation {gen0} -> {gen2}')


if __name__ == '__main__':
    unittest.main(verbosity=2, argv=[sys.argv[0]])
