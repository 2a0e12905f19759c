# SPDX-License-Identifier: LGPL-2.1-or-later
"""Authorization by polkit: OpenDevice, Reset and the migration methods.

With the real polkitd (the project's .policy, a test rules file): root is
allowed without asking, a user outside the test group is refused (and can
still query), a member of the group is allowed and gets a working device FD,
the "device"/"verb" details reach polkit's rules.  Every job method
(Migrate, SaveToFd, PrepareIncoming, ReceiveFromFd, Cancel, Switchover) is
refused to an outsider with org.vfmig1.migrate named and nothing changed, and
a group member runs a whole migration without root.  Without polkit on the bus
every unprivileged call is refused with a message saying so.  With the
dbusmock polkitd template: while one caller's check hangs, other callers are
served; the hung call is answered when polkit answers; a caller that leaves
while parked has its check cancelled; the daemon exits cleanly with calls
parked; polkit vanishing mid-check means refused.
"""
import os
import signal
import subprocess
import time
import unittest

import polkittest as pt
import vfmigtest as vt
from gi.repository import Gio, GLib

HOST = os.path.join(vt.SIM, 'host-a.json')
DEV = '0000:17:00.1'
OTHER_DEV = '0000:17:00.2'
JOB = 'org.vfmig1.Job'
RESERVATION = 'org.vfmig1.Reservation'
ACTION_MIGRATE = 'org.vfmig1.migrate'


def state_size(name):
    import json
    with open(HOST) as f:
        return {d['name']: d for d in json.load(f)['devices']}[name]['migration']['state-size']


def start_daemon():
    return vt.Daemon(['--simulate', HOST, '--config', '/nonexistent/vfmigd.conf', '--debug',
                      '--rules', os.path.join(vt.SOURCE, 'data', 'compat.d'),
                      '--admin-rules', '/nonexistent/compat.d']).start()


def busctl_as(user, *args):
    argv = ['busctl', '--system'] + list(args)
    if user == 'root':
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)
    uid, gid, groups = pt.user_ids(user)
    return subprocess.run(['setpriv', f'--reuid={uid}', f'--regid={gid}'] + groups + ['--'] + argv,
                          capture_output=True, text=True, timeout=60)


class Base(unittest.TestCase):
    def path(self, name=DEV):
        return self.client.manager('GetDevice', '(s)', (name,))[0]

    def assertDenied(self, verdict, action):
        self.assertEqual(verdict.get('error'), 'org.vfmig1.Error.AccessDenied', verdict)
        self.assertIn(action, verdict['message'])

    def assertOpened(self, verdict, name=DEV):
        self.assertEqual(verdict, {'ok': True, 'size': state_size(name), 'readback': 'vfmig-polkit'})

    def assertQueriesWork(self, user):
        r = busctl_as(user, 'get-property', vt.BUS_NAME, self.path(), vt.DEVICE, 'Status')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('managed', r.stdout)


