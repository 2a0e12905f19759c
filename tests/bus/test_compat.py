# SPDX-License-Identifier: LGPL-2.1-or-later
"""The compatibility API on the bus, across the two shipped simulated hosts:
profiles, CheckCompatibility and FindCompatibleTargets with reasons,
ExportMatrix and MatrixGeneration, bad profiles and options, Reload keeping
the last good rules, and the matrix cache (warm start, corruption)."""
import json
import os
import shutil
import tempfile
import unittest

import vfmigtest as vt
from gi.repository import GLib

RULES = os.path.join(vt.SOURCE, 'data', 'compat.d')
MLX_A = '0000:17:00.1'
MLX_B = '0000:31:00.1'
VGPU_A = '6f1a3c52-4b0e-4c1e-9a55-0d2b8e5f7a01'

SIGS = {'format': 'u', 'state-size': 't', 'attributes': 'a{ss}', 'capabilities': 'as'}


def to_asv(profile):
    return {k: GLib.Variant(SIGS.get(k, 's'), v) for k, v in profile.items()}


class Host:
    def __init__(self, name, cache, admin=None, extra=()):
        args = ['--simulate', os.path.join(vt.SIM, name), '--rules', RULES,
                '--admin-rules', admin or '/nonexistent/compat.d'] + list(extra)
        self.daemon = vt.Daemon(args, env={'CACHE_DIRECTORY': cache})

    def __enter__(self):
        self.daemon.start()
        self.c = vt.Client()
        return self

    def __exit__(self, *exc):
        assert self.daemon.stop() == 0, 'vfmigd did not exit cleanly'

    def profile(self, device):
        return self.c.manager('GetMigrationProfile', '(s)', (device,))[0]

    def find(self, profile, **opts):
        o = {k.replace('_', '-'): GLib.Variant('u' if k == 'max_results' else 'b', v) for k, v in opts.items()}
        return self.c.manager('FindCompatibleTargets', '(a{sv}a{sv})', (to_asv(profile), o))[0]

    def check(self, profile, target):
        return self.c.manager('CheckCompatibility', '(a{sv}s)', (to_asv(profile), target))


