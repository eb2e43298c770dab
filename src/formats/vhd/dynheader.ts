/**
 * The 1024-byte dynamic disk header ("cxsparse") of dynamic and differencing VHDs
 * (VHD 1.0 specification, "Dynamic Disk Header Format"). Big-endian.
 *
 *    0 cookie "cxsparse"     8 data offset (u64, all ones)   16 table offset (u64)
 *   24 header version       28 max table entries            32 block size        36 checksum
 *   40 parent unique id (16)                                56 parent timestamp  60 reserved
 *   64 parent unicode name (512 bytes, UTF-16BE)
 *  576 parent locator entries, 8 x 24 bytes:
 *        +0 platform code  +4 platform data space  +8 platform data length  +12 reserved
 *        +16 platform data offset (u64)
 *  768 reserved (256, zero)
 */
import { type ParseContext, VHD_VERSION, formatError, fourCC, vhdChecksum } from './common.js';

export const DYNHEADER_SIZE = 1024;
export const DYNHEADER_COOKIE = 'cxsparse';
export const PARENT_NAME_BYTES = 512;
export const LOCATOR_COUNT = 8;

export interface LocatorEntry {
  /** Four characters, e.g. "W2ku", "W2ru", "Wi2k", "Wi2r", "Mac ", "MacX"; "\0\0\0\0" when unused. */
  platform: string;
  /** Platform data space as stored (bytes for Virtual PC / Hyper-V, sectors per the spec). */
  dataSpace: number;
  dataLength: number;
  dataOffset: bigint;
}

export interface DynamicHeader {
  dataOffset: bigint;
  tableOffset: bigint;
  version: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
  parentUniqueId: Buffer;
  parentTimestamp: number;
  /** Decoded from UTF-16BE, cut at the first NUL. */
  parentName: string;
  /** Always 8 entries. */
  locators: LocatorEntry[];
}

export const EMPTY_PLATFORM = '\0\0\0\0';

export function isUsedLocator(l: LocatorEntry): boolean {
  return l.platform !== EMPTY_PLATFORM;
}

/** Checks, in order: length, cookie, checksum, version. Field ranges are checked by the layer,
 *  which knows the file size and the disk size. */
export function parseDynamicHeader(input: Buffer, ctx?: ParseContext): DynamicHeader {
  if (input.length < DYNHEADER_SIZE) {
    throw formatError('ETRUNCATED', `VHD dynamic disk header needs ${DYNHEADER_SIZE} bytes, got ${input.length}`, ctx);
  }
  const buf = input.subarray(0, DYNHEADER_SIZE);
  if (buf.toString('latin1', 0, 8) !== DYNHEADER_COOKIE) {
    throw formatError('EFORMAT', 'not a VHD dynamic disk header (cookie is not "cxsparse")', ctx);
  }
  const stored = buf.readUInt32BE(36);
  const computed = vhdChecksum(buf, 36);
  if (stored !== computed) {
    throw formatError('ECHECKSUM', `VHD dynamic disk header checksum mismatch (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})`, ctx, 36);
  }
  const version = buf.readUInt32BE(24);
  if (version !== VHD_VERSION) throw formatError('EVERSION', `unsupported VHD dynamic header version 0x${version.toString(16)}`, ctx, 24);
  const locators: LocatorEntry[] = [];
  for (let i = 0; i < LOCATOR_COUNT; i++) {
    const at = 576 + i * 24;
    locators.push({
      platform: fourCC(buf, at),
      dataSpace: buf.readUInt32BE(at + 4),
      dataLength: buf.readUInt32BE(at + 8),
      dataOffset: buf.readBigUInt64BE(at + 16),
    });
  }
  return {
    dataOffset: buf.readBigUInt64BE(8),
    tableOffset: buf.readBigUInt64BE(16),
    version,
    maxTableEntries: buf.readUInt32BE(28),
    blockSize: buf.readUInt32BE(32),
    checksum: stored,
    parentUniqueId: Buffer.from(buf.subarray(40, 56)),
    parentTimestamp: buf.readUInt32BE(56),
    parentName: decodeUtf16BE(buf.subarray(64, 64 + PARENT_NAME_BYTES)),
    locators,
  };
}

export function serializeDynamicHeader(h: DynamicHeader): Buffer {
  const buf = Buffer.alloc(DYNHEADER_SIZE);
  buf.write(DYNHEADER_COOKIE, 0, 'latin1');
  buf.writeBigUInt64BE(h.dataOffset, 8);
  buf.writeBigUInt64BE(h.tableOffset, 16);
  buf.writeUInt32BE(h.version >>> 0, 24);
  buf.writeUInt32BE(h.maxTableEntries >>> 0, 28);
  buf.writeUInt32BE(h.blockSize >>> 0, 32);
  if (h.parentUniqueId.length !== 16) throw formatError('EINVAL_ARG', 'parent unique id must be 16 bytes', undefined);
  h.parentUniqueId.copy(buf, 40);
  buf.writeUInt32BE(h.parentTimestamp >>> 0, 56);
  const name = encodeUtf16BE(h.parentName);
  if (name.length > PARENT_NAME_BYTES) {
    throw formatError('EINVAL_ARG', `parent name is longer than ${PARENT_NAME_BYTES / 2} UTF-16 units`, undefined);
  }
  name.copy(buf, 64);
  if (h.locators.length > LOCATOR_COUNT) throw formatError('EINVAL_ARG', 'at most 8 parent locators', undefined);
  h.locators.forEach((l, i) => {
    const at = 576 + i * 24;
    const code = Buffer.alloc(4);
    code.write(l.platform.slice(0, 4), 'latin1');
    code.copy(buf, at);
    buf.writeUInt32BE(l.dataSpace >>> 0, at + 4);
    buf.writeUInt32BE(l.dataLength >>> 0, at + 8);
    buf.writeBigUInt64BE(l.dataOffset, at + 16);
  });
  buf.writeUInt32BE(vhdChecksum(buf, 36), 36);
  return buf;
}

export function emptyLocators(): LocatorEntry[] {
  return Array.from({ length: LOCATOR_COUNT }, () => ({ platform: EMPTY_PLATFORM, dataSpace: 0, dataLength: 0, dataOffset: 0n }));
}

function decodeUtf16BE(b: Buffer): string {
  const swapped = Buffer.from(b);
  swapped.swap16();
  const s = swapped.toString('utf16le');
  const nul = s.indexOf('\0');
  return nul < 0 ? s : s.slice(0, nul);
}

function encodeUtf16BE(s: string): Buffer {
  const b = Buffer.from(s, 'utf16le');
  b.swap16();
  return b;
}
