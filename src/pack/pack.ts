/**
 * packImage: a readable virtual disk -> `<NAME>_<N>.ckm` + `<NAME>_<N>.ckm.index`.
 *
 * Streaming, one 1 MiB run at a time: runs are read and prepared ahead (zero test, keyed id, zstd;
 * in worker threads on a multi-core machine, pool.ts), then consumed in order on the main thread,
 * which alone decides placement and encrypts (the nonce holds the pack offset). All-zero blocks
 * are skipped; a block whose id is already known (an earlier block of this disk, or any block of
 * the previous version's index) is referenced where it is; everything else is appended to the new
 * pack, so the blocks a version adds lie together in LBA order. A changed block whose LBA held a
 * whole block in the previous version is stored as a zstd delta against it when that is smaller.
 *
 * Memory: a few runs in flight (2 per worker), one run record, the pack write buffer (4 MiB), the
 * workers' small heaps, and the map of known block ids (about 100 bytes per distinct non-zero
 * block: the only part that grows, with the amount of distinct data, not with the disk's size).
 *
 * Publication order (crash safety): pack and index are written under temporary names in the output
 * folder and fsynced; then the pack is linked to its final name, then the index (link refuses to
 * replace an existing file); then the temporary names are removed and the folder fsynced. An index
 * therefore never names a pack that is not complete on disk, and a crash leaves at most a pack
 * without an index (harmless) or `.tmp` files.
 */
import * as fs from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { BlockDevice } from '../block/device.js';
import { availableParallelism } from 'node:os';
import { MedvError, fromSystemError } from '../core/errors.js';
import { fsyncDir } from '../core/fsio.js';
import {
  type BlockKind, type BlockPlace, CKM_BLOCK_SIZE, CKM_ID_BYTES, CKM_RUN_BLOCKS, KIND_BY_CODE, CKM_MAX_VIRTUAL_SIZE, CKM_RUN_BYTES, type IndexHeader, PACK_SALT_BYTES,
  type PackRef, type RunEntry, ZSTD_LEVEL, checkImageName, checkImageVersion, encodeRunRecord, indexFileName, packFileName,
  rootHashOf, runCountFor, runSlots, serializeIndexHeader, serializeIndexHeaderSigned, serializePackHeader, serializeRunDirectory, DIR_ENTRY_BYTES,
} from '../formats/ckm/index.js';
import { BlockCodec } from './block.js';
import { IndexFile } from './indexfile.js';
import type { ImageKeys } from './keys.js';
import { PackSet } from './read.js';
import { PreparePool } from './pool.js';
import { type PreparedRun, prepareRun } from './prepare.js';

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
  /** zstd level for blocks (default 3). */
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
  previous: string | null;
  packs: number[];
  stats: PackStats;
  seconds: number;
}

interface Known { kind: BlockKind; place: BlockPlace; base?: RunEntry['base'] }

const WRITE_BUFFER = 4 * 1024 * 1024;

/** Appends to a file through a bounded buffer. */
class Appender {
  private buf = Buffer.allocUnsafe(WRITE_BUFFER);
  private used = 0;
  position: number;
  private flushedTo: number;
  constructor(private readonly fh: fs.promises.FileHandle, start: number, private readonly file: string) {
    this.position = start;
    this.flushedTo = start;
  }

  async append(b: Buffer): Promise<void> {
    if (this.used + b.length > this.buf.length) await this.flush();
    if (b.length > this.buf.length) await this.write(b);
    else { b.copy(this.buf, this.used); this.used += b.length; }
    this.position += b.length;
  }

  private async write(b: Buffer): Promise<void> {
    let done = 0;
    while (done < b.length) {
      const { bytesWritten } = await this.fh.write(b, done, b.length - done, this.flushedTo + done);
      done += bytesWritten;
    }
    this.flushedTo += b.length;
  }

  async flush(): Promise<void> {
    if (this.used === 0) return;
    try { await this.write(this.buf.subarray(0, this.used)); } catch (e) { throw fromSystemError(e, this.file); }
    this.used = 0;
  }
}

/** What prepareRun gives for a run of zeros (every length 0). */
const ZERO_PREPARED: PreparedRun = { ids: new Uint8Array(0), lengths: new Uint32Array(CKM_RUN_BLOCKS), kinds: new Uint8Array(CKM_RUN_BLOCKS), payloads: new Uint8Array(0) };

/**
 * True when the device's allocation map says [offset, offset + length) reads as zeros (an
 * unallocated region of a dynamic VHD, say): the run is then skipped without reading it. A device
 * without extents() is all data.
 */
