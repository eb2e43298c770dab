/** Pure parse/serialize of the packed-image formats: round trips and every rejection path. */
import assert from 'node:assert/strict';
import { MedvError } from '../../../src/core/errors.js';
import {
  CKM_MAX_STORED, DIR_ENTRY_BYTES, INDEX_FIXED_BYTES, PACK_HEADER_SIZE, type IndexHeader, type RunRecord,
  decodeRunRecord, encodeRunRecord, indexFileName, packFileName, parseIndexHeader, parsePackHeader, parseRunDirectory, parseRunRecord,
  rootHashOf, runCountFor, runSlots, serializeIndexHeader, serializePackHeader, serializeRunDirectory, serializeRunRecord,
  zstdCompress, ZERO_RUN_HASH,
} from '../../../src/formats/ckm/index.js';

const code = (c: string) => (e: unknown) => e instanceof MedvError && e.code === c;
const id = (n: number) => Buffer.alloc(16, n);

function header(over: Partial<IndexHeader> = {}): IndexHeader {
  return {
    name: 'win10', version: 3, imageId: id(9), virtualSize: 3 * 1048576 + 8192, runCount: 4, tableLength: 0,
    rootHash: Buffer.alloc(32, 1), signer: Buffer.alloc(32, 2), created: 1_700_000_000,
    packs: [{ version: 1, length: 100_000, salt: Buffer.alloc(16, 5) }, { version: 3, length: 5000, salt: Buffer.alloc(16, 6) }],
    ...over,
  };
}

const limits = { slots: 256, packs: new Map([[1, 100_000], [3, 5000]]) };

function record(): RunRecord {
  return {
    slots: 256,
    entries: [
      { slot: 0, id: id(1), kind: 'zstd', place: { pack: 1, offset: 64, length: 100 } },
      { slot: 1, id: id(2), kind: 'zstd', place: { pack: 1, offset: 164, length: 200 } },
      { slot: 7, id: id(1), kind: 'zstd', place: { pack: 1, offset: 64, length: 100 } },
      { slot: 8, id: id(3), kind: 'raw', place: { pack: 3, offset: 64, length: CKM_MAX_STORED } },
      { slot: 255, id: id(4), kind: 'delta', place: { pack: 3, offset: 64 + CKM_MAX_STORED, length: 40 }, base: { id: id(5), kind: 'zstd', place: { pack: 1, offset: 364, length: 300 } } },
    ],
  };
}

