/**
 * The 512-byte VHD hard disk footer (VHD 1.0 specification, "Hard Disk Footer Format").
 * Every VHD ends with it; dynamic and differencing disks also keep a copy at offset 0.
 * All fields are big-endian.
 *
 *   0 cookie "conectix"      8 features          12 file format version   16 data offset (u64)
 *  24 timestamp             28 creator app      32 creator version       36 creator host OS
 *  40 original size (u64)   48 current size (u64)                        56 geometry C(u16) H(u8) S(u8)
 *  60 disk type             64 checksum         68 unique id (16)        84 saved state (u8)
 *  85 reserved (427, zero)
 */
import {
  type ParseContext, SECTOR, VHD_VERSION, formatError, fourCC, toSafeNumber, vhdChecksum, writeFourCC,
} from './common.js';
import { type Geometry } from './geometry.js';

export const FOOTER_SIZE = 512;
export const FOOTER_COOKIE = 'conectix';
export const FEATURE_TEMPORARY = 0x1;
export const FEATURE_RESERVED = 0x2; // must always be set
export const DATA_OFFSET_NONE = 0xffffffffffffffffn;

export enum DiskType {
  None = 0,
  Fixed = 2,
  Dynamic = 3,
  Differencing = 4,
}

export interface VhdFooter {
  features: number;
  version: number;
  /** Absolute offset of the dynamic disk header; all ones for fixed disks. */
  dataOffset: bigint;
  /** Seconds since 2000-01-01 00:00:00 UTC. */
  timestamp: number;
  /** Four characters, untrimmed ("vpc ", "qemu", "win ", "tap\0", "medv"). */
  creatorApp: string;
  creatorVersion: number;
  /** Four characters, untrimmed ("Wi2k", "Mac "). */
  creatorOs: string;
  originalSize: bigint;
  currentSize: bigint;
  geometry: Geometry;
  diskType: DiskType;
  /** The stored checksum (serializeFooter recomputes it). */
  checksum: number;
  uniqueId: Buffer;
  savedState: boolean;
}

export function isFooterCookie(buf: Buffer, at = 0): boolean {
  return buf.length >= at + 8 && buf.toString('latin1', at, at + 8) === FOOTER_COOKIE;
}

/**
 * Parse a footer. Checks, in order: length, cookie, checksum, version, disk type, sizes.
 * Throws MedvError ETRUNCATED / EFORMAT / ECHECKSUM / EVERSION naming file and offset.
 * Some old tools wrote a 511-byte footer: a 511-byte buffer is accepted (the last byte is reserved).
 */
export function parseFooter(input: Buffer, ctx?: ParseContext): VhdFooter {
  if (input.length < FOOTER_SIZE - 1) {
    throw formatError('ETRUNCATED', `VHD footer needs ${FOOTER_SIZE} bytes, got ${input.length}`, ctx);
  }
  const buf = input.length >= FOOTER_SIZE ? input.subarray(0, FOOTER_SIZE) : Buffer.concat([input, Buffer.alloc(FOOTER_SIZE - input.length)]);
  if (!isFooterCookie(buf)) throw formatError('EFORMAT', 'not a VHD footer (cookie is not "conectix")', ctx);
  const stored = buf.readUInt32BE(64);
  const computed = vhdChecksum(buf, 64);
  if (stored !== computed) {
    throw formatError('ECHECKSUM', `VHD footer checksum mismatch (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})`, ctx, 64);
  }
  const version = buf.readUInt32BE(12);
  if (version >>> 16 !== 1) throw formatError('EVERSION', `unsupported VHD version 0x${version.toString(16)}`, ctx, 12);
  const diskType = buf.readUInt32BE(60);
  if (diskType !== DiskType.Fixed && diskType !== DiskType.Dynamic && diskType !== DiskType.Differencing) {
    throw formatError('EFORMAT', `unsupported VHD disk type ${diskType}`, ctx, 60);
  }
  const currentSize = buf.readBigUInt64BE(48);
  const originalSize = buf.readBigUInt64BE(40);
  toSafeNumber(currentSize, 'current size', ctx, 48);
  return {
    features: buf.readUInt32BE(8),
    version,
    dataOffset: buf.readBigUInt64BE(16),
    timestamp: buf.readUInt32BE(24),
    creatorApp: fourCC(buf, 28),
    creatorVersion: buf.readUInt32BE(32),
    creatorOs: fourCC(buf, 36),
    originalSize,
    currentSize,
    geometry: { cylinders: buf.readUInt16BE(56), heads: buf[58], sectorsPerTrack: buf[59] },
    diskType,
    checksum: stored,
    uniqueId: Buffer.from(buf.subarray(68, 84)),
    savedState: buf[84] !== 0,
  };
}

/** Serialize a footer; the checksum is computed here (the record's checksum field is ignored). */
export function serializeFooter(f: VhdFooter): Buffer {
  const buf = Buffer.alloc(FOOTER_SIZE);
  buf.write(FOOTER_COOKIE, 0, 'latin1');
  buf.writeUInt32BE(f.features >>> 0, 8);
  buf.writeUInt32BE(f.version >>> 0, 12);
  buf.writeBigUInt64BE(f.dataOffset, 16);
  buf.writeUInt32BE(f.timestamp >>> 0, 24);
  writeFourCC(buf, 28, f.creatorApp);
  buf.writeUInt32BE(f.creatorVersion >>> 0, 32);
  writeFourCC(buf, 36, f.creatorOs);
  buf.writeBigUInt64BE(f.originalSize, 40);
  buf.writeBigUInt64BE(f.currentSize, 48);
  buf.writeUInt16BE(f.geometry.cylinders, 56);
  buf[58] = f.geometry.heads;
  buf[59] = f.geometry.sectorsPerTrack;
  buf.writeUInt32BE(f.diskType, 60);
  if (f.uniqueId.length !== 16) throw formatError('EINVAL_ARG', 'VHD unique id must be 16 bytes', undefined);
  f.uniqueId.copy(buf, 68);
  buf[84] = f.savedState ? 1 : 0;
  buf.writeUInt32BE(vhdChecksum(buf, 64), 64);
  return buf;
}

export function newFooterDefaults(): Pick<VhdFooter, 'features' | 'version' | 'checksum' | 'savedState'> {
  return { features: FEATURE_RESERVED, version: VHD_VERSION, checksum: 0, savedState: false };
}

export { SECTOR };
