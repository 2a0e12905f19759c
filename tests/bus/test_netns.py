# SPDX-License-Identifier: LGPL-2.1-or-later
"""End to end across two hosts: two network namespaces joined by a veth pair.

Each "host" is a network namespace (named with this process's PID, so runs
never collide) with its own loopback, one end of a veth pair (10.77.X.1/24 on
A, 10.77.X.2/24 on B), its own private system bus (the project's test bus
config, so the shipped policy applies) and its own vfmigd in simulation mode
(host-a.json on A, host-b.json on B).  The bus sockets are filesystem paths,
so this process talks to both buses from the root namespace, while the
migration stream itself can only travel over the veth.

Checked: source profile on A -> FindCompatibleTargets on B -> Reserve on B ->
PrepareIncoming on B bound to B's veth address -> Migrate on A to that
endpoint: both jobs complete with Finished on both buses, equal byte counts,
the target's device memory equals the stopped source's (a pattern written on
A first), the reservation back to active.  The endpoint is not reachable from
the root namespace, and a wrong ticket sent across the veth is refused before
either device changes state (the right ticket then still works).  A group:
Manager.MigrateGroup of three devices on A into three reservations on B
(PrepareIncoming with the option "group"), every target device's memory
equal to its source's.

The test's own bus (from dbus-test-runner) is not used.  Needs root (ip netns).
"""
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import vfmigtest as vt
import test_jobs as tj
from gi.repository import GLib

SRC_DEV = '0000:17:00.1'
RESERVATION = tj.RESERVATION
JOB = tj.JOB
FINAL = tj.FINAL


def ip(*args, check=True):
    return subprocess.run(['ip'] + list(args), capture_output=True, text=True, timeout=30, check=check)


