import assert from 'node:assert/strict';
import { allSet, anySet, bitmapSize, bitRuns, setBits, testBit } from '../../../src/formats/vhd/index.js';

describe('formats/vhd sector bitmaps', () => {
  it('are MSB-first and padded to sectors', () => {
    assert.equal(bitmapSize(2 * 1024 * 1024), 512);
    assert.equal(bitmapSize(512 * 1024), 512);
    assert.equal(bitmapSize(4 * 1024 * 1024), 1024);
    const bm = Buffer.alloc(512);
    assert.equal(setBits(bm, 0, 1), true);
    assert.equal(bm[0], 0x80);
    assert.equal(setBits(bm, 0, 1), false);
    setBits(bm, 7, 10);
    assert.deepEqual([...bm.subarray(0, 3)], [0x81, 0xff, 0x80]);
    assert.ok(testBit(bm, 16) && !testBit(bm, 17));
    assert.ok(allSet(bm, 7, 10) && !allSet(bm, 6, 3));
    assert.deepEqual(bitRuns(bm, 0, 20), [
      { set: true, first: 0, count: 1 }, { set: false, first: 1, count: 6 }, { set: true, first: 7, count: 10 }, { set: false, first: 17, count: 3 },
    ]);
    assert.ok(anySet(bm, 4096));
    assert.ok(!anySet(Buffer.alloc(512), 4096));
  });
});
