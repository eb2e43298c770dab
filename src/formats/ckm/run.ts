/**
 * A run record of the .ckm.index table: the blocks of one 1 MiB run of the virtual disk.
 * Pure parse/serialize (zstd and BLAKE2b are computed here, nothing is read or written).
 *
 * Uncompressed, canonical layout (columns, so that zstd finds the small fields together):
 *   u8       record format (1)
 *   u16 LE   slots: blocks in this run (256; fewer in the last run of a disk)
 *   bitmap   ceil(slots/8) bytes, bit i (LSB first) set = block i is not all zero; padding bits 0
 *   ids      n x 16 bytes, the keyed BLAKE2b-128 id of each non-zero block, in LBA order
 *   flags    n bytes: bits 0-1 kind (0 zstd, 1 raw, 2 delta), bit 2 "contiguous": the block is
 *            stored right after the previous entry of this run, in the same pack; bits 3-7 zero
 *   lengths  n varints: stored length (payload + 16-byte tag)
 *   places   for each entry without "contiguous": varint pack version, varint offset in that pack
 *   bases    for each delta entry: base id (16), u8 base kind (0 zstd, 1 raw), varint pack,
 *            varint offset, varint length of the stored base block
 * A run whose blocks are all zero has no record at all (length 0 in the run directory).
 *
 * Stored with zstd; its hash is BLAKE2b-128 of the uncompressed bytes, so a run that did not change
 * between two versions has the same hash whatever zstd did (what lets a client holding version N
 * fetch only the runs whose hash changed). Offsets are absolute file offsets in the pack named by
 * its version; the pack versions are those listed in the index header.
 */
import { MedvError } from '../../core/errors.js';
import {
  type BlockKind, type CkmContext, CKM_ID_BYTES, CKM_MAX_STORED, CKM_MIN_STORED, CKM_RUN_BLOCKS, KIND_BY_CODE, KIND_CODE,
  Reader, Writer, ckmError,
} from './common.js';
import { PACK_HEADER_SIZE } from './pack.js';
import { blake2b } from './hash.js';
import { zstdCompress, zstdDecompress } from './zstd.js';

export const RUN_RECORD_FORMAT = 1;
/**
 * zstd level of stored run records. Their bulk is block ids (random bytes): level 3 stores them
 * within 0.4% of level 19 (a 768 MiB /usr disk: 2,616,614 against 2,606,411 bytes) at a fiftieth
 * of the time. A record's hash is over its uncompressed bytes, so either level gives the same
 * index; a client that rebuilds a record compresses it at this level to match the stored length.
 */
export const RUN_RECORD_LEVEL = 3;
export const RUN_HASH_BYTES = 16;
const FLAG_KIND_MASK = 0x03;
const FLAG_CONTIGUOUS = 0x04;
/** Bound of one uncompressed record: header, bitmap, and per entry id, flags, length, place, base. */
export const RUN_RECORD_MAX = 3 + CKM_RUN_BLOCKS / 8 + CKM_RUN_BLOCKS * (CKM_ID_BYTES + 1 + 2 + 16 + CKM_ID_BYTES + 1 + 8 + 8 + 2);
/** Bound of one compressed record (zstd never grows data by more than a few hundred bytes here). */
export const RUN_RECORD_COMPRESSED_MAX = RUN_RECORD_MAX + 1024;

/** Where a stored block lives. */
export interface BlockPlace {
  /** Version number of the pack (`<NAME>_<pack>.ckm`). */
  pack: number;
  /** Absolute offset in that pack file. */
  offset: number;
  /** Stored bytes (payload + tag). */
  length: number;
}

export interface RunEntry {
  /** Block number inside the run (0..slots-1). */
  slot: number;
  id: Buffer;
  kind: BlockKind;
  place: BlockPlace;
  /** For kind delta: the block it was compressed against (always a zstd or raw block). */
  base?: { id: Buffer; kind: 'zstd' | 'raw'; place: BlockPlace };
}

export interface RunRecord {
  slots: number;
  /** Non-zero blocks in slot order. */
  entries: RunEntry[];
}

/** What the run directory needs: hash of the canonical bytes and the compressed bytes. */
export interface EncodedRun {
  hash: Buffer;
  /** Empty for a run of zeros. */
  compressed: Buffer;
}

export function runHash(raw: Buffer): Buffer {
  return blake2b(raw, RUN_HASH_BYTES);
}

/** Hash of a run of zeros (no record). */
export const ZERO_RUN_HASH = runHash(Buffer.alloc(0));

function checkPlace(p: BlockPlace, what: string): void {
  if (!Number.isSafeInteger(p.pack) || p.pack < 1) throw new MedvError('EINVAL_ARG', `${what}: bad pack version ${p.pack}`);
  if (!Number.isSafeInteger(p.offset) || p.offset < PACK_HEADER_SIZE) throw new MedvError('EINVAL_ARG', `${what}: bad offset ${p.offset}`);
  if (!Number.isSafeInteger(p.length) || p.length < CKM_MIN_STORED || p.length > CKM_MAX_STORED) throw new MedvError('EINVAL_ARG', `${what}: bad length ${p.length}`);
}

