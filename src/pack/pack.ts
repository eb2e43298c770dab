/**
 * packImage: a readable virtual disk -> `<NAME>_<N>.ckm` + `<NAME>_<N>.ckm.index`.
 *
 * Streaming, one 1 MiB run at a time: runs are read (only the parts the device's allocation map
 * says hold data: allocation.ts; by the worker itself when the device is a plain file, through
 * its fileRange) and prepared ahead (zero test, keyed id, zstd; in worker threads on a multi-core
 * machine, pool.ts), then consumed in order on the main thread, which alone
 * decides placement and encrypts (the nonce holds the pack offset). All-zero blocks are skipped; a
 * block whose id is already known (an earlier block of this disk, or any block of the previous
 * version's index) is referenced where it is; everything else is appended to the new pack, so the
 * blocks a version adds lie together in LBA order. A changed block whose LBA held a whole block in
 * the previous version is stored as a zstd delta against it when that is smaller.
 *
 * Memory: a fixed set of run buffers (4 per worker, plus one; 2 MiB each: the workers run ahead
 * of the main thread), the two 4 MiB write buffers of the pack and of the index, the workers' small
 * heaps, and the map of known block ids (about 100 bytes per distinct non-zero block: the only part
 * that grows, with the amount of distinct data, not with the disk's size).
 *
 * Publication (src/core/fsio.ts, staging): pack and index are written under temporary names in
 * the output folder; then both are fsynced, the pack is linked to its final name, then the index
 * (a link never replaces an existing file), the folder fsynced and the temporary names removed. An
 * index therefore never names a pack that is not complete on disk; a crash leaves at most a pack
 * without an index (harmless) or temporaries, which the next pack of the same version removes.
 */
import * as fs from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import type { BlockDevice } from '../block/device.js';
import { readInto } from '../block/emulate.js';
import { MedvError, fromSystemError } from '../core/errors.js';
import { type Staging, beginStaging } from '../core/fsio.js';
import {
  Blake2bStream, type BlockKind, type BlockPlace, CKM_BLOCK_SIZE, DELTA_BODY_HASH_BYTES, DELTA_HEADER_BYTES, DeltaBodyWriter, type DeltaHeader, deltaFileName,
  diffRun, serializeDeltaHeader, serializeDeltaHeaderSigned, CKM_MAX_VIRTUAL_SIZE, CKM_RUN_BYTES, CKM_TAG_BYTES, DIR_ENTRY_BYTES, type IndexHeader, KIND_BY_CODE,
  PACK_SALT_BYTES, type PackRef, type RunEntry, ZERO_RUN_HASH, ZSTD_LEVEL, checkImageName, checkImageVersion, encodeRunRecord, headerLengthFor, indexFileName,
  packFileName, rootHashOf, runCountFor, runSlots, serializeIndexHeader, serializeIndexHeaderSigned, serializePackHeader, serializeRunDirectory,
} from '../formats/ckm/index.js';
import { AllocationMap } from './allocation.js';
import { Appender } from './appender.js';
import { BlockCodec } from './block.js';
import { IndexFile } from './indexfile.js';
import type { ImageKeys } from './keys.js';
import { PackSet } from './read.js';
import { PreparePool } from './pool.js';
import { PREP_PAYLOADS, RunJob, prepareRun } from './prepare.js';


