# SPDX-License-Identifier: LGPL-2.1-or-later
"""Steering a running migration: Job.Switchover() and the Progress signal.

Two simulated hosts as in test_jobs.py, but the source device rewrites its
memory faster than any link here can carry it (dirty-rate 4 GiB/s, 32 MiB of
state), so a pre-copy migration with a 1 ms downtime budget never converges on
its own.  Checked: the job keeps streaming (re-sending dirty data) with a
predicted downtime above the budget; Progress arrives while it streams, rate
limited (at most one per 250 ms per job, plus the final one), with counters
that never go back and a final value equal to the job's BytesTransferred;
Switchover() on the source ends pre-copy: the job completes, the source is
stopped and the target holds exactly the source's memory; Switchover() on a
running target job is NotSupported and on a finished job a no-op; Switchover() and
Cancel() on unknown job paths are UnknownObject; more jobs than may run at
once, run one after the other, are all accepted (finished ones do not count).
"""
import json
import os
import socket
import tempfile
import time
import unittest

import vfmigtest as vt
from gi.repository import Gio, GLib
from test_jobs import Host, JOB, RESERVATION, FINAL, connect, error_name, wait_until, pump  # noqa: F401

SRC_DEV = '0000:17:00.1'
DST_DEV = '0000:31:00.1'
STATE_SIZE = 32 * 1024 * 1024
DIRTY_RATE = 4 * 1024 * 1024 * 1024
BUDGET_MS = 1
PROGRESS_INTERVAL_S = 0.25
JOBS_MAX = 256                  # unfinished jobs at once (jobs.h)


def host_file(tmp, name, device, dirty_rate):
    """A copy of a shipped host with one device made bigger (and busier)."""
    with open(os.path.join(vt.SIM, name)) as f:
        host = json.load(f)
    spec = next(d for d in host['devices'] if d['name'] == device)
    spec['migration']['state-size'] = STATE_SIZE
    spec['migration']['dirty-rate'] = dirty_rate
    path = os.path.join(tmp, name)
    with open(path, 'w') as f:
        json.dump(host, f)
    return path


def memory(host, name):
    reply, fdl = host.bus.call_with_unix_fd_list_sync(vt.BUS_NAME, host.device(name), vt.DEVICE, 'OpenDevice',
                                                      None, GLib.VariantType('(h)'), Gio.DBusCallFlags.NONE,
                                                      10000, None, None)
    fd = fdl.get(reply.unpack()[0])
    try:
        return os.pread(fd, STATE_SIZE, 0)
    finally:
        os.close(fd)


