/**
 * The index delta `<NAME>_<N>.ckm.index-from-<M>`: what changed in the run records from version M
 * to version N of an image, entry by entry, so that a client holding version M's index rebuilds
 * N's changed records locally instead of downloading them (a scattered update changes nearly every
 * 1 MiB run, and a whole record costs ~18 bytes per block of the run; an edit ~20 bytes per
 * changed block). Pure parse/serialize; the signature itself is made and checked in src/pack.
 *
 * Header (little-endian):
 *   off  size  field
 *     0     8  magic "MEDVCKMD"
 *     8     2  format version (1)
 *    10     2  header length (252)
 *    12     4  from version M (1 .. N-1)
 *    16     4  to version N
 *    20    16  image id
 *    36    32  root hash of M's index (the hash of its run directory, which M's header signs)
 *    68    32  root hash of N's index
 *   100    32  signer: the console's Ed25519 public key
 *   132     4  run count of N
 *   136     4  changed runs C (1 .. run count)
 *   140     8  body length B (1 .. C x DELTA_RUN_MAX)
 *   148    32  BLAKE2b-256 of the body
 *   180     8  created, Unix seconds
 *   188    64  Ed25519 signature of bytes 0 .. 187
 *   252     B  body
 * The file is exactly 252 + B bytes. Trust: signature (trusted key) -> header (both root hashes:
 * the delta applies to exactly one pair of indexes) -> body (its hash) -> each rebuilt record (its
 * hash in N's signed run directory, which the client checks before using it).
 *
 * Body: per changed run, in ascending run order:
 *   varint  run - (previous run + 1)  (the first: the run itself)
 *   varint  edits E (1 .. slots of the run)
 *   E edits, ascending slot:
 *     varint  slot - (previous slot + 1)  (the first of the run: the slot itself)
 *     u8      flags: bits 0-1 kind (0 zstd, 1 raw, 2 delta); bit 2 contiguous (stored right after
 *             the previous entry of this body, same pack); bit 3 zero (the block is now all zero:
 *             no other bit, no other field); bit 4 the base of this delta block is the entry of
 *             M's record at this slot; bits 5-7 zero
 *     unless zero: id (16), varint stored length, and unless contiguous varint pack, varint offset;
 *                  for a delta block without bit 4: base id (16), u8 base kind (0 zstd, 1 raw),
 *                  varint pack, varint offset, varint length
 * Only the canonical encoding parses (minimal varints, "contiguous" wherever it applies).
 */
import { MedvError } from '../../core/errors.js';
import {
  type BlockKind, type CkmContext, CKM_ID_BYTES, CKM_IMAGE_ID_BYTES, CKM_MAX_STORED, CKM_MAX_VERSION, CKM_RUN_BLOCKS, KIND_BY_CODE,
  KIND_CODE, Reader, Writer, checkLength, ckmError, indexFileName,
} from './common.js';
import { blake2b } from './hash.js';
import { PUBLIC_KEY_BYTES, ROOT_HASH_BYTES, SIGNATURE_BYTES } from './index-header.js';
import { type BlockPlace, type RunEntry, type RunRecord, checkStoredPlace } from './run.js';

export const DELTA_MAGIC = Buffer.from('MEDVCKMD', 'latin1');
export const DELTA_FORMAT_VERSION = 1;
export const DELTA_SIGNED_BYTES = 188;
export const DELTA_HEADER_BYTES = DELTA_SIGNED_BYTES + SIGNATURE_BYTES;
export const DELTA_BODY_HASH_BYTES = 32;
/** Bound of one run's part of a body: its two varints and every slot edited with the longest edit. */
export const DELTA_RUN_MAX = 16 + CKM_RUN_BLOCKS * (3 + 1 + CKM_ID_BYTES + 2 + 2 * 8 + CKM_ID_BYTES + 1 + 3 * 8);

const F_KIND = 0x03;
const F_CONTIGUOUS = 0x04;
const F_ZERO = 0x08;
const F_BASE_PREVIOUS = 0x10;

/** `<NAME>_<N>.ckm.index-from-<M>` */
export function deltaFileName(name: string, from: number, to: number): string {
  return `${indexFileName(name, to)}-from-${from}`;
}

