/**
 * Local seeds: where a fetch finds blocks without the network.
 *
 * - A disk (EVHD, VHD, raw: an earlier version, another image): hashed on the 4 KiB grid with
 *   keyed BLAKE2b-128 ids (repository id key); the ids are cached (./seedcache.ts) and the disk
 *   is hashed again only when its size, mtime or inode change. The index it was fetched from
 *   (`DISK.index`, written by fetch) offers its run records to the index fetch.
 * - A folder of packs (PackedImages, PrestagedImages) or one `.ckm.index`: indexes of the same
 *   image, signature checked, give blocks by id without hashing; their records serve the index
 *   fetch as well.
 *
 * A seed that cannot be opened, read or trusted is reported and skipped; every block taken from a
 * seed is checked against its id by the caller, and one that does not match is fetched instead.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import type { KekSource } from '../crypto/index.js';
import { sodium } from '../core/sodium.js';
import { MedvError } from '../core/errors.js';
import { CKM_BLOCK_SIZE, CKM_ID_BYTES, type RunEntry } from '../formats/ckm/index.js';
import { openDisk, type OpenedDisk } from '../layers/open.js';
import { BlockCodec } from '../pack/block.js';
import { IndexFile } from '../pack/indexfile.js';
import type { ImageKeys } from '../pack/keys.js';
import { PackSet } from '../pack/read.js';
import { type SeedIds, cachePathFor, keyTag, readSeedCache, seedStamp, writeSeedCache } from './seedcache.js';

export interface SeedReport {
  path: string;
  kind: 'disk' | 'packs';
  /** Blocks this fetch can take from the seed. */
  blocks: number;
  /** disk seeds: ids came from the cache (no hashing). */
  cached?: boolean;
  /** Why the seed was skipped. */
  error?: string;
}

/** Where a block can be read locally. */
export type SeedLocation =
  | { kind: 'disk'; seed: DiskSeed; block: number }
  | { kind: 'pack'; seed: PackSeed; entry: RunEntry };

/** The id map key of a block id. */
export const idKey = (id: Buffer): string => id.toString('latin1');

export class DiskSeed {
  private opened?: OpenedDisk;
  constructor(readonly path: string, private readonly kek: () => KekSource) {}

  async device(): Promise<OpenedDisk['device']> {
    this.opened ??= await openDisk(this.path, { readOnly: true, kek: this.kek });
    return this.opened.device;
  }

  /** `count` blocks from block `block` on (zero-padded past the end of the disk). */
  async read(block: number, count: number): Promise<Buffer> {
    const dev = await this.device();
    const off = block * CKM_BLOCK_SIZE;
    const want = count * CKM_BLOCK_SIZE;
    if (off >= dev.size) return Buffer.alloc(want);
    const data = await dev.read(off, Math.min(want, dev.size - off));
    return data.length === want ? data : Buffer.concat([data, Buffer.alloc(want - data.length)]);
  }

  async close(): Promise<void> {
    await this.opened?.device.close().catch(() => undefined);
    this.opened = undefined;
  }
}

export class PackSeed {
  constructor(readonly indexPath: string, readonly packs: PackSet, private readonly codec: BlockCodec) {}

  /** The plaintext of `entry`: authenticated, decompressed, checked against its id (EBADBLOCK otherwise). */
  async read(entry: RunEntry): Promise<Buffer> {
    const decode = async (e: { id: Buffer; kind: RunEntry['kind']; place: RunEntry['place'] }, base?: { id: Buffer; data: Buffer }) =>
      this.codec.decode(await this.packs.read(e.place), e.kind, e.id, this.packs.salt(e.place.pack), { file: this.packs.path(e.place.pack), offset: e.place.offset }, base);
    let base: { id: Buffer; data: Buffer } | undefined;
    if (entry.kind === 'delta') base = { id: entry.base!.id, data: await decode(entry.base!) };
    return decode(entry, base);
  }

  async close(): Promise<void> { await this.packs.close(); }
}

