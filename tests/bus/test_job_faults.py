# SPDX-License-Identifier: LGPL-2.1-or-later
"""Migration job faults between two simulated hosts (issue 7, Tests).

Same layout as test_jobs.py: the source vfmigd (tests/data/hosts/faults-a.json)
on the bus dbus-test-runner started, the target vfmigd (faults-b.json) on a
second private dbus-daemon.  The migrated devices have 256 MiB of state so a
transfer takes a moment; the target's 0000:31:00.2 has stream-version 0, so
the sim rejects a (version 1) stream from 0000:17:00.1 once RESUMING starts,
while its profile still matches the reservation.

After every fault: the source device is back in running, the target device
is reset (running), the target's reservation still exists and is "active"
again, the failed job's Error names the failing side, and neither surviving
daemon has more FDs open than before the test.

Checked: the target vfmigd killed (SIGKILL) at several offsets of the stream,
and the source vfmigd killed likewise (the survivor unwinds; the killed one,
restarted, reports the interrupted job failed and its device reset);
a corrupted and a truncated stream relayed by the test between SaveToFd and
ReceiveFromFd, in plaintext and over TLS (a changed record fails to
authenticate, a cut one ends without close_notify); the end of a
resume-running migration (the target starts its devices only on the
source's COMMIT; with the COMMIT or the answer lost, it keeps the state
stopped; Cancel of the target is refused while it waits); a source that
stops sending mid-stream (the target's timeout-ms); a replayed ticket (after a success and after a failure: over
TCP against a new listener, and in fd mode) and an expired ticket; Cancel of
a streaming source and of a streaming target; a target device rejecting the
data (ERROR -> reset, reported); a target that stops reading the stream, and
a listener that accepts and never answers: with a short "timeout-ms" the
source fails with TimedOut and its device is back in running.
"""
import os
import signal
import socket
import threading
import time
import unittest

import vfmigtest as vt
from gi.repository import GLib
from test_jobs import Host, pump, wait_until, random_ticket, error_name, JOB, RESERVATION, FINAL

SRC_DEV = '0000:17:00.1'
DST_DEV = '0000:31:00.1'
REJECT_DEV = '0000:31:00.2'            # stream-version 0: the sim rejects the data
STATE_SIZE = 256 * 1024 * 1024
HOSTS = os.path.join(vt.SOURCE, 'tests', 'data', 'hosts')
RECOVERED_ERROR = 'org.vfmig1.Error.DeviceFailed: daemon restarted during the job; devices reset'