export interface DeltaHeader {
  from: number;
  to: number;
  imageId: Buffer;
  fromRoot: Buffer;
  toRoot: Buffer;
  signer: Buffer;
  runCount: number;
  changedRuns: number;
  bodyLength: number;
  bodyHash: Buffer;
  /** Unix seconds. */
  created: number;
}

export interface ParsedDeltaHeader extends DeltaHeader {
  /** The bytes the signature covers. */
  signed: Buffer;
  signature: Buffer;
}

export function deltaBodyHash(body: Buffer): Buffer {
  return blake2b(body, DELTA_BODY_HASH_BYTES);
}

function checkVersions(from: number, to: number): boolean {
  return Number.isSafeInteger(from) && Number.isSafeInteger(to) && from >= 1 && to > from && to <= CKM_MAX_VERSION;
}

export function serializeDeltaHeaderSigned(h: DeltaHeader): Buffer {
  if (!checkVersions(h.from, h.to)) throw new MedvError('EINVAL_ARG', `delta from version ${h.from} to ${h.to}`);
  checkLength('image id', h.imageId, CKM_IMAGE_ID_BYTES);
  checkLength('root hash', h.fromRoot, ROOT_HASH_BYTES);
  checkLength('root hash', h.toRoot, ROOT_HASH_BYTES);
  checkLength('signer public key', h.signer, PUBLIC_KEY_BYTES);
  checkLength('body hash', h.bodyHash, DELTA_BODY_HASH_BYTES);
  if (!Number.isSafeInteger(h.runCount) || h.runCount < 1 || h.runCount > 0xffffffff) throw new MedvError('EINVAL_ARG', `run count ${h.runCount}`);
  if (!Number.isSafeInteger(h.changedRuns) || h.changedRuns < 1 || h.changedRuns > h.runCount) throw new MedvError('EINVAL_ARG', `changed runs ${h.changedRuns}`);
  if (!Number.isSafeInteger(h.bodyLength) || h.bodyLength < 1 || h.bodyLength > h.changedRuns * DELTA_RUN_MAX) throw new MedvError('EINVAL_ARG', `body length ${h.bodyLength}`);
  const w = new Writer();
  w.bytes(DELTA_MAGIC);
  w.u16(DELTA_FORMAT_VERSION);
  w.u16(DELTA_HEADER_BYTES);
  w.u32(h.from);
  w.u32(h.to);
  w.bytes(h.imageId);
  w.bytes(h.fromRoot);
  w.bytes(h.toRoot);
  w.bytes(h.signer);
  w.u32(h.runCount);
  w.u32(h.changedRuns);
  w.u64(h.bodyLength);
  w.bytes(h.bodyHash);
  w.u64(Math.max(0, Math.floor(h.created)));
  return w.done();
}

export function serializeDeltaHeader(h: DeltaHeader, signature: Buffer): Buffer {
  checkLength('signature', signature, SIGNATURE_BYTES);
  return Buffer.concat([serializeDeltaHeaderSigned(h), signature]);
}

/**
 * Parse the header from the first bytes of a delta (more is ignored). Order: magic, format
 * version, header length, then every field. The signature is NOT checked here: the caller verifies
 * `signature` over `signed` with a trusted key before believing anything else.
 */
