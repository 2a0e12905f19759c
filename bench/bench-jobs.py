#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""bench-jobs — migration jobs between two real vfmigd daemons (DESIGN §8).

Two simulated hosts, each a private system bus (the bench bus config: the
shipped policy) and its own vfmigd --simulate HOSTFILE, host files written by
bench/gen-jobs-hosts.py (ConnectX-7 VFs, paired by name).  A migration is
driven as an orchestrator would: GetMigrationProfile on the source, Reserve
and PrepareIncoming (endpoint, ticket) on the target, Device.Migrate on the
source (TLS 1.3 PSK over TCP on 127.0.0.1), then both Job objects to the end.

Sections, each printing "name value" lines; medians over --rounds.  Every
throughput is put against a baseline measured right before it (the machine's
load changes by the second): bench-jobs-raw (C, one process for the run,
its mappings made and warmed once), a raw loopback TCP copy of the same
bytes from one memfd mapping to another, one thread per side, no framing,
no TLS (the jobs run TLS 1.3 PSK; bench-stream gives the stream's
own TLS-vs-raw ratio).

  mem      daemon memory during a --small-mib (64) and a --big-mib (1024)
           stop-copy migration: /proc/PID/status of BOTH daemons sampled every
           2 ms.  The simulated device memory is a memfd mapped by the daemon,
           so it shows as RssShmem (and in VmRSS/VmHWM), as real device memory
           would not show at all; what the daemon itself allocates is RssAnon.
           Flat means rssanon_big_vs_small_ratio near 1.  VmHWM is reset
           before each migration (clear_refs 5) and printed for reference: it
           includes the memory of every simulated device the daemon holds;
  downtime PredictedDowntimeMs, DowntimeMs, stop-copy bytes and Throughput of
           the two stop-copy migrations above, of a --floor-kib (64) state
           (the fixed cost of the window), and of pre-copy migrations of a
           --precopy-mib (256) state dirtied at --dirty-mib-s (16) while it
           runs: without a downtime budget (switch over once the pre-copy data
           is sent), with --budget-ms (100); and a "hot" device of the same
           size dirtied at --hot-mib-s (4096, faster than any link here, so
           pre-copy never converges and about the whole state is dirty at any
           time), switched over by Job.Switchover() once the initial pass is
           sent: a large window, so the prediction matters.  Then the
           DESIGN bound  measured <= 1.1 x (stop-copy bytes / measured
           throughput) + 5 ms, rounds_met and target_met 1 when every round
           met it, downtime_overhead_ms = measured - bytes / throughput.
           Stop-copy bytes: the whole stream for a stop-copy job; for a
           pre-copy job the data size left at switchover, from the source
           daemon's log line (the Job object does not expose it).  Throughput
           is the job's own Throughput (whole job, pre-copy phase included).
           ping_rtt: Peer.Ping round trips to a daemon, the scheduling noise.
           streaming_backlog_median_bytes (pre-copy): while both jobs stream,
           the bytes the source has sent that the target has not received yet
           (socket buffers, pumps), polled every 10 ms: BytesTransferred of the
           source, then of the target, so a lower bound.  At switchover they
           still have to cross in the window, yet they are in neither the
           data size nor the prediction: downtime_bound_with_backlog_ms adds
           them to the stop-copy bytes;
  conc     --jobs (64) devices of --job-mib (16) per host; per round one
           migration alone (the single-job baseline), then all of them
           started at once (asynchronous Migrate calls in one burst): errors
           (must be 0), completion time, aggregate throughput (all bytes from
           the first Migrate call to the last Finished) against the single
           job and against the raw copy, per-job Throughput and finish-time
           spread, per_job.streaming_start_last_s (when the last job's bytes
           began to move, from its Throughput: how long a job waited),
           daemon RssAnon growth per job.

Options: --vfmigd PATH, --raw PATH (bench-jobs-raw), --bus-config FILE,
--rules DIR (defaults: the build tree in MESON_BUILD_ROOT or build/, the
source tree), --rounds N (3), --conc-rounds N (3), --floor-kib, --small-mib,
--big-mib, --precopy-mib, --dirty-mib-s, --hot-mib-s, --budget-ms, --jobs,
--job-mib,
--conc-timeout S, --only SECTION[,SECTION] (mem,downtime,conc: mem and
downtime share their migrations), --keep (keep the temporary directory with
the host files and daemon logs).

