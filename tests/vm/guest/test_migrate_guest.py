#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Migration of a real vfmig_testmdev instance between two vfmigd daemons
(run by `vfmigd-test.sh migrate` inside the test VM).

Two "hosts" in one guest: daemon A (source) on the bus vfmigd-test.sh
started, daemon B (target) on a second private dbus-daemon with the same
configuration (so the shipped policy applies to both).  Each daemon has its
own --config whose [Devices] Allow= names only its own instances, its own
state and cache directories, and its own log.  Both run in host mode on the
real sysfs with the shipped rules: the profiles come from the driver's
migration/ attributes and the target asks the driver itself
(migration_version write-and-test).  The stream goes over TCP with TLS 1.3
PSK, the target listening on 127.0.0.2 (a second loopback address, A
connects from 127.0.0.1); one fault case relays a plaintext stream through
this process instead.

Instances (created through sysfs before the daemons start):
  S1 small, S2 large   held by A
  T1 small, T2 large   held by B

The steps run in order:

  0  the split: each daemon manages its two instances, sees the other two as
     excluded, and cannot open them
  1  fault, other type: T1 reserved on B with A's profile of S1, but S2
     (large) is migrated to its endpoint: B refuses the stream's header
     (NotCompatible) before T1 enters RESUMING; both jobs fail; S2 back in
     RUNNING with its memory, T1 RUNNING with its memory untouched; the
     reservation is kept (active)
  2  the main job: a known pattern pwrite()n into S1's region 0 through A's
     OpenDevice FD; the same reservation (kept by step 1) is prepared again;
     Migrate S1 on A: both jobs complete (Finished on both buses), 52 + 65536
     bytes each way, S1 in STOP, T1 in STOP, T1's region 0 read through B's
     OpenDevice FD equals the pattern
  3  the large type with resume-running: S2 -> T2, T2 RUNNING afterwards with
     S2's 256 KiB
  4  fault, the kernel refuses: the stream is relayed through this process
     (SaveToFd / ReceiveFromFd, plaintext).  S1 is snapshotted while the
     driver's stream_version is 2, then stream_version goes back to 1 before
     B sees a byte: the header (profile version 1, unchanged without a
     uevent) passes the rules and the driver's write-and-test, T1 enters
     RESUMING, and the driver rejects the stream on RESUMING -> STOP
     ("stream version 2, this host accepts 1..1"); B resets T1 (RUNNING, its
     memory cleared), A's S1 is back in RUNNING with its pattern, both jobs
     fail, the reservation is kept
  4a-4f  faults on the real kernel, S1 -> T1, each unwound the same way
     (S1 running with its pattern unless A was killed, T1 reset: running,
     memory cleared, the reservation active, neither daemon holding more
     FDs than before): a corrupted stream (a byte of the data record changed
     in the relay: B refuses it, StreamInvalid); with A held in the middle
     of its stream and T1 in RESUMING: the stream cut, Cancel of the
     target, Cancel of the source, A killed (SIGKILL) and restarted (it
     resets S1 and reports the job failed); Cancel of the source once its
     END is written refused (Busy), both jobs then completing; with
     resume-running, the target's answer lost (S1 runs again, T1 is neither
     started nor reset: STOP with S1's state, NotConfirmed); a wrong
     ticket: refused in the handshake before either device moves, B's
     listener still waiting
  5  Release, both daemons exit 0 on SIGTERM, the instances are removed

