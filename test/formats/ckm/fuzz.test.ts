/**
 * Fuzzing the .ckm.index parsers (and the index delta's) with seeded mutations (bit flips, interesting 8/32/64-bit values,
 * truncation, extension, duplicated spans) of a real index and of its run records:
 *  - every failure is a MedvError;
 *  - whatever parses is canonical: serializing the parsed record gives back the very bytes
 *    (so a record has one encoding and one hash), and every place it yields lies inside a pack
 *    the header lists, past the pack header.
 */
import assert from 'node:assert/strict';
import { MedvError } from '../../../src/core/errors.js';
import {
  CKM_MAX_STORED, DELTA_HEADER_BYTES, type DeltaHeader, DeltaBodyWriter, type IndexHeader, PACK_HEADER_SIZE, type RunRecord, applyDeltaRun, decodeRunRecord,
  deltaBodyHash, diffRun, encodeRunRecord, parseDeltaBody, parseDeltaHeader, parseIndexHeader, parseRunDirectory, parseRunRecord, rootHashOf, runSlots,
  serializeDeltaHeader, serializeIndexHeader, serializeRunDirectory, serializeRunRecord, zstdCompress, runHash,
} from '../../../src/formats/ckm/index.js';
import { prng } from '../../conformance/blockdevice.js';

const INTERESTING8 = [0, 1, 0x7f, 0x80, 0xff, 3, 4, 7];
const INTERESTING32 = [0, 1, 63, 64, 65, 0x7fffffff, 0x80000000, 0xffffffff, 4096, 4112, 1 << 20];
const INTERESTING64 = [0n, 1n, 64n, 1n << 46n, (1n << 46n) + 1n, 1n << 53n, 0xffffffffffffffffn];

function mutate(src: Buffer, rnd: () => number): Buffer {
  let b = Buffer.from(src);
  const at = () => Math.floor(rnd() * Math.max(1, b.length));
  const n = 1 + Math.floor(rnd() * 3);
  for (let i = 0; i < n; i++) {
    const op = Math.floor(rnd() * 7);
    if (op === 0 && b.length) b[at()] ^= 1 << Math.floor(rnd() * 8);
    else if (op === 1 && b.length) b[at()] = INTERESTING8[Math.floor(rnd() * INTERESTING8.length)];
    else if (op === 2 && b.length >= 4) b.writeUInt32LE(INTERESTING32[Math.floor(rnd() * INTERESTING32.length)], Math.min(at(), b.length - 4));
    else if (op === 3 && b.length >= 8) b.writeBigUInt64LE(INTERESTING64[Math.floor(rnd() * INTERESTING64.length)], Math.min(at(), b.length - 8));
    else if (op === 4) b = b.subarray(0, at());
    else if (op === 5) b = Buffer.concat([b, Buffer.alloc(1 + Math.floor(rnd() * 40), Math.floor(rnd() * 256))]);
    else if (b.length > 8) {
      const from = at();
      const len = Math.min(1 + Math.floor(rnd() * 32), b.length - from);
      const to = Math.min(at(), b.length - len);
      b.copy(b, to, from, from + len);
    }
  }
  return b;
}

function sampleRecords(): RunRecord[] {
  const id = (n: number) => Buffer.alloc(16, n);
  const recs: RunRecord[] = [];
  const a: RunRecord = { slots: 256, entries: [] };
  let off = PACK_HEADER_SIZE;
  for (let s = 0; s < 256; s += 3) {
    const len = 17 + ((s * 37) % 3000);
    a.entries.push({ slot: s, id: id(s), kind: 'zstd', place: { pack: 2, offset: off, length: len } });
    off += len;
  }
  a.entries[5] = { ...a.entries[5], kind: 'raw', place: { pack: 1, offset: 5000, length: CKM_MAX_STORED } };
  a.entries[9] = { ...a.entries[9], kind: 'delta', base: { id: id(200), kind: 'zstd', place: { pack: 1, offset: 200, length: 300 } } };
  recs.push(a);
  recs.push({ slots: 3, entries: [{ slot: 2, id: id(7), kind: 'zstd', place: { pack: 1, offset: 64, length: 40 } }] });
  return recs;
}

const packs = new Map([[1, 100_000], [2, 1_000_000]]);

function sampleIndex(): { buf: Buffer; header: IndexHeader } {
  const recs = sampleRecords();
  const virtualSize = 1048576 + 3 * 4096;
  const enc = [encodeRunRecord(recs[0]), encodeRunRecord(recs[1])];
  const dir = serializeRunDirectory(enc.map((e) => e.hash), enc.map((e) => e.compressed.length));
  const table = Buffer.concat(enc.map((e) => e.compressed));
  const header: IndexHeader = {
    name: 'fuzz', version: 2, imageId: Buffer.alloc(16, 1), virtualSize, runCount: 2, tableLength: table.length, rootHash: rootHashOf(dir),
    signer: Buffer.alloc(32, 3), created: 1, packs: [{ version: 1, length: 100_000, salt: Buffer.alloc(16, 4) }, { version: 2, length: 1_000_000, salt: Buffer.alloc(16, 5) }],
  };
  return { buf: Buffer.concat([serializeIndexHeader(header, Buffer.alloc(64, 9)), dir, table]), header };
}

function checkPlaces(rec: RunRecord, lim: Map<number, number>): void {
  for (const e of rec.entries) {
    for (const p of [e.place, ...(e.base ? [e.base.place] : [])]) {
      const len = lim.get(p.pack);
      assert.ok(len !== undefined && p.offset >= PACK_HEADER_SIZE && p.offset + p.length <= len, `place ${JSON.stringify(p)} escapes its pack`);
    }
  }
}

