/**
 * The block-id cache file of a disk seed (src/transfer/seedcache.ts does the I/O): keyed ids of
 * every non-zero 4 KiB block of a seed, with the seed state and key they are valid for. Pure
 * parse/serialize, every length checked before use.
 *
 * Layout (little-endian):
 *   0   8  magic "MEDVSIDS"
 *   8   4  format (1)
 *  12   4  entry count n
 *  16   8  seed size in bytes
 *  24   8  seed mtime in ns
 *  32   8  seed inode
 *  40   8  seed device
 *  48  16  key tag: BLAKE2b-128 of "medv seed cache" keyed with the id key
 *  64  n x 20  entries: id (16), u32 block number (offset / 4096)
 * parseSeedIds returns undefined for anything else (or another seed state or key tag).
 */

const MAGIC = Buffer.from('MEDVSIDS', 'latin1');
const HEADER = 64;
const ENTRY = 20;
/** 64 GiB of distinct non-zero blocks: a cache file larger than that is not ours. */
export const SEED_IDS_MAX_ENTRIES = 2 ** 24;
export const SEED_IDS_HEADER = HEADER;
export const SEED_IDS_ENTRY = ENTRY;

export interface SeedStamp { size: number; mtimeNs: bigint; ino: bigint; dev: bigint }

export interface SeedIds { ids: Buffer; blocks: Uint32Array; count: number }

export function serializeSeedIds(stamp: SeedStamp, tag: Buffer, ids: SeedIds): Buffer {
  const b = Buffer.alloc(HEADER + ids.count * ENTRY);
  MAGIC.copy(b, 0);
  b.writeUInt32LE(1, 8);
  b.writeUInt32LE(ids.count, 12);
  b.writeBigUInt64LE(BigInt(stamp.size), 16);
  b.writeBigUInt64LE(stamp.mtimeNs, 24);
  b.writeBigUInt64LE(stamp.ino, 32);
  b.writeBigUInt64LE(stamp.dev, 40);
  tag.copy(b, 48);
  for (let i = 0; i < ids.count; i++) {
    ids.ids.copy(b, HEADER + i * ENTRY, i * 16, i * 16 + 16);
    b.writeUInt32LE(ids.blocks[i], HEADER + i * ENTRY + 16);
  }
  return b;
}

/** Parse a cache file; undefined unless it is well formed and for this seed state and key. */
export function parseSeedIds(b: Buffer, stamp: SeedStamp, tag: Buffer): SeedIds | undefined {
  if (b.length < HEADER || !b.subarray(0, 8).equals(MAGIC) || b.readUInt32LE(8) !== 1) return undefined;
  const count = b.readUInt32LE(12);
  if (b.length !== HEADER + count * ENTRY) return undefined;
  if (b.readBigUInt64LE(16) !== BigInt(stamp.size) || b.readBigUInt64LE(24) !== stamp.mtimeNs || b.readBigUInt64LE(32) !== stamp.ino || b.readBigUInt64LE(40) !== stamp.dev) return undefined;
  if (!b.subarray(48, 64).equals(tag)) return undefined;
  const ids = Buffer.alloc(count * 16);
  const blocks = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    b.copy(ids, i * 16, HEADER + i * ENTRY, HEADER + i * ENTRY + 16);
    blocks[i] = b.readUInt32LE(HEADER + i * ENTRY + 16);
  }
  return { ids, blocks, count };
}
