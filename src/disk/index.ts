/**
 * Disk-file operations as library calls: create, describe, check, convert, serve.
 * The CLI (src/cli/disk.ts) only parses options and calls these.
 */
import { existsSync, unlinkSync } from 'node:fs';
import type { BlockDevice } from '../block/device.js';
import { forEachChunk } from '../block/copy.js';
import { FileDevice } from '../block/file.js';
import { MedvError } from '../errors.js';
import { encPathFor, type KekSource } from '../crypto/index.js';
import { createEvhdFile, decryptFile, encryptFile, openEvhdFile, readEvhdHeader } from '../layers/evhd/index.js';
import { describeDisk, openDisk, resolveFormat, type DiskFormat } from '../layers/open.js';
import { openUndoDisk, createUndoDisk } from '../layers/undo/index.js';
import { checkVhd, createVhd, openVhd, type VhdInfo } from '../layers/vhd/index.js';
import { serveNbd, type NbdServer } from '../nbd/server.js';

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

/** Create an empty disk: a VHD (fixed or dynamic), inside an EVHD when encrypted or named .evhd. */
export async function createDisk(path: string, options: CreateDiskOptions): Promise<VhdInfo> {
  const encrypt = options.encrypt || path.toLowerCase().endsWith('.evhd');
  if (encrypt && !path.toLowerCase().endsWith('.evhd')) {
    throw new MedvError('EINVAL_ARG', `an encrypted disk must be named .evhd (got ${path})`, { file: path });
  }
  if (existsSync(path)) throw new MedvError('EEXIST', `file exists: ${path}`, { file: path });
  if (!(options.size > 0)) throw new MedvError('EINVAL_ARG', 'disk size must be positive');
  const storage = await createContainer(path, encrypt, options.kek);
  return withCleanupOnError(path, encrypt, async () => {
    try {
      const info = await createVhd(storage, { type: options.type ?? 'dynamic', size: options.size });
      await storage.flush();
      return info;
    } finally {
      await storage.close();
    }
  });
}

async function createContainer(path: string, encrypt: boolean, kek?: () => KekSource): Promise<BlockDevice> {
  if (!encrypt) return FileDevice.open(path, { create: true });
  return createEvhdFile(path, requireKek(kek, path));
}

async function withCleanupOnError<T>(path: string, encrypted: boolean, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    if (existsSync(path)) unlinkSync(path);
    if (encrypted && existsSync(encPathFor(path))) unlinkSync(encPathFor(path));
    throw e;
  }
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
export async function convertDisk(src: string, dst: string, options: ConvertOptions = {}): Promise<void> {
  const to = options.to ?? formatForPath(dst);
  if (existsSync(dst)) throw new MedvError('EEXIST', `destination exists: ${dst}`, { file: dst });
  if (to === 'evhd' && !dst.toLowerCase().endsWith('.evhd')) {
    throw new MedvError('EINVAL_ARG', `an encrypted disk must be named .evhd (got ${dst})`, { file: dst });
  }
  const from = resolveFormat(src, options.format, options.warn);
  const described = await describeDisk(src, options.kek, from);
  const srcType = described.vhd?.type;
  const sameLayout = options.type === undefined || options.type === srcType;
  const kekValue = () => requireKek(options.kek, from === 'evhd' ? src : dst);
  if (from === 'vhd' && to === 'evhd' && sameLayout && srcType !== 'differencing') {
    await withCleanupOnError(dst, true, () => encryptFile(src, dst, kekValue(), options.onProgress));
    return;
  }
  if (from === 'evhd' && to === 'vhd' && sameLayout && srcType !== 'differencing') {
    await withCleanupOnError(dst, false, () => decryptFile(src, dst, kekValue(), options.onProgress));
    return;
  }
  const source = await openDisk(src, { readOnly: true, kek: options.kek, format: from, parent: options.parent });
  try {
    await withCleanupOnError(dst, to === 'evhd', async () => {
      const target = await createTarget(dst, to, options.type ?? (srcType === 'fixed' ? 'fixed' : 'dynamic'), source.device.size, options.kek);
      try {
        await copyDevice(source.device, target, options.onProgress);
        await target.flush();
      } finally {
        await target.close();
      }
    });
  } finally {
    await source.device.close();
  }
}

async function createTarget(path: string, to: DiskFormat, type: VhdLayout, size: number, kek?: () => KekSource): Promise<BlockDevice> {
  if (to === 'raw') return FileDevice.open(path, { create: true, size });
  const storage = await createContainer(path, to === 'evhd', kek);
  await createVhd(storage, { type, size });
  return openVhd(storage, { name: path });
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
