#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Guest-side self test of the vfmig_testmdev driver through the raw VFIO
# uAPI (legacy container/group), independent of the project's C code:
# region I/O, reset, the device request channel (vfio-pci's REQ IRQ index:
# IRQ info, arming, loopback trigger, disarming), the migration state machine, the STOP_COPY stream
# format, resuming into a peer, and the failure paths (wrong type, newer
# version, short stream, garbage) that must leave the target in ERROR until
# VFIO_DEVICE_RESET.
#
#   vfio-selftest.py SRC_UUID SRC_GROUP PEER_UUID PEER_GROUP OTHER_UUID OTHER_GROUP
#
# SRC and PEER are of one type, OTHER of another. Exit 0 when all checks pass.

import ctypes
import errno
import os
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
libc.ioctl.restype = ctypes.c_int

def _IO(nr):
    return (ord(';') << 8) | (100 + nr)

VFIO_GET_API_VERSION = _IO(0)
VFIO_CHECK_EXTENSION = _IO(1)
VFIO_SET_IOMMU = _IO(2)
VFIO_GROUP_GET_STATUS = _IO(3)
VFIO_GROUP_SET_CONTAINER = _IO(4)
VFIO_GROUP_GET_DEVICE_FD = _IO(6)
VFIO_DEVICE_GET_INFO = _IO(7)
VFIO_DEVICE_GET_REGION_INFO = _IO(8)
VFIO_DEVICE_GET_IRQ_INFO = _IO(9)
VFIO_DEVICE_SET_IRQS = _IO(10)
VFIO_DEVICE_RESET = _IO(11)
VFIO_DEVICE_FEATURE = _IO(17)
VFIO_TYPE1v2_IOMMU = 3
VFIO_PCI_REQ_IRQ_INDEX, VFIO_PCI_NUM_IRQS = 4, 5
VFIO_IRQ_INFO_EVENTFD = 1
IRQ_DATA_NONE, IRQ_DATA_BOOL, IRQ_DATA_EVENTFD = 1, 2, 4
IRQ_ACTION_MASK, IRQ_ACTION_TRIGGER = 8, 32

FEATURE_GET, FEATURE_SET, FEATURE_PROBE = 1 << 16, 1 << 17, 1 << 18
FEATURE_MIGRATION, FEATURE_MIG_DEVICE_STATE = 1, 2
MIG_STOP_COPY, MIG_P2P = 1, 2
ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P = range(6)
STATE_NAMES = ["ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING_P2P"]

HDR = struct.Struct("<8sI32sQ")

failures = 0


def check(cond, what):
    global failures
    if cond:
        print(f"  ok   {what}")
    else:
        failures += 1
        print(f"  FAIL {what}")


def ioctl(fd, req, buf=None):
    """ioctl with a ctypes buffer (or None / int); returns (ret, errno)."""
    if buf is None:
        arg = None
    elif isinstance(buf, int):
        arg = buf
    else:
        arg = ctypes.addressof(buf)
    r = libc.ioctl(fd, req, arg)
    return r, (ctypes.get_errno() if r < 0 else 0)


def feature(fd, flags, payload=b""):
    size = 8 + len(payload)
    buf = ctypes.create_string_buffer(struct.pack("<II", size, flags) + payload, size)
    r, e = ioctl(fd, VFIO_DEVICE_FEATURE, buf)
    return r, e, buf.raw[8:]


def irq_info(fd, index):
    """Returns (errno, flags, count)."""
    buf = ctypes.create_string_buffer(struct.pack("<IIII", 16, 0, index, 0), 16)
    r, e = ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, buf)
    _, flags, _, count = struct.unpack("<IIII", buf.raw)
    return e, flags, count


def set_irqs(fd, flags, index, count, data=b""):
    """VFIO_DEVICE_SET_IRQS; returns the errno (0 on success)."""
    raw = struct.pack("<IIIII", 20 + len(data), flags, index, 0, count) + data
    buf = ctypes.create_string_buffer(raw, len(raw))
    return ioctl(fd, VFIO_DEVICE_SET_IRQS, buf)[1]


