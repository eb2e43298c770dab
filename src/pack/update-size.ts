/**
 * What a version of an image costs to publish and to download, computed from indexes alone (no
 * pack byte is read, no key is needed): the blocks this version's own pack stores, and the bytes
 * a client holding the previous version fetches to update, as src/transfer does it:
 *   - the index header and run directory, plus each run record whose hash the previous index does
 *     not have (records with a known hash are copied from the local index);
 *   - every block whose id the previous version does not hold (the client seeds from its disk),
 *     counted once per stored place, and the base of a delta block when that is missing too.
 * The transfer may read a few bytes more than this (ranges closer than its gap are merged).
 * Each index's signature is checked against the signer it names (the server's check of what it
 * serves; whether that signer is trusted is for clients to decide).
 */
import { CKM_BLOCK_SIZE, DIR_ENTRY_BYTES } from '../formats/ckm/index.js';
import { IndexFile } from './indexfile.js';

export interface VersionCost {
  version: number;
  /** Non-zero blocks of the disk, and its virtual size. */
  blocks: number;
  virtualSize: number;
  /** Blocks stored in this version's own pack (the rest are references to earlier packs or dedup). */
  newBlocks: number;
  newBytes: number;
  /** Bytes fetched by a client that holds version `from` (null: holds nothing; a first install). */
  update: { from: number | null; blocks: number; blockBytes: number; indexBytes: number; bytes: number };
}

const key = (id: Buffer) => id.toString('latin1');

async function opened(path: string): Promise<IndexFile> {
  const ix = await IndexFile.open(path);
  try {
    await ix.verify([ix.header.signer]);
    return ix;
  } catch (e) {
    await ix.close();
    throw e;
  }
}

/** The ids and run hashes of an index (what a client holding it has). */
async function holdings(path: string): Promise<{ ids: Set<string>; runs: Set<string>; version: number }> {
  const ix = await opened(path);
  try {
    const ids = new Set<string>();
    for await (const { record } of ix.runs()) for (const e of record.entries) ids.add(key(e.id));
    return { ids, runs: new Set(ix.runDirectory.hashes.map(key)), version: ix.header.version };
  } finally {
    await ix.close();
  }
}

/** The cost of the version indexed at `indexPath`, for a client that holds the version at `previousPath` (or nothing). */
export async function versionCost(indexPath: string, previousPath?: string): Promise<VersionCost> {
  const prev = previousPath ? await holdings(previousPath) : { ids: new Set<string>(), runs: new Set<string>(), version: null };
  const ix = await opened(indexPath);
  try {
    const h = ix.header;
    const dir = ix.runDirectory;
    let indexBytes = h.headerLength + h.runCount * DIR_ENTRY_BYTES;
    for (let r = 0; r < h.runCount; r++) if (!prev.runs.has(key(dir.hashes[r]))) indexBytes += dir.lengths[r];
    let blocks = 0;
    let newBlocks = 0;
    let newBytes = 0;
    const own = new Set<string>();
    const wanted = new Map<string, number>();
    const want = (id: Buffer, place: { pack: number; offset: number; length: number }) => {
      if (!prev.ids.has(key(id))) wanted.set(`${place.pack}:${place.offset}`, place.length);
    };
    for await (const { record } of ix.runs()) {
      for (const e of record.entries) {
        blocks++;
        const at = `${e.place.pack}:${e.place.offset}`;
        if (e.place.pack === h.version && !own.has(at)) { own.add(at); newBlocks++; newBytes += e.place.length; }
        want(e.id, e.place);
        if (e.base && !prev.ids.has(key(e.id))) want(e.base.id, e.base.place);
      }
    }
    const blockBytes = [...wanted.values()].reduce((n, l) => n + l, 0);
    return {
      version: h.version,
      blocks,
      virtualSize: h.virtualSize,
      newBlocks,
      newBytes,
      update: { from: prev.version, blocks: wanted.size, blockBytes, indexBytes, bytes: blockBytes + indexBytes },
    };
  } finally {
    await ix.close();
  }
}

/** Bytes of disk a version describes (for ratios: update bytes against the whole disk). */
export const diskBytes = (c: VersionCost) => c.blocks * CKM_BLOCK_SIZE;
