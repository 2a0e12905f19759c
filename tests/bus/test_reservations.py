# SPDX-License-Identifier: LGPL-2.1-or-later
"""Reservations: Manager.Reserve / ListReservations, Reservation objects.

The real vfmigd on the simulated host-a with STATE_DIRECTORY in a temporary
directory, the real polkitd with the project's policy and the test rules
(polkittest.TEST_RULES: members of the test group get every org.vfmig1
action).  Checked: exactly one of 100 concurrent Reserve calls wins; a
reservation ends when its owner disconnects (unless it persists), when its
lease runs out, or on Release; Renew extends it; the state file brings
reservations back after kill -9 (persistent ones; non-persistent ones only
while their owner is still connected to the same bus; expired ones never);
a broken state file is moved aside and the daemon runs; polkit decides who
may reserve, renew and release while queries stay open; no FDs leak;
vfmigctl reserve/reservations/renew/release.  Creatable mdev types (on the
shipped host-a and host-b): Reserve("PARENT/TYPE") creates one instance
(DeviceAdded, one slot less in ListMdevTypes, CreatedFrom), and every end of
the reservation (Release, owner gone, expiry, after kill -9 and a restart)
removes it again; no slot left is Busy; instances vfmigd did not create are
never removed.

the profile is one the host-a rules accept for its ConnectX-7 VFs (Reserve
re-checks compatibility; test_compat covers refusals).
"""
import json
import os
import signal
import stat
import subprocess
import tempfile
import time
import unittest

import polkittest as pt
import vfmigtest as vt
from gi.repository import Gio, GLib

HOST = os.path.join(vt.SOURCE, 'tests', 'data', 'hosts', 'reservations.json')
DEV = '0000:17:00.1'
OTHER_DEV = '0000:17:00.2'
THIRD_DEV = '0000:17:00.5'
FOURTH_DEV = '0000:17:00.6'
UNMANAGED_DEV = '0000:17:00.4'      # group in use on host-a: listed, not managed
ABSENT_DEV = '0000:99:00.7'
RESERVATION = 'org.vfmig1.Reservation'
PREFIX = '/org/vfmig1/reservation/'
ACTION_RESERVE = 'org.vfmig1.reserve'
STATE_FILE = 'reservations.json'

EXIT_USAGE, EXIT_ACCESS_DENIED, EXIT_BUSY, EXIT_NOT_RESERVED = 2, 4, 7, 8

PROFILE = {
    'format': GLib.Variant('u', 1),
    'migration-type': GLib.Variant('s', 'pci-15b3:mlx5-cx7'),
    'migration-version': GLib.Variant('s', '28.39.1002'),
    'attributes': GLib.Variant('a{ss}', {'fw_version': '28.39.1002', 'device_id': '0x101e'}),
    'capabilities': GLib.Variant('as', ['stop-copy', 'p2p']),
    'state-size': GLib.Variant('t', 4194304),
    'source-host': GLib.Variant('s', 'sim-host-b'),
}


def options(lease=None, persist=None, **extra):
    o = {}
    if lease is not None:
        o['lease-seconds'] = GLib.Variant('u', lease)
    if persist is not None:
        o['persist'] = GLib.Variant('b', persist)
    o.update(extra)
    return o