Exit status 1 when any migration failed, a section could not run, or a daemon
did not exit cleanly; the failure is printed (jobs.*.errors, "# FAILED"
lines) first.  The daemon keeps finished jobs for 300 s and refuses more than
256 jobs in all (JOBS_MAX), so each section gets its own pair of daemons and
the round counts are checked against it.
"""
import argparse
import importlib.util
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib  # noqa: E402

BUS_NAME = 'org.vfmig1'
ROOT_PATH = '/org/vfmig1'
MANAGER = 'org.vfmig1.Manager'
DEVICE = 'org.vfmig1.Device'
JOB = 'org.vfmig1.Job'
RESERVATION = 'org.vfmig1.Reservation'
FINAL = ('completed', 'failed', 'cancelled')
MIB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.path.dirname(HERE)
MEM_FIELDS = ('RssAnon', 'RssShmem', 'RssFile', 'VmRSS', 'VmHWM')

_spec = importlib.util.spec_from_file_location('gen_jobs_hosts', os.path.join(HERE, 'gen-jobs-hosts.py'))
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


class BenchError(Exception):
    pass


def out(name, value):
    if isinstance(value, float):
        value = f'{value:.3f}' if abs(value) < 1000 else f'{value:.1f}'
    print(f'{name} {value}', flush=True)


def note(msg):
    print(f'# {msg}', flush=True)


def median(xs):
    return statistics.median(xs) if xs else float('nan')


def mb_s(bytes_per_s):
    return bytes_per_s / 1e6


def downtime_bound_ms(stop_bytes, throughput):
    """DESIGN §8: measured stop-copy window <= 1.1 x (bytes / throughput) + 5 ms."""
    if throughput <= 0:
        return float('nan')
    return 1.1 * stop_bytes / throughput * 1000.0 + 5.0


def proc_status(pid):
    """The memory fields (kB) of /proc/PID/status."""
    r = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            k, _, v = line.partition(':')
            if k in MEM_FIELDS:
                r[k] = int(v.split()[0])
    return r


def pump(ctx=None):
    ctx = ctx or GLib.MainContext.default()
    while ctx.iteration(False):
        pass


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        pump()
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise BenchError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(0.002)


# --- the raw loopback baseline ---------------------------------------------------

class RawCopy:
    """bench-jobs-raw --serve: a plain loopback TCP copy of N bytes between two
    memfd mappings, made and warmed once, then one copy per call."""

    def __init__(self, raw, max_bytes):
        self.proc = subprocess.Popen([raw, '--serve', str(max_bytes)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != 'ready':
            raise BenchError(f'{raw} --serve {max_bytes} did not start (exit {self.proc.poll()})')

    def rate(self, size):
        """Bytes/s of one copy of `size` bytes."""
        self.proc.stdin.write(f'{size}\n')
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        try:
            return float(line)
        except ValueError:
            raise BenchError(f'bench-jobs-raw: {line or "exited with " + str(self.proc.poll())}') from None

    def close(self):
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc.wait(60)


# --- memory sampling ---------------------------------------------------------------

class MemSampler:
    """Peak RssAnon/RssShmem of some processes, read every `interval` s."""

    def __init__(self, pids, interval=0.002):
        self.pids = list(pids)
        self.interval = interval
        self.peak = {p: {} for p in self.pids}
        self.before = {}
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        for p in self.pids:
            # VmHWM := current RSS, so the VmHWM read at the end is this window's
            try:
                with open(f'/proc/{p}/clear_refs', 'w') as f:
                    f.write('5')
            except OSError:
                pass
            self.before[p] = proc_status(p)
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        for p in self.pids:
            try:
                st = proc_status(p)
            except OSError:
                continue
            pk = self.peak[p]
            for k, v in st.items():
                if v > pk.get(k, -1):
                    pk[k] = v

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self._sample()
        return self


# --- two simulated hosts -------------------------------------------------------------

class Bus:
    def __init__(self, conf):
        self.proc = subprocess.Popen(['dbus-daemon', '--config-file=' + conf, '--nofork', '--print-address'],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            raise BenchError(f'dbus-daemon with {conf} printed no address')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()


class Host:
    """One vfmigd --simulate on its own private bus, with a root connection."""

    def __init__(self, label, host_file, args, tmp):
        self.label = label
        self.bus_daemon = Bus(args.bus_config)
        d = os.path.join(tmp, label)
        for sub in ('state', 'cache'):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        self.log_path = os.path.join(d, 'vfmigd.log')
        self.log = open(self.log_path, 'w')
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bus_daemon.address,
                   STATE_DIRECTORY=os.path.join(d, 'state'), CACHE_DIRECTORY=os.path.join(d, 'cache'))
        env.pop('NOTIFY_SOCKET', None)
        env.pop('JOURNAL_STREAM', None)
        self.proc = subprocess.Popen([args.vfmigd, '--simulate', host_file,
                                      '--config', '/nonexistent/vfmigd.conf', '--rules', args.rules,
                                      '--admin-rules', '/nonexistent/compat.d'],
                                     env=env, stdout=self.log, stderr=self.log)
        self.pid = self.proc.pid
        self.bus = Gio.DBusConnection.new_for_address_sync(
            self.bus_daemon.address,
            Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
            None, None)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f'{label}: vfmigd exited with {self.proc.returncode}: {self.log_tail()}')
            if self.bus.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
                                  'NameHasOwner', GLib.Variant('(s)', (BUS_NAME,)), None,
                                  Gio.DBusCallFlags.NONE, -1, None).unpack()[0]:
                break
            if time.monotonic() > deadline:
                raise BenchError(f'{label}: vfmigd did not take its bus name')
            time.sleep(0.02)
        self.finished = {}          # job path -> (state, error, monotonic time)
        self.bus.signal_subscribe(BUS_NAME, JOB, 'Finished', None, None, Gio.DBusSignalFlags.NONE,
                                  self._on_finished)
        self.added = {}             # job path -> its Job properties when it appeared
        self.bus.signal_subscribe(BUS_NAME, 'org.freedesktop.DBus.ObjectManager', 'InterfacesAdded', ROOT_PATH,
                                  None, Gio.DBusSignalFlags.NONE, self._on_added)
        self.paths = {}

    def _on_finished(self, conn, sender, path, iface, member, params):
        state, error = params.unpack()
        self.finished.setdefault(path, (state, error, time.monotonic()))

    def _on_added(self, conn, sender, path, iface, member, params):
        obj, ifaces = params.unpack()
        if JOB in ifaces:
            self.added[obj] = ifaces[JOB]

    def log_tail(self, n=5):
        try:
            with open(self.log_path) as f:
                return ' | '.join(f.read().splitlines()[-n:])
        except OSError:
            return ''

    def call_raw(self, path, iface, method, params=None, timeout=60000):
        return self.bus.call_sync(BUS_NAME, path, iface, method, params, None, Gio.DBusCallFlags.NONE,
                                  timeout, None)

    def call(self, path, iface, method, sig=None, args=None, timeout=60000):
        return self.call_raw(path, iface, method, GLib.Variant(sig, args) if sig else None, timeout).unpack()

    def device(self, name):
        if name not in self.paths:
            self.paths[name] = self.call(ROOT_PATH, MANAGER, 'GetDevice', '(s)', (name,))[0]
        return self.paths[name]

    def state(self, name):
        return self.call(self.device(name), 'org.freedesktop.DBus.Properties', 'Get', '(ss)',
                         (DEVICE, 'MigrationState'))[0]

    def ensure_running(self, name):
        if self.state(name) != 'running':
            self.call(self.device(name), DEVICE, 'Reset')

    def job(self, path):
        return self.call(path, 'org.freedesktop.DBus.Properties', 'GetAll', '(s)', (JOB,))[0]

    def jobs(self):
        objs = self.call(ROOT_PATH, 'org.freedesktop.DBus.ObjectManager', 'GetManagedObjects')[0]
        return {p: i[JOB] for p, i in objs.items() if JOB in i}

    def mem(self):
        return proc_status(self.pid)

    def ping_ms(self, n):
        """Round trips of org.freedesktop.DBus.Peer.Ping to this vfmigd, in ms."""
        r = []
        for _ in range(n):
            t0 = time.monotonic()
            self.call_raw(ROOT_PATH, 'org.freedesktop.DBus.Peer', 'Ping')
            r.append((time.monotonic() - t0) * 1000.0)
        return sorted(r)

    def stop(self):
        rc = None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            rc = 'no exit on SIGTERM'
        finally:
            self.log.close()
            self.bus.close_sync(None)
            self.bus_daemon.stop()
        return rc


class Pair:
    """A source and a target host with the devices of `specs` on each."""

    def __init__(self, name, specs, args, tmp):
        self.name = name
        d = os.path.join(tmp, name)
        os.makedirs(d, exist_ok=True)
        sf, tf = os.path.join(d, 'source.json'), os.path.join(d, 'target.json')
        gen.write_pair(sf, tf, specs)
        self.src = self.dst = None
        self.claimed = set()        # restore jobs already handed out by prepare()
        t0 = time.monotonic()
        self.src = Host(f'{name}-src', sf, args, tmp)
        try:
            self.dst = Host(f'{name}-dst', tf, args, tmp)
        except Exception:
            self.src.stop()
            raise
        note(f'{name}: {len(specs)} device(s) per host, source vfmigd pid {self.src.pid}, '
             f'target vfmigd pid {self.dst.pid}, started in {time.monotonic() - t0:.2f} s')

    def stop(self):
        rcs = (self.src.stop(), self.dst.stop())
        if rcs != (0, 0):
            raise BenchError(f'{self.name}: daemons exited with {rcs} (source, target); logs: '
                             f'{self.src.log_tail()} || {self.dst.log_tail()}')

    # --- one migration, step by step ----------------------------------------------------

    def prepare(self, sdev, ddev):
        """Reserve ddev for sdev's profile and prepare the incoming side."""
        self.src.ensure_running(sdev)
        self.dst.ensure_running(ddev)
        profile = self.src.call_raw(ROOT_PATH, MANAGER, 'GetMigrationProfile',
                                    GLib.Variant('(s)', (sdev,))).get_child_value(0)
        res = self.dst.call_raw(ROOT_PATH, MANAGER, 'Reserve', GLib.Variant.new_tuple(
            GLib.Variant('s', ddev), profile, GLib.Variant('a{sv}', {}))).unpack()[0]
        endpoint, ticket = self.dst.call(res, RESERVATION, 'PrepareIncoming', '(a{sv})',
                                         ({'address': GLib.Variant('s', '127.0.0.1')},))
        def restore_jobs(jobs):
            return [p for p, j in jobs.items() if p not in self.claimed and j.get('Kind') == 'restore'
                    and list(j.get('Devices', [])) == [ddev]]
        pump()
        waiting = restore_jobs(self.dst.added)
        if len(waiting) != 1:       # the signal did not come (yet): ask
            waiting = [p for p in restore_jobs(self.dst.jobs()) if p not in self.dst.finished]
        if len(waiting) != 1:
            raise BenchError(f'{ddev}: {len(waiting)} waiting restore jobs after PrepareIncoming')
        self.claimed.add(waiting[0])
        return {'sdev': sdev, 'ddev': ddev, 'reservation': res, 'endpoint': endpoint, 'ticket': ticket,
                'dst_job': waiting[0]}

    def release(self, m):
        try:
            self.dst.call(m['reservation'], RESERVATION, 'Release')
        except GLib.Error as e:
            note(f'release of {m["reservation"]}: {e.message}')

    @staticmethod
    def migrate_options(precopy=False, budget_ms=None):
        o = {}
        if precopy:
            o['precopy'] = GLib.Variant('b', True)
        if budget_ms:
            o['downtime-ms'] = GLib.Variant('u', budget_ms)
        return o

    def migrate(self, sdev, ddev, opts, timeout=600, sampler=None, switch_at=None, poll_backlog=False):
        """One migration; returns the source and target jobs' properties and times.
        switch_at: call Job.Switchover() once this fraction of BytesEstimated is sent.
        poll_backlog: every 10 ms while both jobs stream (pre-copy; not while
        waiting for switch_at: asking the busy target is slow), at least how many
        bytes the source has sent that the target has not received yet."""
        m = self.prepare(sdev, ddev)
        try:
            if sampler:
                sampler.start()
            t0 = time.monotonic()
            src_job = self.src.call(self.src.device(sdev), DEVICE, 'Migrate', '(ssa{sv})',
                                    (m['endpoint'], m['ticket'], opts))[0]
            backlog, switched = [], switch_at is None
            deadline = t0 + timeout
            while (poll_backlog or not switched) and src_job not in self.src.finished:
                pump()
                s = self.src.job(src_job)
                if not switched and s['BytesEstimated'] > 0 and \
                        s['BytesTransferred'] >= switch_at * s['BytesEstimated']:
                    if s['State'] == 'streaming':
                        self.src.call(src_job, JOB, 'Switchover')
                    switched = True
                elif poll_backlog and switched and s['State'] == 'streaming':
                    # source first: both move on while we ask, so sent-then-received
                    # is a lower bound of what was in flight when the source answered
                    d = self.dst.job(m['dst_job'])
                    if d['State'] == 'streaming':
                        backlog.append(max(0, s['BytesTransferred'] - d['BytesTransferred']))
                if time.monotonic() > deadline:
                    raise BenchError(f'timed out after {timeout} s: {sdev} -> {ddev}')
                time.sleep(0.01 if switched else 0.002)
            wait_until(lambda: src_job in self.src.finished and m['dst_job'] in self.dst.finished,
                       max(1, deadline - time.monotonic()), f'{sdev} -> {ddev}')
            if sampler:
                sampler.stop()
            s, d = self.src.job(src_job), self.dst.job(m['dst_job'])
            s['wall_s'] = self.src.finished[src_job][2] - t0
            d['wall_s'] = self.dst.finished[m['dst_job']][2] - t0
            s['backlog'] = backlog
            return s, d
        finally:
            self.release(m)

    def switchover_bytes(self, job_id):
        """(bytes left, reason) of the source's 'switchover' log line for job_id."""
        # "Job 5: switchover of 0000:17:00.3 (Switchover() called), 24789220 bytes left, ..."
        rx = re.compile(r'Job ' + re.escape(job_id) + r': switchover\b.*?\((.*)\), (\d+) bytes left')
        with open(self.src.log_path) as f:
            for line in f:
                mt = rx.search(line)
                if mt:
                    return int(mt.group(2)), mt.group(1)
        return None, None