export function parseDeltaHeader(buf: Buffer, ctx?: CkmContext): ParsedDeltaHeader {
  const r = new Reader(buf, ctx, 'index delta header');
  if (buf.length < DELTA_MAGIC.length || !buf.subarray(0, DELTA_MAGIC.length).equals(DELTA_MAGIC)) {
    if (buf.length < DELTA_MAGIC.length && DELTA_MAGIC.subarray(0, buf.length).equals(buf)) r.need(DELTA_HEADER_BYTES);
    throw ckmError('EFORMAT', 'not a medv index delta (bad magic)', ctx, 0);
  }
  r.pos = 8;
  const fmt = r.u16();
  if (fmt !== DELTA_FORMAT_VERSION) throw ckmError('EVERSION', `index delta format version ${fmt} is not supported (expected ${DELTA_FORMAT_VERSION})`, ctx, 8);
  const hlen = r.u16();
  if (hlen !== DELTA_HEADER_BYTES) throw ckmError('EFORMAT', `index delta header length ${hlen}, expected ${DELTA_HEADER_BYTES}`, ctx, 10);
  r.need(DELTA_HEADER_BYTES - r.pos);
  const from = r.u32();
  const to = r.u32();
  if (!checkVersions(from, to)) throw ckmError('EFORMAT', `index delta from version ${from} to ${to}`, ctx, 12);
  const imageId = r.bytes(CKM_IMAGE_ID_BYTES);
  const fromRoot = r.bytes(ROOT_HASH_BYTES);
  const toRoot = r.bytes(ROOT_HASH_BYTES);
  const signer = r.bytes(PUBLIC_KEY_BYTES);
  const runCount = r.u32();
  if (runCount < 1) throw ckmError('EFORMAT', 'index delta of a disk without runs', ctx, 132);
  const changedRuns = r.u32();
  if (changedRuns < 1 || changedRuns > runCount) throw ckmError('EFORMAT', `index delta changes ${changedRuns} of ${runCount} runs`, ctx, 136);
  const bodyLength = r.u64n('body length');
  if (bodyLength < 1 || bodyLength > changedRuns * DELTA_RUN_MAX) throw ckmError('EFORMAT', `index delta body length ${bodyLength} out of range for ${changedRuns} runs`, ctx, 140);
  const bodyHash = r.bytes(DELTA_BODY_HASH_BYTES);
  const created = r.u64n('creation time');
  const signature = r.bytes(SIGNATURE_BYTES);
  return {
    from, to, imageId, fromRoot, toRoot, signer, runCount, changedRuns, bodyLength, bodyHash, created,
    signed: Buffer.from(buf.subarray(0, DELTA_SIGNED_BYTES)), signature,
  };
}

/** One edit of a run: the block at `slot` is now `entry`, or all zero (`entry` undefined). */
export interface DeltaEdit {
  slot: number;
  entry?: RunEntry;
  /** Parsed only: the base of this delta block is M's entry at this slot (applyDeltaRun fills it in). */
  baseFromPrevious?: boolean;
}

export interface DeltaRun {
  run: number;
  edits: DeltaEdit[];
}

const samePlace = (a: BlockPlace, b: BlockPlace) => a.pack === b.pack && a.offset === b.offset && a.length === b.length;

/** Do two entries of one slot say the same thing (id, kind, place, base)? */
export function sameEntry(a: RunEntry, b: RunEntry): boolean {
  if (!a.id.equals(b.id) || a.kind !== b.kind || !samePlace(a.place, b.place)) return false;
  if (!a.base || !b.base) return !a.base && !b.base;
  return a.base.id.equals(b.base.id) && a.base.kind === b.base.kind && samePlace(a.base.place, b.base.place);
}

/** The edits that turn `prev` (a run of version M, or undefined) into `next` (the same run of N). */
export function diffRun(prev: RunRecord | undefined, next: RunRecord): DeltaEdit[] {
  const before = new Map<number, RunEntry>((prev?.entries ?? []).filter((e) => e.slot < next.slots).map((e) => [e.slot, e]));
  const edits: DeltaEdit[] = [];
  for (const e of next.entries) {
    const p = before.get(e.slot);
    before.delete(e.slot);
    if (!p || !sameEntry(p, e)) edits.push({ slot: e.slot, entry: e });
  }
  for (const slot of before.keys()) edits.push({ slot });
  return edits.sort((a, b) => a.slot - b.slot);
}

/** Writes a delta body run by run (the "contiguous" flag looks back across runs); `drain` takes what is written so far. */
export class DeltaBodyWriter {
  private w = new Writer();
  private lastRun = -1;
  private last?: BlockPlace;
  runs = 0;

