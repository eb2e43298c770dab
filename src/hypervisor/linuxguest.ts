/**
 * The Linux test guest (vm/linux, built by scripts/build-linux-guest.js; vm/README.md): where its
 * image is, its layout, what it prints on COM1, and how to read or change a file of its ext4 root
 * in a raw image with a peer tool (debugfs from e2fsprogs), as an image update would. Used by
 * `medv demo` and the tests (test/helpers/linux-guest.ts adds booting it bare).
 */
import { execFileSync } from 'node:child_process';
import { minimalEnv } from '../core/env.js';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MedvError } from '../core/errors.js';
import { REPO_ROOT } from './testguest.js';

interface LinuxLayout {
  imageBytes: number; sectorBytes: number;
  boot: { startLba: number; sectors: number; label: string };
  root: { startLba: number; sectors: number; label: string; uuid: string; blockBytes: number };
  marker: string; markerRepeat: number;
  counterPath: string; markerPath: string; versionPath: string; urlPath: string; fwCfgUrl: string;
  shareRoot: string; shareFile: string;
}

let layoutCache: LinuxLayout | undefined;
function layout(): LinuxLayout {
  if (!layoutCache) {
    const file = join(REPO_ROOT, 'vm', 'linux', 'layout.json');
    if (!existsSync(file)) throw new MedvError('ENOENT', 'the test guest is not here (vm/linux/layout.json is missing; the demo and the guest tests need the source tree)', { file });
    layoutCache = JSON.parse(readFileSync(file, 'utf8')) as LinuxLayout;
  }
  return layoutCache;
}

export const LINUX_SERIAL = {
  syslinux: /SYSLINUX \S+/,
  /** The image version (/etc/medv/version) and the kernel's uptime in seconds. */
  init: /medv-linux: init version=(\S*) uptime=(\S+)\r?\n/,
  boot: /medv-linux: boot (\d+)\r?\n/,
  markerWritten: /medv-linux: marker-written\r?\n/,
  /** `net none` without a NIC, `net eth0 10.0.2.15/24` after DHCP, `net eth0 dhcp-failed`. */
  net: /medv-linux: net (none|eth0 (\S+))\r?\n/,
  /** Only when a URL is configured: `wget ok <first line of the body>` or `wget failed`. */
  wget: /medv-linux: wget (ok (.*?)|failed)\r?\n/,
  /** A virtio-9p share mounted at shareRoot/<tag> (never with the default, cloud kernel: see image9p). */
  share9p: /medv-linux: 9p (\S+) mounted\r?\n/,
  /** A mounted share holding shareFile: its tag and the file's first line (control characters dropped, at most 200 characters). */
  share: /medv-linux: share (\S+) (.*?)\r?\n/,
  /** Then one new file written into that share (and removed): `ok`, or `refused` with the shell's reason (`Read-only file system`). */
  shareWrite: /medv-linux: share-write (\S+) (ok|refused: .*?)\r?\n/,
  /** All done and the power button armed; with the kernel's uptime in seconds. */
  ready: /medv-linux: ready uptime=(\S+)\r?\n/,
  powerdown: /medv-linux: powerdown\r?\n/,
  error: /medv-linux: error=(\S+)\r?\n/,
} as const;

/** The guest's numbers (layout.json), read on first use. */
export function linuxGuest() {
  const l = layout();
  return {
    /** The fresh raw image; copy it before booting it. */
    image: join(REPO_ROOT, 'vm', 'build', 'linux', 'disk.img'),
    stamp: join(REPO_ROOT, 'vm', 'build', 'linux', 'stamp.json'),
    /**
     * The same guest with Debian's generic kernel, which can mount virtio-9p shares (`--variant 9p`
     * of the build): about twice as slow to boot under TCG, so only the shared-folder test uses it.
     */
    image9p: join(REPO_ROOT, 'vm', 'build', 'linux-9p', 'disk.img'),
    imageBytes: l.imageBytes,
    bootOffset: l.boot.startLba * l.sectorBytes,
    rootOffset: l.root.startLba * l.sectorBytes,
    rootBytes: l.root.sectors * l.sectorBytes,
    rootLabel: l.root.label,
    rootBlockBytes: l.root.blockBytes,
    /** 32 ASCII bytes; the guest writes them markerRepeat times to markerPath, and no built file holds them. */
    marker: Buffer.from(l.marker, 'ascii'),
    markerRepeat: l.markerRepeat,
    counterPath: l.counterPath,
    markerPath: l.markerPath,
    versionPath: l.versionPath,
    urlPath: l.urlPath,
    fwCfgUrl: l.fwCfgUrl,
    /** Where the guest mounts each 9p share (`<shareRoot>/<tag>`), and the file in a share it reads and answers with a write. */
    shareRoot: l.shareRoot,
    shareFile: l.shareFile,
    serial: LINUX_SERIAL,
  };
}

function debugfs(args: string[], input?: string): Buffer {
  try {
    return execFileSync('debugfs', args, { input, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], maxBuffer: 16 << 20, env: minimalEnv() });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new MedvError('ENOENT', 'debugfs is not installed (Debian package e2fsprogs)');
    throw new MedvError('EIO', `debugfs failed: ${String((e as { stderr?: Buffer }).stderr ?? (e as Error).message).trim().split('\n').at(-1)}`);
  }
}

/** A file of the guest's ext4 root in a raw image, or undefined when it does not exist. */
export function readRootFile(rawImage: string, path: string): Buffer | undefined {
  const fs = `${rawImage}?offset=${linuxGuest().rootOffset}`;
  if (!/Type: regular/.test(debugfs(['-R', `stat ${path}`, fs]).toString())) return undefined;
  return debugfs(['-R', `cat ${path}`, fs]);
}

/** Writes (replaces) a file of the guest's ext4 root in a raw image (mode 0644, owner root), as an image update would. */
export function writeRootFile(rawImage: string, path: string, content: string | Buffer): void {
  if (!/^\/[A-Za-z0-9._/-]+$/.test(path) || path.includes('..')) throw new MedvError('EINVAL_ARG', `not a plain absolute guest path: ${path}`);
  const fs = `${rawImage}?offset=${linuxGuest().rootOffset}`;
  const dir = mkdtempSync(join(tmpdir(), 'medv-debugfs-'));
  try {
    const local = join(dir, 'content');
    writeFileSync(local, content, { mode: 0o644 });
    const slash = path.lastIndexOf('/');
    const commands = [`cd ${path.slice(0, slash) || '/'}`, `rm ${path.slice(slash + 1)}`, `write ${local} ${path.slice(slash + 1)}`].join('\n');
    const out = debugfs(['-w', '-f', '-', fs], `${commands}\n`).toString();
    if (!/Allocated inode: \d+/.test(out)) throw new MedvError('EIO', `debugfs did not write ${path} into ${rawImage}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The guest's boot counter as stored in its ext4 root (0 when the file does not exist yet). */
export function rootBootCounter(rawImage: string): number {
  const text = readRootFile(rawImage, linuxGuest().counterPath)?.toString('ascii').trim();
  if (text === undefined) return 0;
  if (!/^\d+$/.test(text)) throw new MedvError('EFORMAT', `${linuxGuest().counterPath} in ${rawImage} holds ${JSON.stringify(text)}, not a count`);
  return Number(text);
}

/** What the guest writes to markerPath: the marker markerRepeat times. */
export function linuxMarkerFile(): Buffer {
  const g = linuxGuest();
  return Buffer.concat(Array.from({ length: g.markerRepeat }, () => g.marker));
}
