/**
 * Getting an image index from a repository: the header first (its signature checked against the
 * trusted keys before anything else is believed), then the run directory (root hash), then the run
 * records, each from the cheapest place that has it:
 *
 *   1. a local index (a seed folder's, the one a disk seed was fetched from) that holds a record
 *      with the same run hash: copied (recompressed when it was stored at another zstd level);
 *   2. the signed index delta `<NAME>_<N>.ckm.index-from-<M>`, when a local index of version M of
 *      the image is here: N's changed records are rebuilt from M's by the edits it lists (a client
 *      one version behind then downloads ~20 bytes per changed block instead of whole records);
 *   3. the remaining records, with range requests (contiguous, so one or a few ranges).
 *
 * Every record that does not come from the index file itself is checked against its hash in the
 * signed run directory, and must compress to the length the directory gives; otherwise it is
 * fetched. The local copy therefore has N's header and directory and records that decode to N's
 * hashes (byte-exact unless a record was rebuilt), and IndexFile checks each record again on use.
 * A delta that cannot be used (absent, untrusted, damaged, larger than the records it replaces) is
 * reported and skipped: the records are fetched instead.
 */
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { MedvError } from '../core/errors.js';
import { openAtomicSync } from '../core/fsio.js';
import {
  DELTA_HEADER_BYTES, DIR_ENTRY_BYTES, INDEX_MAX_HEADER, type ParsedIndexHeader, RUN_RECORD_LEVEL, RUN_RECORD_MAX, type RunRecord, applyDeltaRun,
  deltaBodyHash, deltaFileName, indexFileLength, parseDeltaBody, parseDeltaHeader, parseIndexHeader, parseRunDirectory, runHash, runSlots,
  serializeRunRecord, zstdCompress, zstdDecompress,
} from '../formats/ckm/index.js';
import { IndexFile, verifyDeltaSignature, verifyIndexSignature } from '../pack/indexfile.js';
import type { RemoteFile } from './remote.js';

const fsWrite = promisify(fs.write);

/** First request for an index (or a delta): enough for its header and a small disk's run directory. */
const HEAD_BYTES = 8192;
/** Records stored at another level than today's (indexes packed before it changed) are recompressed at these. */
const RECORD_LEVELS = [RUN_RECORD_LEVEL, 19];

export interface IndexFetchResult {
  index: IndexFile;
  /** Run records copied from local indexes / fetched / rebuilt from the delta. */
  reusedRecords: number;
  fetchedRecords: number;
  deltaRecords: number;
  /** The delta used (its name), or why none was. */
  delta: string;
  /** The local copy was already complete (a restarted fetch). */
  cached: boolean;
}

export interface IndexFetchOptions {
  onWarning?: (message: string) => void;
}

/** Header of the remote index, signature checked. */
export async function fetchIndexHeader(file: RemoteFile, trusted: Buffer[]): Promise<{ header: ParsedIndexHeader; head: Buffer; size: number }> {
  let { data, size } = await file.readHead(HEAD_BYTES);
  let header: ParsedIndexHeader;
  try {
    header = parseIndexHeader(data, { file: file.name });
  } catch (e) {
    if (!(e instanceof MedvError) || e.code !== 'ETRUNCATED' || data.length >= size || data.length >= INDEX_MAX_HEADER) throw e;
    ({ data, size } = await file.readHead(INDEX_MAX_HEADER));
    header = parseIndexHeader(data, { file: file.name });
  }
  verifyIndexSignature(header, trusted, file.name);
  const expected = indexFileLength(header);
  if (size < expected) throw new MedvError('ETRUNCATED', `index is ${size} bytes, its header says ${expected}`, { file: file.name, offset: size });
  if (size > expected) throw new MedvError('ECORRUPT', `index has ${size - expected} bytes past its end`, { file: file.name, offset: expected });
  return { header, head: data, size };
}

async function readRange(path: string, offset: number, length: number): Promise<Buffer | undefined> {
  try {
    const fh = await fs.promises.open(path, 'r');
    try {
      const b = Buffer.alloc(length);
      const { bytesRead } = await fh.read(b, 0, length, offset);
      return bytesRead === length ? b : undefined;
    } finally {
      await fh.close();
    }
  } catch {
    return undefined;
  }
}

/** Does this local file already hold the whole index (same signed header, same length)? */
async function completeCopy(path: string, header: ParsedIndexHeader, head: Buffer, trusted: Buffer[]): Promise<IndexFile | undefined> {
  if (!fs.existsSync(path)) return undefined;
  const mine = await readRange(path, 0, header.headerLength);
  if (!mine || !mine.equals(head.subarray(0, header.headerLength))) return undefined;
  try {
    const idx = await IndexFile.open(path);
    await idx.verify(trusted).catch(async (e) => { await idx.close(); throw e; });
    return idx;
  } catch {
    return undefined;
  }
}

