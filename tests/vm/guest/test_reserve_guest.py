#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Reservations of a creatable mdev type on the real kernel (run by
guest/reserve.sh inside the test VM).

The real vfmigd in host mode with the shipped rules on vfmig_testmdev; the
test is root on the private bus (polkit is not asked for root).  An instance
OWN is created by the test before vfmigd starts; its profile is the source
profile.  The steps run in order:

  1  Reserve("vfmig_testmdev/vfmig_testmdev-small"): vfmigd wrote a new UUID
     to the type's sysfs create file — the instance is in
     /sys/bus/mdev/devices when Reserve returns, of the right parent and
     type, one available instance less; it appears on the bus (DeviceAdded)
     and vfmigd holds it; Target is its UUID, CreatedFrom the type; the state
     file records where it came from
  2  Release: the instance is removed through sysfs while vfmigd holds it
     (vfmigd gives it back on the kernel's request), DeviceRemoved, the slot
     is back, OWN is untouched
  3  the owner's connection closes: its instance is removed
  4  the lease runs out: its instance is removed
  5  kill -9 of vfmigd: the instance stays (the kernel keeps it); a new
     vfmigd restores the reservation and holds the instance again; Release
     removes it
  6  OWN reserved by name (CreatedFrom ""): Release leaves it

Needs VFMIG_BUILD_ROOT, VFMIG_SOURCE_ROOT, DBUS_SYSTEM_BUS_ADDRESS (the
private bus reserve.sh started) and the module loaded; VFMIG_VFMIGD_LOG is
where the daemon's output goes.
"""
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
SMALL = f'{MOD}-small'
KEY = f'{PARENT}/{SMALL}'
AVAIL = f'{PARENT_SYS}/mdev_supported_types/{SMALL}/available_instances'
RULES = os.path.join(vt.SOURCE, 'data', 'compat.d')
LOG = os.environ.get('VFMIG_VFMIGD_LOG', '/tmp/vfmigd-reserve.log')
RESERVATION = 'org.vfmig1.Reservation'
PREFIX = '/org/vfmig1/reservation/'
STATE_FILE = 'reservations.json'
# The kernel asks a holder again 10 s after the first request: vfmigd must
# have let go (and the removal finished) well before.
REMOVE_TIMEOUT = 8

SIGS = {'format': 'u', 'state-size': 't', 'attributes': 'a{ss}', 'capabilities': 'as'}


def to_asv(profile):
    return {k: GLib.Variant(SIGS.get(k, 's'), v) for k, v in profile.items()}


def sysfs_read(path):
    with open(path) as f:
        return f.read().strip()


def mdev_dir(uuid):
    return f'/sys/bus/mdev/devices/{uuid}'


def available():
    return int(sysfs_read(AVAIL))


def sysfs_write(path, value, timeout=30):
    """Write through a child, so that a write the kernel blocks cannot hang the test."""
    p = subprocess.run(['/bin/sh', '-c', 'echo "$1" > "$2"', 'sh', value, path],
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stderr


def create_small():
    uuid = sysfs_read('/proc/sys/kernel/random/uuid')
    rc, err = sysfs_write(f'{PARENT_SYS}/mdev_supported_types/{SMALL}/create', uuid)
    assert rc == 0, f'create: {err}'
    return uuid


def dmesg():
    return subprocess.run(['dmesg'], capture_output=True, text=True, timeout=30).stdout


def note(msg):
    print(f'\n  NOTE: {msg}', file=sys.stderr)


class Vfmigd:
    """vfmigd from the build tree, host mode, shipped rules; state and cache
    in the given directories (kept across restarts)."""

    def __init__(self, state, cache):
        self.log = open(LOG, 'a')
        env = dict(os.environ, STATE_DIRECTORY=state, CACHE_DIRECTORY=cache)
        self.proc = subprocess.Popen([vt.VFMIGD, '--config', '/nonexistent/vfmigd.conf', '--debug',
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

    def wait_name_gone(self, timeout=30):
        bus = vt.system_bus()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not bus.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
                                 'NameHasOwner', GLib.Variant('(s)', (vt.BUS_NAME,)), None,
                                 Gio.DBusCallFlags.NONE, -1, None).unpack()[0]:
                return
            time.sleep(0.05)
        raise AssertionError('the bus name stayed after vfmigd died')

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.wait_name_gone()

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


class ReserveOnRealKernel(unittest.TestCase):
    """One module instance, vfmigd restarted once; the test methods run in name order."""

    @classmethod
    def setUpClass(cls):
        assert os.path.isdir(PARENT_SYS), f'{PARENT_SYS} missing: load {MOD} first'
        open(LOG, 'w').close()
        cls.t0 = time.monotonic()
        cls.state = tempfile.mkdtemp(prefix='vfmig-state-')
        cls.cache = tempfile.mkdtemp(prefix='vfmig-cache-')
        cls.dmesg0 = len(dmesg().splitlines())
        # An instance vfmigd did not create: it must never be removed by vfmigd.
        cls.own = create_small()
        cls.daemon = Vfmigd(cls.state, cls.cache)
        cls.daemon.wait_for_name()
        cls.client = vt.Client()
        cls.rec = vt.SignalRecorder(cls.client.bus)
        cls.profile = None
        cls.avail0 = None

    @classmethod
    def tearDownClass(cls):
        cls.rec.close()
        rc = cls.daemon.stop()
        # vfmigd let go of every device on SIGTERM: OWN can be removed now.
        if os.path.exists(mdev_dir(cls.own)):
            sysfs_write(f'{mdev_dir(cls.own)}/remove', '1')
        shutil.rmtree(cls.state, ignore_errors=True)
        shutil.rmtree(cls.cache, ignore_errors=True)
        print(f'\n  vfmigd exit status {rc}; steps took {time.monotonic() - cls.t0:.1f} s', file=sys.stderr)
        assert rc == 0, f'vfmigd did not exit cleanly on SIGTERM: {rc}'

    def setUp(self):
        self.assertIsNone(self.daemon.proc.poll(), 'vfmigd is not running')

    # ---- helpers ----------------------------------------------------------

    def device_signal(self, member, name, timeout=20):
        return self.rec.wait_for(lambda s: s[0] == vt.MANAGER and s[1] == member and s[3][0] == name,
                                 timeout=timeout)

    def wait_managed(self, name, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            try:
                path = self.client.manager('GetDevice', '(s)', (name,))[0]
                p = self.client.get_all(path, vt.DEVICE)
                if p['Status'] == 'managed':
                    return p
            except GLib.Error:
                p = None
            if time.monotonic() > deadline:
                self.fail(f'{name} not managed by vfmigd: {p and p["StatusMessage"]}')
            self.rec.pump(0.1)

    def source_profile(self):
        if type(self).profile is None:
            type(self).profile = self.client.manager('GetMigrationProfile', '(s)', (self.own,))[0]
        return type(self).profile

    def reserve(self, target=KEY, opts=None, client=None, profile=None):
        c = client or self.client
        return c.call(vt.ROOT_PATH, vt.MANAGER, 'Reserve', '(sa{sv}a{sv})',
                      (target, to_asv(profile or self.source_profile()), opts or {}))[0]

    def list_types(self):
        return {t[2]: t[6] for t in self.client.manager('ListMdevTypes')[0] if t[0] == PARENT}

    def reserve_created(self, opts=None, client=None):
        """Reserve KEY; the instance is there, of the type, and held.  Returns (path, uuid)."""
        before = available()
        self.rec.clear()
        path = self.reserve(KEY, opts, client)
        p = self.client.get_all(path, RESERVATION)
        uuid = p['Target']
        self.assertEqual(p['CreatedFrom'], KEY)
        # The create write is synchronous: the kernel has it now.
        self.assertTrue(os.path.isdir(mdev_dir(uuid)), f'{mdev_dir(uuid)} missing after Reserve')
        self.assertEqual(os.path.basename(os.readlink(f'{mdev_dir(uuid)}/mdev_type')), SMALL)
        self.assertEqual(os.path.basename(os.path.dirname(os.path.realpath(mdev_dir(uuid)))), PARENT)
        self.assertEqual(available(), before - 1)
        self.device_signal('DeviceAdded', uuid)
        dev = self.wait_managed(uuid)
        self.assertEqual((dev['Kind'], dev['MdevType'], dev['Parent']), ('mdev', SMALL, PARENT))
        return path, uuid

    def wait_removed(self, uuid, avail):
        """The instance leaves sysfs and the bus within REMOVE_TIMEOUT; the slot is back."""
        t = time.monotonic()
        self.device_signal('DeviceRemoved', uuid, timeout=REMOVE_TIMEOUT + 2)
        while os.path.exists(mdev_dir(uuid)) and time.monotonic() - t < REMOVE_TIMEOUT:
            time.sleep(0.05)
        secs = time.monotonic() - t
        self.assertFalse(os.path.exists(mdev_dir(uuid)), f'{uuid} still in sysfs after {secs:.1f} s')
        self.assertEqual(available(), avail)
        self.assertTrue(os.path.isdir(mdev_dir(self.own)), 'the instance vfmigd did not create is gone')
        deadline = time.monotonic() + 10
        while self.list_types().get(SMALL) != avail and time.monotonic() < deadline:
            self.rec.pump(0.1)
        self.assertEqual(self.list_types().get(SMALL), avail)
        deadline = time.monotonic() + 10
        while f'Removed mdev instance {uuid}' not in self.daemon.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn(f'Removed mdev instance {uuid} of {KEY}', self.daemon.output())
        return secs

    # ---- the steps ----------------------------------------------------------

    def test_1_reserve_creates(self):
        self.wait_managed(self.own)
        type(self).avail0 = available()
        prof = self.source_profile()
        self.assertEqual(prof['migration-type'], f'{MOD}:{SMALL}')
        path, uuid = self.reserve_created(opts={'lease-seconds': GLib.Variant('u', 600)})
        type(self).first = (path, uuid)
        with open(os.path.join(self.state, STATE_FILE)) as f:
            [e] = json.load(f)['reservations']
        self.assertEqual((e['id'], e['target'], e['created-from']), (path[len(PREFIX):], uuid, KEY))
        deadline = time.monotonic() + 10
        while self.list_types().get(SMALL) != self.avail0 - 1 and time.monotonic() < deadline:
            self.rec.pump(0.1)
        self.assertEqual(self.list_types().get(SMALL), self.avail0 - 1)
        # The instance is reserved: not handed out again.
        with self.assertRaises(GLib.Error) as cm:
            self.reserve(uuid)
        self.assertEqual(vt.dbus_error_name(cm.exception), 'org.vfmig1.Error.Busy')

    def test_2_release_removes(self):
        path, uuid = self.first
        self.rec.clear()
        self.client.call(path, RESERVATION, 'Release')
        secs = self.wait_removed(uuid, self.avail0)
        note(f'Release -> instance removed from sysfs in {secs:.2f} s')
        self.assertEqual(self.client.manager('ListReservations')[0], [])

    def test_3_owner_gone_removes(self):
        other = vt.Client()
        path, uuid = self.reserve_created(client=other)
        self.rec.clear()
        other.bus.close_sync(None)
        self.wait_removed(uuid, self.avail0)

    def test_4_expiry_removes(self):
        path, uuid = self.reserve_created(opts={'lease-seconds': GLib.Variant('u', 1)})
        self.rec.wait_for(lambda s: s[1] == 'ReservationRemoved' and s[3][1] == uuid and s[3][3] == 'expired',
                          timeout=10)
        self.wait_removed(uuid, self.avail0)

    def test_5_kill9_restart(self):
        path, uuid = self.reserve_created(opts={'lease-seconds': GLib.Variant('u', 600),
                                                'persist': GLib.Variant('b', True)})
        self.daemon.kill9()
        # The kernel keeps the instance; nobody holds it now.
        self.assertTrue(os.path.isdir(mdev_dir(uuid)))
        self.assertEqual(available(), self.avail0 - 1)
        cls = type(self)
        cls.daemon = Vfmigd(self.state, self.cache)
        cls.daemon.wait_for_name()
        p = self.client.get_all(path, RESERVATION)
        self.assertEqual((p['Target'], p['CreatedFrom']), (uuid, KEY))
        self.wait_managed(uuid)
        self.rec.clear()
        self.client.call(path, RESERVATION, 'Release')
        self.wait_removed(uuid, self.avail0)

    def test_6_preexisting_stays(self):
        # OWN as a target: a profile from elsewhere (a device is not its own target).
        prof = dict(self.source_profile(), **{'source-host': 'elsewhere', 'source-device': 'elsewhere'})
        path = self.reserve(self.own, profile=prof)
        self.assertEqual(self.client.get(path, RESERVATION, 'CreatedFrom'), '')
        self.rec.clear()
        self.client.call(path, RESERVATION, 'Release')
        self.rec.pump(2.0)
        self.assertTrue(os.path.isdir(mdev_dir(self.own)))
        self.assertFalse([s for s in self.rec.signals if s[1] == 'DeviceRemoved'])
        self.wait_managed(self.own)
        self.assertNotIn(f'Removing mdev instance {self.own}', self.daemon.output())
        # The kernel never had to wait for a holder that did not answer.
        new = '\n'.join(dmesg().splitlines()[self.dmesg0:])
        self.assertNotIn('blocked until device is released', new)


if __name__ == '__main__':
    unittest.main(verbosity=2, argv=[sys.argv[0]])