Needs VFMIG_BUILD_ROOT, VFMIG_SOURCE_ROOT, DBUS_SYSTEM_BUS_ADDRESS (A's
bus), the module loaded with the default stream_version=1 and systemd-udevd
running; VFMIG_VFMIGD_LOG is A's log, B's is beside it with -target.
"""
import os
import random
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.environ['VFMIG_SOURCE_ROOT'], 'tests', 'bus'))
import vfmigtest as vt  # noqa: E402
from gi.repository import Gio, GLib  # noqa: E402

MOD = 'vfmig_testmdev'
PARENT_SYS = f'/sys/class/mdev_bus/{MOD}'
PARAM = f'/sys/module/{MOD}/parameters/stream_version'
SMALL, LARGE = f'{MOD}-small', f'{MOD}-large'
SIZE = {SMALL: 64 * 1024, LARGE: 256 * 1024}
STREAM_HEADER = 52          # the driver's own header before the memory
RULES = os.path.join(vt.SOURCE, 'data', 'compat.d')
JOB = 'org.vfmig1.Job'
RESERVATION = 'org.vfmig1.Reservation'
FINAL = ('completed', 'failed', 'cancelled')
LOG_A = os.environ.get('VFMIG_VFMIGD_LOG', '/tmp/vfmigd-migrate.log')
LOG_B = LOG_A[:-4] + '-target.log' if LOG_A.endswith('.log') else LOG_A + '-target'
SRC_ADDR, DST_ADDR = '127.0.0.1', '127.0.0.2'
REJECTED = 'resume rejected'


def sysfs_read(path):
    with open(path) as f:
        return f.read().strip()


def sysfs_write(path, value, timeout=30):
    """Through a child, so that a write the kernel blocks (a remove of a
    device someone holds) cannot hang the test: (status, stderr), status
    None if the write still blocked after `timeout` seconds."""
    p = subprocess.Popen(['/bin/sh', '-c', 'echo "$1" > "$2"', 'sh', value, path],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()        # takes effect when the kernel lets the write go
        return None, f'{path}: write of {value!r} still blocked after {timeout} s'
    return p.returncode, err


def create(type_):
    uuid = sysfs_read('/proc/sys/kernel/random/uuid')
    rc, err = sysfs_write(f'{PARENT_SYS}/mdev_supported_types/{type_}/create', uuid)
    assert rc == 0, f'create {type_}: {err}'
    return uuid


def dmesg():
    return subprocess.run(['dmesg'], capture_output=True, text=True, timeout=30).stdout


def pattern(seed, size):
    return random.Random(seed).randbytes(size)


def to_asv(profile):
    def sig(k, v):
        if isinstance(v, bool):
            return 'b'
        if isinstance(v, int):
            return 't' if k == 'state-size' else 'u'
        if isinstance(v, str):
            return 's'
        if isinstance(v, dict):
            return 'a{ss}'
        return 'as'
    return {k: GLib.Variant(sig(k, v), v) for k, v in profile.items()}


def pump(seconds):
    ctx = GLib.MainContext.default()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        while ctx.iteration(False):
            pass
        time.sleep(0.005)


def wait_until(pred, timeout=30, what='condition'):
    ctx = GLib.MainContext.default()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        while ctx.iteration(False):
            pass
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError(f'timed out after {timeout} s waiting for {what}')


def note(msg):
    print(f'\n  NOTE: {msg}', file=sys.stderr)


class Host:
    """One vfmigd (host mode) on one bus, owning the instances in `allow`."""

    def __init__(self, role, address, allow, tmp, log_path):
        d = os.path.join(tmp, role)
        os.makedirs(os.path.join(d, 'state'), exist_ok=True)     # kept when a daemon is restarted
        os.makedirs(os.path.join(d, 'cache'), exist_ok=True)
        self.role = role
        self.address = address
        self.conf = os.path.join(d, 'vfmigd.conf')
        with open(self.conf, 'w') as f:
            f.write('[Devices]\nAllow=' + ';'.join(allow) + '\n')
        self.log_path = log_path
        self.log = open(log_path, 'w')
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=address,
                   STATE_DIRECTORY=os.path.join(d, 'state'), CACHE_DIRECTORY=os.path.join(d, 'cache'))
        self.proc = subprocess.Popen([vt.VFMIGD, '--config', self.conf, '--debug', '--rules', RULES,
                                      '--admin-rules', '/nonexistent/compat.d'],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.bus = Gio.DBusConnection.new_for_address_sync(
            address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
            None, None)
        wait_until(self._has_name, timeout=60, what=f'vfmigd {role} to own {vt.BUS_NAME}')
        self.finished = []
        self.bus.signal_subscribe(vt.BUS_NAME, JOB, 'Finished', None, None, Gio.DBusSignalFlags.NONE,
                                  lambda c, s, path, i, m, p: self.finished.append((path, p.unpack())))

    def _has_name(self):
        assert self.proc.poll() is None, f'vfmigd {self.role} exited with {self.proc.returncode} (see its log)'
        return self.bus.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
                                  'NameHasOwner', GLib.Variant('(s)', (vt.BUS_NAME,)), None,
                                  Gio.DBusCallFlags.NONE, -1, None).unpack()[0]

    def call_fds(self, path, iface, method, sig=None, args=None, fds=None, timeout=20000):
        """Returns (reply, the FDs received): the caller owns (closes) them."""
        params = GLib.Variant(sig, args) if sig else None
        fdl = None
        if fds is not None:
            fdl = Gio.UnixFDList.new()
            for fd in fds:
                fdl.append(fd)
        reply, out = self.bus.call_with_unix_fd_list_sync(vt.BUS_NAME, path, iface, method, params, None,
                                                          Gio.DBusCallFlags.NONE, timeout, fdl, None)
        # Taken out of the list: a list left to the garbage collector would
        # keep a device open in this process (and block its sysfs remove).
        return reply.unpack(), (out.steal_fds() if out else [])

    def call(self, path, iface, method, sig=None, args=None, fds=None, timeout=20000):
        reply, received = self.call_fds(path, iface, method, sig, args, fds, timeout)
        for fd in received:
            os.close(fd)
        return reply

    def get(self, path, iface, prop):
        return self.call(path, 'org.freedesktop.DBus.Properties', 'Get', '(ss)', (iface, prop))[0]

    def get_all(self, path, iface):
        return self.call(path, 'org.freedesktop.DBus.Properties', 'GetAll', '(s)', (iface,))[0]

    def device(self, name):
        return self.call(vt.ROOT_PATH, vt.MANAGER, 'GetDevice', '(s)', (name,))[0]

    def state(self, name):
        return self.get(self.device(name), vt.DEVICE, 'MigrationState')

    def open(self, name):
        (h,), fds = self.call_fds(self.device(name), vt.DEVICE, 'OpenDevice')
        for i, fd in enumerate(fds):
            if i != h:
                os.close(fd)
        return fds[h]

    def read_memory(self, name, size):
        fd = self.open(name)
        try:
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)

    def write_memory(self, name, data):
        fd = self.open(name)
        try:
            assert os.pwrite(fd, data, 0) == len(data)
        finally:
            os.close(fd)

    def reset(self, name):
        self.call(self.device(name), vt.DEVICE, 'Reset')

    def profile(self, name):
        return self.call(vt.ROOT_PATH, vt.MANAGER, 'GetMigrationProfile', '(s)', (name,))[0]

    def job(self, path):
        return self.get_all(path, JOB)

    def jobs(self):
        objs = self.call(vt.ROOT_PATH, 'org.freedesktop.DBus.ObjectManager', 'GetManagedObjects')[0]
        return {p: i[JOB] for p, i in objs.items() if JOB in i}

    def wait_final(self, path, timeout=60):
        return wait_until(lambda: self.job(path)['State'] in FINAL and self.job(path), timeout=timeout,
                          what=f'job {path} of vfmigd {self.role} to end')

    def finished_signal(self, path):
        return wait_until(lambda: next((p for q, p in self.finished if q == path), None),
                          what=f'Finished of {path} on the bus of vfmigd {self.role}')

    def wait_status(self, name, status, timeout=30):
        def ok():
            try:
                p = self.get_all(self.device(name), vt.DEVICE)
            except GLib.Error:
                return None
            return p if p['Status'] == status else None
        return wait_until(ok, timeout=timeout, what=f'{name} to be {status} in vfmigd {self.role}')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.log.close()
                return 'no exit within 20 s of SIGTERM'
        self.log.close()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Relay(threading.Thread):
    """Copies bytes between two sockets both ways; what comes from `a` is
    held back until `gate` is set, but for its first `allow` bytes; the byte
    at offset `corrupt_at` of what comes from `a` is changed; cut() ends both
    connections at once, as a network failure would.  With backlog, while
    gated it stops reading from `a` when that much waits: the sender blocks
    in the middle of its stream.  With drop_answer, the first bytes from `b`
    (in plaintext: the target's answer) are swallowed and both connections
    end there."""

    def __init__(self, a, b, corrupt_at=None, backlog=None, drop_answer=False):
        super().__init__(daemon=True)
        self.a, self.b = a, b
        self.drop_answer = drop_answer
        self.answer_dropped = False
        self.gate = threading.Event()
        self.stopping = threading.Event()
        self.allow = 0
        self.backlog = backlog      # while gated, read no more from a than this ahead
        self.corrupt_at = corrupt_at
        self.from_a = 0
        self.from_b = 0
        self.to_b = 0
        self.error = None

    def cut(self):
        self.stopping.set()
        self.join(10)
        for s in (self.a, self.b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def run(self):
        try:
            self._loop()
        except Exception as e:      # reported by the test
            self.error = e

    def _loop(self):
        a, b = self.a, self.b
        a.setblocking(False)
        b.setblocking(False)
        a2b, b2a = bytearray(), bytearray()
        a_eof = b_eof = a_shut = b_shut = False
        while not self.stopping.is_set() and not (a_shut and b_shut):
            read_a = not a_eof and (self.backlog is None or self.gate.is_set() or len(a2b) < self.backlog)
            rl = ([a] if read_a else []) + ([b] if not b_eof else [])
            room = None if self.gate.is_set() else max(0, self.allow - self.to_b)
            wl = ([b] if a2b and room != 0 and not b_shut else []) + ([a] if b2a and not a_shut else [])
            r, w, _ = select.select(rl, wl, [], 0.05)
            for s, buf, other_side in ((a, a2b, 'a'), (b, b2a, 'b')):
                if s not in r:
                    continue
                try:
                    d = s.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    d = b''
                if d and s is b and self.drop_answer:
                    self.answer_dropped = True
                    self.stopping.set()
                    break
                if d:
                    if s is a and self.corrupt_at is not None and self.from_a <= self.corrupt_at < self.from_a + len(d):
                        d = bytearray(d)
                        d[self.corrupt_at - self.from_a] ^= 0x5a
                    buf += d
                    if other_side == 'a':
                        self.from_a += len(d)
                    else:
                        self.from_b += len(d)
                elif s is a:
                    a_eof = True
                else:
                    b_eof = True
            for s, buf in ((b, a2b), (a, b2a)):
                if s in w:
                    try:
                        n = s.send(buf if s is a or room is None else buf[:room])
                        del buf[:n]
                        if s is b:
                            self.to_b += n
                    except (BrokenPipeError, ConnectionResetError):
                        buf.clear()
                        if s is a:
                            a_shut = a_eof = True
                        else:
                            b_shut = b_eof = True
            if a_eof and not a2b and self.gate.is_set() and not b_shut:
                b.shutdown(socket.SHUT_WR)
                b_shut = True
            if b_eof and not b2a and not a_shut:
                a.shutdown(socket.SHUT_WR)
                a_shut = True
        # Both ways ended (or stopping): what either side still sends fails
        # now, as it would against a closed connection, instead of filling
        # a socket nobody reads.
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class MigrateOnRealKernel(unittest.TestCase):
    """Two daemons, four instances; the test methods run in name order."""

    @classmethod
    def setUpClass(cls):
        assert os.environ.get('VFMIG_VM') == '1', 'a guest test: run it in the VM (run-vm.sh)'
        assert os.path.isdir(PARENT_SYS), f'{PARENT_SYS} missing: load {MOD} first'
        assert sysfs_read(PARAM) == '1', f'load {MOD} with the default stream_version=1'
        cls.t0 = time.monotonic()
        cls.dmesg0 = len(dmesg().splitlines())
        cls.made = []
        cls.hosts = []
        cls.bus_b = None
        cls.tmp = tempfile.mkdtemp(prefix='vfmig-migrate-')
        cls.res_small = cls.res_large = None
        try:
            cls._setup()
        except BaseException:
            cls._teardown()
            raise

    @classmethod
    def _setup(cls):
        # The guest's loopback starts down; the stream runs over it.
        r = subprocess.run(['ip', 'link', 'set', 'lo', 'up'], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f'ip link set lo up: {r.stderr}'
        for t in (SMALL, LARGE, SMALL, LARGE):
            cls.made.append(create(t))
        cls.S1, cls.S2, cls.T1, cls.T2 = cls.made
        conf = os.path.join(vt.BUILD, 'tests', 'bus', 'system-bus.conf')
        cls.bus_b = subprocess.Popen(['dbus-daemon', '--config-file=' + conf, '--nofork', '--print-address'],
                                     stdout=subprocess.PIPE, text=True)
        addr_b = cls.bus_b.stdout.readline().strip()
        assert addr_b, 'the second dbus-daemon printed no address'
        addr_a = os.environ['DBUS_SYSTEM_BUS_ADDRESS']
        assert addr_a != addr_b
        t = time.monotonic()
        cls.A = Host('A', addr_a, [cls.S1, cls.S2], cls.tmp, LOG_A)
        cls.hosts.append(cls.A)
        cls.B = Host('B', addr_b, [cls.T1, cls.T2], cls.tmp, LOG_B)
        cls.hosts.append(cls.B)
        for h, mine in ((cls.A, (cls.S1, cls.S2)), (cls.B, (cls.T1, cls.T2))):
            for name in mine:
                h.wait_status(name, 'managed')
        note(f'two daemons up and holding their instances in {time.monotonic() - t:.1f} s')

    @classmethod
    def _teardown(cls):
        rcs = []
        for h in cls.hosts:
            rcs.append(h.stop())
        if cls.bus_b:
            if cls.bus_b.poll() is None:
                cls.bus_b.terminate()
                cls.bus_b.wait(10)
            cls.bus_b.stdout.close()
        # This process must not hold a device either (FDs from OpenDevice).
        held = [os.readlink(f'/proc/self/fd/{fd}') for fd in os.listdir('/proc/self/fd')
                if os.path.exists(f'/proc/self/fd/{fd}') and 'vfio' in os.readlink(f'/proc/self/fd/{fd}')]
        if held:
            rcs.append(f'the test still holds {held}')
        # The daemons let go of their devices: the instances can go now.
        for u in cls.made:
            if os.path.exists(f'/sys/bus/mdev/devices/{u}'):
                rc, err = sysfs_write(f'/sys/bus/mdev/devices/{u}/remove', '1', timeout=15)
                if rc != 0:
                    rcs.append(f'remove {u}: {err}')
        sysfs_write(PARAM, '1')
        shutil.rmtree(cls.tmp, ignore_errors=True)
        return rcs

    @classmethod
    def tearDownClass(cls):
        if len(cls.hosts) == 2:
            for r in (cls.res_small, cls.res_large):
                if r:
                    try:
                        cls.B.call(r, RESERVATION, 'Release')
                    except GLib.Error:
                        pass
        rcs = cls._teardown()
        print(f'\n  vfmigd exit status A {rcs[0] if rcs else "?"}, B {rcs[1] if len(rcs) > 1 else "?"}; '
              f'steps took {time.monotonic() - cls.t0:.1f} s', file=sys.stderr)
        assert rcs == [0, 0], f'the daemons did not exit cleanly on SIGTERM, or an instance stayed: {rcs}'

    def setUp(self):
        for h in self.hosts:
            self.assertIsNone(h.proc.poll(), f'vfmigd {h.role} is not running')

    # ---- helpers ----------------------------------------------------------

    def new_dmesg(self):
        return dmesg().splitlines()[self.dmesg0:]

    def reserve(self, target, source):
        """Reserve `target` on B with A's profile of `source`."""
        path = self.B.call(vt.ROOT_PATH, vt.MANAGER, 'Reserve', '(sa{sv}a{sv})',
                           (target, to_asv(self.A.profile(source)),
                            {'lease-seconds': GLib.Variant('u', 900)}))[0]
        self.assertEqual(self.B.get(path, RESERVATION, 'Target'), target)
        self.assertEqual(self.B.get(path, RESERVATION, 'State'), 'active')
        return path

    def small_reservation(self):
        if type(self).res_small is None:
            type(self).res_small = self.reserve(self.T1, self.S1)
        return self.res_small

    def prepare(self, reservation, **opts):
        o = {'address': GLib.Variant('s', DST_ADDR)}
        o.update(opts)
        endpoint, ticket = self.B.call(reservation, RESERVATION, 'PrepareIncoming', '(a{sv})', (o,))
        self.assertTrue(endpoint.startswith(DST_ADDR + ':'), endpoint)
        self.assertEqual(self.B.get(reservation, RESERVATION, 'State'), 'receiving')
        waiting = [p for p, j in self.B.jobs().items() if j['State'] == 'waiting']
        self.assertEqual(len(waiting), 1, waiting)
        return endpoint, ticket, waiting[0]

    def migrate(self, source, endpoint, ticket):
        return self.A.call(self.A.device(source), vt.DEVICE, 'Migrate', '(ssa{sv})', (endpoint, ticket, {}))[0]

    def make_running(self, host, name):
        if host.state(name) != 'running':
            host.reset(name)
        self.assertEqual(host.state(name), 'running')

    # ---- the steps ----------------------------------------------------------

    def test_0_split(self):
        for h, mine, theirs in ((self.A, (self.S1, self.S2), (self.T1, self.T2)),
                                (self.B, (self.T1, self.T2), (self.S1, self.S2))):
            for name in mine:
                p = h.get_all(h.device(name), vt.DEVICE)
                self.assertEqual((p['Status'], p['MigrationState'], p['MigrationFlags']),
                                 ('managed', 'running', ['stop-copy', 'p2p']), p['StatusMessage'])
            for name in theirs:
                p = h.get_all(h.device(name), vt.DEVICE)
                self.assertEqual(p['Status'], 'excluded', f'{name} in vfmigd {h.role}: {p["StatusMessage"]}')
                with self.assertRaises(GLib.Error, msg=f'{h.role} opened {name}'):
                    os.close(h.open(name))
        prof = self.A.profile(self.S1)
        self.assertEqual(prof['migration-type'], f'{MOD}:{SMALL}')
        self.assertEqual(prof['attributes'].get('software_version'), '1')

    def test_1_other_type_refused(self):
        res = self.small_reservation()
        before = pattern(11, SIZE[SMALL])
        self.B.write_memory(self.T1, before)
        src = pattern(12, SIZE[LARGE])
        self.A.write_memory(self.S2, src)
        endpoint, ticket, dst_job = self.prepare(res)
        src_job = self.migrate(self.S2, endpoint, ticket)       # a large device into a small reservation
        s = self.A.wait_final(src_job)
        d = self.B.wait_final(dst_job)
        note(f'other type: source "{s["Error"]}"; target "{d["Error"]}"')
        self.assertEqual((s['State'], d['State']), ('failed', 'failed'))
        self.assertTrue(d['Error'].startswith('org.vfmig1.Error.NotCompatible: target'), d['Error'])
        self.assertTrue(s['Error'].startswith('org.vfmig1.Error.NotCompatible: target'), s['Error'])
        self.assertEqual(self.A.finished_signal(src_job)[0], 'failed')
        self.assertEqual(self.B.finished_signal(dst_job)[0], 'failed')
        self.assertEqual(self.A.state(self.S2), 'running')
        self.assertEqual(self.A.read_memory(self.S2, SIZE[LARGE]), src)
        self.assertEqual(self.B.state(self.T1), 'running')
        self.assertEqual(self.B.read_memory(self.T1, SIZE[SMALL]), before, 'T1 was written although refused')
        self.assertEqual(self.B.get(res, RESERVATION, 'State'), 'active')
        self.assertFalse([l for l in self.new_dmesg() if REJECTED in l], 'the driver was handed the stream')

    def test_2_migrate_small(self):
        res = self.small_reservation()      # kept by step 1
        self.make_running(self.A, self.S1)
        self.make_running(self.B, self.T1)
        data = pattern(21, SIZE[SMALL])
        self.A.write_memory(self.S1, data)
        self.assertNotEqual(self.B.read_memory(self.T1, SIZE[SMALL]), data)
        endpoint, ticket, dst_job = self.prepare(res)
        t0 = time.monotonic()
        src_job = self.migrate(self.S1, endpoint, ticket)
        s = self.A.wait_final(src_job)
        d = self.B.wait_final(dst_job)
        wall = time.monotonic() - t0
        self.assertEqual((s['State'], s['Error']), ('completed', ''))
        self.assertEqual((d['State'], d['Error']), ('completed', ''))
        self.assertEqual(self.A.finished_signal(src_job), ('completed', ''))
        self.assertEqual(self.B.finished_signal(dst_job), ('completed', ''))
        self.assertEqual((s['Kind'], d['Kind']), ('save', 'restore'))
        self.assertEqual((s['Devices'], d['Devices']), ([self.S1], [self.T1]))
        self.assertEqual(s['BytesTransferred'], STREAM_HEADER + SIZE[SMALL])
        self.assertEqual(d['BytesTransferred'], s['BytesTransferred'])
        self.assertEqual(self.A.state(self.S1), 'stop')
        self.assertEqual(self.B.state(self.T1), 'stop')
        got = self.B.read_memory(self.T1, SIZE[SMALL])
        self.assertEqual(len(got), SIZE[SMALL])
        self.assertTrue(got == data, 'T1 memory differs from the pattern written into S1 '
                        f'(first difference at byte {next((i for i in range(len(got)) if got[i] != data[i]), "?")})')
        self.assertEqual(self.A.read_memory(self.S1, SIZE[SMALL]), data)
        self.assertEqual(self.B.get(res, RESERVATION, 'State'), 'active')
        note(f'{SMALL} {self.S1} -> {self.T1} via {endpoint}: {s["BytesTransferred"]} bytes, '
             f'downtime {s["DowntimeMs"]} ms, {s["Throughput"] / 1e6:.1f} MB/s, wall {wall * 1000:.0f} ms')

    def test_3_migrate_large_resume_running(self):
        type(self).res_large = self.reserve(self.T2, self.S2)
        self.make_running(self.A, self.S2)
        data = pattern(31, SIZE[LARGE])
        self.A.write_memory(self.S2, data)
        endpoint, ticket, dst_job = self.prepare(self.res_large, **{'resume-running': GLib.Variant('b', True)})
        t0 = time.monotonic()
        src_job = self.migrate(self.S2, endpoint, ticket)
        s = self.A.wait_final(src_job)
        d = self.B.wait_final(dst_job)
        wall = time.monotonic() - t0
        self.assertEqual((s['State'], s['Error'], d['State'], d['Error']), ('completed', '', 'completed', ''))
        self.assertEqual(d['BytesTransferred'], STREAM_HEADER + SIZE[LARGE])
        self.assertEqual(self.A.state(self.S2), 'stop')
        self.assertEqual(self.B.state(self.T2), 'running')
        self.assertTrue(self.B.read_memory(self.T2, SIZE[LARGE]) == data, 'T2 memory differs from S2 pattern')
        note(f'{LARGE} {self.S2} -> {self.T2} (resume-running): {d["BytesTransferred"]} bytes, '
             f'downtime {s["DowntimeMs"]} ms, wall {wall * 1000:.0f} ms')

    def test_4_newer_stream_rejected_by_driver(self):
        res = self.small_reservation()
        self.make_running(self.A, self.S1)
        self.make_running(self.B, self.T1)
        data = pattern(41, SIZE[SMALL])
        self.A.write_memory(self.S1, data)
        marker = pattern(42, SIZE[SMALL])
        self.B.write_memory(self.T1, marker)
        # A's profile of S1 (what its stream header will carry) says version 1.
        self.assertEqual(self.A.profile(self.S1)['attributes'].get('software_version'), '1')
        rejected0 = len([l for l in self.new_dmesg() if REJECTED in l])

        a_daemon, a_test = socket.socketpair()
        b_daemon, b_test = socket.socketpair()
        relay = Relay(a_test, b_test)
        relay.start()
        try:
            # Snapshot on A while the driver writes version 2 into streams.
            self.assertEqual(sysfs_write(PARAM, '2')[0], 0)
            try:
                src_job = self.A.call(self.A.device(self.S1), vt.DEVICE, 'SaveToFd', '(ha{sv})',
                                      (0, {'plaintext': GLib.Variant('b', True)}), fds=[a_daemon.fileno()])[0]
            finally:
                a_daemon.close()
            wait_until(lambda: relay.from_a >= STREAM_HEADER + SIZE[SMALL] or
                       self.A.job(src_job)['State'] in FINAL, what='the source stream in the relay')
            self.assertEqual(self.A.job(src_job)['State'], 'switchover', self.A.job(src_job)['Error'])
            # ... and B's driver back at version 1 before B sees a byte.
            self.assertEqual(sysfs_write(PARAM, '1')[0], 0)
            try:
                dst_job = self.B.call(res, RESERVATION, 'ReceiveFromFd', '(ha{sv})',
                                      (0, {'plaintext': GLib.Variant('b', True)}), fds=[b_daemon.fileno()])[0]
            finally:
                b_daemon.close()
            relay.gate.set()
            s = self.A.wait_final(src_job)
            d = self.B.wait_final(dst_job)
        finally:
            relay.gate.set()
            sysfs_write(PARAM, '1')
            relay.stopping.set()
            relay.join(10)
            a_test.close()
            b_test.close()
        self.assertIsNone(relay.error)
        note(f'newer stream: source "{s["Error"]}"; target "{d["Error"]}"; relayed {relay.from_a} bytes')
        self.assertEqual((s['State'], d['State']), ('failed', 'failed'))
        self.assertIn('rejected the state', d['Error'])
        self.assertIn('target', s['Error'])
        rej = [l for l in self.new_dmesg() if REJECTED in l]
        self.assertEqual(len(rej), rejected0 + 1, rej)
        self.assertIn('stream version 2, this host accepts 1..1', rej[-1])
        # The driver left T1 in ERROR; B reset it: running, memory cleared.
        self.assertEqual(self.B.state(self.T1), 'running')
        self.assertEqual(self.B.read_memory(self.T1, SIZE[SMALL]), bytes(SIZE[SMALL]), 'T1 was not reset')
        # The source is back in running with its memory.
        self.assertEqual(self.A.state(self.S1), 'running')
        self.assertEqual(self.A.read_memory(self.S1, SIZE[SMALL]), data)
        self.assertEqual(self.B.get(res, RESERVATION, 'State'), 'active')

    # ---- faults on the real kernel ------------------------------------------

    def fds(self, host):
        return len(os.listdir(f'/proc/{host.proc.pid}/fd'))

    def fault_setup(self):
        """S1 running with a fresh pattern, T1 running with a marker; the FD
        counts of both daemons before the fault."""
        res = self.small_reservation()
        self.make_running(self.A, self.S1)
        self.make_running(self.B, self.T1)
        data = pattern(51, SIZE[SMALL])
        self.A.write_memory(self.S1, data)
        self.B.write_memory(self.T1, pattern(52, SIZE[SMALL]))
        pump(0.2)
        return res, data, {h.role: self.fds(h) for h in self.hosts}

    def relayed(self, res, hold=False, dst_opts=None, **relay_kw):
        """S1 (A) -> T1 (B) in plaintext through a Relay this process holds.
        hold: A's socket takes little and the relay reads little ahead, so
        that A blocks in the middle of its stream (before END)."""
        a_daemon, a_test = socket.socketpair()
        b_daemon, b_test = socket.socketpair()
        if hold:
            a_daemon.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            relay_kw['backlog'] = 8192
        relay = Relay(a_test, b_test, **relay_kw)
        relay.start()
        plain = {'plaintext': GLib.Variant('b', True)}
        try:
            dst_job = self.B.call(res, RESERVATION, 'ReceiveFromFd', '(ha{sv})',
                                  (0, dict(plain, **(dst_opts or {}))), fds=[b_daemon.fileno()])[0]
            src_job = self.A.call(self.A.device(self.S1), vt.DEVICE, 'SaveToFd', '(ha{sv})', (0, plain),
                                  fds=[a_daemon.fileno()])[0]
        finally:
            a_daemon.close()
            b_daemon.close()
        return relay, src_job, dst_job

    def hold_inside_data(self, relay, src_job):
        """B given the first 30000 bytes (the header and part of the data
        record): T1 in RESUMING with part of S1's state written into it, A
        blocked in the middle of its stream."""
        relay.allow = 30000
        wait_until(lambda: relay.to_b == relay.allow, what='the relay to pass on 30000 bytes')
        wait_until(lambda: self.B.state(self.T1) == 'resuming', what='T1 to be in RESUMING')
        pump(0.3)
        self.assertLess(relay.from_a, STREAM_HEADER + SIZE[SMALL], 'A was not held inside its stream')
        self.assertEqual(self.A.job(src_job)['State'], 'switchover')

    def end_relay(self, relay):
        relay.gate.set()
        relay.stopping.set()
        relay.join(10)
        relay.a.close()
        relay.b.close()
        self.assertIsNone(relay.error)

    def assert_unwound(self, res, data, fds, src_memory=True):
        pump(0.3)
        self.assertEqual(self.A.state(self.S1), 'running')
        if src_memory:
            self.assertEqual(self.A.read_memory(self.S1, SIZE[SMALL]), data, 'S1 lost its state')
        self.assertEqual(self.B.state(self.T1), 'running')
        self.assertEqual(self.B.read_memory(self.T1, SIZE[SMALL]), bytes(SIZE[SMALL]), 'T1 was not reset')
        self.assertEqual(self.B.get(res, RESERVATION, 'State'), 'active')
        for h in self.hosts:
            if h.role in fds:
                self.assertLessEqual(self.fds(h), fds[h.role], f'vfmigd {h.role} holds more FDs than before')

    def test_4a_corrupted_stream(self):
        res, data, fds = self.fault_setup()
        relay, src_job, dst_job = self.relayed(res, corrupt_at=8000)   # inside the data record
        relay.gate.set()
        try:
            s = self.A.wait_final(src_job)
            d = self.B.wait_final(dst_job)
        finally:
            self.end_relay(relay)
        note(f'corrupted: source "{s["Error"]}"; target "{d["Error"]}"')
        self.assertEqual((s['State'], d['State']), ('failed', 'failed'))
        self.assertTrue(d['Error'].startswith('org.vfmig1.Error.StreamInvalid: target: invalid stream'), d['Error'])
        self.assert_unwound(res, data, fds)

    def held_fault(self, what, act, states, side, word):
        """S1 -> T1 with A held in the middle of its stream and T1 in RESUMING,
        then act(relay, src_job, dst_job): both jobs end in `states`, `word`
        in the `side` job's error, everything unwound."""
        res, data, fds = self.fault_setup()
        relay, src_job, dst_job = self.relayed(res, hold=True)
        try:
            self.hold_inside_data(relay, src_job)
            act(relay, src_job, dst_job)
            s = self.A.wait_final(src_job)
            d = self.B.wait_final(dst_job)
        finally:
            self.end_relay(relay)
        note(f'{what}: source "{s["Error"]}"; target "{d["Error"]}"')
        self.assertEqual((s['State'], d['State']), states)
        self.assertIn(word, (s if side == 'source' else d)['Error'])
        self.assert_unwound(res, data, fds)

    def test_4b_truncated_stream(self):
        self.held_fault('cut', lambda relay, src_job, dst_job: relay.cut(),
                        ('failed', 'failed'), 'target', 'truncated')

    def test_4c_cancel_target_mid_stream(self):
        def act(relay, src_job, dst_job):
            self.B.call(dst_job, JOB, 'Cancel')
            self.B.wait_final(dst_job)
            relay.gate.set()
        self.held_fault('target cancelled', act, ('failed', 'cancelled'), 'source', 'cancelled on the target')

    def test_4d_cancel_source_mid_stream(self):
        def act(relay, src_job, dst_job):
            self.A.call(src_job, JOB, 'Cancel')
            relay.gate.set()
        self.held_fault('source cancelled', act, ('cancelled', 'failed'), 'target', 'cancelled on the source')

    def test_4d_cancel_source_after_end_refused(self):
        """The whole stream (END included) written, B given part of it: the
        state may already be the target's, so Cancel of the source is refused
        and the target's answer ends both jobs."""
        res, data, fds = self.fault_setup()
        relay, src_job, dst_job = self.relayed(res)
        try:
            wait_until(lambda: relay.from_a > STREAM_HEADER + SIZE[SMALL], what='the whole stream in the relay')
            pump(0.3)
            relay.allow = 30000
            wait_until(lambda: self.B.state(self.T1) == 'resuming', what='T1 to be in RESUMING')
            with self.assertRaises(GLib.Error) as e:
                self.A.call(src_job, JOB, 'Cancel')
            self.assertIn('org.vfmig1.Error.Busy', str(e.exception))
            self.assertEqual(self.A.state(self.S1), 'stop-copy')
            relay.gate.set()
            s = self.A.wait_final(src_job)
            d = self.B.wait_final(dst_job)
        finally:
            self.end_relay(relay)
        self.assertEqual((s['State'], d['State']), ('completed', 'completed'), (s['Error'], d['Error']))
        self.assertEqual(self.B.read_memory(self.T1, SIZE[SMALL]), data)
        self.make_running(self.A, self.S1)
        self.make_running(self.B, self.T1)

    def test_4d_resume_running_answer_lost(self):
        """resume-running, and the target's answer never reaches the source:
        A gets no answer and runs S1 again; B does not start T1 (A may run)
        nor reset it (it may be the only copy): T1 stays in STOP with S1's
        state and B's job fails NotConfirmed.  Before the COMMIT step T1 was
        started just before the answer: both would have run."""
        res, data, fds = self.fault_setup()
        relay, src_job, dst_job = self.relayed(res, drop_answer=True,
                                               dst_opts={'resume-running': GLib.Variant('b', True)})
        relay.gate.set()
        try:
            s = self.A.wait_final(src_job)
            d = self.B.wait_final(dst_job)
        finally:
            self.end_relay(relay)
        note(f'answer lost: source "{s["Error"]}"; target "{d["Error"]}"')
        self.assertTrue(relay.answer_dropped)
        self.assertEqual((s['State'], d['State']), ('failed', 'failed'))
        self.assertTrue(d['Error'].startswith('org.vfmig1.Error.NotConfirmed: target: '), d['Error'])
        pump(0.3)
        self.assertEqual(self.A.state(self.S1), 'running')
        self.assertEqual(self.A.read_memory(self.S1, SIZE[SMALL]), data, 'S1 lost its state')
        self.assertEqual(self.B.state(self.T1), 'stop')
        self.assertEqual(self.B.read_memory(self.T1, SIZE[SMALL]), data, 'T1 lost the state')
        self.assertEqual(self.B.get(res, RESERVATION, 'State'), 'active')
        for h in self.hosts:
            self.assertLessEqual(self.fds(h), fds[h.role], f'vfmigd {h.role} holds more FDs than before')
        self.make_running(self.B, self.T1)

    def test_4e_source_killed_mid_stream(self):
        res, data, fds = self.fault_setup()
        relay, src_job, dst_job = self.relayed(res, hold=True)
        try:
            self.hold_inside_data(relay, src_job)
            self.A.kill()
            relay.gate.set()
            d = self.B.wait_final(dst_job)
        finally:
            self.end_relay(relay)
        note(f'source killed: target "{d["Error"]}"')
        self.assertEqual(d['State'], 'failed')
        self.assertIn('source', d['Error'])
        # A again, on the same state directory: it finds the job it left.
        a = Host('A', self.A.address, [self.S1, self.S2], self.tmp, LOG_A[:-4] + '-restarted.log')
        type(self).A = a
        self.hosts[0] = a
        a.wait_status(self.S1, 'managed')
        jobs = [j for j in a.jobs().values() if j['Devices'] == [self.S1] and j['Kind'] == 'save']
        self.assertEqual(len(jobs), 1, jobs)
        self.assertEqual(jobs[0]['State'], 'failed')
        self.assertTrue(jobs[0]['Error'].startswith('org.vfmig1.Error.DeviceFailed') and
                        'restarted' in jobs[0]['Error'], jobs[0]['Error'])
        del fds['A']
        # S1 was in STOP_COPY when A died: reset, so running and cleared.
        self.assert_unwound(res, data, fds, src_memory=False)

    def test_4f_wrong_ticket(self):
        res, data, fds = self.fault_setup()
        marker = self.B.read_memory(self.T1, SIZE[SMALL])
        endpoint, ticket, dst_job = self.prepare(res)
        wrong = ticket[:-4] + ('AAAA' if not ticket.endswith('AAAA') else 'BBBB')
        src_job = self.migrate(self.S1, endpoint, wrong)
        s = self.A.wait_final(src_job)
        note(f'wrong ticket: source "{s["Error"]}"')
        self.assertEqual(s['State'], 'failed')
        self.assertTrue(s['Error'].startswith('org.vfmig1.Error.AccessDenied'), s['Error'])
        # Neither device moved; B still waits for the right ticket.
        self.assertEqual(self.A.state(self.S1), 'running')
        self.assertEqual(self.A.read_memory(self.S1, SIZE[SMALL]), data)
        self.assertEqual(self.B.state(self.T1), 'running')
        self.assertEqual(self.B.read_memory(self.T1, SIZE[SMALL]), marker)
        pump(0.3)
        self.assertEqual(self.B.job(dst_job)['State'], 'waiting')
        self.B.call(dst_job, JOB, 'Cancel')
        self.assertEqual(self.B.wait_final(dst_job)['State'], 'cancelled')
        self.assertEqual(self.B.get(res, RESERVATION, 'State'), 'active')

    def test_5_release(self):
        for attr in ('res_small', 'res_large'):
            path = getattr(self, attr)
            self.assertIsNotNone(path, f'{attr}: an earlier step failed')
            self.B.call(path, RESERVATION, 'Release')
            setattr(type(self), attr, None)
        self.assertEqual(self.B.call(vt.ROOT_PATH, vt.MANAGER, 'ListReservations')[0], [])
        # Nothing vfmigd did not create is removed on Release: all four stay.
        for u in self.made:
            self.assertTrue(os.path.isdir(f'/sys/bus/mdev/devices/{u}'), u)


if __name__ == '__main__':
    unittest.main(verbosity=2, argv=[sys.argv[0]])
