/**
 * fetchImage: a packed image from a repository (http(s) URL or local path of its .ckm.index) into
 * a new, freshly keyed .evhd, taking every block it can from local seeds and the rest with
 * coalesced range requests. Order of trust: index signature (trusted keys) -> run directory ->
 * run records -> each block (AEAD, then its id), and the finished disk is read back and every
 * block checked against its id before it is published under its final name.
 *
 *   1. index header (signature), then the records no local index holds (./remote-index.ts)
 *   2. the partial output of an earlier, interrupted fetch of the same index (./output.ts)
 *   3. blocks still missing, by id -> seeds (./seeds.ts), copied and checked
 *   4. the rest from the packs: delta bases first (seed or network), then the blocks (./http.ts)
 *   5. read back, check every block, publish (key file, then disk)
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { KekSource } from '../crypto/index.js';
import { encPathFor } from '../crypto/index.js';
import { MedvError } from '../core/errors.js';
import { type BlockPlace, CKM_BLOCK_SIZE, CKM_RUN_BLOCKS, CKM_RUN_BYTES, type RunEntry, packFileName, runSlots } from '../formats/ckm/index.js';
import { BlockCodec } from '../pack/block.js';
import type { IndexFile } from '../pack/indexfile.js';
import { type ImageKeys, loadTrustedKeys, openImageKeys } from '../pack/keys.js';
import { HttpClient, type HttpOptions } from './http.js';
import { PartialOutput } from './output.js';
import { MULTI_RANGE, SINGLE_RANGE, planRequests } from './plan.js';
import { fetchIndex, fetchIndexHeader } from './remote-index.js';
import { LocalFile, type RemoteFile, type TransferStats, isUrl, newStats, siblingOf } from './remote.js';
import { SeedSet, type SeedReport, idKey, localIndexes } from './seeds.js';
import { seedCacheDir } from '../core/paths.js';

export interface FetchImageOptions {
  /** URL or path of `<NAME>_<N>.ckm.index`; the packs are its siblings. */
  source: string;
  /** The new disk: `*.evhd` (its key file beside it). */
  out: string;
  seeds?: string[];
  keyDir: string;
  kek: () => KekSource;
  /** Use seeds (TrimTransfer). false: every block from the repository. Default true. */
  trim?: boolean;
  dryRun?: boolean;
  /** Where disk seeds' block ids are cached (default $XDG_CACHE_HOME/medv/seeds). */
  cacheDir?: string;
  http?: HttpOptions;
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
  /** Body bytes received from the repository over HTTP (index included). */
  networkBytes: number;
  /** Bytes read from a repository given as a local path. */
  repositoryFileBytes: number;
  /** Plaintext bytes taken from seeds. */
  seedBytes: number;
  requests: number;
  indexRecordsReused: number;
  indexRecordsFetched: number;
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

