# SPDX-License-Identifier: LGPL-2.1-or-later
"""Group migration: several devices of one VM in one job and one stream.

Same layout as test_jobs.py: the source vfmigd (data/sim/host-a.json) on the
bus dbus-test-runner started, the target vfmigd (tests/data/hosts/group-b.json:
host-b whose 0000:31:00.3 rejects a version 1 stream once it resumes) on a
second private dbus-daemon.  The source calls Manager.MigrateGroup(devices,
endpoint, ticket, options); the target prepares one listener for a set of
reservations with Reservation.PrepareIncoming({"group": [more reservations]}):
stream device i goes into reservation i, the one called first.

Checked:
- a group of three (two ConnectX-7 VFs and a virtio VF) completes on both
  sides; every target device's memory equals its source's (patterns written
  first); the jobs list all devices; every reservation is kept, active;
- the P2P ordering, from the source daemon's log: the line the job writes
  after reading every device's state back names a p2p state for each of them
  (running-p2p, or pre-copy-p2p with pre-copy), and it comes before the first
  device of the group enters stop-copy;
- refusals before anything moves: a device without P2P states in the group
  (NotCompatible), duplicates, unknown, malformed, none and too many devices
  (InvalidArgs / NoSuchDevice): no job, every device running;
- the target refuses before any of its devices resumes: a group into a single
  reservation (the device count), and a group in the wrong order (device i is
  not of the migration type reservation i was made for);
- faults: one target device rejects its data -> both jobs fail naming it,
  all source devices back in running, all target devices reset, all
  reservations active; Cancel of a waiting group target; the group option's
  bad values; kill -9 of each daemon during a group job, then restart: the
  job is reported failed with all its devices, and they are all running;
- vfmigctl receive ID,ID,ID ADDRESS and vfmigctl migrate DEV,DEV DEV;
- Manager.SaveGroupToFd into Reservation.ReceiveFromFd with group, over a
  socketpair with TLS (memory verified, P2P ordering), and its refusals
  before anything moves (nothing written to the socket).
"""
import os
import re
import signal
import socket
import subprocess
import tempfile
import unittest

import vfmigtest as vt
from gi.repository import GLib
from test_jobs import Host, pump, wait_until, random_ticket, error_name, JOB, RESERVATION, FINAL
from test_job_faults import Proxy

HOSTS = os.path.join(vt.SOURCE, 'tests', 'data', 'hosts')
# source device -> its target (same migration type), in stream order
PAIRS = [('0000:17:00.1', '0000:31:00.1'), ('0000:17:00.2', '0000:31:00.2'), ('0000:ca:00.1', '0000:ca:00.1')]
REJECT_DEV = '0000:31:00.3'                     # stream-version 0: rejects the data
NO_P2P_DEV = 'c3d1e9a0-7f2b-4e8d-b1a4-5e6f7a8b9c0d'   # i915 GVT-g mdev: stop-copy only
PDS_DEV = '0000:65:00.1'
SRC_DEVS = [s for s, _ in PAIRS] + [PDS_DEV]
DST_DEVS = [d for _, d in PAIRS] + [REJECT_DEV, PDS_DEV]
RECOVERED_ERROR = 'org.vfmig1.Error.DeviceFailed: daemon restarted during the job; devices reset'