# --- sections ------------------------------------------------------------------------------

class Bench:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.failures = []
        self.raw = None

    def fail(self, what):
        self.failures.append(what)
        note(f'FAILED: {what}')

    # (a) memory + (b) downtime --------------------------------------------------------

    def section_single(self, want_mem, want_downtime):
        a = self.args
        floor, small, big, pre, hot = ('0000:17:00.1', '0000:17:00.2', '0000:17:00.3', '0000:17:00.4',
                                       '0000:17:00.5')
        specs = [(floor, a.floor_kib * 1024, 0), (small, a.small_mib * MIB, 0), (big, a.big_mib * MIB, 0),
                 (pre, a.precopy_mib * MIB, a.dirty_mib_s * MIB), (hot, a.precopy_mib * MIB, a.hot_mib_s * MIB)]
        # name, device, state bytes, Migrate options, sample memory, switch over at
        cases = [(f'stopcopy_{a.small_mib}m', small, a.small_mib * MIB, {}, True, None),
                 (f'stopcopy_{a.big_mib}m', big, a.big_mib * MIB, {}, True, None)]
        if want_downtime:
            pc = Pair.migrate_options(True)
            cases += [(f'stopcopy_floor_{a.floor_kib}k', floor, a.floor_kib * 1024, {}, False, None),
                      (f'precopy_{a.precopy_mib}m_nobudget', pre, 0, pc, False, None),
                      (f'precopy_{a.precopy_mib}m_budget{a.budget_ms}', pre, 0,
                       Pair.migrate_options(True, a.budget_ms), False, None),
                      (f'precopy_{a.precopy_mib}m_hot_switchover', hot, 0, pc, False, 1.0)]
        pair = Pair('single', specs, a, self.tmp)
        results = {c[0]: [] for c in cases}
        mem = {c[0]: [] for c in cases if c[4]}
        try:
            pump()
            idle = {'src': pair.src.mem(), 'dst': pair.dst.mem()}
            if want_downtime:
                # a wake-up round trip to another process right now: the floor
                # of any stop-copy window, whatever it moves
                rtt = pair.src.ping_ms(200)
                out('jobs.ping_rtt.median_ms', median(rtt))
                out('jobs.ping_rtt.p99_ms', rtt[int(len(rtt) * 0.99) - 1])
            for r in range(a.rounds):
                for name, dev, size, opts, sample, switch_at in cases:
                    # the baseline next to the measurement: the load changes by the second
                    raw = self.raw.rate(size) if size >= MIB else None
                    sampler = MemSampler([pair.src.pid, pair.dst.pid]) if sample and want_mem else None
                    s, d = pair.migrate(dev, dev, opts, sampler=sampler, switch_at=switch_at,
                                        poll_backlog=name.startswith('precopy'))
                    rec = self.downtime_record(pair, name, r, s, d)
                    rec['raw'] = raw
                    results[name].append(rec)
                    if sampler:
                        mem[name].append(sampler)
        finally:
            pair.stop()
        if want_mem:
            self.report_mem(idle, mem, pair, cases[0][0], cases[1][0])
        for name, recs in results.items():
            self.report_case(name, recs, want_downtime)

    def downtime_record(self, pair, name, rnd, s, d):
        ok = s['State'] == 'completed' and d['State'] == 'completed'
        rec = {'ok': ok, 'bytes': s['BytesTransferred'], 'throughput': s['Throughput'],
               'predicted': s['PredictedDowntimeMs'], 'measured': s['DowntimeMs'], 'wall': s['wall_s']}
        if not ok:
            self.fail(f'{name} round {rnd + 1}: source {s["State"]} {s["Error"]!r}, '
                      f'target {d["State"]} {d["Error"]!r}')
            return rec
        if s['BytesTransferred'] != d['BytesTransferred']:
            self.fail(f'{name} round {rnd + 1}: byte counts differ: source {s["BytesTransferred"]}, '
                      f'target {d["BytesTransferred"]}')
        if name.startswith('precopy'):
            left, why = pair.switchover_bytes(s['Id'])
            if left is None:
                self.fail(f'{name} round {rnd + 1}: no switchover line for job {s["Id"]} in the source log')
                rec['ok'] = False
                return rec
            rec['stop_bytes'], rec['why'] = left, why
            rec['backlog'] = int(median(s['backlog'])) if s['backlog'] else None
        else:
            rec['stop_bytes'], rec['why'] = s['BytesTransferred'], 'stop-copy only'
        rec['bound'] = downtime_bound_ms(rec['stop_bytes'], rec['throughput'])
        rec['met'] = rec['measured'] <= rec['bound']
        note(f'{name} round {rnd + 1}: {rec["bytes"]} bytes in {rec["wall"]:.3f} s, '
             f'throughput {mb_s(rec["throughput"]):.1f} MB/s, stop-copy bytes {rec["stop_bytes"]} '
             f'({rec["why"]}), streaming backlog {rec.get("backlog", "-")}, predicted {rec["predicted"]} ms, '
             f'measured {rec["measured"]} ms, bound {rec["bound"]:.1f} ms, met {int(rec["met"])}')
        return rec

    def report_case(self, name, recs, want_downtime):
        good = [r for r in recs if r['ok']]
        p = f'jobs.{name}'
        out(f'{p}.rounds_ok', f'{len(good)}/{len(recs)}')
        if not good:
            return
        out(f'{p}.bytes', good[0]['bytes'])
        out(f'{p}.throughput_mb_s', mb_s(median([r['throughput'] for r in good])))
        with_raw = [r for r in good if r.get('raw')]
        if with_raw:
            out(f'{p}.raw_loopback_mb_s', mb_s(median([r['raw'] for r in with_raw])))
            out(f'{p}.throughput_vs_raw_ratio', median([r['throughput'] / r['raw'] for r in with_raw]))
        out(f'{p}.wall_s', median([r['wall'] for r in good]))
        if not want_downtime:
            return
        out(f'{p}.stopcopy_bytes', int(median([r['stop_bytes'] for r in good])))
        out(f'{p}.predicted_downtime_ms', median([r['predicted'] for r in good]))
        out(f'{p}.measured_downtime_ms', median([r['measured'] for r in good]))
        out(f'{p}.downtime_bound_ms', median([r['bound'] for r in good]))
        out(f'{p}.measured_vs_bound_ratio_median', median([r['measured'] / r['bound'] for r in good]))
        out(f'{p}.measured_vs_bound_ratio_max', max(r['measured'] / r['bound'] for r in good))
        # the part of the window that is not moving bytes: switchover, end record, the target's answer
        out(f'{p}.downtime_overhead_ms', median([r['measured'] - r['stop_bytes'] / r['throughput'] * 1000.0
                                                for r in good]))
        bl = [r for r in good if r.get('backlog') is not None]
        if bl:
            # sent by the source, not yet received by the target (socket buffers, pumps):
            # at switchover it still has to cross in the window, yet is not in the data size
            out(f'{p}.streaming_backlog_median_bytes', int(median([r['backlog'] for r in bl])))
            out(f'{p}.downtime_bound_with_backlog_ms',
                median([downtime_bound_ms(r['stop_bytes'] + r['backlog'], r['throughput']) for r in bl]))
            met = sum(r['measured'] <= downtime_bound_ms(r['stop_bytes'] + r['backlog'], r['throughput']) for r in bl)
            out(f'{p}.rounds_met_with_backlog', f'{met}/{len(recs)}')
        pred = [r for r in good if r['predicted'] > 0]
        if pred:
            out(f'{p}.measured_vs_predicted_ratio', median([r['measured'] / r['predicted'] for r in pred]))
        out(f'{p}.rounds_met', f'{sum(r["met"] for r in good)}/{len(recs)}')
        out(f'{p}.target_met', int(len(good) == len(recs) and all(r['met'] for r in good)))

    def report_mem(self, idle, mem, pair, small, big):
        sizes = {small: self.args.small_mib * MIB, big: self.args.big_mib * MIB}
        for side, pid in (('src', pair.src.pid), ('dst', pair.dst.pid)):
            p = f'jobs.mem.{side}'
            out(f'{p}.rssanon_idle_kib', idle[side]['RssAnon'])
            peaks = {}
            for case in (small, big):
                samplers = mem[case]
                if not samplers:
                    continue
                tag = case.split('_', 1)[1]
                peaks[case] = max(sm.peak[pid]['RssAnon'] for sm in samplers)
                growth = max(sm.peak[pid]['RssAnon'] - sm.before[pid]['RssAnon'] for sm in samplers)
                out(f'{p}.rssanon_peak_kib.{tag}', peaks[case])
                out(f'{p}.rssanon_growth_kib.{tag}', growth)
                # what the daemon allocated while moving the state, per byte of state
                out(f'{p}.rssanon_growth_vs_state_ratio.{tag}', f'{growth * 1024 / sizes[case]:.6f}')
                out(f'{p}.rssshmem_peak_kib.{tag}', max(sm.peak[pid]['RssShmem'] for sm in samplers))
                out(f'{p}.vmhwm_kib.{tag}', max(sm.peak[pid]['VmHWM'] for sm in samplers))
            if small in peaks and big in peaks:
                out(f'{p}.rssanon_big_vs_small_ratio', peaks[big] / peaks[small])

    # (c) concurrent jobs ------------------------------------------------------------------

    def section_conc(self):
        a = self.args
        size = a.job_mib * MIB
        devs = [gen.pci_name(i) for i in range(a.jobs)]
        pair = Pair('conc', [(d, size, 0) for d in devs], a, self.tmp)
        p = f'jobs.conc{a.jobs}'
        runs = []
        try:
            idle = {'src': pair.src.mem()['RssAnon'], 'dst': pair.dst.mem()['RssAnon']}
            for r in range(a.conc_rounds):
                # the baselines next to the burst: a raw copy of all its bytes, one job alone
                raw = self.raw.rate(size * a.jobs)
                s, d = pair.migrate(devs[0], devs[0], {})
                if s['State'] != 'completed' or d['State'] != 'completed':
                    self.fail(f'single {a.job_mib} MiB job round {r + 1}: source {s["State"]} {s["Error"]!r}, '
                              f'target {d["State"]} {d["Error"]!r}')
                    single = None
                else:
                    single = (s['Throughput'], s['BytesTransferred'] / s['wall_s'])
                    note(f'conc round {r + 1}: raw loopback {mb_s(raw):.1f} MB/s; one job alone: '
                         f'{mb_s(single[0]):.1f} MB/s (Throughput), {s["wall_s"]:.3f} s from Migrate to Finished')
                x = self.conc_round(pair, devs, r)
                x['raw'], x['single'] = raw, single
                runs.append(x)
        finally:
            pair.stop()
        errors = sum(x['errors'] for x in runs)
        out(f'{p}.errors', errors)
        out(f'{p}.no_errors.target_met', int(errors == 0 and len(runs) == a.conc_rounds))
        out(f'{p}.rounds_ok', f'{sum(x["errors"] == 0 for x in runs)}/{a.conc_rounds}')
        done = [x for x in runs if x['errors'] == 0]
        if not done:
            return
        out(f'{p}.setup_s', median([x['setup'] for x in done]))
        out(f'{p}.start_burst_ms', median([x['burst'] for x in done]) * 1000)
        out(f'{p}.completion_s', median([x['completion'] for x in done]))
        out(f'{p}.aggregate_mb_s', mb_s(median([x['aggregate'] for x in done])))
        out(f'{p}.raw_loopback_mb_s', mb_s(median([x['raw'] for x in done])))
        out(f'{p}.aggregate_vs_raw_ratio', median([x['aggregate'] / x['raw'] for x in done]))
        one = [x for x in done if x['single']]
        if one:
            out(f'{p}.single.throughput_mb_s', mb_s(median([x['single'][0] for x in one])))
            out(f'{p}.single.wall_throughput_mb_s', mb_s(median([x['single'][1] for x in one])))
            out(f'{p}.single.throughput_vs_raw_ratio', median([x['single'][0] / x['raw'] for x in one]))
            # no collapse: 64 jobs together move bytes at least as fast as one alone
            out(f'{p}.aggregate_vs_single_ratio', median([x['aggregate'] / x['single'][1] for x in one]))
            out(f'{p}.aggregate_vs_single_throughput_ratio',
                median([x['aggregate'] / x['single'][0] for x in one]))
        thr = sorted(t for x in done for t in x['per_job'])
        out(f'{p}.per_job.throughput_min_mb_s', mb_s(thr[0]))
        out(f'{p}.per_job.throughput_median_mb_s', mb_s(median(thr)))
        out(f'{p}.per_job.throughput_max_mb_s', mb_s(thr[-1]))
        out(f'{p}.per_job.throughput_max_vs_min_ratio', thr[-1] / thr[0])
        out(f'{p}.per_job.throughput_cv', statistics.pstdev(thr) / statistics.mean(thr))
        fin = sorted(t for x in done for t in x['finish'])
        out(f'{p}.per_job.finish_first_s', fin[0])
        out(f'{p}.per_job.finish_median_s', median(fin))
        out(f'{p}.per_job.finish_last_s', fin[-1])
        fb = sorted(t for x in done for t in x['first_byte'])
        if fb:
            out(f'{p}.per_job.streaming_start_last_s', fb[-1])
        for side in ('src', 'dst'):
            peak = max(x['mem'][side] for x in done)
            out(f'{p}.mem.{side}.rssanon_idle_kib', idle[side])
            out(f'{p}.mem.{side}.rssanon_peak_kib', peak)
            out(f'{p}.mem.{side}.rssanon_growth_per_job_kib', (peak - idle[side]) / a.jobs)

    def conc_round(self, pair, devs, rnd):
        a = self.args
        t0 = time.monotonic()
        prepared, errors, msgs = [], 0, []
        try:
            for dev in devs:
                prepared.append(pair.prepare(dev, dev))
            setup = time.monotonic() - t0
            paths = [pair.src.device(m['sdev']) for m in prepared]
            replies = {}

            def on_reply(conn, res, i):
                try:
                    replies[i] = conn.call_finish(res).unpack()[0]
                except GLib.Error as e:
                    replies[i] = e

            sampler = MemSampler([pair.src.pid, pair.dst.pid]).start()
            t_start = time.monotonic()
            for i, m in enumerate(prepared):
                pair.src.bus.call(BUS_NAME, paths[i], DEVICE, 'Migrate',
                                  GLib.Variant('(ssa{sv})', (m['endpoint'], m['ticket'], {})),
                                  GLib.VariantType('(o)'), Gio.DBusCallFlags.NONE, 60000, None, on_reply, i)
            burst = time.monotonic() - t_start
            wait_until(lambda: len(replies) == len(prepared), 120, 'the Migrate replies')
            src_jobs = {}
            for i, v in replies.items():
                if isinstance(v, GLib.Error):
                    errors += 1
                    msgs.append(f'Migrate {prepared[i]["sdev"]}: {v.message}')
                else:
                    src_jobs[i] = v

            def all_final():
                return (all(j in pair.src.finished for j in src_jobs.values()) and
                        all(prepared[i]['dst_job'] in pair.dst.finished for i in src_jobs))
            try:
                wait_until(all_final, a.conc_timeout, f'{len(src_jobs)} concurrent jobs')
            except BenchError as e:
                errors += 1
                msgs.append(str(e))
            sampler.stop()
            per_job, finish, first_byte, nbytes, last = [], [], [], 0, t_start
            for i, sj in src_jobs.items():
                s = pair.src.job(sj)
                d = pair.dst.job(prepared[i]['dst_job'])
                if s['State'] != 'completed' or d['State'] != 'completed':
                    errors += 1
                    msgs.append(f'{prepared[i]["sdev"]}: source {s["State"]} {s["Error"]!r}, '
                                f'target {d["State"]} {d["Error"]!r}')
                    continue
                if s['BytesTransferred'] != d['BytesTransferred']:
                    errors += 1
                    msgs.append(f'{prepared[i]["sdev"]}: byte counts differ: {s["BytesTransferred"]} '
                                f'vs {d["BytesTransferred"]}')
                    continue
                nbytes += s['BytesTransferred']
                per_job.append(s['Throughput'])
                tf = max(pair.src.finished[sj][2], pair.dst.finished[prepared[i]['dst_job']][2])
                finish.append(tf - t_start)
                # Throughput = bytes / (end - first byte): when this job's bytes began to move
                if s['Throughput'] > 0:
                    first_byte.append(pair.src.finished[sj][2] - t_start - s['BytesTransferred'] / s['Throughput'])
                last = max(last, tf)
        finally:
            for m in prepared:
                pair.release(m)
        completion = last - t_start
        r = {'errors': errors, 'setup': setup, 'burst': burst, 'completion': completion,
             'aggregate': nbytes / completion if completion > 0 else 0.0, 'per_job': per_job, 'finish': finish,
             'first_byte': first_byte,
             'mem': {'src': sampler.peak[pair.src.pid]['RssAnon'], 'dst': sampler.peak[pair.dst.pid]['RssAnon']}}
        note(f'conc round {rnd + 1}: {len(per_job)}/{len(devs)} jobs completed, {errors} error(s), setup '
             f'{setup:.2f} s, start burst {burst * 1000:.1f} ms, completion {completion:.2f} s, '
             f'aggregate {mb_s(r["aggregate"]):.1f} MB/s')
        for msg in msgs[:10]:
            note(f'  error: {msg}')
        if len(msgs) > 10:
            note(f'  ... and {len(msgs) - 10} more')
        if errors:
            self.fail(f'conc round {rnd + 1}: {errors} error(s) among {len(devs)} concurrent jobs')
        return r


