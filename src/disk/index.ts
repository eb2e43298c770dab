/**
 * Disk-file operations as library calls: create, describe, check, convert, serve.
 * The CLI (src/cli/disk.ts) only parses options and calls these.
 */
import { existsSync } from 'node:fs';
import { beginStaging } from '../core/fsio.js';
import type { BlockDevice } from '../block/device.js';
import { forEachChunk } from '../block/copy.js';
import { FileDevice } from '../block/file.js';
import { MedvError } from '../core/errors.js';
import type { KekSource } from '../crypto/index.js';
import { decryptFile, encryptFile, openEvhdFile, readEvhdHeader, stageEvhdFile } from '../layers/evhd/index.js';
import { describeDisk, openDisk, resolveFormat, type DiskFormat } from '../layers/open.js';
import { openUndoDisk, createUndoDisk } from '../layers/undo/index.js';
import { checkVhd, createVhd, openVhd, savedStateError, type VhdInfo } from '../layers/vhd/index.js';
import { checkSocketPath, serveNbd, type NbdServer } from '../nbd/server.js';

export type VhdLayout = 'fixed' | 'dynamic';
export type Progress = (done: number, total: number) => void;

/** The format of the file the user names (`--format`); when absent, from its name or guessed, and `warn` is told. */
export interface FormatOptions {
  format?: DiskFormat;
  warn?: (message: string) => void;
}

export interface CreateDiskOptions {
  size: number;
  type?: VhdLayout;
  encrypt?: boolean;
  kek?: () => KekSource;
}

/**
 * Create an empty disk: a VHD (fixed or dynamic), inside an EVHD when encrypted or named .evhd.
 * Written under a temporary name (and key file) and published when complete (src/core/fsio.ts).
 */
export async function createDisk(path: string, options: CreateDiskOptions): Promise<VhdInfo> {
  const encrypt = options.encrypt || path.toLowerCase().endsWith('.evhd');
  if (encrypt && !path.toLowerCase().endsWith('.evhd')) {
    throw new MedvError('EINVAL_ARG', `an encrypted disk must be named .evhd (got ${path})`, { file: path });
  }
  if (existsSync(path)) throw new MedvError('EEXIST', `file exists: ${path}`, { file: path });
  if (!(options.size > 0)) throw new MedvError('EINVAL_ARG', 'disk size must be positive');
  const out = await newContainer(path, encrypt, options.kek);
  try {
    const info = await createVhd(out.storage, { type: options.type ?? 'dynamic', size: options.size });
    await out.storage.flush();
    await out.storage.close();
    await out.publish();
    return info;
  } catch (e) {
    await out.abort().catch(() => undefined);
    throw e;
  }
}

/** A new output file (plain, or an EVHD with its key file) under temporary names until publish. */
interface NewOutput {
  storage: BlockDevice;
  /** Close everything over `storage` first. */
  publish(): Promise<void>;
  /** Close `storage` and remove only what this run created. */
  abort(): Promise<void>;
}

async function newContainer(path: string, encrypt: boolean, kek?: () => KekSource, size?: number): Promise<NewOutput> {
  if (encrypt) {
    const pending = await stageEvhdFile(path, requireKek(kek, path));
    return { storage: pending.device, publish: () => pending.publish(), abort: () => pending.abort() };
  }
  const staging = beginStaging([path]);
  let storage: FileDevice;
  try {
    storage = await FileDevice.open(staging.tempFor(path), { create: true, size });
  } catch (e) {
    await staging.abort().catch(() => undefined);
    throw e;
  }
  return {
    storage,
    publish: () => staging.publish(),
    async abort() {
      await storage.close().catch(() => undefined);
      await staging.abort();
    },
  };
}

function requireKek(kek: (() => KekSource) | undefined, path: string): KekSource {
  if (!kek) throw new MedvError('ENOKEY', 'an encrypted disk needs a passphrase: set MEDV_PASSPHRASE or use --passphrase-file', { file: path });
  return kek();
}

export interface DiskDescription {
  path: string;
  format: DiskFormat;
  encrypted: boolean;
  type: 'raw' | VhdInfo['type'];
  virtualSize: number;
  fileSize?: number;
  creator?: { application: string; version: string; os: string };
  uniqueId?: string;
  blockSize?: number;
  allocatedBlocks?: number;
  totalBlocks?: number;
  parent?: { name: string; uniqueId: string; locators: Array<{ platform: string; path: string }> };
  keyId?: string;
  /** The VHD saved-state flag: the disk belongs to a suspended VM (only its resume may write it). */
  savedState?: boolean;
}

