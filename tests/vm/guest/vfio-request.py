#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Guest-side test of vfmig_testmdev's device request (.request) through the
# raw VFIO uAPI: removing an mdev through sysfs while this process holds its
# device fd must block in the kernel, which asks the holder to let go:
#
#   armed    a REQ eventfd is armed: it is signalled while the remove waits;
#            closing the device lets the remove finish
#   unarmed  no eventfd: the module logs one notice and the remove waits
#            until the device is closed
#
#   vfio-request.py armed|unarmed UUID GROUP
#
# Exit 0 when all checks pass.

import os
import select
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
vs = __import__("vfio-selftest")

failures = 0


def check(cond, what):
    global failures
    if cond:
        print(f"  ok   {what}")
    else:
        failures += 1
        print(f"  FAIL {what}")


def dmesg():
    return subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30).stdout


def main():
    mode, uuid, group = sys.argv[1:4]
    print(f"removal of a held device, request channel {mode}")
    c = vs.Container()
    dev = vs.Device(c, uuid, group)
    efd = None
    if mode == "armed":
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        check(vs.set_irqs(dev.fd, vs.IRQ_DATA_EVENTFD | vs.IRQ_ACTION_TRIGGER, vs.VFIO_PCI_REQ_IRQ_INDEX, 1,
                          struct.pack("<i", efd)) == 0, "REQ eventfd armed")

    # The bus link goes first in device_del(); the device directory stays
    # until the driver has let go.
    devdir = os.path.realpath(f"/sys/bus/mdev/devices/{uuid}")
    t0 = time.monotonic()
    remover = subprocess.Popen(["/bin/sh", "-c", f"echo 1 > /sys/bus/mdev/devices/{uuid}/remove"])
    if efd is not None:
        ready, _, _ = select.select([efd], [], [], 8)
        check(ready == [efd], f"eventfd signalled {time.monotonic() - t0:.2f} s after the remove started")
        check(vs.eventfd_count(efd) >= 1, "eventfd counter >= 1")
    else:
        time.sleep(1.5)
        notices = [l for l in dmesg().splitlines() if uuid in l and "no request eventfd armed" in l]
        check(len(notices) == 1, f"one 'no request eventfd armed' notice (got {len(notices)})")
    check(remover.poll() is None, "the remove waits while the device is held")
    check(os.path.isdir(devdir), "its device directory is still there")

    dev.close()
    if efd is not None:
        os.close(efd)
    try:
        rc = remover.wait(timeout=8)
    except subprocess.TimeoutExpired:
        rc = None
    check(rc == 0, f"the remove finishes once the device is closed (status {rc})")
    check(not os.path.exists(devdir) and not os.path.exists(f"/sys/bus/mdev/devices/{uuid}"),
          "the device is gone")
    os.close(c.fd)
    log = dmesg()
    check("blocked until" not in log, "no 'blocked until device is released' in dmesg")
    if efd is not None:
        check(not [l for l in log.splitlines() if uuid in l and "no request eventfd armed" in l],
              "no 'no request eventfd armed' notice for the armed device")
    print(f"vfio-request ({mode}): {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