def eventfd_count(efd):
    """The eventfd's counter (consumed), 0 if it was not signalled."""
    try:
        return struct.unpack("<Q", os.read(efd, 8))[0]
    except BlockingIOError:
        return 0


def get_state(fd):
    r, e, out = feature(fd, FEATURE_GET | FEATURE_MIG_DEVICE_STATE, struct.pack("<Ii", 0, -1))
    if r < 0:
        return None
    return struct.unpack("<Ii", out)[0]


def set_state(fd, state):
    """Returns (errno or 0, data fd or -1)."""
    r, e, out = feature(fd, FEATURE_SET | FEATURE_MIG_DEVICE_STATE, struct.pack("<Ii", state, -1))
    if r < 0:
        return e, -1
    return 0, struct.unpack("<Ii", out)[1]


class Device:
    def __init__(self, container, uuid, group):
        self.uuid = uuid
        self.gfd = os.open(f"/dev/vfio/{group}", os.O_RDWR)
        st = ctypes.create_string_buffer(struct.pack("<II", 8, 0), 8)
        r, e = ioctl(self.gfd, VFIO_GROUP_GET_STATUS, st)
        assert r == 0, f"GROUP_GET_STATUS: {os.strerror(e)}"
        assert struct.unpack("<II", st.raw)[1] & 1, f"group {group} not viable"
        cfd = ctypes.c_int(container.fd)
        r, e = ioctl(self.gfd, VFIO_GROUP_SET_CONTAINER, cfd)
        assert r == 0, f"GROUP_SET_CONTAINER: {os.strerror(e)}"
        container.ensure_iommu()
        name = ctypes.create_string_buffer(uuid.encode())
        r, e = ioctl(self.gfd, VFIO_GROUP_GET_DEVICE_FD, name)
        assert r >= 0, f"GROUP_GET_DEVICE_FD({uuid}): {os.strerror(e)}"
        self.fd = r
        info = ctypes.create_string_buffer(struct.pack("<IIIII", 20, 0, 0, 0, 0), 20)
        r, e = ioctl(self.fd, VFIO_DEVICE_GET_INFO, info)
        assert r == 0, f"DEVICE_GET_INFO: {os.strerror(e)}"
        _, self.flags, self.num_regions, self.num_irqs, _ = struct.unpack("<IIIII", info.raw)
        ri = ctypes.create_string_buffer(struct.pack("<IIIIQQ", 32, 0, 0, 0, 0, 0), 32)
        r, e = ioctl(self.fd, VFIO_DEVICE_GET_REGION_INFO, ri)
        assert r == 0, f"DEVICE_GET_REGION_INFO: {os.strerror(e)}"
        _, self.rflags, _, _, self.size, self.offset = struct.unpack("<IIIIQQ", ri.raw)

    def write_mem(self, data):
        assert os.pwrite(self.fd, data, self.offset) == len(data)

    def read_mem(self):
        return os.pread(self.fd, self.size, self.offset)

    def reset(self):
        return ioctl(self.fd, VFIO_DEVICE_RESET)[0]

    def close(self):
        os.close(self.fd)
        os.close(self.gfd)


class Container:
    def __init__(self):
        self.fd = os.open("/dev/vfio/vfio", os.O_RDWR)
        self.iommu_set = False
        r, _ = ioctl(self.fd, VFIO_GET_API_VERSION)
        assert r == 0, f"VFIO API version {r}"
        r, _ = ioctl(self.fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU)
        assert r == 1, "no TYPE1v2 IOMMU extension"

    def ensure_iommu(self):
        if not self.iommu_set:
            r, e = ioctl(self.fd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)
            assert r == 0, f"SET_IOMMU: {os.strerror(e)}"
            self.iommu_set = True