/** The stored form of a record with hash `hash` and uncompressed bytes `raw`, `length` bytes long as the directory says; undefined when no level gives that length. */
function storedForm(raw: Buffer, length: number): Buffer | undefined {
  for (const level of RECORD_LEVELS) {
    const c = zstdCompress(raw, level);
    if (c.length === length) return Buffer.from(c);
  }
  return undefined;
}

function decompressRecord(compressed: Buffer, hash: Buffer): Buffer | undefined {
  try {
    const raw = zstdDecompress(compressed, RUN_RECORD_MAX, 'run record');
    return runHash(raw).equals(hash) ? raw : undefined;
  } catch {
    return undefined;
  }
}

/** Local indexes of this image, verified: their records by run hash, and the newest below `version` (a delta's base). */
async function localIndexes(previous: string[], trusted: Buffer[], header: ParsedIndexHeader) {
  const have = new Map<string, { path: string; offset: number; length: number }>();
  let base: IndexFile | undefined;
  for (const p of previous) {
    let idx: IndexFile | undefined;
    try {
      idx = await IndexFile.open(p);
      await idx.verify(trusted);
      const d = idx.runDirectory;
      for (let r = 0; r < d.hashes.length; r++) if (d.lengths[r] > 0) have.set(d.hashes[r].toString('hex'), { path: p, offset: d.offsets[r], length: d.lengths[r] });
      const h = idx.header;
      if (h.imageId.equals(header.imageId) && h.name === header.name && h.version < header.version && (!base || h.version > base.header.version)) {
        await base?.close();
        base = idx;
        idx = undefined;
      }
    } catch {
      // an unreadable or untrusted earlier index is simply not used
    } finally {
      await idx?.close();
    }
  }
  return { have, base };
}

/**
 * Fetch `file` into the local copy `dest` (written under a temporary name, renamed when complete),
 * reusing run records of `previous` local indexes by run hash and rebuilding changed ones from the
 * index delta of the newest of them.
 */
export async function fetchIndex(file: RemoteFile, dest: string, trusted: Buffer[], previous: string[], known?: { header: ParsedIndexHeader; head: Buffer; size: number }, opts: IndexFetchOptions = {}): Promise<IndexFetchResult> {
  const { header, head, size } = known ?? await fetchIndexHeader(file, trusted);
  const cachedCopy = await completeCopy(dest, header, head, trusted);
  if (cachedCopy) return { index: cachedCopy, reusedRecords: 0, fetchedRecords: 0, deltaRecords: 0, delta: 'none: the local copy is complete', cached: true };

  const H = header.headerLength;
  const dirBytes = header.runCount * DIR_ENTRY_BYTES;
  let directory: Buffer;
  if (head.length >= H + dirBytes) directory = head.subarray(H, H + dirBytes);
  else {
    const parts: Buffer[] = [];
    await file.fetch([{ offset: H, length: dirBytes }], size, (_p, d) => { parts.push(d); });
    directory = parts[0];
  }
  const dir = parseRunDirectory(directory, header, { file: file.name, offset: H });
  const { have, base } = await localIndexes(previous, trusted, header);

  const out = openAtomicSync(dest, { mode: 0o600 });
  const write = async (b: Buffer, at: number) => {
    for (let done = 0; done < b.length;) done += (await fsWrite(out.fd, b, done, b.length - done, at + done)).bytesWritten;
  };
  let reused = 0;
  let fetched = 0;
  let fromDelta = 0;
  let deltaNote = 'none: no earlier index of this image here';
  try {
    await write(head.subarray(0, H), 0);
    await write(directory, H);
    const missing = new Map<number, { offset: number; length: number; run: number }>();
    for (let run = 0; run < header.runCount; run++) {
      const length = dir.lengths[run];
      if (length === 0) continue;
      const offset = dir.offsets[run];
      if (head.length >= offset + length) {
        await write(head.subarray(offset, offset + length), offset);
        fetched++; // came with the header
        continue;
      }
      const prev = have.get(dir.hashes[run].toString('hex'));
      if (prev) {
        const bytes = await readRange(prev.path, prev.offset, prev.length);
        // checked here, so a stale or damaged local copy is fetched instead
        const raw = bytes && decompressRecord(bytes, dir.hashes[run]);
        const stored = raw && (prev.length === length ? bytes : storedForm(raw, length));
        if (stored) {
          await write(stored, offset);
          reused++;
          continue;
        }
      }
      missing.set(run, { offset, length, run });
    }
    if (base && missing.size > 0) {
      const counted = { rebuilt: 0 };
      try {
        deltaNote = await applyDelta(file, base, header, dir, missing, trusted, write, counted);
      } catch (e) {
        deltaNote = `not used: ${e instanceof Error ? e.message : String(e)}${e instanceof MedvError ? ` [${e.code}]` : ''}`;
        // a repository without deltas is not worth a warning; anything else is
        const absent = e instanceof MedvError && (e.code === 'ENOENT' || (e.code === 'EHTTP' && (e.data.status === 404 || e.data.status === 410)));
        if (absent) deltaNote = `none: the repository has no ${deltaFileName(header.name, base.header.version, header.version)}`;
        else opts.onWarning?.(`index delta ${deltaNote}; fetching the run records instead`);
      } finally {
        fromDelta = counted.rebuilt;
      }
    } else if (base) deltaNote = 'none: no record to fetch';
    await file.fetch([...missing.values()], size, async (p, data) => {
      await write(data, p.offset);
      fetched++;
    });
    out.commit();
  } catch (e) {
    out.abort();
    throw e;
  } finally {
    await base?.close();
  }
  const index = await IndexFile.open(dest);
  try {
    await index.verify(trusted);
  } catch (e) {
    await index.close();
    throw e;
  }
  return { index, reusedRecords: reused, fetchedRecords: fetched, deltaRecords: fromDelta, delta: deltaNote, cached: false };
}

