/**
 * Device policy reaches the VM (issue 22, part 3), seen through QMP (the supervisor's `devices`
 * control command: query-chardev, qom-list /machine/peripheral, qom-get), never through argv: a
 * VM configured with nothing has no virtio-serial bus, no clipboard chardev, no 9p device, no USB
 * controller; one configured with the guest agent, the clipboard, a shared folder and an allowed
 * USB device has exactly those. A shared folder named through a symbolic link is refused.
 * The tiny nasm guest is enough: nothing here needs the guest to do anything.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { MedvError } from '../../src/core/errors.js';
import { startVm, stopVm, vmDevices } from '../../src/host/client.js';
import type { VmConfig } from '../../src/host/config.js';
import { tempDir } from '../helpers/cli.js';
import { freshGuestImage } from '../helpers/qemu.js';

describe('host: the device policy in QEMU\'s configuration (QMP)', function () {
  this.timeout(120_000);
  const dir = tempDir('host-devices');
  const run = () => join(dir.path, 'run');
  const config = (name: string, extra: Partial<VmConfig> = {}): VmConfig => ({
    name, memoryMiB: 32, disks: [{ path: freshGuestImage(dir.path, `${name}.img`), mode: 'normal' }], network: 'none', display: 'none', accel: 'tcg',
    savedState: join(dir.path, `${name}.vsv`), ...extra,
  });
  after(async () => {
    for (const name of ['bare', 'full']) await stopVm(name, { root: run(), force: true }).catch(() => undefined);
    await dir.cleanup();
  });

  it('nothing allowed: no virtio-serial bus, no agent or clipboard chardev, no 9p device, no USB controller', async () => {
    await startVm(config('bare'), { root: run() });
    const d = await vmDevices('bare', { root: run() });
    const labels = d.chardevs.map((c) => c.label);
    for (const absent of ['qga0', 'vdagent0']) assert.ok(!labels.includes(absent), labels.join(' '));
    const types = d.devices.map((x) => x.type);
    for (const absent of ['virtio-serial-pci', 'virtserialport', 'virtio-9p-pci', 'qemu-xhci', 'usb-host']) assert.ok(!types.includes(absent), types.join(' '));
    await stopVm('bare', { root: run(), force: true });
  });

  it('allowed: the agent\'s port, the clipboard (qemu-vdagent), a read-only 9p share by its tag, the allowed USB device by vendor:product', async () => {
    const share = join(dir.path, 'shared docs');
    fs.mkdirSync(share);
    await startVm(config('full', {
      guestAgent: true, clipboard: true, sharedFolders: [{ tag: 'docs', path: share }], usbDevices: [{ vendorId: 0x1234, productId: 0xabcd }],
    }), { root: run() });
    const d = await vmDevices('full', { root: run() });
    const chardev = (l: string) => d.chardevs.find((c) => c.label === l);
    assert.ok(chardev('qga0'), JSON.stringify(d.chardevs));
    assert.match(chardev('qga0')!.filename, /qga\.sock/);
    assert.ok(chardev('vdagent0'), JSON.stringify(d.chardevs));
    const byId = (id: string) => d.devices.find((x) => x.id === id);
    assert.equal(byId('vser0')?.type, 'virtio-serial-pci');
    assert.equal(byId('share0')?.type, 'virtio-9p-pci');
    assert.equal(byId('share0')?.mountTag, 'docs');
    assert.equal(byId('usb')?.type, 'qemu-xhci');
    assert.deepEqual({ ...byId('usbhost0') }, { id: 'usbhost0', type: 'usb-host', vendorId: 0x1234, productId: 0xabcd });
    assert.equal(d.devices.filter((x) => x.type === 'usb-host').length, 1, 'only the allowed device');
    await stopVm('full', { root: run(), force: true });
  });

  it('a shared folder named through a symbolic link, or a file, is refused; nothing starts', async () => {
    const real = join(dir.path, 'real');
    fs.mkdirSync(real);
    fs.symlinkSync(real, join(dir.path, 'link'));
    fs.writeFileSync(join(dir.path, 'file'), 'x');
    const cases: Array<[string, string]> = [[join(dir.path, 'link'), 'EUNSAFE'], [join(dir.path, 'link', '.'), 'EUNSAFE'], [join(dir.path, 'file'), 'EINVAL_ARG']];
    for (const [path, code] of cases) {
      await assert.rejects(startVm(config('refused', { sharedFolders: [{ tag: 'x', path }] }), { root: run() }), (e: unknown) => e instanceof MedvError && e.code === code && /shared folder x/.test(e.message), path);
    }
    await assert.rejects(startVm(config('refused', { sharedFolders: [{ tag: 'bad tag', path: real }] }), { root: run() }), (e: unknown) => e instanceof MedvError && e.code === 'EINVAL_ARG');
  });
});
