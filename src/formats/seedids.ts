/**
 * The block-id cache file of a disk seed (src/transfer/seedcache.ts does the I/O): keyed ids of
 * every non-zero 4 KiB block of a seed, with the seed's identity and content generation and the
 * key they are valid for. Pure parse/serialize, every length checked before use.
 *
 * Layout (little-endian):
 *   0   8  magic "MEDVSIDS"
 *   8   4  format (2)
 *  12   4  entry count n
 *  16   8  seed size in bytes           \
 *  24   8  seed mtime in ns              | content generation: any write changes mtime, and
 *  32   8  seed ctime in ns              | ctime cannot be set back (a restored mtime changes it)
 *  40   8  seed inode                    \ identity
 *  48   8  seed device                   /
 *  56  16  key tag: BLAKE2b-128 of "medv seed cache" keyed with the id key
 *  72  n x 20  entries: id (16), u32 block number (offset / 4096)
 * parseSeedIds returns undefined for anything else (or another seed identity, generation or key).
 */

const MAGIC = Buffer.from('MEDVSIDS', 'latin1');
const FORMAT = 2;
const HEADER = 72;
const ENTRY = 20;
/** 64 GiB of distinct non-zero blocks: a cache file larger than that is not ours. */
export const SEED_IDS_MAX_ENTRIES = 2 ** 24;
export const SEED_IDS_HEADER = HEADER;
export const SEED_IDS_ENTRY = ENTRY;

/** What a cache is valid for: the seed file's identity (dev, ino) and content generation (size, mtime, ctime). */
export interface SeedStamp { size: number; mtimeNs: bigint; ctimeNs: bigint; ino: bigint; dev: bigint }

export interface SeedIds { ids: Buffer; blocks: Uint32Array; count: number }

export function sameStamp(a: SeedStamp, b: SeedStamp): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.ino === b.ino && a.dev === b.dev;
}

export function serializeSeedIds(stamp: SeedStamp, tag: Buffer, ids: SeedIds): Buffer {
  const b = Buffer.alloc(HEADER + ids.count * ENTRY);
  MAGIC.copy(b, 0);
  b.writeUInt32LE(FORMAT, 8);
  b.writeUInt32LE(ids.count, 12);
  b.writeBigUInt64LE(BigInt(stamp.size), 16);
  b.writeBigUInt64LE(stamp.mtimeNs, 24);
  b.writeBigUInt64LE(stamp.ctimeNs, 32);
  b.writeBigUInt64LE(stamp.ino, 40);
  b.writeBigUInt64LE(stamp.dev, 48);
  tag.copy(b, 56);
  for (let i = 0; i < ids.count; i++) {
    ids.ids.copy(b, HEADER + i * ENTRY, i * 16, i * 16 + 16);
    b.writeUInt32LE(ids.blocks[i], HEADER + i * ENTRY + 16);
  }
  return b;
}

/** Parse a cache file; undefined unless it is well formed and for this seed state and key. */
export function parseSeedIds(b: Buffer, stamp: SeedStamp, tag: Buffer): SeedIds | undefined {
  if (b.length < HEADER || !b.subarray(0, 8).equals(MAGIC) || b.readUInt32LE(8) !== FORMAT) return undefined;
  const count = b.readUInt32LE(12);
  if (count > SEED_IDS_MAX_ENTRIES || b.length !== HEADER + count * ENTRY) return undefined;
  const found: SeedStamp = {
    size: Number(b.readBigUInt64LE(16)), mtimeNs: b.readBigUInt64LE(24), ctimeNs: b.readBigUInt64LE(32), ino: b.readBigUInt64LE(40), dev: b.readBigUInt64LE(48),
  };
  if (!sameStamp(found, stamp) || !b.subarray(56, 72).equals(tag)) return undefined;
  const ids = Buffer.alloc(count * 16);
  const blocks = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    b.copy(ids, i * 16, HEADER + i * ENTRY, HEADER + i * ENTRY + 16);
    blocks[i] = b.readUInt32LE(HEADER + i * ENTRY + 16);
  }
  return { ids, blocks, count };
}