class RealPolkit(Base):
    @classmethod
    def setUpClass(cls):
        pt.ensure_test_user()
        cls.polkitd = pt.PolkitD().start()
        cls.daemon = start_daemon()
        cls.client = vt.Client()

    @classmethod
    def tearDownClass(cls):
        rc = cls.daemon.stop()
        cls.polkitd.stop()
        assert rc == 0, cls.daemon.stderr

    def test_root_is_allowed(self):
        reply, fds = self.client.bus.call_with_unix_fd_list_sync(
            vt.BUS_NAME, self.path(), vt.DEVICE, 'OpenDevice', None, GLib.VariantType('(h)'),
            Gio.DBusCallFlags.NONE, 10000, None, None)
        fd = fds.get(reply.unpack()[0])
        try:
            self.assertEqual(os.fstat(fd).st_size, state_size(DEV))
        finally:
            os.close(fd)
        self.client.call(self.path(), vt.DEVICE, 'Reset')
        r = busctl_as('root', 'call', vt.BUS_NAME, self.path(), vt.DEVICE, 'Reset')
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_outsider_is_refused_and_can_query(self):
        self.assertDenied(pt.call_as('nobody', self.path(), vt.DEVICE, 'OpenDevice'), pt.ACTION_OPEN)
        self.assertDenied(pt.call_as('nobody', self.path(), vt.DEVICE, 'Reset'), pt.ACTION_MANAGE)
        # Allowing interactive authorization changes nothing without an agent.
        v = pt.call_as('nobody', self.path(), vt.DEVICE, 'OpenDevice', interactive=True)
        self.assertIn(v.get('error'), ('org.vfmig1.Error.AccessDenied',
                                       'org.freedesktop.DBus.Error.InteractiveAuthorizationRequired'), v)
        self.assertIn(pt.ACTION_OPEN, v['message'])
        r = busctl_as('nobody', 'call', vt.BUS_NAME, self.path(), vt.DEVICE, 'Reset')
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('Access denied', r.stderr)
        self.assertQueriesWork('nobody')
        self.assertEqual(self.client.get(self.path(), vt.DEVICE, 'MigrationState'), 'running')

    def test_group_member_is_allowed(self):
        self.assertOpened(pt.call_as(pt.TEST_USER, self.path(), vt.DEVICE, 'OpenDevice'))
        self.assertEqual(pt.call_as(pt.TEST_USER, self.path(), vt.DEVICE, 'Reset'), {'ok': True})
        r = busctl_as(pt.TEST_USER, 'call', vt.BUS_NAME, self.path(), vt.DEVICE, 'Reset')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertQueriesWork(pt.TEST_USER)

    def test_details_reach_polkit(self):
        # The rule lets nobody open 0000:17:00.2 only (details device + verb).
        self.assertOpened(pt.call_as('nobody', self.path(OTHER_DEV), vt.DEVICE, 'OpenDevice'), OTHER_DEV)
        self.assertDenied(pt.call_as('nobody', self.path(OTHER_DEV), vt.DEVICE, 'Reset'), pt.ACTION_MANAGE)
        self.assertDenied(pt.call_as('nobody', self.path(DEV), vt.DEVICE, 'OpenDevice'), pt.ACTION_OPEN)

    def test_not_managed_comes_first(self):
        v = pt.call_as('nobody', self.path('0000:17:00.4'), vt.DEVICE, 'OpenDevice')
        self.assertEqual(v.get('error'), 'org.vfmig1.Error.NotManaged', v)

    def test_vfmigctl_exit_codes(self):
        uid, gid, groups = pt.user_ids(pt.TEST_USER)
        r = subprocess.run(['setpriv', f'--reuid={uid}', f'--regid={gid}'] + groups +
                           ['--', vt.VFMIGCTL, 'reset', DEV], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = vt.run_as_nobody([vt.VFMIGCTL, 'reset', DEV])
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn(pt.ACTION_MANAGE, r.stderr)

    def test_many_checks_no_leak(self):
        fd_dir = f'/proc/{self.daemon.proc.pid}/fd'
        path = self.path()
        pt.call_as('nobody', path, vt.DEVICE, 'Reset')
        before = len(os.listdir(fd_dir))
        procs = [pt.PendingCall('nobody' if i % 2 else pt.TEST_USER, path, vt.DEVICE, 'Reset') for i in range(20)]
        verdicts = [p.result() for p in procs]
        for i, v in enumerate(verdicts):
            if i % 2:
                self.assertDenied(v, pt.ACTION_MANAGE)
            else:
                self.assertEqual(v, {'ok': True})
        self.assertEqual(len(os.listdir(fd_dir)), before)


    # --- migration: org.vfmig1.migrate on every job method -------------------

    def jobs(self):
        return {p: i[JOB] for p, i in self.client.managed_objects().items() if JOB in i}

    def wait_job(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            props = self.client.get_all(path, JOB)
            if props['State'] in ('completed', 'failed', 'cancelled'):
                return props
            time.sleep(0.02)
        raise AssertionError(f'job {path} did not finish')

    def reserve_target(self):
        """A reservation of OTHER_DEV for DEV's state (root: the orchestrator's part)."""
        profile = self.client.manager('GetMigrationProfile', '(s)', (DEV,))[0]
        return self.client.manager('Reserve', '(sa{sv}a{sv})', (OTHER_DEV, vt.profile_variants(profile), {}))[0]

    def release(self, reservation):
        try:
            self.client.call(reservation, RESERVATION, 'Release')
        except GLib.Error:
            pass
        for dev in (DEV, OTHER_DEV):
            if self.client.get(self.path(dev), vt.DEVICE, 'MigrationState') != 'running':
                self.client.call(self.path(dev), vt.DEVICE, 'Reset')

    def test_job_methods_refused_for_outsiders(self):
        reservation = self.reserve_target()
        try:
            before = set(self.jobs())
            calls = (
                (self.path(), vt.DEVICE, 'Migrate', "('127.0.0.1:9', 'x', @a{sv} {})"),
                (self.path(), vt.DEVICE, 'SaveToFd', "(handle 0, {'plaintext': <true>})"),
                ('/org/vfmig1', vt.MANAGER, 'SaveGroupToFd',
                 f"(['{DEV}'], handle 0, {{'plaintext': <true>}})"),
                (reservation, RESERVATION, 'PrepareIncoming', "(@a{sv} {},)"),
                (reservation, RESERVATION, 'ReceiveFromFd', "(handle 0, {'plaintext': <true>})"),
            )
            for path, iface, method, args in calls:
                with self.subTest(method=method):
                    self.assertDenied(pt.call_as('nobody', path, iface, method, args=args), ACTION_MIGRATE)
            # Nothing changed: no job, both devices running, the reservation as it was.
            self.assertEqual(set(self.jobs()), before)
            for dev in (DEV, OTHER_DEV):
                self.assertEqual(self.client.get(self.path(dev), vt.DEVICE, 'MigrationState'), 'running')
            self.assertEqual(self.client.get(reservation, RESERVATION, 'State'), 'active')

            # A job root started: outsiders can watch it but not cancel or switch it over.
            endpoint, ticket = self.client.call(reservation, RESERVATION, 'PrepareIncoming', '(a{sv})',
                                                ({'address': GLib.Variant('s', '127.0.0.1')},))
            job = next(iter(set(self.jobs()) - before))
            for method in ('Cancel', 'Switchover'):
                with self.subTest(method=method):
                    self.assertDenied(pt.call_as('nobody', job, JOB, method), ACTION_MIGRATE)
            r = busctl_as('nobody', 'get-property', vt.BUS_NAME, job, JOB, 'State')
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn('waiting', r.stdout)
            self.assertEqual(self.client.get(job, JOB, 'State'), 'waiting')
            self.client.call(job, JOB, 'Cancel')
            self.assertEqual(self.wait_job(job)['State'], 'cancelled')
        finally:
            self.release(reservation)

    def test_group_member_migrates(self):
        """A member of the group polkit allows runs a whole migration (here within one host)."""
        reservation = self.reserve_target()
        try:
            before = set(self.jobs())
            v = pt.call_as(pt.TEST_USER, reservation, RESERVATION, 'PrepareIncoming',
                           args="({'address': <'127.0.0.1'>},)")
            self.assertTrue(v.get('ok'), v)
            endpoint, ticket = v['reply']
            v = pt.call_as(pt.TEST_USER, self.path(DEV), vt.DEVICE, 'Migrate',
                           args=f"('{endpoint}', '{ticket}', @a{{sv}} {{}})")
            self.assertTrue(v.get('ok'), v)
            source_job = v['reply'][0]
            self.assertEqual(self.client.get(source_job, JOB, 'Kind'), 'save')
            target_job = next(p for p in set(self.jobs()) - before if p != source_job)
            s, t = self.wait_job(source_job), self.wait_job(target_job)
            self.assertEqual((s['State'], s['Error']), ('completed', ''))
            self.assertEqual((t['State'], t['Error']), ('completed', ''))
            self.assertEqual(s['BytesTransferred'], t['BytesTransferred'])
            self.assertEqual(self.client.get(self.path(DEV), vt.DEVICE, 'MigrationState'), 'stop')
            self.assertEqual(self.client.get(self.path(OTHER_DEV), vt.DEVICE, 'MigrationState'), 'stop')
            # Cancel and Switchover of a finished job are allowed and change nothing.
            self.assertEqual(pt.call_as(pt.TEST_USER, source_job, JOB, 'Switchover'), {'ok': True})
            v = pt.call_as(pt.TEST_USER, source_job, JOB, 'Cancel')
            self.assertEqual(v.get('error'), 'org.vfmig1.Error.Busy', v)
            self.assertEqual(self.client.get(source_job, JOB, 'State'), 'completed')
        finally:
            self.release(reservation)


class NoPolkit(Base):
    """Nothing owns org.freedesktop.PolicyKit1 on the test bus."""

    @classmethod
    def setUpClass(cls):
        pt.ensure_test_user()
        cls.daemon = start_daemon()
        cls.client = vt.Client()

    @classmethod
    def tearDownClass(cls):
        assert cls.daemon.stop() == 0, cls.daemon.stderr

    def test_refused_with_a_clear_message(self):
        self.assertFalse(pt.name_has_owner(self.client.bus, pt.POLKIT_NAME))
        for user in ('nobody', pt.TEST_USER):
            for method, action in (('OpenDevice', pt.ACTION_OPEN), ('Reset', pt.ACTION_MANAGE)):
                with self.subTest(user=user, method=method):
                    v = pt.call_as(user, self.path(), vt.DEVICE, method)
                    self.assertDenied(v, action)
                    self.assertIn('polkit', v['message'])
                    self.assertIn('not available', v['message'])
        self.assertQueriesWork('nobody')

    def test_root_needs_no_polkit(self):
        self.client.call(self.path(), vt.DEVICE, 'Reset')


class MockPolkit(Base):
    """dbusmock's polkitd: hanging checks."""

    def setUp(self):
        pt.ensure_test_user()
        self.mock = pt.MockPolkit().start()
        self.daemon = start_daemon()
        self.client = vt.Client()
        self.mock.set_allowed([pt.ACTION_OPEN, pt.ACTION_MANAGE])

    def tearDown(self):
        rc = self.daemon.stop()
        self.mock.stop()
        self.assertEqual(rc, 0, self.daemon.stderr)

    def test_hung_check_does_not_block_others(self):
        path = self.path()
        self.mock.hang([pt.ACTION_OPEN])
        hung = pt.PendingCall('nobody', path, vt.DEVICE, 'OpenDevice')
        self.mock.wait_hanging()
        # Queries, as root and as another user, are answered meanwhile ...
        t0 = time.monotonic()
        self.assertIn(DEV, self.client.devices())
        self.assertEqual(self.client.get(path, vt.DEVICE, 'Status'), 'managed')
        self.assertQueriesWork(pt.TEST_USER)
        # ... and so are other gated calls, by root and by another caller.
        self.client.call(path, vt.DEVICE, 'Reset')
        self.assertEqual(pt.call_as(pt.TEST_USER, path, vt.DEVICE, 'Reset'), {'ok': True})
        self.mock.hang([])
        self.assertOpened(pt.call_as(pt.TEST_USER, path, vt.DEVICE, 'OpenDevice'))
        self.assertLess(time.monotonic() - t0, 20)
        self.assertFalse(hung.done(), 'the hung call was answered before polkit answered')
        self.assertTrue(self.mock.has_hanging())
        # polkit answers: the parked call is dispatched again and answered.
        self.mock.release()
        self.assertOpened(hung.result())

    def test_hung_check_answered_late(self):
        self.mock.hang([pt.ACTION_MANAGE])
        hung = pt.PendingCall('nobody', self.path(), vt.DEVICE, 'Reset')
        self.mock.wait_hanging()
        self.mock.set_allowed([])        # the template decides when called; hold it
        time.sleep(0.3)
        self.assertFalse(hung.done())
        self.mock.release()
        v = hung.result()
        # The template computed its verdict at call time (allowed), so the
        # parked call goes through: the verdict is polkit's, as it was sent.
        self.assertEqual(v, {'ok': True})
        self.assertDenied(pt.call_as('nobody', self.path(), vt.DEVICE, 'Reset'), pt.ACTION_MANAGE)

    def test_what_polkit_is_asked(self):
        path = self.path()
        self.mock.clear_calls()
        pending = pt.PendingCall('nobody', path, vt.DEVICE, 'OpenDevice')
        self.assertOpened(pending.result())
        self.assertOpened(pt.call_as('nobody', path, vt.DEVICE, 'OpenDevice', interactive=True))
        self.assertEqual(pt.call_as('nobody', path, vt.DEVICE, 'Reset'), {'ok': True})
        calls = [args for _, args in self.mock.calls('CheckAuthorization')]
        self.assertEqual(len(calls), 3, calls)
        (kind, subject), action, details, flags, cancel_id = calls[0]
        self.assertEqual(kind, 'system-bus-name')
        self.assertEqual(subject, {'name': pending.unique_name})
        self.assertEqual(action, pt.ACTION_OPEN)
        self.assertEqual(details, {'device': DEV, 'verb': 'open-device'})
        self.assertEqual(flags, 0)
        self.assertTrue(cancel_id)
        self.assertEqual(calls[1][3], 1)      # AllowUserInteraction, as the caller allowed it
        self.assertEqual(calls[2][1], pt.ACTION_MANAGE)
        self.assertEqual(calls[2][2], {'device': DEV, 'verb': 'reset'})
        self.assertEqual(len({c[4] for c in calls}), 3, 'cancellation ids must be unique')
        # Root is not asked about.
        self.client.call(path, vt.DEVICE, 'Reset')
        self.assertEqual(len(self.mock.calls('CheckAuthorization')), 3)

    def test_group_details_name_every_target(self):
        """PrepareIncoming for a set of reservations asks polkit about every target."""
        def reserve(target, source):
            profile = self.client.manager('GetMigrationProfile', '(s)', (source,))[0]
            return self.client.manager('Reserve', '(sa{sv}a{sv})', (target, vt.profile_variants(profile), {}))[0]
        first, second = reserve(OTHER_DEV, DEV), reserve(DEV, OTHER_DEV)
        rid = self.client.get(second, RESERVATION, 'Id')
        self.mock.clear_calls()
        v = pt.call_as('nobody', first, RESERVATION, 'PrepareIncoming', args=f"({{'group': <['{rid}']>}},)")
        self.assertDenied(v, ACTION_MIGRATE)          # the mock allows no migration
        calls = [args for _, args in self.mock.calls('CheckAuthorization')]
        self.assertEqual(len(calls), 1, calls)
        self.assertEqual(calls[0][1], ACTION_MIGRATE)
        self.assertEqual(calls[0][2], {'device': f'{OTHER_DEV},{DEV}', 'verb': 'prepare-incoming'})
        for r in (first, second):
            self.assertEqual(self.client.get(r, RESERVATION, 'State'), 'active')
            self.client.call(r, RESERVATION, 'Release')

    def test_caller_leaving_cancels_the_check(self):
        path = self.path()
        self.mock.hang([pt.ACTION_OPEN])
        self.mock.clear_calls()
        hung = pt.PendingCall('nobody', path, vt.DEVICE, 'OpenDevice')
        self.mock.wait_hanging()
        cancel_id = self.mock.calls('CheckAuthorization')[0][1][4]
        hung.kill()
        deadline = time.monotonic() + 10
        while not self.mock.calls('CancelCheckAuthorization') and time.monotonic() < deadline:
            time.sleep(0.05)
        cancels = self.mock.calls('CancelCheckAuthorization')
        self.assertEqual([args for _, args in cancels], [[cancel_id]])
        # The late answer for the dropped call is ignored; the daemon goes on.
        self.mock.release()
        self.mock.hang([])
        self.assertOpened(pt.call_as('nobody', path, vt.DEVICE, 'OpenDevice'))

    def test_exit_with_calls_parked(self):
        self.mock.hang([pt.ACTION_OPEN, pt.ACTION_MANAGE])
        hung = [pt.PendingCall('nobody', self.path(), vt.DEVICE, m) for m in ('OpenDevice', 'Reset', 'Reset')]
        deadline = time.monotonic() + 10
        while len(self.mock.calls('CheckAuthorization')) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(len(self.mock.calls('CheckAuthorization')), 3)
        # SIGTERM: vfmigd drops the parked calls and exits 0 (leak-free under ASan).
        rc = self.daemon.stop()
        self.assertEqual(rc, 0, self.daemon.stderr)
        for h in hung:
            v = h.result()
            self.assertIn('error', v)
        self.daemon = start_daemon()

    def test_polkit_vanishing_means_denied(self):
        self.mock.hang([pt.ACTION_OPEN])
        hung = pt.PendingCall('nobody', self.path(), vt.DEVICE, 'OpenDevice')
        self.mock.wait_hanging()
        self.mock.proc.send_signal(signal.SIGKILL)
        v = hung.result()
        self.assertDenied(v, pt.ACTION_OPEN)
        self.assertIn('not available', v['message'])
        self.mock.stop()
        self.mock = pt.MockPolkit().start()


if __name__ == '__main__':
    vt.main()
