/**
 * The block-id cache of a disk seed: which keyed id each non-zero 4 KiB block of the seed has, so
 * a seed is hashed once and read again only when it changes. Holds keyed ids only (BLAKE2b-128
 * under the repository id key): nothing of the guest data, and nothing a reader without the key
 * can match against known content.
 *
 * One file per seed under the cache folder (src/core/paths.ts seedCacheDir), named by a hash
 * of the seed's real path; its layout is src/formats/seedids.ts. A file that is not exactly that,
 * or is for another seed state (size, mtime, inode, device) or key, is ignored and rebuilt.
 */
import * as fs from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { sodium } from '../core/sodium.js';
import { SEED_IDS_ENTRY, SEED_IDS_HEADER, SEED_IDS_MAX_ENTRIES, type SeedIds, type SeedStamp, parseSeedIds, serializeSeedIds } from '../formats/seedids.js';

export type { SeedIds, SeedStamp };

export function seedStamp(path: string): SeedStamp {
  const st = fs.statSync(path, { bigint: true });
  return { size: Number(st.size), mtimeNs: st.mtimeNs, ino: st.ino, dev: st.dev };
}

export function keyTag(idKey: Buffer): Buffer {
  const out = Buffer.alloc(16);
  sodium.crypto_generichash(out, Buffer.from('medv seed cache'), idKey);
  return out;
}

export function cachePathFor(cacheDir: string, seedPath: string): string {
  let real = seedPath;
  try { real = fs.realpathSync(seedPath); } catch { /* the stamp check fails later anyway */ }
  return join(cacheDir, `${createHash('sha256').update(real).digest('hex').slice(0, 32)}.ids`);
}

export function readSeedCache(path: string, stamp: SeedStamp, tag: Buffer): SeedIds | undefined {
  try {
    const st = fs.statSync(path);
    if (!st.isFile() || st.size > SEED_IDS_HEADER + SEED_IDS_ENTRY * SEED_IDS_MAX_ENTRIES) return undefined;
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