/**
 * The index delta from `base`'s version: fetched (first its head, the rest only when it is smaller
 * than the records it replaces), signature, root hashes and body hash checked, then each changed
 * run rebuilt from `base`'s record, checked against N's run hash and stored length, written, and
 * taken out of `missing` (counted in `counted`, which holds what was done when it throws).
 */
async function applyDelta(
  indexFile: RemoteFile, base: IndexFile, header: ParsedIndexHeader, dir: ReturnType<typeof parseRunDirectory>,
  missing: Map<number, { offset: number; length: number }>, trusted: Buffer[], write: (b: Buffer, at: number) => Promise<void>, counted: { rebuilt: number },
): Promise<string> {
  const name = deltaFileName(header.name, base.header.version, header.version);
  const file = indexFile.sibling(name);
  const wanted = [...missing.values()].reduce((s, m) => s + m.length, 0);
  const { data: head, size } = await file.readHead(HEAD_BYTES);
  const dh = parseDeltaHeader(head, { file: file.name });
  verifyDeltaSignature(dh, trusted, file.name);
  if (dh.from !== base.header.version || dh.to !== header.version || !dh.imageId.equals(header.imageId) || !dh.fromRoot.equals(base.header.rootHash) || !dh.toRoot.equals(header.rootHash) || dh.runCount !== header.runCount) {
    throw new MedvError('ECORRUPT', `${name} is not the delta between these two indexes`, { file: file.name, offset: 12 });
  }
  if (size !== DELTA_HEADER_BYTES + dh.bodyLength) throw new MedvError(size < DELTA_HEADER_BYTES + dh.bodyLength ? 'ETRUNCATED' : 'ECORRUPT', `${name} is ${size} bytes, its header says ${DELTA_HEADER_BYTES + dh.bodyLength}`, { file: file.name, offset: Math.min(size, DELTA_HEADER_BYTES + dh.bodyLength) });
  if (dh.bodyLength >= wanted) return `not used: ${name} (${dh.bodyLength} bytes) is not smaller than the ${wanted} bytes of records it replaces`;
  let body: Buffer;
  if (head.length >= size) body = head.subarray(DELTA_HEADER_BYTES, size);
  else {
    body = Buffer.alloc(dh.bodyLength);
    head.copy(body, 0, DELTA_HEADER_BYTES);
    const have = head.length - DELTA_HEADER_BYTES;
    await file.fetch([{ offset: head.length, length: size - head.length }], size, (_p, d) => { d.copy(body, have); });
  }
  if (!deltaBodyHash(body).equals(dh.bodyHash)) throw new MedvError('ECHECKSUM', `${name}: body does not match the hash its signed header gives`, { file: file.name, offset: DELTA_HEADER_BYTES });
  const packs = new Map(header.packs.map((p) => [p.version, p.length]));
  const limits = { runCount: header.runCount, slots: (run: number) => runSlots(header.virtualSize, run), packs };
  const ctx = { file: file.name, offset: DELTA_HEADER_BYTES };
  for (const d of parseDeltaBody(body, dh.changedRuns, limits, ctx)) {
    const m = missing.get(d.run);
    if (!m) continue; // a record this client has by hash already
    const prev: RunRecord | undefined = d.run < base.header.runCount ? await base.run(d.run) : undefined;
    const raw = serializeRunRecord(applyDeltaRun(prev, d, limits.slots(d.run), ctx));
    // the rebuilt record must be N's (its hash in the signed directory) and fit its place
    if (!runHash(raw).equals(dir.hashes[d.run])) throw new MedvError('ECHECKSUM', `${name}: run ${d.run} rebuilt from the delta does not match its hash in the index`, { file: file.name });
    const stored = storedForm(raw, m.length);
    if (!stored) continue; // stored by a zstd this one does not reproduce: fetched
    await write(stored, m.offset);
    missing.delete(d.run);
    counted.rebuilt++;
  }
  return `used: ${name}`;
}

