#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""vfmigd on the real kernel (run by guest/daemon.sh inside the test VM).

The real daemon in host mode: its sd-device inventory of the real sysfs, the
kernel VFIO back end holding real vfmig_testmdev devices, and the kernel's
device request channel.  The steps run in order on one daemon and one module
instance; each asserts something that can fail:

  a  Backend "host"; ListMdevTypes has the test parent with both types; an
     instance made before vfmigd started is found, held, and released when
     removed through sysfs
  b  an instance created through sysfs appears live, managed, with its real
     IOMMU group and migration flags; the types' available instances drop
  c  OpenDevice FDs work for raw VFIO (GET_INFO, region info, region I/O
     shared between two FDs); MigrationState is read live; Reset
  d  an unprivileged client can list but not open
  e  removing the instance through sysfs completes while vfmigd holds it
     (vfmigd lets go when the kernel asks) and it disappears from the bus
  f  two instances, removed, then the module unloads; the parent disappears
  g  the module reloaded: the parent and types come back; vfmigd exits 0 on
     SIGTERM while holding a device, which is then free and removable

Needs VFMIG_BUILD_ROOT, VFMIG_SOURCE_ROOT, DBUS_SYSTEM_BUS_ADDRESS (the
private bus daemon.sh started) and the module loaded; VFMIG_VFMIGD_LOG is
where the daemon's output goes.
"""
import fcntl
import os
import signal
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.environ['VFMIG_SOURCE_ROOT'], 'tests', 'bus'))
import vfmigtest as vt  # noqa: E402
from gi.repository import Gio, GLib  # noqa: E402

MOD = 'vfmig_testmdev'
PARENT = MOD
PARENT_SYS = f'/sys/class/mdev_bus/{PARENT}'
TYPES = {'small': 64 * 1024, 'large': 256 * 1024}
MAX_INSTANCES = 16
LOG = os.environ.get('VFMIG_VFMIGD_LOG', '/tmp/vfmigd.log')
# A sysfs remove of a held device must finish long before the kernel's
# second request (10 s after the first): vfmigd answers the first one.
REMOVE_TIMEOUT = 8


# linux/vfio.h: _IO(VFIO_TYPE, VFIO_BASE + n), VFIO_TYPE ';', VFIO_BASE 100
def _IO(nr):
    return (ord(';') << 8) | (100 + nr)


VFIO_DEVICE_GET_INFO = _IO(7)
VFIO_DEVICE_GET_REGION_INFO = _IO(8)
VFIO_DEVICE_GET_IRQ_INFO = _IO(9)
VFIO_DEVICE_FEATURE = _IO(17)
VFIO_DEVICE_FLAGS_RESET = 1 << 0
VFIO_DEVICE_FLAGS_PLATFORM = 1 << 2
VFIO_REGION_INFO_FLAG_READ = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE = 1 << 1
VFIO_IRQ_INFO_EVENTFD = 1 << 0
VFIO_PCI_REQ_IRQ_INDEX = 4
VFIO_PCI_NUM_IRQS = 5
VFIO_DEVICE_FEATURE_SET = 1 << 17
VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE = 2
VFIO_DEVICE_STATE_STOP = 1


def sysfs_read(path):
    with open(path) as f:
        return f.read().strip()


def sysfs_write(path, value, timeout=30, on_timeout=None):
    """Write through a child so that a write the kernel blocks cannot hang
    the test: returns (exit status, seconds, stderr).  If the child is not
    done after timeout seconds, on_timeout() is called (it must unblock the
    write: a writer stuck in a driver's remove cannot be killed) and
    TimeoutExpired is raised once the child is gone."""
    t = time.monotonic()
    p = subprocess.Popen(['/bin/sh', '-c', 'echo "$1" > "$2"', 'sh', value, path],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if on_timeout:
            on_timeout()
        p.kill()
        p.communicate(timeout=60)
        raise
    return p.returncode, time.monotonic() - t, err


def new_uuid():
    return sysfs_read('/proc/sys/kernel/random/uuid')


def create(type_):
    uuid = new_uuid()
    rc, _, err = sysfs_write(f'{PARENT_SYS}/mdev_supported_types/{MOD}-{type_}/create', uuid)
    assert rc == 0, f'create {type_}: {err}'
    return uuid


def iommu_group(uuid):
    return int(os.path.basename(os.readlink(f'/sys/bus/mdev/devices/{uuid}/iommu_group')))


def open_device(bus, path):
    reply, fds = bus.call_with_unix_fd_list_sync(vt.BUS_NAME, path, vt.DEVICE, 'OpenDevice', None,
                                                 GLib.VariantType('(h)'), Gio.DBusCallFlags.NONE,
                                                 10000, None, None)
    return fds.get(reply.unpack()[0])


def device_info(fd):
    buf = bytearray(struct.pack('<IIIIII', 24, 0, 0, 0, 0, 0))
    fcntl.ioctl(fd, VFIO_DEVICE_GET_INFO, buf, True)
    _, flags, num_regions, num_irqs = struct.unpack_from('<IIII', buf)
    return flags, num_regions, num_irqs


def region_info(fd, index):
    buf = bytearray(struct.pack('<IIIIQQ', 32, 0, index, 0, 0, 0))
    fcntl.ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, buf, True)
    _, flags, _, _, size, offset = struct.unpack('<IIIIQQ', buf)
    return flags, size, offset


def irq_info(fd, index):
    buf = bytearray(struct.pack('<IIII', 16, 0, index, 0))
    fcntl.ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, buf, True)
    _, flags, _, count = struct.unpack('<IIII', buf)
    return flags, count


def set_mig_state(fd, state):
    buf = bytearray(struct.pack('<IIIi', 16, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
                                state, -1))
    fcntl.ioctl(fd, VFIO_DEVICE_FEATURE, buf, True)
    data_fd = struct.unpack_from('<i', buf, 12)[0]
    if data_fd >= 0:
        os.close(data_fd)


def dmesg():
    return subprocess.run(['dmesg'], capture_output=True, text=True, timeout=30).stdout


class Vfmigd:
    """vfmigd from the build tree, host mode, output into LOG."""

    def __init__(self):
        self.log = open(LOG, 'w')
        # --debug: every uevent it handles is in the log, for a failure's report
        self.proc = subprocess.Popen([vt.VFMIGD, '--config', '/nonexistent/vfmigd.conf', '--debug'],
                                     stdout=self.log, stderr=subprocess.STDOUT)

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

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self):
        self.log.flush()
        with open(LOG) as f:
            return f.read()


class DaemonOnRealKernel(unittest.TestCase):
    """One daemon through all steps; the test methods run in name order."""

    @classmethod
    def setUpClass(cls):
        assert os.path.isdir(PARENT_SYS), f'{PARENT_SYS} missing: load {MOD} first'
        # One instance exists before vfmigd starts: found by enumeration.
        cls.early = create('large')
        cls.daemon = Vfmigd()
        cls.daemon.wait_for_name()
        cls.client = vt.Client()
        cls.rec = vt.SignalRecorder(cls.client.bus)
        cls.uuid = None

    @classmethod
    def tearDownClass(cls):
        cls.rec.close()
        cls.daemon.kill()

    def setUp(self):
        self.assertIsNone(self.daemon.proc.poll(), 'vfmigd is not running')

    # ---- helpers ----------------------------------------------------------

    def types(self):
        return {t[2]: t for t in self.client.manager('ListMdevTypes')[0] if t[0] == PARENT}

    def device_signal(self, member, name, timeout=20):
        return self.rec.wait_for(lambda s: s[0] == vt.MANAGER and s[1] == member and s[3][0] == name,
                                 timeout=timeout)

    def types_changed(self, timeout=20):
        self.rec.wait_for(lambda s: s[0] == vt.MANAGER and s[1] == 'MdevTypesChanged', timeout=timeout)

    def wait_status(self, path, status, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            p = self.client.get_all(path, vt.DEVICE)
            if p['Status'] == status or time.monotonic() > deadline:
                break
            self.rec.pump(0.1)
        self.assertEqual(p['Status'], status, p['StatusMessage'])
        return p

    def create_and_wait(self, type_):
        uuid = create(type_)
        sig = self.device_signal('DeviceAdded', uuid)
        path = sig[3][1]
        self.assertEqual(self.client.manager('GetDevice', '(s)', (uuid,))[0], path)
        return uuid, path, self.wait_status(path, 'managed')

    def remove_held(self, uuid):
        """sysfs remove of an instance vfmigd holds; must not block."""
        path = f'/sys/bus/mdev/devices/{uuid}/remove'
        try:
            # On a timeout, killing vfmigd lets the remove finish.
            rc, secs, err = sysfs_write(path, '1', timeout=REMOVE_TIMEOUT, on_timeout=self.daemon.kill)
        except subprocess.TimeoutExpired:
            self.fail(f'sysfs remove of {uuid} still blocked after {REMOVE_TIMEOUT} s while vfmigd holds '
                      f'the device: vfmigd did not release it on the kernel\'s request')
        self.assertEqual(rc, 0, err)
        self.assertFalse(os.path.exists(f'/sys/bus/mdev/devices/{uuid}'))
        return secs

    # ---- the steps ----------------------------------------------------------

    def test_a_inventory(self):
        self.assertEqual(self.client.get(vt.ROOT_PATH, vt.MANAGER, 'Backend'), 'host')
        types = self.types()
        self.assertEqual(set(types), {f'{MOD}-small', f'{MOD}-large'})
        for t, size in TYPES.items():
            d = f'{PARENT_SYS}/mdev_supported_types/{MOD}-{t}'
            parent, pdriver, tid, name, api, desc, avail = types[f'{MOD}-{t}']
            self.assertEqual(pdriver, MOD)
            self.assertEqual(name, sysfs_read(f'{d}/name'))
            self.assertIn(f'{size // 1024} KiB', name)
            self.assertEqual(api, 'vfio-platform')
            self.assertEqual(desc, sysfs_read(f'{d}/description'))
            self.assertEqual(avail, MAX_INSTANCES - (t == 'large'))
        # The instance made before vfmigd started is found, held, and given
        # back when it is removed.
        ours = {n: v for n, v in self.client.devices().items() if v[1] == MOD}
        self.assertEqual(set(ours), {self.early})
        p = self.client.get_all(ours[self.early][2], vt.DEVICE)
        self.assertEqual((p['Kind'], p['MdevType'], p['Parent'], p['Status']),
                         ('mdev', f'{MOD}-large', PARENT, 'managed'), p['StatusMessage'])
        self.assertEqual(p['IommuGroup'], iommu_group(self.early))
        self.rec.clear()
        self.remove_held(self.early)
        self.device_signal('DeviceRemoved', self.early)
        self.types_changed()
        self.assertEqual(self.types()[f'{MOD}-large'][6], MAX_INSTANCES)

    def test_b_create(self):
        self.rec.clear()
        uuid, path, p = self.create_and_wait('small')
        type(self).uuid, type(self).path = uuid, path
        self.assertEqual(p['Name'], uuid)
        self.assertEqual(p['Kind'], 'mdev')
        self.assertEqual(p['Driver'], MOD)
        self.assertEqual(p['MdevType'], f'{MOD}-small')
        self.assertEqual(p['Parent'], PARENT)
        self.assertEqual(p['IommuGroup'], iommu_group(uuid))
        self.assertEqual(p['SysfsPath'], os.path.realpath(f'/sys/bus/mdev/devices/{uuid}'))
        self.assertIn('kernel-legacy', p['StatusMessage'])
        self.assertEqual(p['MigrationFlags'], ['stop-copy', 'p2p'])
        self.assertEqual(p['MigrationState'], 'running')
        self.assertIn(uuid, self.client.devices())
        self.types_changed()
        self.assertEqual(self.types()[f'{MOD}-small'][6], MAX_INSTANCES - 1)
        self.assertEqual(self.types()[f'{MOD}-large'][6], MAX_INSTANCES)
        # vfmigd really holds it: a second opener of the group is refused.
        with self.assertRaises(OSError):
            os.close(os.open(f'/dev/vfio/{iommu_group(uuid)}', os.O_RDWR))

    def test_c_open_device(self):
        self.assertIsNotNone(self.uuid, 'step b failed')
        fd1 = open_device(self.client.bus, self.path)
        fd2 = open_device(self.client.bus, self.path)
        try:
            self.assertNotEqual(fd1, fd2)
            self.assertEqual(os.readlink(f'/proc/self/fd/{fd1}'), 'anon_inode:[vfio-device]')
            flags, num_regions, num_irqs = device_info(fd1)
            self.assertTrue(flags & VFIO_DEVICE_FLAGS_RESET, f'flags {flags:#x}')
            self.assertTrue(flags & VFIO_DEVICE_FLAGS_PLATFORM, f'flags {flags:#x}')
            self.assertEqual(num_regions, 1)
            self.assertEqual(num_irqs, VFIO_PCI_NUM_IRQS)
            self.assertEqual(irq_info(fd1, VFIO_PCI_REQ_IRQ_INDEX), (VFIO_IRQ_INFO_EVENTFD, 1))
            rflags, size, offset = region_info(fd1, 0)
            self.assertEqual(size, TYPES['small'])
            mask = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE
            self.assertEqual(rflags & mask, mask)
            pattern = bytes((i * 13 + 7) & 0xff for i in range(size))
            self.assertEqual(os.pwrite(fd1, pattern, offset), size)
            self.assertEqual(os.pread(fd2, size, offset), pattern)

            # MigrationState is read from the device, whoever moved it.
            set_mig_state(fd1, VFIO_DEVICE_STATE_STOP)
            self.assertEqual(self.client.get(self.path, vt.DEVICE, 'MigrationState'), 'stop')
            self.client.call(self.path, vt.DEVICE, 'Reset')
            self.assertEqual(self.client.get(self.path, vt.DEVICE, 'MigrationState'), 'running')
            self.assertEqual(os.pread(fd2, size, offset), bytes(size), 'Reset did not clear the memory')
        finally:
            os.close(fd1)
            os.close(fd2)
        self.assertEqual(self.client.get(self.path, vt.DEVICE, 'Status'), 'managed')

    def test_d_unprivileged(self):
        self.assertIsNotNone(self.uuid, 'step b failed')
        r = vt.run_as_nobody(['busctl', '--system', 'call', vt.BUS_NAME, vt.ROOT_PATH, vt.MANAGER, 'ListDevices'])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(self.uuid, r.stdout)
        r = vt.run_as_nobody(['busctl', '--system', 'get-property', vt.BUS_NAME, self.path, vt.DEVICE, 'Status'])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('managed', r.stdout)
        for method in ('OpenDevice', 'Reset'):
            r = vt.run_as_nobody(['busctl', '--system', 'call', vt.BUS_NAME, self.path, vt.DEVICE, method])
            self.assertNotEqual(r.returncode, 0, f'{method} as nobody: {r.stdout}')
            self.assertIn('denied', r.stderr.lower())

    def test_e_remove_while_held(self):
        self.assertIsNotNone(self.uuid, 'step b failed')
        self.assertEqual(self.client.get(self.path, vt.DEVICE, 'Status'), 'managed')
        self.rec.clear()
        secs = self.remove_held(self.uuid)
        print(f'\n  sysfs remove of a held device took {secs:.2f} s', file=sys.stderr)
        self.device_signal('DeviceRemoved', self.uuid)
        self.assertNotIn(self.uuid, self.client.devices())
        with self.assertRaises(GLib.Error) as cm:
            self.client.manager('GetDevice', '(s)', (self.uuid,))
        self.assertEqual(vt.dbus_error_name(cm.exception), 'org.vfmig1.Error.NoSuchDevice')
        self.types_changed()
        self.assertEqual(self.types()[f'{MOD}-small'][6], MAX_INSTANCES)
        log = dmesg()
        self.assertNotIn('blocked until', log)
        # The module logs this when it is asked for a device whose owner armed
        # no request eventfd: vfmigd must have armed one.
        self.assertNotIn('no request eventfd armed', log)
        self.assertIn('the kernel asked for the device back', self.daemon.output())

    def test_f_teardown(self):
        self.rec.clear()
        made = [self.create_and_wait(t)[0] for t in ('small', 'large')]
        self.assertTrue(set(made) <= set(self.client.devices()))
        self.rec.clear()
        for u in made:
            self.remove_held(u)
        for u in made:
            self.device_signal('DeviceRemoved', u)
        self.assertFalse(set(made) & set(self.client.devices()))
        # Nothing of the module is held any more: it unloads.
        self.rec.clear()
        r = subprocess.run(['rmmod', MOD], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(PARENT_SYS))
        self.types_changed()
        deadline = time.monotonic() + 10
        while self.types() and time.monotonic() < deadline:
            self.rec.pump(0.1)
        self.assertEqual(self.types(), {})

    def test_g_sigterm(self):
        # The module comes back: so do the parent and its types.
        self.rec.clear()
        r = subprocess.run(['modprobe', MOD], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.types_changed()
        deadline = time.monotonic() + 10
        while len(self.types()) < 2 and time.monotonic() < deadline:
            self.rec.pump(0.1)
        if set(self.types()) != {f'{MOD}-small', f'{MOD}-large'}:
            # what vfmigd saw of the reload, and what sysfs has now
            tail = self.daemon.output().splitlines()[-60:]
            print('\n'.join(['vfmigd log (tail):'] + tail), file=sys.stderr)
            print(subprocess.run(['ls', '-lR', PARENT_SYS + '/mdev_supported_types'], capture_output=True,
                                 text=True).stdout, file=sys.stderr)
        self.assertEqual(set(self.types()), {f'{MOD}-small', f'{MOD}-large'})
        # vfmigd shuts down cleanly while it holds a device ...
        uuid, _, _ = self.create_and_wait('small')
        group = iommu_group(uuid)
        self.daemon.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.daemon.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.fail('vfmigd did not exit on SIGTERM')
        self.assertEqual(rc, 0, self.daemon.output())
        # ... and the device is free for the next owner, and removable.
        os.close(os.open(f'/dev/vfio/{group}', os.O_RDWR))
        rc, _, err = sysfs_write(f'/sys/bus/mdev/devices/{uuid}/remove', '1', timeout=REMOVE_TIMEOUT)
        self.assertEqual(rc, 0, err)

if __name__ == '__main__':
    unittest.main(verbosity=2, argv=[sys.argv[0]])
