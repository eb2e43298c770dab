/**
 * Getting an image index from a repository: the header first (its signature checked against the
 * trusted keys before anything else is believed), then the run directory (root hash), then only
 * the run records no local index already holds: a record is addressed by its run hash, so a
 * record of an earlier index (a seed folder's index, the index a disk was fetched from) with the
 * same hash is copied instead of fetched. The result is a byte-exact local copy of the index,
 * opened with IndexFile (each record checked against its hash when read).
 */
import * as fs from 'node:fs';
import { MedvError, fromSystemError } from '../core/errors.js';
import {
  DIR_ENTRY_BYTES, INDEX_MAX_HEADER, type ParsedIndexHeader, indexFileLength, parseIndexHeader, parseRunDirectory, runHash, zstdDecompress,
  RUN_RECORD_MAX,
} from '../formats/ckm/index.js';
import { IndexFile, verifyIndexSignature } from '../pack/indexfile.js';
import type { RemoteFile } from './remote.js';

/** First request for an index: enough for its header and a small disk's run directory. */
const HEAD_BYTES = 8192;

export interface IndexFetchResult {
  index: IndexFile;
  /** Run records copied from local indexes / fetched. */
  reusedRecords: number;
  fetchedRecords: number;
  /** The local copy was already complete (a restarted fetch). */
  cached: boolean;
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

/**
 * Fetch `file` into the local copy `dest` (written under dest.tmp, renamed when complete),
 * reusing run records of `previous` local indexes by run hash.
 */
export async function fetchIndex(file: RemoteFile, dest: string, trusted: Buffer[], previous: string[], known?: { header: ParsedIndexHeader; head: Buffer; size: number }): Promise<IndexFetchResult> {
  const { header, head, size } = known ?? await fetchIndexHeader(file, trusted);
  const cachedCopy = await completeCopy(dest, header, head, trusted);
  if (cachedCopy) return { index: cachedCopy, reusedRecords: 0, fetchedRecords: 0, cached: true };

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

  // Records other local indexes hold, by run hash.
  const have = new Map<string, { path: string; offset: number; length: number }>();
  for (const p of previous) {
    let idx: IndexFile | undefined;
    try {
      idx = await IndexFile.open(p);
      await idx.verify(trusted);
      const d = idx.runDirectory;
      for (let r = 0; r < d.hashes.length; r++) if (d.lengths[r] > 0) have.set(d.hashes[r].toString('hex'), { path: p, offset: d.offsets[r], length: d.lengths[r] });
    } catch {
      // an unreadable or untrusted earlier index is simply not used
    } finally {
      await idx?.close();
    }
  }

  const tmp = `${dest}.tmp`;
  await fs.promises.rm(tmp, { force: true });
  let fh: fs.promises.FileHandle;
  try { fh = await fs.promises.open(tmp, 'wx', 0o600); } catch (e) { throw fromSystemError(e, tmp); }
  let reused = 0;
  let fetched = 0;
  try {
    await fh.write(head.subarray(0, H), 0, H, 0);
    await fh.write(directory, 0, dirBytes, H);
    const wanted: Array<{ offset: number; length: number; run: number }> = [];
    for (let run = 0; run < header.runCount; run++) {
      const length = dir.lengths[run];
      if (length === 0) continue;
      const offset = dir.offsets[run];
      if (head.length >= offset + length) {
        await fh.write(head, offset, length, offset);
        fetched++; // came with the header
        continue;
      }
      const prev = have.get(dir.hashes[run].toString('hex'));
      if (prev && prev.length === length) {
        const bytes = await readRange(prev.path, prev.offset, length);
        // the same record bytes: checked here, so a stale or damaged local copy is fetched instead
        if (bytes && recordMatches(bytes, dir.hashes[run])) {
          await fh.write(bytes, 0, length, offset);
          reused++;
          continue;
        }
      }
      wanted.push({ offset, length, run });
    }
    await file.fetch(wanted, size, async (p, data) => {
      await fh.write(data, 0, data.length, p.offset);
      fetched++;
    });
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await fs.promises.rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  try { await fs.promises.rename(tmp, dest); } catch (e) { throw fromSystemError(e, dest); }
  const index = await IndexFile.open(dest);
  try {
    await index.verify(trusted);
  } catch (e) {
    await index.close();
    throw e;
  }
  return { index, reusedRecords: reused, fetchedRecords: fetched, cached: false };
}

function recordMatches(compressed: Buffer, hash: Buffer): boolean {
  try {
    return runHash(zstdDecompress(compressed, RUN_RECORD_MAX, 'run record')).equals(hash);
  } catch {
    return false;
  }
}