def parse_args():
    build = os.environ.get('MESON_BUILD_ROOT') or os.path.join(SOURCE_ROOT, 'build')
    ap = argparse.ArgumentParser(description='Migration jobs between two vfmigd daemons (DESIGN §8)')
    ap.add_argument('--vfmigd', default=os.path.join(build, 'daemon', 'vfmigd'))
    ap.add_argument('--raw', default=os.path.join(build, 'bench', 'bench-jobs-raw'))
    ap.add_argument('--bus-config', default=os.path.join(build, 'bench', 'bench-bus.conf'))
    ap.add_argument('--rules', default=os.path.join(SOURCE_ROOT, 'data', 'compat.d'))
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--conc-rounds', type=int, default=3)
    ap.add_argument('--floor-kib', type=int, default=64)
    ap.add_argument('--small-mib', type=int, default=64)
    ap.add_argument('--big-mib', type=int, default=1024)
    ap.add_argument('--precopy-mib', type=int, default=256)
    ap.add_argument('--dirty-mib-s', type=int, default=16)
    ap.add_argument('--hot-mib-s', type=int, default=4096)
    ap.add_argument('--budget-ms', type=int, default=100)
    ap.add_argument('--jobs', type=int, default=64)
    ap.add_argument('--job-mib', type=int, default=16)
    ap.add_argument('--conc-timeout', type=int, default=300)
    ap.add_argument('--only', default='mem,downtime,conc')
    ap.add_argument('--keep', action='store_true')
    a = ap.parse_args()
    a.only = set(a.only.split(','))
    bad = a.only - {'mem', 'downtime', 'conc'}
    if bad:
        ap.error(f'--only: unknown section(s) {", ".join(sorted(bad))}; known: mem, downtime, conc')
    for k in ('rounds', 'floor_kib', 'small_mib', 'big_mib', 'precopy_mib', 'jobs', 'job_mib', 'conc_rounds',
              'budget_ms', 'conc_timeout', 'hot_mib_s'):
        if getattr(a, k) < 1:
            ap.error(f'--{k.replace("_", "-")} must be at least 1')
    if a.jobs > 32 * 0x60:
        ap.error('--jobs: at most 3072')
    # the daemon keeps finished jobs for 300 s and holds at most 256 (JOBS_MAX)
    if (a.jobs + 1) * a.conc_rounds > 256 or 6 * a.rounds > 256:
        ap.error('(--jobs + 1) x --conc-rounds and 6 x --rounds must stay within the daemon\'s 256 jobs')
    for path in (a.vfmigd, a.raw, a.bus_config):
        if not os.path.exists(path):
            ap.error(f'{path}: not found (build first, or give --vfmigd / --raw / --bus-config)')
    return a