describe('formats/ckm', () => {
  describe('names', () => {
    it('builds <NAME>_<N>.ckm and refuses names that could leave a folder', () => {
      assert.equal(packFileName('win10', 2), 'win10_2.ckm');
      assert.equal(indexFileName('a.b-c_d', 17), 'a.b-c_d_17.ckm.index');
      for (const bad of ['', '../x', 'a/b', '.hidden', 'x'.repeat(65), 'sp ace', 'ü']) assert.throws(() => packFileName(bad, 1), code('EINVAL_ARG'), bad);
      for (const v of [0, -1, 1.5, 2 ** 31]) assert.throws(() => packFileName('a', v), code('EINVAL_ARG'));
    });
  });

  describe('pack header', () => {
    it('round-trips and rejects bad magic, version, length, reserved bytes, truncation', () => {
      const h = { version: 7, imageId: id(3), salt: Buffer.alloc(16, 4) };
      const b = serializePackHeader(h);
      assert.equal(b.length, PACK_HEADER_SIZE);
      assert.deepEqual(parsePackHeader(b), h);
      const m = (at: number, v: number) => { const c = Buffer.from(b); c[at] = v; return c; };
      assert.throws(() => parsePackHeader(m(0, 0x41)), code('EFORMAT'));
      assert.throws(() => parsePackHeader(m(8, 2)), code('EVERSION'));
      assert.throws(() => parsePackHeader(m(10, 63)), code('EFORMAT'));
      assert.throws(() => parsePackHeader(m(60, 1)), code('EFORMAT'));
      assert.throws(() => parsePackHeader(Buffer.alloc(12, 0).fill(b.subarray(0, 12))), code('ETRUNCATED'));
      assert.throws(() => parsePackHeader(b.subarray(0, 4)), code('ETRUNCATED'));
    });
  });

  describe('index header', () => {
    it('round-trips every field', () => {
      const h = header();
      const b = serializeIndexHeader(h, Buffer.alloc(64, 7));
      assert.equal(b.length, INDEX_FIXED_BYTES + 5 + 2 * 32 + 64);
      const p = parseIndexHeader(Buffer.concat([b, Buffer.alloc(100)]), { file: 'x.ckm.index' });
      for (const k of Object.keys(h) as Array<keyof IndexHeader>) assert.deepEqual(p[k], h[k], k);
      assert.equal(p.headerLength, b.length);
      assert.deepEqual(p.signed, b.subarray(0, b.length - 64));
      assert.deepEqual(p.signature, Buffer.alloc(64, 7));
    });

    it('rejects hostile headers with typed errors naming the offset', () => {
      const b = serializeIndexHeader(header(), Buffer.alloc(64, 7));
      const m = (f: (c: Buffer) => void) => { const c = Buffer.from(b); f(c); return c; };
      assert.throws(() => parseIndexHeader(m((c) => { c[0] = 0; })), code('EFORMAT'));
      assert.throws(() => parseIndexHeader(m((c) => c.writeUInt16LE(9, 8))), code('EVERSION'));
      assert.throws(() => parseIndexHeader(m((c) => c.writeUInt32LE(512, 12))), code('EUNSUPPORTED'));
      assert.throws(() => parseIndexHeader(m((c) => c.writeUInt32LE(5, 48))), code('EFORMAT'));
      assert.throws(() => parseIndexHeader(m((c) => c.writeBigUInt64LE(2n ** 60n, 40))), code('EFORMAT'));
      assert.throws(() => parseIndexHeader(m((c) => c.write('wi/10', 137, 'latin1'))), (e) => code('EFORMAT')(e) && (e as MedvError).data.offset === 137);
      // pack versions must ascend and not pass the image's version
      assert.throws(() => parseIndexHeader(m((c) => c.writeUInt32LE(4, 137 + 5 + 32))), code('EFORMAT'));
      assert.throws(() => parseIndexHeader(m((c) => c.writeUInt32LE(1, 137 + 5 + 32))), code('EFORMAT'));
      assert.throws(() => parseIndexHeader(m((c) => c.writeBigUInt64LE(10n, 137 + 5 + 8))), code('EFORMAT'));
      assert.throws(() => parseIndexHeader(m((c) => c.writeUInt16LE(b.length + 32, 10))), code('ETRUNCATED'));
      assert.throws(() => parseIndexHeader(m((c) => c.writeUInt16LE(b.length - 32, 10))), code('EFORMAT'));
      assert.throws(() => parseIndexHeader(b.subarray(0, b.length - 1)), code('ETRUNCATED'));
      assert.throws(() => parseIndexHeader(b.subarray(0, 5)), code('ETRUNCATED'));
    });

    it('counts runs and the slots of a short last run', () => {
      assert.equal(runCountFor(1), 1);
      assert.equal(runCountFor(1048576), 1);
      assert.equal(runCountFor(1048577), 2);
      assert.equal(runSlots(3 * 1048576 + 8192, 3), 2);
      assert.equal(runSlots(3 * 1048576 + 8193, 3), 3);
      assert.equal(runSlots(3 * 1048576 + 8192, 2), 256);
    });
  });

  describe('run records', () => {
    it('round-trip, with contiguous places, duplicates and a delta base', () => {
      const rec = record();
      const raw = serializeRunRecord(rec);
      assert.deepEqual(parseRunRecord(raw, limits), rec);
      const enc = encodeRunRecord(rec);
      assert.deepEqual(decodeRunRecord(enc.compressed, enc.hash, limits), rec);
    });

    it('a zero run has no record, and its hash is the hash of nothing', () => {
      const enc = encodeRunRecord({ slots: 256, entries: [] });
      assert.equal(enc.compressed.length, 0);
      assert.deepEqual(enc.hash, ZERO_RUN_HASH);
      assert.deepEqual(decodeRunRecord(Buffer.alloc(0), ZERO_RUN_HASH, limits).entries, []);
    });

    it('rejects places past a pack, in its header, or in a pack the index does not list', () => {
      const past = record();
      past.entries[3].place.offset = 5000 - CKM_MAX_STORED + 1;
      past.entries[4].place.offset = 5000 - 30;
      assert.throws(() => parseRunRecord(serializeRunRecord(past), limits), (e) => code('ECORRUPT')(e) && /past the end of pack 3/.test((e as Error).message));
      const unlisted = record();
      unlisted.entries[0].place.pack = 2;
      unlisted.entries[1].place.pack = 2;
      assert.throws(() => parseRunRecord(serializeRunRecord(unlisted), limits), code('ECORRUPT'));
      const base = record();
      base.entries[4].base!.place.offset = 99_900;
      assert.throws(() => parseRunRecord(serializeRunRecord(base), limits), code('ECORRUPT'));
      assert.throws(() => serializeRunRecord({ slots: 256, entries: [{ slot: 0, id: id(1), kind: 'zstd', place: { pack: 1, offset: 10, length: 20 } }] }), code('EINVAL_ARG'));
    });

    it('rejects bad flags, bitmap bits past the last slot, wrong raw lengths, trailing bytes, a wrong slot count', () => {
      const raw = serializeRunRecord(record());
      const flagsAt = 3 + 32 + 5 * 16;
      const m = (f: (c: Buffer) => void) => { const c = Buffer.from(raw); f(c); return c; };
      assert.throws(() => parseRunRecord(m((c) => { c[flagsAt] = 0x03; }), limits), code('EFORMAT'));
      assert.throws(() => parseRunRecord(m((c) => { c[flagsAt] = 0x10; }), limits), code('EFORMAT'));
      assert.throws(() => parseRunRecord(m((c) => { c[flagsAt] = 0x04; }), limits), code('EFORMAT'));
      assert.throws(() => parseRunRecord(m((c) => { c[0] = 2; }), limits), code('EVERSION'));
      assert.throws(() => parseRunRecord(Buffer.concat([raw, Buffer.from([0])]), limits), code('EFORMAT'));
      assert.throws(() => parseRunRecord(raw.subarray(0, raw.length - 1), limits), code('ETRUNCATED'));
      assert.throws(() => parseRunRecord(raw, { ...limits, slots: 255 }), code('EFORMAT'));
      const short = serializeRunRecord({ slots: 2, entries: [{ slot: 1, id: id(1), kind: 'zstd', place: { pack: 1, offset: 64, length: 100 } }] });
      assert.throws(() => parseRunRecord(Buffer.from(short).fill(0x06, 3, 4), { ...limits, slots: 2 }), code('EFORMAT'));
      const rawKind = record();
      rawKind.entries[1].kind = 'raw';
      assert.throws(() => parseRunRecord(serializeRunRecord(rawKind), limits), code('EFORMAT'));
    });

    it('rejects a non-minimal varint', () => {
      const rec: RunRecord = { slots: 1, entries: [{ slot: 0, id: id(1), kind: 'zstd', place: { pack: 1, offset: 64, length: 100 } }] };
      const raw = serializeRunRecord(rec);
      const at = 3 + 1 + 16 + 1; // length varint: 100 = 0x64
      assert.equal(raw[at], 100);
      const bad = Buffer.concat([raw.subarray(0, at), Buffer.from([0xe4, 0x00]), raw.subarray(at + 1)]);
      assert.throws(() => parseRunRecord(bad, { ...limits, slots: 1 }), code('EFORMAT'));
    });

    it('a record that does not match its directory hash is ECHECKSUM before any field is read', () => {
      const enc = encodeRunRecord(record());
      const other = encodeRunRecord({ slots: 256, entries: record().entries.slice(0, 2) });
      assert.throws(() => decodeRunRecord(other.compressed, enc.hash, limits), code('ECHECKSUM'));
      assert.throws(() => decodeRunRecord(Buffer.from('not zstd at all'), enc.hash, limits), code('ECORRUPT'));
      // a zstd bomb: a frame that inflates past any valid record
      assert.throws(() => decodeRunRecord(zstdCompress(Buffer.alloc(1 << 20)), enc.hash, limits), code('ECORRUPT'));
    });
  });

  describe('run directory', () => {
    it('is checked against the root hash and the table length', () => {
      const runs = [encodeRunRecord(record()), encodeRunRecord({ slots: 256, entries: [] }), encodeRunRecord({ slots: 256, entries: record().entries.slice(1, 2) })];
      const hashes = [...runs.map((r) => r.hash), ZERO_RUN_HASH];
      const lengths = [...runs.map((r) => r.compressed.length), 0];
      const dir = serializeRunDirectory(hashes, lengths);
      const table = lengths.reduce((a, b) => a + b, 0);
      const h = parseIndexHeader(serializeIndexHeader(header({ rootHash: rootHashOf(dir), tableLength: table }), Buffer.alloc(64)));
      const d = parseRunDirectory(dir, h);
      assert.deepEqual(d.lengths, lengths);
      assert.equal(d.offsets[0], h.headerLength + 4 * DIR_ENTRY_BYTES);
      assert.equal(d.offsets[2], d.offsets[0] + lengths[0]);
      const flipped = Buffer.from(dir);
      flipped[17] ^= 1;
      assert.throws(() => parseRunDirectory(flipped, h), code('ECHECKSUM'));
      assert.throws(() => parseRunDirectory(dir.subarray(0, 60), h), code('ETRUNCATED'));
      const h2 = parseIndexHeader(serializeIndexHeader(header({ rootHash: rootHashOf(dir), tableLength: table + 1 }), Buffer.alloc(64)));
      assert.throws(() => parseRunDirectory(dir, h2), code('ECORRUPT'));
    });
  });
});
