# SPDX-License-Identifier: LGPL-2.1-or-later
"""Shared harness for vfmig's bus integration tests.

Every test runs under dbus-test-runner --bus-type=system, so
DBUS_SYSTEM_BUS_ADDRESS names a private dbus-daemon whose config includes the
shipped policy (dbus/org.vfmig1.conf).  The harness starts the real vfmigd
binary from the build tree on it, talks to it with Gio as root, and with
busctl run through setpriv as an unprivileged user.
"""
import json
import os
import signal
import subprocess
import sys
import time
import unittest

import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib  # noqa: E402

BUILD = os.environ['VFMIG_BUILD_ROOT']
SOURCE = os.environ['VFMIG_SOURCE_ROOT']
VFMIGD = os.path.join(BUILD, 'daemon', 'vfmigd')
VFMIGCTL = os.path.join(BUILD, 'client', 'vfmigctl')
SIM = os.path.join(SOURCE, 'data', 'sim')

BUS_NAME = 'org.vfmig1'
ROOT_PATH = '/org/vfmig1'
MANAGER = 'org.vfmig1.Manager'
DEVICE = 'org.vfmig1.Device'
NOBODY_UID = 65534
NOBODY_GID = 65534


def system_bus():
    addr = os.environ.get('DBUS_SYSTEM_BUS_ADDRESS')
    assert addr, 'DBUS_SYSTEM_BUS_ADDRESS is not set: run under dbus-test-runner --bus-type=system'
    assert 'unix:path=/var/run/dbus/system_bus_socket' not in addr, 'refusing to test on the real system bus'
    return Gio.DBusConnection.new_for_address_sync(
        addr,
        Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
        None, None)


class Daemon:
    """One vfmigd process on the test bus."""

    def __init__(self, args=(), env=None):
        import tempfile
        self.args = list(args)
        self.env = dict(os.environ)
        # Never the machine's /var/lib/vfmig: a fresh state directory per
        # daemon unless the test gives one (restart tests do).
        self._state = None
        if not (env and 'STATE_DIRECTORY' in env):
            self._state = tempfile.TemporaryDirectory(prefix='vfmig-state-')
            self.env['STATE_DIRECTORY'] = self._state.name
        if env:
            self.env.update(env)
        self.proc = None

    def start(self, wait=True):
        self.proc = subprocess.Popen([VFMIGD] + self.args, env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if wait:
            self.wait_for_name()
        return self

    def wait_for_name(self, timeout=30):
        bus = system_bus()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f'vfmigd exited with {self.proc.returncode}: {err}')
            owner = bus.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
                                  'NameHasOwner', GLib.Variant('(s)', (BUS_NAME,)), None,
                                  Gio.DBusCallFlags.NONE, -1, None).unpack()[0]
            if owner:
                return
            time.sleep(0.05)
        raise AssertionError('vfmigd did not acquire its name')

    def stop(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError('vfmigd did not exit on SIGTERM')
        self.stderr = err
        rc = self.proc.returncode
        self.proc = None
        return rc


class Client:
    """A root client on the test bus."""

    def __init__(self):
        self.bus = system_bus()

    def call(self, path, iface, method, sig=None, args=None, timeout=10000):
        params = GLib.Variant(sig, args) if sig else None
        return self.bus.call_sync(BUS_NAME, path, iface, method, params, None,
                                  Gio.DBusCallFlags.NONE, timeout, None).unpack()

    def manager(self, method, sig=None, args=None):
        return self.call(ROOT_PATH, MANAGER, method, sig, args)

    def get(self, path, iface, prop):
        return self.call(path, 'org.freedesktop.DBus.Properties', 'Get', '(ss)', (iface, prop))[0]

    def get_all(self, path, iface):
        return self.call(path, 'org.freedesktop.DBus.Properties', 'GetAll', '(s)', (iface,))[0]

    def devices(self):
        return {name: (kind, driver, path) for name, kind, driver, path in self.manager('ListDevices')[0]}

    def managed_objects(self):
        return self.call(ROOT_PATH, 'org.freedesktop.DBus.ObjectManager', 'GetManagedObjects')[0]


def is_vfio_device(spec):
    """Whether a host-file device is a VFIO device, decided from the file alone."""
    drv = spec.get('driver', '')
    return spec['kind'] == 'mdev' or drv == 'vfio-pci' or drv.endswith('_vfio_pci')


def expected_vfio_devices(host):
    """name -> spec of the VFIO devices of a parsed host file."""
    return {d['name']: d for d in host['devices'] if is_vfio_device(d)}


def dbus_error_name(exc):
    return Gio.DBusError.get_remote_error(exc)


class SignalRecorder:
    """Collects signals from org.vfmig1 while the test runs."""

    def __init__(self, bus):
        self.bus = bus
        self.signals = []
        self.ids = []
        for iface in (MANAGER, 'org.freedesktop.DBus.ObjectManager', 'org.freedesktop.DBus.Properties'):
            self.ids.append(bus.signal_subscribe(None, iface, None, None, None,
                                                 Gio.DBusSignalFlags.NONE, self._on_signal))

    def _on_signal(self, conn, sender, path, iface, member, params):
        self.signals.append((iface, member, path, params.unpack()))

    def pump(self, seconds=0.2):
        ctx = GLib.MainContext.default()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ctx.iteration(False)
            time.sleep(0.005)

    def wait_for(self, predicate, timeout=10):
        ctx = GLib.MainContext.default()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while ctx.iteration(False):
                pass
            for s in self.signals:
                if predicate(s):
                    return s
            time.sleep(0.01)
        raise AssertionError(f'signal not seen; got {self.signals}')

    def clear(self):
        self.pump(0.05)
        self.signals = []

    def close(self):
        for i in self.ids:
            self.bus.signal_unsubscribe(i)


def profile_variants(profile):
    """A profile as GetMigrationProfile returns it (unpacked), ready to send back as a{sv}."""
    signature = {bool: 'b', str: 's', dict: 'a{ss}', list: 'as'}
    return {k: GLib.Variant('t' if k == 'state-size' else 'u', v) if type(v) is int
            else GLib.Variant(signature[type(v)], v) for k, v in profile.items()}


class SecondBus:
    """Another private dbus-daemon with the test bus's configuration (the shipped policy)."""

    def __init__(self):
        conf = os.path.join(BUILD, 'tests', 'bus', 'system-bus.conf')
        self.proc = subprocess.Popen(['dbus-daemon', '--config-file=' + conf, '--nofork', '--print-address'],
                                     stdout=subprocess.PIPE, text=True)
        self.address = self.proc.stdout.readline().strip()
        assert self.address, 'the second dbus-daemon gave no address'

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def run_as_nobody(argv, **kw):
    """Run argv as an unprivileged user (no supplementary groups)."""
    return subprocess.run(['setpriv', f'--reuid={NOBODY_UID}', f'--regid={NOBODY_GID}', '--clear-groups',
                           '--'] + argv, capture_output=True, text=True, timeout=30, **kw)


def busctl_json(*args, user=None):
    argv = ['busctl', '--system', '--json=short'] + list(args)
    r = run_as_nobody(argv) if user == 'nobody' else subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return r.returncode, (json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else None), r.stderr


def main():
    unittest.main(verbosity=2, argv=[sys.argv[0]])