class Daemon(vt.Daemon):
    """vfmigd with its own state directory; its log goes to a file (a pipe
    nobody reads would block it)."""

    def __init__(self, state_dir, host=HOST):
        super().__init__(['--simulate', host, '--config', '/nonexistent/vfmigd.conf', '--debug',
                          '--rules', os.path.join(vt.SOURCE, 'data', 'compat.d'),
                          '--admin-rules', '/nonexistent/compat.d'],
                         env={'STATE_DIRECTORY': state_dir})
        self.log = tempfile.NamedTemporaryFile(mode='w+', prefix='vfmigd-', suffix='.log')

    def start(self, wait=True):
        self.proc = subprocess.Popen([vt.VFMIGD] + self.args, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True)
        if wait:
            self.wait_for_name()
        return self

    def output(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        rc = super().stop()
        self.stderr = self.output()
        return rc

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        pt.wait_for_name(vt.BUS_NAME, None, gone=True)


# A client in its own process (as any user) that keeps its bus connection
# while the test runs: one JSON command per stdin line, one JSON answer per
# stdout line; EOF on stdin closes the connection.
PEER = r'''
import json, os, sys
import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib
bus = Gio.DBusConnection.new_for_address_sync(
    os.environ['DBUS_SYSTEM_BUS_ADDRESS'],
    Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
print(json.dumps({'started': bus.get_unique_name()}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd[0] == 'reserve':
        # a{sv} values need their types: options (and a profile, if given)
        # come as {key: [type, value]}.
        _, target, opts, *prof = cmd
        path, iface, method = '/org/vfmig1', 'org.vfmig1.Manager', 'Reserve'
        profile = {'format': GLib.Variant('u', 1),
                   'migration-type': GLib.Variant('s', 'pci-15b3:mlx5-cx7'),
                   'migration-version': GLib.Variant('s', '28.39.1002'),
                   'attributes': GLib.Variant('a{ss}', {'fw_version': '28.39.1002', 'device_id': '0x101e'})}
        if prof:
            profile = {k: GLib.Variant(t, v) for k, (t, v) in prof[0].items()}
        args = GLib.Variant('(sa{sv}a{sv})', (target, profile,
                                               {k: GLib.Variant(t, v) for k, (t, v) in opts.items()}))
    else:
        _, path, iface, method, sig, args = cmd
        args = GLib.Variant(sig, tuple(args)) if sig else None
    try:
        reply = bus.call_sync('org.vfmig1', path, iface, method, args, None, Gio.DBusCallFlags.NONE, 60000, None)
        print(json.dumps({'ok': list(reply.unpack()) if reply else []}), flush=True)
    except GLib.Error as e:
        print(json.dumps({'error': Gio.DBusError.get_remote_error(e), 'message': e.message}), flush=True)
'''


class Peer:
    """A connected client process running as user ('root', 'nobody', pt.TEST_USER)."""

    def __init__(self, user='root'):
        argv = ['/usr/bin/python3', '-c', PEER]
        if user != 'root':
            uid, gid, groups = pt.user_ids(user)
            argv = ['setpriv', f'--reuid={uid}', f'--regid={gid}'] + groups + ['--'] + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd='/')
        line = self.proc.stdout.readline()
        assert line, f'peer did not start: {self.proc.stderr.read()}'
        self.unique_name = json.loads(line)['started']

    def call(self, path, iface, method, sig=None, args=()):
        return self.send(['call', path, iface, method, sig, list(args)])

    def send(self, cmd):
        self.write(cmd)
        return self.read()

    def write(self, cmd):
        self.proc.stdin.write(json.dumps(cmd) + '\n')
        self.proc.stdin.flush()

    def read(self):
        line = self.proc.stdout.readline()
        assert line, f'peer died: {self.proc.stderr.read()}'
        return json.loads(line)

    def reserve(self, target, lease=None, persist=None, profile=None):
        opts = {}
        if lease is not None:
            opts['lease-seconds'] = ['u', lease]
        if persist is not None:
            opts['persist'] = ['b', persist]
        if profile is not None:
            return self.send(['reserve', target, opts,
                              {k: [v.get_type_string(), v.unpack()] for k, v in profile.items()}])
        return self.send(['reserve', target, opts])

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def error_name(exc):
    return vt.dbus_error_name(exc)


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        pt.ensure_test_user()
        cls.polkitd = pt.PolkitD().start()
        cls.state = tempfile.TemporaryDirectory(prefix='vfmig-state-')
        cls.daemon = Daemon(cls.state.name).start()
        cls.client = vt.Client()

    @classmethod
    def tearDownClass(cls):
        rc = cls.daemon.stop()
        cls.polkitd.stop()
        cls.state.cleanup()
        assert rc == 0, cls.daemon.stderr

    def tearDown(self):
        # Every test starts with nothing reserved.
        for rid, target, path, owner, state, expires in self.list():
            try:
                self.client.call(path, RESERVATION, 'Release')
            except GLib.Error:
                pass

    # helpers

    def reserve(self, target=DEV, profile=None, opts=None, client=None):
        c = client or self.client
        return c.call(vt.ROOT_PATH, vt.MANAGER, 'Reserve', '(sa{sv}a{sv})',
                      (target, PROFILE if profile is None else profile, opts or {}))[0]

    def list(self):
        return self.client.manager('ListReservations')[0]

    def targets(self):
        return {target: rid for rid, target, *_ in self.list()}

    def props(self, path):
        return self.client.get_all(path, RESERVATION)

    def assertError(self, name, fn, *args, contains=None):
        with self.assertRaises(GLib.Error) as cm:
            fn(*args)
        self.assertEqual(error_name(cm.exception), name, cm.exception.message)
        if contains:
            for c in ([contains] if isinstance(contains, str) else contains):
                self.assertIn(c, cm.exception.message)
        return cm.exception.message

    def wait_gone(self, target, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if target not in self.targets():
                return
            time.sleep(0.05)
        self.fail(f'{target} still reserved: {self.list()}')

    def state_file(self):
        with open(os.path.join(self.state.name, STATE_FILE)) as f:
            return json.load(f)


class Reservations(Base):
    def test_reserve_and_properties(self):
        before = int(time.time() * 1e6)
        path = self.reserve(opts=options(lease=120))
        after = int(time.time() * 1e6)
        self.assertTrue(path.startswith(PREFIX), path)
        p = self.props(path)
        self.assertEqual(p['Id'], path[len(PREFIX):])
        self.assertRegex(p['Id'], r'^[0-9a-f]{32}$')
        self.assertEqual(p['Target'], DEV)
        self.assertEqual(p['Owner'], self.client.bus.get_unique_name())
        self.assertFalse(p['Persist'])
        self.assertEqual(p['State'], 'active')
        self.assertEqual(p['LeaseSeconds'], 120)
        self.assertTrue(before <= p['CreatedAt'] <= after)
        self.assertEqual(p['ExpiresAt'] - p['CreatedAt'], 120 * 1000000)
        # The profile comes back with the types the profile format documents.
        self.assertEqual(p['SourceProfile'], {k: v.unpack() for k, v in PROFILE.items()})
        raw = self.client.bus.call_sync(vt.BUS_NAME, path, 'org.freedesktop.DBus.Properties', 'Get',
                                        GLib.Variant('(ss)', (RESERVATION, 'SourceProfile')), None,
                                        Gio.DBusCallFlags.NONE, -1, None).get_child_value(0).get_variant()
        self.assertEqual({k: raw.lookup_value(k, None).get_type_string() for k in PROFILE},
                         {k: v.get_type_string() for k, v in PROFILE.items()})
        self.assertEqual(self.list(), [(p['Id'], DEV, path, p['Owner'], 'active', p['ExpiresAt'])])
        objs = self.client.managed_objects()
        self.assertIn(path, objs)
        self.assertEqual(objs[path][RESERVATION]['Target'], DEV)

    def test_default_lease_and_unknown_options(self):
        path = self.reserve(opts={'no-such-option': GLib.Variant('s', 'ignored')})
        p = self.props(path)
        self.assertEqual(p['LeaseSeconds'], 300)
        self.assertEqual(p['ExpiresAt'] - p['CreatedAt'], 300 * 1000000)

    def test_concurrent_reserve_one_winner(self):
        addr = os.environ['DBUS_SYSTEM_BUS_ADDRESS']
        flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION
        conns = [Gio.DBusConnection.new_for_address_sync(addr, flags, None, None) for _ in range(100)]
        results = []

        def done(conn, res, i):
            try:
                results.append((i, 'ok', conn.call_finish(res).unpack()[0]))
            except GLib.Error as e:
                results.append((i, error_name(e), e.message))

        for i, c in enumerate(conns):
            c.call(vt.BUS_NAME, vt.ROOT_PATH, vt.MANAGER, 'Reserve',
                   GLib.Variant('(sa{sv}a{sv})', (DEV, PROFILE, {})), None, Gio.DBusCallFlags.NONE, 60000,
                   None, done, i)
        ctx = GLib.MainContext.default()
        deadline = time.monotonic() + 60
        while len(results) < 100 and time.monotonic() < deadline:
            ctx.iteration(True)
        self.assertEqual(len(results), 100)
        winners = [r for r in results if r[1] == 'ok']
        busy = [r for r in results if r[1] == 'org.vfmig1.Error.Busy']
        self.assertEqual(len(winners), 1, results)
        self.assertEqual(len(busy), 99, [r for r in results if r[1] not in ('ok', 'org.vfmig1.Error.Busy')])
        wid = winners[0][2][len(PREFIX):]
        for _, _, message in busy:
            self.assertIn(wid, message)       # Busy names the holder
        self.assertEqual(self.targets(), {DEV: wid})
        self.assertEqual(self.props(winners[0][2])['Owner'], conns[winners[0][0]].get_unique_name())
        # The winner's connection goes away: its reservation with it.
        conns[winners[0][0]].close_sync(None)
        self.wait_gone(DEV)
        for c in conns:
            if not c.is_closed():
                c.close_sync(None)

    def test_owner_disconnect_releases(self):
        rec = vt.SignalRecorder(self.client.bus)
        try:
            peer = Peer('root')
            v = peer.reserve(DEV)
            path = v['ok'][0]
            rid = path[len(PREFIX):]
            rec.wait_for(lambda s: s[1] == 'ReservationAdded' and s[3] == (rid, DEV, path))
            self.assertEqual(self.props(path)['Owner'], peer.unique_name)
            peer.close()
            rec.wait_for(lambda s: s[1] == 'ReservationRemoved' and s[3] == (rid, DEV, path, 'owner-gone'))
            rec.wait_for(lambda s: s[1] == 'InterfacesRemoved' and s[3][0] == path)
            self.assertEqual(self.list(), [])
        finally:
            rec.close()

    def test_persist_survives_disconnect(self):
        peer = Peer('root')
        path = peer.reserve(DEV, persist=True)['ok'][0]
        owner = peer.unique_name
        peer.close()
        time.sleep(0.5)
        self.assertIn(DEV, self.targets())
        p = self.props(path)
        self.assertTrue(p['Persist'])
        self.assertEqual(p['Owner'], owner)
        self.client.call(path, RESERVATION, 'Release')
        self.assertEqual(self.list(), [])

    def test_expiry_releases(self):
        rec = vt.SignalRecorder(self.client.bus)
        try:
            path = self.reserve(opts=options(lease=1))
            rid = path[len(PREFIX):]
            rec.wait_for(lambda s: s[1] == 'ReservationRemoved' and s[3] == (rid, DEV, path, 'expired'), timeout=10)
            self.assertEqual(self.list(), [])
            self.assertError('org.vfmig1.Error.NotReserved', self.client.call, path, RESERVATION, 'Renew', '(u)',
                             (10,), contains=path)
            self.assertNotIn(rid, json.dumps(self.state_file()))
        finally:
            rec.close()

    def test_renew_extends(self):
        rec = vt.SignalRecorder(self.client.bus)
        try:
            path = self.reserve(opts=options(lease=2))
            first = self.props(path)['ExpiresAt']
            self.client.call(path, RESERVATION, 'Renew', '(u)', (60,))
            p = self.props(path)
            self.assertEqual(p['LeaseSeconds'], 60)
            self.assertGreaterEqual(p['ExpiresAt'] - first, 58 * 1000000)
            rec.wait_for(lambda s: s[1] == 'PropertiesChanged' and s[2] == path and 'ExpiresAt' in s[3][1])
            time.sleep(3)       # past the first lease
            self.assertIn(DEV, self.targets())
            # 0 renews by the reservation's own lease.
            before = self.props(path)['ExpiresAt']
            self.client.call(path, RESERVATION, 'Renew', '(u)', (0,))
            self.assertGreater(self.props(path)['ExpiresAt'], before)
            self.assertEqual(self.props(path)['LeaseSeconds'], 60)
            self.assertError('org.vfmig1.Error.InvalidArgs', self.client.call, path, RESERVATION, 'Renew', '(u)',
                             (86401,), contains='86401')
            entry = [e for e in self.state_file()['reservations'] if e['target'] == DEV][0]
            self.assertEqual(entry['expires-at'], self.props(path)['ExpiresAt'])
        finally:
            rec.close()

    def test_release_frees(self):
        path = self.reserve()
        self.assertError('org.vfmig1.Error.Busy', self.reserve, DEV, contains=path[len(PREFIX):])
        self.client.call(path, RESERVATION, 'Release')
        self.assertEqual(self.list(), [])
        self.assertError('org.vfmig1.Error.NotReserved', self.client.call, path, RESERVATION, 'Release')
        again = self.reserve()
        self.assertNotEqual(again, path)

    def test_distinct_devices(self):
        a = self.reserve(DEV)
        b = self.reserve(OTHER_DEV)
        self.assertNotEqual(a, b)
        self.assertEqual(set(self.targets()), {DEV, OTHER_DEV})
        self.assertEqual([t for _, t, *_ in self.list()], sorted([DEV, OTHER_DEV]))

    def test_typed_errors(self):
        self.assertError('org.vfmig1.Error.NoSuchDevice', self.reserve, ABSENT_DEV, contains=ABSENT_DEV)
        self.assertError('org.vfmig1.Error.InvalidArgs', self.reserve, 'bad name', contains='not valid')
        for bad in ('a/b/c', '0000:17:00.0/..', '../x', '/x', 'x/'):
            with self.subTest(target=bad):
                self.assertError('org.vfmig1.Error.InvalidArgs', self.reserve, bad, contains='not valid')
        # PARENT/TYPE is a creatable mdev type: unknown parents and types are no devices.
        self.assertError('org.vfmig1.Error.NoSuchDevice', self.reserve, 'bad/name', contains='"bad"')
        self.assertError('org.vfmig1.Error.NoSuchDevice', self.reserve, '0000:3b:00.0/nvidia-999',
                         contains='nvidia-999')
        self.assertError('org.vfmig1.Error.NotManaged', self.reserve, UNMANAGED_DEV, contains=UNMANAGED_DEV)
        for opts, needle in ((options(lease=0), '0 is out of range'),
                             (options(lease=86401), '86401 is out of range'),
                             ({'lease-seconds': GLib.Variant('s', '30')}, 'lease-seconds'),
                             ({'lease-seconds': GLib.Variant('t', 30)}, 'not t'),
                             ({'persist': GLib.Variant('u', 1)}, 'persist')):
            with self.subTest(opts=opts):
                self.assertError('org.vfmig1.Error.InvalidArgs', self.reserve, DEV, None, opts, contains=needle)
        deep = GLib.Variant('s', 'x')
        for _ in range(12):
            deep = GLib.Variant('av', [deep])
        self.assertError('org.vfmig1.Error.InvalidArgs', self.reserve, DEV, {'deep': deep}, contains='deep')
        self.assertError('org.vfmig1.Error.InvalidArgs', self.reserve, DEV,
                         {'migration-type': GLib.Variant('s', 'a\x01b')}, contains='migration-type')
        self.assertError('org.vfmig1.Error.NotReserved', self.client.call, PREFIX + '0' * 32, RESERVATION,
                         'Release')
        self.assertEqual(self.list(), [])

    def test_state_file(self):
        path = self.reserve(opts=options(lease=77, persist=True))
        st = os.stat(os.path.join(self.state.name, STATE_FILE))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        data = self.state_file()
        self.assertEqual(data['format'], 1)
        self.assertRegex(data['bus-id'], r'^[0-9a-f]{32}$')
        [e] = data['reservations']
        p = self.props(path)
        self.assertEqual((e['id'], e['target'], e['owner'], e['persist'], e['lease-seconds'], e['state']),
                         (p['Id'], DEV, p['Owner'], True, 77, 'active'))
        self.assertEqual((e['created-at'], e['expires-at']), (p['CreatedAt'], p['ExpiresAt']))
        self.assertEqual(e['profile']['migration-type'], 'pci-15b3:mlx5-cx7')
        # No temporary files left behind.
        self.assertEqual(sorted(os.listdir(self.state.name)), [STATE_FILE])

    def test_no_fd_leak(self):
        fd_dir = f'/proc/{self.daemon.proc.pid}/fd'
        self.client.call(self.reserve(), RESERVATION, 'Release')
        before = len(os.listdir(fd_dir))
        for i in range(30):
            path = self.reserve(opts=options(persist=bool(i % 2)))
            self.client.call(path, RESERVATION, 'Renew', '(u)', (30,))
            self.client.call(path, RESERVATION, 'Release')
        peers = [Peer('root') for _ in range(5)]
        for p, target in zip(peers, (DEV, OTHER_DEV, THIRD_DEV)):
            self.assertIn('ok', p.reserve(target))
        for p in peers:
            p.close()
        for t in (DEV, OTHER_DEV, THIRD_DEV):
            self.wait_gone(t)
        self.assertEqual(len(os.listdir(fd_dir)), before)


class Authorization(Base):
    """The real polkitd decides Reserve, Renew and Release (org.vfmig1.reserve)."""

    def test_outsider_is_refused_and_can_query(self):
        peer = Peer('nobody')
        try:
            v = peer.reserve(DEV)
            self.assertEqual(v.get('error'), 'org.vfmig1.Error.AccessDenied', v)
            self.assertIn(ACTION_RESERVE, v['message'])
            self.assertEqual(self.list(), [])
            # Someone else's reservation: queries work, changes are refused.
            path = self.reserve(opts=options(lease=60))
            v = peer.call(vt.ROOT_PATH, vt.MANAGER, 'ListReservations')
            self.assertEqual(v['ok'][0][0][1], DEV)
            v = peer.call(path, 'org.freedesktop.DBus.Properties', 'GetAll', '(s)', [RESERVATION])
            self.assertEqual(v['ok'][0]['Target'], DEV)
            for method, sig, args in (('Renew', '(u)', [30]), ('Release', None, [])):
                with self.subTest(method=method):
                    v = peer.call(path, RESERVATION, method, sig, args)
                    self.assertEqual(v.get('error'), 'org.vfmig1.Error.AccessDenied', v)
                    self.assertIn(ACTION_RESERVE, v['message'])
            self.assertEqual(self.props(path)['LeaseSeconds'], 60)
            self.assertIn(DEV, self.targets())
        finally:
            peer.close()
        r = vt.run_as_nobody([vt.VFMIGCTL, 'reservations'])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(DEV, r.stdout)

    def test_group_member_is_allowed(self):
        peer = Peer(pt.TEST_USER)
        try:
            path = peer.reserve(DEV, lease=60)['ok'][0]
            self.assertEqual(self.props(path)['Owner'], peer.unique_name)
            self.assertEqual(peer.call(path, RESERVATION, 'Renew', '(u)', [120]), {'ok': []})
            self.assertEqual(self.props(path)['LeaseSeconds'], 120)
            # Others' reservations too: polkit grants the group the action.
            other = self.reserve(OTHER_DEV)
            self.assertEqual(peer.call(other, RESERVATION, 'Release'), {'ok': []})
            self.assertEqual(peer.call(path, RESERVATION, 'Release'), {'ok': []})
            self.assertEqual(self.list(), [])
        finally:
            peer.close()

    def test_concurrent_through_polkit(self):
        """Twelve group members at once, each parked in polkit: one winner."""
        peers = [Peer(pt.TEST_USER) for _ in range(12)]
        try:
            for p in peers:
                p.write(['reserve', DEV, {}])
            verdicts = [p.read() for p in peers]
            ok = [v for v in verdicts if 'ok' in v]
            self.assertEqual(len(ok), 1, verdicts)
            self.assertEqual(sorted(v.get('error') for v in verdicts if 'ok' not in v),
                             ['org.vfmig1.Error.Busy'] * 11)
        finally:
            for p in peers:
                p.close()
        self.wait_gone(DEV)


class Restart(unittest.TestCase):
    """The state file across kill -9, and what a restart keeps."""

    @classmethod
    def setUpClass(cls):
        pt.ensure_test_user()
        cls.polkitd = pt.PolkitD().start()

    @classmethod
    def tearDownClass(cls):
        cls.polkitd.stop()

    def setUp(self):
        self.state = tempfile.TemporaryDirectory(prefix='vfmig-state-')
        self.daemon = None

    def tearDown(self):
        if self.daemon and self.daemon.proc:
            rc = self.daemon.stop()
            self.assertEqual(rc, 0, self.daemon.stderr)
        self.state.cleanup()

    def start(self):
        self.daemon = Daemon(self.state.name).start()
        self.client = vt.Client()
        return self.daemon

    def reserve(self, target, opts, client=None):
        return (client or self.client).call(vt.ROOT_PATH, vt.MANAGER, 'Reserve', '(sa{sv}a{sv})',
                                            (target, PROFILE, opts))[0]

    def targets(self):
        return {t: (rid, owner) for rid, t, path, owner, state, exp in
                self.client.manager('ListReservations')[0]}

    def test_kill9_restores(self):
        self.start()
        owner_stays = vt.Client()          # keeps its connection over the restart
        owner_leaves = Peer('root')        # leaves while vfmigd is down
        owner_persist = Peer('root')       # leaves before the restart; persists
        kept = self.reserve(DEV, options(lease=600), owner_stays)
        dropped = owner_leaves.reserve(OTHER_DEV, lease=600)['ok'][0]
        persistent = owner_persist.reserve(THIRD_DEV, lease=600, persist=True)['ok'][0]
        owner_persist.close()
        expiring = self.reserve(FOURTH_DEV, options(lease=2, persist=True))
        before = {t: self.client.get_all(p, RESERVATION) for t, p in
                  ((DEV, kept), (THIRD_DEV, persistent))}

        self.daemon.kill9()
        owner_leaves.close()
        time.sleep(2.5)                     # the short lease runs out while vfmigd is down
        self.daemon.start()

        targets = self.targets()
        self.assertEqual(set(targets), {DEV, THIRD_DEV}, self.daemon.output())
        for t, path in ((DEV, kept), (THIRD_DEV, persistent)):
            after = self.client.get_all(path, RESERVATION)
            self.assertEqual(after, before[t])
        self.assertIn('expired while vfmigd was not running', self.daemon.output())
        self.assertIn('left while vfmigd was not running', self.daemon.output())
        self.assertNotIn(dropped[len(PREFIX):], open(os.path.join(self.state.name, STATE_FILE)).read())
        # The kept non-persistent one is tracked again: its owner leaving ends it.
        owner_stays.bus.close_sync(None)
        deadline = time.monotonic() + 10
        while DEV in self.targets() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(set(self.targets()), {THIRD_DEV})
        self.client.call(persistent, RESERVATION, 'Release')

    def test_other_bus_instance(self):
        """Unique names of another bus instance mean nothing: only persistent ones stay."""
        self.start()
        path = self.reserve(DEV, options(lease=600))
        self.reserve(OTHER_DEV, options(lease=600, persist=True))
        self.daemon.stop()
        f = os.path.join(self.state.name, STATE_FILE)
        with open(f) as fh:
            data = json.load(fh)
        self.assertTrue(any(e['owner'] == self.client.bus.get_unique_name() for e in data['reservations']))
        data['bus-id'] = '0' * 32
        with open(f, 'w') as fh:
            json.dump(data, fh)
        self.start()
        self.assertEqual(set(self.targets()), {OTHER_DEV})
        self.assertIn('was on another bus instance', self.daemon.output())
        self.assertNotIn(path[len(PREFIX):], open(f).read())

    def test_restart_rewrites_only_a_changed_set(self):
        """A restart on the same bus with nothing changed leaves the file alone."""
        self.start()
        path = self.reserve(DEV, options(lease=600, persist=True))
        f = os.path.join(self.state.name, STATE_FILE)
        written = os.stat(f).st_ino          # each write is a new file renamed over the old
        self.daemon.stop()
        self.start()
        self.assertEqual(set(self.targets()), {DEV})
        self.assertEqual(os.stat(f).st_ino, written, 'an unchanged set was written again')
        # A file removed behind vfmigd's back is written again at the next start,
        # the set unchanged ...
        self.daemon.stop()
        os.unlink(f)
        self.start()
        self.assertEqual(set(self.targets()), set())     # (not restored: the file was gone)
        self.assertTrue(os.path.exists(f))
        path = self.reserve(DEV, options(lease=600, persist=True))
        # ... and at the next change.
        os.unlink(f)
        self.reserve(OTHER_DEV, options(lease=600, persist=True))
        with open(f) as fh:
            self.assertEqual({e['target'] for e in json.load(fh)['reservations']}, {DEV, OTHER_DEV})
        written = os.stat(f).st_ino
        self.client.call(path, RESERVATION, 'Release')
        self.assertNotEqual(os.stat(f).st_ino, written)
        with open(f) as fh:
            self.assertEqual({e['target'] for e in json.load(fh)['reservations']}, {OTHER_DEV})

    def test_corrupt_state_file(self):
        f = os.path.join(self.state.name, STATE_FILE)
        with open(f, 'w') as fh:
            fh.write('{"format": 1, "reservations": [ this is not json')
        self.start()
        self.assertEqual(self.targets(), {})
        self.assertIn('unusable', self.daemon.output())
        self.assertTrue(os.path.exists(f + '.corrupt'))
        path = self.reserve(DEV, options(persist=True))
        with open(f) as fh:
            self.assertEqual(json.load(fh)['reservations'][0]['id'], path[len(PREFIX):])

    def test_bad_entries_are_dropped(self):
        now = int(time.time() * 1e6)
        good = {'id': 'a' * 32, 'target': DEV, 'owner': ':1.999', 'persist': True, 'lease-seconds': 600,
                'created-at': now, 'expires-at': now + 600 * 10**6, 'state': 'receiving',
                'profile': {'format': 1}}
        bad = [dict(good, id='b' * 32, target='../etc'), dict(good, id='NOTHEX'), dict(good, id='c' * 32),
               dict(good, id='d' * 32, target=OTHER_DEV, **{'lease-seconds': 0}), 'not an object']
        with open(os.path.join(self.state.name, STATE_FILE), 'w') as fh:
            json.dump({'format': 1, 'bus-id': '', 'reservations': [good] + bad}, fh)
        self.start()
        self.assertEqual(self.targets(), {DEV: ('a' * 32, ':1.999')})
        # An incoming stream does not survive a restart: back to active.
        self.assertEqual(self.client.get(PREFIX + 'a' * 32, RESERVATION, 'State'), 'active')
        self.assertEqual(self.daemon.output().count('; dropped'), len(bad), self.daemon.output())
        self.client.call(PREFIX + 'a' * 32, RESERVATION, 'Release')


def vfmigctl(*args, user='root', **kw):
    argv = [vt.VFMIGCTL] + list(args)
    if user != 'root':
        uid, gid, groups = pt.user_ids(user)
        argv = ['setpriv', f'--reuid={uid}', f'--regid={gid}'] + groups + ['--'] + argv
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)


