/**
 * Local seeds: where a fetch finds blocks without the network.
 *
 * - A disk (EVHD, VHD, raw: an earlier version, another image): the keyed BLAKE2b-128 id of each
 *   of its non-zero 4 KiB blocks (repository id key). The ids are cached (./seedcache.ts, by the
 *   disk's identity and content generation), so a disk is hashed at most once, and a disk this
 *   tool fetched never (its ids come from its index when it is published). A block of the new
 *   image that the disk holds at the same place (the usual case: an earlier version of the same
 *   disk) is found by position (`idAt`); any other by id (`locate`). The index the disk was
 *   fetched from (`DISK.index`) offers its run records to the index fetch.
 * - A folder of packs (PackedImages, PrestagedImages) or one `.ckm.index`: indexes of the same
 *   image, signature checked, give blocks by id without hashing; their records serve the index
 *   fetch as well.
 *
 * A seed that cannot be opened, read or trusted is reported and skipped. Nothing read from a seed
 * is used before it was hashed again and matched its id (`read`, `readChecked`): a stale or forged
 * id cache, a disk changed behind our back, a damaged pack only make the fetch take those blocks
 * from the network.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import type { KekSource } from '../crypto/index.js';
import { sodium } from '../core/sodium.js';
import { MedvError } from '../core/errors.js';
import { readInto } from '../block/emulate.js';
import { CKM_BLOCK_SIZE, CKM_ID_BYTES, type RunEntry } from '../formats/ckm/index.js';
import { openDisk, type OpenedDisk } from '../layers/open.js';
import { BlockCodec } from '../pack/block.js';
import { IndexFile } from '../pack/indexfile.js';
import type { ImageKeys } from '../pack/keys.js';
import { PackSet } from '../pack/read.js';
import { type SeedIds, keyTag, readSeedCache, seedStamp, writeSeedCache } from './seedcache.js';
import { HostDataSeed } from './hostseeds.js';

export interface SeedReport {
  path: string;
  /** host: a folder of host data (./hostseeds.ts). */
  kind: 'disk' | 'packs' | 'host';
  /** Blocks this fetch took from the seed. */
  blocks: number;
  /** disk seeds: ids came from the cache (no hashing). */
  cached?: boolean;
  /** Why the seed was skipped. */
  error?: string;
  /** packs: versions of the packs its index refers to that are not in its folder (their blocks are fetched). */
  missingPacks?: number[];
  /** host: files whose ids are known, of them hashed now and taken from the cache; entries skipped (links, other file systems, not regular files). */
  files?: number;
  hashedFiles?: number;
  cachedFiles?: number;
  skipped?: number;
  /** host: the walk stopped at one of its bounds (which). */
  limited?: string;
}

/** Where a block can be read locally. */
export type SeedLocation =
  | { kind: 'disk'; seed: DiskSeed; block: number }
  | { kind: 'pack'; seed: PackSeed; entry: RunEntry }
  | { kind: 'host'; seed: HostDataSeed; file: number; block: number };

/** The id map key of a block id. */
export const idKey = (id: Buffer): string => id.toString('latin1');

export class DiskSeed {
  private opened?: OpenedDisk;
  /** Seed block number -> index in ids (or -1): the positional lookup. */
  private byBlock = new Int32Array(0);
  constructor(readonly path: string, private readonly kek: () => KekSource, readonly report: SeedReport, private ids: SeedIds = { ids: Buffer.alloc(0), blocks: new Uint32Array(0), count: 0 }) {}

  async device(): Promise<OpenedDisk['device']> {
    // read once, in order: not mapped (a mapping's touched pages would count in our RSS, up to the disk's size)
    this.opened ??= await openDisk(this.path, { readOnly: true, kek: this.kek, map: false });
    return this.opened.device;
  }

  setIds(ids: SeedIds, size: number): void {
    this.ids = ids;
    this.byBlock = new Int32Array(Math.ceil(size / CKM_BLOCK_SIZE)).fill(-1);
    for (let i = 0; i < ids.count; i++) if (ids.blocks[i] < this.byBlock.length) this.byBlock[ids.blocks[i]] = i;
  }