def main():
    a = parse_args()
    if os.geteuid() != 0:
        note('bench-jobs needs root (the daemons\' polkit checks allow root without asking)')
        out('jobs.failures', 1)
        return 1
    tmp = tempfile.mkdtemp(prefix='vfmig-bench-jobs-')
    bench = Bench(a, tmp)
    note(f'bench-jobs: rounds {a.rounds}, conc rounds {a.conc_rounds}, sections {",".join(sorted(a.only))}, '
         f'temporary directory {tmp}')
    note(f'load average before: {" ".join(open("/proc/loadavg").read().split()[:3])}')
    t0 = time.monotonic()
    sections = [('raw', lambda: setattr(bench, 'raw', RawCopy(a.raw, max(a.big_mib, a.small_mib, a.jobs * a.job_mib)
                                                              * MIB)))]
    if a.only & {'mem', 'downtime'}:
        sections.append(('single', lambda: bench.section_single('mem' in a.only, 'downtime' in a.only)))
    if 'conc' in a.only:
        sections.append(('conc', bench.section_conc))
    for name, fn in sections:
        if bench.failures and name != 'raw' and not bench.raw:
            break
        try:
            fn()
        except (BenchError, GLib.Error, OSError, subprocess.SubprocessError) as e:
            out(f'jobs.{name}.error', 1)
            bench.fail(f'section {name}: {e}')
    if bench.raw:
        bench.raw.close()
    note(f'load average after: {" ".join(open("/proc/loadavg").read().split()[:3])}, '
         f'{time.monotonic() - t0:.1f} s')
    out('jobs.failures', len(bench.failures))
    for f in bench.failures:
        note(f'failure: {f}')
    if a.keep or bench.failures:
        note(f'daemon logs kept in {tmp}')
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bench.failures else 0


if __name__ == '__main__':
    sys.exit(main())
