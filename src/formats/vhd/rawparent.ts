/**
 * medv's own parent locator (PLATFORM_MDVR in locator.ts) for a differencing disk (an undo disk) whose parent is a raw file:
 * platform code "MdvR". Other tools skip locators they do not know; medv never follows it as a
 * path. It records what the raw parent looked like when the undo disk was made, so that opening
 * the undo disk over a raw file the user names can check it is still that file:
 *
 *   0   8  magic "medvrawp"
 *   8   4  version (1)
 *   12  4  region length in bytes (1..65536)
 *   16  8  parent size in bytes
 *   24  4  region count N (1..64)
 *   28  4  reserved, 0
 *   32  N x { 8 offset, 16 keyed hash of the region }   (big-endian, like the rest of a VHD)
 *
 * Pure: no I/O. The hashes are computed in src/layers/rawparent.ts.
 */
import { type ParseContext, formatError } from './common.js';

export const RAW_PARENT_MAGIC = 'medvrawp';
export const RAW_PARENT_VERSION = 1;
export const RAW_PARENT_MAX_REGIONS = 64;
export const RAW_PARENT_MAX_REGION = 65536;
export const RAW_PARENT_HASH = 16;
const HEADER = 32;
const ENTRY = 8 + RAW_PARENT_HASH;

export interface RawParentRecord {
  size: number;
  regionLength: number;
  regions: Array<{ offset: number; hash: Buffer }>;
}

export function serializeRawParent(r: RawParentRecord): Buffer {
  if (r.regions.length < 1 || r.regions.length > RAW_PARENT_MAX_REGIONS) throw formatError('EINVAL_ARG', `raw parent record needs 1..${RAW_PARENT_MAX_REGIONS} regions`, undefined);
  const buf = Buffer.alloc(HEADER + r.regions.length * ENTRY);
  buf.write(RAW_PARENT_MAGIC, 0, 'latin1');
  buf.writeUInt32BE(RAW_PARENT_VERSION, 8);
  buf.writeUInt32BE(r.regionLength, 12);
  buf.writeBigUInt64BE(BigInt(r.size), 16);
  buf.writeUInt32BE(r.regions.length, 24);
  r.regions.forEach((g, i) => {
    if (g.hash.length !== RAW_PARENT_HASH) throw formatError('EINVAL_ARG', 'raw parent region hash must be 16 bytes', undefined);
    buf.writeBigUInt64BE(BigInt(g.offset), HEADER + i * ENTRY);
    g.hash.copy(buf, HEADER + i * ENTRY + 8);
  });
  return buf;
}

/** Parse and bounds-check a record (hostile input): every region must lie inside the parent. */
export function parseRawParent(buf: Buffer, ctx?: ParseContext): RawParentRecord {
  if (buf.length < HEADER) throw formatError('ETRUNCATED', `raw parent record is ${buf.length} bytes, needs at least ${HEADER}`, ctx);
  if (buf.toString('latin1', 0, 8) !== RAW_PARENT_MAGIC) throw formatError('EFORMAT', 'raw parent record has a bad magic', ctx);
  const version = buf.readUInt32BE(8);
  if (version !== RAW_PARENT_VERSION) throw formatError('EVERSION', `raw parent record version ${version} is not supported`, ctx, 8);
  const regionLength = buf.readUInt32BE(12);
  if (regionLength < 1 || regionLength > RAW_PARENT_MAX_REGION) throw formatError('EFORMAT', `raw parent region length ${regionLength} out of range`, ctx, 12);
  const size64 = buf.readBigUInt64BE(16);
  if (size64 < 1n || size64 > BigInt(Number.MAX_SAFE_INTEGER)) throw formatError('EFORMAT', `raw parent size ${size64} out of range`, ctx, 16);
  const size = Number(size64);
  const count = buf.readUInt32BE(24);
  if (count < 1 || count > RAW_PARENT_MAX_REGIONS) throw formatError('EFORMAT', `raw parent region count ${count} out of range`, ctx, 24);
  if (buf.length < HEADER + count * ENTRY) throw formatError('ETRUNCATED', `raw parent record holds ${buf.length} bytes, ${count} regions need ${HEADER + count * ENTRY}`, ctx);
  const regions: RawParentRecord['regions'] = [];
  for (let i = 0; i < count; i++) {
    const at = HEADER + i * ENTRY;
    const off = buf.readBigUInt64BE(at);
    if (off + BigInt(regionLength) > size64) throw formatError('EFORMAT', `raw parent region ${i} at ${off} lies past the parent's ${size} bytes`, ctx, at);
    regions.push({ offset: Number(off), hash: Buffer.from(buf.subarray(at + 8, at + ENTRY)) });
  }
  return { size, regionLength, regions };
}
