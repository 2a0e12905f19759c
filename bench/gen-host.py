#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Write a simulated host file (doc/sim-host.md) with TARGETS matrix targets
(VFIO devices + creatable mdev types; default 4096) for bench-query.

The mix, deterministic (no randomness), matched to data/compat.d:
  ConnectX-7 VFs on mlx5_vfio_pci (rule mlx5-cx7), firmware 28.39.1002 /
    28.41.1000 / 28.43.2026 per card, 125 VFs per card behind a PF that
    stays on mlx5_core (not a VFIO device)        TARGETS - 1096 (3000)
  ConnectX-6 Dx VFs on mlx5_vfio_pci (mlx5-cx6dx), fw 22.36.1010   200
  QAT 4xxx VFs on qat_vfio_pci (qat-gen4-vf), 16 per PF on 4xxx    256
  HiSilicon SEC VFs on hisi_acc_vfio_pci (hisi-acc)                 64
  Pensando DSC VFs on pds_vfio_pci (pds-vf)                         64
  virtio-net VFs on virtio_vfio_pci (virtio-net-vf)                 64
  ConnectX VFs on plain vfio-pci (no rule matches)                  32
  NVIDIA T4 parents (vgpu_driver_version 535.129.03 / 550.54.14),
    16 parents x 16 creatable vGPU types                           256
  vGPU mdev instances, 10 per parent (one type per GPU, as vGPU
    requires; that type's available-instances drop accordingly)    160
plus a few functions that are not VFIO devices (PFs, NVMe), which the
daemon filters out.  The vGPU type ids and names are illustrative.

Simulated device memory (the migration state) is kept at 4 KiB per device:
the simulator allocates and fills it when vfmigd opens the device at start,
and 4096 x the shipped hosts' 4 MiB would measure memset, not the daemon.

  gen-host.py [--targets N] [-o FILE]      (stdout without -o)
"""
import argparse
import json
import os
import sys

OTHERS = 200 + 256 + 64 + 64 + 64 + 32 + 16 * 16 + 16 * 10   # 1096
CX7_PER_CARD = 125
STATE_SIZE = 4096

T4_TYPES = [  # id, name, framebuffer MiB, max instances
    ('nvidia-222', 'GRID T4-1B', 1024, 16), ('nvidia-223', 'GRID T4-2B', 2048, 8),
    ('nvidia-224', 'GRID T4-2B4', 2048, 8), ('nvidia-225', 'GRID T4-1A', 1024, 16),
    ('nvidia-226', 'GRID T4-2A', 2048, 8), ('nvidia-227', 'GRID T4-4A', 4096, 4),
    ('nvidia-228', 'GRID T4-8A', 8192, 2), ('nvidia-229', 'GRID T4-16A', 16384, 1),
    ('nvidia-230', 'GRID T4-16Q', 16384, 1), ('nvidia-231', 'GRID T4-1Q', 1024, 16),
    ('nvidia-232', 'GRID T4-2Q', 2048, 8), ('nvidia-233', 'GRID T4-4Q', 4096, 4),
    ('nvidia-234', 'GRID T4-8Q', 8192, 2), ('nvidia-319', 'GRID T4-4C', 4096, 4),
    ('nvidia-320', 'GRID T4-8C', 8192, 2), ('nvidia-321', 'GRID T4-16C', 16384, 1),
]
MDEV_TYPES = ('nvidia-222', 'nvidia-225', 'nvidia-231')   # the 1 GiB types: room for 10


class Host:
    def __init__(self):
        self.devices = []
        self.parents = []
        self.group = 100
        self.seed = 1000
        self.targets = 0

    def pci(self, name, driver, vid, did, svid=None, sdid='0x0000', rev='0x00', numa=0,
            attrs=None, flags=None, dma=False, stream=None, vfio=True, comment=None):
        self.group += 1
        d = {'name': name, 'kind': 'pci', 'driver': driver, 'vendor-id': vid, 'device-id': did,
             'subsystem-vendor-id': svid or vid, 'subsystem-device-id': sdid, 'revision': rev,
             'iommu-group': self.group, 'numa-node': numa}
        if comment:
            d['comment'] = comment
        if attrs:
            d['attributes'] = attrs
        if flags:
            self.seed += 1
            d['migration'] = {'flags': flags, 'state-size': STATE_SIZE, 'stream-type': stream or driver,
                              'stream-version': 2, 'fill-seed': self.seed}
            if dma:
                d['migration']['dma-logging'] = True
        self.devices.append(d)
        if vfio:
            self.targets += 1
        return d


def bdf(domain, bus, fn_index):
    """The PCI address of function fn_index (ARI-style: 8 functions per device) on a bus."""
    return f'{domain:04x}:{bus:02x}:{fn_index // 8:02x}.{fn_index % 8:x}'


def build(targets):
    cx7 = targets - OTHERS
    if cx7 < 1:
        sys.exit(f'gen-host.py: --targets must be more than {OTHERS}')
    h = Host()
    sc_p2p = ['stop-copy', 'p2p']
    sc_p2p_pre = ['stop-copy', 'p2p', 'pre-copy']
    cx7_fw = ('28.39.1002', '28.41.1000', '28.43.2026')

    # ConnectX-7: one card per bus 0x10.., PF at .00.0 on mlx5_core, VFs after it.
    cards = (cx7 + CX7_PER_CARD - 1) // CX7_PER_CARD
    if 0x10 + cards > 0x80:
        sys.exit(f'gen-host.py: --targets must be at most {OTHERS + 0x70 * CX7_PER_CARD}')
    left = cx7
    for c in range(cards):
        bus, fw, numa = 0x10 + c, cx7_fw[c % 3], c % 2
        h.pci(bdf(0, bus, 0), 'mlx5_core', '0x15b3', '0x1021', sdid='0x0040', numa=numa,
              attrs={'fw_version': fw}, vfio=False, comment='ConnectX-7 PF, stays on mlx5_core')
        for v in range(min(CX7_PER_CARD, left)):
            h.pci(bdf(0, bus, 1 + v), 'mlx5_vfio_pci', '0x15b3', '0x101e', sdid='0x0040', numa=numa,
                  attrs={'fw_version': fw, 'driver_version': '6.1.0'}, flags=sc_p2p_pre, dma=True)
        left -= min(CX7_PER_CARD, left)

    # ConnectX-6 Dx: two cards of 100 VFs.
    for c in range(2):
        bus = 0x80 + c
        h.pci(bdf(0, bus, 0), 'mlx5_core', '0x15b3', '0x101d', sdid='0x0016', numa=c,
              attrs={'fw_version': '22.36.1010'}, vfio=False, comment='ConnectX-6 Dx PF')
        for v in range(100):
            h.pci(bdf(0, bus, 1 + v), 'mlx5_vfio_pci', '0x15b3', '0x101e', sdid='0x0016', numa=c,
                  attrs={'fw_version': '22.36.1010', 'driver_version': '6.1.0'}, flags=sc_p2p)

    # QAT 4xxx: 16 PFs on 4xxx, 16 VFs each on qat_vfio_pci.
    for c in range(16):
        bus = 0x90 + c
        h.pci(bdf(0, bus, 0), '4xxx', '0x8086', '0x4940', rev='0x40', numa=c % 2, vfio=False,
              comment='QAT 4xxx PF')
        for v in range(16):
            h.pci(bdf(0, bus, 1 + v), 'qat_vfio_pci', '0x8086', '0x4941', rev='0x40', numa=c % 2,
                  attrs={'capabilities_mask': '0x3f' if c < 12 else '0x1f'}, flags=sc_p2p)

    # HiSilicon SEC, Pensando DSC, virtio-net VFs: 64 each on buses 0xa0, 0xa1, 0xa2.
    for v in range(64):
        h.pci(bdf(0, 0xa0, 1 + v), 'hisi_acc_vfio_pci', '0x19e5', '0xa256', rev='0x21',
              attrs={'qp_num': '64'}, flags=sc_p2p)
    for v in range(64):
        h.pci(bdf(0, 0xa1, 1 + v), 'pds_vfio_pci', '0x1dd8', '0x1003', sdid='0x5007', numa=1,
              attrs={'fw_version': '1.60.0' if v % 4 else '1.62.1'}, flags=sc_p2p)
    for v in range(64):
        h.pci(bdf(0, 0xa2, 1 + v), 'virtio_vfio_pci', '0x1af4', '0x1041',
              attrs={'features': '0x130ff'}, flags=sc_p2p)
    # ConnectX-7 VFs on plain vfio-pci: assignable, no migration driver, no rule.
    for v in range(32):
        h.pci(bdf(0, 0xa3, 1 + v), 'vfio-pci', '0x15b3', '0x101e', sdid='0x0040',
              attrs={'fw_version': '28.39.1002'})

    # NVIDIA T4 mdev parents and their vGPU instances.
    for p in range(16):
        name = f'0000:{0xb0 + p:02x}:00.0'
        vgpu = '550.54.14' if p % 2 else '535.129.03'
        h.pci(name, 'nvidia', '0x10de', '0x1eb8', sdid='0x12a2', rev='0xa1', numa=p % 2,
              attrs={'vgpu_driver_version': vgpu}, vfio=False, comment='Tesla T4, vGPU host driver')
        used = MDEV_TYPES[p % len(MDEV_TYPES)]
        types = []
        for tid, tname, fb, maxi in T4_TYPES:
            # One vGPU type per physical GPU: with instances of one type, the others offer none.
            avail = maxi - 10 if tid == used else 0
            types.append({'id': tid, 'name': tname, 'device-api': 'vfio-pci', 'available-instances': avail,
                          'description': f'num_heads=4, frl_config=60, framebuffer={fb}M, max_instance={maxi}'})
        h.parents.append({'name': name, 'driver': 'nvidia', 'types': types})
        h.targets += len(types)
        for i in range(10):
            h.group += 1
            h.seed += 1
            h.devices.append({
                'name': f'{0xb0 + p:08x}-{i:04x}-4000-8000-{p * 16 + i:012x}', 'kind': 'mdev',
                'driver': 'nvidia-vgpu-vfio', 'parent': name, 'mdev-type': used, 'iommu-group': h.group,
                'migration': {'flags': sc_p2p, 'state-size': STATE_SIZE, 'stream-type': used,
                              'stream-version': 1, 'fill-seed': h.seed}})
            h.targets += 1

    h.pci('0000:5e:00.0', 'nvme', '0x144d', '0xa808', sdid='0xa801', vfio=False,
          comment='boot NVMe: not a VFIO device')
    assert h.targets == targets, (h.targets, targets)
    return {'comment': f'Generated by bench/gen-host.py --targets {targets}: '
                       f'{h.targets} matrix targets (VFIO devices + creatable mdev types).',
            'host': f'sim-bench-{targets}', 'kernel-release': '6.1.0-27-amd64',
            'devices': h.devices, 'mdev-parents': h.parents}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--targets', type=int, default=4096)
    ap.add_argument('-o', '--output')
    a = ap.parse_args()
    text = json.dumps(build(a.targets), indent=1) + '\n'
    if a.output:
        with open(a.output + '.tmp', 'w') as f:
            f.write(text)
        os.replace(a.output + '.tmp', a.output)
    else:
        sys.stdout.write(text)


if __name__ == '__main__':
    main()