class Relay:
    """Copies a -> b (the stream) and b -> a (the answer) between two sockets the
    test holds, flipping the byte at corrupt_at, stopping after stop_at bytes, or
    pausing after pause_at bytes until resume() (all offsets of the a -> b bytes).
    When either direction ends, both sockets are shut down, as a peer's close
    would be seen over one connection; with half_close, the end of one
    direction is passed on as such (the target closes its side after its
    answer, the source after its COMMIT), and both close when both have ended.
    answer: what becomes of the target's answer (the first b -> a bytes once
    the whole state has passed: TLS bytes are opaque, and before the state
    they belong to the handshake) and of what the source sends after it (its
    COMMIT): 'drop' swallows the
    answer and closes everything; 'cut' passes the answer on and closes the
    a -> b direction before anything after it; 'hold' passes the answer on
    and holds what follows until resume()."""

    def __init__(self, a, b, corrupt_at=None, stop_at=None, pause_at=None, half_close=False, answer=None):
        self.a, self.b = a, b
        self.corrupt_at, self.stop_at, self.pause_at = corrupt_at, stop_at, pause_at
        self.half_close = half_close
        self.answer = answer
        self.answered = threading.Event()
        self.held = threading.Event()
        self.forwarded = 0
        self.ended = 0
        self.paused = threading.Event()
        self._resume = threading.Event()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._forward, daemon=True),
                        threading.Thread(target=self._backward, daemon=True)]
        for t in self.threads:
            t.start()

    def _close(self, to=None):
        with self.lock:
            if self.done.is_set():
                return
            self.ended += 1
            if self.half_close and to is not None and self.ended < 2:
                try:
                    to.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            for s in (self.a, self.b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.done.set()
        # once the other direction stopped too, close for real: what the peer
        # sends after this is answered with a reset, as by a dead process
        me = threading.current_thread()
        for t in self.threads:
            if t is not me and t.ident is not None:
                t.join(10)
        self.a.close()
        self.b.close()

    def _forward(self):
        n = 0
        try:
            while True:
                limit = 1 << 16
                if self.pause_at is not None and n < self.pause_at:
                    limit = min(limit, self.pause_at - n)
                buf = bytearray(self.a.recv(limit))
                if not buf:
                    break
                if self.corrupt_at is not None and n <= self.corrupt_at < n + len(buf):
                    buf[self.corrupt_at - n] ^= 0x5a
                if self.stop_at is not None and n + len(buf) >= self.stop_at:
                    self.b.sendall(buf[:self.stop_at - n])
                    break
                if self.answered.is_set() and self.answer == 'cut':
                    break
                if self.answered.is_set() and self.answer == 'hold':
                    self.held.set()
                    self._resume.wait()
                self.b.sendall(buf)
                n += len(buf)
                self.forwarded = n
                if self.pause_at is not None and n == self.pause_at:
                    self.paused.set()
                    self._resume.wait()
        except OSError:
            pass
        self._close(self.b)

    def _backward(self):
        try:
            while True:
                buf = self.b.recv(4096)
                if not buf:
                    break
                if self.answer and self.forwarded >= STATE_SIZE:
                    if self.answer == 'drop':
                        self.answered.set()
                        self._close()
                        return
                    self.answered.set()     # before the source can see it
                self.a.sendall(buf)
        except OSError:
            pass
        self._close(self.a)

    def resume(self):
        self._resume.set()

    def close(self):
        self._resume.set()
        self._close()
        for t in self.threads:
            if t.ident is not None:
                t.join(10)


class Proxy:
    """A TCP endpoint for Migrate that relays (TLS bytes, opaque) to the target's."""

    def __init__(self, endpoint, rcvbuf=None, **relay_opts):
        host, port = endpoint.rsplit(':', 1)
        self.target = (host, int(port))
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # A fixed receive buffer (no autotuning up to tcp_rmem's 32 MiB):
            # behind a paused relay the source can then not hand its whole
            # stream to the kernel, so it is still in the middle of it.
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(4)
        self.endpoint = '127.0.0.1:%d' % self.listener.getsockname()[1]
        self.relay = None
        self.ready = threading.Event()
        self.opts = relay_opts
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        try:
            a, _ = self.listener.accept()
            b = socket.create_connection(self.target)
            self.relay = Relay(a, b, **self.opts)
        except OSError:
            pass
        self.ready.set()

    def close(self):
        self.listener.close()
        if self.relay:
            self.relay.close()


class Faults(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.tmp = tempfile.TemporaryDirectory(prefix='vfmig-faults-')
        cls.bus2 = vt.SecondBus()
        cls.addr1 = os.environ['DBUS_SYSTEM_BUS_ADDRESS']
        cls.addr2 = cls.bus2.address
        cls.src = cls.start_src()
        cls.dst = cls.start_dst()

    @classmethod
    def start_src(cls):
        return Host(os.path.join(HOSTS, 'faults-a.json'), cls.addr1, cls.tmp.name)

    @classmethod
    def start_dst(cls):
        return Host(os.path.join(HOSTS, 'faults-b.json'), cls.addr2, cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        rcs = (cls.src.stop(), cls.dst.stop())
        cls.bus2.stop()
        cls.tmp.cleanup()
        assert rcs == (0, 0), rcs

    warmed = None

    def setUp(self):
        if getattr(self, 'reservation', None):
            self.tearDown()
        for host in (self.src, self.dst):          # what a failed test before left running
            for path, j in host.jobs().items():
                if j['State'] not in FINAL:
                    try:
                        host.call(path, JOB, 'Cancel')
                    except GLib.Error as e:     # it ended meanwhile, or its answer is on the way
                        self.assertEqual(error_name(e), 'org.vfmig1.Error.Busy', str(e))
                    self.wait_final(host, path)
        for host, dev in ((self.src, SRC_DEV), (self.dst, DST_DEV), (self.dst, REJECT_DEV)):
            if host.state(dev) != 'running':
                host.reset(dev)
        self.reservation = None
        if Faults.warmed != (self.src.proc.pid, self.dst.proc.pid):
            # lazily allocated clocks (timerfds) before the FD baseline
            self.reserve()
            s, d = self.tcp_migration()
            self.assertEqual((s['State'], d['State']), ('completed', 'completed'), (s['Error'], d['Error']))
            self.dst.call(self.reservation, RESERVATION, 'Release')
            self.src.reset(SRC_DEV)
            self.dst.reset(DST_DEV)
            self.src.jobs()
            self.dst.jobs()
            pump(0.2)
            Faults.warmed = (self.src.proc.pid, self.dst.proc.pid)
        self.reservation = None
        self.fds = {self.src.proc.pid: self.src.fd_count(), self.dst.proc.pid: self.dst.fd_count()}

    def tearDown(self):
        if self.reservation:
            try:
                self.dst.call(self.reservation, RESERVATION, 'Release')
            except GLib.Error:
                pass
        self.reservation = None

    # --- helpers --------------------------------------------------------------------

    def reserve(self, target=DST_DEV, lease=None):
        profile = self.src.call(vt.ROOT_PATH, vt.MANAGER, 'GetMigrationProfile', '(s)', (SRC_DEV,))[0]
        profile = vt.profile_variants(profile)
        opts = {'persist': GLib.Variant('b', True)}
        if lease:
            opts['lease-seconds'] = GLib.Variant('u', lease)
        self.reservation = self.dst.call(vt.ROOT_PATH, vt.MANAGER, 'Reserve', '(sa{sv}a{sv})',
                                         (target, profile, opts))[0]
        return self.reservation


    def prepare(self, opts=None):
        endpoint, ticket = self.dst.call(self.reservation, RESERVATION, 'PrepareIncoming', '(a{sv})',
                                         (dict({'address': GLib.Variant('s', '127.0.0.1')}, **(opts or {})),))
        waiting = [p for p, j in self.dst.jobs().items() if j['State'] == 'waiting']
        self.assertEqual(len(waiting), 1)
        return endpoint, ticket, waiting[0]

    def migrate(self, endpoint, ticket, opts=None):
        return self.src.call(self.src.device(SRC_DEV), vt.DEVICE, 'Migrate', '(ssa{sv})',
                             (endpoint, ticket, opts or {}))[0]

    def tcp_migration(self):
        endpoint, ticket, dst_job = self.prepare()
        src_job = self.migrate(endpoint, ticket)
        return self.wait_final(self.src, src_job), self.wait_final(self.dst, dst_job)

    def wait_final(self, host, path, timeout=60):
        return wait_until(lambda: host.job(path)['State'] in FINAL and host.job(path), timeout=timeout,
                          what=f'job {path}')

    def wait_bytes(self, host, path, n):
        def pred():
            j = host.job(path)
            self.assertNotIn(j['State'], FINAL, f'the job ended before {n} bytes: {j["Error"]}')
            return j['BytesTransferred'] >= n
        wait_until(pred, timeout=60, what=f'{n} bytes in {path}')

    def assert_unwound(self, src=True, dst=True, reservation=True):
        """The surviving side(s) put back, nothing leaked."""
        pump(0.3)
        if src:
            self.assertEqual(self.src.state(SRC_DEV), 'running')
        if dst:
            self.assertEqual(self.dst.state(DST_DEV), 'running')
            self.assertEqual(self.dst.state(REJECT_DEV), 'running')
            if reservation:
                self.assertEqual(self.dst.get(self.reservation, RESERVATION, 'State'), 'active')
        for host in ((self.src,) if src else ()) + ((self.dst,) if dst else ()):
            before = self.fds.get(host.proc.pid)
            if before is not None:
                self.assertLessEqual(host.fd_count(), before, f'FDs leaked in {host.proc.pid}')

    def assert_failed(self, job, side, *words):
        self.assertEqual(job['State'], 'failed', job['Error'])
        self.assertRegex(job['Error'], r'^org\.vfmig1\.Error\.\w+: ')
        self.assertIn(side, job['Error'].split(': ', 1)[1])
        for w in words:
            self.assertIn(w, job['Error'])

    # --- a peer killed mid-stream ---------------------------------------------------------

    def restarted_report(self, host, dev, kind):
        """The killed daemon, restarted: its device running, the job reported failed."""
        self.assertEqual(host.state(dev), 'running')
        jobs = [j for j in host.jobs().values() if j['Devices'] == [dev] and j['Kind'] == kind]
        self.assertEqual(len(jobs), 1, jobs)
        self.assertEqual(jobs[0]['State'], 'failed')
        self.assertEqual(jobs[0]['Error'], RECOVERED_ERROR)
        with open(host.log.name) as f:
            log = f.read()
        self.assertIn(f'{kind} of {dev} interrupted by a restart', log)

    def proxied(self, pause_at, opts=None, half_close=False):
        """Migrate through a Proxy paused after pause_at bytes: (proxy, src_job, dst_job)."""
        self.reserve()
        endpoint, ticket, dst_job = self.prepare()
        proxy = Proxy(endpoint, pause_at=pause_at, half_close=half_close)
        self.addCleanup(proxy.close)
        src_job = self.migrate(proxy.endpoint, ticket, opts)
        wait_until(lambda: proxy.relay and proxy.relay.paused.is_set(), timeout=60, what=f'{pause_at} bytes')
        pump(0.1)
        return proxy, src_job, dst_job

    def test_kill_target_mid_stream(self):
        for offset in (100, 16 << 20, 128 << 20):      # in the TLS handshake, early, late
            with self.subTest(offset=offset):
                self.setUp()
                proxy, src_job, dst_job = self.proxied(offset)
                self.dst.proc.send_signal(signal.SIGKILL)
                self.dst.proc.wait(10)
                self.dst.log.close()
                proxy.relay.resume()
                try:
                    s = self.wait_final(self.src, src_job)
                    self.assert_failed(s, 'connection')
                    self.assert_unwound(dst=False)
                finally:
                    type(self).dst = self.start_dst()
                self.restarted_report(self.dst, DST_DEV, 'restore')
                # the persistent reservation survived the restart, active again
                self.assertEqual(self.dst.get(self.reservation, RESERVATION, 'State'), 'active')
                proxy.close()
                self.tearDown()

    def test_kill_source_mid_stream(self):
        for offset in (16 << 20, 128 << 20):
            with self.subTest(offset=offset):
                self.setUp()
                proxy, src_job, dst_job = self.proxied(offset)
                self.src.proc.send_signal(signal.SIGKILL)
                self.src.proc.wait(10)
                self.src.log.close()
                proxy.relay.resume()
                try:
                    d = self.wait_final(self.dst, dst_job)
                    self.assert_failed(d, 'source')
                    self.assert_unwound(src=False)
                finally:
                    type(self).src = self.start_src()
                self.restarted_report(self.src, SRC_DEV, 'save')
                proxy.close()
                self.tearDown()

    # --- the stream relayed by the test ---------------------------------------------------------

    def relayed(self, tls=False, dst_opts=None, wait=True, **relay_opts):
        """SaveToFd -> Relay -> ReceiveFromFd, in plaintext or over TLS.
        wait=False: (relay, src_job, dst_job) at once."""
        self.reserve()
        a, a2 = socket.socketpair()
        b, b2 = socket.socketpair()
        opts = ({'ticket': GLib.Variant('s', random_ticket())} if tls else
                {'plaintext': GLib.Variant('b', True)})
        try:
            dst_job = self.dst.call(self.reservation, RESERVATION, 'ReceiveFromFd', '(ha{sv})',
                                    (0, dict(opts, **(dst_opts or {}))), fds=[b.fileno()])[0]
            src_job = self.src.call(self.src.device(SRC_DEV), vt.DEVICE, 'SaveToFd', '(ha{sv})', (0, opts),
                                    fds=[a.fileno()])[0]
        finally:
            a.close()
            b.close()
        relay = Relay(a2, b2, **relay_opts)
        if not wait:
            self.addCleanup(relay.close)
            return relay, src_job, dst_job
        try:
            return self.wait_final(self.src, src_job), self.wait_final(self.dst, dst_job)
        finally:
            relay.close()

    def test_corrupted_stream(self):
        for at in (100, 40 << 20):         # in the header record, in a data record
            with self.subTest(at=at):
                self.setUp()
                s, d = self.relayed(corrupt_at=at)
                self.assert_failed(d, 'target: invalid stream')
                self.assertTrue(d['Error'].startswith('org.vfmig1.Error.StreamInvalid'), d['Error'])
                self.assertEqual(s['State'], 'failed')
                self.assert_unwound()
                self.tearDown()

    def test_truncated_stream(self):
        for at in (10, 1000, 40 << 20):
            with self.subTest(at=at):
                self.setUp()
                s, d = self.relayed(stop_at=at)
                self.assert_failed(d, 'source/connection', 'closed')
                self.assertEqual(s['State'], 'failed')
                self.assert_unwound()
                self.tearDown()

    def test_tls_corrupted_stream(self):
        """TLS records changed on the wire: in the handshake the handshake fails;
        in a data record the target refuses it (bad_record_mac) before writing
        any byte of it to the device; both unwind."""
        for at, side, words in ((100, 'target:', ('handshake',)),
                                (40 << 20, 'source/connection', ('failed authentication', 'bad_record_mac'))):
            with self.subTest(at=at):
                self.setUp()
                s, d = self.relayed(tls=True, corrupt_at=at)
                self.assert_failed(d, side, *words)
                self.assertEqual(s['State'], 'failed')
                self.assertLess(d['BytesTransferred'], 40 << 20)
                self.assert_unwound()
                self.tearDown()

    def test_tls_truncated_stream(self):
        """A TLS connection cut inside a record: no close_notify, the target fails."""
        for at in (40 << 20) + 7, (40 << 20) + 16000:
            with self.subTest(at=at):
                self.setUp()
                s, d = self.relayed(tls=True, stop_at=at)
                self.assert_failed(d, 'source/connection', 'without close_notify', 'inside a record')
                self.assertEqual(s['State'], 'failed')
                self.assert_unwound()
                self.tearDown()

    # --- tickets ---------------------------------------------------------------------------------

    def test_replayed_ticket_after_success(self):
        self.reserve()
        endpoint, ticket, dst_job = self.prepare()
        src_job = self.migrate(endpoint, ticket)
        self.assertEqual(self.wait_final(self.src, src_job)['State'], 'completed')
        self.assertEqual(self.wait_final(self.dst, dst_job)['State'], 'completed')
        self.src.reset(SRC_DEV)
        self.dst.reset(DST_DEV)
        self.replay(endpoint, ticket)

    def test_replayed_ticket_after_failure(self):
        self.reserve()
        endpoint, ticket, dst_job = self.prepare()
        self.dst.call(dst_job, JOB, 'Cancel')
        self.assertEqual(self.wait_final(self.dst, dst_job)['State'], 'cancelled')
        self.replay(endpoint, ticket)

    def replay(self, endpoint, ticket):
        # the old listener is gone ...
        try:
            src_job = self.migrate(endpoint, ticket)
            self.assert_failed(self.wait_final(self.src, src_job), 'connection')
        except GLib.Error:
            pass
        self.assertEqual(self.src.state(SRC_DEV), 'running')
        # ... and a new one (new ticket) refuses the old ticket before anything moves
        endpoint2, ticket2, dst_job2 = self.prepare()
        self.assertNotEqual(ticket2, ticket)
        src_job = self.migrate(endpoint2, ticket)
        s = self.wait_final(self.src, src_job)
        self.assertTrue(s['Error'].startswith('org.vfmig1.Error.AccessDenied'), s['Error'])
        self.assertEqual(self.src.state(SRC_DEV), 'running')
        self.assertEqual(self.dst.state(DST_DEV), 'running')
        self.assertEqual(self.dst.job(dst_job2)['State'], 'waiting')
        self.dst.call(dst_job2, JOB, 'Cancel')
        self.wait_final(self.dst, dst_job2)
        self.assert_unwound()

    def test_replayed_ticket_fd_mode(self):
        t = GLib.Variant('s', random_ticket())

        def once():
            a, b = socket.socketpair()
            try:
                dst_job = self.dst.call(self.reservation, RESERVATION, 'ReceiveFromFd', '(ha{sv})',
                                        (0, {'ticket': t}), fds=[b.fileno()])[0]
                src_job = self.src.call(self.src.device(SRC_DEV), vt.DEVICE, 'SaveToFd', '(ha{sv})',
                                        (0, {'ticket': t}), fds=[a.fileno()])[0]
            finally:
                a.close()
                b.close()
            return self.wait_final(self.src, src_job), self.wait_final(self.dst, dst_job)

        self.reserve()
        s, d = once()
        self.assertEqual((s['State'], d['State']), ('completed', 'completed'), (s['Error'], d['Error']))
        self.src.reset(SRC_DEV)
        self.dst.reset(DST_DEV)
        s, d = once()
        self.assert_failed(d, 'target')
        self.assertTrue(d['Error'].startswith('org.vfmig1.Error.AccessDenied'), d['Error'])
        self.assertEqual(s['State'], 'failed')
        self.assert_unwound()

    def test_expired_ticket(self):
        self.reserve(lease=2)
        endpoint, ticket, dst_job = self.prepare()
        d = self.wait_final(self.dst, dst_job, timeout=10)
        self.assert_failed(d, 'target', 'expired')
        with self.assertRaises(GLib.Error):
            src_job = self.migrate(endpoint, ticket)
            self.wait_final(self.src, src_job)
            raise GLib.Error('the job failed')      # either refused at once or failed
        self.assertEqual(self.src.state(SRC_DEV), 'running')
        self.assertEqual(self.dst.state(DST_DEV), 'running')
        self.reservation = None                      # the lease ended it
        self.assert_unwound(reservation=False)

    # --- Cancel mid-stream --------------------------------------------------------------------

    def test_cancel_streaming_source(self):
        proxy, src_job, dst_job = self.proxied(32 << 20)
        self.assertEqual(self.src.job(src_job)['State'], 'switchover')
        self.assertEqual(self.dst.job(dst_job)['State'], 'streaming')
        self.src.call(src_job, JOB, 'Cancel')
        proxy.relay.resume()
        s = self.wait_final(self.src, src_job)
        d = self.wait_final(self.dst, dst_job)
        self.assertEqual(s['State'], 'cancelled')
        self.assert_failed(d, 'source')
        self.assertIn('cancel', d['Error'])
        self.assert_unwound()

    def test_cancel_source_after_end_refused(self):
        """Once the END record is on its way the target may take (and with
        resume-running run) the state: Cancel of the source is refused (Busy)
        and changes nothing; the target's answer ends both jobs."""
        proxy, src_job, dst_job = self.proxied(STATE_SIZE, half_close=True)    # all but the last bytes
        # every data record written (into the socket buffers behind the
        # paused relay): END goes out in the same step
        wait_until(lambda: self.src.job(src_job)['BytesTransferred'] >= STATE_SIZE, what='all data records sent')
        pump(0.3)
        with self.assertRaises(GLib.Error) as e:
            self.src.call(src_job, JOB, 'Cancel')
        self.assertEqual(error_name(e.exception), 'org.vfmig1.Error.Busy')
        self.assertIn('whole state', str(e.exception))
        self.assertEqual(self.src.state(SRC_DEV), 'stop-copy')
        proxy.relay.resume()
        s = self.wait_final(self.src, src_job)
        d = self.wait_final(self.dst, dst_job)
        self.assertEqual((s['State'], d['State']), ('completed', 'completed'), (s['Error'], d['Error']))
        self.assertEqual(self.dst.memory(DST_DEV), self.src.memory(SRC_DEV))

    def test_cancel_streaming_target(self):
        proxy, src_job, dst_job = self.proxied(32 << 20)
        self.assertEqual(self.dst.job(dst_job)['State'], 'streaming')
        self.dst.call(dst_job, JOB, 'Cancel')
        proxy.relay.resume()
        s = self.wait_final(self.src, src_job)
        d = self.wait_final(self.dst, dst_job)
        self.assertEqual(d['State'], 'cancelled')
        self.assert_failed(s, 'target')
        self.assertIn('cancel', s['Error'])
        self.assert_unwound()

    # --- the end of a resume-running migration: the source's COMMIT ---------------------------

    RESUME = {'resume-running': GLib.Variant('b', True)}

    def assert_held(self, d):
        """The target kept the whole state, stopped: not reset, not started."""
        self.assert_failed(d, 'target', 'confirm', 'not started', 'hold the whole state')
        self.assertTrue(d['Error'].startswith('org.vfmig1.Error.NotConfirmed'), d['Error'])
        self.assertEqual(self.dst.state(DST_DEV), 'stop')
        self.assertEqual(self.dst.memory(DST_DEV), self.src.memory(SRC_DEV))
        self.assertEqual(self.dst.get(self.reservation, RESERVATION, 'State'), 'active')

    def test_resume_running_commit(self):
        """The source reads the answer and confirms; only then the target starts
        its devices.  Between the two, Cancel of the target is refused: its
        devices may hold the only copy of the state."""
        relay, src_job, dst_job = self.relayed(tls=True, dst_opts=self.RESUME, wait=False, half_close=True,
                                               answer='hold')
        wait_until(relay.held.is_set, timeout=60, what='the COMMIT held by the relay')
        s = self.wait_final(self.src, src_job)
        self.assertEqual(s['State'], 'completed', s['Error'])
        self.assertEqual(self.src.state(SRC_DEV), 'stop')
        self.assertEqual(self.dst.job(dst_job)['State'], 'streaming')
        self.assertEqual(self.dst.state(DST_DEV), 'stop')          # not started before the COMMIT
        with self.assertRaises(GLib.Error) as e:
            self.dst.call(dst_job, JOB, 'Cancel')
        self.assertEqual(error_name(e.exception), 'org.vfmig1.Error.Busy')
        self.assertIn("source's confirmation", str(e.exception))
        relay.resume()
        d = self.wait_final(self.dst, dst_job)
        self.assertEqual(d['State'], 'completed', d['Error'])
        self.assertEqual(self.dst.state(DST_DEV), 'running')
        self.assertEqual(self.dst.memory(DST_DEV), self.src.memory(SRC_DEV))

    def test_resume_running_commit_lost(self):
        """The source read the answer and completed (its devices stay stopped),
        its COMMIT never arrives: the target does not start its devices and
        does not reset them either.  Nothing runs twice, nothing is lost."""
        s, d = self.relayed(tls=True, dst_opts=self.RESUME, half_close=True, answer='cut')
        self.assertEqual(s['State'], 'completed', s['Error'])
        self.assertEqual(self.src.state(SRC_DEV), 'stop')
        self.assert_held(d)

    def test_resume_running_answer_lost(self):
        """The target's answer never reaches the source: the source fails and
        runs its devices again; the target, unconfirmed, keeps them stopped
        (before the COMMIT step it started them: both would have run)."""
        s, d = self.relayed(tls=True, dst_opts=self.RESUME, half_close=True, answer='drop')
        self.assert_failed(s, 'connection', "the target's answer")
        self.assertEqual(self.src.state(SRC_DEV), 'running')
        self.assert_held(d)

    def commit_withheld(self, dst_opts):
        """The source's COMMIT held back by the relay, the connection left open
        (a source host gone silent): the target waits timeout-ms, 1000 here."""
        opts = dict(dst_opts, **{'timeout-ms': GLib.Variant('u', 1000)})
        relay, src_job, dst_job = self.relayed(tls=True, dst_opts=opts, wait=False, half_close=True, answer='hold')
        wait_until(relay.held.is_set, timeout=60, what='the COMMIT held by the relay')
        s = self.wait_final(self.src, src_job)
        self.assertEqual(s['State'], 'completed', s['Error'])
        self.assertEqual(self.src.state(SRC_DEV), 'stop')
        return self.wait_final(self.dst, dst_job, timeout=30)

    def test_commit_withheld_resume_running(self):
        d = self.commit_withheld(self.RESUME)
        self.assert_held(d)
        self.assertIn('within 1000 ms', d['Error'])

    def test_commit_withheld_without_resume_running(self):
        """Without resume-running the target's devices stay in STOP anyway: the
        job completes when the wait ends, it does not hang."""
        d = self.commit_withheld({})
        self.assertEqual(d['State'], 'completed', d['Error'])
        self.assertEqual(self.dst.state(DST_DEV), 'stop')
        self.assertEqual(self.dst.memory(DST_DEV), self.src.memory(SRC_DEV))

    # --- the source stops sending: the target's stall timeout -------------------------------------

    def test_source_stops_sending(self):
        """The source goes silent in the middle of its stream (its host gone
        without a FIN or a reset: the relay just stops passing bytes on): with
        timeout-ms 1000 the target fails TimedOut, resets its device and keeps
        its reservation, instead of waiting for ever."""
        self.reserve()
        endpoint, ticket, dst_job = self.prepare({'timeout-ms': GLib.Variant('u', 1000)})
        proxy = Proxy(endpoint, pause_at=16 << 20)
        self.addCleanup(proxy.close)
        src_job = self.migrate(proxy.endpoint, ticket)
        wait_until(lambda: proxy.relay and proxy.relay.paused.is_set(), timeout=60, what='16 MiB relayed')
        d = self.wait_final(self.dst, dst_job, timeout=30)
        self.assert_failed(d, 'connection', 'no progress for 1000 ms', 'stopped sending')
        self.assertTrue(d['Error'].startswith('org.vfmig1.Error.TimedOut'), d['Error'])
        proxy.close()
        s = self.wait_final(self.src, src_job)
        self.assertEqual(s['State'], 'failed')
        self.assert_unwound()

    # --- the target stops reading: the source's stall timeout -------------------------------------

    def test_target_stops_reading(self):
        # the relay stops reading the source's bytes after 32 MiB: the source's
        # socket fills and stays full
        proxy, src_job, dst_job = self.proxied(32 << 20, {'timeout-ms': GLib.Variant('u', 1000)})
        self.assertEqual(self.src.job(src_job)['State'], 'switchover')
        s = self.wait_final(self.src, src_job, timeout=20)
        self.assert_failed(s, 'connection', 'no progress for 1000 ms')
        self.assertTrue(s['Error'].startswith('org.vfmig1.Error.TimedOut'), s['Error'])
        self.assertEqual(self.src.state(SRC_DEV), 'running')
        self.assertEqual(self.dst.job(dst_job)['State'], 'streaming')     # the target still waits ...
        proxy.relay.resume()
        proxy.close()
        d = self.wait_final(self.dst, dst_job)                            # ... until the connection closes
        self.assert_failed(d, 'source')
        self.assert_unwound()

    def test_target_ends_connection_while_source_blocked(self):
        """The far end closes its side (a FIN, no reset) while the source's socket
        is full and stays so (nobody reads it: a zero window), as a target that
        died behind a middlebox looks: the source notices at once, not at its
        stall timeout (here ten minutes), and its device runs again."""
        proxy, src_job, dst_job = self.proxied(32 << 20, {'timeout-ms': GLib.Variant('u', 600000)})
        self.assertEqual(self.src.job(src_job)['State'], 'switchover')
        proxy.relay.a.shutdown(socket.SHUT_WR)          # the source's bytes are still not read
        s = self.wait_final(self.src, src_job, timeout=30)
        self.assert_failed(s, 'connection', "the target's answer")
        self.assertFalse(s['Error'].startswith('org.vfmig1.Error.TimedOut'), s['Error'])
        self.assertEqual(self.src.state(SRC_DEV), 'running')
        proxy.relay.resume()
        proxy.close()
        d = self.wait_final(self.dst, dst_job)
        self.assert_failed(d, 'source')
        self.assert_unwound()

    def test_listener_never_answers(self):
        # accepts the connection, never reads or writes: the handshake is bounded
        # by timeout-ms too (the default bound is 30 s, past this wait)
        lst = socket.create_server(('127.0.0.1', 0))
        conns = []
        stop = threading.Event()

        def accept():
            lst.settimeout(0.2)
            while not stop.is_set():
                try:
                    conns.append(lst.accept()[0])
                except OSError:
                    pass
        t = threading.Thread(target=accept, daemon=True)
        t.start()
        try:
            src_job = self.migrate('127.0.0.1:%d' % lst.getsockname()[1], random_ticket(),
                                   {'timeout-ms': GLib.Variant('u', 500)})
            s = self.wait_final(self.src, src_job, timeout=20)
        finally:
            stop.set()
            t.join(5)
            for c in conns:
                c.close()
            lst.close()
        self.assertEqual(len(conns), 1)
        self.assert_failed(s, 'connection', 'handshake')
        self.assertTrue(s['Error'].startswith('org.vfmig1.Error.TimedOut'), s['Error'])
        self.assertEqual(self.src.state(SRC_DEV), 'running')
        self.assert_unwound(dst=False)

    def test_timeout_option_bounds(self):
        for v in (1, 99, 3600001):
            with self.assertRaises(GLib.Error) as e:
                self.migrate('127.0.0.1:1', random_ticket(), {'timeout-ms': GLib.Variant('u', v)})
            self.assertEqual(error_name(e.exception), 'org.vfmig1.Error.InvalidArgs')
            self.assertIn('timeout-ms', str(e.exception))
        with self.assertRaises(GLib.Error) as e:
            self.migrate('127.0.0.1:1', random_ticket(), {'timeout-ms': GLib.Variant('s', '5')})
        self.assertEqual(error_name(e.exception), 'org.vfmig1.Error.InvalidArgs')
        self.assertEqual(self.src.state(SRC_DEV), 'running')
        # the target's: how long it waits for the COMMIT (PrepareIncoming, ReceiveFromFd)
        self.reserve()
        for v in (1, 99, 3600001):
            with self.assertRaises(GLib.Error) as e:
                self.dst.call(self.reservation, RESERVATION, 'PrepareIncoming', '(a{sv})',
                              ({'timeout-ms': GLib.Variant('u', v)},))
            self.assertEqual(error_name(e.exception), 'org.vfmig1.Error.InvalidArgs')
            self.assertIn('timeout-ms', str(e.exception))
            a, b = socket.socketpair()
            try:
                with self.assertRaises(GLib.Error) as e:
                    self.dst.call(self.reservation, RESERVATION, 'ReceiveFromFd', '(ha{sv})',
                                  (0, {'plaintext': GLib.Variant('b', True), 'timeout-ms': GLib.Variant('u', v)}),
                                  fds=[b.fileno()])
            finally:
                a.close()
                b.close()
            self.assertEqual(error_name(e.exception), 'org.vfmig1.Error.InvalidArgs')
        self.assertEqual(self.dst.get(self.reservation, RESERVATION, 'State'), 'active')
        self.assertEqual([j for j in self.dst.jobs().values() if j['State'] not in FINAL], [])

    # --- the target device rejects the data ---------------------------------------------------------

    def test_target_device_rejects_data(self):
        self.reserve(target=REJECT_DEV)
        endpoint, ticket, dst_job = self.prepare()
        src_job = self.migrate(endpoint, ticket)
        s = self.wait_final(self.src, src_job)
        d = self.wait_final(self.dst, dst_job)
        self.assert_failed(d, 'target', REJECT_DEV)
        self.assertTrue(d['Error'].startswith('org.vfmig1.Error.DeviceFailed'), d['Error'])
        self.assert_failed(s, 'target', REJECT_DEV)
        with open(self.dst.log.name) as f:
            self.assertIn('device reset', f.read())
        self.assert_unwound()


if __name__ == '__main__':
    vt.main()
