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
  const st = fs.statSync(path, { bigint: true });
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
