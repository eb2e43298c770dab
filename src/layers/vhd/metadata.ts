/**
 * Reading and validating the metadata of a VHD file (footer, dynamic header, BAT, parent locators)
 * from its storage device. One walk serves three callers: readVhdInfo and openVhd (which throw on
 * the first error) and checkVhd (which collects every error and warning it can).
 */
import type { BlockDevice } from '../../block/device.js';
import { type ErrorCode, MedvError, isMedvError } from '../../core/errors.js';
import {
  DATA_OFFSET_NONE, DYNHEADER_SIZE, DiskType, FOOTER_SIZE, KNOWN_PLATFORMS, MAX_LOCATOR_DATA, SECTOR,
  UNALLOCATED, VHD_MAX_SIZE, bitmapSize as bitmapSizeOf, dataSpaceBytes, decodeLocatorData, diskSizeFromFooter,
  isFooterCookie, isPowerOfTwo, isUsedLocator, parseBat, parseDynamicHeader, parseFooter,
  type DynamicHeader, type VhdFooter,
} from '../../formats/vhd/index.js';

export type VhdType = 'fixed' | 'dynamic' | 'differencing';

export interface ParentInfo {
  uniqueId: Buffer;
  /** Parent modification time, seconds since 2000-01-01 UTC (as stored). */
  timestamp: number;
  unicodeName: string;
  /** Decoded locators in header order; platform codes with trailing blanks trimmed ("Mac"). */
  locators: Array<{ platform: string; path: string }>;
  /** Locators that hold no path (Mac alias blobs, medv's raw-parent record "MdvR"), with their data. */
  opaqueLocators: Array<{ platform: string; data: Buffer }>;
}

export interface VhdInfo {
  type: VhdType;
  /** Size of the virtual disk in bytes (qemu's rule: CHS or current_size depending on the creator). */
  virtualSize: number;
  /** current_size from the footer. */
  currentSize: number;
  /** Creator application, trailing blanks and NULs trimmed ("vpc", "qemu", "win", "medv"). */
  creatorApp: string;
  creatorVersion: number;
  /** Creator host OS code, trimmed ("Wi2k", "Mac"). */
  creatorOs: string;
  uniqueId: Buffer;
  blockSize?: number;
  maxTableEntries?: number;
  allocatedBlocks?: number;
  parent?: ParentInfo;
  /** Size of the VHD file (its storage) in bytes. */
  fileSize: number;
  /**
   * The footer's saved-state flag (byte 84): the disk belongs to a suspended VM, whose saved state
   * expects it exactly as it is. Only that VM's resume may write it (openVhd refuses otherwise).
   */
  savedState: boolean;
}

/** Largest block size we accept (the spec's default is 2 MiB; Hyper-V goes to 256 MiB). */
export const MAX_BLOCK_SIZE = 256 * 1024 * 1024;
/** Largest BAT we load: 16 M entries (64 MiB), e.g. 2 TiB in 128 KiB blocks. */
export const MAX_TABLE_ENTRIES = 1 << 24;

export interface LocatorData {
  index: number;
  platform: string;
  offset: number;
  space: number;
  length: number;
  /** The locator's data bytes as stored. */
  raw: Buffer;
  path?: string;
}

export interface VhdMeta {
  name: string;
  type: VhdType;
  footer: VhdFooter;
  /** The footer's exact bytes, rewritten at the new end of file when a block is allocated. */
  footerRaw: Buffer;
  /** Where the footer came from: the end of the file, or the copy at offset 0 (end was damaged). */
  footerSource: 'end' | 'copy';
  /** Offset at which the (next) trailing footer lives; new blocks start here. */
  footerOffset: number;
  virtualSize: number;
  fileSize: number;
  header?: DynamicHeader;
  headerOffset?: number;
  bat?: Uint32Array;
  batOffset?: number;
  blockSize?: number;
  bitmapSize?: number;
  locators: LocatorData[];
  allocatedBlocks: number;
}

export interface Issues {
  errors: string[];
  warnings: string[];
}

/** Throws on the first error (mode 'open'), or collects into `issues` (mode 'check'). */
class Reporter {
  constructor(private readonly name: string, private readonly issues?: Issues) {}

  get collecting(): boolean { return this.issues !== undefined; }

  error(code: ErrorCode, message: string, offset?: number): void {
    const err = new MedvError(code, message, { file: this.name, offset });
    if (!this.issues) throw err;
    this.issues.errors.push(`${code}: ${err.message}`);
  }

  caught(e: unknown): void {
    if (!isMedvError(e)) throw e;
    if (!this.issues) throw e;
    this.issues.errors.push(`${e.code}: ${e.message}`);
  }

  warn(message: string, offset?: number): void {
    this.issues?.warnings.push(offset === undefined ? `${message} (${this.name})` : `${message} (${this.name}, offset ${offset})`);
  }
}