/** Canonical bytes of a run record (empty for a run with no entries). */
export function serializeRunRecord(rec: RunRecord): Buffer {
  if (!Number.isInteger(rec.slots) || rec.slots < 1 || rec.slots > CKM_RUN_BLOCKS) throw new MedvError('EINVAL_ARG', `run slots ${rec.slots} out of range`);
  if (rec.entries.length === 0) return Buffer.alloc(0);
  const w = new Writer();
  w.u8(RUN_RECORD_FORMAT);
  w.u16(rec.slots);
  const bitmap = Buffer.alloc(Math.ceil(rec.slots / 8));
  let last = -1;
  for (const e of rec.entries) {
    if (!Number.isInteger(e.slot) || e.slot <= last || e.slot >= rec.slots) throw new MedvError('EINVAL_ARG', `run entry slot ${e.slot} out of order or range`);
    if (!Buffer.isBuffer(e.id) || e.id.length !== CKM_ID_BYTES) throw new MedvError('EINVAL_ARG', 'block id must be 16 bytes');
    checkPlace(e.place, `slot ${e.slot}`);
    last = e.slot;
    bitmap[e.slot >> 3] |= 1 << (e.slot & 7);
  }
  w.bytes(bitmap);
  for (const e of rec.entries) w.bytes(e.id);
  const contiguous = rec.entries.map((e, i) => {
    if (i === 0) return false;
    const p = rec.entries[i - 1].place;
    return e.place.pack === p.pack && e.place.offset === p.offset + p.length;
  });
  rec.entries.forEach((e, i) => w.u8(KIND_CODE[e.kind] | (contiguous[i] ? FLAG_CONTIGUOUS : 0)));
  for (const e of rec.entries) w.varint(e.place.length);
  rec.entries.forEach((e, i) => {
    if (contiguous[i]) return;
    w.varint(e.place.pack);
    w.varint(e.place.offset);
  });
  for (const e of rec.entries) {
    if (e.kind !== 'delta') {
      if (e.base) throw new MedvError('EINVAL_ARG', `slot ${e.slot}: only delta blocks have a base`);
      continue;
    }
    if (!e.base) throw new MedvError('EINVAL_ARG', `slot ${e.slot}: a delta block needs a base`);
    if (e.base.id.length !== CKM_ID_BYTES) throw new MedvError('EINVAL_ARG', 'base block id must be 16 bytes');
    checkPlace(e.base.place, `slot ${e.slot} base`);
    w.bytes(e.base.id);
    w.u8(KIND_CODE[e.base.kind]);
    w.varint(e.base.place.pack);
    w.varint(e.base.place.offset);
    w.varint(e.base.place.length);
  }
  return w.done();
}

export function encodeRunRecord(rec: RunRecord, level = RUN_RECORD_LEVEL): EncodedRun {
  const raw = serializeRunRecord(rec);
  if (raw.length === 0) return { hash: ZERO_RUN_HASH, compressed: Buffer.alloc(0) };
  return { hash: runHash(raw), compressed: Buffer.from(zstdCompress(raw, level)) };
}

/** Limits the parser checks every place against: the packs the index header lists. */
export interface RunLimits {
  slots: number;
  /** Pack version -> pack file length. */
  packs: ReadonlyMap<number, number>;
}

/** A place a parsed index names, checked against the packs its header lists (shared by run records and index deltas). */
export function checkStoredPlace(p: BlockPlace, packs: ReadonlyMap<number, number>, what: string, ctx: CkmContext | undefined, at?: number): void {
  const rel = at ?? 0;
  if (p.length < CKM_MIN_STORED || p.length > CKM_MAX_STORED) throw ckmError('EFORMAT', `${what}: stored length ${p.length} outside ${CKM_MIN_STORED}..${CKM_MAX_STORED}`, ctx, rel);
  const packLength = packs.get(p.pack);
  if (packLength === undefined) throw ckmError('ECORRUPT', `${what}: pack ${p.pack} is not listed in the index header`, ctx, rel);
  if (p.offset < PACK_HEADER_SIZE) throw ckmError('ECORRUPT', `${what}: offset ${p.offset} inside the pack header`, ctx, rel);
  if (p.offset + p.length > packLength) {
    throw ckmError('ECORRUPT', `${what}: block at ${p.offset}+${p.length} lies past the end of pack ${p.pack} (${packLength} bytes)`, ctx, rel);
  }
}

function checkPlaceRead(p: BlockPlace, limits: RunLimits, what: string, r: Reader): void {
  checkStoredPlace(p, limits.packs, what, r.ctx);
}

