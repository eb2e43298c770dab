/**
 * The block-id cache of a disk seed: which keyed id each non-zero 4 KiB block of the seed has, so
 * a seed is hashed at most once (a disk this tool fetched is never hashed: its ids are written from
 * the index it came from when it is published). Holds keyed ids only (BLAKE2b-128 under the
 * repository id key): nothing of the guest data, and nothing a reader without the key can match
 * against known content.
 *
 * One file per seed under the cache folder (src/core/paths.ts seedCacheDir), named by the
 * seed's identity (device and inode: another file under the same name never takes it); its layout
 * is src/formats/seedids.ts. A file that is not exactly that, or
 * is for another content generation (size, mtime, ctime) or key, is ignored and rebuilt. A stale or
 * forged cache costs only time: every block read from a seed is hashed again before it is used.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { sodium } from '../core/sodium.js';
import { ensurePrivateDir, readBoundedSync, writeFileAtomicSync } from '../core/fsio.js';
import { SEED_IDS_ENTRY, SEED_IDS_HEADER, SEED_IDS_MAX_ENTRIES, type SeedIds, type SeedStamp, parseSeedIds, sameStamp, serializeSeedIds } from '../formats/seedids.js';

export type { SeedIds, SeedStamp };
export { sameStamp };

export function seedStamp(path: string): SeedStamp {
  return stampOf(fs.statSync(path, { bigint: true }));
}

/** The stamp of a file from its stat (an open descriptor's: `fs.fstatSync(fd, { bigint: true })`). */
export function stampOf(st: fs.BigIntStats): SeedStamp {
  return { size: Number(st.size), mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino, dev: st.dev };
}

export function keyTag(idKey: Buffer): Buffer {
  const out = Buffer.alloc(16);
  sodium.crypto_generichash(out, Buffer.from('medv seed cache'), idKey);
  return out;
}

/** The cache file of the seed with this identity. */
export function cachePathFor(cacheDir: string, stamp: SeedStamp): string {
  return join(cacheDir, `${createHash('sha256').update(`${stamp.dev}:${stamp.ino}`).digest('hex').slice(0, 32)}.ids`);
}

export function readSeedCache(cacheDir: string, stamp: SeedStamp, tag: Buffer): SeedIds | undefined {
  try {
    const b = readBoundedSync(cachePathFor(cacheDir, stamp), SEED_IDS_HEADER + SEED_IDS_ENTRY * SEED_IDS_MAX_ENTRIES, 'seed id cache');
    return b && parseSeedIds(b, stamp, tag);
  } catch {
    return undefined;
  }
}

/**
 * Write a seed's ids (write-then-rename: a reader sees the old cache or the new one), when the
 * seed is still in the state `stamp` says. A cache that cannot be written is only a slower next run.
 */
export function writeSeedCache(cacheDir: string, seedPath: string, stamp: SeedStamp, tag: Buffer, ids: SeedIds): boolean {
  try {
    if (ids.count > SEED_IDS_MAX_ENTRIES || !sameStamp(seedStamp(seedPath), stamp)) return false;
    ensurePrivateDir(cacheDir, true);
    writeFileAtomicSync(cachePathFor(cacheDir, stamp), serializeSeedIds(stamp, tag, ids), { mode: 0o600 });
    return true;
  } catch {
    return false;
  }
}

/** What the cache folder may hold: cache files and bytes (the oldest written go first). */
export const SEED_CACHE_MAX_FILES = 16384;
export const SEED_CACHE_MAX_BYTES = 512 * 1024 * 1024;

/**
 * Keep the cache folder within `maxFiles` cache files and `maxBytes`: the oldest written are
 * removed first. Only files named as this module names them (32 hex + `.ids`, regular files) are
 * counted or removed. Returns how many were removed; failures only leave a bigger cache.
 */
export function pruneSeedCache(cacheDir: string, limits: { maxFiles?: number; maxBytes?: number } = {}): number {
  const maxFiles = limits.maxFiles ?? SEED_CACHE_MAX_FILES;
  const maxBytes = limits.maxBytes ?? SEED_CACHE_MAX_BYTES;
  let names: string[];
  try { names = fs.readdirSync(cacheDir).filter((n) => /^[0-9a-f]{32}\.ids$/.test(n)); } catch { return 0; }
  const files: Array<{ path: string; size: number; mtime: number }> = [];
  for (const n of names) {
    try {
      const st = fs.lstatSync(join(cacheDir, n));
      if (st.isFile()) files.push({ path: join(cacheDir, n), size: st.size, mtime: st.mtimeMs });
    } catch { /* gone meanwhile */ }
  }
  let bytes = files.reduce((s, x) => s + x.size, 0);
  let count = files.length;
  let removed = 0;
  for (const x of files.sort((a, b) => a.mtime - b.mtime)) {
    if (count <= maxFiles && bytes <= maxBytes) break;
    try { fs.unlinkSync(x.path); removed++; } catch { /* someone else pruned it */ }
    count--;
    bytes -= x.size;
  }
  return removed;
}