export async function describeDiskFile(path: string, kek?: () => KekSource, fmt: FormatOptions = {}): Promise<DiskDescription> {
  const d = await describeDisk(path, kek, fmt.format, fmt.warn);
  const out: DiskDescription = { path, format: d.format, encrypted: d.format === 'evhd', type: d.vhd ? d.vhd.type : 'raw', virtualSize: d.size };
  if (d.format === 'evhd') {
    const f = await FileDevice.open(path, { readOnly: true });
    try { out.keyId = (await readEvhdHeader(f, path)).keyId.toString('hex'); } finally { await f.close(); }
  }
  const v = d.vhd;
  if (v) {
    out.fileSize = v.fileSize;
    out.creator = { application: v.creatorApp, version: `${v.creatorVersion >>> 16}.${v.creatorVersion & 0xffff}`, os: v.creatorOs };
    out.uniqueId = v.uniqueId.toString('hex');
    out.savedState = v.savedState;
    if (v.blockSize !== undefined) {
      out.blockSize = v.blockSize;
      out.allocatedBlocks = v.allocatedBlocks;
      out.totalBlocks = v.maxTableEntries;
    }
    if (v.parent) {
      out.parent = { name: v.parent.unicodeName, uniqueId: v.parent.uniqueId.toString('hex'), locators: v.parent.locators };
    }
  } else {
    const f = await FileDevice.open(path, { readOnly: true });
    out.fileSize = f.size;
    await f.close();
  }
  return out;
}

export interface CheckResult { path: string; format: DiskFormat; ok: boolean; errors: string[]; warnings: string[] }

/** Structural check. Throws typed errors for files that cannot be opened at all; reports damage otherwise. */
export async function checkDiskFile(path: string, kek?: () => KekSource, fmt: FormatOptions = {}): Promise<CheckResult> {
  const format = resolveFormat(path, fmt.format, fmt.warn);
  if (format === 'raw') return { path, format, ok: true, errors: [], warnings: ['raw image: no structure to check'] };
  const storage = format === 'evhd' ? await openEvhdFile(path, requireKek(kek, path), { readOnly: true }) : await FileDevice.open(path, { readOnly: true });
  try {
    const r = await checkVhd(storage, path);
    return { path, format, ...r };
  } finally {
    await storage.close();
  }
}

export interface ConvertOptions extends FormatOptions {
  /** The source's parent, when it is a differencing disk over a raw file (never found through a locator). */
  parent?: string;
  to?: DiskFormat;
  type?: VhdLayout;
  kek?: () => KekSource;
  onProgress?: Progress;
}

/** What a convert wrote: the destination's format, layout and virtual size. */
export interface ConvertResult { source: string; destination: string; from: DiskFormat; to: DiskFormat; type: 'raw' | VhdLayout; virtualSize: number }

export function formatForPath(path: string): DiskFormat {
  const p = path.toLowerCase();
  if (p.endsWith('.evhd')) return 'evhd';
  if (p.endsWith('.vhd')) return 'vhd';
  return 'raw';
}

const COPY_CHUNK = 1024 * 1024;

/**
 * Convert any supported disk to any other. VHD <-> EVHD with an unchanged layout is done on the
 * container (byte-exact: decrypt(encrypt(x.vhd)) == x.vhd); everything else is a copy of the
 * virtual disk that skips all-zero chunks (new destinations read as zeros).
 */