  get count(): number { return this.ids.count; }
  /** Id of the seed's block number `i` of its id list (a view). */
  idOf(i: number): Buffer { return this.ids.ids.subarray(i * CKM_ID_BYTES, (i + 1) * CKM_ID_BYTES); }
  blockOf(i: number): number { return this.ids.blocks[i]; }

  /** The id the seed has at block `block` (a view), or undefined for a zero block or past its end. */
  idAt(block: number): Buffer | undefined {
    const i = block < this.byBlock.length ? this.byBlock[block] : -1;
    return i >= 0 ? this.idOf(i) : undefined;
  }

  /** `buf.length` bytes from block `block` on (zero-padded past the end of the disk). */
  async readInto(buf: Buffer, block: number): Promise<void> {
    const dev = await this.device();
    const off = block * CKM_BLOCK_SIZE;
    const have = Math.max(0, Math.min(buf.length, dev.size - off));
    if (have > 0) await readInto(dev, buf.subarray(0, have), off);
    if (have < buf.length) buf.fill(0, have);
  }

  async close(): Promise<void> {
    await this.opened?.device.close().catch(() => undefined);
    this.opened = undefined;
  }
}

export class PackSeed {
  constructor(readonly indexPath: string, readonly index: IndexFile, readonly packs: PackSet, private readonly codec: BlockCodec, readonly report: SeedReport) {}

  /** The plaintext of `entry`: authenticated, decompressed, checked against its id (EBADBLOCK otherwise). */
  async read(entry: RunEntry): Promise<Buffer> {
    const decode = async (e: { id: Buffer; kind: RunEntry['kind']; place: RunEntry['place'] }, base?: { id: Buffer; data: Buffer }) =>
      this.codec.decode(await this.packs.read(e.place), e.kind, e.id, this.packs.salt(e.place.pack), { file: this.packs.path(e.place.pack), offset: e.place.offset }, base);
    let base: { id: Buffer; data: Buffer } | undefined;
    if (entry.kind === 'delta') base = { id: entry.base!.id, data: await decode(entry.base!) };
    return decode(entry, base);
  }

  async close(): Promise<void> {
    await this.index.close();
    await this.packs.close();
  }
}

