/**
 * The index delta (`<NAME>_<N>.ckm.index-from-<M>`), pure: a diff of two run records written,
 * parsed and applied gives back the newer record; every field of a hostile header or body is
 * refused with a typed error naming where; applying a delta to a record it was not made for is
 * refused. The fuzz test beside (fuzz.test.ts) mutates real deltas.
 */
import assert from 'node:assert/strict';
import { MedvError } from '../../../src/core/errors.js';
import {
  CKM_MAX_STORED, DELTA_HEADER_BYTES, DELTA_RUN_MAX, type DeltaHeader, type DeltaLimits, DeltaBodyWriter, type RunRecord, applyDeltaRun, deltaBodyHash,
  deltaFileName, diffRun, parseDeltaBody, parseDeltaHeader, serializeDeltaHeader, serializeRunRecord,
} from '../../../src/formats/ckm/index.js';

const code = (c: string, re?: RegExp) => (e: unknown) => e instanceof MedvError && e.code === c && (!re || re.test(e.message));
const id = (n: number) => Buffer.alloc(16, n);
const limits: DeltaLimits = { runCount: 4, slots: (r) => (r === 3 ? 3 : 256), packs: new Map([[1, 100_000], [2, 50_000]]) };

/** Version 1 of run 0, and version 2: one block edited in place (a delta on the old one), one replaced, one gone, one new. */
function versions(): { v1: RunRecord; v2: RunRecord } {
  const v1: RunRecord = {
    slots: 256,
    entries: [
      { slot: 0, id: id(1), kind: 'zstd', place: { pack: 1, offset: 64, length: 100 } },
      { slot: 1, id: id(2), kind: 'zstd', place: { pack: 1, offset: 164, length: 200 } },
      { slot: 2, id: id(3), kind: 'raw', place: { pack: 1, offset: 364, length: CKM_MAX_STORED } },
      { slot: 9, id: id(4), kind: 'zstd', place: { pack: 1, offset: 364 + CKM_MAX_STORED, length: 50 } },
    ],
  };
  const v2: RunRecord = {
    slots: 256,
    entries: [
      { slot: 0, id: id(1), kind: 'zstd', place: { pack: 1, offset: 64, length: 100 } },
      { slot: 1, id: id(12), kind: 'delta', place: { pack: 2, offset: 64, length: 30 }, base: { id: id(2), kind: 'zstd', place: { pack: 1, offset: 164, length: 200 } } },
      { slot: 2, id: id(13), kind: 'zstd', place: { pack: 2, offset: 94, length: 700 } },
      { slot: 40, id: id(14), kind: 'delta', place: { pack: 2, offset: 794, length: 20 }, base: { id: id(1), kind: 'zstd', place: { pack: 1, offset: 64, length: 100 } } },
    ],
  };
  return { v1, v2 };
}

function delta(): { body: Buffer; header: DeltaHeader } {
  const { v1, v2 } = versions();
  const w = new DeltaBodyWriter();
  w.add(0, diffRun(v1, v2), v1);
  w.add(3, diffRun(undefined, { slots: 3, entries: [{ slot: 2, id: id(20), kind: 'zstd', place: { pack: 2, offset: 814, length: 17 } }] }), undefined);
  const body = w.drain();
  const header: DeltaHeader = {
    from: 1, to: 2, imageId: id(7), fromRoot: Buffer.alloc(32, 1), toRoot: Buffer.alloc(32, 2), signer: Buffer.alloc(32, 3),
    runCount: 4, changedRuns: 2, bodyLength: body.length, bodyHash: deltaBodyHash(body), created: 1_700_000_000,
  };
  return { body, header };
}

