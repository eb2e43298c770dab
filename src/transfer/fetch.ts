/**
 * fetchImage: a packed image from a repository (http(s) URL or local path of its .ckm.index) into
 * a new, freshly keyed .evhd, taking every block it can from local seeds and the rest with
 * coalesced range requests. Order of trust: index signature (trusted keys) -> run directory ->
 * run records -> each block (AEAD, then its id). Every block is checked against its id just before
 * it is written (a seed's block hashed again, a fetched one decoded), and nothing else is ever
 * written: blocks the image holds as zeros are never written, and a fresh dynamic VHD reads zeros
 * there. So the disk is complete and checked when the last block is written, and it is published
 * then, without reading it back.
 *
 *   1. index header (signature), then the records no local index holds (./remote-index.ts)
 *   2. the partial output of an earlier, interrupted fetch of the same index (./output.ts)
 *   3. seeds: their block ids, from their caches or hashed once (./seeds.ts)
 *   4. one pass over the index: blocks already written are skipped; blocks a disk seed holds at
 *      the same place are copied a VHD block at a time, a few at once; the rest are wanted by id
 *   5. the wanted blocks found elsewhere in a seed, then the rest from the packs: delta bases
 *      first (seed or network), then the blocks (./http.ts)
 *   6. flush, publish (key file, then disk), and the new disk's block ids cached from its index
 *      (the next update that uses it as a seed does not hash it)
 *
 * Memory: the blocks wanted by id of one part of the image (PART_BLOCKS: for an update, the
 * changed blocks), a few windows of 2 MiB, and the repository bytes in flight: at most
 * `inFlightBytes` (./inflight.ts) from the moment a request is sent until the blocks it carried
 * are written. A disk seed is pread, not mapped (./seeds.ts): its pages would otherwise count in
 * the RSS.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { KekSource } from '../crypto/index.js';
import { encPathFor } from '../crypto/index.js';
import { MedvError } from '../core/errors.js';
import { type BlockPlace, CKM_BLOCK_SIZE, CKM_ID_BYTES, CKM_RUN_BLOCKS, CKM_RUN_BYTES, type RunEntry, packFileName } from '../formats/ckm/index.js';
import { BlockCodec } from '../pack/block.js';
import type { IndexFile } from '../pack/indexfile.js';
import { type ImageKeys, loadTrustedKeys, openImageKeys } from '../pack/keys.js';
import { HttpClient, type HttpOptions } from './http.js';
import { MirrorState, MirroredFile, checkMirrorUrls } from './mirrors.js';
import { PartialOutput } from './output.js';
import { MULTI_RANGE, SINGLE_RANGE, planRequests } from './plan.js';
import { fetchIndex, fetchIndexHeader } from './remote-index.js';
import { LocalFile, type RemoteFile, type TransferStats, isUrl, newStats } from './remote.js';
import { type DiskSeed, SeedSet, type SeedReport, idKey, localIndexes } from './seeds.js';
import { type SeedIds, keyTag, seedStamp, writeSeedCache } from './seedcache.js';
import { seedCacheDir } from '../core/paths.js';

export interface FetchImageOptions {
  /** URL or path of `<NAME>_<N>.ckm.index`; the packs are its siblings. */
  source: string;
  /** The new disk: `*.evhd` (its key file beside it). */
  out: string;
  seeds?: string[];
  /** Folders of host data whose regular files are hashed on a 4 KiB grid and used by block id (./hostseeds.ts). */
  hostSeeds?: string[];
  keyDir: string;
  kek: () => KekSource;
  /** Use seeds (TrimTransfer). false: every block from the repository. Default true. */
  trim?: boolean;
  dryRun?: boolean;
  /** Where disk seeds' block ids are cached (default $XDG_CACHE_HOME/medv/seeds). */
  cacheDir?: string;
  http?: HttpOptions;
  /**
   * Repository bytes held at once, from a request's sending until the blocks it carried are
   * decoded and written (default FETCH_IN_FLIGHT_BYTES, 4 MiB): requests wait for room.
   */
  inFlightBytes?: number;
  /**
   * Base URLs of static copies of the packs (./mirrors.ts), tried in order for pack data before
   * the server (the index always comes from `source`); at most 8, http(s), no credentials.
   */
  mirrors?: string[];
  /** How mirrors are asked (default: one retry; a 10 s stall, or under 8 KiB/s after 10 s, moves on to the next source). */
  mirrorHttp?: HttpOptions;
  /**
   * What the caller asked for: the signed header must name exactly this image name, version and
   * image id (32 hex), checked right after its signature and before anything is created, so a
   * rolled-back or swapped index under the expected URL leaves nothing behind (EBADREPLY).
   */
  expect?: { name?: string; version?: number; imageId?: string };
  onProgress?: (done: number, total: number) => void;
  onWarning?: (message: string) => void;
}