def read_all(fd):
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks)


def save(dev):
    """RUNNING -> STOP_COPY, read the stream, -> STOP -> RUNNING."""
    e, dfd = set_state(dev.fd, STOP_COPY)
    if e:
        return None
    data = read_all(dfd)
    os.close(dfd)
    set_state(dev.fd, STOP)
    set_state(dev.fd, RUNNING)
    return data


def resume(dev, stream):
    """-> RESUMING, write, -> STOP; returns the errno of leaving RESUMING."""
    e, dfd = set_state(dev.fd, RESUMING)
    if e:
        return -e
    if stream:
        os.write(dfd, stream)
    os.close(dfd)
    e, _ = set_state(dev.fd, STOP)
    return e


def pattern(size, seed):
    return bytes(((i * 7 + seed) ^ (i >> 8)) & 0xFF for i in range(size))


def main():
    src_uuid, src_group, peer_uuid, peer_group, oth_uuid, oth_group = sys.argv[1:7]
    version = int(open("/sys/module/vfmig_testmdev/parameters/stream_version").read())
    c = Container()
    src = Device(c, src_uuid, src_group)
    peer = Device(c, peer_uuid, peer_group)
    oth = Device(c, oth_uuid, oth_group)
    src_type = os.path.basename(os.readlink(f"/sys/bus/mdev/devices/{src_uuid}/mdev_type"))
    oth_type = os.path.basename(os.readlink(f"/sys/bus/mdev/devices/{oth_uuid}/mdev_type"))

    print("device info and region 0")
    check(src.flags & 1 and src.num_regions == 1, f"GET_INFO flags {src.flags:#x} regions {src.num_regions}")
    check(src.rflags & 3 == 3, f"region 0 READ|WRITE (flags {src.rflags:#x})")
    check(src.size == peer.size and src.size != oth.size,
          f"sizes src {src.size} peer {peer.size} other {oth.size}")

    print("device request channel (vfio-pci's REQ index)")
    check(src.num_irqs == VFIO_PCI_NUM_IRQS, f"num_irqs {src.num_irqs} == VFIO_PCI_NUM_IRQS")
    for i in range(VFIO_PCI_REQ_IRQ_INDEX):
        e, _, count = irq_info(src.fd, i)
        check(e == 0 and count == 0, f"GET_IRQ_INFO index {i}: count 0 (errno {e}, count {count})")
    e, flags, count = irq_info(src.fd, VFIO_PCI_REQ_IRQ_INDEX)
    check(e == 0 and count == 1 and flags & VFIO_IRQ_INFO_EVENTFD,
          f"GET_IRQ_INFO REQ: count 1, EVENTFD (errno {e}, flags {flags:#x}, count {count})")
    check(irq_info(src.fd, VFIO_PCI_NUM_IRQS)[0] == errno.EINVAL, "GET_IRQ_INFO past the last index -> EINVAL")
    TRIG = IRQ_ACTION_TRIGGER
    REQ = VFIO_PCI_REQ_IRQ_INDEX
    check(set_irqs(src.fd, IRQ_DATA_NONE | TRIG, REQ, 1) == errno.EINVAL, "trigger before arming -> EINVAL")
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    efd2 = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    arm = lambda fd: struct.pack("<i", fd)  # noqa: E731
    check(set_irqs(src.fd, IRQ_DATA_EVENTFD | TRIG, 0, 1, arm(efd)) == errno.EINVAL, "arming index 0 -> EINVAL")
    check(set_irqs(src.fd, IRQ_DATA_EVENTFD | IRQ_ACTION_MASK, REQ, 1, arm(efd)) == errno.EINVAL,
          "ACTION_MASK on REQ -> EINVAL")
    check(set_irqs(src.fd, IRQ_DATA_EVENTFD | TRIG, REQ, 1, arm(src.gfd)) == errno.EINVAL,
          "arming with a non-eventfd fd -> EINVAL")
    check(set_irqs(src.fd, IRQ_DATA_EVENTFD | TRIG, REQ, 1, arm(efd)) == 0, "arm the REQ eventfd")
    check(eventfd_count(efd) == 0, "not signalled by arming")
    check(set_irqs(src.fd, IRQ_DATA_NONE | TRIG, REQ, 1) == 0 and eventfd_count(efd) == 1,
          "DATA_NONE trigger signals it once")
    check(set_irqs(src.fd, IRQ_DATA_BOOL | TRIG, REQ, 1, b"\1") == 0 and eventfd_count(efd) == 1,
          "DATA_BOOL true signals it")
    check(set_irqs(src.fd, IRQ_DATA_BOOL | TRIG, REQ, 1, b"\0") == 0 and eventfd_count(efd) == 0,
          "DATA_BOOL false does not")
    check(set_irqs(src.fd, IRQ_DATA_EVENTFD | TRIG, REQ, 1, arm(efd2)) == 0, "re-arm with another eventfd")
    set_irqs(src.fd, IRQ_DATA_NONE | TRIG, REQ, 1)
    check(eventfd_count(efd2) == 1 and eventfd_count(efd) == 0, "only the new eventfd is signalled")
    check(set_irqs(src.fd, IRQ_DATA_EVENTFD | TRIG, REQ, 1, arm(-1)) == 0, "disarm with fd -1")
    check(set_irqs(src.fd, IRQ_DATA_NONE | TRIG, REQ, 1) == errno.EINVAL and eventfd_count(efd2) == 0,
          "trigger after disarming -> EINVAL, nothing signalled")
    check(set_irqs(src.fd, IRQ_DATA_EVENTFD | TRIG, REQ, 1, arm(efd)) == 0 and
          set_irqs(src.fd, IRQ_DATA_NONE | TRIG, REQ, 0) == 0 and
          set_irqs(src.fd, IRQ_DATA_NONE | TRIG, REQ, 1) == errno.EINVAL, "DATA_NONE count 0 disarms")
    os.close(efd2)
    # Left armed: closing the device must drop the eventfd (checked by the
    # module unloading cleanly, and by a clean kernel log).
    check(set_irqs(src.fd, IRQ_DATA_EVENTFD | TRIG, REQ, 1, arm(efd)) == 0, "arm again, left armed")
    os.close(efd)

    pat = pattern(src.size, 0x5A)
    src.write_mem(pat)
    check(src.read_mem() == pat, "pattern written and read back through region 0")
    check(os.pread(src.fd, 16, src.offset + src.size) == b"", "read past the region end returns 0 bytes")

    print("migration feature")
    r, e, out = feature(src.fd, FEATURE_GET | FEATURE_MIGRATION, struct.pack("<Q", 0))
    mflags = struct.unpack("<Q", out)[0] if r == 0 else None
    check(mflags == MIG_STOP_COPY | MIG_P2P, f"migration flags {mflags} == STOP_COPY|P2P")
    check(get_state(src.fd) == RUNNING, "initial state RUNNING")
    for t, what in ((6, "PRE_COPY (6)"), (7, "PRE_COPY_P2P (7)"), (8, "8"), (1000, "1000"), (ERROR, "ERROR")):
        e, _ = set_state(src.fd, t)
        check(e == errno.EINVAL and get_state(src.fd) == RUNNING, f"SET to {what} -> EINVAL, still RUNNING")

    print("save")
    stream = save(src)
    check(stream is not None, "RUNNING -> STOP_COPY gave a data fd")
    stream = stream or b""
    check(len(stream) == HDR.size + src.size, f"stream length {len(stream)} == {HDR.size} + {src.size}")
    magic, ver, typ, size = HDR.unpack_from(stream) if len(stream) >= HDR.size else (b"", 0, b"", 0)
    check(magic == b"VFMIGDEV", "magic VFMIGDEV")
    check(ver == version, f"stream version {ver} == module's {version}")
    check(typ.rstrip(b"\0").decode() == src_type and typ.endswith(b"\0"), f"type '{typ.rstrip(bytes(1)).decode()}'")
    check(size == src.size, f"memory size {size}")
    check(stream[HDR.size:] == pat, "stream body is the device memory")
    check(get_state(src.fd) == RUNNING, "source back in RUNNING")

    print("resume into the peer")
    check(resume(peer, stream) == 0, "RESUMING -> STOP accepted")
    check(get_state(peer.fd) == STOP, "peer in STOP")
    check(set_state(peer.fd, RUNNING)[0] == 0, "STOP -> RUNNING (via RUNNING_P2P)")
    check(peer.read_mem() == pat, "peer memory equals source memory")
    for s in (RUNNING_P2P, STOP, RUNNING_P2P, RUNNING):
        check(set_state(peer.fd, s)[0] == 0 and get_state(peer.fd) == s, f"arc to {STATE_NAMES[s]}")

    def bad(name, data, dev=peer):
        e = resume(dev, data)
        check(e == errno.EINVAL, f"{name}: leaving RESUMING fails with EINVAL (got {e})")
        check(get_state(dev.fd) == ERROR, f"{name}: device in ERROR")
        check(set_state(dev.fd, RUNNING)[0] == errno.EINVAL, f"{name}: ERROR -> RUNNING refused")
        check(get_state(dev.fd) == ERROR, f"{name}: still ERROR")
        check(set_state(dev.fd, ERROR)[0] == 0, f"{name}: ERROR -> ERROR is a no-op")
        check(set_state(dev.fd, STOP)[0] == errno.EINVAL, f"{name}: ERROR -> STOP refused")
        check(dev.reset() == 0 and get_state(dev.fd) == RUNNING, f"{name}: RESET -> RUNNING")

    print("rejected streams")
    bad("short stream", stream[:-1])
    bad("empty stream", b"")
    bad("header only", stream[:HDR.size])
    bad("trailing byte", stream + b"x")
    bad("bad magic", b"VFMIGDEX" + stream[8:])
    bad("newer version", stream[:8] + struct.pack("<I", version + 1) + stream[12:])
    bad("version 0", stream[:8] + struct.pack("<I", 0) + stream[12:])
    bad("other type into this type", stream, dev=oth)
    other_stream = save(oth) or b""
    check(len(other_stream) == HDR.size + oth.size, f"{oth_type} stream length {len(other_stream)}")
    bad("bigger type into smaller", other_stream if oth.size > src.size else stream,
        dev=src if oth.size > src.size else oth)
    if version > 1:
        old = stream[:8] + struct.pack("<I", version - 1) + stream[12:]
        check(resume(peer, old) == 0, f"older stream version {version - 1} accepted")
        peer.reset()
    check(peer.reset() == 0 and peer.read_mem() == bytes(peer.size), "RESET clears device memory")

    print("data fd after leaving the state")
    e, dfd = set_state(src.fd, STOP_COPY)
    check(e == 0, "STOP_COPY again")
    set_state(src.fd, STOP)
    try:
        os.read(dfd, 16)
        check(False, "read on a stale saving fd fails")
    except OSError as ex:
        check(ex.errno == errno.ENODEV, f"read on a stale saving fd -> ENODEV ({ex.strerror})")
    os.close(dfd)
    set_state(src.fd, RUNNING)

    # Close with a data fd still open: the device must cut it off cleanly.
    e, dfd = set_state(src.fd, STOP_COPY)
    for d in (src, peer, oth):
        d.close()
    try:
        os.read(dfd, 16)
        check(False, "read after device close fails")
    except OSError as ex:
        check(ex.errno == errno.ENODEV, "read after device close -> ENODEV")
    os.close(dfd)
    os.close(c.fd)
    print(f"vfio-selftest: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