describe('formats/ckm: index delta', () => {
  it('is named after the index it leads to and the version it starts from', () => {
    assert.equal(deltaFileName('win10', 1, 2), 'win10_2.ckm.index-from-1');
  });

  it('diff, write, parse and apply give back the newer record byte for byte (bases on the previous version written as one bit)', () => {
    const { v1, v2 } = versions();
    const { body } = delta();
    const runs = [...parseDeltaBody(body, 2, limits)];
    assert.deepEqual(runs.map((r) => r.run), [0, 3]);
    assert.deepEqual(runs[0].edits.map((e) => [e.slot, e.entry ? e.entry.kind : 'zero', !!e.baseFromPrevious]), [[1, 'delta', true], [2, 'zstd', false], [9, 'zero', false], [40, 'delta', false]]);
    assert.ok(serializeRunRecord(applyDeltaRun(v1, runs[0], 256)).equals(serializeRunRecord(v2)));
    assert.ok(serializeRunRecord(applyDeltaRun(undefined, runs[1], 3)).equals(serializeRunRecord({ slots: 3, entries: [{ slot: 2, id: id(20), kind: 'zstd', place: { pack: 2, offset: 814, length: 17 } }] })));
    // the base of slot 1 costs one bit, the new blocks of pack 2 one flag each ("contiguous")
    assert.ok(body.length < 4 * 16 + 16 + 30, `${body.length} bytes`);
  });

  it('a header round-trips; a truncated, foreign, newer or out-of-range one is refused, typed, with its offset', () => {
    const { header } = delta();
    const b = serializeDeltaHeader(header, Buffer.alloc(64, 9));
    assert.equal(b.length, DELTA_HEADER_BYTES);
    const p = parseDeltaHeader(Buffer.concat([b, Buffer.alloc(10)]));
    assert.deepEqual([p.from, p.to, p.runCount, p.changedRuns, p.bodyLength], [1, 2, 4, 2, header.bodyLength]);
    assert.ok(p.signed.equals(b.subarray(0, DELTA_HEADER_BYTES - 64)) && p.signature.equals(Buffer.alloc(64, 9)));
    const bad = (patch: (x: Buffer) => void, c: string, re: RegExp) => {
      const x = Buffer.from(b);
      patch(x);
      assert.throws(() => parseDeltaHeader(x, { file: 'd' }), (e: unknown) => code(c, re)(e) && (e as MedvError).data.file === 'd');
    };
    assert.throws(() => parseDeltaHeader(b.subarray(0, 100)), code('ETRUNCATED'));
    assert.throws(() => parseDeltaHeader(b.subarray(0, 4)), code('ETRUNCATED'));
    bad((x) => { x[0] ^= 1; }, 'EFORMAT', /magic/);
    bad((x) => x.writeUInt16LE(2, 8), 'EVERSION', /version 2/);
    bad((x) => x.writeUInt16LE(251, 10), 'EFORMAT', /header length/);
    bad((x) => x.writeUInt32LE(2, 12), 'EFORMAT', /from version 2 to 2/);
    bad((x) => x.writeUInt32LE(0, 12), 'EFORMAT', /from version 0/);
    bad((x) => x.writeUInt32LE(0x80000000, 16), 'EFORMAT', /to 2147483648/);
    bad((x) => x.writeUInt32LE(0, 132), 'EFORMAT', /without runs/);
    bad((x) => x.writeUInt32LE(5, 136), 'EFORMAT', /changes 5 of 4/);
    bad((x) => x.writeUInt32LE(0, 136), 'EFORMAT', /changes 0/);
    bad((x) => x.writeBigUInt64LE(0n, 140), 'EFORMAT', /body length 0/);
    bad((x) => x.writeBigUInt64LE(BigInt(2 * DELTA_RUN_MAX + 1), 140), 'EFORMAT', /body length/);
    bad((x) => x.writeBigUInt64LE(1n << 60n, 140), 'EFORMAT', /out of range/);
  });

  it('a hostile body is refused field by field (order, ranges, flags, places, canonical form, trailing bytes)', () => {
    const { body } = delta();
    const parse = (b: Buffer, runs = 2, l: DeltaLimits = limits) => [...parseDeltaBody(b, runs, l, { file: 'd', offset: DELTA_HEADER_BYTES })];
    parse(body);
    const fails = (b: Buffer, c: string, re: RegExp, runs = 2, l: DeltaLimits = limits) => assert.throws(() => parse(b, runs, l), code(c, re));
    // structure of the body written above: run 0 (gap 0), 4 edits: slot 1 delta (base previous) ...
    fails(Buffer.concat([body, Buffer.from([0])]), 'EFORMAT', /bytes after the last run/);
    fails(body, 'ETRUNCATED', /ends/, 3);
    fails(body.subarray(0, body.length - 1), 'ETRUNCATED', /ends/);
    fails(body, 'EFORMAT', /names run 3 of 3/, 2, { ...limits, runCount: 3 });
    fails(body, 'EFORMAT', /slot 40 past its 32 slots/, 2, { ...limits, slots: () => 32 });
    fails(body, 'ECORRUPT', /pack 2 is not listed/, 2, { ...limits, packs: new Map([[1, 100_000]]) });
    fails(body, 'ECORRUPT', /past the end of pack 2/, 2, { ...limits, packs: new Map([[1, 100_000], [2, 800]]) });
    const edit = (at: number, v: number) => { const b = Buffer.from(body); b[at] = v; return b; };
    fails(edit(1, 0), 'EFORMAT', /0 edits/);
    fails(edit(0, 4), 'EFORMAT', /names run 4/);
    // edit 1's flags byte is at 3 (run gap, edit count, slot gap): a reserved bit, a fourth kind, a base on a whole block, "zero" with more
    fails(edit(3, 0x20 | 2), 'EFORMAT', /bad flags 0x22/);
    fails(edit(3, 0x13), 'EFORMAT', /bad flags 0x13/);
    fails(edit(3, 0x10), 'EFORMAT', /only a delta block has a base/);
    fails(edit(3, 0x0a), 'EFORMAT', /bad flags 0xa/);
    fails(edit(3, 0x16), 'EFORMAT', /contiguous with nothing/);
    // a non-minimal varint (the run gap written in two bytes)
    fails(Buffer.concat([Buffer.from([0x80, 0x00]), body.subarray(1)]), 'EFORMAT', /not minimal/);
    // the first new place written out again where "contiguous" applies: re-made by hand
    const w = new DeltaBodyWriter();
    const e = (slot: number, offset: number) => ({ slot, entry: { slot, id: id(slot), kind: 'zstd' as const, place: { pack: 2, offset, length: 20 } } });
    w.add(0, [e(0, 64), e(1, 84)], undefined);
    const canon = w.drain();
    parse(canon, 1);
    const nonCanon = Buffer.concat([canon.subarray(0, canon.length - 17 - 1 - 1), Buffer.from([0, 0, ...id(1), 20, 2, 84])]);
    assert.throws(() => parse(nonCanon, 1), code('EFORMAT', /contiguous/));
    // a raw block of the wrong length, a place inside the pack header
    const r = new DeltaBodyWriter();
    r.add(0, [{ slot: 0, entry: { slot: 0, id: id(1), kind: 'raw', place: { pack: 1, offset: 64, length: 100 } } }], undefined);
    assert.throws(() => parse(r.drain(), 1), code('EFORMAT', /raw block of 100 bytes/));
    const h = new DeltaBodyWriter();
    h.add(0, [{ slot: 0, entry: { slot: 0, id: id(1), kind: 'zstd', place: { pack: 1, offset: 10, length: 100 } } }], undefined);
    assert.throws(() => parse(h.drain(), 1), code('ECORRUPT', /inside the pack header/));
  });

  it('applied to a record it was not made for, it is refused (a block cleared that was not there, a base that is not a whole block)', () => {
    const { body } = delta();
    const [run0] = [...parseDeltaBody(body, 2, limits)];
    const { v1 } = versions();
    assert.throws(() => applyDeltaRun({ slots: 256, entries: v1.entries.filter((x) => x.slot !== 9) }, run0, 256), code('ECORRUPT', /clears run 0 slot 9/));
    assert.throws(() => applyDeltaRun({ slots: 256, entries: v1.entries.filter((x) => x.slot !== 1) }, run0, 256), code('ECORRUPT', /bases run 0 slot 1/));
    const deltaBase: RunRecord = { slots: 256, entries: v1.entries.map((x) => (x.slot === 1 ? { ...x, kind: 'delta' as const, base: { id: id(1), kind: 'zstd' as const, place: v1.entries[0].place } } : x)) };
    assert.throws(() => applyDeltaRun(deltaBase, run0, 256), code('ECORRUPT', /bases run 0 slot 1/));
  });
});
