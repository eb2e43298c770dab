/**
 * The Linux test guest (vm/linux, built by scripts/build-linux-guest.js; vm/README.md): where its
 * image is, its layout, what it prints, how to boot it, and how to read its ext4 root from the
 * host with a peer tool (debugfs).
 *
 *   const run = await bootLinuxGuest({ drive: freshLinuxImage(dir), iface: 'virtio' });
 *   try {
 *     await run.waitForSerial(LINUX_GUEST.serial.ready, LINUX_BOOT_MS);
 *     await run.powerdown();
 *     assert.equal(await run.waitExit(20_000), 0);
 *   } finally { await run.kill(); }
 */
import { copyFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { linuxGuest } from '../../src/hypervisor/linuxguest.js';
import { accelerators, bootGuest, type Accel, type GuestRun } from './qemu.js';

export { readRootFile, writeRootFile, rootBootCounter, linuxMarkerFile } from '../../src/hypervisor/linuxguest.js';

/** Boot budget under TCG on a loaded 2-core machine (a quiet one boots in ~10 s from virtio, more from IDE). */
export const LINUX_BOOT_MS = 120_000;

export const LINUX_GUEST = linuxGuest();

/**
 * Copies the fresh Linux guest image into `dir` and returns the copy's path; variant `9p` is the
 * guest with the generic kernel, which mounts shared folders (only for the shared-folder tests).
 */
export function freshLinuxImage(dir: string, name = 'linux.img', variant?: '9p'): string {
  const image = variant === '9p' ? LINUX_GUEST.image9p : LINUX_GUEST.image;
  if (!existsSync(image)) {
    throw new Error(`${image} is missing: run bash scripts/setup.sh (or node scripts/build-linux-guest.js${variant ? ` --variant ${variant}` : ''} as root)`);
  }
  const path = join(dir, name);
  copyFileSync(image, path);
  return path;
}

export interface LinuxBootOptions {
  drive: string;
  format?: 'raw' | 'vpc';
  iface?: 'ide' | 'virtio';
  accel?: Accel;
  /** QEMU user-mode network (NAT) with a virtio NIC; without it the guest has no NIC. */
  nat?: boolean;
  /** The URL the guest fetches once (fw_cfg opt/medv/url). */
  url?: string;
  extraArgs?: string[];
}

/** Boots the Linux guest (256 MiB, COM1 captured, QMP connected). */
export function bootLinuxGuest(opts: LinuxBootOptions): Promise<GuestRun> {
  const extra: string[] = [];
  if (opts.nat) extra.push('-netdev', 'user,id=net0', '-device', 'virtio-net-pci,netdev=net0');
  if (opts.url !== undefined) extra.push('-fw_cfg', `name=${LINUX_GUEST.fwCfgUrl},string=${opts.url}`);
  return bootGuest({
    drive: opts.drive, format: opts.format, iface: opts.iface, accel: opts.accel ?? accelerators()[0],
    memoryMiB: 256, extraArgs: [...extra, ...(opts.extraArgs ?? [])],
  });
}

/** When each line first appeared on COM1 (ms since QEMU was spawned). */
export function serialTimes(run: GuestRun, re: RegExp): number | undefined {
  return run.serialLines().find((l) => re.test(`${l.text}\n`))?.ms;
}