function trim4(code: string): string {
  return code.replace(/[\0 ]+$/, '');
}

/**
 * Read and validate a VHD's metadata. In 'check' mode returns undefined when the file is too
 * damaged to go on (the reasons are in `issues`).
 */
export async function loadVhdMeta(storage: BlockDevice, name: string, issues?: Issues): Promise<VhdMeta | undefined> {
  const r = new Reporter(name, issues);
  const fileSize = storage.size;
  if (fileSize < FOOTER_SIZE) {
    r.error('ETRUNCATED', `file of ${fileSize} bytes is too small for a VHD footer`, 0);
    return undefined;
  }

  // --- Footer: the one at the end is authoritative; dynamic disks keep a copy at offset 0 that
  // stands in when the end is damaged (e.g. a torn footer write).
  let footer: VhdFooter | undefined;
  let footerRaw: Buffer | undefined;
  let footerSource: 'end' | 'copy' = 'end';
  const endOffset = fileSize - FOOTER_SIZE;
  const endRaw = await storage.read(endOffset, FOOTER_SIZE);
  let endError: unknown;
  try {
    footer = parseFooter(endRaw, { file: name, offset: endOffset });
    footerRaw = endRaw;
  } catch (e) {
    if (!isMedvError(e)) throw e;
    endError = e;
  }
  let copy: VhdFooter | undefined;
  let copyRaw: Buffer | undefined;
  if (fileSize >= FOOTER_SIZE + FOOTER_SIZE + DYNHEADER_SIZE) {
    const raw = await storage.read(0, FOOTER_SIZE);
    if (isFooterCookie(raw)) {
      try {
        copy = parseFooter(raw, { file: name, offset: 0 });
        copyRaw = raw;
      } catch (e) {
        if (!isMedvError(e)) throw e;
        if (footer && footer.diskType !== DiskType.Fixed && r.collecting) r.error(e.code, `footer copy at offset 0 is invalid: ${e.message}`, 0);
      }
    }
  }
  if (!footer) {
    if (copy && copyRaw && copy.diskType !== DiskType.Fixed) {
      footer = copy;
      footerRaw = copyRaw;
      footerSource = 'copy';
      r.warn('the footer at the end of the file is invalid; using the copy at offset 0 (it is rewritten on the next block allocation)', endOffset);
    } else {
      r.caught(endError);
      return undefined;
    }
  } else if (footer.diskType !== DiskType.Fixed) {
    if (!copy) {
      if (r.collecting && !issues!.errors.some((e) => e.includes('footer copy'))) r.warn('no footer copy at offset 0', 0);
    } else if (!copyRaw!.equals(footerRaw!)) {
      r.warn('the footer copy at offset 0 differs from the footer at the end of the file', 0);
    }
  }
  const fOff = footerSource === 'end' ? endOffset : 0;

  const virtual = diskSizeFromFooter(footer.creatorApp, footer.geometry, footer.currentSize);
  if (virtual > BigInt(VHD_MAX_SIZE)) {
    r.error('EFORMAT', `disk size ${virtual} exceeds the VHD maximum of 2040 GiB`, fOff + 48);
    return undefined;
  }
  const virtualSize = Number(virtual);
  const type: VhdType = footer.diskType === DiskType.Fixed ? 'fixed' : footer.diskType === DiskType.Dynamic ? 'dynamic' : 'differencing';
  /** Everything except the trailing footer must lie below this offset. */
  const dataLimit = footerSource === 'end' ? endOffset : fileSize;

  const meta: VhdMeta = {
    name, type, footer, footerRaw: footerRaw!, footerSource, footerOffset: endOffset, virtualSize, fileSize,
    locators: [], allocatedBlocks: 0,
  };

  if (type === 'fixed') {
    if (virtualSize > endOffset) {
      r.error('ETRUNCATED', `fixed VHD needs ${virtualSize + FOOTER_SIZE} bytes, file has ${fileSize}`, endOffset);
      return undefined;
    }
    if (footer.dataOffset !== DATA_OFFSET_NONE && footer.dataOffset !== 0xffffffffn) {
      r.warn(`fixed VHD footer has data offset ${footer.dataOffset} (expected all ones)`, fOff + 16);
    }
    return meta;
  }

  // --- Dynamic disk header.
  const hdrOff = footer.dataOffset;
  if (hdrOff < BigInt(FOOTER_SIZE) || hdrOff + BigInt(DYNHEADER_SIZE) > BigInt(dataLimit)) {
    r.error(hdrOff > BigInt(dataLimit) ? 'ETRUNCATED' : 'ECORRUPT',
      `dynamic header offset ${hdrOff} is outside the file (size ${fileSize})`, fOff + 16);
    return undefined;
  }
  const headerOffset = Number(hdrOff);
  let header: DynamicHeader;
  try {
    header = parseDynamicHeader(await storage.read(headerOffset, DYNHEADER_SIZE), { file: name, offset: headerOffset });
  } catch (e) {
    r.caught(e);
    return undefined;
  }
  meta.header = header;
  meta.headerOffset = headerOffset;

  const bs = header.blockSize;
  if (!isPowerOfTwo(bs) || bs < SECTOR || bs > MAX_BLOCK_SIZE) {
    r.error('EFORMAT', `block size ${bs} is not a power of two between 512 and ${MAX_BLOCK_SIZE}`, headerOffset + 32);
    return undefined;
  }
  const bmSize = bitmapSizeOf(bs);
  meta.blockSize = bs;
  meta.bitmapSize = bmSize;
  const entries = header.maxTableEntries;
  const needed = Math.ceil(virtualSize / bs);
  const current = Math.min(Number(footer.currentSize), VHD_MAX_SIZE);
  const ceiling = Math.ceil(Math.max(virtualSize, current) / bs);
  if (entries < needed) {
    r.error('ECORRUPT', `BAT has ${entries} entries, the disk size needs ${needed}`, headerOffset + 28);
    return undefined;
  }
  if (entries > ceiling || entries > MAX_TABLE_ENTRIES) {
    r.error('EFORMAT', `absurd max table entries ${entries} for a disk of ${virtualSize} bytes in blocks of ${bs}`, headerOffset + 28);
    return undefined;
  }
  const batOff = header.tableOffset;
  if (batOff < BigInt(FOOTER_SIZE) || batOff + BigInt(entries * 4) > BigInt(dataLimit)) {
    r.error(batOff + BigInt(entries * 4) > BigInt(dataLimit) ? 'ETRUNCATED' : 'ECORRUPT',
      `BAT [${batOff}, +${entries * 4}) is outside the file (size ${fileSize})`, headerOffset + 16);
    return undefined;
  }
  const batOffset = Number(batOff);
  if (batOffset % SECTOR !== 0) r.warn(`BAT offset ${batOffset} is not sector-aligned`, headerOffset + 16);
  const bat = parseBat(await storage.read(batOffset, entries * 4), entries, { file: name, offset: batOffset });
  meta.bat = bat;
  meta.batOffset = batOffset;

  // --- Regions that blocks must not overlap: footer copy, header, BAT, locator data.
  const regions: Array<{ start: number; end: number; what: string }> = [];
  if (copy) regions.push({ start: 0, end: FOOTER_SIZE, what: 'footer copy' });
  regions.push({ start: headerOffset, end: headerOffset + DYNHEADER_SIZE, what: 'dynamic header' });
  regions.push({ start: batOffset, end: batOffset + entries * 4, what: 'BAT' });
  if (regionsOverlap(headerOffset, headerOffset + DYNHEADER_SIZE, batOffset, batOffset + entries * 4)) {
    r.error('ECORRUPT', 'BAT overlaps the dynamic header', headerOffset + 16);
    if (!r.collecting) return undefined;
  }

  // --- Parent locators (differencing disks; checked and warned about for dynamic ones).
  for (let i = 0; i < header.locators.length; i++) {
    const l = header.locators[i];
    if (!isUsedLocator(l)) continue;
    const entryAt = headerOffset + 576 + i * 24;
    if (type === 'dynamic') {
      r.warn(`dynamic (non-differencing) disk has parent locator ${i} ('${trim4(l.platform)}')`, entryAt);
      continue;
    }
    if (!KNOWN_PLATFORMS.includes(l.platform)) {
      r.warn(`parent locator ${i} has unknown platform code 0x${Buffer.from(l.platform, 'latin1').toString('hex')}`, entryAt);
      continue;
    }
    const space = dataSpaceBytes(l);
    if (l.dataLength > MAX_LOCATOR_DATA || l.dataLength > space) {
      r.error('ECORRUPT', `parent locator ${i} data length ${l.dataLength} exceeds its space ${space} or ${MAX_LOCATOR_DATA}`, entryAt + 8);
      continue;
    }
    if (l.dataOffset < BigInt(FOOTER_SIZE) || l.dataOffset + BigInt(l.dataLength) > BigInt(dataLimit)) {
      r.error('ECORRUPT', `parent locator ${i} data [${l.dataOffset}, +${l.dataLength}) is outside the file`, entryAt + 16);
      continue;
    }
    const offset = Number(l.dataOffset);
    const spaceEnd = Math.min(offset + Math.max(space, l.dataLength), dataLimit);
    let path: string | undefined;
    let raw: Buffer;
    try {
      raw = await storage.read(offset, l.dataLength);
      path = decodeLocatorData(l.platform, raw, { file: name, offset });
    } catch (e) {
      r.caught(e);
      continue;
    }
    meta.locators.push({ index: i, platform: l.platform, offset, space, length: l.dataLength, raw, path });
    regions.push({ start: offset, end: spaceEnd, what: `parent locator ${i} data` });
  }

  // --- BAT entries: inside the file, clear of metadata, not overlapping each other.
  const span = bmSize + bs;
  const allocated: number[] = [];
  let maxEnd = 0;
  for (const reg of regions) maxEnd = Math.max(maxEnd, reg.end);
  let badEntries = 0;
  for (let i = 0; i < entries; i++) {
    const e = bat[i];
    if (e === UNALLOCATED) continue;
    const start = e * SECTOR;
    const end = start + span;
    if (end > dataLimit) {
      r.error('ECORRUPT', `BAT entry ${i} points to [${start}, ${end}), past the end of the data (${dataLimit})`, batOffset + 4 * i);
      bat[i] = UNALLOCATED;
      if (++badEntries > 20) return undefined;
      continue;
    }
    const hit = regions.find((reg) => regionsOverlap(start, end, reg.start, reg.end));
    if (hit) {
      r.error('ECORRUPT', `block ${i} at [${start}, ${end}) overlaps the ${hit.what}`, batOffset + 4 * i);
      bat[i] = UNALLOCATED;
      if (++badEntries > 20) return undefined;
      continue;
    }
    if (i >= needed) r.warn(`BAT entry ${i} beyond the disk size is allocated`, batOffset + 4 * i);
    allocated.push(e);
    if (end > maxEnd) maxEnd = end;
  }
  if (allocated.length > 1) {
    const sorted = Uint32Array.from(allocated).sort();
    const spanSectors = span / SECTOR;
    for (let k = 1; k < sorted.length; k++) {
      if (sorted[k] - sorted[k - 1] < spanSectors) {
        const a = bat.indexOf(sorted[k - 1]);
        let b = bat.indexOf(sorted[k]);
        if (b === a) b = bat.indexOf(sorted[k], a + 1);
        r.error('ECORRUPT', `blocks ${a} and ${b} overlap in the file (sectors ${sorted[k - 1]} and ${sorted[k]})`, batOffset + 4 * b);
        if (!r.collecting) return undefined;
      }
    }
  }
  meta.allocatedBlocks = allocated.length;
  meta.footerOffset = Math.max(endOffset, maxEnd);

  if (r.collecting) {
    // Leaked space: stretches of the file no structure accounts for. Alignment gaps in front of
    // block bitmaps (up to 4 KiB + a sector) are by design.
    const used = [...regions.map((x) => [x.start, x.end] as [number, number]),
      ...allocated.map((e) => [e * SECTOR, e * SECTOR + span] as [number, number])].sort((x, y) => x[0] - y[0]);
    let cursor = 0;
    let leaked = 0;
    for (const [s, e] of used) {
      if (s - cursor > 4096 + SECTOR) leaked += s - cursor;
      cursor = Math.max(cursor, e);
    }
    if (endOffset - cursor > 4096 + SECTOR) leaked += endOffset - cursor;
    if (leaked > 0) r.warn(`${leaked} bytes of the file are not referenced by any structure (leaked space)`);
  }
  return meta;
}

