# SPDX-License-Identifier: LGPL-2.1-or-later
"""polkit harness for the bus tests.

- PolkitD: the real polkitd (/usr/lib/polkit-1/polkitd) on the private test
  bus, in a private mount namespace where tmpfs mounts hide the machine's
  actions and rules: polkitd sees exactly the project's policy/org.vfmig1.policy
  and the test rules file given, and the machine's polkit config is untouched.
- MockPolkit: python-dbusmock's polkitd template (allowed actions, hanging
  CheckAuthorization calls released on demand, recorded calls).
- ensure_test_user(): a system group and user for "a member of the group
  polkit grants" (created if missing; polkit reads group membership from the
  user database, not from the caller's process).
- call_as(): one method call from a separate process running as another
  user, printing a JSON verdict; OpenDevice results are checked as real FDs.
"""
import json
import os
import pwd
import grp
import subprocess
import tempfile
import time

import vfmigtest as vt
from gi.repository import Gio, GLib

POLKITD = '/usr/lib/polkit-1/polkitd'
POLKIT_NAME = 'org.freedesktop.PolicyKit1'
POLKIT_PATH = '/org/freedesktop/PolicyKit1/Authority'
POLKIT_IFACE = 'org.freedesktop.PolicyKit1.Authority'
MOCK_IFACE = 'org.freedesktop.DBus.Mock'
POLICY_FILE = os.path.join(vt.SOURCE, 'policy', 'org.vfmig1.policy')

TEST_GROUP = 'vfmig-pktest'
TEST_USER = 'vfmig-pktest'

ACTION_OPEN = 'org.vfmig1.open-device'
ACTION_MANAGE = 'org.vfmig1.manage'

# Members of TEST_GROUP may do everything; nobody may open one device only,
# which checks that the daemon passes the "device" and "verb" details.
TEST_RULES = '''
polkit.addRule(function(action, subject) {
        if (action.id.indexOf("org.vfmig1.") == 0 && subject.isInGroup("%(group)s"))
                return polkit.Result.YES;
        if (action.id == "org.vfmig1.open-device" && subject.user == "nobody" &&
            action.lookup("device") == "0000:17:00.2" && action.lookup("verb") == "open-device")
                return polkit.Result.YES;
        return polkit.Result.NOT_HANDLED;
});
''' % {'group': TEST_GROUP}


def ensure_test_user():
    """Create TEST_GROUP and TEST_USER (a member of it) unless they exist."""
    try:
        grp.getgrnam(TEST_GROUP)
    except KeyError:
        subprocess.run(['groupadd', '--system', '-f', TEST_GROUP], check=True)
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        r = subprocess.run(['useradd', '--system', '--no-create-home', '--home-dir', '/nonexistent',
                            '--shell', '/usr/sbin/nologin', '--gid', TEST_GROUP, TEST_USER],
                           capture_output=True, text=True)
        # Another test process may have created it meanwhile (exit 9: exists).
        assert r.returncode in (0, 9), r.stderr
    user = pwd.getpwnam(TEST_USER)
    assert user.pw_gid == grp.getgrnam(TEST_GROUP).gr_gid, f'{TEST_USER} is not in {TEST_GROUP}'
    return user.pw_uid, user.pw_gid


def name_has_owner(bus, name):
    return bus.call_sync('org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus',
                         'NameHasOwner', GLib.Variant('(s)', (name,)), None,
                         Gio.DBusCallFlags.NONE, -1, None).unpack()[0]


def wait_for_name(name, proc, timeout=30, gone=False):
    bus = vt.system_bus()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not gone and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f'{name} owner exited with {proc.returncode}: {out} {err}')
        if name_has_owner(bus, name) != gone:
            return
        time.sleep(0.05)
    raise AssertionError(f'{name} {"still owned" if gone else "not owned"} after {timeout}s')


