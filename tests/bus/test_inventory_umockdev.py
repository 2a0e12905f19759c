# SPDX-License-Identifier: LGPL-2.1-or-later
"""The real-host inventory (sd-device enumerator + monitor) on umockdev
fixture trees: which functions are VFIO devices, mdev parents and types, and
a live hotplug sequence checked on the bus after every step.

Runs as `umockdev-wrapper python3 ...` under dbus-test-runner, so vfmigd (a
child) sees the testbed's /sys and its uevents."""
import os
import unittest

import gi
gi.require_version('UMockdev', '1.0')
from gi.repository import UMockdev  # noqa: E402

import vfmigtest as vt  # noqa: E402

MDEV1 = '7e3a1f0c-2b4d-4c6e-8f90-a1b2c3d4e5f6'
MDEV2 = '0b9d8c7a-6f5e-4d3c-2b1a-0f9e8d7c6b5a'
GPU = '/sys/devices/pci0000:00/0000:00:02.0'


def pci_fixture(bdf, vendor, device, driver, group, numa='0', extra=''):
    lines = [f'P: /devices/pci0000:00/{bdf}', 'E: SUBSYSTEM=pci', f'E: PCI_SLOT_NAME={bdf}']
    if driver:
        lines.append(f'E: DRIVER={driver}')
    lines += [f'A: vendor={vendor}', f'A: device={device}', f'A: subsystem_vendor={vendor}',
              'A: subsystem_device=0x0040', 'A: revision=0x01', f'A: numa_node={numa}']
    if driver:
        lines.append(f'L: driver=../../../bus/pci/drivers/{driver}')
    if group is not None:
        lines.append(f'L: iommu_group=../../../kernel/iommu_groups/{group}')
    return '\n'.join(lines) + '\n' + extra