export interface PackOptions {
  name: string;
  version: number;
  /** Output folder (created if missing). */
  outDir: string;
  /** The image's keys, with the signing key. */
  keys: ImageKeys;
  /**
   * The previous version's index, whose blocks are referenced rather than stored again.
   * Default: the highest `<NAME>_<M>.ckm.index` with M < version in outDir; false: none.
   */
  previous?: string | false;
  /** Try zstd deltas against the previous version's block at the same LBA (default true). */
  delta?: boolean;
  /**
   * zstd level for whole blocks; default: zstd's fast strategy sized for 4 KiB blocks (see
   * formats/ckm/zstd.ts). Deltas are always level 3 (their bytes are what an update downloads).
   */
  level?: number;
  /** Worker threads preparing blocks (default: one per core for disks from 64 MiB; 0 = inline). */
  workers?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface PackStats {
  /** 4 KiB blocks in the virtual disk. */
  blocks: number;
  zeroBlocks: number;
  /** Non-zero blocks stored in this version's pack. */
  storedBlocks: number;
  /** Of which stored as deltas. */
  deltaBlocks: number;
  /** Non-zero blocks identical to an earlier block of this disk (stored once). */
  dedupBlocks: number;
  /** Non-zero blocks referenced in earlier versions' packs. */
  reusedBlocks: number;
}

export interface PackResult {
  name: string;
  version: number;
  imageId: string;
  virtualSize: number;
  packPath: string;
  indexPath: string;
  packBytes: number;
  indexBytes: number;
  /** The signed index delta from the previous version (`<NAME>_<N>.ckm.index-from-<M>`), when there is one and something changed. */
  deltaPath: string | null;
  deltaBytes: number;
  previous: string | null;
  packs: number[];
  stats: PackStats;
  seconds: number;
}

interface Known { kind: BlockKind; place: BlockPlace; base?: RunEntry['base'] }

/** A run the allocation map already says reads as zeros (never read, never prepared). */
const ZERO_RUN = new RunJob(0);

function defaultWorkers(size: number): number {
  const cores = availableParallelism();
  return cores > 1 && size >= 64 * 1048576 ? Math.min(cores, 8) : 0;
}

/** The highest `<name>_<M>.ckm.index` with M < version in `dir`, if any. */
export function findPreviousIndex(dir: string, name: string, version: number): string | undefined {
  if (!fs.existsSync(dir)) return undefined;
  const re = new RegExp(`^${name.replace(/[.]/g, '\\.')}_(\\d+)\\.ckm\\.index$`);
  let best = 0;
  for (const f of fs.readdirSync(dir)) {
    const m = re.exec(f);
    if (!m) continue;
    const v = Number(m[1]);
    if (v < version && v > best && f === indexFileName(name, v)) best = v;
  }
  return best > 0 ? join(dir, indexFileName(name, best)) : undefined;
}

/**
 * Where the data of run `job` (at `offset`) is, as the allocation map says: false when the whole
 * run reads as zeros (nothing to read). The spans are set on the job, relative to the run; when the
 * device's bytes are a file's at known offsets (`fileRange`), the worker reads them itself.
 */
async function locateRun(device: BlockDevice, alloc: AllocationMap, job: RunJob, offset: number): Promise<boolean> {
  const spans = await alloc.dataIn(offset, job.length);
  job.spans = spans.map(([a, b]) => [a - offset, b - offset]);
  job.file = device.fileRange?.(offset, job.length);
  return spans.length > 0;
}

/** Read the data spans of run `job` (at `offset`) through the device, on this thread; the rest of the run is zero-filled. */
async function readRun(device: BlockDevice, job: RunJob, offset: number): Promise<void> {
  const buf = job.data;
  if (job.spans.length === 1 && job.spans[0][0] === 0 && job.spans[0][1] === job.length) {
    await readInto(device, buf.subarray(0, job.length), offset);
    return;
  }
  buf.fill(0, 0, job.length);
  for (const [a, b] of job.spans) await readInto(device, buf.subarray(a, b), offset + a);
}

export async function packImage(device: BlockDevice, opts: PackOptions): Promise<PackResult> {
  const started = process.hrtime.bigint();
  checkImageName(opts.name);
  checkImageVersion(opts.version);
  const { keys, name, version } = opts;
  if (!keys.canSign) throw new MedvError('ENOKEY', 'packing needs the console signing key');
  const size = device.size;
  if (size < 1 || size > CKM_MAX_VIRTUAL_SIZE) throw new MedvError('EINVAL_ARG', `disk size ${size} cannot be packed`);
  const outDir = opts.outDir;
  try { await fs.promises.mkdir(outDir, { recursive: true }); } catch (e) { throw fromSystemError(e, outDir); }
  const packPath = join(outDir, packFileName(name, version));
  const indexPath = join(outDir, indexFileName(name, version));
  const staging = beginStaging([packPath, indexPath], (f) => `refusing to overwrite ${f}`);

  const previousPath = opts.previous === false ? undefined : (opts.previous ?? findPreviousIndex(outDir, name, version));
  let deltaStaging: Staging | undefined;
  let deltaPath: string | undefined;
  let deltaPublished = false;
  let prev: IndexFile | undefined;
  let prevPacks: PackSet | undefined;
  const level = opts.level;
  const codec = new BlockCodec(keys, ZSTD_LEVEL);
  const known = new Map<string, Known>();
  const earlierPacks = new Map<number, PackRef>();

  let packFh: fs.promises.FileHandle | undefined;
  let idxFh: fs.promises.FileHandle | undefined;
  let deltaFh: fs.promises.FileHandle | undefined;
  let pool: PreparePool | undefined;
  try {
    if (previousPath) {
      // The new index names the earlier packs by version, to be found beside it: one image's
      // packs live in one folder.
      if (fs.realpathSync(dirname(previousPath)) !== fs.realpathSync(outDir)) {
        throw new MedvError('EINVAL_ARG', `the previous version's index must be in the output folder ${outDir} (its packs are referenced from there)`, { file: previousPath });
      }
      prev = await IndexFile.open(previousPath);
      await prev.verify(keys.trusted);
      const h = prev.header;
      if (h.name !== name || !h.imageId.equals(keys.imageId)) throw new MedvError('EINVAL_ARG', `previous index is of another image (${h.name})`, { file: previousPath });
      if (h.version >= version) throw new MedvError('EINVAL_ARG', `previous index is version ${h.version}, not below ${version}`, { file: previousPath });
      for (const p of h.packs) earlierPacks.set(p.version, p);
      prevPacks = await PackSet.open(dirname(previousPath), name, keys.imageId, h.packs);
      deltaPath = join(outDir, deltaFileName(name, h.version, version));
      deltaStaging = beginStaging([deltaPath], (f) => `refusing to overwrite ${f}`);
      for await (const { record } of prev.runs()) {
        for (const e of record.entries) {
          const k = e.id.toString('latin1');
          if (!known.has(k)) known.set(k, { kind: e.kind, place: e.place, base: e.base });
        }
      }
    }

    const salt = randomBytes(PACK_SALT_BYTES);
    const packTmp = staging.tempFor(packPath);
    const indexTmp = staging.tempFor(indexPath);
    try {
      packFh = await fs.promises.open(packTmp, 'wx', 0o644);
      idxFh = await fs.promises.open(indexTmp, 'wx+', 0o644);
    } catch (e) { throw fromSystemError(e, outDir); }
    const pack = new Appender(packFh, 0, packTmp);
    await pack.append(serializePackHeader({ version, imageId: keys.imageId, salt }));
    // the index delta from the previous version: its body streams into the file after room for the header
    let delta: { writer: DeltaBodyWriter; out: Appender; hash: Blake2bStream; file: string } | undefined;
    if (deltaStaging && deltaPath) {
      const file = deltaStaging.tempFor(deltaPath);
      try { deltaFh = await fs.promises.open(file, 'wx', 0o644); } catch (e) { throw fromSystemError(e, file); }
      delta = { writer: new DeltaBodyWriter(), out: new Appender(deltaFh, DELTA_HEADER_BYTES, file), hash: new Blake2bStream(DELTA_BODY_HASH_BYTES), file };
    }
    const drainDelta = async (min: number) => {
      if (!delta || delta.writer.pending < min) return;
      const b = delta.writer.drain();
      delta.hash.update(b);
      await delta.out.append(b);
    };

    // The run records go straight into the index file, after room for the longest header this
    // index can have (every earlier pack listed) and the run directory; the header, known only
    // at the end, is written in front of them (the records are moved down when it is shorter).
    const runCount = runCountFor(size);
    const dirBytes = runCount * DIR_ENTRY_BYTES;
    const roomForHeader = headerLengthFor(name, earlierPacks.size + 1);
    const records = new Appender(idxFh, roomForHeader + dirBytes, indexTmp);
    const hashes: Buffer[] = [];
    const lengths: number[] = [];
    const used = new Set<number>([version]);
    const stats: PackStats = { blocks: Math.ceil(size / CKM_BLOCK_SIZE), zeroBlocks: 0, storedBlocks: 0, deltaBlocks: 0, dedupBlocks: 0, reusedBlocks: 0 };
    const deltas = opts.delta ?? true;

    // Pipeline: runs are read (only what the allocation map says holds data) and prepared (zero
    // test, id, zstd) ahead, in worker threads when there are several cores; the main thread
    // consumes them in order (dedup, deltas, placement, encryption with the pack offset in the
    // nonce, sealed straight into the pack's write buffer). A fixed set of run buffers circulates
    // (transferred to the workers and back): at most `ahead` runs are in flight.
    const workers = opts.workers ?? defaultWorkers(size);
    pool = workers > 0 ? new PreparePool(workers, keys.idKey, level, device.description) : undefined;
    const alloc = new AllocationMap(device);
    const ahead = Math.max(2, 4 * workers + 1);
    const free: RunJob[] = Array.from({ length: ahead }, () => new RunJob());
    const inflight: Array<Promise<RunJob> | RunJob> = [];
    const start = async (job: RunJob, offset: number): Promise<RunJob> => {
      if (!(await locateRun(device, alloc, job, offset))) job.zero();
      else if (pool && job.file) await pool.prepare(job); // the worker reads the file itself
      else {
        job.file = undefined;
        await readRun(device, job, offset);
        if (pool) await pool.prepare(job);
        else prepareRun(job.data, job.length, job.prep, keys.idKey, level);
      }
      return job;
    };
    let nextRun = 0;
    for (let run = 0; run < runCount; run++) {
      while (nextRun < runCount && (free.length > 0 || alloc.knownZero(nextRun * CKM_RUN_BYTES, CKM_RUN_BYTES))) {
        const off = nextRun * CKM_RUN_BYTES;
        const len = Math.min(CKM_RUN_BYTES, size - off);
        nextRun++;
        // a run the map already says is zeros takes no buffer and no trip anywhere
        if (alloc.knownZero(off, len)) { inflight.push(ZERO_RUN); continue; }
        const job = free.pop()!;
        job.length = len;
        const p = start(job, off);
        p.catch(() => undefined); // awaited in order below; a failure is handled there
        inflight.push(p);
      }
      const job = await inflight.shift()!;
      const offset = run * CKM_RUN_BYTES;
      const slots = runSlots(size, run);
      const prevRun = prev && run < prev.header.runCount ? await prev.run(run) : undefined;
      if (job === ZERO_RUN && !prevRun?.entries.length) {
        stats.zeroBlocks += slots;
        hashes.push(ZERO_RUN_HASH);
        lengths.push(0);
        opts.onProgress?.(Math.min(offset + CKM_RUN_BYTES, size), size);
        continue;
      }
      const prevBySlot = prevRun && new Map<number, RunEntry>(prevRun.entries.map((e) => [e.slot, e]));
      const plens = job.lengths();
      const kinds = job.kinds();
      const entries: RunEntry[] = [];
      let payloadAt = PREP_PAYLOADS;
      for (let slot = 0; slot < slots; slot++) {
        const plen = plens[slot];
        if (plen === 0) { stats.zeroBlocks++; continue; }
        const payload = job.prep.subarray(payloadAt, payloadAt + plen);
        payloadAt += plen;
        const id = job.id(slot);
        const k = id.toString('latin1');
        const hit = known.get(k);
        if (hit) {
          if (hit.place.pack === version) stats.dedupBlocks++; else stats.reusedBlocks++;
          entries.push({ slot, id, kind: hit.kind, place: hit.place, base: hit.base });
          used.add(hit.place.pack);
          if (hit.base) used.add(hit.base.place.pack);
          continue;
        }
        let kind: BlockKind = KIND_BY_CODE[kinds[slot]];
        let body: Buffer = payload;
        let base: RunEntry['base'];
        const pe = prevBySlot?.get(slot);
        if (deltas && pe && pe.kind !== 'delta' && prevPacks) {
          const stored = await prevPacks.read(pe.place);
          const old = codec.decode(stored, pe.kind, pe.id, prevPacks.salt(pe.place.pack), { file: prevPacks.path(pe.place.pack), offset: pe.place.offset });
          // prepareRun zeroed the tail of a short last block
          const d = codec.delta(job.data.subarray(slot * CKM_BLOCK_SIZE, (slot + 1) * CKM_BLOCK_SIZE), old);
          if (d.length < body.length) {
            kind = 'delta';
            body = d;
            base = { id: pe.id, kind: pe.kind as 'zstd' | 'raw', place: pe.place };
          }
        }
        const place: BlockPlace = { pack: version, offset: pack.position, length: body.length + CKM_TAG_BYTES };
        const dst = pack.reserveNow(place.length) ?? await pack.reserve(place.length);
        codec.sealInto(dst, body, kind, id, salt, place.offset, base?.id);
        if (base) { used.add(base.place.pack); stats.deltaBlocks++; }
        stats.storedBlocks++;
        known.set(k, { kind, place, base });
        entries.push({ slot, id, kind, place, base });
      }
      const rec = { slots, entries };
      const enc = encodeRunRecord(rec);
      if (delta && prev) {
        const edits = diffRun(prevRun, rec);
        if (edits.length > 0) delta.writer.add(run, edits, prevRun);
        await drainDelta(1 << 20);
      }
      if (job !== ZERO_RUN) free.push(job); // the record is encoded and diffed: nothing refers to the job's buffers any more
      hashes.push(enc.hash);
      lengths.push(enc.compressed.length);
      if (enc.compressed.length) await records.append(enc.compressed);
      opts.onProgress?.(Math.min(offset + CKM_RUN_BYTES, size), size);
    }
    // every run is prepared: the workers go (their heaps with them) before the index is written
    await pool?.close();
    pool = undefined;
    await pack.flush();
    await records.flush();
    const packBytes = pack.position;
    const tableLength = records.position - roomForHeader - dirBytes;

    const packs: PackRef[] = [...used].sort((a, b) => a - b).map((v) => {
      if (v === version) return { version, length: packBytes, salt };
      const ref = earlierPacks.get(v);
      if (!ref) throw new MedvError('EINTERNAL', `pack ${v} referenced but unknown`);
      return ref;
    });
    const directory = serializeRunDirectory(hashes, lengths);
    const header: IndexHeader = {
      name, version, imageId: keys.imageId, virtualSize: size, runCount, tableLength, rootHash: rootHashOf(directory),
      signer: keys.signPublic, created: Math.floor(Date.now() / 1000), packs,
    };
    const headerBytes = serializeIndexHeader(header, keys.sign(serializeIndexHeaderSigned(header)));
    const recordsAt = headerBytes.length + dirBytes;
    if (recordsAt < roomForHeader + dirBytes) await moveDown(idxFh, roomForHeader + dirBytes, recordsAt, tableLength, indexTmp);
    try {
      await writeAll(idxFh, Buffer.concat([headerBytes, directory]), 0);
      await idxFh.truncate(recordsAt + tableLength);
    } catch (e) { throw fromSystemError(e, indexTmp); }
    const indexBytes = recordsAt + tableLength;
    let deltaBytes = 0;
    if (delta && prev && deltaFh && delta.writer.runs > 0) {
      await drainDelta(0);
      await delta.out.flush();
      const bodyLength = delta.out.position - DELTA_HEADER_BYTES;
      const dh: DeltaHeader = {
        from: prev.header.version, to: version, imageId: keys.imageId, fromRoot: prev.header.rootHash, toRoot: header.rootHash, signer: keys.signPublic,
        runCount, changedRuns: delta.writer.runs, bodyLength, bodyHash: delta.hash.digest(), created: header.created,
      };
      try { await writeAll(deltaFh, serializeDeltaHeader(dh, keys.sign(serializeDeltaHeaderSigned(dh))), 0); } catch (e) { throw fromSystemError(e, delta.file); }
      deltaBytes = DELTA_HEADER_BYTES + bodyLength;
    }
    for (const fh of [packFh, idxFh, deltaFh]) await fh?.close();
    packFh = idxFh = deltaFh = undefined;
    // the delta first (useless without its index), then: fsync both, link the pack, then the
    // index (never over an existing file), fsync the folder
    if (deltaStaging && deltaBytes > 0) {
      await deltaStaging.publish();
      deltaPublished = true;
    } else await deltaStaging?.abort();
    await staging.publish();
    return {
      name, version, imageId: keys.imageId.toString('hex'), virtualSize: size, packPath, indexPath, packBytes, indexBytes,
      deltaPath: deltaBytes > 0 ? deltaPath! : null, deltaBytes,
      previous: previousPath ?? null, packs: packs.map((p) => p.version), stats,
      seconds: Number(process.hrtime.bigint() - started) / 1e9,
    };
  } catch (e) {
    await staging.abort().catch(() => undefined);
    // a delta published for an index that was not: ours (its name was free when we began)
    if (deltaPublished && deltaPath) await fs.promises.unlink(deltaPath).catch(() => undefined);
    throw e;
  } finally {
    for (const fh of [packFh, idxFh, deltaFh]) await fh?.close().catch(() => undefined);
    await staging.abort().catch(() => undefined);
    await deltaStaging?.abort().catch(() => undefined);
    await prev?.close();
    await prevPacks?.close();
    await pool?.close();
  }
}

async function writeAll(fh: fs.promises.FileHandle, b: Buffer, at: number): Promise<void> {
  for (let done = 0; done < b.length;) done += (await fh.write(b, done, b.length - done, at + done)).bytesWritten;
}

/** Move `length` bytes of a file from `from` down to `to` (< from), front to back. */
async function moveDown(fh: fs.promises.FileHandle, from: number, to: number, length: number, file: string): Promise<void> {
  const chunk = Buffer.allocUnsafe(Math.min(length, 4 * 1024 * 1024));
  try {
    for (let at = 0; at < length;) {
      const n = Math.min(chunk.length, length - at);
      const { bytesRead } = await fh.read(chunk, 0, n, from + at);
      if (bytesRead !== n) throw new MedvError('EIO', 'index file shrank while being written', { file });
      await writeAll(fh, chunk.subarray(0, n), to + at);
      at += n;
    }
  } catch (e) { throw fromSystemError(e, file); }
}
