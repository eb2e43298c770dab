/**
 * The block-id cache of a disk seed: which keyed id each non-zero 4 KiB block of the seed has, so
 * a seed is hashed once and read again only when it changes. Holds keyed ids only (BLAKE2b-128
 * under the repository id key): nothing of the guest data, and nothing a reader without the key
 * can match against known content.
 *
 * Layout (little-endian), one file per seed under $XDG_CACHE_HOME/medv/seeds (else
 * ~/.cache/medv/seeds), named by a hash of the seed's real path:
 *   0   8  magic "MEDVSIDS"
 *   8   4  format (1)
 *  12   4  entry count n
 *  16   8  seed size in bytes
 *  24   8  seed mtime in ns
 *  32   8  seed inode
 *  40   8  seed device
 *  48  16  key tag: BLAKE2b-128 of "medv seed cache" keyed with the id key (ids of another key never match)
 *  64  n x 20  entries: id (16), u32 block number (offset / 4096)
 * A file that is not exactly this (or of another seed state or key) is ignored and rebuilt.
 */
import * as fs from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { sodium } from '../crypto/sodium.js';

const MAGIC = Buffer.from('MEDVSIDS', 'latin1');
const HEADER = 64;
const ENTRY = 20;
/** 64 GiB of distinct non-zero blocks: a cache file larger than that is not ours. */
const MAX_ENTRIES = 2 ** 24;

export interface SeedStamp { size: number; mtimeNs: bigint; ino: bigint; dev: bigint }

export function seedStamp(path: string): SeedStamp {
  const st = fs.statSync(path, { bigint: true });
  return { size: Number(st.size), mtimeNs: st.mtimeNs, ino: st.ino, dev: st.dev };
}

export function keyTag(idKey: Buffer): Buffer {
  const out = Buffer.alloc(16);
  sodium.crypto_generichash(out, Buffer.from('medv seed cache'), idKey);
  return out;
}

export function defaultCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME && process.env.XDG_CACHE_HOME.startsWith('/') ? process.env.XDG_CACHE_HOME : join(homedir(), '.cache');
  return join(base, 'medv', 'seeds');
}

export function cachePathFor(cacheDir: string, seedPath: string): string {
  let real = seedPath;
  try { real = fs.realpathSync(seedPath); } catch { /* the stamp check fails later anyway */ }
  return join(cacheDir, `${createHash('sha256').update(real).digest('hex').slice(0, 32)}.ids`);
}

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

export function readSeedCache(path: string, stamp: SeedStamp, tag: Buffer): SeedIds | undefined {
  try {
    const st = fs.statSync(path);
    if (!st.isFile() || st.size > HEADER + ENTRY * MAX_ENTRIES) return undefined;
    return parseSeedIds(fs.readFileSync(path), stamp, tag);
  } catch {
    return undefined;
  }
}

/** Write atomically (temporary, rename); a cache that cannot be written is only a slower next run. */
export function writeSeedCache(path: string, stamp: SeedStamp, tag: Buffer, ids: SeedIds): void {
  try {
    fs.mkdirSync(join(path, '..'), { recursive: true, mode: 0o700 });
    const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
    fs.writeFileSync(tmp, serializeSeedIds(stamp, tag, ids), { mode: 0o600 });
    fs.renameSync(tmp, path);
  } catch {
    // ignored: see above
  }
}
