import assert from 'node:assert/strict';
import { batBytes, parseBat, serializeBat, serializeBatEntry, UNALLOCATED } from '../../../src/formats/vhd/index.js';

describe('formats/vhd BAT', () => {
  it('is big-endian sector offsets in whole sectors, 0xFFFFFFFF unallocated', () => {
    const bat = Uint32Array.from([UNALLOCATED, 3, 0x01020304]);
    const buf = serializeBat(bat);
    assert.equal(buf.length, 512);
    assert.equal(batBytes(128), 512);
    assert.equal(batBytes(129), 1024);
    assert.deepEqual([...buf.subarray(4, 12)], [0, 0, 0, 3, 1, 2, 3, 4]);
    assert.ok(buf.subarray(12).every((x) => x === 0xff));
    assert.deepEqual(parseBat(buf, 3), bat);
    assert.deepEqual([...serializeBatEntry(0x0a0b0c0d)], [10, 11, 12, 13]);
    assert.throws(() => parseBat(buf.subarray(0, 8), 3), /BAT needs/);
  });
});