export interface FetchImageResult {
  out: string;
  name: string;
  version: number;
  virtualSize: number;
  dryRun: boolean;
  /** Non-zero blocks of the image. */
  blocks: number;
  blocksResumed: number;
  blocksFromSeeds: number;
  blocksFromNetwork: number;
  /** Body bytes received from the repository over HTTP (index included), mirrors included. */
  networkBytes: number;
  /** Of those, the bytes received from mirrors. */
  mirrorBytes: number;
  /** Bytes read from a repository given as a local path. */
  repositoryFileBytes: number;
  /** Plaintext bytes taken from seeds. */
  seedBytes: number;
  requests: number;
  /** The most repository bytes held at once (at most `inFlightBytes`, or one request alone when it is larger). */
  maxInFlightBytes: number;
  indexRecordsReused: number;
  indexRecordsFetched: number;
  /** Run records rebuilt from a signed index delta (`<NAME>_<N>.ckm.index-from-<M>`). */
  indexRecordsFromDelta: number;
  /** The index delta used, or why none was. */
  indexDelta: string;
  /** --dry-run: stored bytes and requests the blocks would need. */
  wouldFetchBytes?: number;
  wouldRequests?: number;
  seeds: SeedReport[];
  seconds: number;
}

interface Need {
  id: Buffer;
  entry: RunEntry;
  /** Disk blocks (offset / 4096) that hold this block. */
  blocks: number[];
}

interface Piece { offset: number; length: number; pack: number; key: string; base: boolean }

/** Blocks of a seed window (one 2 MiB VHD block of the output), and windows copied at the same time. */
const SEED_SPAN = 512;
const SEED_COPIES = 8;
/**
 * A part of the image ends (on a window boundary) once it has this many blocks wanted by id, or
 * this many found in place in a seed (a few bytes each). A block wanted by id costs ~1 KiB of heap
 * until its part is done (its entry, key, piece and request plan); 32,768 of them made a full fetch
 * of the bench's 1 GiB disk peak at 267 MiB (its heap grew to ~100 MiB, ~30 MiB of each part
 * dying at once), 8,192 at 201 to 217 MiB (loaded machine). An update's changed blocks (3,931 in the bench) are one part,
 * so their pieces of a pack are asked for together (few requests from a single-range server).
 */
const PART_BLOCKS = 8192;
const PART_IN_PLACE = 1 << 20;

/** `*.evhd.index` files in the output's folder (at most 16, newest first). */
function indexesBeside(out: string): string[] {
  const dir = dirname(out);
  try {
    return fs.readdirSync(dir).filter((n) => n.endsWith('.evhd.index')).map((n) => join(dir, n))
      .map((p) => ({ p, m: fs.statSync(p).mtimeMs })).sort((a, b) => b.m - a.m).slice(0, 16).map((x) => x.p);
  } catch {
    return [];
  }
}

function checkOut(out: string): void {
  if (!out.toLowerCase().endsWith('.evhd')) throw new MedvError('EINVAL_ARG', `--out must name an .evhd (got ${out})`, { file: out });
  for (const f of [out, encPathFor(out)]) if (fs.existsSync(f)) throw new MedvError('EEXIST', `file exists: ${f}`, { file: f });
  const dir = dirname(out);
  if (!fs.existsSync(dir)) throw new MedvError('ENOENT', `no such folder: ${dir}`, { file: dir });
}