const isZero = (b: Buffer, at: number): boolean => {
  for (let i = at; i < at + CKM_BLOCK_SIZE; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  return true;
};

/** The keyed ids of every non-zero block of a disk (read once, 1 MiB at a time). */
export async function hashDisk(seed: DiskSeed, key: Buffer): Promise<SeedIds> {
  const dev = await seed.device();
  return hashBlocks(dev.size, (buf, block) => seed.readInto(buf, block), key);
}

/**
 * The keyed ids of every non-zero 4 KiB block of `size` bytes read with `readInto` (which fills
 * its buffer from block `block` on, zero-padded past the end), 1 MiB at a time.
 */
export async function hashBlocks(size: number, readInto: (buf: Buffer, block: number) => Promise<void>, key: Buffer): Promise<SeedIds> {
  const blocks = Math.ceil(size / CKM_BLOCK_SIZE);
  let ids = Buffer.alloc(Math.min(blocks, 1 << 16) * CKM_ID_BYTES);
  let nums = new Uint32Array(ids.length / CKM_ID_BYTES);
  let count = 0;
  const CHUNK = 256;
  const data = Buffer.allocUnsafeSlow(CHUNK * CKM_BLOCK_SIZE);
  for (let b = 0; b < blocks; b += CHUNK) {
    const n = Math.min(CHUNK, blocks - b);
    await readInto(data.subarray(0, n * CKM_BLOCK_SIZE), b);
    for (let i = 0; i < n; i++) {
      if (isZero(data, i * CKM_BLOCK_SIZE)) continue;
      if (count === nums.length) {
        const bigger = Buffer.alloc(ids.length * 2);
        ids.copy(bigger);
        ids = bigger;
        const nn = new Uint32Array(nums.length * 2);
        nn.set(nums);
        nums = nn;
      }
      sodium.crypto_generichash(ids.subarray(count * CKM_ID_BYTES, (count + 1) * CKM_ID_BYTES), data.subarray(i * CKM_BLOCK_SIZE, (i + 1) * CKM_BLOCK_SIZE), key);
      nums[count++] = b + i;
    }
  }
  data.fill(0);
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
  readonly disks: DiskSeed[] = [];
  private readonly packSeeds: PackSeed[] = [];
  private readonly hostSeeds: HostDataSeed[] = [];
  /** id -> where to read it (filled by locate, for the blocks not found by position). */
  readonly found = new Map<string, SeedLocation>();

  constructor(private readonly opts: SeedOptions) {}

  /** Open the seed at `path` (a disk, a folder of packs, or an index): its ids, without reading any block yet. */
  async add(path: string): Promise<void> {
    let st: fs.Stats;
    try { st = fs.statSync(path); } catch (e) { this.reports.push({ path, kind: 'disk', blocks: 0, error: (e as Error).message }); return; }
    if (st.isDirectory()) {
      const idx = localIndexes([path], this.opts.name);
      if (idx.length === 0) this.reports.push({ path, kind: 'packs', blocks: 0, error: `no ${this.opts.name}_<N>.ckm.index in this folder` });
      for (const i of idx) await this.addPacks(i);
    } else if (path.endsWith('.ckm.index')) await this.addPacks(path);
    else await this.addDisk(path);
  }

  /** A folder of host data (./hostseeds.ts): its regular files' ids, without reading any block yet. */
  async addHostData(path: string): Promise<void> {
    const report: SeedReport = { path, kind: 'host', blocks: 0 };
    try {
      this.hostSeeds.push(await HostDataSeed.scan(path, { idKey: this.opts.keys.idKey, cacheDir: this.opts.cacheDir, report }));
    } catch (e) {
      report.error = e instanceof Error ? e.message : String(e);
    }
    this.reports.push(report);
  }

  private async addDisk(path: string): Promise<void> {
    const report: SeedReport = { path, kind: 'disk', blocks: 0 };
    const seed = new DiskSeed(path, this.opts.kek, report);
    try {
      const stamp = seedStamp(path);
      const tag = keyTag(this.opts.keys.idKey);
      let ids = readSeedCache(this.opts.cacheDir, stamp, tag);
      report.cached = ids !== undefined;
      if (!ids) {
        ids = await hashDisk(seed, this.opts.keys.idKey);
        // kept only when the seed did not change while it was read
        writeSeedCache(this.opts.cacheDir, path, stamp, tag, ids);
      }
      seed.setIds(ids, stamp.size);
      this.disks.push(seed);
    } catch (e) {
      await seed.close();
      report.error = e instanceof Error ? e.message : String(e);
    }
    this.reports.push(report);
  }

  private async addPacks(indexPath: string): Promise<void> {
    const report: SeedReport = { path: indexPath, kind: 'packs', blocks: 0 };
    let index: IndexFile | undefined;
    let packs: PackSet | undefined;
    try {
      index = await IndexFile.open(indexPath);
      await index.verify(this.opts.keys.trusted);
      const h = index.header;
      if (!h.imageId.equals(this.opts.keys.imageId)) throw new MedvError('EBADKEY', 'an index of another image (no content key for it)');
      // a folder pre-staged with the newest version alone: its own pack serves, the earlier ones it refers to are fetched
      packs = await PackSet.open(join(indexPath, '..'), h.name, h.imageId, h.packs, { allowMissing: true });
      if (packs.missing.length > 0) report.missingPacks = packs.missing;
      this.packSeeds.push(new PackSeed(indexPath, index, packs, new BlockCodec(this.opts.keys), report));
      index = undefined;
      packs = undefined;
    } catch (e) {
      report.error = e instanceof Error ? e.message : String(e);
    } finally {
      await index?.close();
      await packs?.close();
    }
    this.reports.push(report);
  }

  /**
   * Find every id of `wanted` anywhere in the seeds (disk seeds by their ids, pack seeds by their
   * records): `found` says where. One pass over each seed's ids.
   */
  async locate(wanted: Set<string>): Promise<void> {
    if (wanted.size === 0) return;
    for (const d of this.disks) {
      for (let i = 0; i < d.count; i++) {
        const k = d.idOf(i).toString('latin1');
        if (wanted.has(k) && !this.found.has(k)) this.found.set(k, { kind: 'disk', seed: d, block: d.blockOf(i) });
      }
    }
    for (const h of this.hostSeeds) {
      h.files.forEach((f, file) => {
        for (let i = 0; i < f.ids.count; i++) {
          const k = f.ids.ids.toString('latin1', i * CKM_ID_BYTES, (i + 1) * CKM_ID_BYTES);
          if (wanted.has(k) && !this.found.has(k)) this.found.set(k, { kind: 'host', seed: h, file, block: f.ids.blocks[i] });
        }
      });
    }
    for (const p of this.packSeeds) {
      for await (const { record } of p.index.runs()) {
        for (const e of record.entries) {
          if (!p.packs.has(e.place.pack) || (e.base && !p.packs.has(e.base.place.pack))) continue;
          const k = idKey(e.id);
          if (wanted.has(k) && !this.found.has(k)) this.found.set(k, { kind: 'pack', seed: p, entry: e });
        }
      }
    }
  }

  /** Plaintext of the block with id `k` from a seed, or undefined when the seed fails or the block does not match its id. */
  async read(k: string, id: Buffer): Promise<Buffer | undefined> {
    const loc = this.found.get(k);
    if (!loc) return undefined;
    try {
      let data: Buffer;
      if (loc.kind === 'disk') {
        data = Buffer.allocUnsafe(CKM_BLOCK_SIZE);
        await loc.seed.readInto(data, loc.block);
      } else if (loc.kind === 'host') data = await loc.seed.read(loc.file, loc.block);
      else data = await loc.seed.read(loc.entry);
      const check = Buffer.alloc(CKM_ID_BYTES);
      sodium.crypto_generichash(check, data, this.opts.keys.idKey);
      if (check.equals(id)) {
        loc.seed.report.blocks++;
        return data;
      }
    } catch {
      // falls back to the network
    }
    this.found.delete(k);
    return undefined;
  }

  /**
   * Blocks of disk seed `seed` from block `block` on into `buf`, in one read, checked: each member
   * (block `i` of the range, wanted with id `id`) is kept when it matches its id and zeroed when it
   * does not; every other block of `buf` is zeroed, so nothing unchecked leaves this function.
   * Returns which members matched (none when the seed cannot be read).
   */
  async readChecked(seed: DiskSeed, block: number, buf: Buffer, members: ReadonlyArray<{ i: number; id: Buffer }>): Promise<boolean[]> {
    const ok = members.map(() => false);
    try {
      await seed.readInto(buf, block);
    } catch {
      buf.fill(0);
      return ok;
    }
    const check = Buffer.alloc(CKM_ID_BYTES);
    let next = 0;
    members.forEach((m, j) => {
      if (m.i > next) buf.fill(0, next * CKM_BLOCK_SIZE, m.i * CKM_BLOCK_SIZE);
      const b = buf.subarray(m.i * CKM_BLOCK_SIZE, (m.i + 1) * CKM_BLOCK_SIZE);
      sodium.crypto_generichash(check, b, this.opts.keys.idKey);
      if (check.equals(m.id)) ok[j] = true;
      else b.fill(0);
      next = m.i + 1;
    });
    buf.fill(0, next * CKM_BLOCK_SIZE);
    seed.report.blocks += ok.filter((x) => x).length;
    return ok;
  }

  async close(): Promise<void> {
    for (const d of this.disks) await d.close();
    for (const p of this.packSeeds) await p.close();
    for (const h of this.hostSeeds) h.close();
  }
}