export async function convertDisk(src: string, dst: string, options: ConvertOptions = {}): Promise<ConvertResult> {
  const to = options.to ?? formatForPath(dst);
  if (existsSync(dst)) throw new MedvError('EEXIST', `destination exists: ${dst}`, { file: dst });
  if (to === 'evhd' && !dst.toLowerCase().endsWith('.evhd')) {
    throw new MedvError('EINVAL_ARG', `an encrypted disk must be named .evhd (got ${dst})`, { file: dst });
  }
  const from = resolveFormat(src, options.format, options.warn);
  const described = await describeDisk(src, options.kek, from);
  // A suspended VM's disk is mid-session (its guest's caches are in the saved RAM): a copy of it
  // would be a disk nobody can resume and a file system caught in the middle of its writes.
  if (described.vhd?.savedState) throw savedStateError(src);
  const srcType = described.vhd?.type;
  const sameLayout = options.type === undefined || options.type === srcType;
  const kekValue = () => requireKek(options.kek, from === 'evhd' ? src : dst);
  // Every branch writes under temporary names and publishes at the end (src/core/fsio.ts):
  // a failed or killed convert leaves nothing under DST, and never removes a file it did not create.
  const result = (type: 'raw' | VhdLayout, virtualSize: number): ConvertResult => ({ source: src, destination: dst, from, to, type, virtualSize });
  if (from === 'vhd' && to === 'evhd' && sameLayout && srcType !== 'differencing') {
    await encryptFile(src, dst, kekValue(), options.onProgress);
    return result(srcType as VhdLayout, described.size);
  }
  if (from === 'evhd' && to === 'vhd' && sameLayout && srcType !== 'differencing') {
    await decryptFile(src, dst, kekValue(), options.onProgress);
    return result(srcType as VhdLayout, described.size);
  }
  const source = await openDisk(src, { readOnly: true, kek: options.kek, format: from, parent: options.parent });
  try {
    const type = options.type ?? (srcType === 'fixed' ? 'fixed' : 'dynamic');
    const out = await newContainer(dst, to === 'evhd', options.kek, to === 'raw' ? source.device.size : undefined);
    try {
      const target = to === 'raw' ? out.storage : await createVhdOn(out.storage, dst, type, source.device.size);
      const virtualSize = target.size;
      await copyDevice(source.device, target, options.onProgress);
      await target.flush();
      await target.close();
      await out.publish();
      return result(to === 'raw' ? 'raw' : type, virtualSize);
    } catch (e) {
      await out.abort().catch(() => undefined);
      throw e;
    }
  } finally {
    await source.device.close();
  }
}

async function createVhdOn(storage: BlockDevice, name: string, type: VhdLayout, size: number): Promise<BlockDevice> {
  await createVhd(storage, { type, size });
  return openVhd(storage, { name });
}

/** Copy the source into a new (all-zero) target of at least its size, skipping all-zero chunks. */
export async function copyDevice(source: BlockDevice, target: BlockDevice, onProgress?: Progress): Promise<void> {
  if (source.size > target.size) {
    throw new MedvError('ERANGE', `destination (${target.size} bytes) is smaller than the source (${source.size} bytes)`, { file: target.description });
  }
  const zero = Buffer.alloc(COPY_CHUNK);
  await forEachChunk(source, source.size, COPY_CHUNK, async (off, data) => {
    if (!data.equals(zero.subarray(0, data.length))) await target.write(off, data);
    onProgress?.(off + data.length, source.size);
  });
}

export interface ServeOptions extends FormatOptions {
  socketPath: string;
  readOnly?: boolean;
  /** Serve through this undo disk (created over PATH when missing). */
  undoPath?: string;
  kek?: () => KekSource;
  log?: (msg: string) => void;
}

export interface ServedDisk {
  server: NbdServer;
  device: BlockDevice;
  /** Stop serving, flush and close the disk stack. */
  close(): Promise<void>;
}

export async function serveDiskFile(path: string, options: ServeOptions): Promise<ServedDisk> {
  checkSocketPath(options.socketPath); // before an undo disk is created or anything opened
  let device: BlockDevice;
  if (options.undoPath) {
    if (!existsSync(options.undoPath)) await createUndoDisk(options.undoPath, path, { kek: options.kek, format: options.format, warn: options.warn });
    device = (await openUndoDisk(options.undoPath, { kek: options.kek, parent: path })).device;
  } else {
    device = (await openDisk(path, { readOnly: options.readOnly, kek: options.kek, format: options.format, warn: options.warn })).device;
  }
  try {
    const server = await serveNbd(device, { socketPath: options.socketPath, readOnly: options.readOnly, description: path, log: options.log });
    return {
      server,
      device,
      async close() {
        try { await server.close(); } finally {
          await device.flush().catch(() => undefined);
          await device.close();
        }
      },
    };
  } catch (e) {
    await device.close().catch(() => undefined);
    throw e;
  }
}