export async function fetchImage(opts: FetchImageOptions): Promise<FetchImageResult> {
  const started = process.hrtime.bigint();
  const trim = opts.trim ?? true;
  const dryRun = opts.dryRun ?? false;
  checkOut(opts.out);
  const stats = newStats();
  const client = new HttpClient(stats, opts.http);
  const open = (name: string): RemoteFile => (isUrl(name) ? client.file(name) : new LocalFile(name, stats));
  const warn = (m: string) => opts.onWarning?.(m);
  let keys: ImageKeys | undefined;
  let partial: PartialOutput | undefined;
  let seeds: SeedSet | undefined;
  let index: IndexFile | undefined;
  let scratch: string | undefined;
  try {
    if (!fs.existsSync(opts.keyDir)) throw new MedvError('ENOKEY', `key folder ${opts.keyDir} does not exist (use --keys DIR)`, { file: opts.keyDir });
    const trusted = await loadTrustedKeys(opts.keyDir);
    if (trusted.length === 0) throw new MedvError('ENOKEY', `no trusted signer in ${opts.keyDir} (console.sign.pub or trusted/*.pub)`, { file: opts.keyDir });
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
      partial = await PartialOutput.open(opts.out, identity, opts.kek);
      dest = partial.indexPath;
    }
    // earlier indexes whose run records may be reused: the seeds', and those of disks fetched
    // into the output's folder before (NAME.evhd.index)
    const previous = trim ? [...localIndexes(seedPaths, h.name), ...indexesBeside(opts.out)] : [];
    const fetched = await fetchIndex(indexFile, dest, trusted, [...new Set(previous)], known);
    index = fetched.index;

    const codec = new BlockCodec(keys);
    const packs = new Map(h.packs.map((p) => [p.version, p]));
    const packFile = new Map<number, RemoteFile>();
    const packOf = (v: number): RemoteFile => {
      let f = packFile.get(v);
      if (!f) { f = open(siblingOf(opts.source, packFileName(h.name, v))); packFile.set(v, f); }
      return f;
    };
    let blocksTotal = 0;
    let resumed = 0;
    let fromSeeds = 0;
    let fromNetwork = 0;
    let seedBytes = 0;
    let wouldFetchBytes = 0;
    let wouldRequests = 0;
    let progressDone = 0;
    const progress = (n: number) => { progressDone += n; opts.onProgress?.(progressDone * CKM_BLOCK_SIZE, blocksTotal * CKM_BLOCK_SIZE); };

    const writeBlock = async (need: Need, data: Buffer, local = false) => {
      for (const b of need.blocks) await partial!.write(b, data, local);
      progress(need.blocks.length);
    };

    for (let attempt = 0; ; attempt++) {
      // 2. what is still missing, by id
      const needs = new Map<string, Need>();
      blocksTotal = 0;
      for await (const { run, record } of index.runs()) {
        for (const e of record.entries) {
          blocksTotal++;
          const b = run * CKM_RUN_BLOCKS + e.slot;
          if (partial?.isDone(b)) { if (attempt === 0) resumed++; continue; }
          const k = idKey(e.id);
          const n = needs.get(k);
          if (n) n.blocks.push(b);
          else needs.set(k, { id: e.id, entry: e, blocks: [b] });
        }
      }
      // the partial output itself: blocks an interrupted run wrote after its last recorded progress
      if (attempt === 0 && partial?.resumed && needs.size > 0) resumed += await recoverUnrecorded(partial, needs, codec);
      progressDone = 0;
      progress(blocksTotal - [...needs.values()].reduce((s, n) => s + n.blocks.length, 0));

      // 3. seeds
      if (trim && seedPaths.length > 0 && needs.size > 0) {
        if (!seeds) {
          seeds = new SeedSet({ keys, kek: opts.kek, cacheDir: opts.cacheDir ?? seedCacheDir(), name: h.name });
          const wanted = new Set<string>(needs.keys());
          for (const n of needs.values()) if (n.entry.kind === 'delta') wanted.add(idKey(n.entry.base!.id));
          for (const p of seedPaths) await seeds.add(p, wanted);
          for (const r of seeds.reports) if (r.error) warn(`seed ${r.path} skipped: ${r.error}`);
        }
        const fromSeed = [...needs.entries()].filter(([k]) => seeds!.found.has(k)).sort((a, b) => a[1].blocks[0] - b[1].blocks[0]);
        if (dryRun) {
          for (const [k, n] of fromSeed) { fromSeeds += n.blocks.length; needs.delete(k); }
        } else {
          for (let i = 0; i < fromSeed.length;) {
            // a span: consecutive disk blocks of one disk seed landing on consecutive blocks here (the usual case: the same place in an earlier version)
            const first = seeds.found.get(fromSeed[i][0]);
            let j = i + 1;
            if (first?.kind === 'disk' && fromSeed[i][1].blocks.length === 1) {
              while (j < fromSeed.length && j - i < CKM_RUN_BLOCKS) {
                const [k2, n2] = fromSeed[j];
                const l2 = seeds.found.get(k2);
                if (l2?.kind !== 'disk' || l2.seed !== first.seed || l2.block !== first.block + (j - i) || n2.blocks.length !== 1 || n2.blocks[0] !== fromSeed[i][1].blocks[0] + (j - i)) break;
                j++;
              }
            }
            const span = fromSeed.slice(i, j);
            i = j;
            const datas = span.length > 1 ? await seeds.readSpan(span.map(([k, n]) => ({ k, id: n.id }))) : [await seeds.read(span[0][0], span[0][1].id)];
            // write the blocks that matched their ids, in runs
            for (let a = 0; a < span.length;) {
              if (!datas[a]) { a++; continue; } // fetched instead
              let b = a + 1;
              while (b < span.length && datas[b] && span[b][1].blocks.length === 1 && span[a][1].blocks.length === 1 && span[b][1].blocks[0] === span[a][1].blocks[0] + (b - a)) b++;
              if (b - a === 1) await writeBlock(span[a][1], datas[a]!, true);
              else {
                await partial!.write(span[a][1].blocks[0], Buffer.concat(datas.slice(a, b) as Buffer[]), true);
                progress(b - a);
              }
              for (let c = a; c < b; c++) {
                fromSeeds += span[c][1].blocks.length;
                seedBytes += CKM_BLOCK_SIZE * span[c][1].blocks.length;
                needs.delete(span[c][0]);
              }
              a = b;
            }
          }
        }
      }

      // 4. the network: delta bases first (from a seed when one holds it), then the blocks
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
            wouldFetchBytes += reqs.reduce((s, r) => s + r.bytes, 0);
          }
        }
        fromNetwork = [...needs.values()].reduce((s, n) => s + n.blocks.length, 0);
        break;
      }
      const where = (pack: number, offset: number) => ({ file: packOf(pack).name, offset });
      for (const [v, list] of byPack(basePieces)) {
        const ref = packs.get(v)!;
        await packOf(v).fetch(list, ref.length, async (p, stored) => {
          const b = baseIds.get(p.key)!;
          const data = codec.decode(stored, b.kind, b.id, ref.salt, where(v, p.offset));
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
          const data = codec.decode(stored, e.kind, e.id, ref.salt, where(v, p.offset), base);
          await writeBlock(n, data);
          fromNetwork += n.blocks.length;
          needs.delete(p.key);
        });
      }
      if (needs.size > 0) throw new MedvError('EINTERNAL', `${needs.size} blocks were neither in a seed nor fetched`);
      await partial!.checkpoint();

      // 5. read back and check every block
      const bad = await verifyOutput(index, partial!, codec);
      if (bad.length === 0) break;
      if (attempt > 0) throw new MedvError('EBADBLOCK', `${bad.length} blocks of the new disk do not match their ids after being written`, { file: opts.out, offset: bad[0] * CKM_BLOCK_SIZE });
      warn(`${bad.length} blocks of the partial output did not match their ids; fetching them again`);
      for (const b of bad) partial!.clear(b);
    }

    if (!dryRun) await partial!.publish();
    partial = undefined;
    const s: TransferStats = stats;
    return {
      out: opts.out, name: h.name, version: h.version, virtualSize: h.virtualSize, dryRun,
      blocks: blocksTotal, blocksResumed: resumed, blocksFromSeeds: fromSeeds, blocksFromNetwork: fromNetwork,
      networkBytes: s.networkBytes, repositoryFileBytes: s.localBytes, seedBytes, requests: s.requests,
      indexRecordsReused: fetched.reusedRecords, indexRecordsFetched: fetched.fetchedRecords,
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
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }
}