const isZero = (b: Buffer, at: number): boolean => {
  for (let i = at; i < at + CKM_BLOCK_SIZE; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  return true;
};

/** The keyed ids of every non-zero block of a disk (read once, 1 MiB at a time). */
export async function hashDisk(seed: DiskSeed, key: Buffer): Promise<SeedIds> {
  const dev = await seed.device();
  const blocks = Math.ceil(dev.size / CKM_BLOCK_SIZE);
  let ids = Buffer.alloc(Math.min(blocks, 1 << 16) * CKM_ID_BYTES);
  let nums = new Uint32Array(ids.length / CKM_ID_BYTES);
  let count = 0;
  const CHUNK = 256;
  const out = Buffer.alloc(CKM_ID_BYTES);
  for (let b = 0; b < blocks; b += CHUNK) {
    const n = Math.min(CHUNK, blocks - b);
    const data = await seed.read(b, n);
    for (let i = 0; i < n; i++) {
      if (isZero(data, i * CKM_BLOCK_SIZE)) continue;
      sodium.crypto_generichash(out, data.subarray(i * CKM_BLOCK_SIZE, (i + 1) * CKM_BLOCK_SIZE), key);
      if (count === nums.length) {
        const bigger = Buffer.alloc(ids.length * 2);
        ids.copy(bigger);
        ids = bigger;
        const nn = new Uint32Array(nums.length * 2);
        nn.set(nums);
        nums = nn;
      }
      out.copy(ids, count * CKM_ID_BYTES);
      nums[count++] = b + i;
    }
  }
  return { ids, blocks: nums, count };
}

export interface SeedOptions {
  keys: ImageKeys;
  kek: () => KekSource;
  cacheDir: string;
  /** Image name: pack folders are searched for `<name>_<N>.ckm.index`. */
  name: string;
}

/** A pack-folder seed's indexes of image `name`, and a disk seed's `.index`: candidates for reusing run records. */
export function localIndexes(paths: string[], name: string): string[] {
  const out: string[] = [];
  for (const p of paths) {
    try {
      const st = fs.statSync(p);
      if (st.isDirectory()) {
        for (const n of fs.readdirSync(p).sort()) if (n.startsWith(`${name}_`) && n.endsWith('.ckm.index')) out.push(join(p, n));
      } else if (p.endsWith('.ckm.index')) out.push(p);
      else if (fs.existsSync(`${p}.index`)) out.push(`${p}.index`);
    } catch {
      // reported when the seed is opened
    }
  }
  return out;
}

export class SeedSet {
  readonly reports: SeedReport[] = [];
  private readonly disks: DiskSeed[] = [];
  private readonly packSeeds: PackSeed[] = [];
  /** id -> where to read it. */
  readonly found = new Map<string, SeedLocation>();

  constructor(private readonly opts: SeedOptions) {}

  /** Look for every id in `wanted` in the seed at `path` (a disk, a folder of packs, or an index). */
  async add(path: string, wanted: Set<string>): Promise<void> {
    let st: fs.Stats;
    try { st = fs.statSync(path); } catch (e) { this.reports.push({ path, kind: 'disk', blocks: 0, error: (e as Error).message }); return; }
    if (st.isDirectory()) {
      const idx = localIndexes([path], this.opts.name);
      if (idx.length === 0) this.reports.push({ path, kind: 'packs', blocks: 0, error: `no ${this.opts.name}_<N>.ckm.index in this folder` });
      for (const i of idx) await this.addPacks(i, wanted);
    } else if (path.endsWith('.ckm.index')) await this.addPacks(path, wanted);
    else await this.addDisk(path, wanted);
  }

  private async addDisk(path: string, wanted: Set<string>): Promise<void> {
    const seed = new DiskSeed(path, this.opts.kek);
    const report: SeedReport = { path, kind: 'disk', blocks: 0 };
    try {
      const stamp = seedStamp(path);
      const tag = keyTag(this.opts.keys.idKey);
      const cacheFile = cachePathFor(this.opts.cacheDir, path);
      let ids = readSeedCache(cacheFile, stamp, tag);
      report.cached = ids !== undefined;
      if (!ids) {
        ids = await hashDisk(seed, this.opts.keys.idKey);
        // only when the seed did not change while it was read
        const after = seedStamp(path);
        if (after.size === stamp.size && after.mtimeNs === stamp.mtimeNs && after.ino === stamp.ino) writeSeedCache(cacheFile, stamp, tag, ids);
      }
      for (let i = 0; i < ids.count; i++) {
        const k = ids.ids.toString('latin1', i * CKM_ID_BYTES, (i + 1) * CKM_ID_BYTES);
        if (wanted.has(k) && !this.found.has(k)) {
          this.found.set(k, { kind: 'disk', seed, block: ids.blocks[i] });
          report.blocks++;
        }
      }
      this.disks.push(seed);
    } catch (e) {
      await seed.close();
      report.error = e instanceof Error ? e.message : String(e);
    }
    this.reports.push(report);
  }

  private async addPacks(indexPath: string, wanted: Set<string>): Promise<void> {
    const report: SeedReport = { path: indexPath, kind: 'packs', blocks: 0 };
    let index: IndexFile | undefined;
    let packs: PackSet | undefined;
    try {
      index = await IndexFile.open(indexPath);
      await index.verify(this.opts.keys.trusted);
      const h = index.header;
      if (!h.imageId.equals(this.opts.keys.imageId)) throw new MedvError('EBADKEY', 'an index of another image (no content key for it)');
      packs = await PackSet.open(join(indexPath, '..'), h.name, h.imageId, h.packs);
      const seed = new PackSeed(indexPath, packs, new BlockCodec(this.opts.keys));
      let n = 0;
      for await (const { record } of index.runs()) {
        for (const e of record.entries) {
          const k = idKey(e.id);
          if (wanted.has(k) && !this.found.has(k)) {
            this.found.set(k, { kind: 'pack', seed, entry: e });
            n++;
          }
        }
      }
      report.blocks = n;
      this.packSeeds.push(seed);
      packs = undefined;
    } catch (e) {
      report.error = e instanceof Error ? e.message : String(e);
    } finally {
      await index?.close();
      await packs?.close();
    }
    this.reports.push(report);
  }

  /** Plaintext of the block with id `k` from a seed, or undefined when the seed fails or the block does not match its id. */
  async read(k: string, id: Buffer): Promise<Buffer | undefined> {
    const loc = this.found.get(k);
    if (!loc) return undefined;
    try {
      const data = loc.kind === 'disk' ? await loc.seed.read(loc.block, 1) : await loc.seed.read(loc.entry);
      const check = Buffer.alloc(CKM_ID_BYTES);
      sodium.crypto_generichash(check, data, this.opts.keys.idKey);
      if (check.equals(id)) return data;
    } catch {
      // falls back to the network
    }
    this.found.delete(k);
    return undefined;
  }

  /**
   * Plaintexts of consecutive blocks of one disk seed (as `read`, one read for all): each entry is
   * undefined when it does not match its id (and is forgotten, so it is fetched instead).
   */
  async readSpan(items: Array<{ k: string; id: Buffer }>): Promise<Array<Buffer | undefined>> {
    const first = this.found.get(items[0].k);
    if (first?.kind !== 'disk') return Promise.all(items.map((x) => this.read(x.k, x.id)));
    let data: Buffer;
    try {
      data = await first.seed.read(first.block, items.length);
    } catch {
      return Promise.all(items.map((x) => this.read(x.k, x.id)));
    }
    const check = Buffer.alloc(CKM_ID_BYTES);
    return items.map((x, i) => {
      const b = data.subarray(i * CKM_BLOCK_SIZE, (i + 1) * CKM_BLOCK_SIZE);
      sodium.crypto_generichash(check, b, this.opts.keys.idKey);
      if (check.equals(x.id)) return b;
      this.found.delete(x.k);
      return undefined;
    });
  }

  async close(): Promise<void> {
    for (const d of this.disks) await d.close();
    for (const p of this.packSeeds) await p.close();
  }
}
