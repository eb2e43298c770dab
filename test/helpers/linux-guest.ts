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
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../../src/hypervisor/testguest.js';
import { accelerators, bootGuest, type Accel, type GuestRun } from './qemu.js';

interface LinuxLayout {
  imageBytes: number; sectorBytes: number;
  boot: { startLba: number; sectors: number; label: string };
  root: { startLba: number; sectors: number; label: string; uuid: string; blockBytes: number };
  marker: string; markerRepeat: number;
  counterPath: string; markerPath: string; versionPath: string; urlPath: string; fwCfgUrl: string;
}
const layout = JSON.parse(readFileSync(join(REPO_ROOT, 'vm', 'linux', 'layout.json'), 'utf8')) as LinuxLayout;

/** Boot budget under TCG on a loaded 2-core machine (a quiet one boots in ~10 s from virtio, more from IDE). */
export const LINUX_BOOT_MS = 120_000;

export const LINUX_GUEST = {
  /** The fresh raw image; copy it before booting it (freshLinuxImage). */
  image: join(REPO_ROOT, 'vm', 'build', 'linux', 'disk.img'),
  stamp: join(REPO_ROOT, 'vm', 'build', 'linux', 'stamp.json'),
  imageBytes: layout.imageBytes,
  /** Byte offsets of the two MBR partitions: FAT (SYSLINUX, kernel, initramfs) and the ext4 root. */
  bootOffset: layout.boot.startLba * layout.sectorBytes,
  rootOffset: layout.root.startLba * layout.sectorBytes,
  rootBytes: layout.root.sectors * layout.sectorBytes,
  rootLabel: layout.root.label,
  rootBlockBytes: layout.root.blockBytes,
  /** 32 ASCII bytes; the guest writes them markerRepeat times to markerPath, and no built file holds them. */
  marker: Buffer.from(layout.marker, 'ascii'),
  markerRepeat: layout.markerRepeat,
  counterPath: layout.counterPath,
  markerPath: layout.markerPath,
  versionPath: layout.versionPath,
  urlPath: layout.urlPath,
  /** QEMU fw_cfg name the guest reads its URL from: -fw_cfg name=opt/medv/url,string=URL. */
  fwCfgUrl: layout.fwCfgUrl,
  serial: {
    syslinux: /SYSLINUX \S+/,
    /** The image version (/etc/medv/version) and the kernel's uptime in seconds. */
    init: /medv-linux: init version=(\S*) uptime=(\S+)\r?\n/,
    boot: /medv-linux: boot (\d+)\r?\n/,
    markerWritten: /medv-linux: marker-written\r?\n/,
    /** `net none` without a NIC, `net eth0 10.0.2.15/24` after DHCP, `net eth0 dhcp-failed`. */
    net: /medv-linux: net (none|eth0 (\S+))\r?\n/,
    /** Only when a URL is configured: `wget ok <first line of the body>` or `wget failed`. */
    wget: /medv-linux: wget (ok (.*?)|failed)\r?\n/,
    /** All done and the power button armed; with the kernel's uptime in seconds. */
    ready: /medv-linux: ready uptime=(\S+)\r?\n/,
    powerdown: /medv-linux: powerdown\r?\n/,
    error: /medv-linux: error=(\S+)\r?\n/,
  },
} as const;

/** Copies the fresh Linux guest image into `dir` and returns the copy's path. */
export function freshLinuxImage(dir: string, name = 'linux.img'): string {
  if (!existsSync(LINUX_GUEST.image)) {
    throw new Error(`${LINUX_GUEST.image} is missing: run bash scripts/setup.sh (or node scripts/build-linux-guest.js as root)`);
  }
  const path = join(dir, name);
  copyFileSync(LINUX_GUEST.image, path);
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

/**
 * A file of the guest's ext4 root, read by debugfs (e2fsprogs) straight from a raw disk image,
 * or undefined when it does not exist.
 */
export function readRootFile(rawImage: string, path: string): Buffer | undefined {
  const fs = `${rawImage}?offset=${LINUX_GUEST.rootOffset}`;
  const stat = execFileSync('debugfs', ['-R', `stat ${path}`, fs], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  if (!/Type: regular/.test(stat)) return undefined;
  return execFileSync('debugfs', ['-R', `cat ${path}`, fs], { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 16 << 20 });
}

/**
 * Writes (replaces) a file of the guest's ext4 root in a raw disk image with debugfs, as an image
 * update would: mode 0644, owner root.
 */
export function writeRootFile(rawImage: string, path: string, content: string | Buffer): void {
  const fs = `${rawImage}?offset=${LINUX_GUEST.rootOffset}`;
  const dir = mkdtempSync(join(tmpdir(), 'medv-debugfs-'));
  try {
    const local = join(dir, 'content');
    writeFileSync(local, content, { mode: 0o644 });
    const slash = path.lastIndexOf('/');
    const commands = [`cd ${path.slice(0, slash) || '/'}`, `rm ${path.slice(slash + 1)}`, `write ${local} ${path.slice(slash + 1)}`].join('\n');
    const out = execFileSync('debugfs', ['-w', '-f', '-', fs], { input: `${commands}\n`, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
    if (!/Allocated inode: \d+/.test(out)) throw new Error(`debugfs did not write ${path} into ${rawImage}:\n${out}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The guest's boot counter as stored in its ext4 root (0 when the file does not exist yet). */
export function rootBootCounter(rawImage: string): number {
  const text = readRootFile(rawImage, LINUX_GUEST.counterPath)?.toString('ascii').trim();
  if (text === undefined) return 0;
  if (!/^\d+$/.test(text)) throw new Error(`${LINUX_GUEST.counterPath} in ${rawImage} holds ${JSON.stringify(text)}, not a count`);
  return Number(text);
}

/** What the guest writes to markerPath: the marker markerRepeat times. */
export function linuxMarkerFile(): Buffer {
  return Buffer.concat(Array.from({ length: LINUX_GUEST.markerRepeat }, () => LINUX_GUEST.marker));
}

/** When each line first appeared on COM1 (ms since QEMU was spawned). */
export function serialTimes(run: GuestRun, re: RegExp): number | undefined {
  return run.serialLines().find((l) => re.test(`${l.text}\n`))?.ms;
}