class JobControl(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix='vfmig-jobctl-')
        cls.bus2 = vt.SecondBus()
        cls.src = Host(host_file(cls.tmp.name, 'host-a.json', SRC_DEV, DIRTY_RATE),
                       os.environ['DBUS_SYSTEM_BUS_ADDRESS'], cls.tmp.name)
        cls.dst = Host(host_file(cls.tmp.name, 'host-b.json', DST_DEV, 0), cls.bus2.address, cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        rcs = (cls.src.stop(), cls.dst.stop())
        cls.bus2.stop()
        cls.tmp.cleanup()
        assert rcs == (0, 0), rcs

    def setUp(self):
        for host, dev in ((self.src, SRC_DEV), (self.dst, DST_DEV)):
            if host.state(dev) != 'running':
                host.reset(dev)
        self.reservation = None

    def tearDown(self):
        if self.reservation:
            try:
                self.dst.call(self.reservation, RESERVATION, 'Release')
            except GLib.Error:
                pass

    def start_precopy(self):
        profile = self.src.call(vt.ROOT_PATH, vt.MANAGER, 'GetMigrationProfile', '(s)', (SRC_DEV,))[0]
        self.reservation = self.dst.call(vt.ROOT_PATH, vt.MANAGER, 'Reserve', '(sa{sv}a{sv})',
                                         (DST_DEV, vt.profile_variants(profile), {}))[0]
        before = set(self.dst.jobs())
        endpoint, ticket = self.dst.call(self.reservation, RESERVATION, 'PrepareIncoming', '(a{sv})',
                                         ({'address': GLib.Variant('s', '127.0.0.1')},))
        dst_job = next(iter(set(self.dst.jobs()) - before))
        progress = []
        sub = self.src.bus.signal_subscribe(
            vt.BUS_NAME, JOB, 'Progress', None, None, Gio.DBusSignalFlags.NONE,
            lambda c, s, path, i, m, p: progress.append((time.monotonic(), path, p.unpack())))
        src_job = self.src.call(self.src.device(SRC_DEV), vt.DEVICE, 'Migrate', '(ssa{sv})',
                                (endpoint, ticket, {'precopy': GLib.Variant('b', True),
                                                    'downtime-ms': GLib.Variant('u', BUDGET_MS)}))[0]
        self.addCleanup(self.src.bus.signal_unsubscribe, sub)
        return src_job, dst_job, progress

    def wait_final(self, host, path):
        return wait_until(lambda: host.job(path)['State'] in FINAL and host.job(path), what=f'job {path}')

    def test_switchover_ends_precopy(self):
        src_job, dst_job, progress = self.start_precopy()
        wait_until(lambda: self.src.job(src_job)['BytesTransferred'] > STATE_SIZE, timeout=60,
                   what='pre-copy to send more than the state once')
        started = time.monotonic()
        pump(2.0)
        s = self.src.job(src_job)
        # It has not switched over by itself: the prediction does not fit 1 ms.
        self.assertEqual(s['State'], 'streaming', s)
        self.assertGreater(s['PredictedDowntimeMs'], BUDGET_MS, s)
        self.assertGreater(s['BytesTransferred'], STATE_SIZE)
        self.assertEqual(self.src.state(SRC_DEV), 'pre-copy')
        self.assertEqual(self.dst.state(DST_DEV), 'resuming')

        # Progress while streaming: some, rate limited, never going back.
        ours = [(t, p) for t, path, p in progress if path == src_job]
        during = [(t, p) for t, p in ours if t >= started]
        self.assertGreaterEqual(len(during), 2, ours)
        self.assertLessEqual(len(during), (time.monotonic() - started) / PROGRESS_INTERVAL_S + 2, ours)
        sent = [p[0] for t, p in ours]
        self.assertEqual(sent, sorted(sent))
        for t, (transferred, estimated, throughput) in during:
            self.assertGreater(throughput, 0)
        self.assertGreater(during[-1][1][0], STATE_SIZE)   # live counters, not the first pass's

        self.src.call(src_job, JOB, 'Switchover')
        s = self.wait_final(self.src, src_job)
        d = self.wait_final(self.dst, dst_job)
        self.assertEqual((s['State'], s['Error']), ('completed', ''))
        self.assertEqual((d['State'], d['Error']), ('completed', ''))
        self.assertEqual(s['BytesTransferred'], d['BytesTransferred'])
        self.assertEqual(self.src.state(SRC_DEV), 'stop')
        self.assertEqual(self.dst.state(DST_DEV), 'stop')
        self.assertEqual(memory(self.dst, DST_DEV), memory(self.src, SRC_DEV))
        # The last Progress is the final count.
        pump(0.2)
        last = [p for t, path, p in progress if path == src_job][-1]
        self.assertEqual(last[0], s['BytesTransferred'])

        # Switchover of a finished job changes nothing.
        for host, job in ((self.src, src_job), (self.dst, dst_job)):
            host.call(job, JOB, 'Switchover')
            self.assertEqual(host.job(job)['State'], 'completed')

    def test_switchover_on_a_target_while_it_streams(self):
        src_job, dst_job, progress = self.start_precopy()
        wait_until(lambda: self.dst.job(dst_job)['State'] == 'streaming', timeout=30, what='target streaming')
        with self.assertRaises(GLib.Error) as e:
            self.dst.call(dst_job, JOB, 'Switchover')
        self.assertEqual(error_name(e.exception), 'org.vfmig1.Error.NotSupported')
        # Refusing it changed nothing: the migration goes on and is ended from the source.
        self.assertEqual(self.dst.job(dst_job)['State'], 'streaming')
        self.src.call(src_job, JOB, 'Cancel')
        s = self.wait_final(self.src, src_job)
        d = self.wait_final(self.dst, dst_job)
        self.assertEqual(s['State'], 'cancelled', s)
        self.assertEqual(d['State'], 'failed', d)
        self.assertEqual(self.src.state(SRC_DEV), 'running')
        self.assertEqual(self.dst.state(DST_DEV), 'running')
        self.assertEqual(self.dst.get(self.reservation, RESERVATION, 'State'), 'active')

    def test_finished_jobs_do_not_count_against_the_limit(self):
        """More jobs than may run at once, one after the other: none is refused."""
        before = set(self.src.jobs())
        for i in range(JOBS_MAX + 4):
            ours, theirs = socket.socketpair()
            try:
                job = self.src.call(self.src.device(SRC_DEV), vt.DEVICE, 'SaveToFd', '(ha{sv})',
                                    (0, {'plaintext': GLib.Variant('b', True)}), fds=[theirs.fileno()])[0]
            finally:
                theirs.close()
            ours.close()            # the peer goes away: the job fails at once
            self.assertEqual(self.wait_final(self.src, job)['State'], 'failed')
            self.assertEqual(self.src.state(SRC_DEV), 'running', f'job {i}')
        self.assertGreater(len(set(self.src.jobs()) - before), JOBS_MAX)

    def test_unknown_job(self):
        for method in ('Switchover', 'Cancel'):
            with self.subTest(method=method):
                with self.assertRaises(GLib.Error) as e:
                    self.src.call('/org/vfmig1/job/999999', JOB, method)
                self.assertEqual(error_name(e.exception), 'org.freedesktop.DBus.Error.UnknownObject')


if __name__ == '__main__':
    vt.main()