class UmockdevInventory(unittest.TestCase):
    def setUp(self):
        self.assertIn('umockdev', os.environ.get('LD_PRELOAD', ''), 'not running under umockdev-wrapper')
        self.tb = UMockdev.Testbed.new()
        self.assertTrue(UMockdev.in_mock_environment())
        self.root = self.tb.get_root_dir()
        for d in ('bus/pci/drivers/vfio-pci', 'bus/pci/drivers/mlx5_vfio_pci', 'bus/pci/drivers/nvme',
                  'bus/pci/drivers/i915', 'bus/mdev/drivers/vfio_mdev', 'class/mdev_bus'):
            os.makedirs(os.path.join(self.root, 'sys', d), exist_ok=True)
        for g in (1, 30, 31, 40, 41, 60, 61):
            os.makedirs(os.path.join(self.root, 'sys/kernel/iommu_groups', str(g)), exist_ok=True)
        self.tb.add_from_string(pci_fixture('0000:01:00.0', '0x10de', '0x1eb8', 'vfio-pci', 30))
        self.tb.add_from_string(pci_fixture('0000:17:00.1', '0x15b3', '0x101e', 'mlx5_vfio_pci', 31, numa='1'))
        self.tb.add_from_string(pci_fixture('0000:5e:00.0', '0x144d', '0xa808', 'nvme', 40))
        self.tb.add_from_string(pci_fixture('0000:00:02.0', '0x8086', '0x3e92', 'i915', 1))
        self.set_types(available=2)
        os.symlink('../../devices/pci0000:00/0000:00:02.0', os.path.join(self.root, 'sys/class/mdev_bus/0000:00:02.0'))
        self.mdev1 = self.add_mdev(MDEV1, 60)
        self.daemon = None

    def tearDown(self):
        if self.daemon:
            self.assertEqual(self.daemon.stop(), 0)

    def set_types(self, available):
        base = 'mdev_supported_types/i915-GVTg_V5_4/'
        for k, v in (('name', 'GVTg_V5_4'), ('device_api', 'vfio-pci'),
                     ('available_instances', str(available)), ('description', 'low_gm_size: 128MB\nweight: 4')):
            self.tb.set_attribute(GPU, base + k, v)

    def add_mdev(self, uuid, group):
        path = self.tb.add_device('mdev', uuid, GPU, [], ['MDEV_TYPE', 'i915-GVTg_V5_4'])
        self.tb.set_attribute_link(path, 'mdev_type', '../mdev_supported_types/i915-GVTg_V5_4')
        self.tb.set_attribute_link(path, 'driver', '../../../../bus/mdev/drivers/vfio_mdev')
        self.tb.set_attribute_link(path, 'iommu_group', f'../../../../kernel/iommu_groups/{group}')
        return path

    def start(self):
        self.daemon = vt.Daemon(env={'UMOCKDEV_DIR': self.root}).start()
        self.client = vt.Client()
        self.rec = vt.SignalRecorder(self.client.bus)
        self.assertEqual(self.client.get(vt.ROOT_PATH, vt.MANAGER, 'Backend'), 'host')

    def wait_device_signal(self, member, name):
        return self.rec.wait_for(lambda s: s[0] == vt.MANAGER and s[1] == member and s[3][0] == name)

    def test_enumeration(self):
        self.start()
        devs = self.client.devices()
        # vfio-pci and a *_vfio_pci variant driver are VFIO devices; nvme and i915 are not.
        self.assertEqual(set(devs), {'0000:01:00.0', '0000:17:00.1', MDEV1})
        self.assertEqual(devs['0000:17:00.1'][:2], ('pci', 'mlx5_vfio_pci'))
        p = self.client.get_all(devs['0000:17:00.1'][2], vt.DEVICE)
        self.assertEqual((p['VendorId'], p['DeviceId'], p['SubsystemVendorId'], p['SubsystemDeviceId']),
                         (0x15b3, 0x101e, 0x15b3, 0x0040))
        self.assertEqual((p['Revision'], p['IommuGroup'], p['NumaNode']), (1, 31, 1))
        self.assertEqual(p['SysfsPath'], '/sys/devices/pci0000:00/0000:17:00.1')
        m = self.client.get_all(devs[MDEV1][2], vt.DEVICE)
        self.assertEqual((m['Kind'], m['MdevType'], m['Parent'], m['IommuGroup']),
                         ('mdev', 'i915-GVTg_V5_4', '0000:00:02.0', 60))
        self.assertEqual((m['VendorId'], m['DeviceId']), (0x8086, 0x3e92))
        types = self.client.manager('ListMdevTypes')[0]
        self.assertEqual(types, [('0000:00:02.0', 'i915', 'i915-GVTg_V5_4', 'GVTg_V5_4', 'vfio-pci',
                                  'low_gm_size: 128MB\nweight: 4', 2)])

    def test_hotplug_sequence(self):
        self.start()
        count = self.client.get(vt.ROOT_PATH, vt.MANAGER, 'DeviceCount')
        bdf = '0000:41:00.0'
        path = '/sys/devices/pci0000:00/' + bdf

        # add (no driver yet): not a VFIO device
        self.rec.clear()
        self.tb.add_from_string(pci_fixture(bdf, '0x10de', '0x2236', None, 41))
        self.tb.uevent(path, 'add')
        self.rec.pump(0.5)
        self.assertNotIn(bdf, self.client.devices())
        self.assertFalse([s for s in self.rec.signals if s[1] == 'DeviceAdded'])

        # bind to vfio-pci: appears, with InterfacesAdded and DeviceCount updated
        os.symlink('../../../bus/pci/drivers/vfio-pci', os.path.join(self.root, path[1:], 'driver'))
        self.tb.set_attribute(path, 'uevent', f'PCI_SLOT_NAME={bdf}\nDRIVER=vfio-pci\n')
        self.tb.uevent(path, 'bind')
        sig = self.wait_device_signal('DeviceAdded', bdf)
        obj = sig[3][1]
        self.rec.wait_for(lambda s: s[1] == 'InterfacesAdded' and s[3][0] == obj and vt.DEVICE in s[3][1])
        self.assertEqual(self.client.get(obj, vt.DEVICE, 'Driver'), 'vfio-pci')
        self.assertEqual(self.client.get(obj, vt.DEVICE, 'DeviceId'), 0x2236)
        self.assertEqual(self.client.get(vt.ROOT_PATH, vt.MANAGER, 'DeviceCount'), count + 1)

        # change: a property update is signalled on the device object
        self.rec.clear()
        self.tb.set_attribute(path, 'numa_node', '1')
        self.tb.uevent(path, 'change')
        self.rec.wait_for(lambda s: s[1] == 'PropertiesChanged' and s[2] == obj and s[3][0] == vt.DEVICE)
        self.assertEqual(self.client.get(obj, vt.DEVICE, 'NumaNode'), 1)

        # mdev create: appears, and the parent's available instances drop
        self.rec.clear()
        self.set_types(available=1)
        mdev2 = self.add_mdev(MDEV2, 61)
        self.tb.uevent(mdev2, 'add')
        sig = self.wait_device_signal('DeviceAdded', MDEV2)
        mobj = sig[3][1]
        self.assertEqual(self.client.get(mobj, vt.DEVICE, 'MdevType'), 'i915-GVTg_V5_4')
        self.assertEqual(self.client.get(mobj, vt.DEVICE, 'Parent'), '0000:00:02.0')
        self.rec.wait_for(lambda s: s[1] == 'MdevTypesChanged')
        self.assertEqual(self.client.manager('ListMdevTypes')[0][0][6], 1)

        # mdev remove
        self.rec.clear()
        self.set_types(available=2)
        self.tb.uevent(mdev2, 'remove')
        self.tb.remove_device(mdev2)
        self.wait_device_signal('DeviceRemoved', MDEV2)
        self.rec.wait_for(lambda s: s[1] == 'InterfacesRemoved' and s[3][0] == mobj)
        self.assertNotIn(MDEV2, self.client.devices())
        self.rec.wait_for(lambda s: s[1] == 'MdevTypesChanged')
        self.assertEqual(self.client.manager('ListMdevTypes')[0][0][6], 2)

        # unbind: no longer a VFIO device
        self.rec.clear()
        os.unlink(os.path.join(self.root, path[1:], 'driver'))
        self.tb.set_attribute(path, 'uevent', f'PCI_SLOT_NAME={bdf}\n')
        self.tb.uevent(path, 'unbind')
        self.wait_device_signal('DeviceRemoved', bdf)
        self.assertNotIn(bdf, self.client.devices())
        self.assertEqual(self.client.get(vt.ROOT_PATH, vt.MANAGER, 'DeviceCount'), count)

        # remove: already gone from the bus; nothing else changes
        self.rec.clear()
        self.tb.uevent(path, 'remove')
        self.tb.remove_device(path)
        self.rec.pump(0.5)
        self.assertFalse([s for s in self.rec.signals if s[1] in ('DeviceAdded', 'DeviceRemoved')])
        self.assertEqual(set(self.client.devices()), {'0000:01:00.0', '0000:17:00.1', MDEV1})

    def test_parent_driver_unbind_removes_types(self):
        self.start()
        self.assertEqual(len(self.client.manager('ListMdevTypes')[0]), 1)
        self.rec.clear()
        # The parent's driver goes away: its mdev_supported_types go with it.
        import shutil
        shutil.rmtree(os.path.join(self.root, GPU[1:], 'mdev_supported_types'))
        self.tb.uevent(GPU, 'unbind')
        self.rec.wait_for(lambda s: s[1] == 'MdevTypesChanged')
        self.assertEqual(self.client.manager('ListMdevTypes')[0], [])


if __name__ == '__main__':
    vt.main()