class PolkitD:
    """The real polkitd on the test bus, seeing only our actions and rules."""

    SCRIPT = r'''
set -e
for d in /usr/share/polkit-1/actions /usr/share/polkit-1/rules.d /etc/polkit-1/rules.d; do
        mkdir -p "$d"
        mount -t tmpfs -o mode=0755 vfmig-polkit-test "$d"
done
cp "$VFMIG_PK_POLICY" /usr/share/polkit-1/actions/
cp "$VFMIG_PK_RULES" /etc/polkit-1/rules.d/50-vfmig-test.rules
chmod 0644 /usr/share/polkit-1/actions/* /etc/polkit-1/rules.d/*
exec "$VFMIG_PK_POLKITD"
'''

    def __init__(self, rules=TEST_RULES):
        self.tmp = tempfile.TemporaryDirectory(prefix='vfmig-polkit-')
        self.rules = os.path.join(self.tmp.name, 'test.rules')
        with open(self.rules, 'w') as f:
            f.write(rules)
        self.proc = None

    def start(self):
        env = dict(os.environ, VFMIG_PK_POLICY=POLICY_FILE, VFMIG_PK_RULES=self.rules,
                   VFMIG_PK_POLKITD=POLKITD)
        self.log = open(os.path.join(self.tmp.name, 'polkitd.log'), 'w+')
        self.proc = subprocess.Popen(['unshare', '--mount', '--propagation', 'private',
                                      'sh', '-c', self.SCRIPT],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for_name(POLKIT_NAME, self.proc)
        except AssertionError as e:
            raise AssertionError(f'{e}; polkitd said: {self.output()}') from None
        return self

    def output(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        wait_for_name(POLKIT_NAME, None, gone=True)
        self.log.close()
        self.tmp.cleanup()


class MockPolkit:
    """python-dbusmock's polkitd template on the test bus."""

    def __init__(self):
        self.proc = None

    def start(self):
        # dbusmock logs every call: to a file, so that a full pipe never blocks it.
        self.log = tempfile.TemporaryFile(mode='w+')
        self.proc = subprocess.Popen(['/usr/bin/python3', '-m', 'dbusmock', '--system', '--template', 'polkitd'],
                                     stdout=self.log, stderr=subprocess.STDOUT, text=True)
        wait_for_name(POLKIT_NAME, self.proc)
        self.bus = vt.system_bus()
        # The template lacks CancelCheckAuthorization: record it like any call.
        self.mock('AddMethod', '(sssss)', (POLKIT_IFACE, 'CancelCheckAuthorization', 's', '', ''))
        return self

    def mock(self, method, sig=None, args=None):
        params = GLib.Variant(sig, args) if sig else None
        return self.bus.call_sync(POLKIT_NAME, POLKIT_PATH, MOCK_IFACE, method, params, None,
                                  Gio.DBusCallFlags.NONE, 10000, None).unpack()

    def set_allowed(self, actions):
        self.mock('SetAllowed', '(as)', (actions,))

    def hang(self, actions):
        self.mock('SimulateHangActions', '(as)', (actions,))

    def release(self):
        self.mock('ReleaseHangingCalls')

    def has_hanging(self):
        return bool(self.mock('HaveHangingCalls')[0])

    def calls(self, method):
        """[(timestamp, args)] of the calls of method so far."""
        return self.mock('GetMethodCalls', '(s)', (method,))[0]

    def clear_calls(self):
        self.mock('ClearCalls')

    def wait_hanging(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.has_hanging():
                return
            time.sleep(0.02)
        raise AssertionError('no CheckAuthorization call is hanging')

    def stop(self):
        if self.proc:
            if self.proc.poll() is None:
                self.proc.terminate()
            self.proc.wait(timeout=10)
            self.log.close()
        self.proc = None
        wait_for_name(POLKIT_NAME, None, gone=True)


# Run in a separate process as another user: one call, a JSON line back.
# Arguments, when given, are one GVariant in text form (a tuple); "handle 0"
# in it refers to one end of a socketpair made by the caller and handed in.
CALLER = r'''
import json, os, socket, sys
import gi
gi.require_version('Gio', '2.0')
from gi.repository import Gio, GLib
path, iface, method = sys.argv[1:4]
interactive = len(sys.argv) > 4 and sys.argv[4] == 'interactive'
args = sys.argv[5] if len(sys.argv) > 5 else ''
bus = Gio.DBusConnection.new_for_address_sync(
    os.environ['DBUS_SYSTEM_BUS_ADDRESS'],
    Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
print(json.dumps({'started': bus.get_unique_name()}), flush=True)
flags = Gio.DBusCallFlags.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else Gio.DBusCallFlags.NONE
params = GLib.Variant.parse(None, args, None, None) if args else None
fdl = None
keep = None
if args and 'handle' in args:
    keep, theirs = socket.socketpair()
    fdl = Gio.UnixFDList.new()
    fdl.append(theirs.fileno())
    theirs.close()
try:
    reply, fds = bus.call_with_unix_fd_list_sync('org.vfmig1', path, iface, method, params, None, flags,
                                                 120000, fdl, None)
except GLib.Error as e:
    print(json.dumps({'error': Gio.DBusError.get_remote_error(e), 'message': e.message}), flush=True)
    sys.exit(0)
out = {'ok': True}
if method == 'OpenDevice':
    fd = fds.get(reply.unpack()[0])
    out['size'] = os.fstat(fd).st_size
    os.pwrite(fd, b'vfmig-polkit', 4096)
    out['readback'] = os.pread(fd, 12, 4096).decode()
    os.close(fd)
elif reply is not None and reply.n_children() > 0:
    out['reply'] = reply.unpack()
print(json.dumps(out), flush=True)
'''


def user_ids(user):
    if user == 'nobody':
        return vt.NOBODY_UID, vt.NOBODY_GID, ['--clear-groups']
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid, ['--init-groups']


def caller_argv(user, path, iface, method, interactive=False, args=None):
    uid, gid, groups = user_ids(user)
    argv = ['setpriv', f'--reuid={uid}', f'--regid={gid}'] + groups + \
           ['--', '/usr/bin/python3', '-c', CALLER, path, iface, method,
            'interactive' if interactive else '-']
    if args:
        argv.append(args)
    return argv


def call_as(user, path, iface, method, interactive=False, timeout=60, args=None):
    """Call method as user and wait; returns the parsed verdict.

    args: the call's arguments as one GVariant tuple in text form."""
    r = subprocess.run(caller_argv(user, path, iface, method, interactive, args),
                       capture_output=True, text=True, timeout=timeout, cwd='/')
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and len(lines) == 2, f'caller failed ({r.returncode}): {r.stdout} {r.stderr}'
    return json.loads(lines[1])


class PendingCall:
    """A call as user that is left running (to hang in polkit)."""

    def __init__(self, user, path, iface, method, interactive=False):
        self.proc = subprocess.Popen(caller_argv(user, path, iface, method, interactive),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd='/')
        line = self.proc.stdout.readline()
        assert line, f'caller did not start: {self.proc.stderr.read()}'
        self.unique_name = json.loads(line)['started']

    def done(self):
        return self.proc.poll() is not None

    def result(self, timeout=30):
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0 and out.strip(), f'caller failed: {out} {err}'
        return json.loads(out.strip().splitlines()[-1])

    def kill(self):
        self.proc.kill()
        self.proc.communicate()