  /**
   * Append run `run`'s edits (ascending slots, at least one), given M's record of the run: a delta
   * block whose base is M's entry at its slot says so instead of naming the base (an edit as parsed,
   * with `baseFromPrevious`, says it as it is).
   */
  add(run: number, edits: DeltaEdit[], prev: RunRecord | undefined): void {
    if (!Number.isSafeInteger(run) || run <= this.lastRun) throw new MedvError('EINVAL_ARG', `delta runs must ascend (${run})`);
    if (edits.length === 0 || edits.length > CKM_RUN_BLOCKS) throw new MedvError('EINVAL_ARG', `run ${run}: ${edits.length} edits`);
    const w = this.w;
    w.varint(run - this.lastRun - 1);
    w.varint(edits.length);
    let lastSlot = -1;
    const before = new Map<number, RunEntry>((prev?.entries ?? []).map((e) => [e.slot, e]));
    for (const ed of edits) {
      if (!Number.isInteger(ed.slot) || ed.slot <= lastSlot || ed.slot >= CKM_RUN_BLOCKS) throw new MedvError('EINVAL_ARG', `run ${run}: edit slot ${ed.slot} out of order`);
      w.varint(ed.slot - lastSlot - 1);
      lastSlot = ed.slot;
      const e = ed.entry;
      if (!e) { w.u8(F_ZERO); continue; }
      const contiguous = this.last !== undefined && e.place.pack === this.last.pack && e.place.offset === this.last.offset + this.last.length;
      const pe = before.get(ed.slot);
      const basePrevious = e.kind === 'delta' && (ed.baseFromPrevious
        ?? (!!pe && pe.kind !== 'delta' && !!e.base && e.base.id.equals(pe.id) && e.base.kind === pe.kind && samePlace(e.base.place, pe.place)));
      if (e.kind === 'delta' && !basePrevious && !e.base) throw new MedvError('EINVAL_ARG', `run ${run} slot ${ed.slot}: a delta block needs a base`);
      w.u8(KIND_CODE[e.kind] | (contiguous ? F_CONTIGUOUS : 0) | (basePrevious ? F_BASE_PREVIOUS : 0));
      checkLength('block id', e.id, CKM_ID_BYTES);
      w.bytes(e.id);
      w.varint(e.place.length);
      if (!contiguous) {
        w.varint(e.place.pack);
        w.varint(e.place.offset);
      }
      if (e.kind === 'delta' && !basePrevious) {
        checkLength('base block id', e.base!.id, CKM_ID_BYTES);
        w.bytes(e.base!.id);
        w.u8(KIND_CODE[e.base!.kind]);
        w.varint(e.base!.place.pack);
        w.varint(e.base!.place.offset);
        w.varint(e.base!.place.length);
      }
      this.last = e.place;
    }
    this.lastRun = run;
    this.runs++;
  }

  /** Bytes written since the last drain. */
  get pending(): number { return this.w.len; }
  /** The bytes written since the last drain (the next ones follow them in the body). */
  drain(): Buffer {
    const b = this.w.done();
    this.w = new Writer();
    return b;
  }
}

/** What every parsed field is checked against: N's index header. */
export interface DeltaLimits {
  runCount: number;
  /** Slots of run `run` of N. */
  slots(run: number): number;
  /** Pack version -> pack file length, the packs N's header lists. */
  packs: ReadonlyMap<number, number>;
}

/**
 * Parse a delta body (already checked against the signed header's hash and length), run by run.
 * Every field is checked as it is read: run and slot order and range, flags, lengths, places
 * against N's packs; exactly `changedRuns` runs and no byte after them.
 */
