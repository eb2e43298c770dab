/** Test helpers for packed images: a test-only unpack through the library, and index forgery. */
import { closeSync, ftruncateSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import type { KekSource } from '../../src/crypto/index.js';
import {
  DELTA_HEADER_BYTES, DIR_ENTRY_BYTES, type DeltaHeader, type DeltaRun, DeltaBodyWriter, type RunRecord, decodeRunRecord, deltaBodyHash,
  encodeRunRecord, parseDeltaBody, parseDeltaHeader, parseIndexHeader, parseRunDirectory, rootHashOf, runSlots, serializeDeltaHeader,
  serializeDeltaHeaderSigned, serializeIndexHeader, serializeIndexHeaderSigned, serializeRunDirectory,
} from '../../src/formats/ckm/index.js';
import { type ImageKeys, openImageKeys, openPackedImage } from '../../src/pack/index.js';

export const TEST_KEK: KekSource = { kind: 'passphrase', passphrase: 'pack test passphrase' };
export const kek = () => TEST_KEK;
export const CHEAP = { pwhash: { opslimit: 1, memlimit: 8192 } };

export async function testKeys(dir: string, name: string): Promise<ImageKeys> {
  return openImageKeys(dir, name, kek, { create: true, sign: true, wrap: CHEAP });
}

/**
 * Test-only unpack: every block the library hands back written into a sparse raw file of the
 * virtual size (the next step's fetch writes an .evhd instead; plaintext on disk is for tests).
 */
export async function unpackToRaw(indexPath: string, keyDir: string, out: string, withKek: () => KekSource = kek): Promise<number> {
  const img = await openPackedImage(indexPath, { keyDir, kek: withKek });
  const fd = openSync(out, 'w');
  let n = 0;
  try {
    const size = img.index.header.virtualSize;
    ftruncateSync(fd, size);
    for await (const b of img.blocks()) {
      writeSync(fd, b.data, 0, Math.min(b.data.length, size - b.offset), b.offset);
      n++;
    }
  } finally {
    closeSync(fd);
    await img.close();
  }
  return n;
}

/**
 * Rewrite an index with `edit` applied to its run records, then sign it again with `keys`:
 * what a hostile (or buggy) holder of the signing key could publish.
 */
export function forgeIndex(indexPath: string, keys: ImageKeys, edit: (run: number, rec: RunRecord) => void): void {
  const buf = readFileSync(indexPath);
  const h = parseIndexHeader(buf);
  const dir = parseRunDirectory(buf.subarray(h.headerLength), h);
  const packs = new Map(h.packs.map((p) => [p.version, p.length]));
  const hashes: Buffer[] = [];
  const lengths: number[] = [];
  const records: Buffer[] = [];
  for (let run = 0; run < h.runCount; run++) {
    const rec = decodeRunRecord(buf.subarray(dir.offsets[run], dir.offsets[run] + dir.lengths[run]), dir.hashes[run], { slots: runSlots(h.virtualSize, run), packs });
    edit(run, rec);
    const enc = encodeRunRecord(rec);
    hashes.push(enc.hash);
    lengths.push(enc.compressed.length);
    records.push(enc.compressed);
  }
  const directory = serializeRunDirectory(hashes, lengths);
  const table = Buffer.concat(records);
  const header = { ...h, rootHash: rootHashOf(directory), tableLength: table.length };
  const out = Buffer.concat([serializeIndexHeader(header, keys.sign(serializeIndexHeaderSigned(header))), directory, table]);
  if (out.length !== serializeIndexHeaderSigned(header).length + 64 + h.runCount * DIR_ENTRY_BYTES + table.length) throw new Error('forge length');
  writeFileSync(indexPath, out);
}

/**
 * Rewrite an index delta with `edit` applied to its header fields and its runs (as parsed: an
 * edit whose base is the previous version's block keeps saying so), its body hash recomputed, then
 * signed with `sign` (the console's key, or any other): what a hostile holder of a key could publish.
 * `limits` are the index's (run count, slots, packs), for parsing the runs.
 */
export function forgeDelta(path: string, indexPath: string, sign: (m: Buffer) => Buffer, signer: Buffer, edit: (h: DeltaHeader, runs: DeltaRun[]) => void): void {
  const buf = readFileSync(path);
  const h = parseDeltaHeader(buf);
  const ix = parseIndexHeader(readFileSync(indexPath));
  const limits = { runCount: ix.runCount, slots: (r: number) => runSlots(ix.virtualSize, r), packs: new Map(ix.packs.map((p) => [p.version, p.length])) };
  const runs = [...parseDeltaBody(buf.subarray(DELTA_HEADER_BYTES), h.changedRuns, limits)];
  const header: DeltaHeader = { ...h, signer };
  edit(header, runs);
  const w = new DeltaBodyWriter();
  for (const r of runs) w.add(r.run, r.edits, undefined);
  const body = w.drain();
  const out: DeltaHeader = { ...header, changedRuns: header.changedRuns === h.changedRuns ? runs.length : header.changedRuns, bodyLength: body.length, bodyHash: deltaBodyHash(body) };
  writeFileSync(path, Buffer.concat([serializeDeltaHeader(out, sign(serializeDeltaHeaderSigned(out))), body]));
}