function expectTyped(e: unknown, what: string): void {
  if (!(e instanceof MedvError)) throw new Error(`${what}: untyped error ${(e as Error)?.stack ?? e}`);
}

describe('fuzz: .ckm.index parsers', function () {
  this.timeout(120_000);

  it('3,000 mutated index files: typed errors, and what parses reserializes to the same bytes', () => {
    const { buf } = sampleIndex();
    const rnd = prng(0xc0ffee);
    let parsedHeaders = 0;
    for (let i = 0; i < 3000; i++) {
      const m = mutate(buf, rnd);
      try {
        const h = parseIndexHeader(m, { file: `case${i}` });
        parsedHeaders++;
        assert.deepEqual(serializeIndexHeader(h, h.signature), m.subarray(0, h.headerLength), `case ${i}: header not canonical`);
        const lim = new Map(h.packs.map((p) => [p.version, p.length]));
        const dir = parseRunDirectory(m.subarray(h.headerLength), h);
        for (let r = 0; r < h.runCount; r++) {
          const rec = decodeRunRecord(m.subarray(dir.offsets[r], dir.offsets[r] + dir.lengths[r]), dir.hashes[r], { slots: runSlots(h.virtualSize, r), packs: lim });
          checkPlaces(rec, lim);
        }
      } catch (e) {
        expectTyped(e, `case ${i}`);
      }
    }
    assert.ok(parsedHeaders > 300, `only ${parsedHeaders} headers parsed: the mutations never reach the later checks`);
  });

  it('5,000 mutated run records (past the hash check): typed errors, canonical when accepted', () => {
    const rnd = prng(0xbadc0de);
    let accepted = 0;
    const raws = sampleRecords().map((r) => serializeRunRecord(r));
    for (let i = 0; i < 5000; i++) {
      const src = raws[i % raws.length];
      const slots = i % raws.length === 0 ? 256 : 3;
      const m = mutate(src, rnd);
      try {
        const rec = parseRunRecord(m, { slots, packs });
        accepted++;
        assert.deepEqual(serializeRunRecord(rec), m, `case ${i}: accepted a non-canonical record`);
        checkPlaces(rec, packs);
        // and through the compressed path with a matching hash
        assert.deepEqual(decodeRunRecord(zstdCompress(m), runHash(m), { slots, packs }), rec);
      } catch (e) {
        expectTyped(e, `case ${i}`);
      }
    }
    assert.ok(accepted > 50, `only ${accepted} mutations accepted: the fuzzer never gets past the first checks`);
  });

  it('4,000 mutated index deltas (header and body): typed errors; an accepted body is canonical and every place lies in a listed pack', () => {
    const recs = sampleRecords();
    // version 3 of the sample: every third entry of run 0 replaced, run 1 cleared and refilled
    const next: RunRecord = { slots: 256, entries: recs[0].entries.map((e, i) => (i % 3 === 0 ? { ...e, id: Buffer.alloc(16, 100 + i), place: { pack: 2, offset: 64 + i * 20, length: 20 } } : e)) };
    next.entries[4] = { ...next.entries[4], kind: 'delta', base: { id: recs[0].entries[4].id, kind: 'zstd', place: recs[0].entries[4].place } };
    const w = new DeltaBodyWriter();
    w.add(0, diffRun(recs[0], next), recs[0]);
    w.add(1, diffRun(recs[1], { slots: 3, entries: [{ slot: 0, id: Buffer.alloc(16, 9), kind: 'raw', place: { pack: 1, offset: 64, length: CKM_MAX_STORED } }] }), recs[1]);
    const body = w.drain();
    const header: DeltaHeader = {
      from: 1, to: 2, imageId: Buffer.alloc(16, 1), fromRoot: Buffer.alloc(32, 2), toRoot: Buffer.alloc(32, 3), signer: Buffer.alloc(32, 4),
      runCount: 2, changedRuns: 2, bodyLength: body.length, bodyHash: deltaBodyHash(body), created: 5,
    };
    const file = Buffer.concat([serializeDeltaHeader(header, Buffer.alloc(64, 6)), body]);
    const limits = { runCount: 2, slots: (r: number) => (r === 0 ? 256 : 3), packs };
    const rnd = prng(0xde17a);
    let headers = 0;
    let bodies = 0;
    for (let i = 0; i < 4000; i++) {
      const m = mutate(file, rnd);
      try {
        const h = parseDeltaHeader(m, { file: `case${i}` });
        headers++;
        assert.deepEqual(serializeDeltaHeader(h, h.signature), m.subarray(0, DELTA_HEADER_BYTES), `case ${i}: header not canonical`);
        // the body as a client would take it: checked against the header's length first (the hash is not, to reach the parser)
        const b = m.subarray(DELTA_HEADER_BYTES);
        if (b.length !== h.bodyLength || h.runCount !== limits.runCount) continue;
        const again = new DeltaBodyWriter();
        for (const run of parseDeltaBody(b, h.changedRuns, limits, { file: `case${i}`, offset: DELTA_HEADER_BYTES })) {
          for (const ed of run.edits) if (ed.entry) checkPlaces({ slots: limits.slots(run.run), entries: [ed.entry] }, packs);
          again.add(run.run, run.edits, undefined);
          const prev = recs[run.run];
          try {
            const rec = applyDeltaRun(prev, run, limits.slots(run.run));
            checkPlaces(rec, packs);
          } catch (e) {
            expectTyped(e, `case ${i} apply`);
          }
        }
        bodies++;
        assert.deepEqual(again.drain(), b, `case ${i}: accepted a non-canonical body`);
      } catch (e) {
        expectTyped(e, `case ${i}`);
      }
    }
    assert.ok(headers > 500 && bodies > 50, `only ${headers} headers and ${bodies} bodies parsed: the mutations never reach the later checks`);
  });
});