const ZERO_BLOCK = Buffer.alloc(CKM_BLOCK_SIZE);

/**
 * Blocks of a resumed partial output that are on its disk but not yet recorded as done (written
 * after the last checkpoint of the killed run): read back run by run, kept when they match their
 * id (and recorded at the next checkpoint). Returns how many blocks were recovered.
 */
async function recoverUnrecorded(partial: PartialOutput, needs: Map<string, Need>, codec: BlockCodec): Promise<number> {
  const byRun = new Map<number, Array<{ k: string; n: Need; b: number }>>();
  for (const [k, n] of needs) {
    for (const b of n.blocks) {
      const run = Math.floor(b / CKM_RUN_BLOCKS);
      const l = byRun.get(run) ?? [];
      l.push({ k, n, b });
      byRun.set(run, l);
    }
  }
  let recovered = 0;
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
      recovered++;
    }
  }
  return recovered;
}

/** Every block of the image read back from the output: non-zero ones match their ids, the rest are zero. Returns the bad block numbers. */
async function verifyOutput(index: IndexFile, out: PartialOutput, codec: BlockCodec): Promise<number[]> {
  const bad: number[] = [];
  const size = index.header.virtualSize;
  if (out.device.size < size) throw new MedvError('ECORRUPT', `the new disk is ${out.device.size} bytes, the image ${size}`, { file: out.out });
  for await (const { run, record } of index.runs()) {
    const slots = runSlots(size, run);
    const off = run * CKM_RUN_BYTES;
    const len = Math.min(slots * CKM_BLOCK_SIZE, out.device.size - off);
    const data = await out.device.read(off, len);
    const padded = data.length === slots * CKM_BLOCK_SIZE ? data : Buffer.concat([data, Buffer.alloc(slots * CKM_BLOCK_SIZE - data.length)]);
    let next = 0;
    for (let s = 0; s < slots; s++) {
      const block = padded.subarray(s * CKM_BLOCK_SIZE, (s + 1) * CKM_BLOCK_SIZE);
      const e = record.entries[next];
      if (e && e.slot === s) {
        next++;
        if (!codec.id(block).equals(e.id)) bad.push(run * CKM_RUN_BLOCKS + s);
      } else if (!block.equals(ZERO_BLOCK)) bad.push(run * CKM_RUN_BLOCKS + s);
    }
  }
  return bad;
}

export { SINGLE_RANGE, MULTI_RANGE };