class Group(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix='vfmig-group-')
        cls.bus2 = vt.SecondBus()
        cls.addr1 = os.environ['DBUS_SYSTEM_BUS_ADDRESS']
        cls.addr2 = cls.bus2.address
        cls.src = cls.start_src()
        cls.dst = cls.start_dst()

    @classmethod
    def start_src(cls):
        return Host(os.path.join(vt.SIM, 'host-a.json'), cls.addr1, cls.tmp.name)

    @classmethod
    def start_dst(cls):
        return Host(os.path.join(HOSTS, 'group-b.json'), cls.addr2, cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        rcs = (cls.src.stop(), cls.dst.stop())
        cls.bus2.stop()
        cls.tmp.cleanup()
        assert rcs == (0, 0), rcs

    def setUp(self):
        for host in (self.src, self.dst):
            for path, j in host.jobs().items():
                if j['State'] not in FINAL:
                    host.call(path, JOB, 'Cancel')
                    self.wait_final(host, path)
        for host, devs in ((self.src, SRC_DEVS), (self.dst, DST_DEVS)):
            for dev in devs:
                if host.state(dev) != 'running':
                    host.reset(dev)
        self.reservations = []

    def tearDown(self):
        for r in self.reservations:
            try:
                self.dst.call(r, RESERVATION, 'Release')
            except GLib.Error:
                pass
        self.reservations = []

    # --- helpers ---------------------------------------------------------------------

    def reserve(self, source_dev, target, persist=False):
        profile = self.src.call(vt.ROOT_PATH, vt.MANAGER, 'GetMigrationProfile', '(s)', (source_dev,))[0]
        profile = vt.profile_variants(profile)
        opts = {'persist': GLib.Variant('b', True)} if persist else {}
        r = self.dst.call(vt.ROOT_PATH, vt.MANAGER, 'Reserve', '(sa{sv}a{sv})', (target, profile, opts))[0]
        self.reservations.append(r)
        return r

    def reserve_pairs(self, pairs, persist=False):
        return [self.reserve(s, d, persist) for s, d in pairs]

    def prepare(self, reservations, **opts):
        o = {'address': GLib.Variant('s', '127.0.0.1')}
        if len(reservations) > 1:
            o['group'] = GLib.Variant('ao', reservations[1:])
        o.update(opts)
        endpoint, ticket = self.dst.call(reservations[0], RESERVATION, 'PrepareIncoming', '(a{sv})', (o,))
        waiting = [p for p, j in self.dst.jobs().items() if j['State'] == 'waiting']
        self.assertEqual(len(waiting), 1)
        return endpoint, ticket, waiting[0]

    def migrate_group(self, devices, endpoint, ticket, **opts):
        return self.src.call(vt.ROOT_PATH, vt.MANAGER, 'MigrateGroup', '(asssa{sv})',
                             (devices, endpoint, ticket, opts))[0]

    def wait_final(self, host, path, timeout=60):
        return wait_until(lambda: host.job(path)['State'] in FINAL and host.job(path), timeout=timeout,
                          what=f'job {path}')

    def states(self, host, devs):
        return [host.state(d) for d in devs]

    def assert_failed(self, job, side, *words):
        self.assertEqual(job['State'], 'failed', job['Error'])
        self.assertRegex(job['Error'], r'^org\.vfmig1\.Error\.\w+: ')
        self.assertIn(side, job['Error'].split(': ', 1)[1])
        for w in words:
            self.assertIn(w, job['Error'])

    def log(self, host):
        with open(host.log.name) as f:
            return f.read().splitlines()

    def assert_p2p_order(self, job_path, devices, p2p_state):
        """From the source log: every device in a p2p state, read back, before any
        device of the job entered stop-copy."""
        jid = job_path.rsplit('/', 1)[1]
        lines = self.log(self.src)
        p2p = [i for i, l in enumerate(lines) if f'Job {jid}: all {len(devices)} devices in a p2p state' in l]
        self.assertEqual(len(p2p), 1, [l for l in lines if f'Job {jid}:' in l])
        listed = re.search(r'in a p2p state \((.*)\), stopping them', lines[p2p[0]]).group(1)
        self.assertEqual(listed, ', '.join(f'{d} {p2p_state}' for d in devices))
        into_p2p = [i for i, l in enumerate(lines) if f'Job {jid}: device in {p2p_state}' in l]
        into_stop = [i for i, l in enumerate(lines) if f'Job {jid}: device in stop-copy' in l]
        # each device went through the p2p state, then stop-copy, one after the other
        self.assertEqual(len(into_p2p), len(devices))
        self.assertEqual(len(into_stop), len(devices))
        for d, i in zip(devices, into_p2p):
            self.assertIn(d, lines[i])
        for d, i in zip(devices, into_stop):
            self.assertIn(d, lines[i])
        self.assertLess(max(into_p2p), p2p[0])
        self.assertLess(p2p[0], min(into_stop))

    # --- success -------------------------------------------------------------------------

    def test_group_of_three(self):
        for i, (s, _) in enumerate(PAIRS):
            self.src.write_memory(s, 4096 * (i + 1), f'vfmig-group-{i}-'.encode() * 500)
        res = self.reserve_pairs(PAIRS)
        endpoint, ticket, dst_job = self.prepare(res)
        for r in res:
            self.assertEqual(self.dst.get(r, RESERVATION, 'State'), 'receiving')
        src_job = self.migrate_group([s for s, _ in PAIRS], endpoint, ticket)
        s = self.wait_final(self.src, src_job)
        d = self.wait_final(self.dst, dst_job)
        self.assertEqual((s['State'], s['Error']), ('completed', ''))
        self.assertEqual((d['State'], d['Error']), ('completed', ''))
        self.assertEqual(s['Devices'], [s_ for s_, _ in PAIRS])
        self.assertEqual(d['Devices'], [d_ for _, d_ in PAIRS])
        self.assertEqual(d['BytesTransferred'], s['BytesTransferred'])
        sizes = sum(len(self.src.memory(x)) for x, _ in PAIRS)
        self.assertGreaterEqual(s['BytesTransferred'], sizes)
        for i, (a, b) in enumerate(PAIRS):
            mem = self.src.memory(a)
            self.assertIn(f'vfmig-group-{i}-'.encode(), mem)
            self.assertEqual(self.dst.memory(b), mem, f'{a} -> {b}')
            self.assertEqual(self.src.state(a), 'stop')
            self.assertEqual(self.dst.state(b), 'stop')
        for r in res:
            self.assertEqual(self.dst.get(r, RESERVATION, 'State'), 'active')
        self.assert_p2p_order(src_job, [a for a, _ in PAIRS], 'running-p2p')
        print(f'group of {len(PAIRS)}: {s["BytesTransferred"]} bytes, downtime {s["DowntimeMs"]} ms',
              file=__import__('sys').stderr)

    def test_group_precopy(self):
        pairs = PAIRS[:2]                   # both have pre-copy
        res = self.reserve_pairs(pairs)
        endpoint, ticket, dst_job = self.prepare(res)
        src_job = self.migrate_group([a for a, _ in pairs], endpoint, ticket,
                                     precopy=GLib.Variant('b', True), **{'downtime-ms': GLib.Variant('u', 300)})
        s = self.wait_final(self.src, src_job)
        d = self.wait_final(self.dst, dst_job)
        self.assertEqual((s['State'], d['State']), ('completed', 'completed'), (s['Error'], d['Error']))
        for a, b in pairs:
            self.assertEqual(self.dst.memory(b), self.src.memory(a))
        self.assert_p2p_order(src_job, [a for a, _ in pairs], 'pre-copy-p2p')

    def test_group_ids_accepted(self):
        """The group option also takes reservation ids (as), e.g. from busctl."""
        pairs = PAIRS[:2]
        res = self.reserve_pairs(pairs)
        endpoint, ticket, dst_job = self.prepare(res, group=GLib.Variant('as', [r.rsplit('/', 1)[1]
                                                                               for r in res[1:]]))
        src_job = self.migrate_group([a for a, _ in pairs], endpoint, ticket)
        self.assertEqual(self.wait_final(self.src, src_job)['State'], 'completed')
        d = self.wait_final(self.dst, dst_job)
        self.assertEqual(d['State'], 'completed')
        self.assertEqual(d['Devices'], [b for _, b in pairs])

    def fd_group(self, tag, dst_opts=None):
        """PAIRS' sources, each with a marked memory, to PAIRS' targets with
        SaveGroupToFd and ReceiveFromFd with group over a socketpair, with TLS:
        (source job, target job, reservations), both jobs final."""
        for i, (s, _) in enumerate(PAIRS):
            self.src.write_memory(s, 8192 * (i + 1), f'vfmig-{tag}-{i}-'.encode() * 300)
        res = self.reserve_pairs(PAIRS)
        ticket = random_ticket()
        a, b = socket.socketpair()
        try:
            dst_job = self.dst.call(res[0], RESERVATION, 'ReceiveFromFd', '(ha{sv})',
                                    (0, dict({'ticket': GLib.Variant('s', ticket),
                                              'group': GLib.Variant('ao', res[1:])}, **(dst_opts or {}))),
                                    fds=[b.fileno()])[0]
            src_job = self.src.call(vt.ROOT_PATH, vt.MANAGER, 'SaveGroupToFd', '(asha{sv})',
                                    ([s for s, _ in PAIRS], 0, {'ticket': GLib.Variant('s', ticket)}),
                                    fds=[a.fileno()])[0]
        finally:
            a.close()
            b.close()
        return self.wait_final(self.src, src_job), self.wait_final(self.dst, dst_job), src_job, dst_job, res

    def test_group_over_fds(self):
        """Manager.SaveGroupToFd on the source, ReceiveFromFd with group on the
        target, over a socketpair the test hands to both, with TLS."""
        s, d, src_job, dst_job, res = self.fd_group('fdgroup')
        self.assertEqual((s['State'], s['Error']), ('completed', ''))
        self.assertEqual((d['State'], d['Error']), ('completed', ''))
        self.assertEqual(s['Devices'], [x for x, _ in PAIRS])
        self.assertEqual(d['Devices'], [y for _, y in PAIRS])
        for i, (x, y) in enumerate(PAIRS):
            mem = self.src.memory(x)
            self.assertIn(f'vfmig-fdgroup-{i}-'.encode(), mem)
            self.assertEqual(self.dst.memory(y), mem, f'{x} -> {y}')
            self.assertEqual((self.src.state(x), self.dst.state(y)), ('stop', 'stop'))
        for r in res:
            self.assertEqual(self.dst.get(r, RESERVATION, 'State'), 'active')
        self.assert_p2p_order(src_job, [x for x, _ in PAIRS], 'running-p2p')

    def test_group_resume_running(self):
        """A group received with resume-running starts on the source's COMMIT,
        the way a source group stops, in reverse: every device in running-p2p
        (from the target's log) before any is in running."""
        s, d, src_job, dst_job, res = self.fd_group('rrgroup', {'resume-running': GLib.Variant('b', True)})
        self.assertEqual((s['State'], d['State']), ('completed', 'completed'), (s['Error'], d['Error']))
        for i, (x, y) in enumerate(PAIRS):
            self.assertEqual((self.src.state(x), self.dst.state(y)), ('stop', 'running'))
            self.assertEqual(self.dst.memory(y), self.src.memory(x), f'{x} -> {y}')
        jid = dst_job.rsplit('/', 1)[1]
        lines = self.log(self.dst)
        p2p = [i for i, l in enumerate(lines) if f'Job {jid}: device in running-p2p' in l]
        run = [i for i, l in enumerate(lines) if f'Job {jid}: device in running' in l and 'running-p2p' not in l]
        self.assertEqual(len(p2p), len(PAIRS), [l for l in lines if f'Job {jid}:' in l])
        self.assertEqual(len(run), len(PAIRS), [l for l in lines if f'Job {jid}:' in l])
        for (_, y), i, k in zip(PAIRS, p2p, run):
            self.assertIn(y, lines[i])
            self.assertIn(y, lines[k])
        self.assertLess(max(p2p), min(run))
        for r in res:
            self.assertEqual(self.dst.get(r, RESERVATION, 'State'), 'active')

    def test_group_over_fds_refused(self):
        """SaveGroupToFd refuses what SaveToFd and MigrateGroup refuse, before
        anything moves."""
        devs = [x for x, _ in PAIRS[:2]]
        tls = {'ticket': GLib.Variant('s', random_ticket())}
        cases = (
            ((devs, {}), 'org.vfmig1.Error.InvalidArgs'),                        # neither ticket nor plaintext
            (([devs[0], devs[0]], tls), 'org.vfmig1.Error.InvalidArgs'),         # a device twice
            (([], tls), 'org.vfmig1.Error.InvalidArgs'),                         # none
            (([devs[0], 'nonsense/../x'], tls), 'org.vfmig1.Error.InvalidArgs'),
            (([devs[0], '0000:99:00.0'], tls), 'org.vfmig1.Error.NoSuchDevice'),
            (([devs[0], NO_P2P_DEV], tls), 'org.vfmig1.Error.NotCompatible'),   # no P2P in a group
        )
        before = set(self.src.jobs())
        for (devices, opts), name in cases:
            with self.subTest(devices=devices, opts=list(opts)):
                a, b = socket.socketpair()
                try:
                    with self.assertRaises(GLib.Error) as e:
                        self.src.call(vt.ROOT_PATH, vt.MANAGER, 'SaveGroupToFd', '(asha{sv})', (devices, 0, opts),
                                      fds=[a.fileno()])
                    self.assertEqual(error_name(e.exception), name, str(e.exception))
                    b.settimeout(0.2)
                    # nothing was sent on the socket
                    with self.assertRaises(socket.timeout):
                        b.recv(1)
                finally:
                    a.close()
                    b.close()
        self.assertEqual(set(self.src.jobs()), before)
        self.assertEqual(self.states(self.src, devs + [NO_P2P_DEV]), ['running'] * 3)

    def ctl(self, host, *args):
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=host.address)
        return subprocess.run([vt.VFMIGCTL] + list(args), env=env, capture_output=True, text=True, timeout=60)

    def test_vfmigctl_group(self):
        """vfmigctl receive ID,ID ADDRESS on the target, vfmigctl migrate DEV,DEV DEV on the source."""
        res = self.reserve_pairs(PAIRS)
        ids = [r.rsplit('/', 1)[1] for r in res]
        r = self.ctl(self.dst, 'receive', ','.join(ids), '127.0.0.1')
        self.assertEqual(r.returncode, 0, r.stderr)
        endpoint, ticket = r.stdout.split()
        for x in res:
            self.assertEqual(self.dst.get(x, RESERVATION, 'State'), 'receiving')
        devs = [a for a, _ in PAIRS]
        r = self.ctl(self.src, 'migrate', ','.join(devs[:2]), devs[2], '--to', endpoint, '--ticket', ticket)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertTrue(lines[0].startswith('job /org/vfmig1/job/'), lines)
        self.assertIn('completed', lines[-1])
        self.assertEqual(self.src.job(lines[0].split()[1])['Devices'], devs)
        for a, b in PAIRS:
            self.assertEqual(self.dst.memory(b), self.src.memory(a))
        r = self.ctl(self.src, 'jobs')
        self.assertIn(','.join(devs), r.stdout)
        # a bad id anywhere in the list: usage error, nothing prepared
        r = self.ctl(self.dst, 'receive', ids[0] + ',nope')
        self.assertEqual(r.returncode, 2, r.stderr)
        for x in res:
            self.assertEqual(self.dst.get(x, RESERVATION, 'State'), 'active')
        # a device without P2P in a group: NotCompatible, exit 6
        self.src.reset(devs[0])
        r = self.ctl(self.src, 'migrate', f'{devs[0]},{NO_P2P_DEV}', '--to', endpoint, '--ticket', ticket)
        self.assertEqual(r.returncode, 6, r.stderr)

    # --- refused before anything moves ----------------------------------------------------

    def test_refused_arguments(self):
        jobs_before = set(self.src.jobs())
        res = self.reserve_pairs(PAIRS[:1])
        endpoint, ticket, dst_job = self.prepare(res)
        cases = [
            ([PAIRS[0][0], NO_P2P_DEV], 'org.vfmig1.Error.NotCompatible', 'P2P'),
            ([NO_P2P_DEV, PAIRS[0][0]], 'org.vfmig1.Error.NotCompatible', 'P2P'),
            ([PAIRS[0][0], PAIRS[1][0], PAIRS[0][0]], 'org.vfmig1.Error.InvalidArgs', 'twice'),
            ([PAIRS[0][0], '0000:99:00.7'], 'org.vfmig1.Error.NoSuchDevice', '0000:99:00.7'),
            ([PAIRS[0][0], 'bad name!'], 'org.vfmig1.Error.InvalidArgs', 'devices[1]'),
            ([], 'org.vfmig1.Error.InvalidArgs', 'at least one'),
            ([f'0000:17:00.{i}' for i in range(8)] * 9, 'org.vfmig1.Error.InvalidArgs', 'at most 64'),
        ]
        for devices, name, word in cases:
            with self.subTest(devices=devices[:3]):
                with self.assertRaises(GLib.Error) as e:
                    self.migrate_group(devices, endpoint, ticket)
                self.assertEqual(error_name(e.exception), name, str(e.exception))
                self.assertIn(word, str(e.exception))
        with self.assertRaises(GLib.Error) as e:
            self.migrate_group([PAIRS[0][0]], 'nonsense', ticket)
        self.assertEqual(error_name(e.exception), 'org.vfmig1.Error.InvalidArgs')
        with self.assertRaises(GLib.Error) as e:
            self.migrate_group([PAIRS[0][0]], endpoint, ticket, **{'timeout-ms': GLib.Variant('u', 1)})
        self.assertEqual(error_name(e.exception), 'org.vfmig1.Error.InvalidArgs')
        # nothing changed
        self.assertEqual(set(self.src.jobs()), jobs_before)
        self.assertEqual(self.states(self.src, SRC_DEVS + [NO_P2P_DEV]), ['running'] * (len(SRC_DEVS) + 1))
        self.assertEqual(self.dst.job(dst_job)['State'], 'waiting')
        # the target is still there for the right call
        src_job = self.migrate_group([PAIRS[0][0]], endpoint, ticket)
        self.assertEqual(self.wait_final(self.src, src_job)['State'], 'completed')
        self.assertEqual(self.wait_final(self.dst, dst_job)['State'], 'completed')

    def test_unprivileged_caller(self):
        """The bus policy lets anybody call MigrateGroup; the daemon asks polkit
        (org.vfmig1.migrate), which is not running on the test bus: refused."""
        devs = [a for a, _ in PAIRS[:2]]
        r = vt.run_as_nobody(['busctl', '--system', 'call', vt.BUS_NAME, vt.ROOT_PATH, vt.MANAGER, 'MigrateGroup',
                              'asssa{sv}', '2'] + devs + ['127.0.0.1:1', 'A' * 43, '0'],   # no leading '-'
                             env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.addr1))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('org.vfmig1.migrate', r.stderr)
        self.assertNotIn('Rejected send message', r.stderr)     # not the bus policy
        self.assertEqual(self.states(self.src, devs), ['running', 'running'])

    def test_group_option_refused(self):
        res = self.reserve_pairs(PAIRS[:2])
        gone = '/org/vfmig1/reservation/' + '0' * 32
        for value, name in ((GLib.Variant('ao', [res[1], res[1]]), 'org.vfmig1.Error.InvalidArgs'),
                            (GLib.Variant('ao', [res[0]]), 'org.vfmig1.Error.InvalidArgs'),
                            (GLib.Variant('ao', [gone]), 'org.vfmig1.Error.NotReserved'),
                            (GLib.Variant('ao', ['/org/vfmig1/device/x']), 'org.vfmig1.Error.InvalidArgs'),
                            (GLib.Variant('as', ['not-an-id']), 'org.vfmig1.Error.InvalidArgs'),
                            (GLib.Variant('s', res[1]), 'org.vfmig1.Error.InvalidArgs')):
            with self.subTest(value=str(value)):
                with self.assertRaises(GLib.Error) as e:
                    self.prepare(res[:1], group=value)
                self.assertEqual(error_name(e.exception), name, str(e.exception))
                a, b = socket.socketpair()
                try:
                    with self.assertRaises(GLib.Error) as e:
                        self.dst.call(res[0], RESERVATION, 'ReceiveFromFd', '(ha{sv})',
                                      (0, {'plaintext': GLib.Variant('b', True), 'group': value}), fds=[b.fileno()])
                    self.assertEqual(error_name(e.exception), name, str(e.exception))
                finally:
                    a.close()
                    b.close()
                for r in res:
                    self.assertEqual(self.dst.get(r, RESERVATION, 'State'), 'active')
        self.assertEqual([j for j in self.dst.jobs().values() if j['State'] not in FINAL], [])

    def test_target_refuses_device_count(self):
        res = self.reserve_pairs(PAIRS[:1])
        before = self.dst.memory(PAIRS[0][1])
        endpoint, ticket, dst_job = self.prepare(res)        # one reservation ...
        src_job = self.migrate_group([a for a, _ in PAIRS[:2]], endpoint, ticket)   # ... two devices
        s = self.wait_final(self.src, src_job)
        d = self.wait_final(self.dst, dst_job)
        self.assert_failed(d, 'target', 'carries 2 devices')
        self.assertTrue(d['Error'].startswith('org.vfmig1.Error.StreamInvalid'), d['Error'])
        self.assert_failed(s, 'target')
        self.assertEqual(self.states(self.src, [a for a, _ in PAIRS[:2]]), ['running', 'running'])
        self.assertEqual(self.dst.state(PAIRS[0][1]), 'running')
        self.assertEqual(self.dst.memory(PAIRS[0][1]), before)
        self.assertEqual(self.dst.get(res[0], RESERVATION, 'State'), 'active')

    def test_target_refuses_wrong_order(self):
        pairs = [PAIRS[0], PAIRS[2]]                     # ConnectX-7, virtio
        res = self.reserve_pairs(pairs)
        before = [self.dst.memory(b) for _, b in pairs]
        endpoint, ticket, dst_job = self.prepare(res)
        # the devices in the other order: device 0 is virtio, reservation 0 is for ConnectX-7
        src_job = self.migrate_group([pairs[1][0], pairs[0][0]], endpoint, ticket)
        s = self.wait_final(self.src, src_job)
        d = self.wait_final(self.dst, dst_job)
        self.assert_failed(d, 'target', 'stream device 0', res[0].rsplit('/', 1)[1])
        self.assertTrue(d['Error'].startswith('org.vfmig1.Error.NotCompatible'), d['Error'])
        self.assert_failed(s, 'target')
        self.assertEqual(self.states(self.src, [a for a, _ in pairs]), ['running', 'running'])
        self.assertEqual(self.states(self.dst, [b for _, b in pairs]), ['running', 'running'])
        self.assertEqual([self.dst.memory(b) for _, b in pairs], before)     # never resumed into
        with open(self.dst.log.name) as f:
            self.assertNotIn(f'Job {dst_job.rsplit("/", 1)[1]}: stream header accepted', f.read())
        for r in res:
            self.assertEqual(self.dst.get(r, RESERVATION, 'State'), 'active')

    # --- faults ------------------------------------------------------------------------------

    def test_target_device_rejects_data(self):
        pairs = [PAIRS[0], (PAIRS[1][0], REJECT_DEV)]
        res = self.reserve_pairs(pairs)
        endpoint, ticket, dst_job = self.prepare(res)
        src_job = self.migrate_group([a for a, _ in pairs], endpoint, ticket)
        s = self.wait_final(self.src, src_job)
        d = self.wait_final(self.dst, dst_job)
        self.assert_failed(d, 'target', REJECT_DEV)
        self.assertTrue(d['Error'].startswith('org.vfmig1.Error.DeviceFailed'), d['Error'])
        self.assert_failed(s, 'target', REJECT_DEV)
        pump(0.3)
        self.assertEqual(self.states(self.src, [a for a, _ in pairs]), ['running', 'running'])
        self.assertEqual(self.states(self.dst, [b for _, b in pairs]), ['running', 'running'])
        jid = dst_job.rsplit('/', 1)[1]
        resets = [l for l in self.log(self.dst) if f'Job {jid}: device reset' in l]
        for _, b in pairs:          # both target devices had resumed, both were reset
            self.assertTrue(any(b in l for l in resets), resets)
        for r in res:
            self.assertEqual(self.dst.get(r, RESERVATION, 'State'), 'active')

    def test_cancel_waiting_group_target(self):
        res = self.reserve_pairs(PAIRS)
        endpoint, ticket, dst_job = self.prepare(res)
        self.dst.call(dst_job, JOB, 'Cancel')
        self.assertEqual(self.wait_final(self.dst, dst_job)['State'], 'cancelled')
        for r in res:
            self.assertEqual(self.dst.get(r, RESERVATION, 'State'), 'active')
        # every reservation can receive again
        endpoint, ticket, dst_job = self.prepare(res)
        self.assertEqual(self.dst.job(dst_job)['Devices'], [b for _, b in PAIRS])

    def test_zz_kill_mid_group(self):
        """kill -9 of either daemon while a group job is under way; restarted, it
        reports the job failed with every device, and every device runs."""
        pairs = PAIRS[:2]
        for victim in ('src', 'dst'):
            with self.subTest(killed=victim):
                self.setUp()
                res = self.reserve_pairs(pairs, persist=True)
                endpoint, ticket, dst_job = self.prepare(res)
                proxy = Proxy(endpoint, pause_at=1 << 20, rcvbuf=64 << 10)
                self.addCleanup(proxy.close)
                src_job = self.migrate_group([a for a, _ in pairs], proxy.endpoint, ticket)
                wait_until(lambda: proxy.relay and proxy.relay.paused.is_set(), timeout=60, what='1 MiB relayed')
                pump(0.2)
                # mid-stream indeed: not all the state is out of the source yet
                total = sum(len(self.src.memory(a)) for a, _ in pairs)
                self.assertLess(self.src.job(src_job)['BytesTransferred'], total)
                host = getattr(self, victim)
                host.proc.send_signal(signal.SIGKILL)
                host.proc.wait(10)
                host.log.close()
                proxy.relay.resume()
                proxy.close()
                other = self.dst if victim == 'src' else self.src
                other_job = dst_job if victim == 'src' else src_job
                self.assertEqual(self.wait_final(other, other_job)['State'], 'failed')
                restarted = self.start_src() if victim == 'src' else self.start_dst()
                setattr(type(self), victim, restarted)
                devs = [a for a, _ in pairs] if victim == 'src' else [b for _, b in pairs]
                kind = 'save' if victim == 'src' else 'restore'
                jobs = [j for j in restarted.jobs().values() if j['Kind'] == kind]
                self.assertEqual(len(jobs), 1, jobs)
                self.assertEqual(jobs[0]['Devices'], devs)
                self.assertEqual((jobs[0]['State'], jobs[0]['Error']), ('failed', RECOVERED_ERROR))
                self.assertEqual(self.states(self.src, [a for a, _ in pairs]), ['running', 'running'])
                self.assertEqual(self.states(self.dst, [b for _, b in pairs]), ['running', 'running'])
                for r in res:           # persistent: survived the restart, active again
                    self.assertEqual(self.dst.get(r, RESERVATION, 'State'), 'active')
                self.tearDown()


if __name__ == '__main__':
    vt.main()
