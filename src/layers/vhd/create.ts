/**
 * Creating VHD files on a storage device.
 *
 * medv writes creator application "medv", creator version 0x00010000 and host OS "Wi2k" (the code
 * Virtual PC and qemu-img use for Windows hosts, so every tool treats the file as a plain Windows
 * VHD). The requested size is rounded up to a CHS-representable size exactly as `qemu-img create
 * -f vpc` does, so qemu (which sizes unknown creators by CHS) sees the same size; beyond the CHS
 * range the geometry is saturated (65535/16/255) and current_size is authoritative.
 *
 * Layout of a dynamic/differencing file made here:
 *   0      footer copy
 *   512    dynamic header (1024 bytes)
 *   1536   parent locator data (differencing only; each a whole number of sectors)
 *   then   BAT (whole sectors, unused entries 0xFFFFFFFF)
 *   then   footer; blocks are appended in front of it, each placed so its data area (after the
 *          bitmap) starts 4 KiB-aligned in the file (see VhdDevice.allocate).
 * Locator data sits before the BAT so that readers which compute the first free byte from the BAT
 * alone (qemu) never place blocks over it.
 */
import { randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import type { BlockDevice } from '../../block/device.js';
import { MedvError } from '../../core/errors.js';
import {
  DATA_OFFSET_NONE, DYNHEADER_SIZE, DiskType, FOOTER_SIZE, PLATFORM_W2KU, PLATFORM_W2RU, SECTOR, UNALLOCATED,
  VHD_MAX_SIZE, VHD_VERSION, batBytes, emptyLocators, encodeLocatorData, exactGeometry, isPowerOfTwo,
  newFooterDefaults, roundUp, roundedDiskSize, serializeBat, serializeDynamicHeader, serializeFooter, vhdTimestampNow,
  type DynamicHeader, type Geometry, type LocatorEntry, type VhdFooter,
} from '../../formats/vhd/index.js';
import { MAX_BLOCK_SIZE, type VhdInfo } from './metadata.js';
import { readVhdInfo } from './info.js';

export const MEDV_CREATOR_APP = 'medv';
export const MEDV_CREATOR_VERSION = 0x00010000;
export const MEDV_CREATOR_OS = 'Wi2k';
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;

function arg(message: string): MedvError {
  return new MedvError('EINVAL_ARG', message);
}

function checkBlockSize(blockSize: number): void {
  if (!isPowerOfTwo(blockSize) || blockSize < 4096 || blockSize > MAX_BLOCK_SIZE) {
    throw arg(`block size ${blockSize} must be a power of two between 4096 and ${MAX_BLOCK_SIZE}`);
  }
}

function checkUniqueId(id: Buffer | undefined): Buffer {
  if (id === undefined) return randomBytes(16);
  if (!Buffer.isBuffer(id) || id.length !== 16) throw arg('unique id must be a 16-byte Buffer');
  return Buffer.from(id);
}

function makeFooter(type: DiskType, size: number, geometry: Geometry, uniqueId: Buffer): VhdFooter {
  return {
    ...newFooterDefaults(),
    dataOffset: type === DiskType.Fixed ? DATA_OFFSET_NONE : BigInt(FOOTER_SIZE),
    timestamp: vhdTimestampNow(),
    creatorApp: MEDV_CREATOR_APP,
    creatorVersion: MEDV_CREATOR_VERSION,
    creatorOs: MEDV_CREATOR_OS,
    originalSize: BigInt(size),
    currentSize: BigInt(size),
    geometry,
    diskType: type,
    uniqueId,
  };
}

/** Empty the storage first so nothing of an earlier file survives (resizable storage only). */
async function truncateStorage(storage: BlockDevice, size: number): Promise<void> {
  if (storage.resize && storage.capabilities.resizable) {
    await storage.resize(0);
    if (size > 0) await storage.resize(size);
  } else if (storage.size < size) {
    throw new MedvError('EINVAL_ARG', `storage of ${storage.size} bytes cannot hold ${size} bytes and cannot grow`, { file: storage.description });
  } else if (size > 0) {
    await storage.writeZeroes(0, size);
  }
}

export interface DynamicLayout {
  footer: VhdFooter;
  header: DynamicHeader;
  /** Locator data, in header order, already encoded. */
  locatorData: Buffer[];
}

/**
 * Write the metadata of a dynamic/differencing VHD with an empty BAT (or `bat` when given, which
 * compaction uses) and return where the footer was written. The header's tableOffset and locator
 * offsets are (re)computed here.
 */
export async function writeDynamicSkeleton(storage: BlockDevice, layout: DynamicLayout, bat?: Uint32Array): Promise<{ batOffset: number; footerOffset: number; footerRaw: Buffer }> {
  const { footer, header, locatorData } = layout;
  let pos = FOOTER_SIZE + DYNHEADER_SIZE;
  const locators: LocatorEntry[] = emptyLocators();
  const chunks: Array<{ at: number; data: Buffer }> = [];
  header.locators.forEach((l, i) => {
    if (i >= locatorData.length) return;
    const data = locatorData[i];
    const space = Math.max(SECTOR, roundUp(data.length, SECTOR));
    locators[i] = { platform: l.platform, dataSpace: space, dataLength: data.length, dataOffset: BigInt(pos) };
    chunks.push({ at: pos, data });
    pos += space;
  });
  const batOffset = pos;
  const entries = header.maxTableEntries;
  const table = bat ?? new Uint32Array(entries).fill(UNALLOCATED);
  const batBuf = serializeBat(table);
  const footerOffset = batOffset + batBytes(entries);
  const hdr: DynamicHeader = { ...header, tableOffset: BigInt(batOffset), locators };
  const footerRaw = serializeFooter(footer);
  const file = Buffer.alloc(footerOffset + FOOTER_SIZE);
  footerRaw.copy(file, 0);
  serializeDynamicHeader(hdr).copy(file, FOOTER_SIZE);
  for (const c of chunks) c.data.copy(file, c.at);
  batBuf.copy(file, batOffset);
  footerRaw.copy(file, footerOffset);
  await truncateStorage(storage, 0);
  await storage.write(0, file);
  return { batOffset, footerOffset, footerRaw };
}

/** Create a fixed or dynamic VHD of (at least) `size` bytes; see the module comment for rounding. */
export async function createVhd(storage: BlockDevice, opts: { type: 'fixed' | 'dynamic'; size: number; blockSize?: number; uniqueId?: Buffer }): Promise<VhdInfo> {
  if (opts.type !== 'fixed' && opts.type !== 'dynamic') throw arg(`VHD type must be 'fixed' or 'dynamic', got '${String(opts.type)}'`);
  if (!Number.isSafeInteger(opts.size) || opts.size <= 0) throw arg(`invalid VHD size ${opts.size}`);
  const { size, geometry } = roundedDiskSize(opts.size);
  if (size > VHD_MAX_SIZE) throw arg(`VHD size ${size} exceeds the maximum of 2040 GiB`);
  const uniqueId = checkUniqueId(opts.uniqueId);
  if (opts.type === 'fixed') {
    if (opts.blockSize !== undefined) throw arg('a fixed VHD has no block size');
    const footer = makeFooter(DiskType.Fixed, size, geometry, uniqueId);
    await truncateStorage(storage, size);
    await storage.write(size, serializeFooter(footer));
  } else {
    const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
    checkBlockSize(blockSize);
    const footer = makeFooter(DiskType.Dynamic, size, geometry, uniqueId);
    const header = newHeader(Math.ceil(size / blockSize), blockSize);
    await writeDynamicSkeleton(storage, { footer, header, locatorData: [] });
  }
  await storage.flush();
  return readVhdInfo(storage);
}

function newHeader(entries: number, blockSize: number): DynamicHeader {
  return {
    dataOffset: DATA_OFFSET_NONE,
    tableOffset: 0n,
    version: VHD_VERSION,
    maxTableEntries: entries,
    blockSize,
    checksum: 0,
    parentUniqueId: Buffer.alloc(16),
    parentTimestamp: 0,
    parentName: '',
    locators: emptyLocators(),
  };
}

/**
 * Create a differencing VHD over a parent of `size` bytes with the given unique id. The child has
 * exactly the parent's size (CHS geometry when it represents the size exactly, else saturated).
 * Locators: `relativePath` as W2ru, `absolutePath` as W2ku (UTF-16LE, stored as given), then
 * `extraLocators` as given (medv's raw-parent record, formats/vhd/rawparent.ts). `childUniqueId`
 * is the new disk's own unique id (default: random). `name`
 * (default: the base name of a path) goes into the header's parent unicode name. `timestamp` is the
 * parent's modification time in seconds since 2000-01-01 (default: now).
 */
export async function createDifferencingVhd(storage: BlockDevice, parent: { size: number; uniqueId: Buffer; timestamp?: number; absolutePath?: string; relativePath?: string; name?: string; blockSize?: number; extraLocators?: Array<{ platform: string; data: Buffer }>; childUniqueId?: Buffer }): Promise<VhdInfo> {
  const size = parent.size;
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR !== 0) throw arg(`parent size ${size} must be a positive multiple of 512`);
  if (size > VHD_MAX_SIZE) throw arg(`VHD size ${size} exceeds the maximum of 2040 GiB`);
  if (!Buffer.isBuffer(parent.uniqueId) || parent.uniqueId.length !== 16) throw arg('parent unique id must be a 16-byte Buffer');
  const blockSize = parent.blockSize ?? DEFAULT_BLOCK_SIZE;
  checkBlockSize(blockSize);
  const footer = makeFooter(DiskType.Differencing, size, exactGeometry(size), checkUniqueId(parent.childUniqueId));
  const header = newHeader(Math.ceil(size / blockSize), blockSize);
  header.parentUniqueId = Buffer.from(parent.uniqueId);
  header.parentTimestamp = parent.timestamp ?? vhdTimestampNow();
  const name = parent.name ?? basename((parent.absolutePath ?? parent.relativePath ?? '').replace(/\\/g, '/'));
  if (name.length > 256) throw arg('parent name is longer than 256 characters');
  header.parentName = name;
  const locatorData: Buffer[] = [];
  const platforms: string[] = [];
  if (parent.relativePath) { platforms.push(PLATFORM_W2RU); locatorData.push(encodeLocatorData(PLATFORM_W2RU, parent.relativePath)); }
  if (parent.absolutePath) { platforms.push(PLATFORM_W2KU); locatorData.push(encodeLocatorData(PLATFORM_W2KU, parent.absolutePath)); }
  for (const l of parent.extraLocators ?? []) { platforms.push(l.platform); locatorData.push(Buffer.from(l.data)); }
  if (platforms.length > 8) throw arg('a VHD holds at most 8 parent locators');
  for (const d of locatorData) if (d.length > 65536) throw arg('parent path is too long');
  platforms.forEach((p, i) => { header.locators[i] = { platform: p, dataSpace: 0, dataLength: 0, dataOffset: 0n }; });
  await writeDynamicSkeleton(storage, { footer, header, locatorData });
  await storage.flush();
  return readVhdInfo(storage);
}