function regionsOverlap(a0: number, a1: number, b0: number, b1: number): boolean {
  return a0 < b1 && b0 < a1;
}

export function metaToInfo(meta: VhdMeta, fileSize: number, allocatedBlocks = meta.allocatedBlocks): VhdInfo {
  const f = meta.footer;
  const info: VhdInfo = {
    type: meta.type,
    virtualSize: meta.virtualSize,
    currentSize: Number(f.currentSize),
    creatorApp: trim4(f.creatorApp),
    creatorVersion: f.creatorVersion,
    creatorOs: trim4(f.creatorOs),
    uniqueId: Buffer.from(f.uniqueId),
    fileSize,
    savedState: f.savedState,
  };
  if (meta.header) {
    info.blockSize = meta.header.blockSize;
    info.maxTableEntries = meta.header.maxTableEntries;
    info.allocatedBlocks = allocatedBlocks;
  }
  if (meta.type === 'differencing' && meta.header) {
    info.parent = {
      uniqueId: Buffer.from(meta.header.parentUniqueId),
      timestamp: meta.header.parentTimestamp,
      unicodeName: meta.header.parentName,
      locators: meta.locators.filter((l) => l.path !== undefined).map((l) => ({ platform: trim4(l.platform), path: l.path! })),
      opaqueLocators: meta.locators.filter((l) => l.path === undefined).map((l) => ({ platform: trim4(l.platform), data: Buffer.from(l.raw) })),
    };
  }
  return info;
}
