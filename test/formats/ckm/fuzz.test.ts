/**
 * Fuzzing the .ckm.index parsers with seeded mutations (bit flips, interesting 8/32/64-bit values,
 * truncation, extension, duplicated spans) of a real index and of its run records:
 *  - every failure is a MedvError;
 *  - whatever parses is canonical: serializing the parsed record gives back the very bytes
 *    (so a record has one encoding and one hash), and every place it yields lies inside a pack
 *    the header lists, past the pack header.
 */
import assert from 'node:assert/strict';
import { MedvError } from '../../../src/core/errors.js';
import {
  CKM_MAX_STORED, type IndexHeader, PACK_HEADER_SIZE, type RunRecord, decodeRunRecord, encodeRunRecord, parseIndexHeader, parseRunDirectory,
  parseRunRecord, rootHashOf, runSlots, serializeIndexHeader, serializeRunDirectory, serializeRunRecord, zstdCompress, runHash,
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
});