class NetnsHost(tj.Host):
    """A private bus and vfmigd, both inside network namespace `ns`."""

    def __init__(self, ns, host_file, tmp, cleanups):
        name = os.path.basename(host_file)
        d = os.path.join(tmp, ns)
        os.makedirs(os.path.join(d, 'state'))
        os.makedirs(os.path.join(d, 'cache'))
        self.ns = ns
        conf = os.path.join(vt.BUILD, 'tests', 'bus', 'system-bus.conf')
        # an explicit filesystem socket: reachable from the root namespace
        address = 'unix:path=' + os.path.join(d, 'bus')
        self.dbus = subprocess.Popen(['ip', 'netns', 'exec', ns, 'dbus-daemon', '--config-file=' + conf,
                                      '--address=' + address, '--nofork', '--print-address'],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        cleanups.append(self._stop_bus)
        printed = self.dbus.stdout.readline().strip()
        assert printed.startswith(address), f'dbus-daemon in {ns} gave {printed!r}'
        self.address = printed
        self.log_path = os.path.join(d, name + '.log')
        self.log = open(self.log_path, 'w')
        # `ip netns exec` and `env` both exec: the Popen pid is vfmigd's own
        self.proc = subprocess.Popen(['ip', 'netns', 'exec', ns, 'env',
                                      'DBUS_SYSTEM_BUS_ADDRESS=' + self.address,
                                      'STATE_DIRECTORY=' + os.path.join(d, 'state'),
                                      'CACHE_DIRECTORY=' + os.path.join(d, 'cache'),
                                      vt.VFMIGD, '--simulate', host_file, '--debug',
                                      '--rules', os.path.join(vt.SOURCE, 'data', 'compat.d'),
                                      '--admin-rules', '/nonexistent/compat.d',
                                      '--config', '/nonexistent/vfmigd.conf'],
                                     stdout=self.log, stderr=self.log)
        cleanups.append(self._kill_daemon)
        self.bus = tj.connect(self.address)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f'vfmigd in {ns} exited: {open(self.log_path).read()}'
            if self.bus.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
                                  'NameHasOwner', GLib.Variant('(s)', (vt.BUS_NAME,)), None,
                                  tj.Gio.DBusCallFlags.NONE, -1, None).unpack()[0]:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f'vfmigd in {ns} did not acquire its name')
        # the daemon really is in the namespace
        assert os.readlink(f'/proc/{self.proc.pid}/ns/net') != os.readlink('/proc/self/ns/net')
        self.finished = []
        self.bus.signal_subscribe(vt.BUS_NAME, JOB, 'Finished', None, None, tj.Gio.DBusSignalFlags.NONE,
                                  lambda c, s, path, i, m, p: self.finished.append((path, p.unpack())))

    def _kill_daemon(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if not self.log.closed:
            self.log.close()

    def _stop_bus(self):
        if self.dbus.poll() is None:
            self.dbus.terminate()
            try:
                self.dbus.wait(10)
            except subprocess.TimeoutExpired:
                self.dbus.kill()
                self.dbus.wait(10)
        self.dbus.stdout.close()


class Netns(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        t0 = time.monotonic()
        pid = os.getpid()
        x = pid % 250 + 1
        cls.ns_a, cls.ns_b = f'vfmig-a-{pid}', f'vfmig-b-{pid}'
        cls.addr_a, cls.addr_b = f'10.77.{x}.1', f'10.77.{x}.2'
        cls.tmp = tempfile.TemporaryDirectory(prefix='vfmig-netns-')
        cls.addClassCleanup(cls.tmp.cleanup)
        # run in reverse order: daemons and buses first, then the namespaces
        cleanups = []
        cls.addClassCleanup(lambda: [c() for c in reversed(cleanups)])
        for ns in (cls.ns_a, cls.ns_b):
            ip('netns', 'add', ns)
            cleanups.append(lambda ns=ns: ip('netns', 'del', ns, check=False))
        ip('link', 'add', 'veth-a', 'netns', cls.ns_a, 'type', 'veth', 'peer', 'name', 'veth-b', 'netns', cls.ns_b)
        for ns, dev, addr in ((cls.ns_a, 'veth-a', cls.addr_a), (cls.ns_b, 'veth-b', cls.addr_b)):
            ip('-n', ns, 'addr', 'add', addr + '/24', 'dev', dev)
            ip('-n', ns, 'link', 'set', dev, 'up')
            ip('-n', ns, 'link', 'set', 'lo', 'up')
        cls.src = NetnsHost(cls.ns_a, os.path.join(vt.SIM, 'host-a.json'), cls.tmp.name, cleanups)
        cls.dst = NetnsHost(cls.ns_b, os.path.join(vt.SIM, 'host-b.json'), cls.tmp.name, cleanups)
        print(f'netns setup ({cls.ns_a} {cls.addr_a} <-veth-> {cls.ns_b} {cls.addr_b}): '
              f'{time.monotonic() - t0:.2f} s', file=sys.stderr)

    @classmethod
    def tearDownClass(cls):
        rcs = (cls.src.stop(), cls.dst.stop())      # SIGTERM: a clean exit
        for host, rc in zip((cls.src, cls.dst), rcs):
            if rc != 0:     # say why: a sanitizer's report is in the log
                with open(host.log_path, errors='replace') as f:
                    tail = ''.join(f.readlines()[-120:])
                print(f'--- vfmigd in {host.ns} exited with {rc}; the end of its log:\n{tail}', file=sys.stderr)
        assert rcs == (0, 0), rcs

    def setUp(self):
        if self.src.state(SRC_DEV) != 'running':
            self.src.reset(SRC_DEV)
        self.reservation = None

    def tearDown(self):
        if self.reservation:
            try:
                self.dst.call(self.reservation, RESERVATION, 'Release')
            except GLib.Error:
                pass

    def profile(self):
        p = self.src.call(vt.ROOT_PATH, vt.MANAGER, 'GetMigrationProfile', '(s)', (SRC_DEV,))[0]
        return vt.profile_variants(p)

    def reserve(self):
        profile = self.profile()
        targets = self.dst.call(vt.ROOT_PATH, vt.MANAGER, 'FindCompatibleTargets', '(a{sv}a{sv})',
                                (profile, {'include-creatable': GLib.Variant('b', False)}))[0]
        usable = [t for t in targets if t[1] == 'device' and t[2] and t[4] > 0]
        self.assertTrue(usable, targets)
        self.target = usable[0][0]
        if self.dst.state(self.target) != 'running':     # left in stop by an earlier migration
            self.dst.reset(self.target)
        self.reservation = self.dst.call(vt.ROOT_PATH, vt.MANAGER, 'Reserve', '(sa{sv}a{sv})',
                                         (self.target, profile, {}))[0]
        return self.target

    def prepare(self):
        endpoint, ticket = self.dst.call(self.reservation, RESERVATION, 'PrepareIncoming', '(a{sv})',
                                         ({'address': GLib.Variant('s', self.addr_b)},))
        self.assertTrue(endpoint.startswith(self.addr_b + ':'), endpoint)
        self.assertEqual(self.dst.get(self.reservation, RESERVATION, 'State'), 'receiving')
        waiting = [p for p, j in self.dst.jobs().items() if j['State'] == 'waiting']
        self.assertEqual(len(waiting), 1)
        return endpoint, ticket, waiting[0]

    def wait_final(self, host, path, timeout=60):
        return tj.wait_until(lambda: host.job(path)['State'] in FINAL and host.job(path),
                             timeout=timeout, what=f'job {path}')

    def migrate(self, endpoint, ticket):
        return self.src.call(self.src.device(SRC_DEV), vt.DEVICE, 'Migrate', '(ssa{sv})', (endpoint, ticket, {}))[0]

    def test_migrate_across_veth(self):
        pattern = b'vfmig-netns-pattern-' * 1000
        self.src.write_memory(SRC_DEV, 4096, pattern)
        tgt = self.reserve()
        before = self.dst.memory(tgt)
        self.assertNotIn(pattern, before)
        endpoint, ticket, dst_job = self.prepare()
        t0 = time.monotonic()
        src_job = self.migrate(endpoint, ticket)
        s = self.wait_final(self.src, src_job)
        d = self.wait_final(self.dst, dst_job)
        wall = time.monotonic() - t0
        self.assertEqual((s['State'], s['Error']), ('completed', ''))
        self.assertEqual((d['State'], d['Error']), ('completed', ''))
        self.assertEqual(tj.wait_until(lambda: next((p for q, p in self.src.finished if q == src_job), None)),
                         ('completed', ''))
        self.assertEqual(tj.wait_until(lambda: next((p for q, p in self.dst.finished if q == dst_job), None)),
                         ('completed', ''))
        self.assertEqual((s['Kind'], d['Kind']), ('save', 'restore'))
        self.assertEqual((s['Devices'], d['Devices']), ([SRC_DEV], [tgt]))
        self.assertGreater(s['BytesTransferred'], tj.STATE_SIZE)
        self.assertEqual(d['BytesTransferred'], s['BytesTransferred'])
        self.assertEqual(self.src.state(SRC_DEV), 'stop')
        self.assertEqual(self.dst.state(tgt), 'stop')
        mem = self.src.memory(SRC_DEV)
        self.assertIn(pattern, mem)
        self.assertEqual(self.dst.memory(tgt), mem)
        self.assertEqual(self.dst.get(self.reservation, RESERVATION, 'State'), 'active')
        print(f'veth migration {SRC_DEV} -> {tgt} via {endpoint}: {s["BytesTransferred"]} bytes, '
              f'{s["Throughput"] / 1e6:.0f} MB/s, downtime {s["DowntimeMs"]} ms, wall {wall * 1000:.0f} ms',
              file=sys.stderr)

    def test_endpoint_only_reachable_over_veth(self):
        self.reserve()
        endpoint, ticket, dst_job = self.prepare()
        host, port = endpoint.rsplit(':', 1)
        # not from the root namespace: no route to B's veth address here
        with self.assertRaises(OSError):
            socket.create_connection((host, int(port)), timeout=2).close()
        # ... nor via the loopback of A's namespace (B listens on its veth address only)
        r = subprocess.run(['ip', 'netns', 'exec', self.ns_a, sys.executable, '-c',
                            'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2)',
                            port], capture_output=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(self.dst.job(dst_job)['State'], 'waiting')
        self.dst.call(dst_job, JOB, 'Cancel')
        self.assertEqual(self.wait_final(self.dst, dst_job)['State'], 'cancelled')
        self.assertEqual(self.dst.get(self.reservation, RESERVATION, 'State'), 'active')

    def test_wrong_ticket_refused_across_veth(self):
        tgt = self.reserve()
        endpoint, ticket, dst_job = self.prepare()
        src_job = self.migrate(endpoint, tj.random_ticket())
        s = self.wait_final(self.src, src_job)
        self.assertEqual(s['State'], 'failed')
        self.assertTrue(s['Error'].startswith('org.vfmig1.Error.AccessDenied'), s['Error'])
        self.assertIn('ticket', s['Error'])
        self.assertEqual(self.src.state(SRC_DEV), 'running')
        self.assertEqual(self.dst.state(tgt), 'running')
        tj.pump(0.2)
        self.assertEqual(self.dst.job(dst_job)['State'], 'waiting')
        # the right ticket still works
        src_job = self.migrate(endpoint, ticket)
        self.assertEqual(self.wait_final(self.src, src_job)['State'], 'completed')
        self.assertEqual(self.wait_final(self.dst, dst_job)['State'], 'completed')
        self.assertEqual(self.dst.memory(tgt), self.src.memory(SRC_DEV))

    def test_group_across_veth(self):
        pairs = [('0000:17:00.1', '0000:31:00.2'), ('0000:17:00.2', '0000:31:00.3'),
                 ('0000:ca:00.1', '0000:ca:00.1')]
        res = []
        try:
            for i, (a, b) in enumerate(pairs):
                if self.src.state(a) != 'running':
                    self.src.reset(a)
                if self.dst.state(b) != 'running':
                    self.dst.reset(b)
                self.src.write_memory(a, 8192, f'vfmig-netns-group-{i}-'.encode() * 300)
                p = self.src.call(vt.ROOT_PATH, vt.MANAGER, 'GetMigrationProfile', '(s)', (a,))[0]
                p = vt.profile_variants(p)
                res.append(self.dst.call(vt.ROOT_PATH, vt.MANAGER, 'Reserve', '(sa{sv}a{sv})', (b, p, {}))[0])
            endpoint, ticket = self.dst.call(res[0], RESERVATION, 'PrepareIncoming', '(a{sv})',
                                             ({'address': GLib.Variant('s', self.addr_b),
                                               'group': GLib.Variant('ao', res[1:])},))
            self.assertTrue(endpoint.startswith(self.addr_b + ':'), endpoint)
            dst_job = [p for p, j in self.dst.jobs().items() if j['State'] == 'waiting'][0]
            src_job = self.src.call(vt.ROOT_PATH, vt.MANAGER, 'MigrateGroup', '(asssa{sv})',
                                    ([a for a, _ in pairs], endpoint, ticket, {}))[0]
            s = self.wait_final(self.src, src_job)
            d = self.wait_final(self.dst, dst_job)
            self.assertEqual((s['State'], s['Error']), ('completed', ''))
            self.assertEqual((d['State'], d['Error']), ('completed', ''))
            self.assertEqual(s['Devices'], [a for a, _ in pairs])
            self.assertEqual(d['Devices'], [b for _, b in pairs])
            self.assertEqual(d['BytesTransferred'], s['BytesTransferred'])
            for i, (a, b) in enumerate(pairs):
                mem = self.src.memory(a)
                self.assertIn(f'vfmig-netns-group-{i}-'.encode(), mem)
                self.assertEqual(self.dst.memory(b), mem, f'{a} -> {b}')
                self.assertEqual((self.src.state(a), self.dst.state(b)), ('stop', 'stop'))
            for r in res:
                self.assertEqual(self.dst.get(r, RESERVATION, 'State'), 'active')
            print(f'veth group migration of {len(pairs)} via {endpoint}: {s["BytesTransferred"]} bytes, '
                  f'downtime {s["DowntimeMs"]} ms', file=sys.stderr)
        finally:
            for r in res:
                try:
                    self.dst.call(r, RESERVATION, 'Release')
                except GLib.Error:
                    pass
            for a, _ in pairs:
                if self.src.state(a) != 'running':
                    self.src.reset(a)



if __name__ == '__main__':
    vt.main()