class Compatibility(Base):
    def test_reserve_rechecks_compatibility(self):
        newer = dict(PROFILE)
        newer['migration-version'] = GLib.Variant('s', '28.41.1000')
        newer['attributes'] = GLib.Variant('a{ss}', {'fw_version': '28.41.1000', 'device_id': '0x101e'})
        with self.assertRaises(GLib.Error) as cm:
            self.reserve(DEV, newer)
        self.assertEqual(vt.dbus_error_name(cm.exception), 'org.vfmig1.Error.NotCompatible')
        self.assertIn('older than source firmware 28.41', cm.exception.message)
        with self.assertRaises(GLib.Error) as cm:
            self.reserve(DEV, {'format': GLib.Variant('u', 1)})
        self.assertEqual(vt.dbus_error_name(cm.exception), 'org.vfmig1.Error.InvalidArgs')
        self.assertIn('migration-type', cm.exception.message)
        self.assertEqual(self.targets(), {})
        r = vfmigctl('reserve', DEV, '--profile', '/nonexistent.json')
        self.assertNotEqual(r.returncode, 0)


class Vfmigctl(Base):
    def test_reserve_persist_list_renew_release(self):
        with tempfile.NamedTemporaryFile('w', suffix='.json') as f:
            json.dump({'format': 1, 'migration-type': 'pci-15b3:mlx5-cx7', 'migration-version': '28.39.1002',
                       'attributes': {'fw_version': '28.39.1002', 'device_id': '0x101e'},
                       'capabilities': ['stop-copy'], 'state-size': 4096}, f)
            f.flush()
            r = vfmigctl('reserve', DEV, '--profile', f.name, '--lease', '90', '--persist')
        self.assertEqual(r.returncode, 0, r.stderr)
        rid = r.stdout.split()[0]
        self.assertRegex(rid, r'^[0-9a-f]{32}$')
        path = PREFIX + rid
        p = self.props(path)
        self.assertEqual((p['Target'], p['LeaseSeconds'], p['Persist']), (DEV, 90, True))
        self.assertEqual(p['SourceProfile']['state-size'], 4096)
        self.assertEqual(p['SourceProfile']['attributes'], {'fw_version': '28.39.1002', 'device_id': '0x101e'})

        r = vfmigctl('--json=short', 'reservations')
        self.assertEqual(r.returncode, 0, r.stderr)
        [j] = json.loads(r.stdout)
        self.assertEqual((j['id'], j['target'], j['persist'], j['lease-seconds'], j['object-path']),
                         (rid, DEV, True, 90, path))
        self.assertEqual(j['source-profile']['migration-type'], 'pci-15b3:mlx5-cx7')
        r = vfmigctl('reservations')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(rid, r.stdout)
        self.assertIn('ID', r.stdout.splitlines()[0])

        r = vfmigctl('renew', rid, '--lease', '600')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.props(path)['LeaseSeconds'], 600)
        r = vfmigctl('reserve', DEV, '--persist')
        self.assertEqual(r.returncode, EXIT_BUSY, r.stderr)
        self.assertIn(rid, r.stderr)
        r = vfmigctl('release', rid, user='nobody')
        self.assertEqual(r.returncode, EXIT_ACCESS_DENIED, r.stderr)
        r = vfmigctl('release', rid)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.list(), [])
        r = vfmigctl('release', rid)
        self.assertEqual(r.returncode, EXIT_NOT_RESERVED, r.stderr)
        self.assertIn(rid, r.stderr)
        r = vfmigctl('renew', 'not-an-id')
        self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
        r = vfmigctl('reserve', DEV, '--lease', 'soon')
        self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
        r = vfmigctl('devices', '--lease', '5')
        self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)

    def test_reserve_holds_while_running(self):
        proc = subprocess.Popen([vt.VFMIGCTL, 'reserve', DEV, '--profile', '-'], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdin.write('{"format": 1, "migration-type": "pci-15b3:mlx5-cx7", "migration-version": "28.39.1002", '
                         '"attributes": {"fw_version": "28.39.1002", "device_id": "0x101e"}}')
        proc.stdin.close()
        line = proc.stdout.readline()
        try:
            self.assertTrue(line.strip(), proc.stderr.read() if proc.poll() is not None else 'no output')
            rid = line.split()[0]
            self.assertEqual(self.targets(), {DEV: rid})
            self.assertEqual(self.props(PREFIX + rid)['SourceProfile']['migration-type'], 'pci-15b3:mlx5-cx7')
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            err = proc.stderr.read()
            proc.stdout.close()
            proc.stderr.close()
        self.assertEqual(proc.returncode, 0, err)
        self.wait_gone(DEV)
        # It also ends when the reservation does (here: released by someone else).
        # Without a profile there is nothing to check compatibility against.
        r = vfmigctl('reserve', DEV, '--lease', '60')
        self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
        self.assertIn('Invalid profile', r.stderr)
        proc = subprocess.Popen([vt.VFMIGCTL, 'reserve', DEV, '--lease', '60', '--profile', '-'],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.PIPE)
        proc.stdin.write(json.dumps({k: v.unpack() for k, v in PROFILE.items()}))
        proc.stdin.close()
        rid = proc.stdout.readline().split()[0]
        self.client.call(PREFIX + rid, RESERVATION, 'Release')
        proc.wait(timeout=30)
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
        self.assertEqual(proc.returncode, 1, err)
        self.assertIn('released', err)


# --- creatable mdev types ------------------------------------------------------

HOST_A = os.path.join(vt.SIM, 'host-a.json')
HOST_B = os.path.join(vt.SIM, 'host-b.json')
T4_B = '0000:af:00.0'                      # host-b's Tesla T4: nvidia-222/223/230
T4_A = '0000:3b:00.0'                      # host-a's
KEY_B = f'{T4_B}/nvidia-223'               # 8 available on host-b
KEY_A = f'{T4_A}/nvidia-223'               # 7 available on host-a (one instance exists)
FULL_A = f'{T4_A}/nvidia-230'              # 0 available on host-a
VGPU_A = '6f1a3c52-4b0e-4c1e-9a55-0d2b8e5f7a01'   # host-a's existing nvidia-223 instance
UUID_RE = r'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'

# What host-a's VGPU_A reports (GetMigrationProfile on sim-host-a).
VGPU_PROFILE = {
    'format': GLib.Variant('u', 1),
    'migration-type': GLib.Variant('s', 'pci-10de:nvidia-223'),
    'migration-version': GLib.Variant('s', '535.129.03'),
    'attributes': GLib.Variant('a{ss}', {'vgpu_driver_version': '535.129.03', 'gpu_device_id': '0x1eb8'}),
    'capabilities': GLib.Variant('as', ['stop-copy', 'p2p']),
    'source-host': GLib.Variant('s', 'sim-host-a'),
    'source-device': GLib.Variant('s', VGPU_A),
}
# The same from another host, so that VGPU_A itself is a target on host-a.
VGPU_PROFILE_OTHER = dict(VGPU_PROFILE, **{'source-host': GLib.Variant('s', 'sim-host-c'),
                                           'source-device': GLib.Variant('s', 'c0ffee00-0000-4000-8000-000000000001')})


class CreatableBase(unittest.TestCase):
    """One vfmigd on a shipped simulated host; nothing reserved between tests."""
    HOST = HOST_B

    @classmethod
    def setUpClass(cls):
        pt.ensure_test_user()
        cls.polkitd = pt.PolkitD().start()
        cls.state = tempfile.TemporaryDirectory(prefix='vfmig-state-')
        cls.daemon = Daemon(cls.state.name, cls.HOST).start()
        cls.client = vt.Client()

    @classmethod
    def tearDownClass(cls):
        rc = cls.daemon.stop()
        cls.polkitd.stop()
        cls.state.cleanup()
        assert rc == 0, cls.daemon.stderr

    def setUp(self):
        self.rec = vt.SignalRecorder(self.client.bus)

    def tearDown(self):
        self.rec.close()
        for rid, target, path, *_ in self.client.manager('ListReservations')[0]:
            try:
                self.client.call(path, RESERVATION, 'Release')
            except GLib.Error:
                pass

    def reserve(self, target, profile=VGPU_PROFILE, opts=None):
        return self.client.call(vt.ROOT_PATH, vt.MANAGER, 'Reserve', '(sa{sv}a{sv})',
                                (target, profile, opts or {}))[0]

    def available(self, key):
        parent, type_ = key.split('/')
        return {(t[0], t[2]): t[6] for t in self.client.manager('ListMdevTypes')[0]}[(parent, type_)]

    def mdevs(self):
        return {n for n, (kind, _, _) in self.client.devices().items() if kind == 'mdev'}

    def device(self, name):
        return self.client.get_all(self.client.manager('GetDevice', '(s)', (name,))[0], vt.DEVICE)

    def wait_signal(self, member, name, timeout=10):
        return self.rec.wait_for(lambda s: s[0] == vt.MANAGER and s[1] == member and s[3][0] == name,
                                 timeout=timeout)

    def wait_available(self, key, n, timeout=10):
        deadline = time.monotonic() + timeout
        while self.available(key) != n and time.monotonic() < deadline:
            self.rec.pump(0.05)
        self.assertEqual(self.available(key), n)

    def assertError(self, name, fn, *args, contains=()):
        with self.assertRaises(GLib.Error) as cm:
            fn(*args)
        self.assertEqual(error_name(cm.exception), name, cm.exception.message)
        for c in ([contains] if isinstance(contains, str) else contains):
            self.assertIn(c, cm.exception.message)
        return cm.exception.message

    def reserve_created(self, key=KEY_B, profile=VGPU_PROFILE, opts=None):
        """Reserve key; check the instance appeared as a managed device of
        the type with one slot less.  Returns (path, uuid)."""
        avail = self.available(key)
        before = self.mdevs()
        path = self.reserve(key, profile, opts)
        p = self.client.get_all(path, RESERVATION)
        uuid = p['Target']
        self.assertRegex(uuid, UUID_RE)
        self.assertEqual(p['CreatedFrom'], key)
        self.assertNotIn(uuid, before)
        self.wait_signal('DeviceAdded', uuid)
        self.assertEqual(self.mdevs(), before | {uuid})
        dev = self.device(uuid)
        parent, type_ = key.split('/')
        self.assertEqual((dev['Kind'], dev['MdevType'], dev['Parent'], dev['Status']),
                         ('mdev', type_, parent, 'managed'), dev['StatusMessage'])
        self.assertIn('stop-copy', dev['MigrationFlags'])
        self.assertEqual(self.available(key), avail - 1)
        return path, uuid

    def assertRemoved(self, uuid, key, avail, timeout=10):
        self.wait_signal('DeviceRemoved', uuid, timeout=timeout)
        self.assertNotIn(uuid, self.mdevs())
        self.assertError('org.vfmig1.Error.NoSuchDevice', self.client.manager, 'GetDevice', '(s)', (uuid,))
        self.wait_available(key, avail)


class Creatable(CreatableBase):
    """host-b: Reserve("0000:af:00.0/nvidia-223") with host-a's vGPU profile."""

    def test_reserve_creates_release_removes(self):
        avail = self.available(KEY_B)
        self.assertEqual(avail, 8)
        path, uuid = self.reserve_created()
        rid = path[len(PREFIX):]
        self.rec.wait_for(lambda s: s[1] == 'ReservationAdded' and s[3] == (rid, uuid, path))
        self.rec.wait_for(lambda s: s[0] == vt.MANAGER and s[1] == 'MdevTypesChanged')
        self.assertEqual([(t, p) for _, t, p, *_ in self.client.manager('ListReservations')[0]], [(uuid, path)])
        # The instance has its parent's identity and a profile of the type.
        dev = self.device(uuid)
        self.assertEqual((dev['VendorId'], dev['DeviceId']), (0x10de, 0x1eb8))
        self.assertEqual(dev['Profile']['migration-type'], 'pci-10de:nvidia-223')
        # It is reserved: not handed out twice, not offered; the type still is, with one slot less.
        self.assertError('org.vfmig1.Error.Busy', self.reserve, uuid, contains=rid)
        found = self.client.manager('FindCompatibleTargets', '(a{sv}a{sv})', (VGPU_PROFILE, {}))[0]
        self.assertEqual([(r[0], r[1], r[4]) for r in found], [(KEY_B, 'creatable', avail - 1)])
        # The state file knows where the instance came from.
        with open(os.path.join(self.state.name, STATE_FILE)) as f:
            [e] = json.load(f)['reservations']
        self.assertEqual((e['id'], e['target'], e['created-from']), (rid, uuid, KEY_B))

        self.rec.clear()
        self.client.call(path, RESERVATION, 'Release')
        self.rec.wait_for(lambda s: s[1] == 'ReservationRemoved' and s[3] == (rid, uuid, path, 'released'))
        self.assertRemoved(uuid, KEY_B, avail)
        self.assertIn(f'Removed mdev instance {uuid} of {KEY_B}', self.daemon.output())

    def test_each_reservation_its_own_instance(self):
        a_path, a = self.reserve_created()
        b_path, b = self.reserve_created()
        self.assertNotEqual(a, b)
        self.client.call(a_path, RESERVATION, 'Release')
        self.assertRemoved(a, KEY_B, 7)
        self.assertIn(b, self.mdevs())
        self.client.call(b_path, RESERVATION, 'Release')
        self.assertRemoved(b, KEY_B, 8)

    def test_no_slot_left_is_busy(self):
        made = [self.reserve_created() for _ in range(8)]
        self.assertEqual(self.available(KEY_B), 0)
        before = self.mdevs()
        msg = self.assertError('org.vfmig1.Error.Busy', self.reserve, KEY_B,
                               contains=[KEY_B, '0 available instances'])
        self.assertNotIn('cannot resume', msg)
        self.assertEqual(self.mdevs(), before)
        self.assertEqual(len(self.client.manager('ListReservations')[0]), 8)
        for path, uuid in made:
            self.client.call(path, RESERVATION, 'Release')
        for path, uuid in made:
            self.wait_signal('DeviceRemoved', uuid)
        self.wait_available(KEY_B, 8)

    def test_refusals_create_nothing(self):
        before, avail = self.mdevs(), self.available(KEY_B)
        # another vGPU type: the compatibility check refuses before anything is created
        self.assertError('org.vfmig1.Error.NotCompatible', self.reserve, f'{T4_B}/nvidia-222',
                         contains='nvidia-vgpu')
        self.assertError('org.vfmig1.Error.NoSuchDevice', self.reserve, f'{T4_B}/nvidia-999',
                         contains=['nvidia-999', T4_B])
        self.assertError('org.vfmig1.Error.NoSuchDevice', self.reserve, '0000:99:00.0/nvidia-223',
                         contains='0000:99:00.0')
        self.assertError('org.vfmig1.Error.InvalidArgs', self.reserve, KEY_B, {'format': GLib.Variant('u', 1)},
                         contains='migration-type')
        self.assertEqual(self.mdevs(), before)
        self.assertEqual(self.available(KEY_B), avail)
        self.assertEqual(self.client.manager('ListReservations')[0], [])

    def test_owner_disconnect_removes(self):
        avail = self.available(KEY_B)
        peer = Peer('root')
        try:
            v = peer.reserve(KEY_B, profile=VGPU_PROFILE)
            path = v['ok'][0]
            uuid = self.client.get(path, RESERVATION, 'Target')
            self.wait_signal('DeviceAdded', uuid)
            self.assertEqual(self.available(KEY_B), avail - 1)
        finally:
            peer.close()
        self.rec.wait_for(lambda s: s[1] == 'ReservationRemoved' and s[3][1] == uuid and s[3][3] == 'owner-gone')
        self.assertRemoved(uuid, KEY_B, avail)

    def test_persist_keeps_instance_after_disconnect(self):
        peer = Peer('root')
        try:
            path = peer.reserve(KEY_B, persist=True, profile=VGPU_PROFILE)['ok'][0]
        finally:
            peer.close()
        uuid = self.client.get(path, RESERVATION, 'Target')
        self.rec.pump(0.5)
        self.assertIn(uuid, self.mdevs())
        self.client.call(path, RESERVATION, 'Release')
        self.assertRemoved(uuid, KEY_B, 8)

    def test_expiry_removes(self):
        path, uuid = self.reserve_created(opts=options(lease=1))
        self.rec.wait_for(lambda s: s[1] == 'ReservationRemoved' and s[3][1] == uuid and s[3][3] == 'expired',
                          timeout=10)
        self.assertRemoved(uuid, KEY_B, 8)


class CreatableHostA(CreatableBase):
    """host-a: a type without free slots, and an instance vfmigd did not create."""
    HOST = HOST_A

    def test_no_available_instances_is_busy(self):
        self.assertEqual(self.available(FULL_A), 0)
        before = self.mdevs()
        self.assertError('org.vfmig1.Error.Busy', self.reserve, FULL_A,
                         contains=[FULL_A, '0 available instances'])
        self.assertEqual(self.mdevs(), before)
        self.assertEqual(self.client.manager('ListReservations')[0], [])

    def test_preexisting_instance_is_never_removed(self):
        self.assertIn(VGPU_A, self.mdevs())
        # Reserved by name: CreatedFrom is empty, and releasing leaves it.
        path = self.reserve(VGPU_A, VGPU_PROFILE_OTHER)
        self.assertEqual(self.client.get(path, RESERVATION, 'CreatedFrom'), '')
        self.client.call(path, RESERVATION, 'Release')
        self.rec.pump(0.3)
        self.assertIn(VGPU_A, self.mdevs())
        self.assertFalse([s for s in self.rec.signals if s[1] == 'DeviceRemoved'])
        # A created instance of the same type goes; the existing one stays.
        path, uuid = self.reserve_created(KEY_A, VGPU_PROFILE_OTHER)
        self.assertEqual(self.available(KEY_A), 6)
        self.client.call(path, RESERVATION, 'Release')
        self.assertRemoved(uuid, KEY_A, 7)
        self.assertIn(VGPU_A, self.mdevs())
        self.assertEqual([s[3][0] for s in self.rec.signals if s[1] == 'DeviceRemoved'], [uuid])


class CreatableRestart(unittest.TestCase):
    """Created instances across kill -9: the reservation still removes its instance."""

    @classmethod
    def setUpClass(cls):
        pt.ensure_test_user()
        cls.polkitd = pt.PolkitD().start()

    @classmethod
    def tearDownClass(cls):
        cls.polkitd.stop()

    def setUp(self):
        self.state = tempfile.TemporaryDirectory(prefix='vfmig-state-')
        self.daemon = None

    def tearDown(self):
        if self.daemon and self.daemon.proc:
            rc = self.daemon.stop()
            self.assertEqual(rc, 0, self.daemon.stderr)
        self.state.cleanup()

    def start(self, host=HOST_B):
        self.daemon = Daemon(self.state.name, host).start()
        self.client = vt.Client()

    def reserve(self, target, opts):
        return self.client.call(vt.ROOT_PATH, vt.MANAGER, 'Reserve', '(sa{sv}a{sv})',
                                (target, VGPU_PROFILE, opts))[0]

    def available(self):
        return {(t[0], t[2]): t[6] for t in self.client.manager('ListMdevTypes')[0]}[(T4_B, 'nvidia-223')]

    def mdevs(self):
        return {n for n, (kind, _, _) in self.client.devices().items() if kind == 'mdev'}

    def test_kill9_restart_then_release_removes(self):
        self.start()
        kept = self.reserve(KEY_B, options(lease=600, persist=True))
        expiring = self.reserve(KEY_B, options(lease=2, persist=True))
        kept_uuid = self.client.get(kept, RESERVATION, 'Target')
        expiring_uuid = self.client.get(expiring, RESERVATION, 'Target')
        before = self.client.get_all(kept, RESERVATION)
        self.assertEqual(self.available(), 6)

        self.daemon.kill9()
        time.sleep(2.5)                 # the short lease runs out while vfmigd is down
        self.daemon.start()

        # The instance outlives vfmigd (on the simulated host as on a real
        # one); the one whose reservation expired meanwhile is removed.
        self.assertEqual(self.client.get_all(kept, RESERVATION), before)
        self.assertEqual(before['CreatedFrom'], KEY_B)
        self.assertEqual(self.mdevs(), {kept_uuid})
        self.assertEqual(self.available(), 7)
        out = self.daemon.output()
        self.assertIn('expired while vfmigd was not running', out)
        self.assertNotIn(expiring_uuid, [t for _, t, *_ in self.client.manager('ListReservations')[0]])

        rec = vt.SignalRecorder(self.client.bus)
        try:
            self.client.call(kept, RESERVATION, 'Release')
            rec.wait_for(lambda s: s[1] == 'DeviceRemoved' and s[3][0] == kept_uuid)
        finally:
            rec.close()
        self.assertEqual(self.mdevs(), set())
        self.assertEqual(self.available(), 8)
        with open(os.path.join(self.state.name, STATE_FILE)) as f:
            self.assertEqual(json.load(f)['reservations'], [])

    def test_restart_ends_unverifiable_owner_and_removes(self):
        """A non-persistent reservation whose owner left while vfmigd was down
        ends at the restart, and its instance with it."""
        self.start()
        peer = Peer('root')
        path = peer.reserve(KEY_B, lease=600, profile=VGPU_PROFILE)['ok'][0]
        uuid = self.client.get(path, RESERVATION, 'Target')
        self.daemon.kill9()
        peer.close()
        self.daemon.start()
        self.assertEqual(self.client.manager('ListReservations')[0], [])
        self.assertEqual(self.mdevs(), set())
        self.assertEqual(self.available(), 8)
        self.assertIn(f'Removed mdev instance {uuid}', self.daemon.output())

    def test_forged_created_from_never_removes_others(self):
        """A state entry claiming vfmigd created host-a's existing instance
        from another type: releasing it leaves the instance alone."""
        now = int(time.time() * 1e6)
        entry = {'id': 'e' * 32, 'target': VGPU_A, 'created-from': f'{T4_A}/nvidia-222', 'owner': ':1.999',
                 'persist': True, 'lease-seconds': 600, 'created-at': now, 'expires-at': now + 600 * 10**6,
                 'state': 'active', 'profile': {'format': 1}}
        with open(os.path.join(self.state.name, STATE_FILE), 'w') as fh:
            json.dump({'format': 1, 'bus-id': '', 'reservations': [entry]}, fh)
        self.start(HOST_A)
        path = PREFIX + 'e' * 32
        self.assertEqual(self.client.get(path, RESERVATION, 'CreatedFrom'), f'{T4_A}/nvidia-222')
        self.client.call(path, RESERVATION, 'Release')
        time.sleep(0.3)
        self.assertIn(VGPU_A, self.mdevs())
        self.assertIn('left alone', self.daemon.output())
        # A malformed created-from drops the entry.
        with open(os.path.join(self.state.name, STATE_FILE), 'w') as fh:
            json.dump({'format': 1, 'bus-id': '', 'reservations': [dict(entry, **{'created-from': '../x'})]}, fh)
        self.daemon.stop()
        self.start(HOST_A)
        self.assertEqual(self.client.manager('ListReservations')[0], [])
        self.assertIn('bad "created-from"; dropped', self.daemon.output())


if __name__ == '__main__':
    vt.main()