async function allZero(device: BlockDevice, offset: number, length: number): Promise<boolean> {
  if (!device.extents) return false;
  let at = offset;
  const end = offset + length;
  while (at < end) {
    const list = await device.extents(at, end - at);
    if (list.length === 0) return false;
    for (const e of list) {
      if (!e.zero || !(e.length > 0)) return false;
      at += e.length;
      if (at >= end) return true;
    }
  }
  return true;
}

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
  for (const p of [packPath, indexPath]) if (fs.existsSync(p)) throw new MedvError('EEXIST', `refusing to overwrite ${p}`, { file: p });

  const previousPath = opts.previous === false ? undefined : (opts.previous ?? findPreviousIndex(outDir, name, version));
  let prev: IndexFile | undefined;
  let prevPacks: PackSet | undefined;
  const codec = new BlockCodec(keys, opts.level ?? ZSTD_LEVEL);
  const known = new Map<string, Known>();
  const earlierPacks = new Map<number, PackRef>();

  const tag = randomBytes(6).toString('hex');
  const packTmp = join(outDir, `.${packFileName(name, version)}.${tag}.tmp`);
  const recordsTmp = join(outDir, `.${indexFileName(name, version)}.${tag}.records.tmp`);
  const indexTmp = join(outDir, `.${indexFileName(name, version)}.${tag}.tmp`);
  let packFh: fs.promises.FileHandle | undefined;
  let recFh: fs.promises.FileHandle | undefined;
  let idxFh: fs.promises.FileHandle | undefined;
  let linkedPack = false;
  let pool: PreparePool | undefined;
  const level = opts.level ?? ZSTD_LEVEL;
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
      for await (const { record } of prev.runs()) {
        for (const e of record.entries) {
          const k = e.id.toString('latin1');
          if (!known.has(k)) known.set(k, { kind: e.kind, place: e.place, base: e.base });
        }
      }
    }

    const salt = randomBytes(PACK_SALT_BYTES);
    try {
      packFh = await fs.promises.open(packTmp, 'wx', 0o644);
      recFh = await fs.promises.open(recordsTmp, 'wx+', 0o600);
    } catch (e) { throw fromSystemError(e, outDir); }
    const pack = new Appender(packFh, 0, packTmp);
    await pack.append(serializePackHeader({ version, imageId: keys.imageId, salt }));
    const records = new Appender(recFh, 0, recordsTmp);

    const runCount = runCountFor(size);
    const hashes: Buffer[] = [];
    const lengths: number[] = [];
    const used = new Set<number>([version]);
    const stats: PackStats = { blocks: Math.ceil(size / CKM_BLOCK_SIZE), zeroBlocks: 0, storedBlocks: 0, deltaBlocks: 0, dedupBlocks: 0, reusedBlocks: 0 };
    const zero = Buffer.alloc(CKM_BLOCK_SIZE);
    const deltas = opts.delta ?? true;

    // Pipeline: runs are read and prepared (zero test, id, zstd) ahead, in worker threads when
    // there are several cores; the main thread consumes them in order (dedup, deltas, placement,
    // encryption with the pack offset in the nonce). At most `ahead` runs are in flight.
    const workers = opts.workers ?? defaultWorkers(size);
    pool = workers > 0 ? new PreparePool(workers, keys.idKey, level) : undefined;
    const prepare = (data: Buffer): Promise<PreparedRun> => (pool ? pool.prepare(data) : Promise.resolve(prepareRun(data, keys.idKey, level)));
    const ahead = Math.max(2, 2 * workers);
    const inflight: Array<Promise<{ data: Buffer; prepared: PreparedRun }>> = [];
    let nextRun = 0;
    for (let run = 0; run < runCount; run++) {
      while (nextRun < runCount && inflight.length < ahead) {
        const off = nextRun * CKM_RUN_BYTES;
        const len = Math.min(CKM_RUN_BYTES, size - off);
        const p = allZero(device, off, len).then(async (zero) => {
          if (zero) return { data: Buffer.alloc(0), prepared: ZERO_PREPARED };
          const data = await device.read(off, len);
          return { data, prepared: await prepare(data) };
        });
        p.catch(() => undefined); // awaited in order below; a failure is handled there
        inflight.push(p);
        nextRun++;
      }
      const { data, prepared } = await inflight.shift()!;
      const offset = run * CKM_RUN_BYTES;
      const slots = runSlots(size, run);
      const prevRun = prev && run < prev.header.runCount ? await prev.run(run) : undefined;
      const prevBySlot = new Map<number, RunEntry>(prevRun?.entries.map((e) => [e.slot, e]));
      const entries: RunEntry[] = [];
      let payloadAt = 0;
      for (let slot = 0; slot < slots; slot++) {
        const plen = prepared.lengths[slot];
        if (plen === 0) { stats.zeroBlocks++; continue; }
        const payload = Buffer.from(prepared.payloads.buffer, prepared.payloads.byteOffset + payloadAt, plen);
        payloadAt += plen;
        const id = Buffer.from(prepared.ids.subarray(slot * CKM_ID_BYTES, (slot + 1) * CKM_ID_BYTES));
        const k = id.toString('latin1');
        const hit = known.get(k);
        if (hit) {
          if (hit.place.pack === version) stats.dedupBlocks++; else stats.reusedBlocks++;
          entries.push({ slot, id, kind: hit.kind, place: hit.place, base: hit.base });
          used.add(hit.place.pack);
          if (hit.base) used.add(hit.base.place.pack);
          continue;
        }
        let kind: BlockKind = KIND_BY_CODE[prepared.kinds[slot]];
        let body = payload;
        let base: RunEntry['base'];
        const pe = prevBySlot.get(slot);
        if (deltas && pe && pe.kind !== 'delta' && prevPacks) {
          const stored = await prevPacks.read(pe.place);
          const old = codec.decode(stored, pe.kind, pe.id, prevPacks.salt(pe.place.pack), { file: prevPacks.path(pe.place.pack), offset: pe.place.offset });
          let block = data.subarray(slot * CKM_BLOCK_SIZE, (slot + 1) * CKM_BLOCK_SIZE);
          if (block.length < CKM_BLOCK_SIZE) block = Buffer.concat([block, zero.subarray(block.length)]);
          const d = codec.delta(block, old);
          if (d.length < body.length) {
            kind = 'delta';
            body = d;
            base = { id: pe.id, kind: pe.kind as 'zstd' | 'raw', place: pe.place };
          }
        }
        const stored = codec.seal(body, kind, id, salt, pack.position, base?.id);
        const place: BlockPlace = { pack: version, offset: pack.position, length: stored.length };
        await pack.append(stored);
        if (base) { used.add(base.place.pack); stats.deltaBlocks++; }
        stats.storedBlocks++;
        known.set(k, { kind, place, base });
        entries.push({ slot, id, kind, place, base });
      }
      const enc = encodeRunRecord({ slots, entries });
      hashes.push(enc.hash);
      lengths.push(enc.compressed.length);
      if (enc.compressed.length) await records.append(enc.compressed);
      opts.onProgress?.(Math.min(offset + CKM_RUN_BYTES, size), size);
    }
    await pack.flush();
    await records.flush();
    const packBytes = pack.position;
    const tableLength = records.position;
    await packFh.sync();

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
    const signed = serializeIndexHeaderSigned(header);
    const headerBytes = serializeIndexHeader(header, keys.sign(signed));
    try { idxFh = await fs.promises.open(indexTmp, 'wx', 0o644); } catch (e) { throw fromSystemError(e, indexTmp); }
    const index = new Appender(idxFh, 0, indexTmp);
    await index.append(headerBytes);
    await index.append(directory);
    const chunk = Buffer.allocUnsafe(WRITE_BUFFER);
    for (let at = 0; at < tableLength;) {
      const { bytesRead } = await recFh.read(chunk, 0, Math.min(chunk.length, tableLength - at), at);
      if (bytesRead === 0) throw new MedvError('EIO', 'records file shrank', { file: recordsTmp });
      await index.append(Buffer.from(chunk.subarray(0, bytesRead)));
      at += bytesRead;
    }
    await index.flush();
    await idxFh.sync();
    const indexBytes = index.position;
    if (indexBytes !== headerBytes.length + runCount * DIR_ENTRY_BYTES + tableLength) throw new MedvError('EINTERNAL', 'index length mismatch');

    try { await fs.promises.link(packTmp, packPath); } catch (e) { throw fromSystemError(e, packPath); }
    linkedPack = true;
    try { await fs.promises.link(indexTmp, indexPath); } catch (e) { throw fromSystemError(e, indexPath); }
    await fsyncDir(outDir);
    return {
      name, version, imageId: keys.imageId.toString('hex'), virtualSize: size, packPath, indexPath, packBytes, indexBytes,
      previous: previousPath ?? null, packs: packs.map((p) => p.version), stats,
      seconds: Number(process.hrtime.bigint() - started) / 1e9,
    };
  } catch (e) {
    if (linkedPack) await fs.promises.unlink(packPath).catch(() => undefined);
    throw e;
  } finally {
    for (const fh of [packFh, recFh, idxFh]) await fh?.close().catch(() => undefined);
    for (const p of [packTmp, recordsTmp, indexTmp]) await fs.promises.unlink(p).catch(() => undefined);
    await prev?.close();
    await prevPacks?.close();
    await pool?.close();
  }
}