/** Parse canonical (uncompressed) run record bytes. */
export function parseRunRecord(raw: Buffer, limits: RunLimits, ctx?: CkmContext): RunRecord {
  if (raw.length === 0) return { slots: limits.slots, entries: [] };
  const r = new Reader(raw, ctx, 'run record');
  const fmt = r.u8();
  if (fmt !== RUN_RECORD_FORMAT) throw ckmError('EVERSION', `run record format ${fmt} is not supported`, ctx, 0);
  const slots = r.u16();
  if (slots !== limits.slots) throw ckmError('EFORMAT', `run record has ${slots} slots, expected ${limits.slots}`, ctx, 1);
  const bitmap = r.bytes(Math.ceil(slots / 8));
  const slotList: number[] = [];
  for (let i = 0; i < bitmap.length * 8; i++) {
    if (bitmap[i >> 3] & (1 << (i & 7))) {
      if (i >= slots) throw ckmError('EFORMAT', 'run bitmap has bits past the last slot', ctx, 3 + (i >> 3));
      slotList.push(i);
    }
  }
  const n = slotList.length;
  if (n === 0) throw ckmError('EFORMAT', 'run record with no blocks (a zero run has no record)', ctx, 3);
  const entries: RunEntry[] = slotList.map((slot) => ({ slot, id: r.bytes(CKM_ID_BYTES), kind: 'zstd' as BlockKind, place: { pack: 0, offset: 0, length: 0 } }));
  const flags: number[] = [];
  for (let i = 0; i < n; i++) {
    const at = r.pos;
    const f = r.u8();
    if ((f & ~(FLAG_KIND_MASK | FLAG_CONTIGUOUS)) !== 0 || (f & FLAG_KIND_MASK) >= KIND_BY_CODE.length) throw ckmError('EFORMAT', `bad block flags 0x${f.toString(16)}`, ctx, at);
    if (i === 0 && (f & FLAG_CONTIGUOUS)) throw ckmError('EFORMAT', 'first block of a run marked contiguous', ctx, at);
    entries[i].kind = KIND_BY_CODE[f & FLAG_KIND_MASK];
    flags.push(f);
  }
  for (let i = 0; i < n; i++) entries[i].place.length = r.varint('stored length');
  for (let i = 0; i < n; i++) {
    const e = entries[i];
    if (flags[i] & FLAG_CONTIGUOUS) {
      const p = entries[i - 1].place;
      e.place.pack = p.pack;
      e.place.offset = p.offset + p.length;
    } else {
      e.place.pack = r.varint('pack version');
      e.place.offset = r.varint('block offset');
      const p = i > 0 ? entries[i - 1].place : undefined;
      if (p && p.pack === e.place.pack && p.offset + p.length === e.place.offset) {
        // canonical form only: the same run always has the same bytes, hence the same hash
        throw ckmError('EFORMAT', `slot ${e.slot}: place written out where "contiguous" says it`, ctx);
      }
    }
    checkPlaceRead(e.place, limits, `slot ${e.slot}`, r);
    if (e.kind === 'raw' && e.place.length !== CKM_MAX_STORED) throw ckmError('EFORMAT', `slot ${e.slot}: raw block of ${e.place.length} bytes`, ctx);
  }
  for (const e of entries) {
    if (e.kind !== 'delta') continue;
    const id = r.bytes(CKM_ID_BYTES);
    const at = r.pos;
    const k = r.u8();
    if (k !== KIND_CODE.zstd && k !== KIND_CODE.raw) throw ckmError('EFORMAT', `slot ${e.slot}: base block kind ${k} (a base must be a whole block)`, ctx, at);
    const place = { pack: r.varint('base pack'), offset: r.varint('base offset'), length: r.varint('base length') };
    checkPlaceRead(place, limits, `slot ${e.slot} base`, r);
    e.base = { id, kind: KIND_BY_CODE[k] as 'zstd' | 'raw', place };
  }
  if (r.remaining !== 0) throw ckmError('EFORMAT', `${r.remaining} trailing bytes in run record`, ctx, r.pos);
  return { slots, entries };
}

/**
 * Decompress a stored run record, check it against the hash the (signed) run directory gives,
 * then parse it. A record that does not match its hash is ECHECKSUM before any field is read.
 */
export function decodeRunRecord(compressed: Buffer, expectedHash: Buffer, limits: RunLimits, ctx?: CkmContext): RunRecord {
  if (compressed.length > RUN_RECORD_COMPRESSED_MAX) throw ckmError('EFORMAT', `run record of ${compressed.length} bytes is larger than any valid one`, ctx);
  const raw = compressed.length === 0 ? Buffer.alloc(0) : zstdDecompress(compressed, RUN_RECORD_MAX, 'run record', undefined, { file: ctx?.file, offset: ctx?.offset });
  if (!runHash(raw).equals(expectedHash)) throw ckmError('ECHECKSUM', 'run record does not match its hash in the run directory', ctx);
  return parseRunRecord(raw, limits, ctx);
}
