/** The fetch state's record of written blocks: run lengths, round trip, and anything else refused. */
import assert from 'node:assert/strict';
import { decodeDone, encodeDone } from '../../src/transfer/output.js';
import { prng } from '../conformance/blockdevice.js';

describe('transfer: the done set of a partial output', () => {
  it('round-trips any set, and is a few bytes for a disk filled in order (16 GiB: 8 bytes, not a 512 KiB bitmap)', () => {
    const rnd = prng(5);
    for (const n of [1, 7, 8, 9, 100, 4096, 100_003]) {
      for (const p of [0, 0.01, 0.5, 0.99, 1]) {
        const bits = new Uint8Array(Math.ceil(n / 8));
        for (let b = 0; b < n; b++) if (rnd() < p) bits[b >> 3] |= 1 << (b & 7);
        assert.deepEqual(decodeDone(encodeDone(bits, n), n), bits, `n ${n} p ${p}`);
      }
    }
    const blocks = 4 * 1024 * 1024;
    const bits = new Uint8Array(blocks / 8);
    bits.fill(0xff, 0, 65536 / 8);
    assert.ok(encodeDone(bits, blocks).length <= 8);
  });

  it('refuses runs that do not add up to the disk, overlong varints and truncation', () => {
    const bits = Uint8Array.from([0b1011_0110, 0b1]);
    const e = encodeDone(bits, 9);
    assert.equal(decodeDone(e, 10), undefined);
    assert.equal(decodeDone(e, 8), undefined);
    assert.equal(decodeDone(e.subarray(0, e.length - 1), 9), undefined);
    assert.equal(decodeDone(Buffer.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), 9), undefined);
    assert.equal(decodeDone(Buffer.from([0x80]), 9), undefined);
  });
});