class Compat(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix='vfmig-compat-')
        cls.cache_a = os.path.join(cls.tmp, 'cache-a')
        cls.cache_b = os.path.join(cls.tmp, 'cache-b')
        os.makedirs(cls.cache_a)
        os.makedirs(cls.cache_b)
        with Host('host-a.json', cls.cache_a) as a:
            cls.prof_a = a.profile(MLX_A)
            cls.vgpu_a = a.profile(VGPU_A)
            path = a.c.manager('GetDevice', '(s)', (MLX_A,))[0]
            cls.prop_a = a.c.get(path, vt.DEVICE, 'Profile')
        with Host('host-b.json', cls.cache_b) as b:
            cls.prof_b = b.profile(MLX_B)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def test_profile(self):
        p = self.prof_a
        self.assertEqual(p['format'], 1)
        self.assertEqual(p['migration-type'], 'pci-15b3:mlx5-cx7')
        self.assertEqual(p['migration-version'], '28.39.1002')
        self.assertEqual(p['attributes']['fw_version'], '28.39.1002')
        self.assertEqual(p['capabilities'], ['stop-copy', 'p2p', 'pre-copy', 'dma-logging'])
        self.assertEqual((p['source-host'], p['source-device']), ('sim-host-a', MLX_A))
        self.assertEqual(self.prop_a, p)

    def test_profile_errors(self):
        with Host('host-a.json', self.cache_a) as a:
            for name, err in (('0000:17:00.3', 'org.vfmig1.Error.NotSupported'),      # vfio-pci: no rule
                              ('0000:99:00.0', 'org.vfmig1.Error.NoSuchDevice'),
                              ('../x', 'org.vfmig1.Error.InvalidArgs')):
                with self.subTest(name=name):
                    with self.assertRaises(GLib.Error) as cm:
                        a.profile(name)
                    self.assertEqual(vt.dbus_error_name(cm.exception), err)
            with self.assertRaises(GLib.Error) as cm:
                a.profile('0000:17:00.3')
            self.assertIn('no compatibility rule matches', cm.exception.message)
            path = a.c.manager('GetDevice', '(s)', ('0000:17:00.3',))[0]
            self.assertEqual(a.c.get(path, vt.DEVICE, 'Profile'), {})

    def test_older_to_newer_accepted(self):
        with Host('host-b.json', self.cache_b) as b:
            res = b.find(self.prof_a)
            self.assertEqual([r[0] for r in res], ['0000:31:00.1', '0000:31:00.2', '0000:31:00.3'])
            for target, kind, ok, score, avail, why in res:
                self.assertEqual((kind, ok, avail), ('device', True, 1))
                self.assertGreater(score, 0)
                self.assertIn('rule mlx5-cx7', why[0])
            ok, why = b.check(self.prof_a, MLX_B)
            self.assertTrue(ok)
            self.assertIn('mlx5.json', why[0])

    def test_newer_to_older_refused(self):
        with Host('host-a.json', self.cache_a) as a:
            self.assertEqual(a.find(self.prof_b), [])
            ok, why = a.check(self.prof_b, MLX_A)
            self.assertFalse(ok)
            self.assertEqual(why, ['target firmware 28.39 is older than source firmware 28.41 '
                                   f'(rule mlx5-cx7 in {RULES}/mlx5.json)'])
            res = a.find(self.prof_b, include_incompatible=True)
            self.assertTrue(res)
            self.assertFalse(any(r[2] for r in res))
            self.assertTrue(all('older than source firmware' in r[5][0] for r in res))

    def test_creatable_vgpu(self):
        with Host('host-b.json', self.cache_b) as b:
            res = b.find(self.vgpu_a)
            self.assertEqual([(r[0], r[1], r[4]) for r in res], [('0000:af:00.0/nvidia-223', 'creatable', 8)])
            self.assertEqual(b.find(self.vgpu_a, include_creatable=False), [])
            ok, why = b.check(self.vgpu_a, '0000:af:00.0/nvidia-223')
            self.assertTrue(ok)
            self.assertIn('accepted by rule nvidia-vgpu', why[0])
            # A bare type one parent offers: the same answer, explanation included.
            self.assertEqual(b.check(self.vgpu_a, 'nvidia-223'), (ok, why))
            ok, why = b.check(self.vgpu_a, '0000:af:00.0/nvidia-222')   # another vGPU type
            self.assertFalse(ok)
            self.assertTrue(why)

    def test_unmanaged_targets_not_offered(self):
        conf = os.path.join(self.tmp, 'deny.conf')
        with open(conf, 'w') as f:
            f.write('[Devices]\nDeny=0000:31:00.2\n')
        with Host('host-b.json', self.cache_b, extra=['--config', conf]) as b:
            self.assertEqual([r[0] for r in b.find(self.prof_a)], ['0000:31:00.1', '0000:31:00.3'])

    def test_source_is_not_its_own_target(self):
        with Host('host-a.json', self.cache_a) as a:
            self.assertEqual([r[0] for r in a.find(self.prof_a)], ['0000:17:00.2'])
            other_host = dict(self.prof_a, **{'source-host': 'elsewhere'})
            self.assertEqual([r[0] for r in a.find(other_host)], ['0000:17:00.1', '0000:17:00.2'])

    def test_find_explanations_are_check_reasons(self):
        # Find copies ASCII strings without sd-bus's UTF-8 walk and leaves
        # the rest to it.  Reasons name the rules file, so rules read from a
        # directory with non-ASCII letters in its name give reasons with
        # them: both kinds must reach the caller as CheckCompatibility says.
        # A name that is not UTF-8 at all (Latin-1 here) is shown with
        # U+FFFD for its bad bytes: a D-Bus string must be UTF-8, and a
        # reply that is not would fail to be sent.
        utf8 = os.path.join(self.tmp, 'r\u00e8gles-\u65b0')
        latin1 = os.fsdecode(os.path.join(os.fsencode(self.tmp), b'r\xe8gles'))
        shown = os.path.join(self.tmp, 'r\ufffdgles')
        cache = os.path.join(self.tmp, 'cache-utf8')
        os.makedirs(cache)
        try:
            for rules_dir, where in ((RULES, RULES), (utf8, utf8), (latin1, shown)):
                if rules_dir != RULES:
                    shutil.copytree(RULES, rules_dir)
                with self.subTest(rules=where), \
                        Host('host-a.json', cache, extra=['--rules', rules_dir]) as a:
                    res = a.find(self.prof_b, include_incompatible=True)
                    self.assertEqual(sorted(r[0] for r in res), ['0000:17:00.1', '0000:17:00.2'])
                    for target, kind, ok, score, avail, why in res:
                        self.assertEqual((kind, ok), ('device', False))
                        self.assertEqual(why, a.check(self.prof_b, target)[1])
                        self.assertIn(f'{where}/mlx5.json', why[0])
                    self.assertIn(f'{where}/mlx5.json', a.c.manager('ExportMatrix')[0])
        finally:
            for d in (utf8, latin1, cache):
                shutil.rmtree(d, ignore_errors=True)

    def test_unknown_target(self):
        with Host('host-b.json', self.cache_b) as b:
            ok, why = b.check(self.prof_a, '0000:99:00.0')
            self.assertFalse(ok)
            self.assertIn('0000:99:00.0', why[0])

    def test_bad_profiles_and_options(self):
        good = dict(self.prof_a)
        bad = [
            ({k: v for k, v in good.items() if k != 'migration-type'}, 'migration-type'),
            (dict(good, format=2), 'format'),
            ({**{k: v for k, v in good.items() if k != 'format'}, 'format': 'one'}, 'format'),
            (dict(good, capabilities=['stop-copy', 'teleport']), 'capabilities'),
            (dict(good, **{'migration-version': 'x' * 5000}), 'migration-version'),
            (dict(good, **{'migration-type': 'bad\x01type'}), 'migration-type'),
        ]
        with Host('host-b.json', self.cache_b) as b:
            gen = b.c.get(vt.ROOT_PATH, vt.MANAGER, 'MatrixGeneration')
            for prof, field in bad:
                with self.subTest(field=field):
                    sigs = dict(SIGS)
                    if prof.get('format') == 'one':
                        sigs['format'] = 's'
                    asv = {k: GLib.Variant(sigs.get(k, 's'), v) for k, v in prof.items()}
                    with self.assertRaises(GLib.Error) as cm:
                        b.c.manager('CheckCompatibility', '(a{sv}s)', (asv, MLX_B))
                    self.assertEqual(vt.dbus_error_name(cm.exception), 'org.vfmig1.Error.InvalidArgs')
                    self.assertIn(field, cm.exception.message)
            # Unknown keys are ignored.
            asv = to_asv(good)
            asv['x-future-key'] = GLib.Variant('s', 'whatever')
            self.assertTrue(b.c.manager('CheckCompatibility', '(a{sv}s)', (asv, MLX_B))[0])
            for opts in ({'max-results': GLib.Variant('u', 0)}, {'max-results': GLib.Variant('s', '3')},
                         {'include-creatable': GLib.Variant('u', 1)}):
                with self.assertRaises(GLib.Error) as cm:
                    b.c.manager('FindCompatibleTargets', '(a{sv}a{sv})', (to_asv(good), opts))
                self.assertEqual(vt.dbus_error_name(cm.exception), 'org.vfmig1.Error.InvalidArgs')
            self.assertEqual(len(b.find(good, max_results=1)), 1)
            self.assertEqual(b.c.get(vt.ROOT_PATH, vt.MANAGER, 'MatrixGeneration'), gen)

    def test_export_matrix(self):
        with Host('host-b.json', self.cache_b) as b:
            m = json.loads(b.c.manager('ExportMatrix')[0])
            self.assertEqual(m['host'], 'sim-host-b')
            self.assertEqual(m['generation'], b.c.get(vt.ROOT_PATH, vt.MANAGER, 'MatrixGeneration'))
            targets = {e['target'] for e in m['migration-types']['pci-15b3:mlx5-cx7']}
            self.assertEqual(targets, {'0000:31:00.1', '0000:31:00.2', '0000:31:00.3'})
            self.assertIn('0000:31:00.4', {u['target'] for u in m['unmatched']})
            # Queries are open to every local user.
            r = vt.run_as_nobody(['busctl', '--system', '--json=short', 'call', vt.BUS_NAME, vt.ROOT_PATH,
                                  vt.MANAGER, 'ExportMatrix'])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads(json.loads(r.stdout)['data'][0])['host'], 'sim-host-b')
            r = vt.run_as_nobody(['busctl', '--system', 'call', vt.BUS_NAME, vt.ROOT_PATH, vt.MANAGER,
                                  'CheckCompatibility', 'a{sv}s', '3', 'format', 'u', '1', 'migration-type', 's',
                                  'pci-15b3:mlx5-cx7', 'migration-version', 's', '28.39.1002', MLX_B])
            self.assertEqual(r.returncode, 0, r.stderr)

    def test_warm_start_equals_cold(self):
        cache = tempfile.mkdtemp(dir=self.tmp)
        with Host('host-b.json', cache) as b:
            cold = json.loads(b.c.manager('ExportMatrix')[0])
        self.assertIn('evaluated', b.daemon.stderr)
        self.assertTrue(os.path.exists(os.path.join(cache, 'matrix.json')))
        with Host('host-b.json', cache) as b:
            warm = json.loads(b.c.manager('ExportMatrix')[0])
        self.assertIn('restored from cache', b.daemon.stderr)
        self.assertEqual(warm, cold)

    def test_corrupt_cache(self):
        cache = tempfile.mkdtemp(dir=self.tmp)
        with Host('host-b.json', cache) as b:
            cold = json.loads(b.c.manager('ExportMatrix')[0])
        for junk in (b'', b'\x00garbage', b'{"vfmig-matrix-cache":1,"checksum":"x","body":{}}',
                     open(os.path.join(cache, 'matrix.json'), 'rb').read()[:100]):
            with self.subTest(junk=junk[:20]):
                with open(os.path.join(cache, 'matrix.json'), 'wb') as f:
                    f.write(junk)
                with Host('host-b.json', cache) as b:
                    again = json.loads(b.c.manager('ExportMatrix')[0])
                    self.assertTrue(b.find(self.prof_a))
                self.assertIn('cache ignored', b.daemon.stderr)
                again.pop('generation')
                self.assertEqual(again, {k: v for k, v in cold.items() if k != 'generation'})

    def test_cli(self):
        import subprocess

        def ctl(*args, stdin=None):
            return subprocess.run([vt.VFMIGCTL] + list(args), capture_output=True, text=True, timeout=30,
                                  input=stdin)
        pfile = os.path.join(self.tmp, 'cx7-a.json')
        with Host('host-a.json', self.cache_a):
            r = ctl('profile', MLX_A, '--json')
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(pfile, 'w') as f:
                f.write(r.stdout)
            self.assertEqual(json.loads(r.stdout), self.prof_a)
            r = ctl('profile', MLX_A)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn('pci-15b3:mlx5-cx7', r.stdout)
            r = ctl('profile', '0000:17:00.3')
            self.assertNotEqual(r.returncode, 0)
            self.assertIn('no compatibility rule matches', r.stderr)
        with Host('host-b.json', self.cache_b):
            r = ctl('targets', pfile, '--json')
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual([t['target'] for t in json.loads(r.stdout)],
                             ['0000:31:00.1', '0000:31:00.2', '0000:31:00.3'])
            r = ctl('targets', '-', stdin=open(pfile).read())
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn('0000:31:00.2', r.stdout)
            r = ctl('check', pfile, MLX_B)
            self.assertEqual((r.returncode, r.stdout.splitlines()[0]), (0, f'{MLX_B}: compatible'))
            r = ctl('check', pfile, '0000:31:00.4', '--json')
            self.assertEqual(r.returncode, 6, r.stderr)
            self.assertFalse(json.loads(r.stdout)['compatible'])
            with open(pfile + '.bad', 'w') as f:
                f.write('{"format": 1, "migration-version": "1"}')
            r = ctl('check', pfile + '.bad', MLX_B)
            self.assertEqual(r.returncode, 2)
            self.assertIn('migration-type', r.stderr)
            r = ctl('check', '/nonexistent.json', MLX_B)
            self.assertEqual(r.returncode, 1)
            r = ctl('matrix', '--json=short')
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads(r.stdout)['host'], 'sim-host-b')

    def test_profile_change_invalidates_property(self):
        # Device.Profile emits an invalidation: when a rules change changes
        # the profile of a device a client has read, the client hears of it;
        # a device whose profile stays the same is not signalled.
        admin = tempfile.mkdtemp(dir=self.tmp)
        with Host('host-b.json', self.cache_b, admin=admin) as b:
            mlx = b.c.manager('GetDevice', '(s)', (MLX_B,))[0]
            other = b.c.manager('GetDevice', '(s)', ('0000:31:00.2',))[0]
            before = b.c.get(mlx, vt.DEVICE, 'Profile')
            b.c.get(other, vt.DEVICE, 'Profile')
            rec = vt.SignalRecorder(b.c.bus)
            with open(os.path.join(RULES, 'mlx5.json')) as f:
                rules = json.load(f)
            for rule in rules['rules']:
                if rule['id'] == 'mlx5-cx7':
                    rule['migration-version'] = '${fw_version}-admin'
            with open(os.path.join(admin, 'mlx5.json'), 'w') as f:
                json.dump(rules, f)
            # Only 0000:31:00.1 was read of those the override changes ...
            b.c.manager('Reload')
            changed = rec.wait_for(lambda s: s[1] == 'PropertiesChanged' and s[2] == mlx)
            self.assertEqual(changed[3][0], vt.DEVICE)
            self.assertIn('Profile', changed[3][2])
            after = b.c.get(mlx, vt.DEVICE, 'Profile')
            self.assertEqual(after['migration-version'], before['migration-version'] + '-admin')
            # ... and 0000:31:00.2, read too, changed the same way.
            rec.wait_for(lambda s: s[1] == 'PropertiesChanged' and s[2] == other)
            # A change back; then a reload that changes nothing: no signal.
            os.unlink(os.path.join(admin, 'mlx5.json'))
            rec.clear()
            b.c.manager('Reload')
            rec.wait_for(lambda s: s[1] == 'PropertiesChanged' and s[2] == mlx)
            self.assertEqual(b.c.get(mlx, vt.DEVICE, 'Profile'), before)
            # A change of what mlx5-cx7 accepts, not of what it exports: the
            # matrix changes, the profiles do not, and nothing is signalled.
            for rule in rules['rules']:
                if rule['id'] == 'mlx5-cx7':
                    rule['migration-version'] = '${fw_version}'     # as shipped
                    rule['accept'] = [{'check': 'set', 'field': 'fw_version', 'values': ['0.0.0']}]
            with open(os.path.join(admin, 'mlx5.json'), 'w') as f:
                json.dump(rules, f)
            rec.clear()
            b.c.manager('Reload')
            rec.wait_for(lambda s: s[1] == 'MatrixChanged')
            rec.pump(0.5)
            self.assertEqual(b.c.get(mlx, vt.DEVICE, 'Profile'), before)
            self.assertFalse([s for s in rec.signals if s[1] == 'PropertiesChanged' and s[2] in (mlx, other)],
                             rec.signals)

    def test_reload_keeps_last_good_rules(self):
        admin = tempfile.mkdtemp(dir=self.tmp)
        with Host('host-b.json', self.cache_b, admin=admin) as b:
            self.assertTrue(b.find(self.prof_a))
            rec = vt.SignalRecorder(b.c.bus)
            # A broken admin file: refused, the rules in force stay.
            with open(os.path.join(admin, 'broken.json'), 'w') as f:
                f.write('{"format": 1, "rules": [ {"id": ')
            with self.assertRaises(GLib.Error) as cm:
                b.c.manager('Reload')
            self.assertIn('broken.json', cm.exception.message)
            self.assertIn('last good rules', cm.exception.message)
            self.assertEqual(len(b.find(self.prof_a)), 3)
            os.unlink(os.path.join(admin, 'broken.json'))
            # An admin override by file name that refuses everything mlx5: applied.
            with open(os.path.join(RULES, 'mlx5.json')) as f:
                rules = json.load(f)
            for rule in rules['rules']:
                rule['accept'] = [{'check': 'set', 'field': 'fw_version', 'values': ['0.0.0']}] \
                    if rule['id'] == 'mlx5-cx7' else rule.get('accept', [])
            with open(os.path.join(admin, 'mlx5.json'), 'w') as f:
                json.dump(rules, f)
            gen = b.c.get(vt.ROOT_PATH, vt.MANAGER, 'MatrixGeneration')
            try:
                b.c.manager('Reload')
            except GLib.Error as e:
                self.fail(f'Reload of a valid override failed: {e.message}')
            rec.wait_for(lambda s: s[1] == 'MatrixChanged')
            self.assertGreater(b.c.get(vt.ROOT_PATH, vt.MANAGER, 'MatrixGeneration'), gen)
            self.assertEqual(b.find(self.prof_a), [])
            # Reload changes the host: polkit decides, and there is none on this bus.
            r = vt.run_as_nobody(['busctl', '--system', 'call', vt.BUS_NAME, vt.ROOT_PATH, vt.MANAGER, 'Reload'])
            self.assertNotEqual(r.returncode, 0)
            self.assertIn('org.vfmig1.manage', r.stderr)


if __name__ == '__main__':
    vt.main()