/** A disk seed's blocks that land at the same place in the new disk, within one VHD block. */
interface Window {
  seed: DiskSeed;
  /** First block of the window (the first member). */
  first: number;
  /** Members: block numbers, ascending. */
  members: number[];
}

/** The ids of every non-zero block of an image, with their block numbers, collected as the index is read (a seed id cache). */
class IdCollector implements SeedIds {
  ids = Buffer.alloc(CKM_RUN_BLOCKS * CKM_ID_BYTES);
  blocks = new Uint32Array(CKM_RUN_BLOCKS);
  count = 0;
  add(block: number, id: Buffer): void {
    if (this.count === this.blocks.length) {
      const ids = Buffer.alloc(this.ids.length * 2);
      this.ids.copy(ids);
      this.ids = ids;
      const blocks = new Uint32Array(this.blocks.length * 2);
      blocks.set(this.blocks);
      this.blocks = blocks;
    }
    id.copy(this.ids, this.count * CKM_ID_BYTES);
    this.blocks[this.count++] = block;
  }
}

export async function fetchImage(opts: FetchImageOptions): Promise<FetchImageResult> {
  const started = process.hrtime.bigint();
  const trim = opts.trim ?? true;
  const dryRun = opts.dryRun ?? false;
  checkOut(opts.out);
  const mirrors = checkMirrorUrls(opts.mirrors ?? []);
  const stats = newStats(opts.inFlightBytes);
  const client = new HttpClient(stats, opts.http);
  // the mirrors' own counters, within the same bound on bytes in flight
  const mirrorStats: TransferStats = { networkBytes: 0, requests: 0, localBytes: 0, inFlight: stats.inFlight };
  const mirrorClient = new HttpClient(mirrorStats, { retries: 1, timeoutMs: 10_000, minRate: { bytesPerSecond: 8192, afterMs: 10_000 }, ...opts.mirrorHttp });
  const mirrorState = new MirrorState();
  const open = (name: string): RemoteFile => (isUrl(name) ? client.file(name) : new LocalFile(name, stats));
  const warn = (m: string) => opts.onWarning?.(m);
  const cacheDir = opts.cacheDir ?? seedCacheDir();
  let keys: ImageKeys | undefined;
  let partial: PartialOutput | undefined;
  let seeds: SeedSet | undefined;
  let index: IndexFile | undefined;
  let scratch: string | undefined;
  try {
    if (!fs.existsSync(opts.keyDir)) throw new MedvError('ENOKEY', `key folder ${opts.keyDir} does not exist (use --keys DIR)`, { file: opts.keyDir });
    const trusted = await loadTrustedKeys(opts.keyDir);
    if (trusted.length === 0) throw new MedvError('ENOKEY', `no trusted signer in ${opts.keyDir} (console.sign.pub or trusted/*.pub)`, { file: opts.keyDir });
    // 1. the index: header and signature first
    const indexFile = open(opts.source);
    const known = await fetchIndexHeader(indexFile, trusted);
    const h = known.header;
    const x = opts.expect;
    if (x && ((x.name !== undefined && h.name !== x.name) || (x.version !== undefined && h.version !== x.version) || (x.imageId !== undefined && h.imageId.toString('hex') !== x.imageId))) {
      throw new MedvError('EBADREPLY', `${opts.source} is a signed index of ${h.name} version ${h.version} (image ${h.imageId.toString('hex')}), not ${x.name ?? h.name} version ${x.version ?? h.version}${x.imageId ? ` (image ${x.imageId})` : ''}: nothing was fetched`, { file: opts.source });
    }
    keys = await openImageKeys(opts.keyDir, h.name, opts.kek);
    if (!keys.imageId.equals(h.imageId)) {
      throw new MedvError('EBADKEY', `the content key for ${h.name} in ${opts.keyDir} is for image ${keys.imageId.toString('hex')}, this index is image ${h.imageId.toString('hex')}`, { file: opts.source, offset: 24 });
    }
    const identity = { index: createHash('sha256').update(known.head.subarray(0, h.headerLength)).digest('hex'), virtualSize: h.virtualSize };
    const seedPaths = trim ? opts.seeds ?? [] : [];
    let dest: string;
    if (dryRun) {
      scratch = mkdtempSync(join(tmpdir(), 'medv-fetch-'));
      dest = join(scratch, 'index');
    } else {
      // 2. the partial output (resumed when it is of this index)
      partial = await PartialOutput.open(opts.out, identity, opts.kek);
      dest = partial.indexPath;
    }
    // earlier indexes whose run records may be reused (or rebuilt from a delta): the seeds', and
    // those of disks fetched into the output's folder before (NAME.evhd.index)
    const previous = trim ? [...localIndexes(seedPaths, h.name), ...indexesBeside(opts.out)] : [];
    const fetched = await fetchIndex(indexFile, dest, trusted, [...new Set(previous)], known, { onWarning: warn });
    index = fetched.index;

    const codec = new BlockCodec(keys);
    const packs = new Map(h.packs.map((p) => [p.version, p]));
    const packFile = new Map<number, RemoteFile>();
    const packOf = (v: number): RemoteFile => {
      let f = packFile.get(v);
      if (!f) {
        const name = packFileName(h.name, v);
        f = indexFile.sibling(name);
        // mirrors first, each block still checked against the signed index (./mirrors.ts)
        if (mirrors.length > 0) f = new MirroredFile(mirrors.map((base) => ({ base, file: mirrorClient.file(new URL(encodeURIComponent(name), base).toString()) })), f, mirrorState, warn);
        packFile.set(v, f);
      }
      return f;
    };
    let blocksTotal = 0;
    let resumed = 0;
    let fromSeeds = 0;
    let fromNetwork = 0;
    let wouldFetchBytes = 0;
    let wouldRequests = 0;
    let progressDone = 0;
    const progress = (n: number) => { progressDone += n; opts.onProgress?.(progressDone * CKM_BLOCK_SIZE, blocksTotal * CKM_BLOCK_SIZE); };
    const writeBlock = async (need: Need, data: Buffer, local = false) => {
      for (const b of need.blocks) await partial!.write(b, data, local);
      progress(need.blocks.length);
    };

    // 3. seeds: their ids (a disk seed hashed at most once)
    const hostPaths = trim ? opts.hostSeeds ?? [] : [];
    if (seedPaths.length > 0 || hostPaths.length > 0) {
      seeds = new SeedSet({ keys, kek: opts.kek, cacheDir, name: h.name });
      for (const p of seedPaths) await seeds.add(p);
      for (const p of hostPaths) await seeds.addHostData(p);
      for (const r of seeds.reports) {
        if (r.error) warn(`seed ${r.path} skipped: ${r.error}`);
        else if (r.limited) warn(`seed ${r.path}: ${r.limited} (a bound of host data seeds); the rest of the folder is not used`);
        else if (r.missingPacks) warn(`seed ${r.path}: its index refers to packs not in its folder (${r.missingPacks.map((v) => packFileName(h.name, v)).join(', ')}): those blocks come from the repository`);
      }
    }

    /** The entry of block `b` in the index (a seed block that failed its check: wanted by id now). */
    const entryOfBlock = async (b: number): Promise<RunEntry> => {
      const rec = await index!.run(Math.floor(b / CKM_RUN_BLOCKS));
      const e = rec.entries.find((x) => x.slot === b % CKM_RUN_BLOCKS);
      if (!e) throw new MedvError('EINTERNAL', `block ${b} is not in the index`);
      return e;
    };
    const want = (needs: Map<string, Need>, b: number, id: Buffer, entry: RunEntry) => {
      const k = idKey(id);
      const n = needs.get(k);
      if (n) n.blocks.push(b);
      else needs.set(k, { id, entry, blocks: [b] });
    };
    const where = (pack: number, offset: number) => ({ file: packOf(pack).name, offset });
    const buffers = dryRun ? [] : Array.from({ length: SEED_COPIES }, () => Buffer.allocUnsafeSlow(SEED_SPAN * CKM_BLOCK_SIZE));

    /** Steps 5 and 6 for the blocks of a part of the image: windows, then by id (seeds, then the network). */
    const complete = async (needs: Map<string, Need>, parts: Window[]): Promise<void> => {
      let windows = parts;
      // the partial output itself: blocks an interrupted run wrote after its last recorded progress
      // (done now: a window must not write zeros over them, so windows are split there)
      if (partial?.resumed && needs.size > 0) {
        const recovered = await recoverUnrecorded(partial, needs, codec);
        resumed += recovered.length;
        progress(recovered.length);
        if (recovered.length > 0) windows = splitWindows(windows, recovered);
      }

      // the windows: one read of the seed and one write each, every member checked against its id
      if (dryRun) fromSeeds += windows.reduce((n, w) => n + w.members.length, 0);
      else {
        await forEachLimited(windows, SEED_COPIES, async (w, slot) => {
          const count = w.members[w.members.length - 1] - w.first + 1;
          const buf = buffers[slot].subarray(0, count * CKM_BLOCK_SIZE);
          const ok = await seeds!.readChecked(w.seed, w.first, buf, w.members.map((b) => ({ i: b - w.first, id: w.seed.idAt(b)! })));
          const done = w.members.filter((_b, j) => ok[j]);
          // written: the members that matched their ids, and zeros between them (blocks the image
          // holds as zeros, or blocks written for real below, not marked done before)
          if (done.length > 0) await partial!.write(w.first, buf, true, done);
          progress(done.length);
          fromSeeds += done.length;
          // a member that did not match is wanted by id like any other
          for (const b of w.members.filter((_b, j) => !ok[j])) {
            const entry = await entryOfBlock(b);
            want(needs, b, entry.id, entry);
          }
        });
      }

      // by id: elsewhere in a seed (after the windows, whose zeros would otherwise cover them)
      if (seeds && needs.size > 0) {
        const wanted = new Set<string>(needs.keys());
        for (const n of needs.values()) if (n.entry.kind === 'delta') wanted.add(idKey(n.entry.base!.id));
        await seeds.locate(wanted);
        for (const [k, n] of [...needs.entries()].sort((x, y) => x[1].blocks[0] - y[1].blocks[0])) {
          if (!seeds.found.has(k)) continue;
          if (dryRun) { fromSeeds += n.blocks.length; needs.delete(k); continue; }
          const data = await seeds.read(k, n.id);
          if (!data) continue; // fetched instead
          await writeBlock(n, data, true);
          fromSeeds += n.blocks.length;
          needs.delete(k);
        }
      }

      // the network: delta bases first (from a seed when one holds it), then the blocks
      const bases = new Map<string, Buffer>();
      const basePieces: Piece[] = [];
      const basePlaces = new Map<string, BlockPlace>();
      for (const n of needs.values()) {
        if (n.entry.kind !== 'delta') continue;
        const bk = idKey(n.entry.base!.id);
        if (bases.has(bk) || basePlaces.has(bk)) continue;
        const fromSeed = !dryRun && seeds?.found.has(bk) ? await seeds.read(bk, n.entry.base!.id) : undefined;
        if (fromSeed) { bases.set(bk, fromSeed); continue; }
        if (dryRun && seeds?.found.has(bk)) continue;
        const p = n.entry.base!.place;
        basePlaces.set(bk, p);
        basePieces.push({ offset: p.offset, length: p.length, pack: p.pack, key: bk, base: true });
      }
      const baseIds = new Map<string, { id: Buffer; kind: 'zstd' | 'raw' }>();
      for (const n of needs.values()) if (n.entry.kind === 'delta') baseIds.set(idKey(n.entry.base!.id), { id: n.entry.base!.id, kind: n.entry.base!.kind });
      const mainPieces: Piece[] = [...needs.entries()].map(([k, n]) => ({ offset: n.entry.place.offset, length: n.entry.place.length, pack: n.entry.place.pack, key: k, base: false }));
      const byPack = (ps: Piece[]) => {
        const m = new Map<number, Piece[]>();
        for (const p of ps) { const l = m.get(p.pack) ?? []; l.push(p); m.set(p.pack, l); }
        return m;
      };
      if (dryRun) {
        for (const ps of [basePieces, mainPieces]) {
          for (const [, list] of byPack(ps)) {
            const reqs = planRequests(list, MULTI_RANGE);
            wouldRequests += reqs.length;
            wouldFetchBytes += reqs.reduce((n, r) => n + r.bytes, 0);
          }
        }
        fromNetwork += [...needs.values()].reduce((n, x) => n + x.blocks.length, 0);
        return;
      }
      for (const [v, list] of byPack(basePieces)) {
        const ref = packs.get(v)!;
        await packOf(v).fetch(list, ref.length, async (p, stored) => {
          const b = baseIds.get(p.key)!;
          const data = codec.decode(stored, b.kind, b.id, ref.salt, where(v, p.offset)); // checked against its id
          bases.set(p.key, data);
          const same = needs.get(p.key);
          if (same) {
            await writeBlock(same, data);
            fromNetwork += same.blocks.length;
            needs.delete(p.key);
          }
        });
      }
      for (const [v, list] of byPack(mainPieces.filter((p) => needs.has(p.key)))) {
        const ref = packs.get(v)!;
        await packOf(v).fetch(list, ref.length, async (p, stored) => {
          const n = needs.get(p.key)!;
          const e = n.entry;
          let base: { id: Buffer; data: Buffer } | undefined;
          if (e.kind === 'delta') {
            const data = bases.get(idKey(e.base!.id));
            if (!data) throw new MedvError('EINTERNAL', 'delta block without its base');
            base = { id: e.base!.id, data };
          }
          const data = codec.decode(stored, e.kind, e.id, ref.salt, where(v, p.offset), base); // checked against its id
          await writeBlock(n, data);
          fromNetwork += n.blocks.length;
          needs.delete(p.key);
        });
      }
      if (needs.size > 0) throw new MedvError('EINTERNAL', `${needs.size} blocks were neither in a seed nor fetched`);
    };

    // 4. one pass over the index: what is done, what a disk seed holds in place, what is wanted by
    // id; completed a part at a time (see PART_BLOCKS), so memory does not grow with the image
    let needs = new Map<string, Need>();
    let windows: Window[] = [];
    let inPlace = 0;
    const ids = dryRun ? undefined : new IdCollector();
    let cur: Window | undefined;
    let lastDone = -1;
    const disks = seeds?.disks ?? [];
    for await (const { run, record } of index.runs()) {
      for (const e of record.entries) {
        blocksTotal++;
        const b = run * CKM_RUN_BLOCKS + e.slot;
        ids?.add(b, e.id);
        if (partial?.isDone(b)) { resumed++; progress(1); lastDone = b; continue; }
        const seed = disks.find((d) => d.idAt(b)?.equals(e.id));
        if (seed) {
          // a window never spans a block already written (its gaps are written as zeros)
          const joins = cur && cur.seed === seed && Math.floor(b / SEED_SPAN) === Math.floor(cur.first / SEED_SPAN) && lastDone < cur.first;
          if (joins) cur!.members.push(b);
          else windows.push(cur = { seed, first: b, members: [b] });
          inPlace++;
          continue;
        }
        want(needs, b, e.id, e);
      }
      if ((needs.size >= PART_BLOCKS || inPlace >= PART_IN_PLACE) && ((run + 1) * CKM_RUN_BLOCKS) % SEED_SPAN === 0) {
        await complete(needs, windows);
        needs = new Map();
        windows = [];
        cur = undefined;
        inPlace = 0;
      }
    }
    await complete(needs, windows);
    buffers.forEach((x) => x.fill(0));

    if (!dryRun) {
      // 6. every block is written and was checked: flush, publish, cache the new disk's ids
      await partial!.publish();
      partial = undefined;
      writeSeedCache(cacheDir, opts.out, seedStamp(opts.out), keyTag(keys.idKey), ids!);
    }

    const s: TransferStats = stats;
    return {
      out: opts.out, name: h.name, version: h.version, virtualSize: h.virtualSize, dryRun,
      blocks: blocksTotal, blocksResumed: resumed, blocksFromSeeds: fromSeeds, blocksFromNetwork: fromNetwork,
      networkBytes: s.networkBytes + mirrorStats.networkBytes, mirrorBytes: mirrorStats.networkBytes, repositoryFileBytes: s.localBytes, seedBytes: fromSeeds * CKM_BLOCK_SIZE, requests: s.requests + mirrorStats.requests,
      maxInFlightBytes: s.inFlight.max,
      indexRecordsReused: fetched.reusedRecords, indexRecordsFetched: fetched.fetchedRecords, indexRecordsFromDelta: fetched.deltaRecords,
      indexDelta: fetched.delta,
      ...(dryRun ? { wouldFetchBytes, wouldRequests } : {}),
      seeds: seeds?.reports ?? [],
      seconds: Number(process.hrtime.bigint() - started) / 1e9,
    };
  } finally {
    await index?.close();
    await seeds?.close();
    await partial?.close();
    keys?.dispose();
    client.close();
    mirrorClient.close();
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** `f` on every item, at most `limit` at a time (`slot`: which of the `limit` is running it); the first failure stops new starts and is thrown once the others settle. */
async function forEachLimited<T>(items: T[], limit: number, f: (item: T, slot: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async (slot: number) => {
    while (failed === undefined && next < items.length) {
      const item = items[next++];
      try { await f(item, slot); } catch (e) { failed ??= e; }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, (_x, i) => worker(i)));
  if (failed !== undefined) throw failed;
}

const ZERO_BLOCK = Buffer.alloc(CKM_BLOCK_SIZE);

/** `windows` cut wherever one of `done` (ascending) lies inside one (between its first and last member). */
function splitWindows(windows: Window[], done: number[]): Window[] {
  const out: Window[] = [];
  for (const w of windows) {
    let cur: Window | undefined;
    let d = done.findIndex((x) => x > w.first);
    for (const b of w.members) {
      const cut = d >= 0 && d < done.length && done[d] < b;
      while (d >= 0 && d < done.length && done[d] < b) d++;
      if (!cur || cut) out.push(cur = { seed: w.seed, first: b, members: [b] });
      else cur.members.push(b);
    }
  }
  return out;
}

/**
 * Blocks of a resumed partial output that are on its disk but not yet recorded as done (written
 * after the last checkpoint of the killed run): read back run by run, kept when they match their
 * id (and recorded at the next checkpoint). Returns the blocks recovered, ascending.
 */
async function recoverUnrecorded(partial: PartialOutput, needs: Map<string, Need>, codec: BlockCodec): Promise<number[]> {
  const byRun = new Map<number, Array<{ k: string; n: Need; b: number }>>();
  for (const [k, n] of needs) {
    for (const b of n.blocks) {
      const run = Math.floor(b / CKM_RUN_BLOCKS);
      const l = byRun.get(run) ?? [];
      l.push({ k, n, b });
      byRun.set(run, l);
    }
  }
  const recovered: number[] = [];
  for (const run of [...byRun.keys()].sort((a, b) => a - b)) {
    const off = run * CKM_RUN_BYTES;
    const len = Math.min(CKM_RUN_BYTES, partial.device.size - off);
    if (len <= 0) continue;
    const data = await partial.device.read(off, len);
    for (const { k, n, b } of byRun.get(run)!) {
      const at = (b - run * CKM_RUN_BLOCKS) * CKM_BLOCK_SIZE;
      if (at + CKM_BLOCK_SIZE > data.length) continue;
      const block = data.subarray(at, at + CKM_BLOCK_SIZE);
      if (block.equals(ZERO_BLOCK) || !codec.id(block).equals(n.id)) continue;
      partial.markDone(b);
      n.blocks = n.blocks.filter((x) => x !== b);
      if (n.blocks.length === 0) needs.delete(k);
      recovered.push(b);
    }
  }
  return recovered.sort((a, b) => a - b);
}

export { SINGLE_RANGE, MULTI_RANGE };