export function* parseDeltaBody(body: Buffer, changedRuns: number, limits: DeltaLimits, ctx?: CkmContext): Generator<DeltaRun> {
  const r = new Reader(body, ctx, 'index delta body');
  let run = -1;
  let last: BlockPlace | undefined;
  for (let n = 0; n < changedRuns; n++) {
    let at = r.pos;
    run += 1 + r.varint('run gap');
    if (run >= limits.runCount) throw ckmError('EFORMAT', `index delta names run ${run} of ${limits.runCount}`, ctx, at);
    const slots = limits.slots(run);
    at = r.pos;
    const count = r.varint('edit count');
    if (count < 1 || count > slots) throw ckmError('EFORMAT', `run ${run}: ${count} edits for ${slots} slots`, ctx, at);
    const edits: DeltaEdit[] = [];
    let slot = -1;
    for (let i = 0; i < count; i++) {
      at = r.pos;
      slot += 1 + r.varint('slot gap');
      if (slot >= slots) throw ckmError('EFORMAT', `run ${run}: slot ${slot} past its ${slots} slots`, ctx, at);
      at = r.pos;
      const f = r.u8();
      if (f === F_ZERO) { edits.push({ slot }); continue; }
      if ((f & ~(F_KIND | F_CONTIGUOUS | F_BASE_PREVIOUS)) !== 0 || (f & F_KIND) >= KIND_BY_CODE.length) throw ckmError('EFORMAT', `run ${run} slot ${slot}: bad flags 0x${f.toString(16)}`, ctx, at);
      const kind: BlockKind = KIND_BY_CODE[f & F_KIND];
      if ((f & F_BASE_PREVIOUS) && kind !== 'delta') throw ckmError('EFORMAT', `run ${run} slot ${slot}: only a delta block has a base`, ctx, at);
      if ((f & F_CONTIGUOUS) && !last) throw ckmError('EFORMAT', `run ${run} slot ${slot}: contiguous with nothing`, ctx, at);
      const id = r.bytes(CKM_ID_BYTES);
      const place: BlockPlace = { pack: 0, offset: 0, length: r.varint('stored length') };
      if (f & F_CONTIGUOUS) {
        place.pack = last!.pack;
        place.offset = last!.offset + last!.length;
      } else {
        place.pack = r.varint('pack version');
        place.offset = r.varint('block offset');
        if (last && place.pack === last.pack && place.offset === last.offset + last.length) throw ckmError('EFORMAT', `run ${run} slot ${slot}: place written out where "contiguous" says it`, ctx, at);
      }
      checkStoredPlace(place, limits.packs, `run ${run} slot ${slot}`, ctx, at);
      if (kind === 'raw' && place.length !== CKM_MAX_STORED) throw ckmError('EFORMAT', `run ${run} slot ${slot}: raw block of ${place.length} bytes`, ctx, at);
      const entry: RunEntry = { slot, id, kind, place };
      if (kind === 'delta' && !(f & F_BASE_PREVIOUS)) {
        const bid = r.bytes(CKM_ID_BYTES);
        const kat = r.pos;
        const k = r.u8();
        if (k !== KIND_CODE.zstd && k !== KIND_CODE.raw) throw ckmError('EFORMAT', `run ${run} slot ${slot}: base block kind ${k} (a base must be a whole block)`, ctx, kat);
        const bplace = { pack: r.varint('base pack'), offset: r.varint('base offset'), length: r.varint('base length') };
        checkStoredPlace(bplace, limits.packs, `run ${run} slot ${slot} base`, ctx, kat);
        if (k === KIND_CODE.raw && bplace.length !== CKM_MAX_STORED) throw ckmError('EFORMAT', `run ${run} slot ${slot}: raw base of ${bplace.length} bytes`, ctx, kat);
        entry.base = { id: bid, kind: KIND_BY_CODE[k] as 'zstd' | 'raw', place: bplace };
      }
      last = place;
      edits.push({ slot, entry, ...(f & F_BASE_PREVIOUS ? { baseFromPrevious: true } : {}) });
    }
    yield { run, edits };
  }
  if (r.remaining !== 0) throw ckmError('EFORMAT', `${r.remaining} bytes after the last run of the index delta`, ctx, r.pos);
}

/**
 * N's record of a run: M's record of it (`prev`, undefined for a run M did not have or held as
 * zeros) with the edits applied. An edit that removes a block M did not have, or takes a base M
 * does not have at that slot (or that is itself a delta), is ECORRUPT. The caller checks the
 * result against N's run directory (its hash) before using it.
 */
export function applyDeltaRun(prev: RunRecord | undefined, d: DeltaRun, slots: number, ctx?: CkmContext): RunRecord {
  const map = new Map<number, RunEntry>((prev?.entries ?? []).filter((e) => e.slot < slots).map((e) => [e.slot, e]));
  for (const ed of d.edits) {
    const pe = map.get(ed.slot);
    if (!ed.entry) {
      if (!pe) throw ckmError('ECORRUPT', `index delta clears run ${d.run} slot ${ed.slot}, which the previous version holds as zeros`, ctx);
      map.delete(ed.slot);
      continue;
    }
    let entry = ed.entry;
    if (ed.baseFromPrevious) {
      if (!pe || pe.kind === 'delta') throw ckmError('ECORRUPT', `index delta bases run ${d.run} slot ${ed.slot} on the previous version's block, which it does not have as a whole block`, ctx);
      entry = { ...entry, base: { id: pe.id, kind: pe.kind as 'zstd' | 'raw', place: pe.place } };
    }
    map.set(ed.slot, entry);
  }
  return { slots, entries: [...map.values()].sort((a, b) => a.slot - b.slot) };
}
