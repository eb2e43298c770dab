import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { forEachChunk } from '../../src/block/copy.js';
import { MemoryDevice } from '../../src/block/memory.js';
import { MedvError } from '../../src/core/errors.js';

describe('block/copy forEachChunk', () => {
  it('visits every chunk in order, the last one short, with the next read in flight', async () => {
    const data = randomBytes(10 * 1000 + 7);
    const dev = MemoryDevice.from(data);
    const seen: Array<[number, number]> = [];
    let reads = 0;
    const counting = { read: (o: number, l: number) => { reads++; return dev.read(o, l); } };
    await forEachChunk(counting, data.length, 1000, async (off, chunk) => {
      assert.ok(chunk.equals(data.subarray(off, off + chunk.length)));
      assert.ok(reads >= Math.min(seen.length + 2, 11), 'the next chunk is already being read');
      seen.push([off, chunk.length]);
    });
    assert.deepEqual(seen.map(([o]) => o), Array.from({ length: 11 }, (_, i) => i * 1000));
    assert.equal(seen[10][1], 7);
  });

  it('does nothing for an empty source and passes a read failure on', async () => {
    let calls = 0;
    await forEachChunk(new MemoryDevice(0), 0, 1000, async () => { calls++; });
    assert.equal(calls, 0);
    const failing = { read: (o: number) => (o >= 2000 ? Promise.reject(new MedvError('EIO', 'boom')) : Promise.resolve(Buffer.alloc(1000))) };
    await assert.rejects(forEachChunk(failing, 5000, 1000, async () => undefined), (e: unknown) => e instanceof MedvError && e.code === 'EIO');
  });
});
