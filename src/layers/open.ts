/**
 * Builds the block stack for a disk file on the host, by format:
 *   raw:  FileDevice
 *   vhd:  FileDevice -> VhdDevice                       (differencing: parent resolved from locators)
 *   evhd: FileDevice -> EvhdDevice (decrypt) -> VhdDevice
 * Parents of differencing disks may be .vhd or .evhd files; they are opened read-only, their
 * unique id is checked against the child's header, and chains are bounded and loop-checked.
 */
import { openSync, readSync, closeSync, realpathSync, existsSync, fstatSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import type { BlockDevice } from '../block/device.js';
import { FileDevice } from '../block/file.js';
import { MedvError, fromSystemError } from '../errors.js';
import type { KekSource } from '../crypto/index.js';
import { openEvhdFile } from './evhd/index.js';
import { openVhd, readVhdInfo, type ParentInfo, type VhdDevice, type VhdInfo } from './vhd/index.js';

export type DiskFormat = 'raw' | 'vhd' | 'evhd';

/** Longest parent chain we follow; deeper chains are treated as hostile. */
export const MAX_CHAIN_DEPTH = 16;

export interface OpenDiskOptions {
  readOnly?: boolean;
  /** Supplies the key-encryption key the first time an encrypted file is met (lazy: plain disks need none). */
  kek?: () => KekSource;
  /** Parents are opened through this hook (undo disks use it to protect their base). */
  wrapParent?: (path: string, device: BlockDevice) => BlockDevice;
  /** Open a differencing disk's parent writable (undo merge). */
  writableParent?: boolean;
}

export interface OpenedDisk {
  path: string;
  format: DiskFormat;
  /** The virtual disk as the guest sees it. */
  device: BlockDevice;
  /** VHD metadata when format is vhd or evhd. */
  vhd?: VhdDevice;
}

/** Decide a file's format: `.evhd` by name; otherwise a VHD footer (`conectix`) at the end or start; else raw. */
export function detectFormat(path: string): DiskFormat {
  if (path.toLowerCase().endsWith('.evhd')) return 'evhd';
  let fd: number;
  try { fd = openSync(path, 'r'); } catch (e) { throw fromSystemError(e, path); }
  try {
    const head = Buffer.alloc(8);
    const tail = Buffer.alloc(8);
    readSync(fd, head, 0, 8, 0);
    const { size } = fstatSync(fd);
    if (size >= 512) readSync(fd, tail, 0, 8, size - 512);
    const cookie = 'conectix';
    if (tail.toString('latin1') === cookie || head.toString('latin1') === cookie) return 'vhd';
    return 'raw';
  } finally {
    closeSync(fd);
  }
}

export async function openDisk(path: string, options: OpenDiskOptions = {}): Promise<OpenedDisk> {
  return openDiskAt(path, options, []);
}

async function openDiskAt(path: string, options: OpenDiskOptions, chain: string[]): Promise<OpenedDisk> {
  if (!existsSync(path)) throw new MedvError('ENOENT', `no such disk: ${path}`, { file: path });
  const real = realpathSync(path);
  if (chain.includes(real)) throw new MedvError('EPARENT', `loop in parent chain: ${[...chain, real].join(' -> ')}`, { file: path });
  if (chain.length >= MAX_CHAIN_DEPTH) throw new MedvError('EPARENT', `parent chain deeper than ${MAX_CHAIN_DEPTH}`, { file: path });
  const format = detectFormat(path);
  const readOnly = options.readOnly ?? false;
  if (format === 'raw') {
    return { path, format, device: await FileDevice.open(path, { readOnly }) };
  }
  const storage: BlockDevice = format === 'evhd'
    ? await openEvhdFile(path, requireKek(options, path), { readOnly })
    : await FileDevice.open(path, { readOnly });
  try {
    const vhd = await openVhd(storage, {
      readOnly,
      name: path,
      openParent: (info) => openParentOf(path, info, options, [...chain, real]),
    });
    return { path, format, device: vhd, vhd };
  } catch (e) {
    await storage.close().catch(() => undefined);
    throw e;
  }
}

function requireKek(options: OpenDiskOptions, path: string): KekSource {
  if (!options.kek) throw new MedvError('ENOKEY', 'encrypted disk needs a passphrase: set MEDV_PASSPHRASE or use --passphrase-file', { file: path });
  return options.kek();
}

/** Candidate parent paths from the locators: relative (to the child's folder) first, then absolute. */
export function parentCandidates(childPath: string, info: ParentInfo): string[] {
  const rel = info.locators.filter((l) => l.platform === 'W2ru' || l.platform === 'Wi2r');
  const abs = info.locators.filter((l) => l.platform === 'W2ku' || l.platform === 'Wi2k');
  const out: string[] = [];
  for (const l of [...rel, ...abs]) {
    const p = l.path.replace(/\\/g, '/');
    out.push(isAbsolute(p) ? p : resolve(dirname(childPath), p));
  }
  return [...new Set(out)];
}

async function openParentOf(childPath: string, info: ParentInfo, options: OpenDiskOptions, chain: string[]): Promise<BlockDevice> {
  const candidates = parentCandidates(childPath, info);
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new MedvError('EPARENT', `parent disk not found (looked for ${candidates.join(', ') || 'no locator'})`, { file: childPath });
  }
  const parent = await openDiskAt(found, { ...options, readOnly: !options.writableParent, writableParent: false }, chain);
  const parentId = parent.vhd?.info.uniqueId;
  if (parentId && !parentId.equals(info.uniqueId)) {
    await parent.device.close().catch(() => undefined);
    throw new MedvError('EPARENT', `parent ${found} has unique id ${parentId.toString('hex')}, the child expects ${info.uniqueId.toString('hex')}`, { file: childPath });
  }
  return options.wrapParent ? options.wrapParent(found, parent.device) : parent.device;
}

/** Metadata of a disk without opening a parent chain (info command). */
export async function describeDisk(path: string, kek?: () => KekSource): Promise<{ format: DiskFormat; size: number; vhd?: VhdInfo }> {
  const format = detectFormat(path);
  if (format === 'raw') {
    const f = await FileDevice.open(path, { readOnly: true });
    const size = f.size;
    await f.close();
    return { format, size };
  }
  const storage = format === 'evhd'
    ? await openEvhdFile(path, requireKek({ kek }, path), { readOnly: true })
    : await FileDevice.open(path, { readOnly: true });
  try {
    const vhd = await readVhdInfo(storage, path);
    return { format, size: vhd.virtualSize, vhd };
  } finally {
    await storage.close();
  }
}
